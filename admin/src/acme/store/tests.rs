//! The ACME store's tests, written once and run on both backends: here on SQLite (nonces,
//! orders and authorizations in one node's memory), in `crate::store::tests` on PostgreSQL
//! with two pools racing as two admin servers would.

use std::time::{Duration, SystemTime};

use super::*;
use crate::acme::order::{Authz, CertId, Finalized, Order, OrderRefused, Status};

fn eab(s: &AcmeStore, ttl: u64, now: SystemTime) -> EabCredential {
    s.create_eab(
        &"webco".parse().unwrap(),
        "webco-web",
        Duration::from_secs(ttl),
        now,
    )
    .unwrap()
}

/// Runs `f(i, store)` on 8 threads, alternately through `a` and `b`; the results in order.
fn race<T: Send>(
    a: &AcmeStore,
    b: &AcmeStore,
    f: impl Fn(usize, &AcmeStore) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (store, f) = (if i % 2 == 0 { a } else { b }, &f);
                scope.spawn(move || f(i, store))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub(crate) fn accounts_are_found_by_key_and_an_eab_key_binds_one(s: &AcmeStore) {
    let now = SystemTime::now();
    let cred = eab(s, 60, now);
    let key = s.eab_mac_key(&cred.kid, now).unwrap().unwrap();
    assert_eq!(crate::acme::jws::b64(&key), cred.expose_hmac());
    assert!(s
        .eab_mac_key(&cred.kid, now + Duration::from_secs(61))
        .unwrap()
        .is_none());
    assert!(s.eab_mac_key("no-such-kid", now).unwrap().is_none());
    assert!(s.eab_mac_key("nul\0kid", now).unwrap().is_none());
    let contact = vec!["mailto:ops@webco.test".to_owned()];
    let account = s
        .backend()
        .create_account(&cred.kid, "thumb-1", "{\"k\":1}", &contact, now)
        .unwrap()
        .unwrap();
    assert_eq!(
        (account.tenant.as_str(), account.profile.as_str()),
        ("webco", "webco-web")
    );
    let found = s
        .backend()
        .account_by_thumbprint("thumb-1")
        .unwrap()
        .unwrap();
    assert_eq!((found.id, found.jwk.as_str()), (account.id, "{\"k\":1}"));
    assert_eq!(found.contact, contact);
    assert_eq!(found.eab_kid, cred.kid);
    let by_id = s.backend().account(account.id).unwrap().unwrap();
    assert_eq!(by_id.jwk, found.jwk);
    assert!(s
        .backend()
        .account_by_thumbprint("thumb-2")
        .unwrap()
        .is_none());
    assert!(s.backend().account(account.id + 1000).unwrap().is_none());
    // Used: it opens no more, and binds no second account.
    assert!(s.eab_mac_key(&cred.kid, now).unwrap().is_none(), "used");
    assert!(s
        .backend()
        .create_account(&cred.kid, "thumb-2", "{}", &[], now)
        .unwrap()
        .is_none());
    // Certificates are the account's.
    let serial: Serial = "0a1b".parse().unwrap();
    s.backend()
        .add_certificate(&serial, account.id, "PEM")
        .unwrap();
    assert_eq!(
        s.backend().certificate(&serial).unwrap(),
        Some((account.id, "PEM".to_owned()))
    );
    assert!(s
        .backend()
        .certificate(&"0a1c".parse().unwrap())
        .unwrap()
        .is_none());
}

pub(crate) fn concurrent_bindings_of_one_eab_key_make_one_account(a: &AcmeStore, b: &AcmeStore) {
    for round in 0..3 {
        let now = SystemTime::now();
        let cred = eab(a, 60, now);
        let made = race(a, b, |i, s| {
            s.backend()
                .create_account(&cred.kid, &format!("race-{round}-{i}"), "{}", &[], now)
                .unwrap()
        });
        let winners: Vec<_> = made.iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}: {made:?}");
        // The losers left no account behind.
        for (i, m) in made.iter().enumerate() {
            let found = b
                .backend()
                .account_by_thumbprint(&format!("race-{round}-{i}"))
                .unwrap();
            assert_eq!(found.is_some(), m.is_some(), "round {round}, binding {i}");
        }
    }
}

pub(crate) fn a_nonce_is_taken_once_under_a_race(a: &AcmeStore, b: &AcmeStore) {
    for round in 0..5 {
        let now = SystemTime::now();
        let nonce = format!("nonce-{round}");
        a.backend().issue_nonce(&nonce, now).unwrap();
        let taken = race(a, b, |_, s| s.backend().take_nonce(&nonce, now).unwrap());
        assert_eq!(
            taken.iter().filter(|t| **t).count(),
            1,
            "round {round}: {taken:?}"
        );
        assert!(!a.backend().take_nonce(&nonce, now).unwrap());
        assert!(!b.backend().take_nonce(&nonce, now).unwrap());
    }
    // Never issued, or expired: refused.
    let now = SystemTime::now();
    assert!(!b.backend().take_nonce("never-issued", now).unwrap());
    assert!(!b.backend().take_nonce("nul\0nonce", now).unwrap());
    a.backend()
        .issue_nonce("old", now - NONCE_TTL - Duration::from_secs(10))
        .unwrap();
    assert!(!b.backend().take_nonce("old", now).unwrap());
}

/// A new order for `account` with one authorization per name: (order id, authz ids).
fn new_order(
    s: &AcmeStore,
    account: i64,
    names: &[&str],
    replaces: Option<CertId>,
    now: SystemTime,
) -> Result<(String, Vec<String>), OrderRefused> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{account}-{n}-{}", std::process::id());
    let expires = now + Duration::from_secs(3600);
    let authz: Vec<(String, Authz)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                format!("authz-{tag}-{i}"),
                Authz {
                    account,
                    name: (*name).to_owned(),
                    expires,
                    token: format!("token-{i}"),
                    status: Status::Pending,
                    chosen: None,
                    validated: None,
                    error: None,
                },
            )
        })
        .collect();
    let id = format!("order-{tag}");
    let order = Order {
        account,
        status: Status::Pending,
        expires,
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        authz: authz.iter().map(|(id, _)| id.clone()).collect(),
        certificate: None,
        error: None,
        replaces,
    };
    s.backend().add_order(&id, &order, &authz, now).unwrap()?;
    Ok((id, authz.into_iter().map(|(id, _)| id).collect()))
}

pub(crate) fn challenges_and_finalization_are_claimed_once_under_a_race(
    a: &AcmeStore,
    b: &AcmeStore,
) {
    let now = SystemTime::now();
    let account = 7;
    let (order, authz) =
        new_order(a, account, &["a.webco.test", "b.webco.test"], None, now).unwrap();
    let shown = b.backend().order(&order, now).unwrap().unwrap();
    assert_eq!(shown.status, Status::Pending);
    assert_eq!(shown.authz, authz);
    assert_eq!(shown.names, ["a.webco.test", "b.webco.test"]);
    // Not ready: no claim.
    assert!(b
        .backend()
        .claim_order(&order, account, now)
        .unwrap()
        .is_none());
    for id in &authz {
        // Another account cannot start it; of 8 racing starts, one does.
        assert!(!a
            .backend()
            .start_challenge(id, account + 1, "http-01", now)
            .unwrap());
        let started = race(a, b, |_, s| {
            s.backend()
                .start_challenge(id, account, "http-01", now)
                .unwrap()
        });
        assert_eq!(started.iter().filter(|s| **s).count(), 1, "{started:?}");
        let seen = b.backend().authz(id, now).unwrap().unwrap();
        assert_eq!(
            (seen.status, seen.chosen),
            (Status::Processing, Some("http-01"))
        );
        a.backend().end_challenge(id, Ok(now)).unwrap();
        // A late outcome does not change a decided authorization.
        b.backend()
            .end_challenge(id, Err(serde_json::json!({"detail": "late"})))
            .unwrap();
        let seen = b.backend().authz(id, now).unwrap().unwrap();
        assert_eq!(seen.status, Status::Valid);
        assert!(seen.validated.is_some() && seen.error.is_none());
    }
    assert_eq!(
        a.backend().order(&order, now).unwrap().unwrap().status,
        Status::Ready
    );
    // Another account's claim fails; of 8 racing claims, one wins.
    assert!(a
        .backend()
        .claim_order(&order, account + 1, now)
        .unwrap()
        .is_none());
    let claims = race(a, b, |_, s| {
        s.backend().claim_order(&order, account, now).unwrap()
    });
    let winners: Vec<_> = claims.iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    assert_eq!(winners[0].names, ["a.webco.test", "b.webco.test"]);
    assert_eq!(
        b.backend().order(&order, now).unwrap().unwrap().status,
        Status::Processing
    );
    // The CA was unavailable: ready again, claimed once again, then issued.
    a.backend()
        .order_finalized(&order, &Finalized::Retry)
        .unwrap();
    assert_eq!(
        b.backend().order(&order, now).unwrap().unwrap().status,
        Status::Ready
    );
    let claims = race(a, b, |_, s| {
        s.backend().claim_order(&order, account, now).unwrap()
    });
    assert_eq!(claims.iter().flatten().count(), 1);
    let serial: Serial = "0b0c".parse().unwrap();
    b.backend()
        .order_finalized(&order, &Finalized::Issued(serial.clone()))
        .unwrap();
    let done = a.backend().order(&order, now).unwrap().unwrap();
    assert_eq!(
        (done.status, done.certificate),
        (Status::Valid, Some(serial))
    );
    assert!(b
        .backend()
        .claim_order(&order, account, now)
        .unwrap()
        .is_none());

    // A failed challenge makes the order invalid; a refused CSR too.
    let (order, authz) = new_order(a, account, &["c.webco.test"], None, now).unwrap();
    assert!(b
        .backend()
        .start_challenge(&authz[0], account, "tls-alpn-01", now)
        .unwrap());
    b.backend()
        .end_challenge(&authz[0], Err(serde_json::json!({"detail": "no"})))
        .unwrap();
    let failed = a.backend().authz(&authz[0], now).unwrap().unwrap();
    assert_eq!(failed.status, Status::Invalid);
    assert_eq!(failed.error.unwrap()["detail"], "no");
    assert_eq!(
        a.backend().order(&order, now).unwrap().unwrap().status,
        Status::Invalid
    );
    // Expired: gone.
    let later = now + Duration::from_secs(3601);
    assert!(a.backend().order(&order, later).unwrap().is_none());
    assert!(a.backend().authz(&authz[0], later).unwrap().is_none());
    assert!(!a
        .backend()
        .start_challenge(&authz[0], account, "http-01", later)
        .unwrap());
    assert!(a.backend().order("no-such-order", now).unwrap().is_none());
    assert!(a.backend().order("nul\0order", now).unwrap().is_none());
}

pub(crate) fn orders_are_bounded_and_a_certificate_is_replaced_once(a: &AcmeStore, b: &AcmeStore) {
    let now = SystemTime::now();
    let account = 8;
    let replaced = CertId::parse("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").unwrap();
    let (first, _) = new_order(a, account, &["d.webco.test"], Some(replaced.clone()), now).unwrap();
    assert_eq!(
        new_order(b, account, &["d.webco.test"], Some(replaced.clone()), now).unwrap_err(),
        OrderRefused::AlreadyReplaced
    );
    assert_eq!(
        b.backend()
            .order(&first, now)
            .unwrap()
            .unwrap()
            .replaces
            .map(|r| r.text()),
        Some(replaced.text())
    );
    for i in 1..MAX_ORDERS_PER_ACCOUNT {
        let store = if i % 2 == 0 { a } else { b };
        new_order(store, account, &["e.webco.test"], None, now).unwrap();
    }
    assert_eq!(
        new_order(
            b,
            account,
            &["e.webco.test"],
            None,
            now + Duration::from_secs(1)
        )
        .unwrap_err(),
        OrderRefused::TooMany
    );
    // Another account is not held back.
    new_order(b, account + 1, &["e.webco.test"], None, now).unwrap();
}

#[test]
fn eab_key_is_stored_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let s = AcmeStore::in_state_dir(dir.path()).unwrap();
    let now = SystemTime::now();
    let cred = eab(&s, 60, now);
    let key = s.eab_mac_key(&cred.kid, now).unwrap().unwrap();
    let file = std::fs::read(dir.path().join(ACME_DB)).unwrap();
    assert!(
        !file.windows(32).any(|w| w == key.as_slice()),
        "stored sealed"
    );
    assert!(!format!("{cred:?}").contains(cred.expose_hmac()));
    assert_eq!(s.seal_key_id().len(), 16);
}

#[test]
fn eab_credentials_never_begin_with_a_dash() {
    // One draw in 64 would without the rule; 400 draws make a miss unlikely (~2e-3).
    let dir = tempfile::tempdir().unwrap();
    let s = AcmeStore::in_state_dir(dir.path()).unwrap();
    for _ in 0..200 {
        let cred = eab(&s, 60, SystemTime::now());
        assert!(!cred.kid.starts_with('-'), "{}", cred.kid);
        assert!(!cred.expose_hmac().starts_with('-'));
    }
}

#[test]
fn sqlite_passes_the_acme_store_tests() {
    let dir = tempfile::tempdir().unwrap();
    let s = AcmeStore::in_state_dir(dir.path()).unwrap();
    accounts_are_found_by_key_and_an_eab_key_binds_one(&s);
    // Two connections to one file, as two processes would have.
    let other = AcmeStore::in_state_dir(dir.path()).unwrap();
    concurrent_bindings_of_one_eab_key_make_one_account(&s, &other);
    // Nonces and orders are in one node's memory: raced through one handle.
    a_nonce_is_taken_once_under_a_race(&s, &s);
    challenges_and_finalization_are_claimed_once_under_a_race(&s, &s);
    orders_are_bounded_and_a_certificate_is_replaced_once(&s, &s);
}

#[test]
fn a_state_dir_in_postgres_refuses_the_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(portcullis_ca::STATE_IN_POSTGRES), "x").unwrap();
    let err = AcmeStore::in_state_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("kept in PostgreSQL"), "{err}");
    assert!(!dir.path().join(ACME_DB).exists());
}
