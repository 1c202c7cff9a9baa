//! Following the admin plane (`policy_source`): the signed bundle of tenants' activated
//! policies, fetched on an interval, verified with the admin plane's public key, checked with
//! the config file, and kept in `policy_source.cache`.
//!
//! The cache is the source of truth on this side: every config load (start, SIGHUP, file
//! change) lays the cached bundle's tenants over the file (after verifying it again), and the
//! reload thread rebuilds the generation when the cache changes. A gateway that cannot reach
//! the admin plane keeps serving what it last verified, across restarts too (static
//! stability). A bundle is refused — the running policies stay — when its signature does not
//! verify, when it is older than the one in effect (a replay cannot roll a policy back), or
//! when the config it makes does not pass the checks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use portcullis_audit::PublicKey;
use portcullis_identity::{
    load_certs, load_private_key, root_store, write_atomic, ClientCredentials, IssuanceClient,
    PolicyBundle, SignedPolicyBundle, POLICY_BUNDLE_FORMAT, POLICY_BUNDLE_PATH, PUBLIC_FILE_MODE,
};
use portcullis_policy::{Config, PolicySource};

use crate::metrics::Metrics;
use crate::GatewayError;

/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Verifies a signed bundle with the admin plane's key and reads its payload.
pub(crate) fn verify(signed: &SignedPolicyBundle, key: &PublicKey) -> Result<PolicyBundle, String> {
    if signed.format != POLICY_BUNDLE_FORMAT {
        return Err(format!("unknown format {:?}", signed.format));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&signed.signature)
        .map_err(|_| "the signature is not base64".to_owned())?;
    key.verify(&signed.algorithm, signed.payload.as_bytes(), &signature)
        .map_err(|e| format!("{e} with the key in policy_source.public_key"))?;
    serde_json::from_str(&signed.payload).map_err(|e| format!("unreadable payload: {e}"))
}

fn public_key(source: &PolicySource) -> Result<PublicKey, String> {
    let bytes = std::fs::read(&source.public_key)
        .map_err(|e| format!("{}: {e}", source.public_key.display()))?;
    PublicKey::from_pem_or_der(&bytes).map_err(|e| format!("{}: {e}", source.public_key.display()))
}

/// The verified bundle in the cache, if there is one.
pub(crate) fn cached(source: &PolicySource) -> Result<Option<PolicyBundle>, GatewayError> {
    let text = match std::fs::read(&source.cache) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(GatewayError::file(&source.cache, e)),
    };
    let refuse = |detail: String| {
        GatewayError::PolicyBundle(format!(
            "{}: {detail}; remove it to run this file's tenants until the admin plane answers",
            source.cache.display()
        ))
    };
    let signed: SignedPolicyBundle =
        serde_json::from_slice(&text).map_err(|e| refuse(format!("unreadable: {e}")))?;
    let key = public_key(source).map_err(GatewayError::PolicyBundle)?;
    verify(&signed, &key).map(Some).map_err(refuse)
}

/// The config file's text with `bundle`'s tenants laid over it, checked.
pub(crate) fn apply(
    text: &str,
    path: &Path,
    bundle: &PolicyBundle,
) -> Result<Config, GatewayError> {
    let documents: Vec<&str> = bundle.tenants.iter().map(|t| t.document.as_str()).collect();
    let merged = portcullis_policy::overlay_tenants(text, &documents)
        .map_err(|e| GatewayError::PolicyBundle(format!("serial {}: {e}", bundle.serial)))?;
    Config::from_yaml(&merged, path).map_err(|e| {
        GatewayError::PolicyBundle(format!(
            "serial {} does not make a valid config with {}: {}",
            bundle.serial,
            path.display(),
            e.problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })
}

/// Fetches the bundle every `interval` on its own thread, for as long as the process runs.
pub(crate) fn spawn(
    source: PolicySource,
    config_path: std::path::PathBuf,
    metrics: Arc<Metrics>,
) -> Result<(), GatewayError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| GatewayError::PolicyBundle(format!("runtime: {e}")))?;
    std::thread::Builder::new()
        .name("policy-follow".into())
        .spawn(move || loop {
            let outcome = runtime.block_on(fetch_once(&source, &config_path));
            match &outcome {
                Ok(Fetched::Unchanged) => {}
                Ok(Fetched::Applied(serial)) => {
                    tracing::info!(policy.serial = serial, "policy bundle from the admin plane kept; the reload applies it");
                }
                Err(e) => {
                    tracing::warn!(error = %e.detail, result = e.result, "policy bundle not taken; the running policies stay");
                }
            }
            metrics.policy.fetched(match &outcome {
                Ok(Fetched::Unchanged) => "unchanged",
                Ok(Fetched::Applied(_)) => "applied",
                Err(e) => e.result,
            });
            std::thread::sleep(source.interval);
        })
        .map_err(|e| GatewayError::PolicyBundle(format!("thread: {e}")))?;
    Ok(())
}

enum Fetched {
    Unchanged,
    /// A newer bundle verified, checked and written to the cache.
    Applied(u64),
}

/// Why a fetch took nothing: a metric label and the detail for the log.
struct NotTaken {
    result: &'static str,
    detail: String,
}

fn not_taken(result: &'static str) -> impl Fn(String) -> NotTaken {
    move |detail| NotTaken { result, detail }
}

/// Whether a verified bundle with serial `offered` replaces the one in effect (`current`): a
/// newer one does, the same one is nothing to do, an older one is refused (a replayed bundle
/// must not roll a policy back).
fn newer(current: u64, offered: u64) -> Result<bool, String> {
    match offered.cmp(&current) {
        std::cmp::Ordering::Greater => Ok(true),
        std::cmp::Ordering::Equal => Ok(false),
        std::cmp::Ordering::Less => Err(format!(
            "serial {offered} is older than the {current} in effect"
        )),
    }
}

async fn fetch_once(source: &PolicySource, config_path: &Path) -> Result<Fetched, NotTaken> {
    // A cache that does not verify (damaged, or written by someone else) is replaced by the
    // admin plane's bundle; until then the reload keeps refusing it.
    let current = match cached(source) {
        Ok(bundle) => bundle.map_or(0, |b| b.serial),
        Err(e) => {
            tracing::warn!(error = %e, "policy bundle cache refused; asking the admin plane for a verified one");
            0
        }
    };
    let local = not_taken("local_files");
    let roots = load_certs(&source.ca)
        .and_then(|certs| root_store(certs, "policy_source.ca"))
        .map_err(|e| local(e.to_string()))?;
    let credentials = ClientCredentials {
        chain: load_certs(&source.client_certificate).map_err(|e| local(e.to_string()))?,
        key: load_private_key(&source.client_key).map_err(|e| local(e.to_string()))?,
    };
    let client = IssuanceClient::new(&source.host, source.port, roots, Some(credentials))
        .map_err(|e| local(e.to_string()))?
        .with_timeout(FETCH_TIMEOUT);
    let etag = (http::header::IF_NONE_MATCH, format!("\"{current}\""));
    let (status, _, body) = client
        .get(POLICY_BUNDLE_PATH, &[etag])
        .await
        .map_err(|e| not_taken("unreachable")(e.to_string()))?;
    if status == http::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::Unchanged);
    }
    if status != http::StatusCode::OK {
        return Err(not_taken("refused")(format!(
            "the admin plane answered {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        )));
    }
    let signed: SignedPolicyBundle = serde_json::from_slice(&body)
        .map_err(|e| not_taken("malformed")(format!("unreadable bundle: {e}")))?;
    let key = public_key(source).map_err(&local)?;
    let bundle = verify(&signed, &key).map_err(not_taken("bad_signature"))?;
    if !newer(current, bundle.serial).map_err(not_taken("stale"))? {
        return Ok(Fetched::Unchanged);
    }
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| local(format!("{}: {e}", config_path.display())))?;
    apply(&text, config_path, &bundle).map_err(|e| not_taken("invalid")(e.to_string()))?;
    let json = serde_json::to_vec(&signed).map_err(|e| local(e.to_string()))?;
    write_atomic(&source.cache, &json, PUBLIC_FILE_MODE).map_err(|e| local(e.to_string()))?;
    Ok(Fetched::Applied(bundle.serial))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_audit::{Signer, SoftwareSigner};

    fn signed(signer: &SoftwareSigner, payload: &str) -> SignedPolicyBundle {
        SignedPolicyBundle {
            format: POLICY_BUNDLE_FORMAT.to_owned(),
            payload: payload.to_owned(),
            algorithm: "ed25519".to_owned(),
            key_id: String::new(),
            signature: base64::engine::general_purpose::STANDARD
                .encode(signer.sign(payload.as_bytes()).unwrap()),
        }
    }

    #[test]
    fn an_older_bundle_never_replaces_a_newer_one() {
        assert_eq!(newer(0, 1), Ok(true));
        assert_eq!(newer(7, 8), Ok(true));
        assert_eq!(newer(7, 7), Ok(false));
        assert!(newer(7, 6).unwrap_err().contains("older"));
        assert!(newer(u64::MAX, 0).is_err());
    }

    #[test]
    fn only_a_bundle_signed_by_the_configured_key_is_read() {
        let signer = SoftwareSigner::generate().unwrap();
        let key = PublicKey::from_spki_der(&signer.public_key_der()).unwrap();
        let payload = r#"{"serial":3,"issued_at":"2026-12-02T00:00:00Z","tenants":[]}"#;
        let good = signed(&signer, payload);
        assert_eq!(verify(&good, &key).unwrap().serial, 3);

        let mut tampered = good.clone();
        tampered.payload = tampered.payload.replace('3', "9");
        assert!(verify(&tampered, &key)
            .unwrap_err()
            .contains("does not verify"));
        let other = SoftwareSigner::generate().unwrap();
        assert!(verify(&signed(&other, payload), &key).is_err());
        let mut garbled = good.clone();
        garbled.signature = "***".into();
        assert!(verify(&garbled, &key).unwrap_err().contains("base64"));
        let mut p256 = good.clone();
        p256.algorithm = "ecdsa-p256-sha256-fixed".into();
        assert!(verify(&p256, &key).is_err());
        let mut future = good.clone();
        future.format = "portcullis-policy-bundle/2".into();
        assert!(verify(&future, &key).unwrap_err().contains("format"));
        // Signed, but not a bundle: refused after the signature, never a panic.
        assert!(verify(&signed(&signer, "[]"), &key)
            .unwrap_err()
            .contains("payload"));
    }

    /// The admin plane's key in an HSM is P-256 (ASN.1 signatures): a gateway holding that
    /// key reads its bundles, and refuses one whose algorithm label was changed, whose
    /// signature was re-encoded, or that an Ed25519 key signed under any label.
    #[test]
    fn a_p256_key_reads_only_its_own_signatures_under_its_own_label() {
        use ring::rand::SystemRandom;
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut spki = portcullis_audit::P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let key = PublicKey::from_spki_der(&spki).unwrap();
        let payload = r#"{"serial":4,"issued_at":"2026-12-02T00:00:00Z","tenants":[]}"#;
        let b64 = |sig: &[u8]| base64::engine::general_purpose::STANDARD.encode(sig);
        let good = SignedPolicyBundle {
            format: POLICY_BUNDLE_FORMAT.to_owned(),
            payload: payload.to_owned(),
            algorithm: "ecdsa-p256-sha256-asn1".to_owned(),
            key_id: String::new(),
            signature: b64(pair.sign(&rng, payload.as_bytes()).unwrap().as_ref()),
        };
        assert_eq!(verify(&good, &key).unwrap().serial, 4);

        for label in ["ecdsa-p256-sha256-fixed", "ed25519", "none", ""] {
            let mut relabelled = good.clone();
            relabelled.algorithm = label.to_owned();
            assert!(
                verify(&relabelled, &key).is_err(),
                "label {label:?} accepted"
            );
        }
        let ed = SoftwareSigner::generate().unwrap();
        for label in ["ed25519", "ecdsa-p256-sha256-asn1"] {
            let mut forged = signed(&ed, payload);
            forged.algorithm = label.to_owned();
            assert!(
                verify(&forged, &key).is_err(),
                "an Ed25519 signature read as {label}"
            );
        }
        let mut truncated = good.clone();
        let sig = pair.sign(&rng, payload.as_bytes()).unwrap();
        truncated.signature = b64(&sig.as_ref()[..sig.as_ref().len() - 1]);
        assert!(verify(&truncated, &key).is_err());
    }
}
