//! Node agents (`agents:`): a caller whose client certificate carries a listed SPIFFE ID may
//! obtain certificates for other SPIFFE IDs, only within its grants (per tenant); every other
//! client-certificate caller still only renews its own identity.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use harness::{Client, Identity, Workload};
use serde_json::json;

/// The agent's own ID: tenant globex's profile issues `spiffe://globex.example/list/*`.
const AGENT: &str = "spiffe://globex.example/list/node-agent";
const WEB: &str = "spiffe://acme.example/ns/web/sa/api";

const AGENTS: &str = r#"agents:
  - spiffe_id: "spiffe://globex.example/list/node-agent"
    tenant: globex
    grants:
      - tenant: acme
        spiffe_ids: ["spiffe://acme.example/ns/web/**"]
"#;

/// A certificate for `id` of `tenant`, obtained with a bootstrap token.
async fn enrolled(
    server: &harness::Server,
    fx: &harness::Fixture,
    tenant: &str,
    id: &str,
) -> Identity {
    let w = Workload::new(Some(id), &[]);
    let r = server
        .client(None)
        .await
        .issue(Some(&fx.token(tenant, Some(id))), json!({ "csr": w.csr }))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    w.identity_from(&r.json())
}

async fn ask(client: &mut Client, id: &str, tenant: Option<&str>) -> harness::Reply {
    let w = Workload::new(Some(id), &[]);
    let mut body = json!({ "csr": w.csr, "lifetime": "2m" });
    if let Some(t) = tenant {
        body["tenant"] = json!(t);
    }
    client.issue(None, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_obtains_only_what_its_grants_cover() {
    let fx = require_fixture!();
    let server = fx.start_with(fx.admin_config_with(AGENTS), None).await;
    let agent = enrolled(&server, fx, "globex", AGENT).await;
    let mut client = server.client(Some(&agent)).await;

    // Within the grant: issued for the workload's tenant, under its profile and lifetime cap.
    let r = ask(&mut client, WEB, Some("acme")).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let body = r.json();
    assert_eq!(body["spiffe_id"], WEB);
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["profile"], "acme");

    // Outside the pattern, or the right pattern for a tenant it has no grant of.
    for (id, tenant) in [
        ("spiffe://acme.example/ns/db/sa/main", Some("acme")),
        ("spiffe://initech.example/ns/web/sa/api", Some("initech")),
        (WEB, Some("initech")),
        // No tenant named: its own (globex), which it has no grant of.
        (WEB, None),
    ] {
        let r = ask(&mut client, id, tenant).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "agent_not_allowed"),
            "{id} {tenant:?}: {:?}",
            r.json()
        );
    }
    // Asking for another agent-like ID of its own tenant is refused too.
    let r = ask(&mut client, "spiffe://globex.example/list/other", None).await;
    assert_eq!((r.status, r.code().as_str()), (403, "agent_not_allowed"));

    // Its own ID is a renewal like any other.
    let r = ask(&mut client, AGENT, None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.json()["tenant"], "globex");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_is_not_an_agent_still_only_renews_itself() {
    let fx = require_fixture!();
    let server = fx.start_with(fx.admin_config_with(AGENTS), None).await;
    // A workload whose ID the agent's grant covers is not an agent itself.
    let web = enrolled(&server, fx, "acme", WEB).await;
    let mut client = server.client(Some(&web)).await;
    let r = ask(&mut client, "spiffe://acme.example/ns/web/sa/other", None).await;
    assert_eq!((r.status, r.code().as_str()), (403, "identity_mismatch"));
    // Naming another tenant is for agents only.
    let r = ask(&mut client, WEB, Some("globex")).await;
    assert_eq!((r.status, r.code().as_str()), (403, "tenant_not_allowed"));
    // Its own identity: renewed.
    let r = ask(&mut client, WEB, Some("acme")).await;
    assert_eq!(r.status, 201, "{:?}", r.json());

    // Without `agents:`, the would-be agent is an ordinary caller.
    server.stop().await;
    let plain = fx.start(None).await;
    let agent = enrolled(&plain, fx, "globex", AGENT).await;
    let mut client = plain.client(Some(&agent)).await;
    let r = ask(&mut client, WEB, Some("acme")).await;
    assert_eq!((r.status, r.code().as_str()), (403, "tenant_not_allowed"));
    let r = ask(&mut client, "spiffe://globex.example/list/x", None).await;
    assert_eq!((r.status, r.code().as_str()), (403, "identity_mismatch"));
    plain.stop().await;
}
