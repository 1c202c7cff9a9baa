//! ACME client helpers for the end-to-end tests (shared through `#[path]`): a hand-made
//! client for the attacks, an http-01 responder, and running `lego`/`certbot` and checking
//! what they obtained with openssl.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis_admin::EabCredential;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::harness::{Client, Fixture, Reply, Server, Workload};
use crate::pki;

pub(crate) fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        eprintln!("{tool} not installed (apt-get install {tool}): test skipped");
    }
    found
}

/// Runs a command off the runtime's threads (the server runs on them); its output on failure.
pub(crate) async fn run(mut cmd: Command) -> String {
    let shown = format!("{cmd:?}");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    eprintln!(
        "{:.1?}: {}",
        started.elapsed(),
        shown.split(" \"--").next().unwrap_or("")
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown} failed:\n{text}");
    text
}

/// The serial of a PEM certificate file, as the CRL check reads it (lower-case hex).
pub(crate) fn serial_of(path: &Path) -> String {
    let (ok, out) = pki::openssl(&["x509", "-noout", "-serial", "-in", path.to_str().unwrap()]);
    assert!(ok, "{out}");
    out.trim()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_ascii_lowercase()
}

/// Whether the CA's published CRL lists `serial` (read by openssl).
pub(crate) fn crl_lists(fx: &Fixture, serial: &str) -> bool {
    let crl = fx.ca.state_dir().join("crl.pem");
    let (ok, out) = pki::openssl(&["crl", "-noout", "-text", "-in", crl.to_str().unwrap()]);
    assert!(ok, "{out}");
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .any(|s| s.trim_start_matches('0').eq_ignore_ascii_case(serial))
}

pub(crate) fn verify_chain(fx: &Fixture, leaf: &Path) {
    let (ok, out) = pki::openssl(&[
        "verify",
        "-CAfile",
        fx.bundle_path().to_str().unwrap(),
        "-untrusted",
        fx.intermediate_path().to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(ok, "openssl verify: {out}");
}

/// A hand-made ACME client: an ES256 account key, requests signed as RFC 8555 says.
pub(crate) struct Acme {
    pub(crate) client: Client,
    pub(crate) key: EcdsaKeyPair,
    pub(crate) kid: Option<String>,
    pub(crate) nonce: String,
}

pub(crate) const BASE: &str = "https://localhost";

impl Acme {
    pub(crate) async fn new(server: &Server) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut client = server.client(None).await;
        let r = client
            .call("HEAD", "/acme/new-nonce", &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let nonce = nonce_of(&r);
        Self {
            client,
            key,
            kid: None,
            nonce,
        }
    }

    pub(crate) fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    pub(crate) fn thumbprint(&self) -> String {
        let j = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
            j["x"], j["y"]
        );
        b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// The JWS for `path` with `nonce`; `payload` None is POST-as-GET.
    pub(crate) fn sign(&self, path: &str, nonce: &str, payload: Option<&Value>) -> String {
        let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": format!("{BASE}{path}")});
        match &self.kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.jwk(),
        }
        let protected = b64(protected.to_string().as_bytes());
        let payload = payload.map_or(String::new(), |p| b64(p.to_string().as_bytes()));
        let sig = self
            .key
            .sign(
                &SystemRandom::new(),
                format!("{protected}.{payload}").as_bytes(),
            )
            .unwrap();
        json!({"protected": protected, "payload": payload, "signature": b64(sig.as_ref())})
            .to_string()
    }

    pub(crate) async fn send(&mut self, path: &str, body: String) -> Reply {
        let r = post_jose(&mut self.client, path, body).await;
        self.nonce = nonce_of(&r);
        r
    }

    pub(crate) async fn post(&mut self, path: &str, payload: Option<&Value>) -> Reply {
        let body = self.sign(path, &self.nonce.clone(), payload);
        self.send(path, body).await
    }

    pub(crate) fn eab(&self, cred: &EabCredential) -> Value {
        let protected = b64(
            json!({"alg": "HS256", "kid": cred.kid, "url": format!("{BASE}/acme/new-account")})
                .to_string()
                .as_bytes(),
        );
        let payload = b64(self.jwk().to_string().as_bytes());
        let key = URL_SAFE_NO_PAD.decode(cred.expose_hmac()).unwrap();
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            format!("{protected}.{payload}").as_bytes(),
        );
        json!({"protected": protected, "payload": payload, "signature": b64(mac.as_ref())})
    }

    pub(crate) async fn register(&mut self, cred: &EabCredential) {
        let payload =
            json!({"termsOfServiceAgreed": true, "externalAccountBinding": self.eab(cred)});
        let r = self.post("/acme/new-account", Some(&payload)).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        self.kid = Some(location(&r));
    }

    /// A new order for `names`: (order path, its JSON).
    pub(crate) async fn order(&mut self, names: &[&str]) -> Reply {
        let ids: Vec<Value> = names
            .iter()
            .map(|n| json!({"type": "dns", "value": n}))
            .collect();
        self.post("/acme/new-order", Some(&json!({ "identifiers": ids })))
            .await
    }
}

/// `POST path` with a JWS body through `client`.
pub(crate) async fn post_jose(client: &mut Client, path: &str, body: String) -> Reply {
    client
        .call(
            "POST",
            path,
            &[("content-type", "application/jose+json")],
            body,
        )
        .await
        .unwrap()
}

pub(crate) fn nonce_of(r: &Reply) -> String {
    r.headers
        .get("replay-nonce")
        .expect("every ACME answer carries a nonce")
        .to_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn location(r: &Reply) -> String {
    r.headers["location"].to_str().unwrap().to_owned()
}

pub(crate) fn path_of(url: &str) -> String {
    url.strip_prefix(BASE).unwrap().to_owned()
}

pub(crate) fn problem(r: &Reply) -> String {
    assert_eq!(
        r.headers["content-type"],
        "application/problem+json",
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["type"].as_str().unwrap().to_owned()
}

/// An http-01 responder on loopback answering the key authorizations it is given.
pub(crate) async fn responder() -> (SocketAddr, Arc<Mutex<HashMap<String, String>>>) {
    responder_at("127.0.0.1:0").await
}

/// [`responder`] listening at `addr`.
pub(crate) async fn responder_at(addr: &str) -> (SocketAddr, Arc<Mutex<HashMap<String, String>>>) {
    let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let map = Arc::clone(&answers);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let map = Arc::clone(&map);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let token = req
                            .uri()
                            .path()
                            .trim_start_matches("/.well-known/acme-challenge/")
                            .to_owned();
                        let answer = map.lock().unwrap().get(&token).cloned();
                        async move {
                            let (status, body) = match answer {
                                Some(a) => (200, a),
                                None => (404, String::new()),
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, answers)
}

/// Proves every authorization of `order` through the responder; waits for `ready`.
pub(crate) async fn validate(
    acme: &mut Acme,
    order: &Value,
    answers: &Mutex<HashMap<String, String>>,
) {
    for authz in order["authorizations"].as_array().unwrap() {
        let a = acme
            .post(&path_of(authz.as_str().unwrap()), None)
            .await
            .json();
        let ch = &a["challenges"][0];
        assert_eq!(ch["type"], "http-01");
        let token = ch["token"].as_str().unwrap().to_owned();
        answers
            .lock()
            .unwrap()
            .insert(token.clone(), format!("{token}.{}", acme.thumbprint()));
        let r = acme
            .post(&path_of(ch["url"].as_str().unwrap()), Some(&json!({})))
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let status = authz_settled(acme, &path_of(authz.as_str().unwrap())).await;
        assert_eq!(status, "valid");
    }
}

pub(crate) fn csr_der(names: &[&str]) -> String {
    let pem = Workload::new(None, names).csr;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    b64(&base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap())
}

/// Polls an authorization (for up to 10 s) until it is no longer pending: its status then.
pub(crate) async fn authz_settled(acme: &mut Acme, path: &str) -> String {
    let mut status = String::new();
    for _ in 0..100 {
        status = acme.post(path, None).await.json()["status"]
            .as_str()
            .unwrap()
            .to_owned();
        if status != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

/// lego against the ACME `directory` (trusting `ca`), bound by `cred`, answering `challenge`
/// (`--http` or `--tls`) on 127.0.0.1:`port`, its files under `path`: obtains, renews and
/// revokes localhost's certificate, checking each chain and that renewal issued a new one.
/// The two serials: (obtained, renewed and revoked).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn lego_obtain_renew_revoke(
    fx: &Fixture,
    directory: &str,
    ca: &Path,
    cred: &EabCredential,
    challenge: &str,
    port: u16,
    path: &Path,
) -> (String, String) {
    let lego = |action: &[&str]| {
        let mut cmd = Command::new("lego");
        cmd.env("LEGO_CA_CERTIFICATES", ca)
            .args([
                "--server",
                directory,
                "--eab",
                // `=`: a base64url kid or key may begin with '-', which a separate argument
                // would make look like a flag.
                &format!("--kid={}", cred.kid),
                &format!("--hmac={}", cred.expose_hmac()),
                "--email",
                "ops@webco.test",
                "--accept-tos",
                "--domains",
                "localhost",
                challenge,
                &format!("{challenge}.port"),
                &format!("127.0.0.1:{port}"),
                "--path",
                path.to_str().unwrap(),
            ])
            .args(action);
        cmd
    };
    run(lego(&["run"])).await;
    let cert = path.join("certificates/localhost.crt");
    verify_chain(fx, &cert);
    let first = serial_of(&cert);
    // lego renews within --days of expiry: the profiles' certificates live an hour.
    run(lego(&["renew", "--days", "30", "--no-random-sleep"])).await;
    verify_chain(fx, &cert);
    let renewed = serial_of(&cert);
    assert_ne!(first, renewed, "renewal issued a new certificate");
    run(lego(&["revoke"])).await;
    (first, renewed)
}
