//! Issuance that waits for approval, against the real server over mTLS with a SoftHSM2-backed
//! CA: a first issuance under a profile with `approval: { required: true }` is checked by the
//! CA, answered 202 with a pickup secret, and signed only once someone else with
//! `CertificateApprove` on the tenant approves it; rejection, expiry, self-approval, roles
//! and tenants, refusals at once, renewal without waiting, and concurrent approvals.
//!
//! Each flow runs on both stores of pending requests (`NAME::sqlite`, `NAME::postgres`): the
//! state directory's SQLite file, and a PostgreSQL database (`store.postgres`, on a throwaway
//! cluster on loopback; skipped only when PostgreSQL is not installed and
//! PORTCULLIS_REQUIRE_POSTGRES is unset) that also holds the bootstrap tokens. Two admin
//! servers on one database are two replicas: a request made through one is decided and picked
//! up through the other, and of decisions racing through both exactly one wins.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../audit/tests/common/postgres.rs"]
mod pg;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use harness::{Client, Fixture, Server, Workload};
use pg::Postgres;
use portcullis_admin::{create_token, AdminConfig, PgStore, TokenStore};
use portcullis_audit::{
    AdminAction, AuditConfig, AuditHandle, AuditLog, RecordKind, SoftwareSigner,
};
use serde_json::{json, Value};

/// Profiles only this binary's CA has (other binaries' clients would be refused them).
const PROFILES: &str = r#"
  - name: vault
    tenant: vault
    spiffe_ids: ["spiffe://vault.example/ns/**", "spiffe://vault.example/agent/*"]
    max_lifetime: 1h
    default_lifetime: 30m
    approval: { required: true, expires_after: 1h }
  - name: brief
    tenant: brief
    spiffe_ids: ["spiffe://brief.example/ns/**"]
    approval: { required: true, expires_after: 5s }
  - name: webvault
    tenant: webvault
    require_spiffe_id: false
    dns_names: ["*.webvault.test"]
    server_auth: true
    approval: { required: true }
"#;

const ADMIN: &str = "spiffe://vault.example/ns/people/admin";
const ISSUER: &str = "spiffe://vault.example/ns/people/issuer";
const AUDITOR: &str = "spiffe://vault.example/ns/people/auditor";
const AGENT: &str = "spiffe://vault.example/agent/node-1";
/// The issuer's second certificate: the same person (`persons:`).
const ISSUER_LAPTOP: &str = "spiffe://vault.example/ns/people/issuer-laptop";
const ACME_ADMIN: &str = "spiffe://acme.example/ns/people/admin";

const EXTRA: &str = r#"roles:
  - { role: tenant_admin, tenant: vault, spiffe_ids: ["spiffe://vault.example/ns/people/admin"] }
  - { role: certificate_issuer, tenant: vault, spiffe_ids: ["spiffe://vault.example/ns/people/issuer"] }
  - { role: certificate_issuer, tenant: vault, spiffe_ids: ["spiffe://vault.example/ns/people/issuer-laptop"] }
  - { role: auditor, tenant: vault, spiffe_ids: ["spiffe://vault.example/ns/people/auditor"] }
  - { role: tenant_admin, tenant: vault, spiffe_ids: ["spiffe://vault.example/agent/node-1"] }
  - { role: tenant_admin, tenant: acme, spiffe_ids: ["spiffe://acme.example/ns/people/admin"] }
persons:
  - name: ivy
    spiffe_ids: ["spiffe://vault.example/ns/people/issuer", "spiffe://vault.example/ns/people/issuer-laptop"]
agents:
  - spiffe_id: "spiffe://vault.example/agent/node-1"
    tenant: vault
    grants:
      - tenant: vault
        spiffe_ids: ["spiffe://vault.example/ns/web/**"]
"#;

fn fixture() -> Option<&'static Fixture> {
    harness::fixture_with_profiles(PROFILES)
}

/// Where a test's admin servers keep the pending requests.
#[derive(Debug, Clone, Copy)]
enum Backend {
    /// `STATE/pending.sqlite3`, the fixture's token store.
    Sqlite,
    /// A PostgreSQL database (`store.postgres`) holding the pending requests and the tokens.
    Postgres,
}

/// A test's CA and store. With PostgreSQL, every server it starts is a replica on one
/// database (its own pool). The certificate inventory stays the fixture's: a server started
/// from a config with `store.postgres` alone (`AdminServer::bind`) would mark the state
/// directory the binary's SQLite tests share.
struct Rig {
    fx: &'static Fixture,
    /// With PostgreSQL: the config naming the database, the tokens in it, and the cluster
    /// (stopped when the rig is dropped).
    pg: Option<(AdminConfig, Arc<dyn TokenStore>, Postgres)>,
}

impl Rig {
    /// The fixture on `backend`; None (the test skips) without SoftHSM2, or without
    /// PostgreSQL unless PORTCULLIS_REQUIRE_POSTGRES is set.
    async fn new(backend: Backend, test: &str) -> Option<Rig> {
        let fx = fixture()?;
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let pg = Postgres::start_or_skip(test, None)?;
                let config = fx.admin_config_with(&format!(
                    "{EXTRA}store:\n  postgres:\n    url: \"{}\"\n    insecure_plaintext: true\n    \
                     max_connections: 4\n",
                    pg.conninfo()
                ));
                let pg_config = config.store.postgres.clone().unwrap();
                let tokens: Arc<dyn TokenStore> = tokio::task::spawn_blocking(move || {
                    Arc::new(PgStore::open(&pg_config).unwrap().tokens())
                })
                .await
                .unwrap();
                Some((config, tokens, pg))
            }
        };
        Some(Rig { fx, pg })
    }

    /// An admin server (on PostgreSQL, one more replica).
    async fn start(&self, audit: Option<AuditHandle>) -> Server {
        match &self.pg {
            None => {
                self.fx
                    .start_with(self.fx.admin_config_with(EXTRA), audit)
                    .await
            }
            Some((config, tokens, _)) => {
                self.fx
                    .start_with_tokens(config.clone(), Arc::clone(tokens), audit)
                    .await
            }
        }
    }

    /// A bootstrap token for `tenant` in the servers' token store, valid for an hour.
    async fn token(&self, tenant: &str) -> String {
        let Some((_, tokens, _)) = &self.pg else {
            return self.fx.token(tenant, None);
        };
        let (tokens, tenant) = (Arc::clone(tokens), tenant.parse().unwrap());
        tokio::task::spawn_blocking(move || {
            let (token, _) = create_token(
                &*tokens,
                tenant,
                None,
                Duration::from_secs(3600),
                None,
                SystemTime::now(),
            )
            .unwrap();
            token.expose().to_owned()
        })
        .await
        .unwrap()
    }
}

impl Rig {
    /// With PostgreSQL, the request's row as JSON, read from the database itself (not through
    /// a server): where the servers keep it, and what is kept; with SQLite, None.
    fn row(&self, id: &str) -> Option<Value> {
        let (_, _, pg) = self.pg.as_ref()?;
        assert!(
            id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        let text = pg.psql(&format!(
            "SELECT row_to_json(p) FROM pending_issuances p WHERE id = '{id}'"
        ));
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{id}: {e}: {text:?}")))
    }
}

/// Each flow named, as a module with one test per store: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    )*};
}

on_both_stores!(
    a_request_waits_is_approved_by_another_person_and_picked_up,
    a_rejected_request_tells_the_requester_why_and_no_one_decides_their_own,
    a_pickup_secret_is_taken_only_as_itself_in_one_header,
    the_creator_of_the_token_a_request_came_with_cannot_decide_it,
    a_request_the_ca_would_refuse_is_refused_at_once_and_never_kept,
    an_expired_request_is_gone_and_can_no_longer_be_approved,
    of_two_concurrent_approvals_exactly_one_signs,
    pending_requests_are_listed_approved_and_rejected_through_the_cli,
);

/// The rig of `test` on `backend`, or return (skip).
macro_rules! rig {
    ($backend:expr, $test:expr) => {
        match Rig::new($backend, $test).await {
            Some(rig) => rig,
            None => return,
        }
    };
}

/// A client presenting a certificate of `tenant` for `id`, issued straight by the CA.
async fn person(server: &Server, fx: &Fixture, tenant: &str, id: &str) -> Client {
    server.client(Some(&fx.person(tenant, id))).await
}

/// A first issuance with a fresh bootstrap token of `tenant`: the 202's body.
async fn request(rig: &Rig, server: &Server, tenant: &str, w: &Workload) -> Value {
    let token = rig.token(tenant).await;
    let r = server
        .client(None)
        .await
        .issue(Some(&token), json!({ "csr": w.csr }))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    r.json()
}

fn decide_path(tenant: &str, id: &str, what: &str) -> String {
    format!("/v1/tenants/{tenant}/certificates/pending/{id}/{what}")
}

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

async fn a_request_waits_is_approved_by_another_person_and_picked_up(backend: Backend) {
    let rig = rig!(
        backend,
        "a_request_waits_is_approved_by_another_person_and_picked_up"
    );
    let (fx, server) = (rig.fx, rig.start(None).await);
    let w = Workload::new(Some("spiffe://vault.example/ns/web/api"), &[]);
    let token = rig.token("vault").await;
    let mut anon = server.client(None).await;
    let r = anon.issue(Some(&token), json!({ "csr": w.csr })).await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let pending = r.json();
    let id = pending["pending"].as_str().unwrap().to_owned();
    let secret = pending["pickup_secret"].as_str().unwrap().to_owned();
    assert_eq!(pending["poll"], format!("/v1/certificates/pending/{id}"));
    // In PostgreSQL: the secret's SHA-256 only.
    if let Some(row) = rig.row(&id) {
        assert_eq!(row["state"], "pending", "{row}");
        let hash = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        assert_eq!(row["secret_hash"], format!("\\x{}", hex::encode(hash)));
        assert!(!row.to_string().contains(&secret), "{row}");
    }
    assert!(time(&pending["expires_at"]) > SystemTime::now() + Duration::from_secs(3500));
    // The request consumed the token.
    let again = anon.issue(Some(&token), json!({ "csr": w.csr })).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (401, "invalid_token")
    );

    let r = anon.poll_pending(&pending, &secret).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["pending"], id.as_str());
    assert!(r.json().get("pickup_secret").is_none(), "shown once only");
    // A wrong secret and an unknown id answer alike.
    let wrong = anon.poll_pending(&pending, &"A".repeat(43)).await;
    let unknown = anon
        .poll_pending(
            &json!({ "poll": "/v1/certificates/pending/000000000000000000000000" }),
            &secret,
        )
        .await;
    assert_eq!((wrong.status, unknown.status), (404, 404));
    assert_eq!(wrong.body, unknown.body);

    // Approvers see it; an auditor may not approve; another tenant's admin does not see it.
    let mut auditor = person(&server, fx, "vault", AUDITOR).await;
    let (status, list) = auditor
        .json("GET", "/v1/tenants/vault/certificates/pending", Value::Null)
        .await;
    assert_eq!(status, 200, "{list}");
    let listed = list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .expect("listed");
    assert_eq!(listed["state"], "pending");
    assert_eq!(listed["spiffe_id"], "spiffe://vault.example/ns/web/api");
    assert!(listed["requested_by"]
        .as_str()
        .unwrap()
        .starts_with("token:"));
    let (status, body) = auditor
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let mut acme_admin = person(&server, fx, "acme", ACME_ADMIN).await;
    let (status, _) = acme_admin
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 404);
    let (status, _) = acme_admin
        .json("POST", &decide_path("acme", &id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 404, "not acme's request");

    // The lifetime starts at approval, not at the request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let approved_at = SystemTime::now();
    let mut issuer = person(&server, fx, "vault", ISSUER).await;
    let (status, issued) = issuer
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["spiffe_id"], "spiffe://vault.example/ns/web/api");
    assert!(
        time(&issued["not_after"]) + Duration::from_secs(1)
            >= approved_at + Duration::from_secs(30 * 60)
    );
    let (status, _) = issuer
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 409, "decided once");

    let r = anon.poll_pending(&pending, &secret).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), issued, "the same body as the approval's");

    // The certificate verifies (the server accepts it for mTLS), is in the inventory, and
    // renews at once.
    let holder = w.identity_from(&issued);
    let mut as_holder = server.client(Some(&holder)).await;
    let renewed = as_holder.issue(None, json!({ "csr": w.csr })).await;
    assert_eq!(renewed.status, 201, "{:?}", renewed.json());
    let mut admin = person(&server, fx, "vault", ADMIN).await;
    let (status, inventory) = admin
        .json("GET", "/v1/certificates?tenant=vault", Value::Null)
        .await;
    assert_eq!(status, 200, "{inventory}");
    let serials: Vec<&str> = inventory["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["serial"].as_str())
        .collect();
    assert!(serials.contains(&issued["serial"].as_str().unwrap()));
    assert!(serials.contains(&renewed.json()["serial"].as_str().unwrap()));
    server.stop().await;
}

async fn a_rejected_request_tells_the_requester_why_and_no_one_decides_their_own(backend: Backend) {
    let rig = rig!(
        backend,
        "a_rejected_request_tells_the_requester_why_and_no_one_decides_their_own"
    );
    let fx = rig.fx;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("admin-audit");
    let key = Arc::new(SoftwareSigner::load_or_create(&dir.path().join("admin.key")).unwrap());
    let log = AuditLog::open(AuditConfig::new(&audit_dir, "admin-test"), key).unwrap();
    let server = rig.start(Some(log.handle())).await;
    let w = Workload::new(Some("spiffe://vault.example/ns/web/rejected"), &[]);
    let pending = request(&rig, &server, "vault", &w).await;
    let id = pending["pending"].as_str().unwrap();
    let secret = pending["pickup_secret"].as_str().unwrap();
    let mut admin = person(&server, fx, "vault", ADMIN).await;
    let (status, body) = admin
        .json("POST", &decide_path("vault", id, "reject"), json!({}))
        .await;
    assert_eq!(status, 400, "a reason is required: {body}");
    // A NUL is refused on every store (PostgreSQL text holds none), not a 500.
    let (status, body) = admin
        .json(
            "POST",
            &decide_path("vault", id, "reject"),
            json!({ "reason": "no\u{0}such" }),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("malformed_request")),
        "{body}"
    );
    let (status, body) = admin
        .json(
            "POST",
            &decide_path("vault", id, "reject"),
            json!({ "reason": "no such workload on our nodes" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rejected");
    let r = server
        .client(None)
        .await
        .poll_pending(&pending, secret)
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "issuance_rejected"));
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("no such workload on our nodes"));
    let (status, _) = admin
        .json("POST", &decide_path("vault", id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 409);

    // A node agent that also holds tenant_admin asks for a workload: it may not approve it.
    let mut agent = person(&server, fx, "vault", AGENT).await;
    let workload = Workload::new(Some("spiffe://vault.example/ns/web/agent-made"), &[]);
    let r = agent
        .issue(None, json!({ "csr": workload.csr, "tenant": "vault" }))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let id = r.json()["pending"].as_str().unwrap().to_owned();
    for what in ["approve", "reject"] {
        let (status, body) = agent
            .json(
                "POST",
                &decide_path("vault", &id, what),
                json!({ "reason": "mine" }),
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("self_approval"))
        );
    }
    let (status, body) = admin
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["spiffe_id"],
        "spiffe://vault.example/ns/web/agent-made"
    );
    server.stop().await;

    // Every call is in the admin audit log with the caller, the role and the outcome.
    log.handle()
        .append_durable(AdminAction {
            actor: "test".into(),
            action: "flush".into(),
            target: None,
            tenant: None,
            outcome: "ok".into(),
            role: None,
        })
        .unwrap();
    let records: Vec<AdminAction> = portcullis_audit::tail(&audit_dir, 1000)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.kind {
            RecordKind::Admin(a) => Some(a),
            _ => None,
        })
        .collect();
    let find = |action: &str, outcome: &str, actor: &str| {
        records
            .iter()
            .filter(|r| r.action == action && r.outcome == outcome && r.actor == actor)
            .collect::<Vec<_>>()
    };
    let approved = find("certificate.approve", "ok", ADMIN);
    assert_eq!(approved.len(), 1, "{records:#?}");
    assert_eq!(approved[0].role.as_deref(), Some("tenant_admin"));
    assert_eq!(approved[0].tenant.as_deref(), Some("vault"));
    assert_eq!(approved[0].target, Some(format!("pending:{id}")));
    assert_eq!(find("certificate.reject", "ok", ADMIN).len(), 1);
    assert_eq!(
        find("certificate.reject", "refused", ADMIN).len(),
        2,
        "no reason, a NUL in it"
    );
    assert_eq!(find("certificate.approve", "denied", AGENT).len(), 1);
    assert_eq!(find("certificate.reject", "denied", AGENT).len(), 1);
    let waiting = find("certificate.issue", "ok", AGENT);
    assert_eq!(waiting.len(), 1, "{records:#?}");
    assert_eq!(waiting[0].target, Some(format!("pending:{id}")));
    assert!(records
        .iter()
        .any(|r| r.action == "certificate.pending.poll" && r.outcome == "denied"));
}

/// The pickup secret as a client might garble it: another scheme, an empty bearer, two
/// Authorization headers (in either order), a huge value, the bootstrap token in its place,
/// and the secret offered as a bootstrap token. Nothing is served, nothing is a 500.
async fn a_pickup_secret_is_taken_only_as_itself_in_one_header(backend: Backend) {
    let rig = rig!(
        backend,
        "a_pickup_secret_is_taken_only_as_itself_in_one_header"
    );
    let (fx, server) = (rig.fx, rig.start(None).await);
    let w = Workload::new(Some("spiffe://vault.example/ns/web/garbled"), &[]);
    let token = rig.token("vault").await;
    let mut anon = server.client(None).await;
    let r = anon.issue(Some(&token), json!({ "csr": w.csr })).await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let pending = r.json();
    let secret = pending["pickup_secret"].as_str().unwrap().to_owned();
    let path = pending["poll"].as_str().unwrap().to_owned();
    let id = pending["pending"].as_str().unwrap().to_owned();
    let mut admin = person(&server, fx, "vault", ADMIN).await;
    let (status, body) = admin
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 200, "{body}");

    let right = format!("Bearer {secret}");
    let huge = format!("Bearer {}", "A".repeat(16 * 1024));
    let used_token = format!("Bearer {token}");
    for (headers, want) in [
        (vec![("authorization", format!("Basic {secret}"))], 401),
        (vec![("authorization", "Bearer".to_owned())], 401),
        (vec![("authorization", "Bearer    ".to_owned())], 401),
        (vec![("authorization", huge)], 404),
        (vec![("authorization", used_token)], 404),
        (
            vec![
                ("authorization", right.clone()),
                ("authorization", "Bearer wrong".to_owned()),
            ],
            400,
        ),
        (
            vec![
                ("authorization", "Bearer wrong".to_owned()),
                ("authorization", right.clone()),
            ],
            400,
        ),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = anon.call("GET", &path, &h, "").await.unwrap();
        assert_eq!(
            r.status,
            want,
            "{headers:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // The secret is no bootstrap token.
    let w2 = Workload::new(Some("spiffe://vault.example/ns/web/garbled-2"), &[]);
    let r = anon.issue(Some(&secret), json!({ "csr": w2.csr })).await;
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
    // And the right one, alone, still picks the certificate up.
    let r = anon
        .call("GET", &path, &[("authorization", right.as_str())], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    server.stop().await;
}

/// Two people are two people: whoever created the bootstrap token a request came with may not
/// approve (or reject) it either — otherwise one certificate issuer could mint a token, use it,
/// and wave the result through alone.
async fn the_creator_of_the_token_a_request_came_with_cannot_decide_it(backend: Backend) {
    let rig = rig!(
        backend,
        "the_creator_of_the_token_a_request_came_with_cannot_decide_it"
    );
    let (fx, server) = (rig.fx, rig.start(None).await);
    let mut issuer = person(&server, fx, "vault", ISSUER).await;
    let (status, created) = issuer
        .json("POST", "/v1/tenants/vault/tokens", json!({ "ttl": "10m" }))
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap();
    let w = Workload::new(Some("spiffe://vault.example/ns/web/minted"), &[]);
    let r = server
        .client(None)
        .await
        .issue(Some(token), json!({ "csr": w.csr }))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let id = r.json()["pending"].as_str().unwrap().to_owned();
    // Nor under another identity of the same person (`persons:`).
    let laptop = person(&server, fx, "vault", ISSUER_LAPTOP).await;
    for who in [&mut issuer, &mut { laptop }] {
        for what in ["approve", "reject"] {
            let (status, body) = who
                .json(
                    "POST",
                    &decide_path("vault", &id, what),
                    json!({ "reason": "mine" }),
                )
                .await;
            assert_eq!(
                (status, body["error"].as_str()),
                (403, Some("self_approval")),
                "{what}: {body}"
            );
        }
    }
    let mut admin = person(&server, fx, "vault", ADMIN).await;
    let (status, body) = admin
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

async fn a_request_the_ca_would_refuse_is_refused_at_once_and_never_kept(backend: Backend) {
    let rig = rig!(
        backend,
        "a_request_the_ca_would_refuse_is_refused_at_once_and_never_kept"
    );
    let (fx, server) = (rig.fx, rig.start(None).await);
    let mut admin = person(&server, fx, "vault", ADMIN).await;
    let token = rig.token("vault").await;
    let mut anon = server.client(None).await;
    let outside = Workload::new(Some("spiffe://vault.example/elsewhere/x"), &[]);
    let r = anon
        .issue(Some(&token), json!({ "csr": outside.csr }))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "spiffe_id_not_allowed")
    );
    let r = anon
        .issue(
            Some(&token),
            json!({ "csr": Workload::new(Some("spiffe://vault.example/ns/too-long"), &[]).csr, "lifetime": "2h" }),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "lifetime_over_cap"));
    let (_, after) = admin
        .json("GET", "/v1/tenants/vault/certificates/pending", Value::Null)
        .await;
    // (Other tests' requests may be listed too.)
    let kept = after["pending"].as_array().unwrap().iter().any(|p| {
        p["spiffe_id"] == "spiffe://vault.example/elsewhere/x"
            || p["spiffe_id"] == "spiffe://vault.example/ns/too-long"
    });
    assert!(!kept, "nothing kept: {after}");
    // The token was given back: a good request with it waits.
    let good = Workload::new(Some("spiffe://vault.example/ns/a"), &[]);
    let r = anon.issue(Some(&token), json!({ "csr": good.csr })).await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    server.stop().await;
}

async fn an_expired_request_is_gone_and_can_no_longer_be_approved(backend: Backend) {
    let rig = rig!(
        backend,
        "an_expired_request_is_gone_and_can_no_longer_be_approved"
    );
    let (fx, server) = (rig.fx, rig.start(None).await);
    let w = Workload::new(Some("spiffe://brief.example/ns/x"), &[]);
    let pending = request(&rig, &server, "brief", &w).await;
    let id = pending["pending"].as_str().unwrap();
    let secret = pending["pickup_secret"].as_str().unwrap();
    let mut anon = server.client(None).await;
    assert_eq!(anon.poll_pending(&pending, secret).await.status, 202);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = anon.poll_pending(&pending, secret).await;
    assert_eq!((r.status, r.code().as_str()), (410, "expired"));
    let mut operator = server.client(Some(&fx.operator)).await;
    let (status, body) = operator
        .json("POST", &decide_path("brief", id, "approve"), Value::Null)
        .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("expired")));
    let (status, list) = operator
        .json("GET", "/v1/tenants/brief/certificates/pending", Value::Null)
        .await;
    assert_eq!(status, 200);
    let listed = list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap();
    assert_eq!(listed["state"], "expired");
    server.stop().await;
}

async fn of_two_concurrent_approvals_exactly_one_signs(backend: Backend) {
    let rig = rig!(backend, "of_two_concurrent_approvals_exactly_one_signs");
    let (fx, server) = (rig.fx, rig.start(None).await);
    for round in 0..3 {
        let w = Workload::new(
            Some(&format!("spiffe://vault.example/ns/race/{round}")),
            &[],
        );
        let pending = request(&rig, &server, "vault", &w).await;
        let path = decide_path("vault", pending["pending"].as_str().unwrap(), "approve");
        let mut admin = person(&server, fx, "vault", ADMIN).await;
        let mut issuer = person(&server, fx, "vault", ISSUER).await;
        let (a, b) = tokio::join!(
            admin.json("POST", &path, Value::Null),
            issuer.json("POST", &path, Value::Null)
        );
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    }
    server.stop().await;
}

#[test]
fn acme_cannot_wait_so_no_eab_key_binds_a_profile_requiring_approval() {
    let Some(fx) = fixture() else { return };
    let err = portcullis_admin::cli::run_to(
        portcullis_admin::cli::AdminCommand::Acme(portcullis_admin::cli::AcmeCommand::EabCreate {
            ca_config: fx.dir.join("ca.yaml"),
            tenant: "webvault".parse().unwrap(),
            profile: "webvault".into(),
            ttl: Duration::from_secs(3600),
            config: None,
        }),
        None,
        &mut Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("requires approval"), "{err}");
}

async fn pending_requests_are_listed_approved_and_rejected_through_the_cli(backend: Backend) {
    let rig = rig!(
        backend,
        "pending_requests_are_listed_approved_and_rejected_through_the_cli"
    );
    let fx = rig.fx;
    let dir = tempfile::tempdir().unwrap();
    let server = rig.start(None).await;
    let admin = harness::cli_caller(dir.path(), "admin", &fx.person("vault", ADMIN), &server, fx);
    let first = request(
        &rig,
        &server,
        "vault",
        &Workload::new(Some("spiffe://vault.example/ns/cli/one"), &[]),
    )
    .await;
    let second = request(
        &rig,
        &server,
        "vault",
        &Workload::new(Some("spiffe://vault.example/ns/cli/two"), &[]),
    )
    .await;
    let (one, two) = (
        first["pending"].as_str().unwrap(),
        second["pending"].as_str().unwrap(),
    );
    let list = harness::admin_cli(&["pending", "list", "--tenant", "vault"], &admin)
        .await
        .unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with(one) && l.contains("pending")),
        "{list}"
    );
    let approved = harness::admin_cli(&["pending", "approve", "--tenant", "vault", one], &admin)
        .await
        .unwrap();
    assert!(
        approved.contains("spiffe://vault.example/ns/cli/one"),
        "{approved}"
    );
    let rejected = harness::admin_cli(
        &[
            "pending", "reject", "--tenant", "vault", two, "--reason", "not ours",
        ],
        &admin,
    )
    .await
    .unwrap();
    assert!(
        rejected.contains("rejected") && rejected.contains("not ours"),
        "{rejected}"
    );
    let err = harness::admin_cli(&["pending", "approve", "--tenant", "vault", two], &admin)
        .await
        .unwrap_err();
    assert!(err.contains("409 already_decided"), "{err}");
    server.stop().await;
}

/// Two replicas: a request made through A is listed, decided and picked up through B (and the
/// other way round); the decision, its decider and its answer are the same on both; the rule
/// that the creator of the token a request came with may not decide it holds across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_on_one_replica_is_decided_and_picked_up_on_the_other() {
    let rig = rig!(
        Backend::Postgres,
        "a_request_made_on_one_replica_is_decided_and_picked_up_on_the_other"
    );
    let fx = rig.fx;
    let (a, b) = (rig.start(None).await, rig.start(None).await);
    let w = Workload::new(Some("spiffe://vault.example/ns/replicas/one"), &[]);
    let pending = request(&rig, &a, "vault", &w).await;
    let id = pending["pending"].as_str().unwrap().to_owned();
    let secret = pending["pickup_secret"].as_str().unwrap().to_owned();
    let (mut anon_a, mut anon_b) = (a.client(None).await, b.client(None).await);
    assert_eq!(anon_b.poll_pending(&pending, &secret).await.status, 202);

    let mut admin_b = person(&b, fx, "vault", ADMIN).await;
    let (status, list) = admin_b
        .json("GET", "/v1/tenants/vault/certificates/pending", Value::Null)
        .await;
    assert_eq!(status, 200, "{list}");
    let listed = |list: &Value| {
        list["pending"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id.as_str())
            .cloned()
            .expect("listed")
    };
    assert_eq!(listed(&list)["state"], "pending");
    let (status, issued) = admin_b
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 200, "{issued}");
    let row = rig.row(&id).expect("in PostgreSQL");
    assert_eq!(
        (&row["state"], &row["decided_by"], &row["serial"]),
        (&json!("approved"), &json!(ADMIN), &issued["serial"]),
        "{row}"
    );

    // Seen approved on A, by B's approver, and picked up there with the same answer.
    let mut issuer_a = person(&a, fx, "vault", ISSUER).await;
    let (_, list) = issuer_a
        .json("GET", "/v1/tenants/vault/certificates/pending", Value::Null)
        .await;
    let on_a = listed(&list);
    assert_eq!(
        (&on_a["state"], &on_a["decided_by"], &on_a["serial"]),
        (&json!("approved"), &json!(ADMIN), &issued["serial"]),
        "{on_a}"
    );
    let r = anon_a.poll_pending(&pending, &secret).await;
    assert_eq!((r.status, r.json()), (200, issued.clone()));
    for what in ["approve", "reject"] {
        let (status, body) = issuer_a
            .json(
                "POST",
                &decide_path("vault", &id, what),
                json!({ "reason": "late" }),
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (409, Some("already_decided")),
            "{what}: {body}"
        );
    }

    // Rejected on A, the requester told why on B.
    let w = Workload::new(Some("spiffe://vault.example/ns/replicas/two"), &[]);
    let pending = request(&rig, &b, "vault", &w).await;
    let id = pending["pending"].as_str().unwrap().to_owned();
    let (status, body) = issuer_a
        .json(
            "POST",
            &decide_path("vault", &id, "reject"),
            json!({ "reason": "unknown workload" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let r = anon_b
        .poll_pending(&pending, pending["pickup_secret"].as_str().unwrap())
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "issuance_rejected"));
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("unknown workload"));

    // A token minted through A by the issuer: its request may not be decided by the issuer
    // through B either.
    let (status, created) = issuer_a
        .json("POST", "/v1/tenants/vault/tokens", json!({ "ttl": "10m" }))
        .await;
    assert_eq!(status, 201, "{created}");
    let w = Workload::new(Some("spiffe://vault.example/ns/replicas/minted"), &[]);
    let r = b
        .client(None)
        .await
        .issue(created["token"].as_str(), json!({ "csr": w.csr }))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let id = r.json()["pending"].as_str().unwrap().to_owned();
    let mut issuer_b = person(&b, fx, "vault", ISSUER).await;
    let (status, body) = issuer_b
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("self_approval")),
        "{body}"
    );
    a.stop().await;
    b.stop().await;
}

/// The attack: decisions on one request raced through two replicas — four approvals (two
/// people on each), or three approvals against a rejection. Exactly one wins; the others are
/// told 409 `already_decided`; the CA signs once (one certificate in the inventory); both
/// replicas then serve the winner's outcome to the requester, the same certificate through
/// each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_raced_through_two_replicas_sign_at_most_once() {
    let rig = rig!(
        Backend::Postgres,
        "decisions_raced_through_two_replicas_sign_at_most_once"
    );
    let fx = rig.fx;
    let (a, b) = (rig.start(None).await, rig.start(None).await);
    let mut deciders = Vec::new();
    for server in [&a, &b] {
        for who in [ADMIN, ISSUER] {
            deciders.push(person(server, fx, "vault", who).await);
        }
    }
    let (mut anon_a, mut anon_b) = (a.client(None).await, b.client(None).await);
    for round in 0..6 {
        let spiffe_id = format!("spiffe://vault.example/ns/replica-race/{round}");
        let w = Workload::new(Some(&spiffe_id), &[]);
        let pending = request(&rig, if round % 2 == 0 { &a } else { &b }, "vault", &w).await;
        let id = pending["pending"].as_str().unwrap();
        let secret = pending["pickup_secret"].as_str().unwrap();
        // Odd rounds: the last decider (on B) rejects.
        let what: Vec<&str> = (0..4)
            .map(|i| {
                if round % 2 == 1 && i == 3 {
                    "reject"
                } else {
                    "approve"
                }
            })
            .collect();
        let paths: Vec<String> = what.iter().map(|w| decide_path("vault", id, w)).collect();
        let body = json!({ "reason": "raced" });
        let [d0, d1, d2, d3] = &mut deciders[..] else {
            unreachable!()
        };
        let replies = tokio::join!(
            d0.json("POST", &paths[0], body.clone()),
            d2.json("POST", &paths[2], body.clone()),
            d1.json("POST", &paths[1], body.clone()),
            d3.json("POST", &paths[3], body.clone()),
        );
        let replies = [replies.0, replies.2, replies.1, replies.3];
        // Each decision's status, error and the serial of what it signed.
        let seen: Vec<_> = replies
            .iter()
            .map(|(status, body)| (status, body["error"].clone(), body["serial"].clone()))
            .collect();
        let winners: Vec<usize> = (0..4).filter(|&i| replies[i].0 == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: {what:?} {seen:?}");
        for (i, (status, body)) in replies.iter().enumerate() {
            if i != winners[0] {
                assert_eq!(
                    (*status, body["error"].as_str()),
                    (409, Some("already_decided")),
                    "round {round}: {what:?} {seen:?}"
                );
            }
        }
        let (won, issued) = (what[winners[0]], &replies[winners[0]].1);
        let row = rig.row(id).expect("in PostgreSQL");
        assert_eq!(
            row["state"],
            if won == "approve" {
                "approved"
            } else {
                "rejected"
            },
            "round {round}: {row}"
        );
        // What the requester is told, the same through both replicas.
        let (pa, pb) = tokio::join!(
            anon_a.poll_pending(&pending, secret),
            anon_b.poll_pending(&pending, secret)
        );
        assert_eq!((pa.status, &pa.body), (pb.status, &pb.body));
        if won == "approve" {
            assert_eq!((pa.status, pa.json()), (200, issued.clone()));
        } else {
            assert_eq!((pa.status, pa.code().as_str()), (403, "issuance_rejected"));
        }
        // Signed at most once, only by the winner.
        let (status, inventory) = deciders[0]
            .json(
                "GET",
                &format!("/v1/certificates?identity={spiffe_id}"),
                Value::Null,
            )
            .await;
        assert_eq!(status, 200, "{inventory}");
        let signed = inventory["certificates"].as_array().unwrap().len();
        assert_eq!(
            signed,
            usize::from(won == "approve"),
            "round {round}: {inventory}"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// The database fails at the worst moment: the CA has signed, and recording the answer for
/// pickup fails. The approver is told so (503, never a 200 whose certificate no one can pick
/// up); the requester keeps waiting; the claim holds the request for a minute only (no one
/// may decide it meanwhile), then another approval signs again and the requester picks that up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_database_fails_to_record_is_a_503_and_the_request_is_approved_again() {
    let rig = rig!(
        Backend::Postgres,
        "an_answer_the_database_fails_to_record_is_a_503"
    );
    let (fx, server) = (rig.fx, rig.start(None).await);
    let (_, _, pg) = rig.pg.as_ref().unwrap();
    let w = Workload::new(Some("spiffe://vault.example/ns/unrecorded/one"), &[]);
    let pending = request(&rig, &server, "vault", &w).await;
    let id = pending["pending"].as_str().unwrap().to_owned();
    let secret = pending["pickup_secret"].as_str().unwrap().to_owned();
    pg.psql(
        "CREATE FUNCTION refuse_answers() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.state = 'approved' THEN RAISE EXCEPTION 'could not extend file (test)'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_answers BEFORE UPDATE ON pending_issuances \
         FOR EACH ROW EXECUTE FUNCTION refuse_answers();",
    );
    let mut admin = person(&server, fx, "vault", ADMIN).await;
    let (status, body) = admin
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("the request can be approved again in 60 s"),
        "{body}"
    );
    let mut anon = server.client(None).await;
    assert_eq!(anon.poll_pending(&pending, &secret).await.status, 202);
    assert_eq!(rig.row(&id).unwrap()["state"], "approving");
    // Held by the claim: no second signature while it may still be recorded.
    let mut issuer = person(&server, fx, "vault", ISSUER).await;
    let (status, body) = issuer
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_decided"))
    );

    // The database recovers, and the claim's minute passes (its time moved back).
    pg.psql(&format!(
        "DROP TRIGGER refuse_answers ON pending_issuances; \
         UPDATE pending_issuances SET decided_at = decided_at - 61 WHERE id = '{id}'"
    ));
    let (status, list) = issuer
        .json("GET", "/v1/tenants/vault/certificates/pending", Value::Null)
        .await;
    assert_eq!(status, 200, "{list}");
    let listed = list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["state"], "pending", "{listed}");
    let (status, issued) = issuer
        .json("POST", &decide_path("vault", &id, "approve"), Value::Null)
        .await;
    assert_eq!(status, 200, "{issued}");
    let r = anon.poll_pending(&pending, &secret).await;
    assert_eq!((r.status, r.json()), (200, issued));
    server.stop().await;
}
