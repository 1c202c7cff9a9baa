//! Mesh ingress across SPIFFE trust domains: one listener, a bundle per trust domain, each
//! client certificate verified only against the bundle of the trust domain its SPIFFE ID names.

use std::time::Duration;

use portcullis_ca::dev::{DevCa, LeafSpec};

use crate::harness::*;

const CONFIG: &str = r#"
listeners:
  - name: mesh
    address: 127.0.0.1:{port}
    tls:
      certificate: server.pem
      private_key: server.key
      client_auth: required
      trust_domains:
        - { name: test.portcullis.local, bundle: ca.pem }
        - { name: b.test, bundle: ca-b.pem }
metrics:
  address: 127.0.0.1:{metrics}
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
tenants:
  - name: a
    routes:
      - name: a
        path_prefix: /a
        upstream: echo
        access: [ { id: domain-a, spiffe_id: ["spiffe://test.portcullis.local/**"] } ]
  - name: b
    routes:
      - name: b
        path_prefix: /b
        upstream: echo
        access: [ { id: domain-b, spiffe_id: ["spiffe://b.test/**"] } ]
"#;

#[test]
fn each_trust_domain_vouches_only_for_its_own_ids() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let day = Duration::from_secs(86400);
    let ca_b = DevCa::new("Trust domain B").unwrap();
    ca_b.write(d, "ca-b").unwrap();
    ca_b.issue(&LeafSpec::client(
        "reader",
        Some("spiffe://b.test/ns/db/sa/reader"),
        day,
    ))
    .unwrap()
    .write(d, "b-reader")
    .unwrap();
    // B's CA issuing an ID of the other trust domain: it chains to a trusted bundle, but not
    // to that trust domain's.
    ca_b.issue(&LeafSpec::client(
        "frontend",
        Some("spiffe://test.portcullis.local/ns/app/sa/frontend"),
        day,
    ))
    .unwrap()
    .write(d, "b-forged")
    .unwrap();
    let echo = Echo::start(d, "echo");
    let gw = Gateway::start(d, &CONFIG.replace("{echo}", &echo.port.to_string()));

    let frontend = pki.client(Some("frontend"));
    assert_eq!(frontend.get(gw.port, "/a/x").unwrap().status, 200);
    assert_eq!(frontend.get(gw.port, "/b/x").unwrap().status, 403);
    let reader = pki.client(Some("b-reader"));
    assert_eq!(reader.get(gw.port, "/b/x").unwrap().status, 200);
    assert_eq!(reader.get(gw.port, "/a/x").unwrap().status, 403);

    // Refused at the handshake: the forged ID, and a certificate with no SPIFFE ID at all.
    pki.ca
        .issue(&LeafSpec::client("no-id", None, day))
        .unwrap()
        .write(d, "no-id")
        .unwrap();
    for name in ["b-forged", "no-id"] {
        let outcome = pki
            .client(Some(name))
            .connect(gw.port)
            .and_then(|mut c| c.request("GET", "/a/x", &[]));
        assert!(outcome.is_err(), "{name} was served");
    }
    let failures =
        r#"portcullis_tls_handshake_failures_total{listener="mesh",reason="unknown_ca"}"#;
    assert!(metric_value(&gw.wait_metric(failures, 1.0), failures) >= 1.0);

    // `check` refuses both client_ca and trust_domains, and a name that is no trust domain.
    let check = |yaml: &str| {
        let path = d.join("check.yaml");
        let yaml = yaml
            .replace("{port}", "18443")
            .replace("{metrics}", "19901")
            .replace("{echo}", "18081");
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let both = CONFIG.replace(
        "      trust_domains:\n",
        "      client_ca: ca.pem\n      trust_domains:\n",
    );
    assert!(check(&both).contains("not both"));
    let bad = CONFIG.replace("name: b.test,", "name: B.Test/x,");
    assert!(check(&bad).contains("is not a SPIFFE trust domain"));
}

/// Sidecar A: the inbound listener for its own service, and the egress listener its service
/// calls out through, to B's sidecar over mTLS with A's SVID, B checked by its SPIFFE ID.
const SIDECAR_A: &str = r#"
listeners:
  - name: inbound
    address: 127.0.0.1:{port}
    tls: { certificate: a-svid.pem, private_key: a-svid.key, client_auth: required, client_ca: ca.pem }
egress:
  - name: outbound
    address: 127.0.0.1:{egress}
    workload: spiffe://test.portcullis.local/ns/a/sa/svc
metrics:
  address: 127.0.0.1:{metrics}
upstreams:
  - name: b
    targets: [127.0.0.1:{b}]
    tls:
      spiffe_id: [spiffe://test.portcullis.local/ns/b/sa/svc]
      ca: ca.pem
      client_certificate: a-svid.pem
      client_key: a-svid.key
tenants:
  - name: mesh
    dlp: { request: { card_number: block } }
    routes:
      - name: to-b
        host: b.mesh
        upstream: b
        access: [ { id: a-out, spiffe_id: ["spiffe://test.portcullis.local/ns/a/sa/svc"] } ]
"#;

/// Sidecar B: inbound only, for callers of namespace `a`.
const SIDECAR_B: &str = r#"
listeners:
  - name: inbound
    address: 127.0.0.1:{port}
    tls: { certificate: b-svid.pem, private_key: b-svid.key, client_auth: required, client_ca: ca.pem }
metrics:
  address: 127.0.0.1:{metrics}
upstreams:
  - name: svc
    targets: [127.0.0.1:{echo}]
tenants:
  - name: b
    routes:
      - name: svc
        upstream: svc
        access: [ { id: from-a, spiffe_id: ["spiffe://test.portcullis.local/ns/a/**"] } ]
"#;

/// What the local service sends its sidecar: plain HTTP/1.1 on loopback.
fn plain(port: u16, host: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    plain_with(port, host, method, path, "", body)
}

/// As [`plain`], with extra header lines (`Name: value\r\n` each).
fn plain_with(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn two_services_talk_through_their_sidecars_by_spiffe_id() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let day = Duration::from_secs(86400);
    for (name, id) in [
        ("a-svid", "spiffe://test.portcullis.local/ns/a/sa/svc"),
        ("b-svid", "spiffe://test.portcullis.local/ns/b/sa/svc"),
    ] {
        // SVIDs: a SPIFFE ID and no DNS name, for both ends of TLS.
        let mut spec = LeafSpec::client("svc", Some(id), day);
        spec.server_auth = true;
        pki.ca.issue(&spec).unwrap().write(d, name).unwrap();
    }
    let echo_b = Echo::start(d, "b");
    let b = Gateway::start(d, &SIDECAR_B.replace("{echo}", &echo_b.port.to_string()));
    let egress = free_port();
    let a = Gateway::start(
        d,
        &SIDECAR_A
            .replace("{b}", &b.port.to_string())
            .replace("{egress}", &egress.to_string()),
    );
    wait_for_port(egress);

    let (status, body) = plain(egress, "b.mesh", "GET", "/orders/1", "");
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echoed["headers"]["x-portcullis-spiffe-id"][0],
        "spiffe://test.portcullis.local/ns/a/sa/svc",
        "B's sidecar saw A's SVID"
    );
    // The local service cannot speak as another workload: identity headers it sends are
    // stripped, and B's sidecar sees A's SVID only.
    let (status, body) = plain_with(
        egress,
        "b.mesh",
        "GET",
        "/orders/2",
        "X-Portcullis-Spiffe-Id: spiffe://test.portcullis.local/ns/admin/sa/root\r\nClient-Cert: :Zm9v:\r\n",
        "",
    );
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echoed["headers"]["x-portcullis-spiffe-id"],
        serde_json::json!(["spiffe://test.portcullis.local/ns/a/sa/svc"])
    );
    assert!(echoed["headers"]["client-cert"].is_null(), "{echoed}");
    // Data leaving the service is inspected like data coming in.
    let (status, _) = plain(
        egress,
        "b.mesh",
        "POST",
        "/orders",
        r#"{"card":"4111 1111 1111 1111"}"#,
    );
    assert_eq!(status, 403);
    // Only routed hosts leave.
    assert_eq!(plain(egress, "elsewhere.example", "GET", "/", "").0, 404);
    // The access line names the workload and the direction.
    a.wait_for_line(|l| {
        l.contains("\"direction\":\"egress\"")
            && l.contains("\"client.id\":\"spiffe://test.portcullis.local/ns/a/sa/svc\"")
            && l.contains("\"http.status\":200")
    });
    // A's inbound listener is untouched by the egress one: plain HTTP is not spoken there.
    assert!(http_get(a.port, "/").is_none_or(|(status, _)| status == 400));

    // An egress listener off loopback is refused unless said.
    let path = d.join("off-loopback.yaml");
    std::fs::write(
        &path,
        SIDECAR_A
            .replace("{port}", "18443")
            .replace("{metrics}", "19901")
            .replace("{b}", "18444")
            .replace("127.0.0.1:{egress}", "0.0.0.0:15001"),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a loopback address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTPS server for the files in `dir` (Python's, with the test PKI's localhost
/// certificate): the trust domains' bundle endpoints.
struct FileServer {
    port: u16,
    child: std::process::Child,
}

impl FileServer {
    fn start(dir: &std::path::Path) -> Self {
        let port = free_port();
        let script = "import http.server, ssl, sys, os\n\
            os.chdir(sys.argv[1])\n\
            srv = http.server.HTTPServer(('127.0.0.1', int(sys.argv[2])), http.server.SimpleHTTPRequestHandler)\n\
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
            ctx.load_cert_chain('server.pem', 'server.key')\n\
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
            srv.serve_forever()\n";
        let child = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port);
        Self { port, child }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SPIFFE bundle document with the CA certificates of `pem_files`.
fn bundle_json(dir: &std::path::Path, pem_files: &[&str]) -> String {
    use base64::Engine as _;
    let keys: Vec<serde_json::Value> = pem_files
        .iter()
        .map(|f| {
            let pem = std::fs::read(dir.join(f)).unwrap();
            let der = rustls_pemfile::certs(&mut pem.as_slice())
                .next()
                .unwrap()
                .unwrap();
            serde_json::json!({
                "use": "x509-svid",
                "kty": "EC",
                "x5c": [base64::engine::general_purpose::STANDARD.encode(der.as_ref())],
            })
        })
        .collect();
    serde_json::json!({ "keys": keys, "spiffe_refresh_hint": 60 }).to_string()
}

#[test]
fn a_trust_domain_bundle_is_fetched_from_its_endpoint_and_the_last_good_one_kept() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let day = Duration::from_secs(86400);
    // Trust domain B rotates to a new CA: its endpoint publishes old and new; the gateway
    // starts with the old one only.
    let old = DevCa::new("B old").unwrap();
    old.write(d, "b-old").unwrap();
    let new = DevCa::new("B new").unwrap();
    new.write(d, "b-new").unwrap();
    new.issue(&LeafSpec::client(
        "reader",
        Some("spiffe://b.test/ns/db/sa/reader"),
        day,
    ))
    .unwrap()
    .write(d, "b-reader")
    .unwrap();
    let served = d.join("served");
    std::fs::create_dir(&served).unwrap();
    for f in ["server.pem", "server.key"] {
        std::fs::copy(d.join(f), served.join(f)).unwrap();
    }
    std::fs::write(
        served.join("b.json"),
        bundle_json(d, &["b-old.pem", "b-new.pem"]),
    )
    .unwrap();
    std::fs::write(served.join("broken.json"), r#"{"keys":[]}"#).unwrap();
    let endpoint = FileServer::start(&served);
    std::fs::copy(d.join("b-old.pem"), d.join("b-bundle.pem")).unwrap();
    std::fs::copy(d.join("b-old.pem"), d.join("b-kept.pem")).unwrap();
    let echo = Echo::start(d, "echo");
    let config = |file: &str, doc: &str| {
        CONFIG
            .replace("{echo}", &echo.port.to_string())
            .replace(
                "        - { name: b.test, bundle: ca-b.pem }\n",
                &format!(
                    "        - name: b.test\n          bundle: {file}\n          endpoint: {{ url: 'https://localhost:{}/{doc}', ca: ca.pem }}\n",
                    endpoint.port
                ),
            )
    };
    let gw = Gateway::start(d, &config("b-bundle.pem", "b.json"));
    let reader = pki.client(Some("b-reader"));
    // Fetched at start, written over the bundle file, and in force within a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = reader.get(gw.port, "/b/x").map(|r| r.status).ok();
        if status == Some(200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new CA never took effect:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let kept = std::fs::read_to_string(d.join("b-bundle.pem")).unwrap();
    assert_eq!(kept.matches("BEGIN CERTIFICATE").count(), 2);
    let fetched =
        r#"portcullis_trust_bundle_fetches_total{result="success",trust_domain="b.test"}"#;
    assert!(metric_value(&gw.metrics(), fetched) >= 1.0);

    // An endpoint serving nothing usable changes nothing: the bundle on file stays in force.
    let stale = Gateway::start(d, &config("b-kept.pem", "broken.json"));
    let failed = r#"portcullis_trust_bundle_fetches_total{result="failure",trust_domain="b.test"}"#;
    assert!(metric_value(&stale.wait_metric(failed, 1.0), failed) >= 1.0);
    assert_eq!(
        std::fs::read(d.join("b-kept.pem")).unwrap(),
        std::fs::read(d.join("b-old.pem")).unwrap()
    );
    assert!(reader
        .connect(stale.port)
        .and_then(|mut c| c.request("GET", "/b/x", &[]))
        .is_err());
}
