//! Tenants' webhooks against the real server over mTLS with a SoftHSM2-backed CA, delivered to
//! a receiver that checks every signature with the Standard Webhooks reference library
//! (`webhook_receiver.py`, PyPI `standardwebhooks`): events of each kind arrive signed, a
//! receiver that fails is retried with the same message id, a delivery that never gets through
//! becomes a dead letter that can be listed and sent again; subscriptions stay in their tenant
//! and point only at the addresses the operator allowed.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{free_port, write, Client, Fixture, Server, Workload};
use serde_json::{json, Value};

const GATEWAY: &str = "\
listeners:
  - name: public
    address: 127.0.0.1:8443
    tls:
      certificate: server.pem
      private_key: server.key
      client_auth: required
      client_ca: bundle.pem
upstreams:
  - name: app
    targets: [127.0.0.1:9000]
tenants:
  - name: acme
    routes:
      - name: api
        host: api.acme.test
        path_prefix: /api
        upstream: app
        access:
          - id: frontend
            spiffe_id: [spiffe://acme.example/ns/web/sa/frontend]
            methods: [GET]
";

const ACME_V1: &str = "\
tenants:
  - name: acme
    routes:
      - name: api
        host: api.acme.test
        path_prefix: /api
        upstream: app
        access:
          - id: frontend
            spiffe_id: [spiffe://acme.example/ns/web/sa/frontend]
            methods: [GET, POST]
";

const ROLES: &str = "
roles:
  - { role: tenant_admin, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/admin\"] }
  - { role: auditor, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/auditor\"] }
  - { role: policy_editor, tenant: acme, spiffe_ids: [\"spiffe://acme.example/ns/people/editor\"] }
  - { role: tenant_admin, tenant: globex, spiffe_ids: [\"spiffe://globex.example/ns/people/admin\"] }
";

const ALL_EVENTS: [&str; 4] = [
    "certificate.revoked",
    "certificate.issuance_refused",
    "certificate.expiring",
    "policy.activated",
];

/// The receiver process and its files.
struct Receiver {
    child: Child,
    port: u16,
    config: PathBuf,
    log: PathBuf,
}

impl Receiver {
    /// Starts `webhook_receiver.py` on `port` (any when None).
    fn start(dir: &Path, name: &str, port: Option<u16>) -> Self {
        let config = dir.join(format!("{name}-hooks.json"));
        let log = dir.join(format!("{name}-log.jsonl"));
        std::fs::write(&config, "{}").unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_receiver.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(&config).arg(&log);
        if let Some(p) = port {
            cmd.arg(p.to_string());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with standardwebhooks (deploy/setup-debian.sh --test)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line.trim().parse().expect("the receiver's port");
        Self {
            child,
            port,
            config,
            log,
        }
    }

    fn url(&self, hook: &str) -> String {
        format!("http://127.0.0.1:{}/hook/{hook}", self.port)
    }

    /// Sets each hook's secret and how many deliveries it refuses first.
    fn set(&self, hooks: Value) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, hooks.to_string()).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Every request received so far, except those that came before the hook was set.
    fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["error"] != json!("unconfigured"))
            .collect()
    }

    /// Waits up to 15 s for a request that `pred` accepts; all entries then.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let entries = self.entries();
            if entries.iter().any(&pred) {
                return entries;
            }
            assert!(Instant::now() < deadline, "no {what}; got {entries:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(fx: &Fixture, dir: &Path) -> Server {
    start_with(fx, dir, "").await
}

/// The server, with `webhooks_extra` (indented YAML) added to its `webhooks:` section.
async fn start_with(fx: &Fixture, dir: &Path, webhooks_extra: &str) -> Server {
    let gateway = write(dir, "gateway.yaml", GATEWAY);
    let extra = format!(
        "{ROLES}policies:\n  gateway_config: {}\n  database: {}\n  signing_key: {}\nwebhooks:\n  allow_destinations: [127.0.0.1/32]\n  allow_plain_http: true\n  max_attempts: 3\n  first_retry: 200ms\n  max_retry: 1s\n  expiring_within: 1h\n  expiry_scan_interval: 300ms\n  database: {}\n{webhooks_extra}",
        gateway.display(),
        dir.join("policies.sqlite3").display(),
        dir.join("policy-signing.key").display(),
        dir.join("webhooks.sqlite3").display(),
    );
    fx.start_with(fx.admin_config_with(&extra), None).await
}

/// Creates a subscription; its id and secret.
async fn subscribe(c: &mut Client, tenant: &str, url: &str, events: &[&str]) -> (String, String) {
    let (status, body) = c
        .json(
            "POST",
            &format!("/v1/tenants/{tenant}/webhooks"),
            json!({ "url": url, "events": events, "description": "test" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{body}");
    (body["id"].as_str().unwrap().to_owned(), secret)
}

/// Waits up to 15 s for subscription `id`'s first dead letter, as listed.
async fn dead_letter(admin: &mut Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = admin
            .json(
                "GET",
                "/v1/tenants/acme/webhooks/deliveries?status=dead",
                json!(null),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if let Some(d) = body["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["subscription"] == id)
        {
            return d.clone();
        }
        assert!(Instant::now() < deadline, "no dead letter: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn of_type<'a>(entries: &'a [Value], hook: &str, kind: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["hook"] == hook && e["payload"]["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_failures_are_retried_and_dead_letters_sent_again() {
    let fx = require_fixture!();
    let dir = tempfile::tempdir().unwrap();
    let server = start(fx, dir.path()).await;
    let rx = Receiver::start(dir.path(), "rx", None);
    let admin_id = fx.person("acme", "spiffe://acme.example/ns/people/admin");
    let admin_serial = admin_id.serial.clone();
    let editor_id = fx.person("acme", "spiffe://acme.example/ns/people/editor");
    let mut admin = server.client(Some(&admin_id)).await;

    // Every event to one hook; revocations also to one that refuses its first two deliveries.
    let (_, secret) = subscribe(&mut admin, "acme", &rx.url("a"), &ALL_EVENTS).await;
    let (_, secret_r) = subscribe(&mut admin, "acme", &rx.url("r"), &["certificate.revoked"]).await;
    rx.set(json!({
        "a": { "secret": secret },
        "r": { "secret": secret_r, "fail_first": 2 },
    }));

    // certificate.revoked: retried twice, then delivered; the same message id each time,
    // every attempt's signature valid.
    let victim = fx
        .person("acme", "spiffe://acme.example/ns/web/sa/victim")
        .serial;
    let (status, body) = admin
        .json(
            "POST",
            &format!("/v1/certificates/{victim}/revoke"),
            json!({ "reason": "keyCompromise" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let delivered_to_r = |e: &Value| {
        e["hook"] == "r"
            && e["payload"]["data"]["serial"] == victim.as_str()
            && e["answered"] == 204
    };
    let entries = rx.wait_for("revocation delivered", delivered_to_r).await;
    let delivered = entries.iter().find(|e| delivered_to_r(e)).unwrap();
    let attempts: Vec<&Value> = entries
        .iter()
        .filter(|e| e["id"] == delivered["id"])
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert!(
        attempts.iter().all(|e| e["verified"] == true),
        "{attempts:#?}"
    );
    let payload = &delivered["payload"];
    assert_eq!(payload["tenant"], "acme");
    assert_eq!(payload["data"]["reason"], "keyCompromise");
    assert_eq!(
        payload["data"]["subject"],
        "spiffe://acme.example/ns/web/sa/victim"
    );

    // certificate.issuance_refused: a bootstrap token of acme used for another trust domain.
    let token = fx.token("acme", None);
    let foreign = Workload::new(Some("spiffe://globex.example/ns/x"), &[]);
    let r = server
        .client(None)
        .await
        .issue(Some(&token), json!({ "csr": foreign.csr }))
        .await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    rx.wait_for("refusal", |e| {
        e["payload"]["type"] == "certificate.issuance_refused"
            && e["payload"]["data"]["subject"] == "spiffe://globex.example/ns/x"
            && e["verified"] == true
    })
    .await;

    // policy.activated: uploaded by the editor, activated by the admin.
    let mut editor = server.client(Some(&editor_id)).await;
    let (status, body) = editor
        .json(
            "POST",
            "/v1/tenants/acme/policies",
            json!({ "document": ACME_V1 }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let v = body["version"].as_u64().unwrap();
    let (status, body) = admin
        .json(
            "POST",
            &format!("/v1/tenants/acme/policies/{v}/activate"),
            json!({ "reason": "POST for the frontend" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    rx.wait_for("activation", |e| {
        e["payload"]["type"] == "policy.activated"
            && e["payload"]["data"]["version"] == v
            && e["payload"]["data"]["actor"]
                .as_str()
                .is_some_and(|a| a.contains("people/admin"))
    })
    .await;

    // certificate.expiring: the admin's own certificate (30 minutes, no renewal) is within
    // the hour; told once however many scans see it.
    rx.wait_for("expiring", |e| {
        e["payload"]["type"] == "certificate.expiring"
            && e["payload"]["data"]["serial"] == admin_serial.as_str()
            && e["answered"] == 204
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let entries = rx.entries();
    let told: Vec<&Value> = of_type(&entries, "a", "certificate.expiring")
        .into_iter()
        .filter(|e| e["payload"]["data"]["serial"] == admin_serial.as_str() && e["answered"] == 204)
        .collect();
    assert_eq!(told.len(), 1, "{told:#?}");
    assert!(
        entries.iter().all(|e| e["verified"] == true),
        "{entries:#?}"
    );

    // A hook where nothing listens: three attempts, then a dead letter, listed with why.
    let dead_port = free_port();
    let dead_url = format!("http://127.0.0.1:{dead_port}/hook/b");
    let (b, secret_b) = subscribe(&mut admin, "acme", &dead_url, &["certificate.revoked"]).await;
    let second = fx
        .person("acme", "spiffe://acme.example/ns/web/sa/second")
        .serial;
    revoke(&mut admin, &second).await;
    let letter = dead_letter(&mut admin, &b).await;
    assert_eq!(letter["attempts"], 3, "{letter}");
    assert_eq!(letter["payload"]["data"]["serial"], second.as_str());
    assert!(
        letter["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{dead_port}")),
        "{letter}"
    );
    // The receiver comes up; the dead letter is sent again and delivered.
    let late = Receiver::start(dir.path(), "late", Some(dead_port));
    late.set(json!({ "b": { "secret": secret_b } }));
    let id = letter["id"].as_str().unwrap();
    let (status, body) = admin
        .json(
            "POST",
            &format!("/v1/tenants/acme/webhooks/deliveries/{id}/retry"),
            json!(null),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let entries = late
        .wait_for("the dead letter", |e| {
            e["id"] == id && e["verified"] == true && e["answered"] == 204
        })
        .await;
    assert_eq!(entries[0]["payload"]["data"]["serial"], second.as_str());
    let (_, body) = admin
        .json(
            "GET",
            "/v1/tenants/acme/webhooks/deliveries?status=delivered",
            json!(null),
        )
        .await;
    assert!(body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == id));
    // Only a dead letter can be sent again.
    let (status, _) = admin
        .json(
            "POST",
            &format!("/v1/tenants/acme/webhooks/deliveries/{id}/retry"),
            json!(null),
        )
        .await;
    assert_eq!(status, 404);
    let outcomes = server.stats.snapshot().webhooks;
    assert!(
        outcomes.delivered >= 5 && outcomes.retrying >= 4 && outcomes.dead >= 1,
        "{outcomes:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_stay_in_their_tenant_and_point_only_where_allowed() {
    let fx = require_fixture!();
    let dir = tempfile::tempdir().unwrap();
    let server = start(fx, dir.path()).await;
    let rx = Receiver::start(dir.path(), "rx", None);
    let admin_id = fx.person("acme", "spiffe://acme.example/ns/people/admin");
    let auditor_id = fx.person("acme", "spiffe://acme.example/ns/people/auditor");
    let editor_id = fx.person("acme", "spiffe://acme.example/ns/people/editor");
    let globex_id = fx.person("globex", "spiffe://globex.example/ns/people/admin");
    let mut admin = server.client(Some(&admin_id)).await;
    let mut globex = server.client(Some(&globex_id)).await;

    // Addresses inside the network, URLs with credentials or another scheme, unknown events:
    // refused, and nothing stored.
    let refused = [
        json!({ "url": "http://169.254.169.254/latest/meta-data/", "events": ["certificate.revoked"] }),
        json!({ "url": "http://10.0.0.1/hook", "events": ["certificate.revoked"] }),
        json!({ "url": "http://127.0.0.2:9/hook", "events": ["certificate.revoked"] }),
        json!({ "url": "http://[::1]:9/hook", "events": ["certificate.revoked"] }),
        json!({ "url": "http://[::ffff:169.254.169.254]/", "events": ["certificate.revoked"] }),
        json!({ "url": "https://user:pw@hooks.example.com/", "events": ["certificate.revoked"] }),
        json!({ "url": "ftp://hooks.example.com/", "events": ["certificate.revoked"] }),
        json!({ "url": "not a url", "events": ["certificate.revoked"] }),
        json!({ "url": rx.url("a"), "events": ["certificate.everything"] }),
        json!({ "url": rx.url("a"), "events": [] }),
        json!({ "url": rx.url("a"), "events": ["certificate.revoked"], "secret": "mine" }),
        json!({ "url": rx.url("a") }),
    ];
    for body in refused {
        let (status, answer) = admin
            .json("POST", "/v1/tenants/acme/webhooks", body.clone())
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
    }
    let (_, list) = admin
        .json("GET", "/v1/tenants/acme/webhooks", json!(null))
        .await;
    assert_eq!(list["webhooks"], json!([]), "{list}");

    let (a, secret_a) = subscribe(&mut admin, "acme", &rx.url("a"), &["certificate.revoked"]).await;
    let (_, secret_g) = subscribe(
        &mut globex,
        "globex",
        &rx.url("g"),
        &["certificate.revoked"],
    )
    .await;
    rx.set(json!({ "a": { "secret": secret_a }, "g": { "secret": secret_g } }));

    // Another tenant's admin sees none of acme's webhooks: 404 as for a tenant that does not
    // exist. Auditors read, editors do not, strangers are not let in.
    for (method, path) in [
        ("GET", "/v1/tenants/acme/webhooks".to_owned()),
        ("GET", "/v1/tenants/acme/webhooks/deliveries".to_owned()),
        ("DELETE", format!("/v1/tenants/acme/webhooks/{a}")),
        (
            "POST",
            "/v1/tenants/acme/webhooks/deliveries/msg_x/retry".to_owned(),
        ),
    ] {
        let (status, body) = globex.json(method, &path, json!(null)).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, _) = globex
        .json(
            "POST",
            "/v1/tenants/acme/webhooks",
            json!({ "url": rx.url("g"), "events": ["certificate.revoked"] }),
        )
        .await;
    assert_eq!(status, 404);
    let mut auditor = server.client(Some(&auditor_id)).await;
    let (status, list) = auditor
        .json("GET", "/v1/tenants/acme/webhooks", json!(null))
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["webhooks"][0]["id"], a.as_str());
    assert!(list["webhooks"][0].get("secret").is_none(), "{list}");
    let (status, _) = auditor
        .json(
            "POST",
            "/v1/tenants/acme/webhooks",
            json!({ "url": rx.url("x"), "events": ["certificate.revoked"] }),
        )
        .await;
    assert_eq!(status, 403);
    let mut editor = server.client(Some(&editor_id)).await;
    let (status, _) = editor
        .json("GET", "/v1/tenants/acme/webhooks", json!(null))
        .await;
    assert_eq!(status, 403);
    let mut anonymous = server.client(None).await;
    let (status, _) = anonymous
        .json("GET", "/v1/tenants/acme/webhooks", json!(null))
        .await;
    assert_eq!(status, 401);

    // acme's revocation reaches acme's hook only.
    let victim = fx
        .person("acme", "spiffe://acme.example/ns/web/sa/other-victim")
        .serial;
    revoke(&mut admin, &victim).await;
    rx.wait_for("acme's revocation", |e| {
        e["hook"] == "a" && e["payload"]["data"]["serial"] == victim.as_str()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entries = rx.entries();
    assert!(entries.iter().all(|e| e["hook"] == "a"), "{entries:#?}");

    // Unsubscribed: nothing more arrives.
    let (status, _) = admin
        .json(
            "DELETE",
            &format!("/v1/tenants/acme/webhooks/{a}"),
            json!(null),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = admin
        .json(
            "DELETE",
            &format!("/v1/tenants/acme/webhooks/{a}"),
            json!(null),
        )
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// A request the gateway refused because DLP blocked its body.
fn dlp_blocked(tenant: &str, detector: &str) -> portcullis_audit::RequestEvent {
    portcullis_audit::RequestEvent {
        request_id: "r".into(),
        tenant: Some(tenant.to_owned()),
        identity: Some(format!("spiffe://{tenant}.example/ns/web/sa/app")),
        source: "127.0.0.1:40000".into(),
        method: "POST".into(),
        host: format!("api.{tenant}.test"),
        path: "/api/upload".into(),
        status: 403,
        decision: portcullis_audit::Decision::Deny,
        dlp: vec![portcullis_audit::DlpFinding {
            detector: detector.to_owned(),
            count: 2,
            action: "block".to_owned(),
        }],
        ..portcullis_audit::RequestEvent::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_of_dlp_blocks_is_told_once_per_window() {
    let fx = require_fixture!();
    let dir = tempfile::tempdir().unwrap();
    // The gateways' audit log: acme had 25 requests blocked (20 make a spike), globex 5,
    // and records of DLP that only redacted do not count.
    let key = std::sync::Arc::new(
        portcullis_audit::SoftwareSigner::load_or_create(&dir.path().join("gw.key")).unwrap(),
    );
    let log = portcullis_audit::AuditLog::open(
        portcullis_audit::AuditConfig::new(dir.path().join("traffic"), "gw-1"),
        key,
    )
    .unwrap();
    let h = log.handle();
    for i in 0..25 {
        let detector = if i % 5 == 0 {
            "aws_access_key"
        } else {
            "credit_card"
        };
        h.append_durable(dlp_blocked("acme", detector)).unwrap();
    }
    for _ in 0..5 {
        h.append_durable(dlp_blocked("globex", "credit_card"))
            .unwrap();
    }
    for _ in 0..30 {
        let mut redacted = dlp_blocked("globex", "credit_card");
        redacted.dlp[0].action = "redact".into();
        redacted.decision = portcullis_audit::Decision::Allow;
        h.append_durable(redacted).unwrap();
    }
    drop(log);

    let spike = format!(
        "  dlp_spike:\n    logs: [{}]\n    threshold: 20\n    window: 1h\n    scan_interval: 300ms\n",
        dir.path().join("traffic").display()
    );
    let server = start_with(fx, dir.path(), &spike).await;
    let rx = Receiver::start(dir.path(), "rx", None);
    let admin_id = fx.person("acme", "spiffe://acme.example/ns/people/admin");
    let globex_id = fx.person("globex", "spiffe://globex.example/ns/people/admin");
    let mut admin = server.client(Some(&admin_id)).await;
    let mut globex = server.client(Some(&globex_id)).await;
    let (_, secret_a) = subscribe(&mut admin, "acme", &rx.url("a"), &["dlp.block_spike"]).await;
    let (_, secret_g) = subscribe(&mut globex, "globex", &rx.url("g"), &["dlp.block_spike"]).await;
    rx.set(json!({ "a": { "secret": secret_a }, "g": { "secret": secret_g } }));

    let entries = rx
        .wait_for("acme's spike", |e| {
            e["hook"] == "a" && e["payload"]["type"] == "dlp.block_spike" && e["answered"] == 204
        })
        .await;
    let data = &of_type(&entries, "a", "dlp.block_spike")[0]["payload"]["data"];
    assert_eq!(data["blocked_requests"], 25, "{data}");
    assert_eq!(
        data["detectors"],
        json!({ "aws_access_key": 10, "credit_card": 40 })
    );
    // Several scans later: still one event for acme, none for globex (5 blocks; redactions do
    // not count).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let entries = rx.entries();
    assert_eq!(
        of_type(&entries, "a", "dlp.block_spike").len(),
        1,
        "{entries:#?}"
    );
    assert!(
        of_type(&entries, "g", "dlp.block_spike").is_empty(),
        "{entries:#?}"
    );
    assert!(
        entries.iter().all(|e| e["verified"] == true),
        "{entries:#?}"
    );
    server.stop().await;
}

/// Subscriptions and dead letters are in the store, not in memory: after a restart of the
/// admin server the subscription is listed and the dead letter made before it is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_dead_letters_survive_a_restart() {
    let fx = require_fixture!();
    let dir = tempfile::tempdir().unwrap();
    let server = start(fx, dir.path()).await;
    let admin_id = fx.person("acme", "spiffe://acme.example/ns/people/admin");
    let mut admin = server.client(Some(&admin_id)).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook/r");
    let (id, secret) = subscribe(&mut admin, "acme", &url, &["certificate.revoked"]).await;
    let victim = fx
        .person("acme", "spiffe://acme.example/ns/web/sa/restart-victim")
        .serial;
    revoke(&mut admin, &victim).await;
    let letter = dead_letter(&mut admin, &id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(admin);
    server.stop().await;

    let server = start(fx, dir.path()).await;
    let mut admin = server.client(Some(&admin_id)).await;
    let (_, list) = admin
        .json("GET", "/v1/tenants/acme/webhooks", json!(null))
        .await;
    assert_eq!(list["webhooks"][0]["id"], id.as_str(), "{list}");
    let rx = Receiver::start(dir.path(), "late", Some(port));
    rx.set(json!({ "r": { "secret": secret } }));
    let (status, body) = admin
        .json(
            "POST",
            &format!("/v1/tenants/acme/webhooks/deliveries/{letter}/retry"),
            json!(null),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let entries = rx
        .wait_for("the dead letter after the restart", |e| {
            e["id"] == letter.as_str() && e["verified"] == true && e["answered"] == 204
        })
        .await;
    assert_eq!(entries[0]["payload"]["data"]["serial"], victim.as_str());
    server.stop().await;
}

/// A flood of refused issuances (one bootstrap token, a foreign CSR each time, over one
/// keep-alive connection): every refusal is answered at once, each becomes one signed delivery
/// or is counted as dropped — none is lost silently — and a good issuance still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_is_delivered_or_counted_and_issuance_goes_on() {
    let fx = require_fixture!();
    let dir = tempfile::tempdir().unwrap();
    let server = start(fx, dir.path()).await;
    let rx = Receiver::start(dir.path(), "rx", None);
    let admin_id = fx.person("acme", "spiffe://acme.example/ns/people/admin");
    let mut admin = server.client(Some(&admin_id)).await;
    let (_, secret) = subscribe(
        &mut admin,
        "acme",
        &rx.url("f"),
        &["certificate.issuance_refused"],
    )
    .await;
    rx.set(json!({ "f": { "secret": secret } }));

    let token = fx.token("acme", None);
    let foreign = Workload::new(Some("spiffe://globex.example/ns/flood"), &[]);
    let mut outsider = server.client(None).await;
    let mut refused = 0u64;
    for _ in 0..200 {
        let r = outsider
            .issue(Some(&token), json!({ "csr": foreign.csr }))
            .await;
        assert!(matches!(r.status, 400 | 429), "{}", r.status);
        refused += u64::from(r.status == 400);
    }
    assert!(refused > 0);
    let good = Workload::new(Some("spiffe://acme.example/ns/web/sa/after-flood"), &[]);
    let r = outsider
        .issue(Some(&token), json!({ "csr": good.csr }))
        .await;
    assert!(matches!(r.status, 201 | 429), "{:?}", r.json());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entries = rx.entries();
        let delivered = of_type(&entries, "f", "certificate.issuance_refused")
            .iter()
            .filter(|e| e["answered"] == 204)
            .count() as u64;
        let dropped = server.stats.snapshot().webhooks.dropped;
        if delivered + dropped == refused {
            assert!(entries.iter().all(|e| e["verified"] == true));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refused} refusals: {delivered} delivered, {dropped} dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// Revokes `serial` as `admin` (200 expected).
async fn revoke(admin: &mut Client, serial: &str) {
    let (status, body) = admin
        .json(
            "POST",
            &format!("/v1/certificates/{serial}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
