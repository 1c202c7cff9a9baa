//! A gateway following the admin plane (`policy_source`): a tenant admin uploads and activates
//! a policy version and the running gateway enforces it within seconds; a bundle whose
//! signature does not verify is refused; with the admin plane stopped the gateway keeps
//! serving the last verified policies, across a restart too.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ca::{AdminApi, HsmCa};
use crate::harness::*;

#[path = "../../admin/tests/support/role_matrix.rs"]
mod role_matrix;

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
    let (cert, key) = (d.join("policy-admin.pem"), d.join("policy-admin.key"));
    let auth = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    curl(d, port, &auth, method, path, body)
}

/// `curl` as a person with a bearer token (no client certificate): status and body.
fn person_call(
    d: &Path,
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let header = format!("authorization: Bearer {token}");
    curl(d, port, &["-H", &header], method, path, body)
}

fn curl(
    d: &Path,
    port: u16,
    auth: &[&str],
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(d.join("ca/bundle.pem"))
        .args(auth)
        .args(if body.is_null() {
            vec![]
        } else {
            vec![
                "-H".to_owned(),
                "content-type: application/json".to_owned(),
                "--data-binary".to_owned(),
                body.to_string(),
            ]
        })
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (json, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

/// `platform.yaml`, the platform's gateway config the admin plane checks policies against, for
/// tests where no gateway follows it (its ports are placeholders).
fn write_platform_config(d: &Path) {
    std::fs::write(
        d.join("platform.yaml"),
        gateway_yaml(1, 2)
            .replace("{port}", "1")
            .replace("{metrics}", "3"),
    )
    .unwrap();
}

/// The tests' OpenID provider, as the admin API's identity provider `corp`.
struct Corp {
    provider: crate::oidc_provider::OidcProvider,
    /// Unix seconds at start: tokens are issued then.
    now: u64,
}

impl Corp {
    fn start(pki: &Pki, d: &Path) -> Self {
        use crate::oidc_provider::{OidcProvider, ProviderOptions};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Corp {
            provider: OidcProvider::start(pki, d, ProviderOptions::default()),
            now,
        }
    }

    /// The admin config's `identity_providers:` naming it.
    fn config(&self) -> String {
        format!(
            "identity_providers:\n  - {{ name: corp, issuer: \"{}\", audiences: [portcullis-admin], ca: {} }}\n",
            self.provider.issuer(),
            self.provider.ca().display()
        )
    }

    /// A token of `sub` for the admin API, valid five minutes, with `claims` added or replaced.
    fn token(&self, sub: &str, claims: serde_json::Value) -> String {
        let mut all = serde_json::json!({
            "iss": self.provider.issuer(), "sub": sub, "aud": "portcullis-admin",
            "iat": self.now, "exp": self.now + 300,
        });
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        self.provider.sign(serde_json::json!({}), all)
    }
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
    // The bundles are signed by a P-256 key the admin plane keeps in the CA's token.
    let extra = format!(
        "roles:\n  - {{ role: tenant_admin, tenant: acme, spiffe_ids: [\"{ADMIN_ID}\"] }}\n\
         policies:\n  gateway_config: platform.yaml\n  gateways: [\"{GATEWAY_ID}\"]\n  \
         signing_pkcs11: {{ token_label: portcullis-ca, key_label: policy-signing, pin_file: {} }}\n",
        d.join("hsm.pin").display()
    );
    let admin = AdminApi::start_with(d, &ca, &extra);
    let public = std::fs::read_to_string(d.join("ca/policy-signing.pub")).unwrap();
    assert!(public.contains("BEGIN PUBLIC KEY"), "{public}");
    assert!(
        !d.join("ca/policy-signing.key").exists(),
        "a key file was written"
    );
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
    let cached = std::fs::read_to_string(d.join("policy-cache.json")).unwrap();
    assert!(
        cached.contains("ecdsa-p256"),
        "not signed by the token's key: {cached}"
    );

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
        || std::fs::read_to_string(&cache).is_ok_and(|c| c != forged && !c.contains("DELETE")),
    );

    // The same records through the CLI client, as the tenant admin: the change history as a
    // table with its stamp, the API's CSV, the admin's certificate found by its SPIFFE ID, and
    // another tenant's report refused with the API's code.
    let cli = |args: &[&str]| {
        let out = Command::new(bin())
            .args(["admin"])
            .args(args)
            .args(["--server", &format!("https://localhost:{}", admin.port)])
            .arg("--ca")
            .arg(d.join("ca/bundle.pem"))
            .arg("--cert")
            .arg(d.join("policy-admin.pem"))
            .arg("--key")
            .arg(d.join("policy-admin.key"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, table, err) = cli(&["report", "changes", "--tenant", "acme"]);
    assert!(ok, "{err}");
    assert!(
        table.starts_with("# changes report of acme; computed at "),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("activated") && l.contains("CHG-1")),
        "{table}"
    );
    let (ok, csv, err) = cli(&["report", "changes", "--tenant", "acme", "--format", "csv"]);
    assert!(ok, "{err}");
    assert!(csv.lines().any(|l| l.contains(",activated,")), "{csv}");
    let (ok, listed, err) = cli(&["certificates", "--tenant", "acme", "--identity", ADMIN_ID]);
    assert!(ok, "{err}");
    assert!(listed.starts_with("SERIAL"), "{listed}");
    assert!(
        listed
            .lines()
            .skip(1)
            .any(|l| l.contains(ADMIN_ID) && l.contains("valid")),
        "{listed}"
    );
    let (ok, _, err) = cli(&["report", "access", "--tenant", "globex"]);
    assert!(!ok);
    assert!(err.contains("404 not_found"), "{err}");
    // The API's other operations have commands too: the policy history as a table, another
    // tenant's versions refused with the API's code.
    let (ok, history, err) = cli(&["policies", "history", "--tenant", "acme"]);
    assert!(ok, "{err}");
    assert!(history.starts_with("AT "), "{history}");
    assert!(
        history
            .lines()
            .any(|l| l.contains("activated") && l.contains("CHG-1")),
        "{history}"
    );
    let (ok, _, err) = cli(&["policies", "list", "--tenant", "globex", "--json"]);
    assert!(!ok);
    assert!(err.contains("404 not_found"), "{err}");

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

/// People call the admin API with their identity provider's tokens: roles by group, a second
/// factor for changes, refusals with the reason, their name in the audit log; bootstrap
/// tokens for issuance are not mistaken for people's tokens.
#[test]
fn people_call_the_admin_api_with_tokens_and_changes_need_a_second_factor() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(ca) = HsmCa::init(d) else { return };
    let corp = Corp::start(&pki, d);
    write_platform_config(d);
    let extra = format!(
        "{}mfa_for_writes: true\n\
         roles:\n  - {{ role: tenant_admin, tenant: acme, people: {{ provider: corp, groups: [acme-admins] }} }}\n\
         \x20 - {{ role: auditor, people: {{ provider: corp, subjects: [erin] }} }}\n\
         policies:\n  gateway_config: platform.yaml\n",
        corp.config()
    );
    let admin = AdminApi::start_with(d, &ca, &extra);
    let now = corp.now;
    let token = |sub: &str, groups: &[&str], amr: &[&str], mut changes: serde_json::Value| {
        changes["groups"] = serde_json::json!(groups);
        changes["amr"] = serde_json::json!(amr);
        corp.token(sub, changes)
    };
    let alice = token(
        "alice",
        &["acme-admins"],
        &["pwd", "mfa"],
        serde_json::json!({}),
    );
    let bob = token("bob", &["acme-admins"], &["pwd"], serde_json::json!({}));
    let carol = token(
        "carol",
        &["globex-admins"],
        &["pwd", "mfa"],
        serde_json::json!({}),
    );
    let erin = token("erin", &[], &["pwd"], serde_json::json!({}));
    let list = "/v1/tenants/acme/policies";
    let upload = serde_json::json!({ "document": ACME_V1 });
    let none = serde_json::Value::Null;

    let (code, body) = person_call(d, admin.port, &alice, "GET", list, &none);
    assert_eq!(code, 200, "{body}");
    let (code, body) = person_call(d, admin.port, &alice, "POST", list, &upload);
    assert_eq!(code, 201, "{body}");
    // Same role, no second factor: reads, but no changes.
    let (code, _) = person_call(d, admin.port, &bob, "GET", list, &none);
    assert_eq!(code, 200);
    let (code, body) = person_call(d, admin.port, &bob, "POST", list, &upload);
    assert_eq!(
        (code, body["error"].as_str()),
        (403, Some("mfa_required")),
        "{body}"
    );
    // Another tenant's admins do not see acme; a platform auditor reads every tenant.
    let (code, _) = person_call(d, admin.port, &carol, "GET", list, &none);
    assert_eq!(code, 404);
    let (code, _) = person_call(d, admin.port, &erin, "GET", list, &none);
    assert_eq!(code, 200);
    let (code, _) = person_call(d, admin.port, &erin, "POST", list, &upload);
    assert_eq!(code, 403);

    // Tokens the provider did not mean for this API, or no longer valid, are refused with why.
    for (bad, reason) in [
        (
            token(
                "alice",
                &["acme-admins"],
                &["mfa"],
                serde_json::json!({ "aud": "someone-else" }),
            ),
            "token_audience",
        ),
        (
            token(
                "alice",
                &["acme-admins"],
                &["mfa"],
                serde_json::json!({ "exp": now - 600 }),
            ),
            "token_expired",
        ),
        (
            token(
                "alice",
                &["acme-admins"],
                &["mfa"],
                serde_json::json!({ "iss": "https://elsewhere.test" }),
            ),
            "token_issuer",
        ),
        (
            {
                // The signature's first character changed: still base64url, no longer valid.
                let (signed, sig) = alice.rsplit_once('.').unwrap();
                let first = if sig.starts_with('A') { 'B' } else { 'A' };
                format!("{signed}.{first}{}", &sig[1..])
            },
            "token_signature",
        ),
        ("not.a.jwt".to_owned(), "token_malformed"),
    ] {
        let (code, body) = person_call(d, admin.port, &bad, "GET", list, &none);
        assert_eq!(code, 401, "{reason}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(reason),
            "{reason}: {body}"
        );
    }
    // Two Authorization headers (a valid token beside another): refused, not one picked.
    let (a1, a2) = (
        format!("authorization: Bearer {alice}"),
        format!("authorization: Bearer {carol}"),
    );
    let (code, body) = curl(d, admin.port, &["-H", &a1, "-H", &a2], "GET", list, &none);
    assert_eq!(code, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("token_malformed"),
        "{body}"
    );
    // The same over HTTP/1.1.
    let (code, _) = curl(
        d,
        admin.port,
        &["--http1.1", "-H", &a1, "-H", &a2],
        "GET",
        list,
        &none,
    );
    assert_eq!(code, 401);
    // A flood of forged tokens (`alg: none`) never gets through, and the person's own token
    // keeps working beside it.
    for _ in 0..30 {
        let (code, _) = person_call(
            d,
            admin.port,
            "eyJhbGciOiJub25lIn0.e30.",
            "GET",
            list,
            &none,
        );
        assert_eq!(code, 401);
    }
    let (code, _) = person_call(d, admin.port, &alice, "GET", list, &none);
    assert_eq!(code, 200);

    // A bearer credential on issuance is a bootstrap token, never a person's.
    let (code, body) = person_call(
        d,
        admin.port,
        &alice,
        "POST",
        "/v1/certificates",
        &serde_json::json!({ "csr": "x" }),
    );
    assert_eq!(code, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("bootstrap token"),
        "{body}"
    );

    // The person is named in the audit log, with the role that allowed the call.
    drop(admin);
    let out = Command::new(bin())
        .args(["audit", "query", d.join("admin-audit").to_str().unwrap()])
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"actor\":\"oidc:corp:alice\"")
                && l.contains("policy.upload")
                && l.contains("\"role\":\"tenant_admin\"")
                && l.contains("\"outcome\":\"ok\"")),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("oidc:corp:bob") && l.contains("\"outcome\":\"denied\"")),
        "{audit}"
    );
}

/// Two-person activation against one person with two identities: Alice asks for an activation
/// with her OIDC token and tries to approve it with her client certificate (and the reverse).
/// With `persons:` linking both, each is refused as the same person; Bob approves.
#[test]
fn one_person_under_two_identities_cannot_approve_their_own_activation() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(ca) = HsmCa::init(d) else { return };
    let corp = Corp::start(&pki, d);
    write_platform_config(d);
    let extra = format!(
        "{corp}roles:\n  - {{ role: tenant_admin, tenant: acme, people: {{ provider: corp, subjects: [alice, bob] }} }}\n\
         \x20 - {{ role: tenant_admin, tenant: acme, spiffe_ids: [\"{ADMIN_ID}\"] }}\n\
         persons:\n  - {{ name: alice, spiffe_ids: [\"{ADMIN_ID}\"], oidc: [{{ provider: corp, subject: alice }}] }}\n\
         policies:\n  gateway_config: platform.yaml\n  approval: {{ required: true }}\n",
        corp = corp.config()
    );
    let admin = AdminApi::start_with(d, &ca, &extra);
    ca.issue(d, "policy-admin", ADMIN_ID);
    let token = |sub: &str| corp.token(sub, serde_json::json!({}));
    let (alice, bob) = (token("alice"), token("bob"));
    let upload = serde_json::json!({ "document": ACME_V1 });
    let reason = serde_json::json!({ "reason": "CHG-2" });
    let (code, body) = person_call(
        d,
        admin.port,
        &alice,
        "POST",
        "/v1/tenants/acme/policies",
        &upload,
    );
    assert_eq!(code, 201, "{body}");

    // Asked by token, approved by certificate; then asked by certificate, approved by token.
    let asked_by_token = |version: u64| {
        let path = format!("/v1/tenants/acme/policies/{version}/activate");
        let (code, body) = person_call(d, admin.port, &alice, "POST", &path, &reason);
        assert_eq!(code, 202, "{body}");
        body["approval"]["id"].as_u64().unwrap()
    };
    let id = asked_by_token(1);
    for decision in ["approve", "reject"] {
        let path = format!("/v1/tenants/acme/approvals/{id}/{decision}");
        let (code, body) = admin_call(d, admin.port, "POST", &path, &serde_json::Value::Null);
        assert_eq!(
            (code, body["error"].as_str()),
            (403, Some("same_person")),
            "{decision}: {body}"
        );
    }
    let path = format!("/v1/tenants/acme/approvals/{id}/approve");
    let (code, body) = person_call(d, admin.port, &bob, "POST", &path, &serde_json::Value::Null);
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );

    let (code, body) = person_call(
        d,
        admin.port,
        &alice,
        "POST",
        "/v1/tenants/acme/policies",
        &upload,
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = admin_call(
        d,
        admin.port,
        "POST",
        "/v1/tenants/acme/policies/2/activate",
        &reason,
    );
    assert_eq!(code, 202, "{body}");
    let id = body["approval"]["id"].as_u64().unwrap();
    let path = format!("/v1/tenants/acme/approvals/{id}/approve");
    let (code, body) = person_call(
        d,
        admin.port,
        &alice,
        "POST",
        &path,
        &serde_json::Value::Null,
    );
    assert_eq!(
        (code, body["error"].as_str()),
        (403, Some("same_person")),
        "{body}"
    );
    let (code, body) = person_call(d, admin.port, &bob, "POST", &path, &serde_json::Value::Null);
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
}

/// The role matrix of `admin/tests/policies.rs` (every role endpoint, each role in and out of
/// scope), called by people with tokens from the real OpenID provider instead of client
/// certificates: each role bound to a person by `people:` gets exactly the answers the same role
/// gets by certificate; a person with no role is treated as a certificate with none, a
/// platform-wide auditor as the tenant's auditor, and no token at all is 401.
#[test]
fn every_endpoint_answers_people_with_tokens_as_the_role_matrix_says() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(ca) = HsmCa::init(d) else { return };
    let corp = Corp::start(&pki, d);
    std::fs::write(d.join("platform.yaml"), role_matrix::GATEWAY).unwrap();
    std::fs::create_dir(d.join("traffic")).unwrap();
    let bind = |role: &str, tenant: Option<&str>, subject: &str| {
        let tenant = tenant.map(|t| format!("tenant: {t}, ")).unwrap_or_default();
        format!(
            "  - {{ role: {role}, {tenant}people: {{ provider: corp, subjects: [{subject}] }} }}\n"
        )
    };
    let extra = format!(
        "{corp}roles:\n{roles}\
         policies:\n  gateway_config: platform.yaml\n  approval: {{ required: true }}\n  traffic: [{traffic}]\n\
         webhooks: {{}}\n",
        corp = corp.config(),
        traffic = d.join("traffic").display(),
        roles = [
            bind("tenant_admin", Some("acme"), "bob"),
            bind("policy_editor", Some("acme"), "eddie"),
            bind("certificate_issuer", Some("acme"), "ivy"),
            bind("auditor", Some("acme"), "audrey"),
            bind("read_only", Some("acme"), "rita"),
            bind("tenant_admin", Some("globex"), "gloria"),
            bind("auditor", None, "paul"),
        ]
        .concat(),
    );
    let admin = AdminApi::start_with(d, &ca, &extra);
    let acme_serial = ca.issue(
        d,
        "frontend",
        "spiffe://test.portcullis.local/ns/app/sa/frontend",
    );
    let token = |sub: &str| corp.token(sub, serde_json::json!({}));
    let (code, body) = person_call(
        d,
        admin.port,
        &token("bob"),
        "POST",
        "/v1/tenants/acme/policies",
        &serde_json::json!({ "document": role_matrix::ACME_V1 }),
    );
    assert_eq!(code, 201, "{body}");
    let v = body["version"].as_u64().unwrap();

    // Each person, and the matrix column whose answers they must get.
    let people = [
        ("bob", "admin"),
        ("eddie", "editor"),
        ("ivy", "issuer"),
        ("audrey", "auditor"),
        ("rita", "reader"),
        ("gloria", "globex"),
        ("paul", "auditor"),
        ("nobody", "workload"),
        ("", "anonymous"),
    ];
    let mut wrong = Vec::new();
    for (person, column) in people {
        let header = format!("authorization: Bearer {}", token(person));
        let auth: Vec<&str> = if person.is_empty() {
            vec![]
        } else {
            vec!["-H", &header]
        };
        for (row, (method, path, body)) in
            role_matrix::endpoints(v, &acme_serial).iter().enumerate()
        {
            let (status, answer) = curl(d, admin.port, &auth, method, path, body);
            let expected = role_matrix::expected(row, column);
            if status != expected {
                wrong.push(format!(
                    "{person} ({column}) {method} {path}: {status} (expected {expected}) {answer}"
                ));
            }
            if status == 404 && path.starts_with("/v1/tenants/") {
                // Out of scope looks exactly like a tenant that does not exist.
                let missing = curl(
                    d,
                    admin.port,
                    &auth,
                    method,
                    &path.replace("/acme/", "/nosuch/"),
                    body,
                );
                assert_eq!(missing, (404, answer), "{person} {path}");
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Revocation by a person: out of scope 404, a role without the permission 403, the
    // tenant's admin 200 (and then 409).
    let revoke = format!("/v1/certificates/{acme_serial}/revoke");
    let reason = serde_json::json!({ "reason": "keyCompromise" });
    for (person, expected) in [("gloria", 404), ("eddie", 403), ("bob", 200), ("bob", 409)] {
        let (code, body) = person_call(d, admin.port, &token(person), "POST", &revoke, &reason);
        assert_eq!(code, expected, "{person}: {body}");
    }
}
