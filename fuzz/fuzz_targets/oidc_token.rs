//! Bearer tokens and sealed cookies on untrusted bytes. Chosen by the first byte:
//!
//! - an `Authorization` header value: parsed, then checked against a fixed key set — never a
//!   panic, and never accepted (nothing here is signed by the key);
//! - a header and a payload of fuzzed JSON, correctly signed with the key set's ES256 key:
//!   this reaches the claim checks behind the signature; an accepted token has a subject and
//!   the configured issuer and audience;
//! - a cookie value opened with a key ring: never a panic, never opened (nothing is sealed
//!   with the ring's key).

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis_identity::oidc::{
    bearer_token, check_token_for_fuzzing, ClaimNames, KeyRing, ProviderSettings, SigningAlgorithm,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const NOW: u64 = 1_800_000_000;

struct Fixture {
    key: EcdsaKeyPair,
    jwks: String,
    settings: ProviderSettings,
    ring: KeyRing,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let public = key.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        }]})
        .to_string();
        Fixture {
            key,
            jwks,
            settings: ProviderSettings {
                name: "corp".into(),
                tenant: "acme".into(),
                issuer: "https://idp.example".into(),
                audiences: vec!["api".into()],
                algorithms: SigningAlgorithm::ALL.to_vec(),
                clock_skew: Duration::from_secs(60),
                claims: ClaimNames::default(),
            },
            ring: KeyRing::parse("k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => {
            if let Some(Ok(token)) = bearer_token(&text) {
                let outcome = check_token_for_fuzzing(token, &f.jwks, &f.settings, NOW);
                assert!(outcome.is_err(), "an unsigned token was accepted");
            }
        }
        1 => {
            let (header, payload) = text.split_once('\n').unwrap_or((&text, ""));
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload)
            );
            let signature = f
                .key
                .sign(&SystemRandom::new(), message.as_bytes())
                .unwrap();
            let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
            if let Ok(id) = check_token_for_fuzzing(&token, &f.jwks, &f.settings, NOW) {
                assert!(!id.subject.is_empty());
                assert_eq!(id.issuer, f.settings.issuer);
            }
        }
        _ => {
            assert!(f.ring.open("__Host-portcullis-session", &text).is_none());
        }
    }
});
