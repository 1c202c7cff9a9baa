//! The admin plane's state in PostgreSQL (`store.postgres`), end to end: two admin servers
//! started from their config on one PostgreSQL (over TLS verified against a test CA) serve one
//! state (inventory and tokens; policies approved and activated across nodes, one signing key;
//! webhooks delivered once while both run their delivery loops; issuances waiting for approval
//! kept in the database and decided through either); the state directory is marked
//! and a start without `store.postgres` refused; the config's refusals. PostgreSQL runs on
//! loopback, started by the test (skipped only when it is not installed and
//! PORTCULLIS_REQUIRE_POSTGRES is unset).

#[path = "support/acme_client.rs"]
mod acme_client;
#[path = "support/harness.rs"]
mod harness;
#[path = "../../audit/tests/common/postgres.rs"]
mod pg;
#[path = "../../ca/tests/support/pki.rs"]
mod pki;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use acme_client::{
    crl_lists, csr_der, have, lego_obtain_renew_revoke, location, nonce_of, path_of, post_jose,
    problem, responder_at, validate, Acme,
};

use harness::{write, Client, Workload, GATEWAY, OPERATOR};
use pg::{Postgres, ServerTls, TestCa};
use portcullis_admin::{AcmeStore, AdminServer, EabCredential, PgStore, SqliteTokenStore};
use portcullis_ca::{Ca, STATE_IN_POSTGRES};
use serde_json::json;

const API: &str = "spiffe://acme.example/ns/web/sa/api";

/// A profile requiring approval, beside the harness's: with `store.postgres` its pending
/// requests are the database's.
const PROFILES: &str = r#"
  - name: hold
    tenant: hold
    spiffe_ids: ["spiffe://hold.example/ns/**"]
    approval: { required: true, expires_after: 1h }
"#;

/// The binary's fixture (with [`PROFILES`]), or return (skip) without SoftHSM2.
macro_rules! fixture {
    () => {
        match harness::fixture_with_profiles(PROFILES) {
            Some(f) => f,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admin_servers_on_one_postgres_serve_one_state() {
    let fx = fixture!();
    let pg_ca = TestCa::new("postgres test CA");
    let (cert_pem, key_pem) = pg_ca.leaf("127.0.0.1", &["127.0.0.1"]);
    let tls = ServerTls {
        cert_pem,
        key_pem,
        client_ca_pem: None,
    };
    let Some(pg) = Postgres::start_or_skip("two_admin_servers_on_one_postgres", Some(tls)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "pg-ca.pem", &pg_ca.cert_pem);
    let config = fx.admin_config_with(&format!(
        "store:\n  postgres:\n    url: \"{}\"\n    tls: {{ ca: {} }}\n    max_connections: 4\n",
        pg.conninfo(),
        ca_file.display()
    ));
    let a = fx.start_from_config(&config).await;
    let b = fx.start_from_config(&config).await;
    let marker = fx.ca.state_dir().join(STATE_IN_POSTGRES);
    assert!(marker.exists(), "the state directory is marked");

    // An operator whose certificate is in the shared inventory (the fixture's is in SQLite).
    let pg_config = config.store.postgres.clone().unwrap();
    let operator = tokio::task::spawn_blocking(move || {
        let store = PgStore::open(&pg_config).unwrap();
        let ca = Ca::open_with_inventory(&fx.ca_config, Arc::new(store.inventory())).unwrap();
        fx.person_by(&ca, "ops", OPERATOR)
    })
    .await
    .unwrap();

    // A token created through A is consumed exactly once by 8 concurrent uses through both.
    let mut op_a = a.client(Some(&operator)).await;
    let (status, body) = op_a
        .json("POST", "/v1/tenants/acme/tokens", json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let mut clients = Vec::new();
    for i in 0..8 {
        let server = if i % 2 == 0 { &a } else { &b };
        clients.push(server.client(None).await);
    }
    let attempts: Vec<_> = clients
        .into_iter()
        .map(|mut client: Client| {
            let token = token.clone();
            tokio::spawn(async move {
                let w = Workload::new(Some(API), &[]);
                let reply = client.issue(Some(&token), json!({ "csr": w.csr })).await;
                (reply.status, reply.json(), w)
            })
        })
        .collect();
    let mut issued = Vec::new();
    for attempt in attempts {
        let (status, body, w) = attempt.await.unwrap();
        match status {
            201 => issued.push((body, w)),
            401 => assert_eq!(body["error"], "invalid_token"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(issued.len(), 1, "one use of the token succeeds");
    let serial = issued[0].0["serial"].as_str().unwrap().to_owned();

    // Issued through one, listed and revoked through the other, seen revoked through the first.
    let mut op_b = b.client(Some(&operator)).await;
    let (status, body) = op_b
        .json(
            "GET",
            &format!("/v1/certificates?identity={API}"),
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let listed = body["certificates"].as_array().unwrap();
    assert!(
        listed.iter().any(|c| c["serial"] == serial.as_str()),
        "{body}"
    );
    let revoke = format!("/v1/certificates/{serial}/revoke");
    let (status, body) = op_b
        .json("POST", &revoke, json!({ "reason": "keyCompromise" }))
        .await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("revoked")),
        "{body}"
    );
    let (status, body) = op_a.json("POST", &revoke, json!({})).await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("already_revoked")),
        "{body}"
    );
    let (status, body) = op_a
        .json(
            "GET",
            "/v1/certificates?status=revoked&tenant=acme",
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["serial"] == serial.as_str()));
    // Hostile identity queries are answered, never failed: quotes, SQL, NUL, the longest.
    let long = "x".repeat(1024);
    for identity in [
        "%27%3B%20DROP%20TABLE%20certificates%3B--",
        "%22%5C%25_*",
        "a%00b",
        &long,
    ] {
        let (status, body) = op_b
            .json(
                "GET",
                &format!("/v1/certificates?identity={identity}"),
                json!(null),
            )
            .await;
        assert_eq!(status, 200, "{identity}: {body}");
        assert_eq!(body["certificates"], json!([]), "{identity}");
    }
    let too_long = format!("/v1/certificates?identity={long}x");
    let (status, _) = op_b.json("GET", &too_long, json!(null)).await;
    assert_eq!(status, 400);
    // The token is listed as used through B.
    let (status, body) = op_b
        .json("GET", "/v1/tenants/acme/tokens", json!(null))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["status"] == "used"));
    a.stop().await;
    b.stop().await;

    // Without store.postgres, the marked state directory is refused, not read as empty.
    let err = AdminServer::bind(&fx.admin_config("platform", "admin-server"), None)
        .await
        .expect_err("a start without store.postgres is refused");
    assert!(err.to_string().contains(STATE_IN_POSTGRES), "{err}");
    // Nor are tokens written where no server would honour them (`admin token create`).
    let err = SqliteTokenStore::in_state_dir(fx.ca.state_dir()).unwrap_err();
    assert!(err.to_string().contains("kept in PostgreSQL"), "{err}");
    std::fs::remove_file(&marker).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_config_refusals_are_clear() {
    let fx = fixture!();
    let store = |body: &str| format!("store:\n  postgres:\n{body}");
    for (body, expected) in [
        (
            "    url: postgresql://admin@127.0.0.1/portcullis\n    password: s3cret\n    \
             tls: { ca: pg-ca.pem }\n",
            "store.postgres.password: a password is never written in the config",
        ),
        (
            "    url: postgresql://admin:s3cret@127.0.0.1/portcullis\n    tls: { ca: pg-ca.pem }\n",
            "store.postgres.url: carries a password",
        ),
        (
            "    host: db.example\n    user: admin\n    dbname: portcullis\n    \
             insecure_plaintext: true\n",
            "store.postgres.insecure_plaintext: only for a PostgreSQL on loopback",
        ),
        (
            "    url: postgresql://admin@db.example/portcullis\n",
            "store.postgres.tls: required",
        ),
    ] {
        let err = fx.admin_config_try(&store(body)).unwrap_err();
        assert!(err.contains(expected), "{body}\n=> {err}");
        assert!(!err.contains("s3cret"), "the password is shown: {err}");
    }
    // ACME's state is in the database too: accepted.
    fx.admin_config_try(
        &(store("    url: postgresql://a@127.0.0.1/x\n    insecure_plaintext: true\n")
            + "acme: { enabled: true }\n"),
    )
    .unwrap();
    // SQLite files beside a shared store would split the state: refused.
    let err = fx
        .admin_config_try(
            &(store("    url: postgresql://a@127.0.0.1/x\n    insecure_plaintext: true\n")
                + "policies: { gateway_config: gw.yaml, database: p.sqlite3 }\n"),
        )
        .unwrap_err();
    assert!(err.contains("leave policies.database"), "{err}");
    let err = fx
        .admin_config_try(
            &(store("    url: postgresql://a@127.0.0.1/x\n    insecure_plaintext: true\n")
                + "webhooks: { database: w.sqlite3 }\n"),
        )
        .unwrap_err();
    assert!(err.contains("leave webhooks.database"), "{err}");

    // Files are named when they are missing (at start, before the CA is touched).
    let config = fx.admin_config_with(&store(
        "    url: postgresql://admin@127.0.0.1:1/portcullis\n    \
         tls: { ca: no-such-ca.pem, client_cert: no-such.pem, client_key: no-such.key }\n",
    ));
    let err = AdminServer::bind(&config, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("store.postgres.tls.ca") && err.contains("no-such-ca.pem"),
        "{err}"
    );
    let config = fx.admin_config_with(&store(
        "    url: postgresql://admin@127.0.0.1:1/portcullis\n    \
         password_file: no-such-password\n    insecure_plaintext: true\n",
    ));
    let err = AdminServer::bind(&config, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("store.postgres.password_file") && err.contains("no-such-password"),
        "{err}"
    );
}

/// acme's policy with `methods` for the frontend: each version a different one.
fn acme_policy(method: &str) -> String {
    GATEWAY[GATEWAY.find("tenants:").unwrap()..].replace("[GET]", &format!("[GET, {method}]"))
}

const ALICE: &str = "spiffe://acme.example/ns/people/admin/alice";
const BOB: &str = "spiffe://acme.example/ns/people/admin/bob";

/// The admin config's YAML for a node on `pg` with policies (two-person activation) signed
/// by `signing_key`, and `extra` appended.
fn policy_node_yaml(
    pg: &Postgres,
    dir: &std::path::Path,
    signing_key: &str,
    extra: &str,
) -> String {
    let gateway = write(dir, "gateway.yaml", GATEWAY);
    format!(
        "roles:\n  - {{ role: tenant_admin, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/admin/*\"] }}\n\
         store:\n  postgres:\n    url: \"{}\"\n    insecure_plaintext: true\n    max_connections: 4\n\
         policies:\n  gateway_config: {}\n  approval: {{ required: true, expire_after: 1h }}\n  signing_key: {}\n{extra}",
        pg.conninfo(),
        gateway.display(),
        dir.join(signing_key).display(),
    )
}

/// People whose certificates are in the shared inventory.
async fn people_in(
    fx: &'static harness::Fixture,
    config: &portcullis_admin::AdminConfig,
    ids: &[(&'static str, &'static str)],
) -> Vec<harness::Identity> {
    let pg_config = config.store.postgres.clone().unwrap();
    let ids = ids.to_vec();
    tokio::task::spawn_blocking(move || {
        let store = PgStore::open(&pg_config).unwrap();
        let ca = Ca::open_with_inventory(&fx.ca_config, Arc::new(store.inventory())).unwrap();
        ids.iter()
            .map(|(tenant, id)| fx.person_by(&ca, tenant, id))
            .collect()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_shared_by_two_admin_servers_and_one_signing_key_enforced() {
    let fx = fixture!();
    let Some(pg) = Postgres::start_or_skip("policies_are_shared_by_two_admin_servers", None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = fx.admin_config_with(&policy_node_yaml(&pg, dir.path(), "policy-signing.key", ""));
    let a = fx.start_from_config(&config).await;
    let b = fx.start_from_config(&config).await;
    let people = people_in(
        fx,
        &config,
        &[("acme", ALICE), ("acme", BOB), ("ops", OPERATOR)],
    )
    .await;
    let (alice, bob, operator) = (&people[0], &people[1], &people[2]);
    let mut alice_a = a.client(Some(alice)).await;
    let mut alice_b = b.client(Some(alice)).await;
    let mut bob_a = a.client(Some(bob)).await;
    let mut bob_b = b.client(Some(bob)).await;

    // Uploaded on A, listed on B.
    let mut versions = Vec::new();
    for method in ["POST", "PUT", "DELETE"] {
        let (status, body) = alice_a
            .json(
                "POST",
                "/v1/tenants/acme/policies",
                json!({ "document": acme_policy(method) }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        versions.push(body["version"].as_u64().unwrap());
    }
    assert_eq!(versions, [1, 2, 3]);
    let (status, body) = bob_b
        .json("GET", "/v1/tenants/acme/policies", json!(null))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["versions"].as_array().unwrap().len(), 3, "{body}");
    assert_eq!(body["active"], 0, "{body}");

    // Activation asked on B, refused to its requester on A, approved by a second person on A.
    let activate = |v: u64| format!("/v1/tenants/acme/policies/{v}/activate");
    let approve = |id: u64| format!("/v1/tenants/acme/approvals/{id}/approve");
    let (status, body) = alice_b
        .json("POST", &activate(1), json!({ "reason": "CHG-1" }))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("pending_approval")),
        "{body}"
    );
    let first = body["approval"]["id"].as_u64().unwrap();
    let (status, body) = alice_a.json("POST", &approve(first), json!(null)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("same_person")),
        "{body}"
    );
    let (status, body) = bob_a.json("POST", &approve(first), json!(null)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let (_, body) = alice_b
        .json("GET", "/v1/tenants/acme/policies", json!(null))
        .await;
    assert_eq!(body["active"], 1, "active on B: {body}");

    // The same request approved on both at once: one approval, the other finds it decided.
    let (_, body) = alice_a
        .json("POST", &activate(2), json!({ "reason": "CHG-2" }))
        .await;
    let same = body["approval"]["id"].as_u64().unwrap();
    let path = approve(same);
    let (ra, rb) = tokio::join!(
        bob_a.json("POST", &path, json!(null)),
        bob_b.json("POST", &path, json!(null))
    );
    let mut statuses = [ra.0, rb.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", ra.1, rb.1);

    // Two versions' activations approved at once on A and B: one active, the history agrees.
    let (_, body) = alice_a
        .json("POST", &activate(3), json!({ "reason": "CHG-3" }))
        .await;
    let three = body["approval"]["id"].as_u64().unwrap();
    let (_, body) = alice_b
        .json("POST", &activate(1), json!({ "reason": "CHG-4" }))
        .await;
    let one = body["approval"]["id"].as_u64().unwrap();
    let (path_a, path_b) = (approve(three), approve(one));
    let (ra, rb) = tokio::join!(
        bob_a.json("POST", &path_a, json!(null)),
        bob_b.json("POST", &path_b, json!(null))
    );
    assert_eq!((ra.0, rb.0), (200, 200), "{} / {}", ra.1, rb.1);
    let (_, listed_a) = alice_a
        .json("GET", "/v1/tenants/acme/policies", json!(null))
        .await;
    let (_, listed_b) = bob_b
        .json("GET", "/v1/tenants/acme/policies", json!(null))
        .await;
    assert_eq!(listed_a, listed_b);
    let flagged: Vec<_> = listed_a["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["active"] == true)
        .collect();
    assert_eq!(flagged.len(), 1, "{listed_a}");
    assert_eq!(flagged[0]["version"], listed_a["active"]);
    let (_, body) = bob_a
        .json("GET", "/v1/tenants/acme/policies/history", json!(null))
        .await;
    let history = body["history"].as_array().unwrap();
    let activated: Vec<_> = history
        .iter()
        .filter(|e| e["action"] == "activated")
        .collect();
    assert_eq!(activated.len(), 4, "{body}");
    assert_eq!(
        activated.last().unwrap()["version"],
        listed_a["active"],
        "{body}"
    );
    assert!(history
        .windows(2)
        .all(|w| w[0]["id"].as_u64() < w[1]["id"].as_u64()));

    // Both nodes sign the same bundle with the same key.
    let mut op_a = a.client(Some(operator)).await;
    let mut op_b = b.client(Some(operator)).await;
    let (status, bundle_a) = op_a.json("GET", "/v1/policies/bundle", json!(null)).await;
    assert_eq!(status, 200, "{bundle_a}");
    let (_, bundle_b) = op_b.json("GET", "/v1/policies/bundle", json!(null)).await;
    assert_eq!(bundle_a["key_id"], bundle_b["key_id"]);
    let serial = |b: &serde_json::Value| {
        serde_json::from_str::<serde_json::Value>(b["payload"].as_str().unwrap()).unwrap()["serial"]
            .clone()
    };
    assert_eq!(serial(&bundle_a), serial(&bundle_b));
    a.stop().await;
    b.stop().await;

    // A node signing with another key is refused, both keys named.
    let other = fx.admin_config_with(&policy_node_yaml(&pg, dir.path(), "other-signing.key", ""));
    let err = AdminServer::bind(&other, None)
        .await
        .expect_err("a node with another policy signing key is refused")
        .to_string();
    assert!(err.contains("copy STATE/policy-signing.key"), "{err}");
    let key_id = |file: &str| {
        let signer =
            portcullis_audit::SoftwareSigner::load_or_create(&dir.path().join(file)).unwrap();
        portcullis_audit::key_id(&portcullis_audit::Signer::public_key_der(&signer))
    };
    assert!(
        err.contains(&key_id("other-signing.key")) && err.contains(&key_id("policy-signing.key")),
        "{err}"
    );
}

/// What a test receiver was sent: each delivery's `webhook-id` and body.
type Received = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A webhook receiver on loopback answering 200 to every POST (after a short pause, so that
/// attempts overlap); where it listens and what it got.
async fn receiver() -> (std::net::SocketAddr, Received) {
    use axum::{http::HeaderMap, routing::post, Router};
    let received: Received = Arc::default();
    let seen = Arc::clone(&received);
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push((id, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_made_on_one_admin_server_are_delivered_once_by_two() {
    let fx = fixture!();
    let Some(pg) = Postgres::start_or_skip("webhooks_delivered_once_by_two", None) else {
        return;
    };
    let config = fx.admin_config_with(&format!(
        "roles:\n  - {{ role: tenant_admin, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/admin/*\"] }}\n\
         store:\n  postgres:\n    url: \"{}\"\n    insecure_plaintext: true\n    max_connections: 4\n\
         webhooks:\n  allow_destinations: [127.0.0.1/32]\n  allow_plain_http: true\n  \
         max_attempts: 3\n  first_retry: 200ms\n  max_retry: 1s\n",
        pg.conninfo(),
    ));
    let a = fx.start_from_config(&config).await;
    let b = fx.start_from_config(&config).await;
    let ids: Vec<(&'static str, &'static str)> = vec![
        ("acme", ALICE),
        ("ops", OPERATOR),
        ("acme", "spiffe://acme.example/ns/web/sa/w0"),
        ("acme", "spiffe://acme.example/ns/web/sa/w1"),
        ("acme", "spiffe://acme.example/ns/web/sa/w2"),
        ("acme", "spiffe://acme.example/ns/web/sa/w3"),
        ("acme", "spiffe://acme.example/ns/web/sa/w4"),
        ("acme", "spiffe://acme.example/ns/web/sa/w5"),
    ];
    let people = people_in(fx, &config, &ids).await;
    let (addr, received) = receiver().await;

    // Subscribed on A; the subscription is listed on B.
    let mut alice_a = a.client(Some(&people[0])).await;
    let (status, body) = alice_a
        .json(
            "POST",
            "/v1/tenants/acme/webhooks",
            json!({ "url": format!("http://{addr}/hook"), "events": ["certificate.revoked"] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut alice_b = b.client(Some(&people[0])).await;
    let (_, body) = alice_b
        .json("GET", "/v1/tenants/acme/webhooks", json!(null))
        .await;
    assert_eq!(body["webhooks"].as_array().map(Vec::len), Some(1), "{body}");

    // Six revocations, half through each node, while both run their delivery loops.
    let mut op_a = a.client(Some(&people[1])).await;
    let mut op_b = b.client(Some(&people[1])).await;
    let serials: Vec<String> = people[2..].iter().map(|p| p.serial.clone()).collect();
    for (i, serial) in serials.iter().enumerate() {
        let op = if i % 2 == 0 { &mut op_a } else { &mut op_b };
        let (status, body) = op
            .json(
                "POST",
                &format!("/v1/certificates/{serial}/revoke"),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while received.lock().unwrap().len() < serials.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Time for any second attempt of the same delivery to arrive.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), serials.len(), "{got:?}");
    let delivery_ids: std::collections::HashSet<_> = got.iter().map(|(id, _)| id).collect();
    assert_eq!(delivery_ids.len(), serials.len(), "{got:?}");
    for serial in &serials {
        let n = got
            .iter()
            .filter(|(_, body)| body.contains(serial.as_str()))
            .count();
        assert_eq!(n, 1, "{serial}: {got:?}");
    }
    // Listed as delivered through either node.
    let (_, body) = alice_b
        .json(
            "GET",
            "/v1/tenants/acme/webhooks/deliveries?status=delivered",
            json!(null),
        )
        .await;
    assert_eq!(
        body["deliveries"].as_array().map(Vec::len),
        Some(serials.len()),
        "{body}"
    );
    a.stop().await;
    b.stop().await;
}

const HOLD_ADMIN: &str = "spiffe://hold.example/ns/people/admin";

/// Two admin servers started from their config (as `portcullis admin serve`) with a profile
/// requiring approval: no longer refused; the request waits in the database (not in a SQLite
/// file of the state directory), made through A, decided through B by someone other than the
/// token's creator, picked up through A, and its certificate is in the shared inventory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_kept_in_postgres_and_decided_through_either_admin_server() {
    let fx = fixture!();
    let Some(pg) = Postgres::start_or_skip("approvals_are_kept_in_postgres", None) else {
        return;
    };
    let config = fx.admin_config_with(&format!(
        "roles:\n  - {{ role: tenant_admin, tenant: hold, spiffe_ids: [\"{HOLD_ADMIN}\"] }}\n\
         store:\n  postgres:\n    url: \"{}\"\n    insecure_plaintext: true\n    max_connections: 4\n",
        pg.conninfo(),
    ));
    let a = fx.start_from_config(&config).await;
    let b = fx.start_from_config(&config).await;
    let people = people_in(fx, &config, &[("hold", HOLD_ADMIN), ("ops", OPERATOR)]).await;
    let (admin, operator) = (&people[0], &people[1]);

    let mut op_a = a.client(Some(operator)).await;
    let (status, body) = op_a
        .json("POST", "/v1/tenants/hold/tokens", json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let w = Workload::new(Some("spiffe://hold.example/ns/app"), &[]);
    let r = a
        .client(None)
        .await
        .issue(body["token"].as_str(), json!({ "csr": w.csr }))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let pending = r.json();
    let id = pending["pending"].as_str().unwrap();
    let secret = pending["pickup_secret"].as_str().unwrap();
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let state = |pg: &Postgres| {
        pg.psql(&format!(
            "SELECT state FROM pending_issuances WHERE id = '{id}'"
        ))
    };
    assert_eq!(state(&pg), "pending");
    assert!(
        !fx.ca
            .state_dir()
            .join(portcullis_admin::PENDING_DB)
            .exists(),
        "no pending requests in the state directory"
    );

    // The token's creator may not decide it, through the other server either.
    let approve = format!("/v1/tenants/hold/certificates/pending/{id}/approve");
    let mut op_b = b.client(Some(operator)).await;
    let (status, body) = op_b.json("POST", &approve, json!(null)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("self_approval")),
        "{body}"
    );
    let mut admin_b = b.client(Some(admin)).await;
    let (status, issued) = admin_b.json("POST", &approve, json!(null)).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(state(&pg), "approved");

    let r = a.client(None).await.poll_pending(&pending, secret).await;
    assert_eq!((r.status, r.json()), (200, issued.clone()));
    let (status, body) = op_a
        .json(
            "GET",
            "/v1/certificates?identity=spiffe://hold.example/ns/app",
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["serial"] == issued["serial"]),
        "{body}"
    );
    a.stop().await;
    b.stop().await;
}

/// A round-robin HTTPS balancer on loopback, in front of two admin servers: it terminates TLS
/// (a certificate for `localhost` from `ca`) and sends each request, Host header and all, to
/// the next server in turn on a connection of its own. What a node knew only in its memory
/// (a nonce, an order) would be missing on the next request. Returns its port and how many
/// requests each server was sent.
async fn round_robin(
    backends: [std::net::SocketAddr; 2],
    roots: rustls::RootCertStore,
    ca: &TestCa,
) -> (u16, Arc<[AtomicUsize; 2]>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    let (cert_pem, key_pem) = ca.leaf("localhost", &["localhost"]);
    let certs = harness::certs(&cert_pem);
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let upstream = Arc::new(harness::client_config(&roots, None));
    let counts: Arc<[AtomicUsize; 2]> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, counts_out) = (Arc::clone(&counts), counts);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream, seen, next) = (
                acceptor.clone(),
                Arc::clone(&upstream),
                Arc::clone(&seen),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (upstream, seen, next) =
                            (Arc::clone(&upstream), Arc::clone(&seen), Arc::clone(&next));
                        async move {
                            let i = next.fetch_add(1, Ordering::SeqCst) % 2;
                            seen[i].fetch_add(1, Ordering::SeqCst);
                            let tcp = tokio::net::TcpStream::connect(backends[i]).await?;
                            let name = rustls::pki_types::ServerName::try_from("localhost")
                                .map_err(std::io::Error::other)?;
                            let tls = tokio_rustls::TlsConnector::from(upstream)
                                .connect(name, tcp)
                                .await?;
                            let (mut send, conn) =
                                hyper::client::conn::http1::handshake(TokioIo::new(tls))
                                    .await
                                    .map_err(std::io::Error::other)?;
                            tokio::spawn(conn);
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map_err(std::io::Error::other)?;
                            let reply = send
                                .send_request(hyper::Request::from_parts(
                                    parts,
                                    Full::new(body.to_bytes()),
                                ))
                                .await
                                .map_err(std::io::Error::other)?;
                            let (parts, body) = reply.into_parts();
                            let body = body.collect().await.map_err(std::io::Error::other)?;
                            Ok::<_, std::io::Error>(hyper::Response::from_parts(
                                parts,
                                Full::new(body.to_bytes()),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, counts_out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admin_servers_on_one_postgres_are_one_acme_server() {
    let fx = fixture!();
    if !have("lego") {
        return;
    }
    let Some(pg) = Postgres::start_or_skip("two_admin_servers_are_one_acme_server", None) else {
        return;
    };
    let http01 = harness::free_port();
    let config = fx.admin_config_with(&format!(
        "store:\n  postgres:\n    url: \"{}\"\n    insecure_plaintext: true\n    \
         max_connections: 4\nacme:\n  enabled: true\n  http01_port: {http01}\n  \
         tls_alpn01_port: 1\n",
        pg.conninfo()
    ));
    let a = fx.start_from_config(&config).await;
    let b = fx.start_from_config(&config).await;
    let pg_config = config.store.postgres.clone().unwrap();
    let state_dir = fx.ca.state_dir().to_owned();
    // EAB keys in the shared database, sealed under the (shared) state directory's key; and an
    // operator whose certificate is in the shared inventory.
    let (creds, operator) = tokio::task::spawn_blocking(move || {
        let store = PgStore::open(&pg_config).unwrap();
        let acme = AcmeStore::postgres(&store, &state_dir).unwrap();
        let creds: Vec<EabCredential> = (0..2)
            .map(|_| {
                acme.create_eab(
                    &"webco".parse().unwrap(),
                    "webco-web",
                    Duration::from_secs(3600),
                    SystemTime::now(),
                )
                .unwrap()
            })
            .collect();
        let ca = Ca::open_with_inventory(&fx.ca_config, Arc::new(store.inventory())).unwrap();
        (creds, fx.person_by(&ca, "ops", OPERATOR))
    })
    .await
    .unwrap();

    // The attacks, by hand, each request sent to the node we choose. A nonce issued by A is
    // accepted once by B, then refused by either; one used on B is refused on A.
    let mut acme = Acme::new(&a).await;
    acme.register(&creds[0]).await;
    let mut via_b = b.client(None).await;
    let order = json!({"identifiers": [{"type": "dns", "value": "localhost"}]});
    let from_a = acme.sign("/acme/new-order", &acme.nonce.clone(), Some(&order));
    let r = post_jose(&mut via_b, "/acme/new-order", from_a.clone()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let order_path = path_of(&location(&r));
    let from_b = nonce_of(&r);
    for client in [&mut acme.client, &mut via_b] {
        let r = post_jose(client, "/acme/new-order", from_a.clone()).await;
        assert_eq!(problem(&r), "urn:ietf:params:acme:error:badNonce");
    }
    let signed = acme.sign(&order_path, &from_b, None);
    let r = post_jose(&mut acme.client, &order_path, signed.clone()).await;
    assert_eq!(r.status, 200, "the order made through B is read through A");
    assert_eq!(r.json()["status"], "pending");
    acme.nonce = nonce_of(&r);
    let r = post_jose(&mut via_b, &order_path, signed).await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:badNonce");
    // The EAB key bound through A binds nothing through B.
    let mut second = Acme::new(&b).await;
    let payload = json!({"externalAccountBinding": second.eab(&creds[0])});
    let r = second.post("/acme/new-account", Some(&payload)).await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:unauthorized");

    // lego through the balancer: every request goes to the other node than the one before.
    let balancer_ca = TestCa::new("balancer test CA");
    let (port, counts) = round_robin([a.addr, b.addr], a.roots().clone(), &balancer_ca).await;
    let dir = tempfile::tempdir().unwrap();
    let trusted = write(dir.path(), "balancer-ca.pem", &balancer_ca.cert_pem);
    let cred = &creds[1];
    let directory = format!("https://localhost:{port}/acme/directory");
    let (first, renewed) = lego_obtain_renew_revoke(
        fx,
        &directory,
        &trusted,
        cred,
        "--http",
        http01,
        &dir.path().join("lego"),
    )
    .await;
    let sent = [
        counts[0].load(Ordering::SeqCst),
        counts[1].load(Ordering::SeqCst),
    ];
    assert!(
        sent[0] >= 10 && sent[1] >= 10,
        "requests per node: {sent:?}"
    );
    assert!(sent[0].abs_diff(sent[1]) <= 1, "alternated: {sent:?}");

    // Both certificates are in the shared inventory, the renewed one revoked, as either node
    // lists them; the CRL lists it.
    for server in [&a, &b] {
        let mut op = server.client(Some(&operator)).await;
        let (status, body) = op
            .json("GET", "/v1/certificates?tenant=webco", json!(null))
            .await;
        assert_eq!(status, 200, "{body}");
        let listed = body["certificates"].as_array().unwrap();
        let find = |serial: &str| {
            listed
                .iter()
                .find(|c| {
                    c["serial"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches('0')
                        .eq_ignore_ascii_case(serial)
                })
                .unwrap_or_else(|| panic!("{serial} not listed: {body}"))
        };
        assert_eq!(find(&first)["status"], "valid", "{body}");
        assert_eq!(find(&renewed)["status"], "revoked", "{body}");
    }
    assert!(crl_lists(fx, &renewed), "the CRL lists the revoked serial");

    // One ready order finalized through both nodes at once: one signs, the other is told the
    // order is not ready; one certificate more is recorded.
    let (_, answers) = responder_at(&format!("127.0.0.1:{http01}")).await;
    let r = acme.order(&["localhost"]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let order = r.json();
    validate(&mut acme, &order, &answers).await;
    let finalize = path_of(order["finalize"].as_str().unwrap());
    let csr = json!({ "csr": csr_der(&["localhost"]) });
    let r = via_b
        .call("HEAD", "/acme/new-nonce", &[], "")
        .await
        .unwrap();
    let through_a = acme.sign(&finalize, &acme.nonce.clone(), Some(&csr));
    let through_b = acme.sign(&finalize, &nonce_of(&r), Some(&csr));
    let recorded = || pg.psql("SELECT count(*) FROM acme_certificates");
    let before: u32 = recorded().trim().parse().unwrap();
    let (ra, rb) = tokio::join!(
        post_jose(&mut acme.client, &finalize, through_a),
        post_jose(&mut via_b, &finalize, through_b)
    );
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 403],
        "{} / {}",
        String::from_utf8_lossy(&ra.body),
        String::from_utf8_lossy(&rb.body)
    );
    let refused = if ra.status == 403 { &ra } else { &rb };
    assert_eq!(problem(refused), "urn:ietf:params:acme:error:orderNotReady");
    let after: u32 = recorded().trim().parse().unwrap();
    assert_eq!(after, before + 1, "signed once");

    // The database down: no nonce is handed out (and no request is accepted), nothing panics.
    pg.ctl_stop("fast");
    let r = via_b
        .call("HEAD", "/acme/new-nonce", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(r.headers.get("replay-nonce").is_none());
    let r = post_jose(&mut via_b, &order_path, acme.sign(&order_path, "n", None)).await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:serverInternal");
    pg.ctl_start();
    a.stop().await;
    b.stop().await;

    // `admin acme eab-create --config ADMIN.yaml` stores the key in the database. (Without
    // the admin config a marked state directory is refused: `acme::store` unit tests. Not
    // checked here: the fixture's state directory is shared, and another test of this binary
    // removes its marker when it ends.)
    let admin_yaml = write(
        dir.path(),
        "admin.yaml",
        &format!(
            "listen: 127.0.0.1:0\nca: {}\ntls:\n  self_issue:\n    tenant: platform\n    \
             profile: admin-server\n    dns_names: [localhost]\noperators: [\"{OPERATOR}\"]\n\
             store:\n  postgres:\n    url: \"{}\"\n    insecure_plaintext: true\n",
            fx.dir.join("ca.yaml").display(),
            pg.conninfo()
        ),
    );
    let eab_create = |config: Option<std::path::PathBuf>| {
        portcullis_admin::cli::run_to(
            portcullis_admin::cli::AdminCommand::Acme(
                portcullis_admin::cli::AcmeCommand::EabCreate {
                    ca_config: fx.dir.join("ca.yaml"),
                    tenant: "webco".parse().unwrap(),
                    profile: "webco-web".into(),
                    ttl: Duration::from_secs(3600),
                    config,
                },
            ),
            None,
            &mut Vec::new(),
        )
        .map_err(|e| e.to_string())
    };
    tokio::task::spawn_blocking(move || eab_create(Some(admin_yaml)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pg.psql("SELECT count(*) FROM acme_eab_keys").trim(), "3");
}
