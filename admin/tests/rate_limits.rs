//! Rate limits as a caller meets them: a loop of renewals from one identity, of attempts with
//! one bootstrap token, of requests from one address, gets 429 `rate_limited` with
//! `Retry-After` after its burst, while other identities, tokens and addresses are served.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../ca/tests/support/pki.rs"]
mod pki;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::net::IpAddr;
use std::time::Duration;

use harness::{Client, Identity, Reply, Workload};
use serde_json::json;

fn source(i: u8) -> IpAddr {
    [127, 0, 0, i].into()
}

/// Evaluates `call` (an answer) until it is a 429, at most 20 times: the number of answers
/// before it, and the 429.
macro_rules! until_limited {
    ($call:expr) => {{
        let mut limited = None;
        for served in 0..20usize {
            let r: Reply = $call;
            if r.status == 429 {
                limited = Some((served, r));
                break;
            }
        }
        limited.expect("no 429 after 20 calls")
    }};
}

/// A 429 as the API answers it: the stable code, a message, a `Retry-After` in whole seconds
/// within the limit's period.
fn assert_limited(r: &Reply, period: Duration) {
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
    assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=period.as_secs()).contains(&secs),
        "Retry-After: {secs}"
    );
}

async fn enrolled(client: &mut Client, token: &str, name: &str) -> (Workload, Identity) {
    let w = Workload::new(Some(&format!("spiffe://acme.example/ns/rl/sa/{name}")), &[]);
    let r = client.issue(Some(token), json!({ "csr": w.csr })).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let id = w.identity_from(&r.json());
    (w, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_loop_is_limited_per_identity_and_operators_have_their_own_limit() {
    let fx = require_fixture!();
    let server = fx
        .start_with(
            fx.admin_config_with(
                "rate_limits:\n  per_identity: { requests: 1, per: 1m, burst: 3 }\n  per_operator: { requests: 1, per: 1m, burst: 8 }\n",
            ),
            None,
        )
        .await;
    let mut anon = server.client(None).await;
    let (a_w, a) = enrolled(&mut anon, &fx.token("acme", None), "a").await;
    let (b_w, b) = enrolled(&mut anon, &fx.token("acme", None), "b").await;

    // One identity renewing in a loop: its burst, then 429; nothing issued past it.
    let mut looping = server.client(Some(&a)).await;
    let (served, r) = until_limited!(looping.issue(None, json!({ "csr": a_w.csr })).await);
    assert_eq!(served, 3);
    assert_limited(&r, Duration::from_secs(60));
    assert_eq!(server.stats.snapshot().issued, 2 + 3);
    // A new connection does not reset it.
    let mut again = server.client(Some(&a)).await;
    let r = again.issue(None, json!({ "csr": a_w.csr })).await;
    assert_limited(&r, Duration::from_secs(60));

    // Another identity, from the same address, is served.
    let mut other = server.client(Some(&b)).await;
    let r = other.issue(None, json!({ "csr": b_w.csr })).await;
    assert_eq!(r.status, 201, "{:?}", r.json());

    // An operator has a limit of its own, higher here.
    let mut op = server.client(Some(&fx.operator)).await;
    let (served, r) = until_limited!(op
        .call("GET", "/v1/certificates?tenant=acme", &[], "")
        .await
        .unwrap());
    assert_eq!(served, 8);
    assert_limited(&r, Duration::from_secs(60));

    let s = server.stats.snapshot();
    assert_eq!(
        (
            s.rate_limited.identity,
            s.rate_limited.token,
            s.rate_limited.source
        ),
        (3, 0, 0)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_with_one_bootstrap_token_is_limited_per_token() {
    let fx = require_fixture!();
    let server = fx
        .start_with(
            fx.admin_config_with("rate_limits:\n  per_token: { requests: 1, per: 1m, burst: 3 }\n"),
            None,
        )
        .await;
    // A token bound to one SPIFFE ID, tried again and again with a CSR for another: each
    // refusal gives the token back, so only the limit ends the loop.
    let bound = "spiffe://acme.example/ns/rl/sa/bound";
    let token = fx.token("acme", Some(bound));
    let wrong = Workload::new(Some("spiffe://acme.example/ns/rl/sa/other"), &[]);
    let mut c = server.client(None).await;
    let (served, r) = until_limited!(c.issue(Some(&token), json!({ "csr": wrong.csr })).await);
    assert_eq!(served, 3);
    assert_limited(&r, Duration::from_secs(60));
    assert_eq!(server.stats.snapshot().refused, 3);
    // Even the right CSR waits now ...
    let right = Workload::new(Some(bound), &[]);
    let r = c.issue(Some(&token), json!({ "csr": right.csr })).await;
    assert_limited(&r, Duration::from_secs(60));
    // ... while another token, on the same connection, is served.
    let r = c
        .issue(Some(&fx.token("acme", None)), json!({ "csr": right.csr }))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());

    assert_eq!(server.stats.snapshot().rate_limited.token, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_from_one_address_is_limited_per_source_operators_included() {
    let fx = require_fixture!();
    let server = fx
        .start_with(
            fx.admin_config_with(
                "rate_limits:\n  per_source: { requests: 1, per: 1m, burst: 5 }\n",
            ),
            None,
        )
        .await;
    // Anonymous requests from one address, then guessed tokens from it: all charged to it.
    let mut c = server.client_from(source(2), None).await;
    let (served, r) = until_limited!(c.call("GET", "/v1/crl", &[], "").await.unwrap());
    assert_eq!(served, 5);
    assert_limited(&r, Duration::from_secs(60));
    let guess = "A".repeat(43);
    let w = Workload::new(Some("spiffe://acme.example/ns/rl/sa/guess"), &[]);
    let r = c.issue(Some(&guess), json!({ "csr": w.csr })).await;
    assert_limited(&r, Duration::from_secs(60));

    // Another address is served.
    let mut other = server.client_from(source(3), None).await;
    let r = other.call("GET", "/v1/crl", &[], "").await.unwrap();
    assert_eq!(r.status, 200);

    // Operators are not exempt from their address's limit.
    let mut op = server.client_from(source(4), Some(&fx.operator)).await;
    let (served, r) = until_limited!(op
        .call("GET", "/v1/certificates?tenant=acme", &[], "")
        .await
        .unwrap());
    assert_eq!(served, 5);
    assert_limited(&r, Duration::from_secs(60));

    assert_eq!(server.stats.snapshot().rate_limited.source, 3);
    server.stop().await;
}
