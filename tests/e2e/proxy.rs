//! The request path: handshake, identity, routing, access decisions, header hygiene, path
//! normalisation, HTTP/2, and upstream pools.

use crate::harness::*;

/// A gateway in front of one echo upstream, with routes that exercise the access rules.
pub fn base_config(echo_port: u16) -> String {
    BASE.replace("{echo}", &echo_port.to_string())
}

const BASE: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls:
      certificate: server.pem
      private_key: server.key
      client_auth: required
      client_ca: ca.pem
metrics:
  address: 127.0.0.1:{metrics}
shutdown:
  grace_period: 3s
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
    connect_timeout: 1s
    read_timeout: 5s
tenants:
  - name: acme
    routes:
      - name: public
        path_prefix: /public
        upstream: echo
        access:
          - id: anyone
      - name: admin
        path_prefix: /admin
        upstream: echo
        access:
          - id: frontend-admin
            spiffe_id: [spiffe://test.portcullis.local/ns/app/sa/frontend]
      - name: api
        path_prefix: /api
        upstream: echo
        access:
          - id: frontend-read
            spiffe_id: [spiffe://test.portcullis.local/ns/*/sa/frontend]
            methods: [GET]
          - id: by-dns
            dns_san: ["*.test"]
            path_prefix: [/api/dns]
"#;

struct Setup {
    pki: Pki,
    _echo: Echo,
    gw: Gateway,
}

fn setup() -> Setup {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "e1");
    let gw = Gateway::start(pki.dir.path(), &base_config(echo.port));
    Setup {
        pki,
        _echo: echo,
        gw,
    }
}

fn echoed_header(resp: &Response, name: &str) -> Option<String> {
    let doc = resp.json();
    let values = doc["headers"][name].as_array()?;
    assert_eq!(values.len(), 1, "header {name} sent {} times", values.len());
    values[0].as_str().map(str::to_owned)
}

#[test]
fn allowed_caller_reaches_upstream_with_its_identity() {
    let s = setup();
    let resp = s
        .pki
        .client(Some("frontend"))
        .get(s.gw.port, "/admin/users?x=1")
        .unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(
        echoed_header(&resp, "x-portcullis-spiffe-id").as_deref(),
        Some("spiffe://test.portcullis.local/ns/app/sa/frontend")
    );
    assert_eq!(
        echoed_header(&resp, "x-portcullis-tenant").as_deref(),
        Some("acme")
    );
    assert_eq!(
        echoed_header(&resp, "x-portcullis-route").as_deref(),
        Some("acme/admin")
    );
    assert_eq!(
        echoed_header(&resp, "x-portcullis-dns-sans").as_deref(),
        Some("frontend.test")
    );
    assert!(echoed_header(&resp, "x-portcullis-subject")
        .unwrap()
        .contains("CN=frontend"));
    assert!(echoed_header(&resp, "x-portcullis-request-id").is_some());
    assert_eq!(
        echoed_header(&resp, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        echoed_header(&resp, "x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(resp.json()["uri"], "/admin/users?x=1");
    // The caller can quote the id under which the request was logged and forwarded.
    assert_eq!(
        resp.header("x-request-id").map(str::to_owned),
        echoed_header(&resp, "x-portcullis-request-id")
    );
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "xff");
    // Loopback is a trusted proxy here, and /admin admits only callers from 203.0.113.0/24.
    let yaml = base_config(echo.port)
        .replace(
            "      client_ca: ca.pem\n",
            "      client_ca: ca.pem\n    trusted_proxies: [127.0.0.0/8]\n",
        )
        .replace(
            "          - id: frontend-admin\n",
            "          - id: frontend-admin\n            source: [203.0.113.0/24]\n",
        );
    let gw = Gateway::start(pki.dir.path(), &yaml);
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let resp = conn
        .request(
            "GET",
            "/admin/x",
            &[
                ("X-Forwarded-For", "203.0.113.7, 127.0.0.2"),
                ("X-Forwarded-Proto", "http"),
            ],
        )
        .unwrap();
    assert_eq!(resp.status, 200, "client is the right-most untrusted hop");
    assert_eq!(
        echoed_header(&resp, "x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.2, 127.0.0.1")
    );
    assert_eq!(
        echoed_header(&resp, "x-forwarded-proto").as_deref(),
        Some("http")
    );
    // Without the header the client is the loopback peer, outside the allowed network.
    assert_eq!(conn.request("GET", "/admin/x", &[]).unwrap().status, 403);
    // A forged hop in front of an untrusted one does not help.
    let resp = conn
        .request(
            "GET",
            "/admin/x",
            &[("X-Forwarded-For", "203.0.113.7, 198.51.100.1")],
        )
        .unwrap();
    assert_eq!(resp.status, 403);
}

/// `openssl s_client` with the given extra arguments; true when the handshake completed.
fn openssl_handshake(pki: &Pki, port: u16, args: &[&str]) -> bool {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(pki.path("ca.pem"))
        .arg("-cert")
        .arg(pki.path("frontend.pem"))
        .arg("-key")
        .arg(pki.path("frontend.key"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("Verify return code: 0")
}

#[test]
fn only_tls12_and_13_with_aead_suites_are_offered() {
    let s = setup();
    assert!(openssl_handshake(&s.pki, s.gw.port, &["-tls1_3"]));
    assert!(openssl_handshake(
        &s.pki,
        s.gw.port,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
    ));
    assert!(!openssl_handshake(
        &s.pki,
        s.gw.port,
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]
    ));
    assert!(!openssl_handshake(
        &s.pki,
        s.gw.port,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"
        ]
    ));
}

#[test]
fn spoofed_identity_headers_never_reach_the_upstream() {
    let s = setup();
    let mut conn = s.pki.client(Some("other")).connect(s.gw.port).unwrap();
    let resp = conn
        .request(
            "GET",
            "/public/x",
            &[
                (
                    "X-Portcullis-Spiffe-Id",
                    "spiffe://test.portcullis.local/ns/app/sa/frontend",
                ),
                ("x-portcullis-tenant", "root"),
                ("X-Portcullis-Anything", "1"),
                (
                    "X-Forwarded-Client-Cert",
                    "By=spiffe://evil;URI=spiffe://evil",
                ),
                ("X-Forwarded-For", "203.0.113.9"),
                ("X-Forwarded-Proto", "http"),
                ("Forwarded", "for=203.0.113.9"),
            ],
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        echoed_header(&resp, "x-portcullis-spiffe-id").as_deref(),
        Some("spiffe://test.portcullis.local/ns/app/sa/other")
    );
    assert_eq!(
        echoed_header(&resp, "x-portcullis-tenant").as_deref(),
        Some("acme")
    );
    let doc = resp.json();
    assert!(doc["headers"]["x-portcullis-anything"].is_null());
    assert!(doc["headers"]["x-forwarded-client-cert"].is_null());
    assert!(doc["headers"]["forwarded"].is_null());
    // Not a trusted proxy: its X-Forwarded-For is replaced, not extended.
    assert_eq!(
        echoed_header(&resp, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        echoed_header(&resp, "x-forwarded-proto").as_deref(),
        Some("https")
    );
}

#[test]
fn denied_caller_gets_403_naming_only_the_request_id() {
    let s = setup();
    let resp = s
        .pki
        .client(Some("other"))
        .get(s.gw.port, "/admin/users")
        .unwrap();
    assert_eq!(resp.status, 403);
    let body = resp.json();
    assert_eq!(body["error"], "forbidden");
    let id = body["request_id"].as_str().unwrap();
    assert_eq!(resp.header("x-request-id"), Some(id));
    let text = String::from_utf8_lossy(&resp.body);
    assert!(
        !text.contains("frontend-admin") && !text.contains("spiffe"),
        "{text}"
    );
    // Method and wildcard rules: GET allowed on /api, POST is not.
    let client = s.pki.client(Some("frontend"));
    assert_eq!(client.get(s.gw.port, "/api/items").unwrap().status, 200);
    let post = client
        .connect(s.gw.port)
        .unwrap()
        .request("POST", "/api/items", &[("content-length", "0")])
        .unwrap();
    assert_eq!(post.status, 403);
    // DNS SAN rule with a path prefix: `other` has no DNS SAN, `frontend` has frontend.test.
    assert_eq!(
        s.pki
            .client(Some("other"))
            .get(s.gw.port, "/api/dns/x")
            .unwrap()
            .status,
        403
    );
    // No route at all.
    assert_eq!(client.get(s.gw.port, "/nowhere").unwrap().status, 404);
}

/// The handshake fails or the server closes before any HTTP response.
fn assert_refused(client: &Client, port: u16) {
    let outcome = client
        .connect(port)
        .and_then(|mut c| c.request("GET", "/public/x", &[]));
    if let Ok(resp) = outcome {
        panic!("expected refusal, got HTTP {}", resp.status);
    }
}

#[test]
fn handshake_refuses_missing_unknown_expired_and_future_certificates() {
    let s = setup();
    assert_refused(&s.pki.client(None), s.gw.port);
    assert_refused(&s.pki.client(Some("rogue")), s.gw.port);
    assert_refused(&s.pki.client(Some("expired")), s.gw.port);
    assert_refused(&s.pki.client(Some("future")), s.gw.port);
    let m = s.gw.metrics();
    let failures = |reason: &str| {
        metric_value(
            &m,
            &format!("portcullis_tls_handshake_failures_total{{listener=\"public\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(failures("unknown_ca"), 1.0, "{m}");
    assert_eq!(failures("expired"), 1.0, "{m}");
    assert_eq!(failures("not_yet_valid"), 1.0, "{m}");
    // And a good client still gets through.
    assert_eq!(
        s.pki
            .client(Some("frontend"))
            .get(s.gw.port, "/public/x")
            .unwrap()
            .status,
        200
    );
}

#[test]
fn http2_carries_identity_and_decisions() {
    let s = setup();
    let (version, status, body) = curl_h2(&s.pki, "frontend", s.gw.port, "/admin/h2");
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    assert!(
        body.contains("spiffe://test.portcullis.local/ns/app/sa/frontend"),
        "{body}"
    );
    let (version, status, _) = curl_h2(&s.pki, "other", s.gw.port, "/admin/h2");
    assert_eq!((version.as_str(), status), ("2", 403));
}

#[test]
fn paths_are_judged_and_forwarded_normalised() {
    let s = setup();
    let other = s.pki.client(Some("other"));
    let get = |path: &str| {
        let resp = other
            .connect(s.gw.port)
            .unwrap()
            .request("GET", path, &[])
            .unwrap();
        (resp.status, resp)
    };
    // Escapes from /public into /admin are judged as /admin, where `other` is denied.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "/public/.%2e/admin",
        "/public/./../admin",
        "//admin",
        "/public/x/../../admin",
    ] {
        assert_eq!(get(path).0, 403, "{path}");
    }
    // Encoded slashes and backslashes, NUL and broken escapes are refused outright.
    for path in [
        "/public/..%2fadmin",
        "/public/a%2Fb",
        "/public/a%5cb",
        "/public/a%00",
        "/public/%zz",
        "/public/a%4",
    ] {
        let (status, resp) = get(path);
        assert_eq!(status, 400, "{path}");
        assert_eq!(resp.json()["error"], "bad_request");
    }
    // What the upstream receives is the normalised path, query intact.
    for (sent, seen) in [
        ("/public/./a//b/", "/public/a/b/"),
        ("/public/%7Euser/%41", "/public/~user/A"),
        ("/public/a/b/../c?q=%2F..", "/public/a/c?q=%2F.."),
        ("/public/%c3%a9", "/public/%C3%A9"),
    ] {
        let (status, resp) = get(sent);
        assert_eq!(status, 200, "{sent}");
        assert_eq!(resp.json()["uri"], seen, "{sent}");
    }
    // Segment boundaries: /publicity is not under /public.
    assert_eq!(get("/publicity").0, 404);
}

#[test]
fn raw_backslash_is_refused() {
    let s = setup();
    let mut conn = s.pki.client(Some("other")).connect(s.gw.port).unwrap();
    // The HTTP parser may refuse the request line before routing; either way no 2xx/403.
    if let Ok(resp) = conn.request("GET", "/public\\..\\admin", &[]) {
        assert_eq!(resp.status, 400);
    }
}

#[test]
fn pools_skip_dead_targets_and_answer_503_when_none_is_left() {
    let pki = Pki::new();
    let a = Echo::start(pki.dir.path(), "a");
    let b = Echo::start(pki.dir.path(), "b");
    let dead = free_port();
    let yaml = base_config(a.port).replace(
        &format!("targets: [127.0.0.1:{}]", a.port),
        &format!(
            "targets: [127.0.0.1:{}, 127.0.0.1:{}, 127.0.0.1:{dead}]\n    health_check:\n      path: /healthz\n      interval: 200ms",
            a.port, b.port
        ),
    );
    let gw = Gateway::start(pki.dir.path(), &yaml);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let client = pki.client(Some("frontend"));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let resp = client.get(gw.port, "/public/x").unwrap();
        assert_eq!(resp.status, 200);
        seen.insert(resp.json()["upstream"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        seen.len(),
        2,
        "round robin over both live targets: {seen:?}"
    );
    drop(a);
    drop(b);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let resp = client.get(gw.port, "/public/x").unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"], "upstream_unavailable");
}

#[test]
fn upstream_mtls_carries_the_gateway_identity() {
    // The inner gateway is the upstream: it demands a client certificate from our CA and
    // forwards to the echo; the outer gateway presents its own certificate.
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "inner");
    let inner = Gateway::start(
        pki.dir.path(),
        &base_config(echo.port).replace(
            "          - id: anyone\n",
            "          - id: only-gateway\n            spiffe_id: [spiffe://test.portcullis.local/ns/edge/sa/gateway]\n",
        ),
    );
    let outer_yaml = base_config(inner.port).replace(
        "    read_timeout: 5s\n",
        "    read_timeout: 5s\n    tls:\n      server_name: localhost\n      ca: ca.pem\n      client_certificate: gateway.pem\n      client_key: gateway.key\n",
    );
    let outer = Gateway::start(pki.dir.path(), &outer_yaml);
    let resp = pki
        .client(Some("frontend"))
        .get(outer.port, "/public/m")
        .unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(
        echoed_header(&resp, "x-portcullis-spiffe-id").as_deref(),
        Some("spiffe://test.portcullis.local/ns/edge/sa/gateway")
    );
}

/// A mesh upstream known by its SPIFFE ID alone: its certificate has no DNS name. The gateway
/// checks the ID it was told to expect, and a workload of the same trust domain showing another
/// ID is refused (502) and counted apart as `identity_mismatch`.
#[test]
fn an_upstream_is_checked_by_its_spiffe_id() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let mut spec = portcullis_ca::dev::LeafSpec::client(
        "api",
        Some("spiffe://test.portcullis.local/ns/backend/sa/api"),
        std::time::Duration::from_secs(86400),
    );
    spec.server_auth = true;
    pki.ca.issue(&spec).unwrap().write(d, "mesh-api").unwrap();
    let echo = Echo::start(d, "inner");
    let inner = Gateway::start(
        d,
        &base_config(echo.port)
            .replace("certificate: server.pem", "certificate: mesh-api.pem")
            .replace("private_key: server.key", "private_key: mesh-api.key"),
    );
    let outer = |tls: &str| {
        Gateway::start(
            d,
            &base_config(inner.port).replace(
                "    read_timeout: 5s\n",
                &format!("    read_timeout: 5s\n    tls:\n{tls}      ca: ca.pem\n      client_certificate: gateway.pem\n      client_key: gateway.key\n"),
            ),
        )
    };
    let by_id = outer("      spiffe_id: [spiffe://test.portcullis.local/ns/backend/sa/api]\n");
    let by_pattern = outer("      spiffe_id: [spiffe://test.portcullis.local/ns/backend/**]\n");
    let wrong_id = outer("      spiffe_id: [spiffe://test.portcullis.local/ns/backend/sa/db]\n");
    // The name is checked besides the ID when both are given: this certificate has no name.
    let with_name = outer(
        "      server_name: localhost\n      spiffe_id: [spiffe://test.portcullis.local/ns/backend/sa/api]\n",
    );
    let client = pki.client(Some("frontend"));
    for gw in [&by_id, &by_pattern] {
        let resp = client.get(gw.port, "/public/mesh").unwrap();
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        assert_eq!(
            echoed_header(&resp, "x-portcullis-spiffe-id").as_deref(),
            Some("spiffe://test.portcullis.local/ns/edge/sa/gateway"),
            "the upstream saw the gateway's client certificate"
        );
    }
    // Several requests, so that a reused connection would show.
    for _ in 0..3 {
        assert_eq!(client.get(by_id.port, "/public/again").unwrap().status, 200);
    }
    let resp = client.get(wrong_id.port, "/public/mesh").unwrap();
    assert_eq!(resp.status, 502, "{}", String::from_utf8_lossy(&resp.body));
    let mismatch = r#"portcullis_upstream_errors_total{kind="identity_mismatch",upstream="echo"}"#;
    assert!(metric_value(&wrong_id.wait_metric(mismatch, 1.0), mismatch) >= 1.0);
    assert_eq!(
        client.get(with_name.port, "/public/mesh").unwrap().status,
        502
    );
    let certificate = r#"portcullis_upstream_errors_total{kind="certificate",upstream="echo"}"#;
    assert!(metric_value(&with_name.wait_metric(certificate, 1.0), certificate) >= 1.0);
    assert_eq!(wrong_id.metric(certificate), 0.0);
}

/// `protocol: http2` to a TLS upstream (ALPN h2): an HTTP/1.1 caller is carried over HTTP/2.
#[test]
fn an_http1_caller_reaches_an_http2_upstream() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "inner");
    let inner = Gateway::start(pki.dir.path(), &base_config(echo.port));
    let outer = Gateway::start(
        pki.dir.path(),
        &base_config(inner.port).replace(
            "    read_timeout: 5s\n",
            "    read_timeout: 5s\n    protocol: http2\n    tls:\n      server_name: localhost\n      ca: ca.pem\n      client_certificate: gateway.pem\n      client_key: gateway.key\n",
        ),
    );
    let client = pki.client(Some("frontend"));
    for i in 0..3 {
        let resp = client.get(outer.port, &format!("/public/h2/{i}")).unwrap();
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        assert_eq!(
            echoed_header(&resp, "x-portcullis-spiffe-id").as_deref(),
            Some("spiffe://test.portcullis.local/ns/edge/sa/gateway")
        );
    }
    inner.wait_for_line(|l| l.contains("\"http.version\":\"HTTP/2.0\""));
}
