//! The ACME server end to end: a SoftHSM2-backed CA, the admin server in-process on loopback,
//! the real `lego` and `certbot` clients (Debian's), and a hand-made client for the attacks.

#[path = "support/acme_client.rs"]
mod acme_client;
#[path = "support/harness.rs"]
mod harness;
#[path = "../../ca/tests/support/pki.rs"]
mod pki;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use acme_client::{
    authz_settled, b64, crl_lists, csr_der, have, lego_obtain_renew_revoke, location, path_of,
    problem, responder, run, serial_of, validate, verify_chain, Acme, BASE,
};
use harness::{free_port, Fixture, Server};
use portcullis_admin::{AcmeStore, EabCredential};
use serde_json::{json, Value};

fn eab(fx: &Fixture, tenant: &str, profile: &str) -> EabCredential {
    AcmeStore::in_state_dir(fx.ca.state_dir())
        .unwrap()
        .create_eab(
            &tenant.parse().unwrap(),
            profile,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .unwrap()
}

/// An admin server with ACME on, fetching http-01 challenges from `http01_port`.
async fn start(fx: &Fixture, http01_port: u16) -> Server {
    start_ports(fx, http01_port, 1).await
}

/// An admin server with ACME on, http-01 and tls-alpn-01 at these ports.
async fn start_ports(fx: &Fixture, http01_port: u16, tls_alpn01_port: u16) -> Server {
    let config = fx.admin_config_with(&format!(
        "acme:\n  enabled: true\n  http01_port: {http01_port}\n  tls_alpn01_port: {tls_alpn01_port}\n"
    ));
    fx.start_with(config, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lego_obtains_renews_and_revokes_with_eab() {
    lego_obtains_renews_and_revokes("--http").await;
}

/// The same through tls-alpn-01 (http-01 would fetch from port 1, where nothing answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lego_obtains_renews_and_revokes_with_tls_alpn01() {
    lego_obtains_renews_and_revokes("--tls").await;
}

async fn lego_obtains_renews_and_revokes(challenge: &str) {
    let fx = require_fixture!();
    if !have("lego") {
        return;
    }
    let port = free_port();
    let server = match challenge {
        "--tls" => start_ports(fx, 1, port).await,
        _ => start_ports(fx, port, 1).await,
    };
    let cred = eab(fx, "webco", "webco-web");
    let dir = tempfile::tempdir().unwrap();
    let directory = format!("https://localhost:{}/acme/directory", server.addr.port());
    let (first, renewed) = lego_obtain_renew_revoke(
        fx,
        &directory,
        &fx.bundle_path(),
        &cred,
        challenge,
        port,
        dir.path(),
    )
    .await;
    assert!(crl_lists(fx, &renewed), "the CRL lists the revoked serial");
    assert!(!crl_lists(fx, &first));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certbot_obtains_renews_and_revokes_with_eab() {
    let fx = require_fixture!();
    if !have("certbot") {
        return;
    }
    let port = free_port();
    let server = start(fx, port).await;
    let cred = eab(fx, "webco", "webco-web");
    let dir = tempfile::tempdir().unwrap();
    let certbot = |args: &[&str]| {
        let mut cmd = Command::new("certbot");
        cmd.env("REQUESTS_CA_BUNDLE", fx.bundle_path())
            .args(args)
            .args(["--non-interactive", "--config-dir"])
            .arg(dir.path().join("config"))
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .arg("--logs-dir")
            .arg(dir.path().join("logs"));
        cmd
    };
    let directory = format!("https://localhost:{}/acme/directory", server.addr.port());
    let port_text = port.to_string();
    // `=`: a base64url kid or key may begin with '-', which argparse would take for a flag.
    let kid = format!("--eab-kid={}", cred.kid);
    let hmac = format!("--eab-hmac-key={}", cred.expose_hmac());
    run(certbot(&[
        "certonly",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--server",
        &directory,
        &kid,
        &hmac,
        "--standalone",
        "--http-01-port",
        &port_text,
        "--http-01-address",
        "127.0.0.1",
        "-d",
        "localhost",
    ]))
    .await;
    let cert: PathBuf = dir.path().join("config/live/localhost/cert.pem");
    verify_chain(fx, &cert);
    let first = serial_of(&cert);

    run(certbot(&[
        "renew",
        "--force-renewal",
        "--no-random-sleep-on-renew",
    ]))
    .await;
    verify_chain(fx, &cert);
    let renewed = serial_of(&cert);
    assert_ne!(first, renewed, "renewal issued a new certificate");

    run(certbot(&[
        "revoke",
        "--cert-name",
        "localhost",
        "--server",
        &directory,
        "--delete-after-revoke",
    ]))
    .await;
    assert!(crl_lists(fx, &renewed), "the CRL lists the revoked serial");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_eab_or_with_a_forged_binding_is_refused() {
    let fx = require_fixture!();
    let server = start(fx, 1).await;
    let mut acme = Acme::new(&server).await;
    let r = acme
        .post(
            "/acme/new-account",
            Some(&json!({"termsOfServiceAgreed": true})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        problem(&r),
        "urn:ietf:params:acme:error:externalAccountRequired"
    );

    // A binding MACed with a guessed key, and one for another account key.
    let cred = eab(fx, "webco", "webco-web");
    let mut forged = acme.eab(&cred);
    forged["signature"] = json!(b64(&[0u8; 32]));
    let r = acme
        .post(
            "/acme/new-account",
            Some(&json!({"externalAccountBinding": forged})),
        )
        .await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:unauthorized");
    let other = Acme::new(&server).await;
    let r = acme
        .post(
            "/acme/new-account",
            Some(&json!({"externalAccountBinding": other.eab(&cred)})),
        )
        .await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:unauthorized");

    // The real binding works once; the same EAB key cannot bind a second account.
    acme.register(&cred).await;
    let mut second = Acme::new(&server).await;
    let payload = json!({"externalAccountBinding": second.eab(&cred)});
    let r = second.post("/acme/new-account", Some(&payload)).await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:unauthorized");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_nonce_and_a_wrong_url_are_refused() {
    let fx = require_fixture!();
    let server = start(fx, 1).await;
    let mut acme = Acme::new(&server).await;
    acme.register(&eab(fx, "webco", "webco-web")).await;
    let nonce = acme.nonce.clone();
    let body = acme.sign(
        "/acme/new-order",
        &nonce,
        Some(&json!({"identifiers": [{"type": "dns", "value": "localhost"}]})),
    );
    let r = acme.send("/acme/new-order", body.clone()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = acme.send("/acme/new-order", body).await;
    assert_eq!(r.status, 400);
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:badNonce");
    // A JWS signed for one URL replayed at another.
    let body = acme.sign(
        "/acme/new-order",
        &acme.nonce.clone(),
        Some(&json!({"identifiers": []})),
    );
    let r = acme.send("/acme/revoke-cert", body).await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:unauthorized");
    // alg none and HMAC are refused for account keys; garbage is a problem, not a panic.
    for alg in ["none", "HS256"] {
        let protected = b64(json!({"alg": alg, "nonce": acme.nonce, "url": format!("{BASE}/acme/new-order"), "kid": acme.kid}).to_string().as_bytes());
        let body = json!({"protected": protected, "payload": "", "signature": ""}).to_string();
        let r = acme.send("/acme/new-order", body).await;
        assert_eq!(
            problem(&r),
            "urn:ietf:params:acme:error:badSignatureAlgorithm",
            "{alg}"
        );
    }
    for junk in ["", "{", "{\"protected\":1}", "[]"] {
        let r = acme.send("/acme/new-order", junk.to_owned()).await;
        assert_eq!(problem(&r), "urn:ietf:params:acme:error:malformed");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_a_cannot_order_a_name_only_tenant_b_allows() {
    let fx = require_fixture!();
    let server = start(fx, 1).await;
    let mut acme = Acme::new(&server).await;
    acme.register(&eab(fx, "webco", "webco-web")).await;
    for names in [&["www.hooli.test"][..], &["localhost", "www.hooli.test"]] {
        let r = acme.order(names).await;
        assert_eq!(r.status, 400);
        assert_eq!(problem(&r), "urn:ietf:params:acme:error:rejectedIdentifier");
    }
    let r = acme.order(&["*.webco.test"]).await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:rejectedIdentifier");
    let r = acme.order(&["a.webco.test"]).await;
    assert_eq!(r.status, 201);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_needs_valid_authorizations_and_exactly_the_ordered_names() {
    let fx = require_fixture!();
    let (responder, answers) = responder().await;
    let server = start(fx, responder.port()).await;
    let mut acme = Acme::new(&server).await;
    acme.register(&eab(fx, "webco", "webco-web")).await;

    // Not validated: the order is pending and cannot be finalized.
    let r = acme.order(&["localhost"]).await;
    let order = r.json();
    assert_eq!(order["status"], "pending");
    let finalize = path_of(order["finalize"].as_str().unwrap());
    let r = acme
        .post(&finalize, Some(&json!({"csr": csr_der(&["localhost"])})))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:orderNotReady");

    // A wrong key authorization fails the challenge, and the order with it.
    let a = acme
        .post(&path_of(order["authorizations"][0].as_str().unwrap()), None)
        .await
        .json();
    let ch = &a["challenges"][0];
    answers
        .lock()
        .unwrap()
        .insert(ch["token"].as_str().unwrap().to_owned(), "wrong".to_owned());
    acme.post(&path_of(ch["url"].as_str().unwrap()), Some(&json!({})))
        .await;
    let authz = path_of(order["authorizations"][0].as_str().unwrap());
    assert_eq!(authz_settled(&mut acme, &authz).await, "invalid");
    let r = acme
        .post(&finalize, Some(&json!({"csr": csr_der(&["localhost"])})))
        .await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:orderNotReady");

    // Validated, but the CSR adds a name the profile allows and the order does not name.
    let r = acme.order(&["localhost"]).await;
    let order = r.json();
    let order_path = path_of(&location(&r));
    validate(&mut acme, &order, &answers).await;
    let finalize = path_of(order["finalize"].as_str().unwrap());
    let r = acme
        .post(
            &finalize,
            Some(&json!({"csr": csr_der(&["localhost", "www.webco.test"])})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:badCSR");
    let r = acme.post(&finalize, Some(&json!({"csr": "!!"}))).await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:malformed");
    let r = acme
        .post(&finalize, Some(&json!({"csr": b64(b"junk")})))
        .await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:badCSR");

    // The exact names: a certificate, downloadable by this account only.
    let r = acme
        .post(&finalize, Some(&json!({"csr": csr_der(&["localhost"])})))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let done = acme.post(&order_path, None).await.json();
    assert_eq!(done["status"], "valid");
    let cert_path = path_of(done["certificate"].as_str().unwrap());
    let r = acme.post(&cert_path, None).await;
    assert_eq!(
        r.headers["content-type"],
        "application/pem-certificate-chain"
    );
    let dir = tempfile::tempdir().unwrap();
    let leaf = harness::write(
        dir.path(),
        "leaf.pem",
        std::str::from_utf8(&r.body).unwrap(),
    );
    verify_chain(fx, &leaf);
    let mut stranger = Acme::new(&server).await;
    stranger.register(&eab(fx, "webco", "webco-web")).await;
    assert_eq!(stranger.post(&cert_path, None).await.status, 404);
    // Nor may another account revoke it.
    let der = b64(&harness::certs(std::str::from_utf8(&r.body).unwrap())[0]);
    let r = stranger
        .post("/acme/revoke-cert", Some(&json!({"certificate": der})))
        .await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:unauthorized");
    let r = acme
        .post("/acme/revoke-cert", Some(&json!({"certificate": der})))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    server.stop().await;
}

#[test]
fn eab_create_refuses_a_profile_an_acme_account_could_not_use() {
    use portcullis_admin::cli::{run, AcmeCommand, AdminCommand};
    let fx = require_fixture!();
    let create = |tenant: &str, profile: &str| {
        run(
            AdminCommand::Acme(AcmeCommand::EabCreate {
                ca_config: fx.dir.join("ca.yaml"),
                tenant: tenant.parse().unwrap(),
                profile: profile.to_owned(),
                ttl: Duration::from_secs(60),
                config: None,
            }),
            None,
        )
    };
    create("webco", "webco-web").unwrap();
    let e = create("webco", "hooli-web").unwrap_err().to_string();
    assert!(e.contains("has no profile"), "{e}");
    // A SPIFFE-ID profile: no DNS-only certificate could come of it.
    let e = create("acme", "acme").unwrap_err().to_string();
    assert!(e.contains("no DNS-only certificate"), "{e}");
}

/// A DNS server on loopback (UDP) answering TXT queries from its map, NXDOMAIN otherwise.
async fn dns_server() -> (SocketAddr, Arc<Mutex<HashMap<String, String>>>) {
    let records: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let map = Arc::clone(&records);
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let q = &buf[..n];
            // The question: labels from byte 12, then type and class.
            let (mut i, mut labels) = (12, Vec::new());
            while i < n && q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).to_ascii_lowercase());
                i += 1 + len;
            }
            let end = i + 5;
            let name = labels.join(".");
            let txt = map.lock().unwrap().get(&name).cloned();
            let mut out = q[..2].to_vec();
            out.extend_from_slice(if txt.is_some() {
                &[0x85, 0x80]
            } else {
                &[0x85, 0x83]
            });
            out.extend_from_slice(&[0, 1, 0, u8::from(txt.is_some()), 0, 0, 0, 0]);
            out.extend_from_slice(&q[12..end]);
            if let Some(t) = txt {
                out.extend_from_slice(&[0xc0, 0x0c, 0, 16, 0, 1, 0, 0, 0, 0]);
                out.extend_from_slice(&[0, (t.len() + 1) as u8, t.len() as u8]);
                out.extend_from_slice(t.as_bytes());
            }
            let _ = socket.send_to(&out, from).await;
        }
    });
    (addr, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_validates_through_the_configured_resolver() {
    let fx = require_fixture!();
    let (dns, records) = dns_server().await;
    let config = fx.admin_config_with(&format!(
        "acme:\n  enabled: true\n  http01_port: 1\n  dns01_resolver: {dns}\n"
    ));
    let server = fx.start_with(config, None).await;
    let mut acme = Acme::new(&server).await;
    acme.register(&eab(fx, "webco", "webco-web")).await;

    // A wildcard name is offered dns-01 only.
    let r = acme.order(&["*.webco.test"]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let a = acme
        .post(
            &path_of(r.json()["authorizations"][0].as_str().unwrap()),
            None,
        )
        .await
        .json();
    assert_eq!(a["wildcard"], true);
    assert_eq!(a["challenges"].as_array().unwrap().len(), 1);
    assert_eq!(a["challenges"][0]["type"], "dns-01");

    // A wrong TXT record fails; the right one validates and the order is finalized.
    for (right, name) in [(false, "b.webco.test"), (true, "a.webco.test")] {
        let r = acme.order(&[name]).await;
        let order = r.json();
        let order_path = path_of(&location(&r));
        let authz = path_of(order["authorizations"][0].as_str().unwrap());
        let a = acme.post(&authz, None).await.json();
        let ch = a["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "dns-01")
            .unwrap()
            .clone();
        let token = ch["token"].as_str().unwrap();
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{token}.{}", acme.thumbprint()).as_bytes(),
        );
        let value = if right {
            b64(digest.as_ref())
        } else {
            "wrong".to_owned()
        };
        records
            .lock()
            .unwrap()
            .insert(format!("_acme-challenge.{name}"), value);
        let r = acme
            .post(&path_of(ch["url"].as_str().unwrap()), Some(&json!({})))
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let status = authz_settled(&mut acme, &authz).await;
        if !right {
            assert_eq!(status, "invalid");
            continue;
        }
        assert_eq!(status, "valid");
        let r = acme
            .post(
                &path_of(order["finalize"].as_str().unwrap()),
                Some(&json!({"csr": csr_der(&[name])})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(acme.post(&order_path, None).await.json()["status"], "valid");
    }
    server.stop().await;
}

/// What the tls-alpn-01 responder presents: a certificate made for these names, with or without
/// the acmeIdentifier extension (critical or not) of this digest, and whether ALPN is spoken.
#[derive(Clone)]
struct AlpnAnswer {
    names: Vec<String>,
    digest: Option<Vec<u8>>,
    critical: bool,
    alpn: bool,
}

#[derive(Debug)]
struct OneCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// A TLS responder on loopback presenting whatever `AlpnAnswer` is current.
async fn alpn_responder() -> (u16, Arc<Mutex<Option<AlpnAnswer>>>) {
    let answer: Arc<Mutex<Option<AlpnAnswer>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let current = Arc::clone(&answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Some(a) = current.lock().unwrap().clone() else {
                continue;
            };
            let mut params = rcgen::CertificateParams::new(a.names.clone()).unwrap();
            if let Some(d) = &a.digest {
                let mut ext = rcgen::CustomExtension::new_acme_identifier(d);
                ext.set_criticality(a.critical);
                params.custom_extensions.push(ext);
            }
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let provider = portcullis_identity::provider();
            let signing = provider
                .key_provider
                .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
                    key.serialize_der().into(),
                ))
                .unwrap();
            // Not with_single_cert: its key check (webpki) refuses the critical extension.
            let certified = Arc::new(rustls::sign::CertifiedKey::new(
                vec![cert.der().clone()],
                signing,
            ));
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(OneCert(certified)));
            if a.alpn {
                config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                }
            });
        }
    });
    (port, answer)
}

/// Starts `kind` of the order's only authorization and waits until it is decided: the final
/// authorization.
async fn decide(acme: &mut Acme, order: &Value, kind: &str, before: impl FnOnce(&str)) -> Value {
    let authz = path_of(order["authorizations"][0].as_str().unwrap());
    let a = acme.post(&authz, None).await.json();
    let ch = a["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("{kind} offered: {a}"))
        .clone();
    before(ch["token"].as_str().unwrap());
    let r = acme
        .post(&path_of(ch["url"].as_str().unwrap()), Some(&json!({})))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for _ in 0..100 {
        let a = acme.post(&authz, None).await.json();
        if a["status"] != "pending" {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{kind} still pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_refuses_a_wrong_certificate_and_accepts_the_right_one() {
    let fx = require_fixture!();
    let (port, answer) = alpn_responder().await;
    let server = start_ports(fx, 1, port).await;
    let mut acme = Acme::new(&server).await;
    acme.register(&eab(fx, "webco", "webco-web")).await;

    // Offered beside http-01, not for a wildcard (which would need dns-01 anyway).
    let r = acme.order(&["localhost"]).await;
    let a = acme
        .post(
            &path_of(r.json()["authorizations"][0].as_str().unwrap()),
            None,
        )
        .await
        .json();
    let kinds: Vec<&str> = a["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["http-01", "tls-alpn-01"]);

    let thumbprint = acme.thumbprint();
    let digest = |token: &str| {
        ring::digest::digest(
            &ring::digest::SHA256,
            format!("{token}.{thumbprint}").as_bytes(),
        )
        .as_ref()
        .to_vec()
    };
    let right = |names: &[&str], token: &str| AlpnAnswer {
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        digest: Some(digest(token)),
        critical: true,
        alpn: true,
    };
    type Variant<'a> = Box<dyn Fn(&str) -> AlpnAnswer + 'a>;
    let wrong: Vec<(&str, &str, Variant)> = vec![
        (
            "wrong digest",
            "incorrectResponse",
            Box::new(|token| AlpnAnswer {
                digest: Some(digest(&format!("{token}x"))),
                ..right(&["localhost"], token)
            }),
        ),
        (
            "non-critical extension",
            "incorrectResponse",
            Box::new(|token| AlpnAnswer {
                critical: false,
                ..right(&["localhost"], token)
            }),
        ),
        (
            "no extension",
            "incorrectResponse",
            Box::new(|token| AlpnAnswer {
                digest: None,
                ..right(&["localhost"], token)
            }),
        ),
        (
            "extra SAN",
            "incorrectResponse",
            Box::new(|token| right(&["localhost", "www.webco.test"], token)),
        ),
        (
            "another name",
            "incorrectResponse",
            Box::new(|token| right(&["www.webco.test"], token)),
        ),
        (
            "no ALPN",
            "tls",
            Box::new(|token| AlpnAnswer {
                alpn: false,
                ..right(&["localhost"], token)
            }),
        ),
    ];
    for (what, kind, variant) in wrong {
        let order = acme.order(&["localhost"]).await.json();
        let a = decide(&mut acme, &order, "tls-alpn-01", |token| {
            *answer.lock().unwrap() = Some(variant(token));
        })
        .await;
        assert_eq!(a["status"], "invalid", "{what}");
        let ch = a["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "tls-alpn-01")
            .unwrap();
        assert_eq!(
            ch["error"]["type"],
            format!("urn:ietf:params:acme:error:{kind}"),
            "{what}: {ch}"
        );
    }

    // The right certificate: valid, and the order is finalized.
    let r = acme.order(&["localhost"]).await;
    let order = r.json();
    let order_path = path_of(&location(&r));
    let a = decide(&mut acme, &order, "tls-alpn-01", |token| {
        *answer.lock().unwrap() = Some(right(&["localhost"], token));
    })
    .await;
    assert_eq!(a["status"], "valid", "{a}");
    let r = acme
        .post(
            &path_of(order["finalize"].as_str().unwrap()),
            Some(&json!({"csr": csr_der(&["localhost"])})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(acme.post(&order_path, None).await.json()["status"], "valid");
    server.stop().await;
}

/// Orders `names`, proves them through the http-01 responder and finalizes: the PEM chain.
async fn obtain(
    acme: &mut Acme,
    answers: &Mutex<HashMap<String, String>>,
    names: &[&str],
) -> String {
    let r = acme.order(names).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let order = r.json();
    let order_path = path_of(&location(&r));
    validate(acme, &order, answers).await;
    let r = acme
        .post(
            &path_of(order["finalize"].as_str().unwrap()),
            Some(&json!({"csr": csr_der(names)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let done = acme.post(&order_path, None).await.json();
    let r = acme
        .post(&path_of(done["certificate"].as_str().unwrap()), None)
        .await;
    String::from_utf8(r.body.to_vec()).unwrap()
}

/// RFC 9773's certID of the chain's leaf: base64url(AKI keyIdentifier).base64url(serial).
fn cert_id(
    chain: &str,
) -> (
    String,
    x509_parser::time::ASN1Time,
    x509_parser::time::ASN1Time,
) {
    let der = harness::certs(chain).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("the CA writes an authority key identifier");
    (
        format!("{}.{}", b64(&aki), b64(cert.raw_serial())),
        cert.validity().not_before,
        cert.validity().not_after,
    )
}

fn at(rfc3339: &Value) -> SystemTime {
    humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_info_suggests_a_window_renews_now_when_revoked_and_checks_replaces() {
    let fx = require_fixture!();
    let (responder, answers) = responder().await;
    let server = start(fx, responder.port()).await;
    let mut acme = Acme::new(&server).await;
    acme.register(&eab(fx, "webco", "webco-web")).await;

    let r = acme
        .client
        .call("GET", "/acme/directory", &[], "")
        .await
        .unwrap();
    let renewal_info = path_of(r.json()["renewalInfo"].as_str().unwrap());
    assert_eq!(renewal_info, "/acme/renewal-info");

    let chain = obtain(&mut acme, &answers, &["localhost"]).await;
    let (id, not_before, not_after) = cert_id(&chain);
    let (nb, na) = (not_before.timestamp(), not_after.timestamp());
    let r = acme
        .client
        .call("GET", &format!("{renewal_info}/{id}"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let window = &r.json()["suggestedWindow"];
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (start, end) = (unix(at(&window["start"])), unix(at(&window["end"])));
    assert!((start - (nb + (na - nb) * 2 / 3)).abs() <= 1, "{window}");
    assert!((end - (nb + (na - nb) * 5 / 6)).abs() <= 1, "{window}");
    let retry: i64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    let now = unix(SystemTime::now());
    assert!(
        (60..=6 * 3600).contains(&retry) && retry <= start - now + 1,
        "{retry}"
    );

    // Unknown and malformed certIDs.
    let (aki, _) = id.split_once('.').unwrap();
    for (path, status) in [
        (format!("{renewal_info}/{aki}.AQIDBAUGBwg"), 404),
        (
            format!("{renewal_info}/AAAA.{}", id.split_once('.').unwrap().1),
            404,
        ),
        (format!("{renewal_info}/{aki}"), 400),
        (format!("{renewal_info}/{aki}.!!"), 400),
        (format!("{renewal_info}/{aki}.AA"), 400),
    ] {
        let r = acme.client.call("GET", &path, &[], "").await.unwrap();
        assert_eq!(r.status, status, "{path}");
        assert_eq!(problem(&r), "urn:ietf:params:acme:error:malformed");
    }

    // replaces: this account's certificate, once; not another account's, nor a stranger's id.
    let ids = json!([{"type": "dns", "value": "localhost"}]);
    let r = acme
        .post(
            "/acme/new-order",
            Some(&json!({"identifiers": ids, "replaces": id})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["replaces"], id.as_str());
    let r = acme
        .post(
            "/acme/new-order",
            Some(&json!({"identifiers": ids, "replaces": id})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:alreadyReplaced");
    let r = acme
        .post(
            "/acme/new-order",
            Some(
                &json!({"identifiers": [{"type": "dns", "value": "a.webco.test"}], "replaces": id}),
            ),
        )
        .await;
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:malformed");
    for bad in [format!("{aki}.AQIDBAUGBwg"), "junk".to_owned()] {
        let r = acme
            .post(
                "/acme/new-order",
                Some(&json!({"identifiers": ids, "replaces": bad})),
            )
            .await;
        assert_eq!(problem(&r), "urn:ietf:params:acme:error:malformed", "{bad}");
    }
    let mut stranger = Acme::new(&server).await;
    stranger.register(&eab(fx, "webco", "webco-web")).await;
    let r = stranger
        .post(
            "/acme/new-order",
            Some(&json!({"identifiers": ids, "replaces": id})),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(problem(&r), "urn:ietf:params:acme:error:unauthorized");

    // Revoked: the window is in the past (renew now).
    let der = b64(&harness::certs(&chain)[0]);
    let r = acme
        .post("/acme/revoke-cert", Some(&json!({"certificate": der})))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = acme
        .client
        .call("GET", &format!("{renewal_info}/{id}"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let window = &r.json()["suggestedWindow"];
    let now = SystemTime::now();
    assert!(at(&window["start"]) < at(&window["end"]), "{window}");
    assert!(at(&window["end"]) < now, "{window}");
    server.stop().await;
}
