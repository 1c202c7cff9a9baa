//! Issuance exactness, lineage and the operator role through the admin API, written as the
//! attacks they stop: a CSR whose extensions could be read two ways, a renewal that moves to a
//! more generous profile of its tenant, a stolen certificate whose renewals outlive its
//! revocation, and an operator ID a tenant could have issued to itself.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../ca/tests/support/pki.rs"]
mod pki;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use harness::{write, Client, Workload};
use portcullis_admin::{AdminConfig, AdminServer};
use rcgen::{CertificateParams, CustomExtension, SanType};
use serde_json::json;
use x509_parser::prelude::*;

const API: &str = "spiffe://acme.example/ns/web/sa/api";

/// A CSR for `API` and `api.acme.internal` with the subjectAltName extension requested a
/// second time (for `db.acme.internal`) in the same attribute, signed by `w`'s key.
fn repeated_san(w: &Workload) -> String {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::URI(API.to_owned().try_into().unwrap()),
        SanType::DnsName("api.acme.internal".to_owned().try_into().unwrap()),
    ];
    let name = b"db.acme.internal";
    let mut general_names = vec![0x30, name.len() as u8 + 2, 0x82, name.len() as u8];
    general_names.extend_from_slice(name);
    params.custom_extensions = vec![CustomExtension::from_oid_content(
        &[2, 5, 29, 17],
        general_names,
    )];
    params.serialize_request(&w.key).unwrap().pem().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrs_whose_extensions_could_be_read_two_ways_are_refused() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    let mut anon = server.client(None).await;
    let w = Workload::new(Some(API), &["api.acme.internal"]);
    let token = fx.token("acme", None);
    // A bootstrap token's first certificate: the current names first, another DNS name in a
    // second extensionRequest attribute; then the same name in a repeated extension.
    let two = w.csr_with_two_extension_requests(
        (Some(API), &["api.acme.internal"]),
        (None, &["db.acme.internal"]),
    );
    for csr in [two, repeated_san(&w)] {
        let r = anon.issue(Some(&token), json!({ "csr": csr })).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "csr_ambiguous_extensions"),
            "{:?}",
            r.json()
        );
    }
    // The token was given back each time: the plain request gets its certificate.
    let r = anon.issue(Some(&token), json!({ "csr": w.csr })).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.json()["dns_names"], json!(["api.acme.internal"]));
    // Renewing with it, the same crafted requests are refused the same way.
    let mut holder = server.client(Some(&w.identity_from(&r.json()))).await;
    let r = holder.issue(None, json!({ "csr": repeated_san(&w) })).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "csr_ambiguous_extensions")
    );
    assert_eq!(server.stats.snapshot().refused, 3);
    server.stop().await;
}

fn lifetime(reply: &serde_json::Value) -> Duration {
    let not_after = humantime::parse_rfc3339(reply["not_after"].as_str().unwrap()).unwrap();
    not_after.duration_since(SystemTime::now()).unwrap()
}

fn server_auth(reply: &serde_json::Value) -> bool {
    let pem = reply["certificate"].as_str().unwrap();
    let (_, pem) = parse_x509_pem(pem.as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(&pem.contents).unwrap();
    cert.extended_key_usage()
        .unwrap()
        .unwrap()
        .value
        .server_auth
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_cannot_move_to_another_profile_of_its_tenant() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    let id = "spiffe://initech.example/ns/batch/sa/report";
    let w = Workload::new(Some(id), &[]);
    let r = server
        .client(None)
        .await
        .issue(
            Some(&fx.token("initech", None)),
            json!({ "csr": w.csr, "profile": "initech-workloads" }),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert!(!server_auth(&r.json()));
    let mut holder = server.client(Some(&w.identity_from(&r.json()))).await;

    // The tenant's other profile grants serverAuth and 4 h: a renewal may not move to it.
    let r = holder
        .issue(
            None,
            json!({ "csr": w.csr, "profile": "initech-edge", "lifetime": "4h" }),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "renewal_profile_changed"),
        "{:?}",
        r.json()
    );
    let r = holder
        .issue(None, json!({ "csr": w.csr, "profile": "initech-edge" }))
        .await;
    assert_eq!(r.code(), "renewal_profile_changed");
    // Without a profile it renews under its own: its EKU, its default lifetime, its cap.
    let r = holder.issue(None, json!({ "csr": w.csr })).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let body = r.json();
    assert_eq!(body["profile"], "initech-workloads");
    assert!(!server_auth(&body));
    let left = lifetime(&body);
    assert!(left > Duration::from_secs(29 * 60) && left <= Duration::from_secs(30 * 60));
    let r = holder
        .issue(None, json!({ "csr": w.csr, "lifetime": "2h" }))
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "lifetime_over_cap"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_stolen_certificate_revokes_what_it_was_renewed_into() {
    let fx = require_fixture!();
    let server = fx.start(None).await;
    let mut anon = server.client(None).await;
    let w = Workload::new(Some("spiffe://acme.example/ns/lineage/sa/stolen"), &[]);
    let r = anon
        .issue(Some(&fx.token("acme", None)), json!({ "csr": w.csr }))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let stolen = w.identity_from(&r.json());
    // The thief renews the stolen certificate, then renews the renewal.
    let mut thief = server.client(Some(&stolen)).await;
    let r = thief.issue(None, json!({ "csr": w.csr })).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let second = w.identity_from(&r.json());
    let r = server
        .client(Some(&second))
        .await
        .issue(None, json!({ "csr": w.csr }))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let third = w.identity_from(&r.json());

    // The operator revokes the stolen certificate: all three are revoked, and listed.
    let mut op = server.client(Some(&fx.operator)).await;
    let path = format!("/v1/certificates/{}/revoke", stolen.serial);
    let body = json!({ "reason": "keyCompromise" }).to_string();
    let r = op.call("POST", &path, &[], body.clone()).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["serial"], stolen.serial.as_str());
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(
        r.json()["revoked"],
        json!([stolen.serial, second.serial, third.serial])
    );
    // The thief's newest certificate no longer renews (refused at the handshake or after).
    let refused = match Client::connect(server.addr, &fx.roots, Some(&third)).await {
        Err(_) => true,
        Ok(mut c) => c
            .issue_result(json!({ "csr": w.csr }))
            .await
            .map_or(true, |r| r.status == 403),
    };
    assert!(
        refused,
        "a renewal of a revoked certificate must be refused"
    );
    // The CRL lists all three (read by the real openssl).
    let r = anon.call("GET", "/v1/crl", &[], "").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crl = write(dir.path(), "crl.pem", std::str::from_utf8(&r.body).unwrap());
    let (ok, text) = pki::openssl(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"]);
    assert!(ok, "{text}");
    let listed = text.to_ascii_lowercase().replace([':', ' '], "");
    for serial in [&stolen.serial, &second.serial, &third.serial] {
        assert!(listed.contains(serial.as_str()), "{serial} not in\n{text}");
    }

    // A holder revoking only its own certificate ("only_this") keeps its renewal.
    let h = Workload::new(Some("spiffe://acme.example/ns/lineage/sa/holder"), &[]);
    let r = anon
        .issue(Some(&fx.token("acme", None)), json!({ "csr": h.csr }))
        .await;
    let old = h.identity_from(&r.json());
    let mut holder = server.client(Some(&old)).await;
    let r = holder.issue(None, json!({ "csr": h.csr })).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let new = h.identity_from(&r.json());
    let r = holder
        .call(
            "POST",
            &format!("/v1/certificates/{}/revoke", old.serial),
            &[],
            json!({ "reason": "superseded", "only_this": true }).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["revoked"], json!([old.serial]));
    let r = server
        .client(Some(&new))
        .await
        .issue(None, json!({ "csr": h.csr }))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_id_a_tenant_profile_could_issue_stops_the_server_from_starting() {
    let fx = require_fixture!();
    // Tenant acme's profile issues spiffe://acme.example/ns/**: a token for acme could obtain
    // this "operator" and list and revoke every certificate.
    let yaml = "listen: 127.0.0.1:0\nca: ca.yaml\ntls:\n  self_issue:\n    tenant: platform\n    \
                profile: admin-server\n    dns_names: [localhost]\noperators: \
                [\"spiffe://acme.example/ns/ops/sa/alice\"]\n";
    let config = AdminConfig::from_yaml(yaml, &fx.dir).unwrap();
    let err = AdminServer::bind_with(&config, Arc::clone(&fx.ca), None)
        .await
        .expect_err("the server must refuse to start");
    let err = err.to_string();
    for needle in [
        "spiffe://acme.example/ns/ops/sa/alice",
        "\"acme\"",
        "spiffe://acme.example/ns/**",
        "/portcullis/operator/",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}
