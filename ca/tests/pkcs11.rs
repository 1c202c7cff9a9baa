//! Key backends against a real SoftHSM2 token and real files.

#[path = "support/softhsm.rs"]
mod softhsm;
use softhsm::raw_session;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use portcullis_ca::{
    CaError, KeyAlgorithm, KeyBackend, PinSource, Pkcs11Backend, SigningKey, SoftwareBackend,
};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};

fn backend(hsm: &softhsm::Hsm, token: &str, sessions: usize) -> Pkcs11Backend {
    Pkcs11Backend::open(
        Path::new(softhsm::MODULE),
        token,
        &PinSource::File(hsm.pin_file.clone()),
        sessions,
    )
    .expect("open token")
}

fn point(spki: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).unwrap();
    info.subject_public_key.data.to_vec()
}

fn assert_verifies(key: &dyn SigningKey, msg: &[u8]) {
    let sig = key.sign(msg).expect("sign");
    let alg = match key.algorithm() {
        KeyAlgorithm::EcdsaP256Sha256 => &ECDSA_P256_SHA256_ASN1,
        KeyAlgorithm::EcdsaP384Sha384 => &ECDSA_P384_SHA384_ASN1,
        other => panic!("unexpected {other:?}"),
    };
    UnparsedPublicKey::new(alg, point(key.public_key_der()))
        .verify(msg, &sig)
        .expect("DER ECDSA signature verifies with the public key");
}

#[test]
fn generated_key_is_sensitive_non_extractable_sign_only() {
    let hsm = require_hsm!();
    let b = backend(hsm, "attrs", 2);
    let key = b
        .generate_key("attr-test", KeyAlgorithm::EcdsaP256Sha256)
        .unwrap();
    assert_verifies(key.as_ref(), b"hello");

    let session = raw_session("attrs");
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"attr-test".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = session
        .get_attributes(
            found[0],
            &[
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::Sign,
                AttributeType::Decrypt,
                AttributeType::Unwrap,
                AttributeType::Token,
                AttributeType::Private,
            ],
        )
        .unwrap();
    let flag = |want: AttributeType| {
        attrs
            .iter()
            .find_map(|a| match (want, a) {
                (AttributeType::Extractable, Attribute::Extractable(v))
                | (AttributeType::Sensitive, Attribute::Sensitive(v))
                | (AttributeType::NeverExtractable, Attribute::NeverExtractable(v))
                | (AttributeType::AlwaysSensitive, Attribute::AlwaysSensitive(v))
                | (AttributeType::Sign, Attribute::Sign(v))
                | (AttributeType::Decrypt, Attribute::Decrypt(v))
                | (AttributeType::Unwrap, Attribute::Unwrap(v))
                | (AttributeType::Token, Attribute::Token(v))
                | (AttributeType::Private, Attribute::Private(v)) => Some(*v),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{want:?} missing"))
    };
    assert!(
        !flag(AttributeType::Extractable),
        "CKA_EXTRACTABLE must be false"
    );
    assert!(flag(AttributeType::Sensitive), "CKA_SENSITIVE must be true");
    assert!(
        flag(AttributeType::NeverExtractable),
        "CKA_NEVER_EXTRACTABLE must be true"
    );
    assert!(flag(AttributeType::AlwaysSensitive));
    assert!(flag(AttributeType::Sign));
    assert!(!flag(AttributeType::Decrypt));
    assert!(!flag(AttributeType::Unwrap));
    assert!(
        flag(AttributeType::Token),
        "a token object, surviving the session"
    );
    assert!(flag(AttributeType::Private));

    // The private value cannot be read out.
    let value = session.get_attributes(found[0], &[AttributeType::Value]);
    assert!(
        !matches!(&value, Ok(attrs) if attrs.iter().any(|a| matches!(a, Attribute::Value(_)))),
        "CKA_VALUE must not be readable: {value:?}"
    );

    // Found again by label, same public key; a second generate under the label is refused.
    let again = b.find_key("attr-test").unwrap();
    assert_eq!(again.public_key_der(), key.public_key_der());
    assert!(matches!(
        b.generate_key("attr-test", KeyAlgorithm::EcdsaP256Sha256),
        Err(CaError::KeyExists { .. })
    ));
}

#[test]
fn p384_keys_sign_with_sha384() {
    let hsm = require_hsm!();
    let b = backend(hsm, "p384", 1);
    let key = b
        .generate_key("p384-test", KeyAlgorithm::EcdsaP384Sha384)
        .unwrap();
    assert_eq!(key.algorithm(), KeyAlgorithm::EcdsaP384Sha384);
    assert_verifies(key.as_ref(), b"a longer message for P-384");
    assert_verifies(b.find_key("p384-test").unwrap().as_ref(), b"again");
}

#[test]
fn distinct_errors_for_module_token_pin_and_key() {
    let hsm = require_hsm!();
    let pin = PinSource::File(hsm.pin_file.clone());

    let err =
        Pkcs11Backend::open(Path::new("/nonexistent/libnothing.so"), "ca", &pin, 1).unwrap_err();
    assert!(matches!(err, CaError::ModuleLoad { .. }), "{err}");

    let err =
        Pkcs11Backend::open(Path::new(softhsm::MODULE), "no-such-token", &pin, 1).unwrap_err();
    assert!(matches!(err, CaError::TokenNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("\"ca\""),
        "lists tokens present: {err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-pin");
    std::fs::write(&wrong, "0000\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Pkcs11Backend::open(
        Path::new(softhsm::MODULE),
        "wrong-pin",
        &PinSource::File(wrong),
        1,
    )
    .unwrap_err();
    assert!(matches!(err, CaError::PinIncorrect { .. }), "{err}");
    assert!(!err.to_string().contains("0000"), "the PIN is never shown");

    let err = Pkcs11Backend::open(
        Path::new(softhsm::MODULE),
        "ca",
        &PinSource::Env("PORTCULLIS_SURELY_UNSET_PIN".to_owned()),
        1,
    )
    .unwrap_err();
    assert!(matches!(err, CaError::PinSource(_)), "{err}");

    let b = Pkcs11Backend::open(
        Path::new(softhsm::MODULE),
        "ca",
        &PinSource::Env(softhsm::PIN_ENV.to_owned()),
        1,
    )
    .unwrap();
    let err = b.find_key("never-generated").unwrap_err();
    assert!(matches!(err, CaError::KeyNotFound { .. }), "{err}");
}

#[test]
fn lost_login_is_unavailable_then_recovers() {
    let hsm = require_hsm!();
    let b = backend(hsm, "recovery", 2);
    let key = b
        .generate_key("recovery-key", KeyAlgorithm::EcdsaP256Sha256)
        .unwrap();
    assert_verifies(key.as_ref(), b"before");

    // Log the token out behind the backend's back: every session of the application loses it.
    let outsider = raw_session("recovery");
    outsider.logout().unwrap();

    let err = key.sign(b"during").unwrap_err();
    assert!(
        err.is_unavailable(),
        "expected BackendUnavailable, got {err}"
    );
    assert!(matches!(err, CaError::BackendUnavailable(_)));
    drop(outsider);

    // The next call opens and logs in fresh sessions.
    assert_verifies(key.as_ref(), b"after");
}

#[test]
fn four_threads_sign_through_the_pool() {
    let hsm = require_hsm!();
    let b = backend(hsm, "threads", 2);
    let key: Arc<dyn SigningKey> = b
        .generate_key("concurrency-key", KeyAlgorithm::EcdsaP256Sha256)
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let key = Arc::clone(&key);
            s.spawn(move || {
                for i in 0..50 {
                    assert_verifies(key.as_ref(), format!("thread {t} message {i}").as_bytes());
                }
            });
        }
    });
}

#[test]
fn software_keys_are_0600_and_group_readable_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = SoftwareBackend::new(dir.path().join("keys"));
    let key = b
        .generate_key("issuing", KeyAlgorithm::EcdsaP256Sha256)
        .unwrap();
    assert_verifies(key.as_ref(), b"software");
    let path = dir.path().join("keys/issuing.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        b.find_key("issuing").unwrap().public_key_der(),
        key.public_key_der()
    );
    assert!(matches!(
        b.generate_key("issuing", KeyAlgorithm::EcdsaP256Sha256),
        Err(CaError::KeyExists { .. })
    ));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = b.find_key("issuing").unwrap_err();
    assert!(
        matches!(err, CaError::KeyFilePermissions { mode: 0o644, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("0644"),
        "{msg}"
    );

    assert!(matches!(
        b.find_key("absent"),
        Err(CaError::KeyNotFound { .. })
    ));
    assert!(matches!(b.find_key("../escape"), Err(CaError::Config(_))));

    let p384 = b
        .generate_key("p384", KeyAlgorithm::EcdsaP384Sha384)
        .unwrap();
    assert_verifies(p384.as_ref(), b"software p384");
}
