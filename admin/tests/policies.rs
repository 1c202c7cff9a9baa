//! The admin plane's roles and tenants' policy versions, against the real server over mTLS
//! with a SoftHSM2-backed CA: a role matrix over every policy, report and webhook endpoint and
//! the inventory, and an operator's story — upload (refused with line numbers, then accepted), impact analysis
//! of a real audit log, two-person activation, rollback, and the audit trail of it all.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/role_matrix.rs"]
mod role_matrix;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::path::Path;
use std::sync::Arc;

use harness::{write, Fixture, Identity, Server, Workload};
use portcullis_audit::{
    AuditConfig, AuditLog, Decision, RateLimitOutcome, RequestEvent, SoftwareSigner,
};
use role_matrix::{ACME_V1, GATEWAY};
use serde_json::json;

const ROLES: &str = "
roles:
  - { role: tenant_admin, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/admin/*\"] }
  - { role: policy_editor, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/editor\"] }
  - { role: certificate_issuer, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/issuer\"] }
  - { role: auditor, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/auditor\"] }
  - { role: read_only, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/reader\"] }
  - { role: tenant_admin, tenant: globex, spiffe_ids: [\"spiffe://globex.example/ns/people/admin\"] }
  # A binding for acme that a globex certificate matches: honoured only for acme's certificates.
  - { role: tenant_admin, tenant: acme, spiffe_ids: [\"spiffe://globex.example/ns/people/sneaky\"] }
  # Platform-wide, but a tenant's certificate matches it: honoured only for operator certificates.
  - { role: auditor, spiffe_ids: [\"spiffe://acme.example/ns/people/everywhere\"] }
";

/// A folder with the platform's gateway config, and the server with roles and policies.
async fn start(fx: &Fixture, dir: &Path, audit: Option<portcullis_audit::AuditHandle>) -> Server {
    let gateway = write(dir, "gateway.yaml", GATEWAY);
    let traffic = dir.join("traffic");
    // Each test its own policy store: the CA's state folder is shared by the test binary.
    let extra = format!(
        "{ROLES}policies:\n  gateway_config: {}\n  approval: {{ required: true, expire_after: 1h }}\n  traffic: [{}]\n  database: {}\n  signing_key: {}\nwebhooks:\n  database: {}\n",
        gateway.display(),
        traffic.display(),
        dir.join("policies.sqlite3").display(),
        dir.join("policy-signing.key").display(),
        dir.join("webhooks.sqlite3").display()
    );
    fx.start_with(fx.admin_config_with(&extra), audit).await
}

/// A request record as the gateway writes it.
fn request(
    identity: &str,
    method: &str,
    host: &str,
    path: &str,
    tenant: Option<&str>,
) -> RequestEvent {
    RequestEvent {
        request_id: "r".into(),
        tenant: tenant.map(str::to_owned),
        identity: Some(identity.to_owned()),
        source: "127.0.0.1:40000".into(),
        method: method.into(),
        host: host.into(),
        path: path.into(),
        status: 200,
        decision: Decision::Allow,
        rate_limit: RateLimitOutcome::default(),
        ..RequestEvent::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_each_role_in_and_out_of_scope() {
    let fx = require_fixture!();
    let dir = tempfile::tempdir().unwrap();
    let server = start(fx, dir.path(), None).await;
    let mut op = server.client(Some(&fx.operator)).await;
    let (status, body) = op
        .json(
            "POST",
            "/v1/tenants/acme/policies",
            json!({ "document": ACME_V1 }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let v = body["version"].as_u64().unwrap();

    let people: Vec<(&str, Identity)> = [
        ("admin", "acme", "spiffe://acme.example/ns/people/admin/bob"),
        ("editor", "acme", "spiffe://acme.example/ns/people/editor"),
        ("issuer", "acme", "spiffe://acme.example/ns/people/issuer"),
        ("auditor", "acme", "spiffe://acme.example/ns/people/auditor"),
        ("reader", "acme", "spiffe://acme.example/ns/people/reader"),
        (
            "globex",
            "globex",
            "spiffe://globex.example/ns/people/admin",
        ),
        (
            "sneaky",
            "globex",
            "spiffe://globex.example/ns/people/sneaky",
        ),
        (
            "everywhere",
            "acme",
            "spiffe://acme.example/ns/people/everywhere",
        ),
        (
            "workload",
            "acme",
            "spiffe://acme.example/ns/web/sa/frontend",
        ),
    ]
    .into_iter()
    .map(|(who, tenant, id)| (who, fx.person(tenant, id)))
    .collect();
    let mut callers: Vec<(&str, Option<&Identity>)> =
        people.iter().map(|(who, id)| (*who, Some(id))).collect();
    callers.push(("operator", Some(&fx.operator)));
    callers.push(("anonymous", None));
    // A certificate of acme's: the workload's.
    let acme_serial = people[8].1.serial.clone();
    let endpoints = role_matrix::endpoints(v, &acme_serial);
    let mut wrong = Vec::new();
    for (who, identity) in &callers {
        let mut c = server.client(*identity).await;
        for (row, (method, path, body)) in endpoints.iter().enumerate() {
            let (status, answer) = c.json(method, path, body.clone()).await;
            let expected = role_matrix::expected(row, who);
            if status != expected {
                wrong.push(format!(
                    "{who} {method} {path}: {status} (expected {expected}) {answer}"
                ));
            }
            if status == 404 && path.starts_with("/v1/tenants/") {
                // Out of scope looks exactly like a tenant that does not exist.
                let (status, missing) = c
                    .json(method, &path.replace("/acme/", "/nosuch/"), body.clone())
                    .await;
                assert_eq!((status, &missing), (404, &answer), "{who} {path}");
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // An oversized document is refused before anything is checked or stored.
    let mut admin = server.client(callers[0].1).await;
    let huge = format!("{ACME_V1}{}", "# padding\n".repeat(8_000));
    let (status, body) = admin
        .json(
            "POST",
            "/v1/tenants/acme/policies",
            json!({ "document": huge }),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    let (_, listed) = admin
        .json("GET", "/v1/tenants/acme/policies", json!(null))
        .await;
    let versions = listed["versions"].as_array().unwrap().len();
    // The matrix uploaded once per caller allowed to (admin, editor, operator) plus the first.
    assert_eq!(versions, 4, "{listed}");

    // A tenant admin sees only its tenant's certificates when it lists without a tenant.
    let mut globex = server.client(callers[5].1).await;
    let (status, body) = globex.json("GET", "/v1/certificates", json!(null)).await;
    assert_eq!(status, 200, "{body}");
    let listed = body["certificates"].as_array().unwrap();
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|c| c["tenant"] == "globex"), "{body}");

    // A token made through the API issues exactly once; a revoked one never.
    let mut issuer = server.client(callers[2].1).await;
    let bound = "spiffe://acme.example/ns/web/sa/new";
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (status, body) = issuer
            .json(
                "POST",
                "/v1/tenants/acme/tokens",
                json!({ "spiffe_id": bound }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        tokens.push((
            body["token"].as_str().unwrap().to_owned(),
            body["id"].as_str().unwrap().to_owned(),
        ));
    }
    let (status, _) = issuer
        .json(
            "DELETE",
            &format!("/v1/tenants/acme/tokens/{}", tokens[1].1),
            json!(null),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = issuer
        .json(
            "DELETE",
            &format!("/v1/tenants/acme/tokens/{}", tokens[1].1),
            json!(null),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = globex
        .json(
            "DELETE",
            &format!("/v1/tenants/acme/tokens/{}", tokens[0].1),
            json!(null),
        )
        .await;
    assert_eq!(
        status, 404,
        "another tenant's admin cannot revoke acme's token"
    );
    let w = Workload::new(Some(bound), &[]);
    let mut anon = server.client(None).await;
    let csr = json!({ "csr": w.csr });
    assert_eq!(
        anon.issue(Some(&tokens[0].0), csr.clone()).await.status,
        201
    );
    assert_eq!(
        anon.issue(Some(&tokens[0].0), csr.clone()).await.status,
        401
    );
    assert_eq!(anon.issue(Some(&tokens[1].0), csr).await.status, 401);
    let (_, body) = issuer
        .json("GET", "/v1/tenants/acme/tokens", json!(null))
        .await;
    let listed = body["tokens"].as_array().unwrap();
    let used = listed
        .iter()
        .find(|t| t["id"] == tokens[0].1.as_str())
        .unwrap();
    assert_eq!(used["status"], "used", "{body}");
    assert!(listed.iter().all(|t| t["id"] != tokens[1].1.as_str()));
    assert!(
        !body.to_string().contains(&tokens[0].0),
        "a token's secret is never listed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_is_checked_analysed_approved_by_another_person_and_rolled_back() {
    let fx = require_fixture!();
    let dir = tempfile::tempdir().unwrap();

    // Recorded traffic: a real audit log, as a gateway writes it.
    let key = Arc::new(SoftwareSigner::load_or_create(&dir.path().join("traffic.key")).unwrap());
    let traffic =
        AuditLog::open(AuditConfig::new(dir.path().join("traffic"), "gw-1"), key).unwrap();
    let h = traffic.handle();
    let acme = Some("acme");
    let records = [
        request(
            "spiffe://acme.example/ns/web/sa/frontend",
            "GET",
            "api.acme.test",
            "/api/orders",
            acme,
        ),
        request(
            "spiffe://acme.example/ns/web/sa/frontend",
            "GET",
            "api.acme.test",
            "/api/orders",
            acme,
        ),
        request(
            "spiffe://acme.example/ns/web/sa/frontend",
            "GET",
            "api.acme.test",
            "/api/items",
            acme,
        ),
        request(
            "spiffe://acme.example/ns/batch/sa/job",
            "POST",
            "api.acme.test",
            "/api/orders",
            acme,
        ),
        request(
            "spiffe://acme.example/ns/batch/sa/job",
            "POST",
            "api.acme.test",
            "/api/orders/7",
            acme,
        ),
        request(
            "spiffe://acme.example/ns/batch/sa/job",
            "GET",
            "api.acme.test",
            "/api/orders",
            acme,
        ),
        // Not routed today; the new /admin route takes it.
        request(
            "spiffe://acme.example/ns/admin/sa/ops",
            "GET",
            "api.acme.test",
            "/admin/users",
            None,
        ),
        // Another tenant's traffic: never in acme's report.
        request(
            "spiffe://globex.example/ns/web/sa/x",
            "GET",
            "www.globex.test",
            "/",
            Some("globex"),
        ),
    ];
    for r in records {
        h.append_durable(r).unwrap();
    }
    let mut with_token = request("alice", "GET", "api.acme.test", "/api/orders", acme);
    with_token.person = Some(portcullis_audit::PersonFacts::default());
    h.append_durable(with_token).unwrap();
    drop(traffic);

    let audit_dir = dir.path().join("admin-audit");
    let key = Arc::new(SoftwareSigner::load_or_create(&dir.path().join("admin.key")).unwrap());
    let log = AuditLog::open(AuditConfig::new(&audit_dir, "admin-test"), key).unwrap();
    let server = start(fx, dir.path(), Some(log.handle())).await;
    let alice = fx.person("acme", "spiffe://acme.example/ns/people/admin/alice");
    let bob = fx.person("acme", "spiffe://acme.example/ns/people/admin/bob");
    let mut a = server.client(Some(&alice)).await;
    let mut b = server.client(Some(&bob)).await;

    // Refused with the uploaded document's own line numbers.
    let broken = ACME_V1.replace("        path_prefix: /admin", "        path_prefx: /admin");
    let (status, body) = a
        .json(
            "POST",
            "/v1/tenants/acme/policies",
            json!({ "document": broken }),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_policy")),
        "{body}"
    );
    let line = broken
        .lines()
        .position(|l| l.contains("path_prefx"))
        .unwrap()
        + 1;
    assert!(
        body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["line"] == line),
        "expected a problem on line {line}: {body}"
    );
    let unknown_upstream = ACME_V1.replace(
        "upstream: app\n        access:\n          - id: admins",
        "upstream: nowhere\n        access:\n          - id: admins",
    );
    let (status, body) = a
        .json(
            "POST",
            "/v1/tenants/acme/policies",
            json!({ "document": unknown_upstream }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("nowhere"),
        "{body}"
    );
    for (document, needle) in [
        (ACME_V1.replace("name: acme", "name: globex"), "globex"),
        (format!("{ACME_V1}upstreams: []\n"), "platform"),
        (format!("{ACME_V1}---\ntenants: []\n"), "markers"),
        ("[1, 2".to_owned(), ""),
        (String::new(), ""),
    ] {
        let (status, body) = a
            .json(
                "POST",
                "/v1/tenants/acme/policies",
                json!({ "document": document }),
            )
            .await;
        assert_eq!(status, 400, "{document:?}: {body}");
        assert!(body["message"].as_str().unwrap().contains(needle), "{body}");
    }
    // A route another tenant already holds is refused beside the other tenants' policies.
    let clash = ACME_V1.replace(
        "host: api.acme.test\n        path_prefix: /admin",
        "host: www.globex.test\n        path_prefix: /",
    );
    let (status, body) = a
        .json(
            "POST",
            "/v1/tenants/acme/policies",
            json!({ "document": clash }),
        )
        .await;
    assert_eq!(
        status, 400,
        "a route clashing with globex's was accepted: {body}"
    );
    // Nor may a longer prefix on another tenant's host take part of its traffic.
    let sub = ACME_V1.replace(
        "host: api.acme.test\n        path_prefix: /admin",
        "host: www.globex.test\n        path_prefix: /admin",
    );
    let (status, body) = a
        .json(
            "POST",
            "/v1/tenants/acme/policies",
            json!({ "document": sub }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("host www.globex.test is tenant globex's"),
        "{body}"
    );

    let (status, body) = a
        .json(
            "POST",
            "/v1/tenants/acme/policies",
            json!({ "document": ACME_V1, "comment": "batch read-only, /admin" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let v = body["version"].as_u64().unwrap();

    // The diff against what runs now (the platform's own entry, version 0).
    let (status, body) = a
        .json(
            "GET",
            &format!("/v1/tenants/acme/policies/{v}/diff"),
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let diff = body["diff"].as_str().unwrap();
    // Compared as parsed: only what changed, whatever the layout.
    assert!(
        diff.contains("\n-      - POST\n+  - name: admin\n"),
        "{diff}"
    );
    assert_eq!(
        diff.lines().filter(|l| l.starts_with(['+', '-'])).count(),
        11,
        "{diff}"
    );

    // Impact: exactly the requests the change flips.
    let (status, report) = a
        .json(
            "GET",
            &format!("/v1/tenants/acme/policies/{v}/impact?window=1h"),
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["requests"], 8, "{report}");
    assert_eq!(report["unchanged"], 4, "{report}");
    assert_eq!(report["allowed_to_denied"], 2, "{report}");
    assert_eq!(report["denied_to_allowed"], 1, "{report}");
    assert_eq!(report["not_replayable"]["bearer_token"], 1, "{report}");
    let changes = report["changes"].as_array().unwrap();
    assert_eq!(changes[0]["from"], "allowed by batch on acme/api");
    assert_eq!(changes[0]["to"], "denied by default-deny on acme/api");
    assert_eq!(changes[0]["count"], 2);
    assert!(changes[0]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["method"] == "POST"));
    assert_eq!(changes[1]["from"], "no route");
    assert_eq!(changes[1]["to"], "allowed by admins on acme/admin");
    assert!(!report.to_string().contains("globex"), "{report}");

    // Two-person activation.
    let (status, body) = a
        .json(
            "POST",
            &format!("/v1/tenants/acme/policies/{v}/activate"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("reason_required")),
        "{body}"
    );
    let (status, body) = a
        .json(
            "POST",
            &format!("/v1/tenants/acme/policies/{v}/activate"),
            json!({ "reason": "CHG-42" }),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("pending_approval")),
        "{body}"
    );
    let id = body["approval"]["id"].as_u64().unwrap();
    let (status, body) = a
        .json(
            "POST",
            &format!("/v1/tenants/acme/approvals/{id}/approve"),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("same_person")),
        "{body}"
    );
    let (status, body) = a
        .json("GET", "/v1/tenants/acme/policies", json!(null))
        .await;
    assert_eq!((status, &body["active"]), (200, &json!(0)), "{body}");
    let (status, body) = b
        .json(
            "POST",
            &format!("/v1/tenants/acme/approvals/{id}/approve"),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let (status, body) = b
        .json(
            "POST",
            &format!("/v1/tenants/acme/approvals/{id}/approve"),
            json!(null),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_pending")),
        "{body}"
    );
    let (_, body) = a
        .json("GET", "/v1/tenants/acme/policies", json!(null))
        .await;
    assert_eq!(body["active"], v, "{body}");
    // With v active, its impact is nil.
    let (_, report) = a
        .json(
            "GET",
            &format!("/v1/tenants/acme/policies/{v}/impact?window=1h"),
            json!(null),
        )
        .await;
    assert_eq!(
        (
            report["unchanged"].as_u64(),
            report["changes"].as_array().map(Vec::len)
        ),
        (Some(7), Some(0)),
        "{report}"
    );

    // Rollback to what ran before (the platform's entry), no approval needed.
    let (status, body) = b
        .json(
            "POST",
            "/v1/tenants/acme/policies/rollback",
            json!({ "reason": "pager" }),
        )
        .await;
    assert_eq!((status, &body["version"]), (200, &json!(0)), "{body}");
    let (_, body) = a
        .json("GET", "/v1/tenants/acme/policies", json!(null))
        .await;
    assert_eq!(body["active"], 0, "{body}");
    let (_, body) = a
        .json("GET", "/v1/tenants/acme/policies/history", json!(null))
        .await;
    let actions: Vec<(&str, &str)> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    let (alice_id, bob_id) = (
        "spiffe://acme.example/ns/people/admin/alice",
        "spiffe://acme.example/ns/people/admin/bob",
    );
    assert_eq!(
        actions,
        [
            ("uploaded", alice_id),
            ("approval_requested", alice_id),
            ("approved", bob_id),
            ("activated", alice_id),
            ("rolled_back", bob_id),
        ],
        "{body}"
    );
    // Reports, stamped with the policy serial and the traffic log's head.
    let (status, access) = a
        .json("GET", "/v1/tenants/acme/reports/access", json!(null))
        .await;
    assert_eq!(status, 200, "{access}");
    assert_eq!(access["policy_version"], 0, "{access}");
    let rules: Vec<&str> = access["routes"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["frontend", "batch"], "{access}");
    assert_eq!(
        access["routes"][0]["rules"][1]["methods"],
        json!(["GET", "POST"])
    );
    let head = &access["audit_heads"][0];
    let last = portcullis_audit::tail(&dir.path().join("traffic"), 1)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (
            head["node"].as_str(),
            head["seq"].as_u64(),
            head["hash"].as_str()
        ),
        (Some("gw-1"), Some(last.seq), Some(last.hash.as_str())),
        "{access}"
    );
    assert!(access["policy_serial"].as_u64().unwrap() > 0);
    let r = a
        .call("GET", "/v1/tenants/acme/reports/access?format=csv", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .nth(2)
            .unwrap()
            .starts_with("acme/api,api.acme.test,/api,batch,allow,"),
        "{text}"
    );
    assert!(r.headers["x-portcullis-report-audit-heads"]
        .to_str()
        .unwrap()
        .starts_with(&format!("gw-1:{}:", last.seq)));
    let (status, audit) = a
        .json(
            "GET",
            "/v1/tenants/acme/reports/audit?window=1h",
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(
        (audit["requests"].as_u64(), audit["allowed"].as_u64()),
        (Some(7), Some(7)),
        "{audit}"
    );
    let (status, changes) = a
        .json("GET", "/v1/tenants/acme/reports/changes", json!(null))
        .await;
    assert_eq!(
        (status, changes["history"].as_array().map(Vec::len)),
        (200, Some(5)),
        "{changes}"
    );
    let (status, certs) = a
        .json(
            "GET",
            "/v1/tenants/acme/reports/certificates?within=2h",
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{certs}");
    let list = certs["certificates"].as_array().unwrap();
    assert!(list.iter().all(|c| c["tenant"] == "acme"));
    assert!(
        certs["expiring"].as_u64().unwrap() >= 2,
        "alice and bob's certificates: {certs}"
    );
    for bad in [
        "/v1/tenants/acme/reports/nothing",
        "/v1/tenants/acme/reports/audit?window=forever",
        "/v1/tenants/acme/reports/access?format=xml",
    ] {
        let (status, body) = a.json("GET", bad, json!(null)).await;
        assert!(status == 400 || status == 404, "{bad}: {status} {body}");
    }
    server.stop().await;

    // Every call is in the admin audit log with the caller, the role and the outcome.
    log.handle()
        .append_durable(portcullis_audit::AdminAction {
            actor: "test".into(),
            action: "flush".into(),
            target: None,
            tenant: None,
            outcome: "ok".into(),
            role: None,
        })
        .unwrap();
    let admin_records: Vec<portcullis_audit::AdminAction> =
        portcullis_audit::tail(&audit_dir, 1000)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r.kind {
                portcullis_audit::RecordKind::Admin(a) => Some(a),
                _ => None,
            })
            .collect();
    let find = |action: &str, outcome: &str| {
        admin_records
            .iter()
            .filter(|r| r.action == action && r.outcome == outcome)
            .collect::<Vec<_>>()
    };
    let approved = find("policy.approve", "ok");
    assert_eq!(approved.len(), 1, "{admin_records:#?}");
    assert_eq!(approved[0].actor, bob_id);
    assert_eq!(approved[0].role.as_deref(), Some("tenant_admin"));
    assert_eq!(approved[0].tenant.as_deref(), Some("acme"));
    assert_eq!(
        find("policy.approve", "denied").len(),
        1,
        "same person: {admin_records:#?}"
    );
    assert_eq!(
        find("policy.upload", "refused").len(),
        9,
        "{admin_records:#?}"
    );
    assert_eq!(find("policy.rollback", "ok").len(), 1);
}
