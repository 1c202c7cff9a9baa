//! The HSM goes away under a running admin server: issuance answers 503 `ca_unavailable`
//! (and gives the bootstrap token back), then recovers when the token is usable again.
//! Its own test binary: logging the token out affects every session of the process.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../ca/tests/support/pki.rs"]
mod pki;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use harness::Workload;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_logged_out_is_503_then_recovers() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    let mut c = server.client(None).await;
    let w = Workload::new(Some("spiffe://acme.example/ns/hsm/sa/x"), &[]);
    let token = fx.token("acme", None);

    // Log the token out behind the CA's back.
    let session = softhsm::raw_session("ca");
    session.logout().unwrap();

    let r = c.issue(Some(&token), json!({ "csr": w.csr })).await;
    assert_eq!((r.status, r.code().as_str()), (503, "ca_unavailable"));
    assert_eq!(
        r.json()["message"],
        "the CA's key backend is unavailable; retry later"
    );
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(server.stats.snapshot().unavailable, 1);
    drop(session);

    // The backend logs in again on the next call; the token was given back.
    let r = c.issue(Some(&token), json!({ "csr": w.csr })).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let s = server.stats.snapshot();
    assert_eq!((s.issued, s.unavailable), (1, 1));
    server.stop().await;
}
