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
