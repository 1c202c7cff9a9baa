//! The checks of one token, attacked as a caller would: other algorithms, keys, times,
//! issuers, audiences and headers.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::*;
use crate::oidc::keys::Key;
use crate::oidc::ClaimNames;

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example";

struct Signer {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl Signer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
        Self {
            public: pair.public_key().as_ref().to_vec(),
            pkcs8,
        }
    }

    fn key(&self, kid: &str, alg: Option<Algorithm>) -> Key {
        let x = URL_SAFE_NO_PAD.encode(&self.public[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&self.public[33..65]);
        Key {
            kid: Some(kid.to_owned()),
            alg,
            key: DecodingKey::from_ec_components(&x, &y).unwrap(),
        }
    }

    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

fn settings() -> ProviderSettings {
    ProviderSettings {
        name: "corp".into(),
        tenant: "acme".into(),
        issuer: ISSUER.into(),
        audiences: vec!["https://api.example".into()],
        algorithms: SigningAlgorithm::ALL.to_vec(),
        clock_skew: Duration::from_secs(30),
        claims: ClaimNames::default(),
    }
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "alice",
        "aud": "https://api.example",
        "exp": NOW + 300,
        "iat": NOW - 10,
        "auth_time": NOW - 60,
        "email": "Alice@Example.com",
        "groups": ["eng", "ops"],
        "amr": ["pwd", "mfa"],
        "acr": "urn:mfa",
    })
}

fn with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn keys(signer: &Signer) -> Keys {
    Keys {
        list: vec![signer.key("k1", Some(Algorithm::ES256))],
        ..Keys::default()
    }
}

/// A token with the given header and payload JSON and signature bytes, as an attacker makes it.
fn forged(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[test]
fn a_good_token_names_its_holder() {
    let signer = Signer::new();
    let token = signer.sign(Some("k1"), &claims());
    let id = check(&token, &keys(&signer), &settings(), NOW).unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(id.provider, "corp");
    assert_eq!(id.email.as_deref(), Some("alice@example.com"));
    assert_eq!(id.groups, ["eng", "ops"]);
    assert_eq!(id.amr, ["pwd", "mfa"]);
    assert_eq!(id.acr.as_deref(), Some("urn:mfa"));
    assert_eq!(id.auth_time, Some(NOW - 60));
    assert_eq!(id.expires_at, NOW + 300);
    // Without a kid, the keys of the right type are tried.
    let token = signer.sign(None, &claims());
    assert!(check(&token, &keys(&signer), &settings(), NOW).is_ok());
}

#[test]
fn none_and_shared_secret_algorithms_are_refused_before_any_key() {
    let signer = Signer::new();
    let payload = claims();
    let none = forged(&json!({"alg": "none", "kid": "k1"}), &payload, b"");
    assert_eq!(
        check(&none, &keys(&signer), &settings(), NOW),
        Err(TokenError::Algorithm)
    );
    // HS256 keyed with the public key, the classic confusion.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let hs =
        jsonwebtoken::encode(&header, &payload, &EncodingKey::from_secret(&signer.public)).unwrap();
    assert_eq!(
        check(&hs, &keys(&signer), &settings(), NOW),
        Err(TokenError::Algorithm)
    );
    // An algorithm the provider does not use.
    let mut only_rs = settings();
    only_rs.algorithms = vec![SigningAlgorithm::RS256];
    let token = signer.sign(Some("k1"), &payload);
    assert_eq!(
        check(&token, &keys(&signer), &only_rs, NOW),
        Err(TokenError::Algorithm)
    );
}

#[test]
fn signatures_must_hold_with_the_named_key() {
    let signer = Signer::new();
    let other = Signer::new();
    let token = other.sign(Some("k1"), &claims());
    assert_eq!(
        check(&token, &keys(&signer), &settings(), NOW),
        Err(TokenError::Signature)
    );
    // A payload changed after signing.
    let good = signer.sign(Some("k1"), &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(with(json!({"sub": "root"})).to_string()),
        parts[2]
    );
    assert_eq!(
        check(&tampered, &keys(&signer), &settings(), NOW),
        Err(TokenError::Signature)
    );
    // An unknown kid, and a kid whose key is published for another algorithm.
    let token = signer.sign(Some("k9"), &claims());
    assert_eq!(
        check(&token, &keys(&signer), &settings(), NOW),
        Err(TokenError::UnknownKey)
    );
    let rs_only = Keys {
        list: vec![signer.key("k1", Some(Algorithm::RS256))],
        ..Keys::default()
    };
    let token = signer.sign(Some("k1"), &claims());
    assert_eq!(
        check(&token, &rs_only, &settings(), NOW),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        check(&token, &Keys::default(), &settings(), NOW),
        Err(TokenError::KeysUnavailable)
    );
}

#[test]
fn times_hold_within_the_skew_only() {
    let signer = Signer::new();
    let k = keys(&signer);
    let s = settings();
    let at = |c: Value| check(&signer.sign(Some("k1"), &c), &k, &s, NOW);
    assert!(
        at(with(json!({"exp": NOW - 20}))).is_ok(),
        "within 30 s of skew"
    );
    assert_eq!(at(with(json!({"exp": NOW - 31}))), Err(TokenError::Expired));
    assert_eq!(
        at(with(json!({"exp": null}))),
        Err(TokenError::MissingClaim)
    );
    assert_eq!(at(with(json!({"exp": "soon"}))), Err(TokenError::Malformed));
    assert_eq!(
        at(with(json!({"nbf": NOW + 31}))),
        Err(TokenError::NotYetValid)
    );
    assert!(at(with(json!({"nbf": NOW + 29}))).is_ok());
    assert_eq!(
        at(with(json!({"iat": NOW + 600}))),
        Err(TokenError::IssuedInFuture)
    );
    assert_eq!(at(with(json!({"exp": -5}))), Err(TokenError::Malformed));
}

#[test]
fn issuer_audience_subject_and_tenant() {
    let signer = Signer::new();
    let k = keys(&signer);
    let mut s = settings();
    let at = |c: Value, s: &ProviderSettings| check(&signer.sign(Some("k1"), &c), &k, s, NOW);
    assert_eq!(
        at(with(json!({"iss": "https://evil.example"})), &s),
        Err(TokenError::Issuer)
    );
    assert_eq!(at(with(json!({"iss": null})), &s), Err(TokenError::Issuer));
    assert_eq!(
        at(with(json!({"aud": "https://other"})), &s),
        Err(TokenError::Audience)
    );
    assert_eq!(
        at(with(json!({"aud": null})), &s),
        Err(TokenError::Audience)
    );
    assert!(at(with(json!({"aud": ["x", "https://api.example"]})), &s).is_ok());
    assert_eq!(
        at(with(json!({"sub": ""})), &s),
        Err(TokenError::MissingClaim)
    );
    assert_eq!(
        at(with(json!({"sub": 7})), &s),
        Err(TokenError::MissingClaim)
    );
    s.claims.tenant = Some("org".into());
    assert_eq!(at(claims(), &s), Err(TokenError::Tenant));
    assert_eq!(
        at(with(json!({"org": "other"})), &s),
        Err(TokenError::Tenant)
    );
    assert!(at(with(json!({"org": "acme"})), &s).is_ok());
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let signer = Signer::new();
    let k = keys(&signer);
    let good = signer.sign(Some("k1"), &claims());
    let crit = forged(
        &json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}),
        &claims(),
        b"x",
    );
    let kid_number = forged(&json!({"alg": "ES256", "kid": 1}), &claims(), b"x");
    for bad in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        &format!("{good}.x"),
        &crit,
        &kid_number,
        &forged(&json!(["alg"]), &claims(), b"x"),
        &"a.".repeat(20_000),
    ] {
        assert_eq!(
            check(bad, &k, &settings(), NOW),
            Err(TokenError::Malformed),
            "{}",
            &bad[..bad.len().min(40)]
        );
    }
    // A payload that is not JSON, correctly signed.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1"}"#);
    let payload = URL_SAFE_NO_PAD.encode("not json");
    let message = format!("{header}.{payload}");
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_ec_der(&signer.pkcs8),
        Algorithm::ES256,
    )
    .unwrap();
    let token = format!("{message}.{signature}");
    assert_eq!(
        check(&token, &k, &settings(), NOW),
        Err(TokenError::Malformed)
    );
}
