//! The admin API end to end: a SoftHSM2-backed CA, the server in-process on loopback, a real
//! rustls client; certificates checked by the real `openssl`.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../ca/tests/support/pki.rs"]
mod pki;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use harness::{write, Client, Workload, OPERATOR};
use portcullis_audit::{AuditConfig, AuditLog, SoftwareSigner};
use serde_json::json;
use x509_parser::prelude::*;

const API: &str = "spiffe://acme.example/ns/web/sa/api";

fn csr_body(w: &Workload) -> serde_json::Value {
    json!({ "csr": w.csr })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_issues_a_verifiable_certificate_exactly_once() {
    let fx = require_fixture!();
    let audit_dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::load_or_create(&audit_dir.path().join("key")).unwrap());
    let log = AuditLog::open(
        AuditConfig::new(audit_dir.path().join("log"), "admin-test"),
        signer,
    )
    .unwrap();
    let server = fx.start(Some(log.handle())).await;
    let mut client = server.client(None).await;

    let token = fx.token("acme", None);
    let w = Workload::new(Some(API), &["api.acme.internal"]);
    let reply = client.issue(Some(&token), csr_body(&w)).await;
    assert_eq!(reply.status, 201, "{:?}", reply.json());
    let body = reply.json();
    assert_eq!(body["spiffe_id"], API);
    assert_eq!(body["dns_names"], json!(["api.acme.internal"]));
    assert_eq!(body["tenant"], "acme");
    let not_after = humantime::parse_rfc3339(body["not_after"].as_str().unwrap()).unwrap();
    let left = not_after.duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(29 * 60) && left <= Duration::from_secs(30 * 60));
    assert!(body["chain"]
        .as_str()
        .unwrap()
        .starts_with(body["certificate"].as_str().unwrap()));

    // The real openssl verifies it against the trust bundle and the intermediate.
    let dir = tempfile::tempdir().unwrap();
    let leaf = write(
        dir.path(),
        "leaf.pem",
        body["certificate"].as_str().unwrap(),
    );
    let (ok, out) = pki::openssl(&[
        "verify",
        "-CAfile",
        fx.bundle_path().to_str().unwrap(),
        "-untrusted",
        fx.intermediate_path().to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(ok, "openssl verify: {out}");

    // The same token again, an expired one, an unknown one: one answer for all.
    let again = client
        .issue(Some(&token), csr_body(&Workload::new(Some(API), &[])))
        .await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (401, "invalid_token")
    );
    let expired = fx.token_at(
        "acme",
        None,
        Duration::from_secs(60),
        SystemTime::now() - Duration::from_secs(120),
    );
    let r = client.issue(Some(&expired), csr_body(&w)).await;
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
    let unknown = "A".repeat(43);
    let r = client.issue(Some(&unknown), csr_body(&w)).await;
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
    let r = client.issue(Some("not a token"), csr_body(&w)).await;
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
    assert!(r.headers.contains_key("www-authenticate"));
    let r = client.issue(None, csr_body(&w)).await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));

    // A token for acme cannot get globex's SPIFFE ID: the CA's refusal code; the token is
    // given back and still works for a proper request.
    let token = fx.token("acme", None);
    let globex = Workload::new(Some("spiffe://globex.example/ns/x/sa/y"), &[]);
    let r = client.issue(Some(&token), csr_body(&globex)).await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    assert_eq!(r.code(), "trust_domain_not_allowed");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("globex.example"));
    let r = client.issue(Some(&token), csr_body(&w)).await;
    assert_eq!(r.status, 201, "{:?}", r.json());

    // A token bound to a SPIFFE ID issues only that ID.
    let bound = fx.token("acme", Some(API));
    let other = Workload::new(Some("spiffe://acme.example/ns/web/sa/other"), &[]);
    let r = client.issue(Some(&bound), csr_body(&other)).await;
    assert_eq!((r.status, r.code().as_str()), (403, "identity_mismatch"));
    let r = client.issue(Some(&bound), csr_body(&w)).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let issued_serial = r.json()["serial"].as_str().unwrap().to_owned();

    let stats = server.stats.snapshot();
    assert_eq!((stats.issued, stats.refused, stats.unavailable), (3, 2, 0));

    // Every call is audited; issuance and refusals also as CA events.
    server.stop().await;
    let handle = log.handle();
    handle
        .append_durable(portcullis_audit::AdminAction {
            actor: "test".into(),
            action: "flush".into(),
            target: None,
            tenant: None,
            outcome: "ok".into(),
            role: None,
        })
        .unwrap();
    let records: Vec<String> = portcullis_audit::tail(&audit_dir.path().join("log"), 1000)
        .unwrap()
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    let count = |needle: &str| records.iter().filter(|r| r.contains(needle)).count();
    assert_eq!(
        count("\"action\":\"certificate.issue\""),
        10,
        "{records:#?}"
    );
    assert_eq!(count("\"action\":\"issue\""), 3);
    assert_eq!(count("\"action\":\"refuse\""), 2);
    assert!(records
        .iter()
        .any(|r| r.contains("\"action\":\"issue\"") && r.contains(&issued_serial)));
    assert!(count("trust_domain_not_allowed") >= 1);
    assert!(
        records.iter().all(|r| !r.contains(&token)),
        "tokens never logged"
    );
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_the_client_certificate_keeps_the_identity() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    let w = Workload::new(Some(API), &["api.acme.internal", "web.acme.internal"]);
    let first = server
        .client(None)
        .await
        .issue(Some(&fx.token("acme", None)), csr_body(&w))
        .await;
    assert_eq!(first.status, 201, "{:?}", first.json());
    let id = w.identity_from(&first.json());

    let mut client = server.client(Some(&id)).await;
    // Same identity, a fresh key, a shorter lifetime.
    let next = Workload::new(Some(API), &["api.acme.internal"]);
    let r = client
        .issue(None, json!({ "csr": next.csr, "lifetime": "10m" }))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let body = r.json();
    assert_eq!(body["spiffe_id"], API);
    assert_eq!(body["dns_names"], json!(["api.acme.internal"]));
    assert_ne!(body["serial"], first.json()["serial"]);
    let not_after = humantime::parse_rfc3339(body["not_after"].as_str().unwrap()).unwrap();
    assert!(not_after.duration_since(SystemTime::now()).unwrap() <= Duration::from_secs(600));

    // Another SPIFFE ID or an extra DNS name: refused.
    for csr in [
        w.csr_for(Some("spiffe://acme.example/ns/web/sa/admin"), &[]),
        w.csr_for(Some(API), &["api.acme.internal", "db.acme.internal"]),
    ] {
        let r = client.issue(None, json!({ "csr": csr })).await;
        assert_eq!((r.status, r.code().as_str()), (403, "identity_mismatch"));
    }
    // No SPIFFE ID at all: the profile (which requires one) refuses it first.
    let r = client
        .issue(
            None,
            json!({ "csr": w.csr_for(None, &["api.acme.internal"]) }),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "spiffe_id_missing"));
    // The extra name in a second extensionRequest attribute: the CA refuses the CSR itself.
    let two = w.csr_with_two_extension_requests(
        (Some(API), &["api.acme.internal"]),
        (None, &["db.acme.internal"]),
    );
    let r = client.issue(None, json!({ "csr": two })).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "csr_ambiguous_extensions")
    );
    // A certificate and a token at once is ambiguous.
    let r = client
        .issue(Some(&fx.token("acme", None)), csr_body(&next))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "ambiguous_credentials")
    );
    // The CA still applies its profile to renewals.
    let r = client
        .issue(None, json!({ "csr": next.csr, "lifetime": "2h" }))
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "lifetime_over_cap"));

    // The renewed certificate works for the next renewal, over TLS 1.2 too.
    let renewed = next.identity_from(&body);
    let mut client = server.client(Some(&renewed)).await;
    let r = client.issue(None, csr_body(&next)).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let tls12 =
        harness::client_config_versions(&fx.roots, Some(&renewed), &[&rustls::version::TLS12]);
    let mut client = Client::connect_with(server.addr, tls12).await.unwrap();
    let r = client.issue(None, csr_body(&next)).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let last = r.json()["serial"].as_str().unwrap().to_owned();

    // The inventory finds every certificate naming the identity, and each one's family.
    let serials = [
        first.json()["serial"].as_str().unwrap().to_owned(),
        body["serial"].as_str().unwrap().to_owned(),
        last,
    ];
    let mut op = server.client(Some(&fx.operator)).await;
    let found = |r: harness::Reply| -> Vec<String> {
        assert_eq!(r.status, 200, "{:?}", r.json());
        r.json()["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["serial"].as_str().unwrap().to_owned())
            .collect()
    };
    for identity in [API, "api.acme.internal"] {
        let r = op
            .call(
                "GET",
                &format!("/v1/certificates?identity={identity}"),
                &[],
                "",
            )
            .await
            .unwrap();
        let listed = found(r);
        assert!(
            serials.iter().all(|s| listed.contains(s)),
            "{identity}: {listed:?}"
        );
    }
    // Exact names only: a prefix of the SPIFFE ID or another name finds none of them.
    for identity in ["spiffe://acme.example/ns/web", "db.acme.internal"] {
        let r = op
            .call(
                "GET",
                &format!("/v1/certificates?identity={identity}"),
                &[],
                "",
            )
            .await
            .unwrap();
        let listed = found(r);
        assert!(
            !serials.iter().any(|s| listed.contains(s)),
            "{identity}: {listed:?}"
        );
    }
    // Quoting and wildcards in the name are matched as text, never as SQL or a pattern.
    for identity in [
        "x%27%20OR%20%271%27%3D%271",
        "%25",
        "spiffe%3A%2F%2Facme.example%2F%25",
    ] {
        let r = op
            .call(
                "GET",
                &format!("/v1/certificates?identity={identity}"),
                &[],
                "",
            )
            .await
            .unwrap();
        assert!(found(r).is_empty(), "{identity}");
    }
    // A certificate's lineage is what it renewed, it, and what renewed it (not its siblings):
    // from the first two, all four; from the last renewal, the line that led to it.
    for (member, expected) in [(&serials[0], 4), (&serials[1], 4), (&serials[2], 3)] {
        let r = op
            .call(
                "GET",
                &format!("/v1/certificates/{member}/lineage"),
                &[],
                "",
            )
            .await
            .unwrap();
        let family = found(r);
        assert_eq!(family.len(), expected, "{family:?} {serials:?}");
        assert_eq!(&family[..2], &serials[..2], "{family:?}");
        assert!(family[2..].contains(&serials[2]), "{family:?}");
    }
    for (path, status) in [
        ("/v1/certificates/00ff/lineage".to_owned(), 404),
        ("/v1/certificates/not-hex/lineage".to_owned(), 400),
        (
            format!("/v1/certificates?identity={}", "x".repeat(1100)),
            400,
        ),
        // Two identities: refused, not one of them picked.
        (
            format!("/v1/certificates?identity={API}&identity=api.acme.internal"),
            400,
        ),
        ("/v1/certificates?identity=".to_owned(), 400),
    ] {
        let r = op.call("GET", &path, &[], "").await.unwrap();
        assert_eq!(r.status, status, "{path}");
    }
    // The holder has no role: to it, the lineage does not exist.
    let mut holder = server.client(Some(&renewed)).await;
    let r = holder
        .call(
            "GET",
            &format!("/v1/certificates/{}/lineage", serials[1]),
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_enforced_at_the_listener_and_published() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    let mut anon = server.client(None).await;
    let mut ids = Vec::new();
    for name in ["victim", "holder", "bystander"] {
        let w = Workload::new(
            Some(&format!("spiffe://acme.example/ns/rev/sa/{name}")),
            &[],
        );
        let r = anon
            .issue(Some(&fx.token("acme", None)), csr_body(&w))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.json());
        ids.push((w.identity_from(&r.json()), w));
    }
    let (bystander, _) = ids.pop().unwrap();
    let (holder, _) = ids.pop().unwrap();
    let (victim, victim_w) = ids.pop().unwrap();

    // Neither anonymous callers nor other workloads may revoke.
    let path = format!("/v1/certificates/{}/revoke", victim.serial);
    let body = json!({ "reason": "keyCompromise" }).to_string();
    let r = anon.call("POST", &path, &[], body.clone()).await.unwrap();
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
    let mut by = server.client(Some(&bystander)).await;
    let r = by.call("POST", &path, &[], body.clone()).await.unwrap();
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));

    // The victim works before.
    let mut before = server.client(Some(&victim)).await;
    let r = before.issue(None, csr_body(&victim_w)).await;
    assert_eq!(r.status, 201, "{:?}", r.json());

    // An operator revokes it.
    let mut op = server.client(Some(&fx.operator)).await;
    let r = op.call("POST", &path, &[], body.clone()).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(r.json()["revocation_reason"], "keyCompromise");
    assert_eq!(r.json()["serial"], victim.serial.as_str());
    let r = op.call("POST", &path, &[], body.clone()).await.unwrap();
    assert_eq!((r.status, r.code().as_str()), (409, "already_revoked"));
    let r = op
        .call(
            "POST",
            "/v1/certificates/0badc0ffee/revoke",
            &[],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = op
        .call("POST", "/v1/certificates/zz/revoke", &[], body.clone())
        .await
        .unwrap();
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_serial"));
    let r = op
        .call(
            "POST",
            &format!("/v1/certificates/{}/revoke", holder.serial),
            &[],
            "{\"reason\":\"stolen\"}",
        )
        .await
        .unwrap();
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_reason"));

    // The listener's TLS now refuses the revoked certificate: no renewal with it.
    let refused = match Client::connect(server.addr, &fx.roots, Some(&victim)).await {
        Err(_) => true,
        Ok(mut c) => c.issue_result(csr_body(&victim_w)).await.is_err(),
    };
    assert!(
        refused,
        "a revoked certificate must not get through the handshake"
    );
    // Over TLS 1.2 the handshake itself fails.
    let tls12 =
        harness::client_config_versions(&fx.roots, Some(&victim), &[&rustls::version::TLS12]);
    assert!(Client::connect_with(server.addr, tls12).await.is_err());
    // An already open connection of the revoked certificate cannot renew either.
    let r = before.issue(None, csr_body(&victim_w)).await;
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));

    // The holder may revoke its own certificate (empty body: reason unspecified).
    let mut h = server.client(Some(&holder)).await;
    let r = h
        .call(
            "POST",
            &format!("/v1/certificates/{}/revoke", holder.serial),
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["revocation_reason"], "unspecified");

    // The CRL, without authentication, lists both; PEM by default, DER on request.
    let r = anon.call("GET", "/v1/crl", &[], "").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/x-pem-file");
    let dir = tempfile::tempdir().unwrap();
    let crl = write(dir.path(), "crl.pem", std::str::from_utf8(&r.body).unwrap());
    let (ok, text) = pki::openssl(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"]);
    assert!(ok, "{text}");
    let listed = text.to_ascii_lowercase().replace([':', ' '], "");
    for serial in [&victim.serial, &holder.serial] {
        assert!(listed.contains(serial.as_str()), "{serial} not in\n{text}");
    }
    let r = anon
        .call("GET", "/v1/crl", &[("accept", "application/pkix-crl")], "")
        .await
        .unwrap();
    assert_eq!(r.headers["content-type"], "application/pkix-crl");
    let (_, parsed) = CertificateRevocationList::from_der(&r.body).unwrap();
    let serials: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|c| portcullis_ca::Serial::from_be_bytes(c.raw_serial()).to_string())
        .collect();
    assert!(serials.contains(&victim.serial), "{serials:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_is_for_operators() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    let mut anon = server.client(None).await;
    let w = Workload::new(Some("spiffe://globex.example/list/me"), &[]);
    let r = anon
        .issue(Some(&fx.token("globex", None)), csr_body(&w))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let serial = r.json()["serial"].as_str().unwrap().to_owned();
    let me = w.identity_from(&r.json());

    let mut op = server.client(Some(&fx.operator)).await;
    let r = op
        .call(
            "GET",
            "/v1/certificates?tenant=globex&status=valid&expires_within=2h",
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    let list = r.json()["certificates"].as_array().unwrap().clone();
    assert!(list.iter().any(|c| c["serial"] == serial.as_str()));
    assert!(list.iter().all(|c| c["tenant"] == "globex"));

    for q in [
        "status=bogus",
        "tenant=Bad_Tenant",
        "expires_within=soon",
        "colour=red",
    ] {
        let r = op
            .call("GET", &format!("/v1/certificates?{q}"), &[], "")
            .await
            .unwrap();
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_query"), "{q}");
    }
    let mut mine = server.client(Some(&me)).await;
    let r = mine.call("GET", "/v1/certificates", &[], "").await.unwrap();
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    let r = anon.call("GET", "/v1/certificates", &[], "").await.unwrap();
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
    assert_eq!(OPERATOR, "spiffe://ops.example/portcullis/operator/alice");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_codes_and_the_server_keeps_serving() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    let mut c = server.client(None).await;
    let token = fx.token("acme", None);
    let auth = format!("Bearer {token}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];

    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "malformed_request"),
        (b"".to_vec(), 400, "malformed_request"),
        (br#"{"csr": 5}"#.to_vec(), 400, "malformed_request"),
        (br#"{"csr": "x", "colour": "red"}"#.to_vec(), 400, "malformed_request"),
        (br#"{"csr": "garbage"}"#.to_vec(), 400, "csr_malformed"),
        (
            br#"{"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}"#.to_vec(),
            400,
            "csr_malformed",
        ),
        (
            json!({"csr": Workload::new(Some(API), &[]).csr, "lifetime": "forever"}).to_string().into_bytes(),
            400,
            "invalid_lifetime",
        ),
        (
            json!({"csr": Workload::new(Some(API), &[]).csr, "profile": "nope"}).to_string().into_bytes(),
            400,
            "profile_not_found",
        ),
        (vec![b' '; 100 * 1024], 413, "too_large"),
    ];
    for (body, status, code) in cases {
        let r = c.call("POST", "/v1/certificates", &h, body).await.unwrap();
        assert_eq!((r.status, r.code().as_str()), (status, code));
        assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Oversized without a Content-Length (chunked): still 413, on a fresh connection.
    let mut c = server.client(None).await;
    let r = c
        .call_streaming(
            "POST",
            "/v1/certificates",
            &h,
            vec![vec![b' '; 40 * 1024]; 3],
        )
        .await
        .unwrap();
    assert_eq!((r.status, r.code().as_str()), (413, "too_large"));

    // Unknown paths and methods: JSON errors too.
    let mut c = server.client(None).await;
    let r = c.call("GET", "/v2/nothing", &[], "").await.unwrap();
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = c.call("DELETE", "/v1/crl", &[], "").await.unwrap();
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));

    // Nothing consumed the token for good; the server still issues.
    let r = c
        .issue(Some(&token), csr_body(&Workload::new(Some(API), &[])))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uses_of_one_token_exactly_one_wins() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    for round in 0..5 {
        let token = fx.token("acme", None);
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let mut c = server.client(None).await;
            let token = token.clone();
            let w = Workload::new(Some(API), &[]);
            tasks.push(tokio::spawn(async move {
                c.issue(Some(&token), csr_body(&w)).await.status
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        statuses.sort_unstable();
        assert_eq!(statuses, vec![201, 401], "round {round}");
    }
    server.stop().await;
}

/// Two bootstrap tokens in two Authorization headers (either order, or one token twice): refused
/// as ambiguous, and neither token is spent by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_refused_and_spend_no_token() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    let (a, b) = (fx.token("acme", None), fx.token("acme", None));
    let w = Workload::new(Some(API), &[]);
    let body = csr_body(&w).to_string();
    let mut c = server.client(None).await;
    for (first, second) in [(&a, &b), (&b, &a), (&a, &a)] {
        let (first, second) = (format!("Bearer {first}"), format!("Bearer {second}"));
        let headers = [
            ("content-type", "application/json"),
            ("authorization", first.as_str()),
            ("authorization", second.as_str()),
        ];
        let r = c
            .call("POST", "/v1/certificates", &headers, body.clone())
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "ambiguous_credentials")
        );
    }
    for token in [&a, &b] {
        assert_eq!(c.issue(Some(token), csr_body(&w)).await.status, 201);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_is_renewed_at_two_thirds_of_its_lifetime() {
    let fx = require_fixture!();
    // The "admin-short" profile grants 6 s: renewal after about 4 s.
    let server = fx
        .start_with(fx.admin_config("short", "admin-short"), None)
        .await;
    let serial_of = |c: &Client| {
        let (_, cert) = X509Certificate::from_der(&c.server_chain[0]).unwrap();
        portcullis_ca::Serial::from_be_bytes(cert.raw_serial()).to_string()
    };
    let first = serial_of(&server.client(None).await);
    let started = std::time::Instant::now();
    let mut renewed = None;
    while started.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = serial_of(&server.client(None).await);
        if s != first {
            renewed = Some(started.elapsed());
            break;
        }
    }
    let after = renewed.expect("the server certificate was not renewed");
    assert!(
        after >= Duration::from_secs(2),
        "renewed too early: {after:?}"
    );
    // A renewed certificate keeps being served on new connections.
    let mut c = server.client(None).await;
    assert_eq!(c.call("GET", "/v1/crl", &[], "").await.unwrap().status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_from_config_files_and_the_cli_creates_tokens() {
    use portcullis_admin::cli::{run, AdminCommand, TokenCommand};
    let fx = require_fixture!();
    let yaml = "listen: 127.0.0.1:0\nca: ca.yaml\ntls:\n  self_issue:\n    tenant: platform\n    profile: admin-server\n    dns_names: [localhost]\n";
    let path = write(&fx.dir, "admin.yaml", yaml);
    let config = portcullis_admin::AdminConfig::load(&path).unwrap();
    assert_eq!(config.ca, fx.dir.join("ca.yaml"));
    let server = portcullis_admin::AdminServer::bind(&config, None)
        .await
        .unwrap();
    assert_ne!(server.local_addr().port(), 0);
    drop(server);

    let create = |tenant: &str| {
        run(
            AdminCommand::Token(TokenCommand::Create {
                ca_config: fx.dir.join("ca.yaml"),
                tenant: tenant.parse().unwrap(),
                spiffe_id: None,
                ttl: Duration::from_secs(60),
            }),
            None,
        )
    };
    tokio::task::spawn_blocking(move || {
        create("acme").unwrap();
        let err = create("nobody").unwrap_err().to_string();
        assert!(err.contains("no issuance profile"), "{err}");
    })
    .await
    .unwrap();
}
