//! `portcullis admin revoke|policies|tokens|webhooks …` against the live server over mTLS, the
//! arguments parsed by the binary's own clap definition: an operator uploads, analyses and
//! asks to activate a policy, a tenant admin approves it; tokens and webhooks created, listed
//! and removed; a certificate revoked; refusals printed as the API's code and message.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::path::Path;

use harness::{admin_cli as admin, cli_caller as caller, managed, write, Fixture, Server};

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

const ADMIN: &str = "spiffe://acme.example/ns/people/admin/carol";

async fn start(fx: &Fixture, dir: &Path) -> Server {
    let extra = format!(
        "roles:\n  - {{ role: tenant_admin, tenant: acme, spiffe_ids: [\"{ADMIN}\"] }}\n{}",
        managed(dir, "  approval: { required: true, expire_after: 1h }\n")
    );
    fx.start_with(fx.admin_config_with(&extra), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_go_from_upload_to_approved_activation_through_the_cli() {
    let fx = require_fixture!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = start(fx, d).await;
    let op = caller(d, "operator", &fx.operator, &server, fx);
    let carol = caller(d, "carol", &fx.person("acme", ADMIN), &server, fx);
    let file = write(d, "acme.yaml", ACME_V1);
    let file = file.to_str().unwrap();

    let up = admin(&["policies", "upload", "--tenant", "acme", file], &op).await;
    assert_eq!(up.unwrap().trim(), "uploaded version:  1");
    let bad = write(d, "bad.yaml", "tenants:\n  - name: acme\n    routez: []\n");
    let err = admin(
        &[
            "policies",
            "upload",
            "--tenant",
            "acme",
            bad.to_str().unwrap(),
        ],
        &op,
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("400 invalid_policy") && err.contains("line "),
        "{err}"
    );

    let list = admin(&["policies", "list", "--tenant", "acme"], &op)
        .await
        .unwrap();
    assert!(list.starts_with("VERSION  ACTIVE"), "{list}");
    assert!(list.lines().nth(1).unwrap().starts_with("1 "), "{list}");
    let diff = admin(&["policies", "diff", "--tenant", "acme", "1"], &op)
        .await
        .unwrap();
    assert!(diff.contains("+++ v1"), "{diff}");
    let impact = admin(&["policies", "impact", "--tenant", "acme", "1"], &op)
        .await
        .unwrap();
    assert!(impact.contains("allowed -> denied:"), "{impact}");

    let asked = admin(
        &[
            "policies", "activate", "--tenant", "acme", "1", "--reason", "CHG-7",
        ],
        &op,
    )
    .await
    .unwrap();
    assert!(asked.contains("pending_approval"), "{asked}");
    let pending = admin(
        &["policies", "approvals", "--tenant", "acme", "--json"],
        &op,
    )
    .await
    .unwrap();
    let pending: serde_json::Value = serde_json::from_str(&pending).unwrap();
    let id = pending["approvals"][0]["id"].as_u64().unwrap().to_string();
    // Who asked cannot approve; another person with the role can.
    let err = admin(&["policies", "approve", "--tenant", "acme", &id], &op)
        .await
        .unwrap_err();
    assert!(err.contains("403 same_person"), "{err}");
    let approved = admin(&["policies", "approve", "--tenant", "acme", &id], &carol)
        .await
        .unwrap();
    assert!(
        approved
            .lines()
            .any(|l| l.starts_with("status:") && l.contains("approved")),
        "{approved}"
    );
    let history = admin(&["policies", "history", "--tenant", "acme"], &carol)
        .await
        .unwrap();
    for action in ["uploaded", "approval_requested", "approved"] {
        assert!(history.contains(action), "{history}");
    }
    // Back to what ran before (the platform's own entry, version 0).
    let back = admin(
        &[
            "policies", "rollback", "--tenant", "acme", "--reason", "undo",
        ],
        &carol,
    )
    .await
    .unwrap();
    assert!(
        back.starts_with("action:   rolled_back\nversion:  0\n"),
        "{back}"
    );
    // Another tenant does not exist for carol.
    let err = admin(&["policies", "list", "--tenant", "globex"], &carol)
        .await
        .unwrap_err();
    assert!(err.contains("404 not_found"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_webhooks_and_revocation_through_the_cli() {
    let fx = require_fixture!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = start(fx, d).await;
    let op = caller(d, "operator", &fx.operator, &server, fx);

    let created = admin(
        &[
            "tokens", "create", "--tenant", "acme", "--ttl", "10m", "--json",
        ],
        &op,
    )
    .await
    .unwrap();
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(created["token"].as_str().is_some_and(|t| !t.is_empty()));
    let list = admin(&["tokens", "list", "--tenant", "acme"], &op)
        .await
        .unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with(id) && l.contains("unused")),
        "{list}"
    );
    let revoked = admin(&["tokens", "revoke", "--tenant", "acme", id], &op).await;
    assert_eq!(revoked.unwrap(), "token revoked\n");
    let err = admin(&["tokens", "revoke", "--tenant", "acme", id], &op)
        .await
        .unwrap_err();
    assert!(err.contains("404 not_found: no such token"), "{err}");

    let hook = admin(
        &[
            "webhooks",
            "create",
            "--tenant",
            "acme",
            "--url",
            "https://localhost:9/hook",
            "--event",
            "certificate.revoked",
        ],
        &op,
    )
    .await
    .unwrap();
    assert!(
        hook.contains("secret:") && hook.contains("whsec_"),
        "{hook}"
    );
    let list = admin(&["webhooks", "list", "--tenant", "acme", "--json"], &op)
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let hook_id = list["webhooks"][0]["id"].as_str().unwrap().to_owned();
    let err = admin(
        &[
            "webhooks",
            "create",
            "--tenant",
            "acme",
            "--url",
            "https://localhost:9/",
            "--event",
            "nope",
        ],
        &op,
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("400 malformed_request: events: unknown"),
        "{err}"
    );
    let deliveries = admin(&["webhooks", "deliveries", "--tenant", "acme"], &op)
        .await
        .unwrap();
    assert!(deliveries.starts_with("ID  EVENT"), "{deliveries}");
    let err = admin(&["webhooks", "retry", "--tenant", "acme", "dlv_none"], &op)
        .await
        .unwrap_err();
    assert!(err.contains("404 not_found"), "{err}");
    let deleted = admin(&["webhooks", "delete", "--tenant", "acme", &hook_id], &op).await;
    assert_eq!(deleted.unwrap(), "webhook deleted\n");

    let victim = fx.person("acme", "spiffe://acme.example/ns/cli/sa/victim");
    let out = admin(
        &["revoke", &victim.serial, "--reason", "keyCompromise"],
        &op,
    )
    .await
    .unwrap();
    assert!(
        out.lines()
            .any(|l| l.starts_with("status:") && l.contains("revoked")),
        "{out}"
    );
    let err = admin(&["revoke", &victim.serial], &op).await.unwrap_err();
    assert!(err.contains("409 already_revoked"), "{err}");
    server.stop().await;
}

#[test]
fn the_commands_are_well_formed() {
    use clap::CommandFactory;
    harness::Cli::command().debug_assert();
}
