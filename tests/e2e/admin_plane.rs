//! A gateway following the admin plane (`policy_source`): a tenant admin uploads and activates
//! a policy version and the running gateway enforces it within seconds; a bundle whose
//! signature does not verify is refused; with the admin plane stopped the gateway keeps
//! serving the last verified policies, across a restart too.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ca::{AdminApi, HsmCa};
use crate::harness::*;

const ADMIN_ID: &str = "spiffe://test.portcullis.local/ns/app/sa/policy-admin";
const GATEWAY_ID: &str = "spiffe://test.portcullis.local/ns/app/sa/policy-gateway";

/// The gateway's file: frontend may GET /api; POST is not allowed.
fn gateway_yaml(admin_port: u16, echo: u16) -> String {
    format!(
        r#"
listeners:
  - name: public
    address: 127.0.0.1:{{port}}
    tls: {{ certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }}
metrics:
  address: 127.0.0.1:{{metrics}}
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
policy_source:
  url: https://localhost:{admin_port}
  ca: ca/bundle.pem
  client_certificate: policy-gateway.pem
  client_key: policy-gateway.key
  public_key: ca/policy-signing.pub
  cache: policy-cache.json
  interval: 300ms
tenants:
  - name: acme
    routes:
      - name: api
        path_prefix: /api
        upstream: echo
        access:
          - id: frontend-read
            spiffe_id: [spiffe://test.portcullis.local/ns/app/sa/frontend]
            methods: [GET]
"#
    )
}

/// acme's next version: frontend may POST too.
const ACME_V1: &str = "\
tenants:
  - name: acme
    routes:
      - name: api
        path_prefix: /api
        upstream: echo
        access:
          - id: frontend-write
            spiffe_id: [spiffe://test.portcullis.local/ns/app/sa/frontend]
            methods: [GET, POST]
";

/// `curl` as the tenant admin: status and body.
fn admin_call(
    d: &Path,
    port: u16,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(d.join("ca/bundle.pem"))
        .arg("--cert")
        .arg(d.join("policy-admin.pem"))
        .arg("--key")
        .arg(d.join("policy-admin.key"))
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(body.to_string())
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (json, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

fn status(pki: &Pki, gw: &Gateway, method: &str) -> u16 {
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    conn.send(method, "/api/orders", &[("content-length", "2")], b"{}")
        .unwrap()
        .status
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_gateway_follows_activations_refuses_forged_bundles_and_keeps_the_last_good_set() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(ca) = HsmCa::init(d) else { return };
    let echo = Echo::start(d, "policy");
    // The admin plane checks policies against the platform's gateway config (ports aside, the
    // file the gateways run).
    std::fs::write(
        d.join("platform.yaml"),
        gateway_yaml(1, echo.port)
            .replace("{port}", "1")
            .replace("{metrics}", "2"),
    )
    .unwrap();
    let extra = format!(
        "roles:\n  - {{ role: tenant_admin, tenant: acme, spiffe_ids: [\"{ADMIN_ID}\"] }}\n\
         policies:\n  gateway_config: platform.yaml\n  gateways: [\"{GATEWAY_ID}\"]\n"
    );
    let admin = AdminApi::start_with(d, &ca, &extra);
    ca.issue(d, "policy-admin", ADMIN_ID);
    ca.issue(d, "policy-gateway", GATEWAY_ID);
    let yaml = gateway_yaml(admin.port, echo.port);
    let gw = Gateway::start(d, &yaml);
    assert_eq!(status(&pki, &gw, "GET"), 200);
    assert_eq!(status(&pki, &gw, "POST"), 403);

    // A tenant admin uploads and activates version 1; the gateway enforces it.
    let (code, body) = admin_call(
        d,
        admin.port,
        "POST",
        "/v1/tenants/acme/policies",
        &serde_json::json!({ "document": ACME_V1 }),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = admin_call(
        d,
        admin.port,
        "POST",
        "/v1/tenants/acme/policies/1/activate",
        &serde_json::json!({ "reason": "CHG-1" }),
    );
    assert_eq!(code, 200, "{body}");
    wait_until(
        "the activation reaching the gateway",
        Duration::from_secs(15),
        || status(&pki, &gw, "POST") == 200,
    );
    assert!(
        gw.metric("portcullis_policy_bundle_serial") >= 1.0,
        "{}",
        gw.metrics()
    );
    let (_, ready) = http_get(gw.metrics_port, "/readyz").unwrap();
    assert!(ready.contains("admin plane following"), "{ready}");

    // A forged bundle (the document changed, the signature kept) is refused: the running
    // policies stay, and the gateway asks the admin plane for a verified one again.
    let cache = d.join("policy-cache.json");
    let genuine = std::fs::read_to_string(&cache).unwrap();
    let forged = genuine.replace("[GET, POST]", "[GET, POST, DELETE]");
    assert_ne!(forged, genuine);
    std::fs::write(&cache, &forged).unwrap();
    wait_until("the forged bundle refused", Duration::from_secs(10), || {
        gw.proc.log_text().contains("signature does not verify")
    });
    assert_eq!(status(&pki, &gw, "DELETE"), 403);
    assert_eq!(status(&pki, &gw, "POST"), 200);
    wait_until(
        "the verified bundle restored",
        Duration::from_secs(10),
        || std::fs::read_to_string(&cache).is_ok_and(|c| c == genuine),
    );

    // The admin plane goes away: the gateway keeps the last verified policies, says it is
    // degraded but stays ready, and starts again from its cache.
    drop(admin);
    wait_until("a failed fetch", Duration::from_secs(10), || {
        gw.metric("portcullis_policy_bundle_fetches_total{result=\"unreachable\"}") >= 1.0
    });
    assert_eq!(status(&pki, &gw, "POST"), 200);
    let (code, ready) = http_get(gw.metrics_port, "/readyz").unwrap();
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("degraded"), "{ready}");
    drop(gw);
    let gw = Gateway::start(d, &yaml);
    assert_eq!(status(&pki, &gw, "POST"), 200, "{}", gw.proc.log_text());
}
