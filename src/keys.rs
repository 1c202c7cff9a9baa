//! The audit checkpoint signer, made from the configured key: a software Ed25519 key file, or a
//! P-256 key inside a PKCS#11 token through the CA's key backend (generated there, sensitive and
//! non-extractable, the first time). The gateway receives only the `Signer`.

use std::path::Path;
use std::sync::Arc;

use portcullis_audit::{SignatureAlgorithm, Signer, SignerError, SoftwareSigner};
use portcullis_ca::{CaError, KeyAlgorithm, KeyBackend, PinSource, Pkcs11Backend, SigningKey};
use portcullis_policy::{AuditKey, SecretSource};

/// One session is enough: checkpoints are signed every few thousand records.
const AUDIT_SESSIONS: usize = 1;

pub(crate) fn audit_signer(key: &AuditKey) -> Result<Arc<dyn Signer>, String> {
    match key {
        AuditKey::File(path) => {
            let signer = SoftwareSigner::load_or_create(path).map_err(|e| e.to_string())?;
            tracing::warn!(
                key = %path.display(),
                "audit checkpoints are signed with a software key; use `signing_pkcs11` to keep it in an HSM"
            );
            Ok(Arc::new(signer))
        }
        AuditKey::Pkcs11 {
            module,
            token_label,
            pin,
            key_label,
        } => {
            let pin = match pin {
                SecretSource::File(path) => PinSource::File(path.clone()),
                SecretSource::Env(var) => PinSource::Env(var.clone()),
                SecretSource::Inline(_) => return Err("audit: a PIN is never given inline".into()),
            };
            let module = module
                .as_deref()
                .unwrap_or(Path::new(portcullis_ca::DEFAULT_PKCS11_MODULE));
            let backend = Pkcs11Backend::open(module, token_label, &pin, AUDIT_SESSIONS)
                .map_err(|e| format!("audit key: {e}"))?;
            let key = match backend.find_key(key_label) {
                Ok(key) => key,
                Err(CaError::KeyNotFound { .. }) => {
                    tracing::info!(token = %token_label, key = %key_label, "generating the audit signing key in the token");
                    backend
                        .generate_key(key_label, KeyAlgorithm::EcdsaP256Sha256)
                        .map_err(|e| format!("audit key: {e}"))?
                }
                Err(e) => return Err(format!("audit key: {e}")),
            };
            if key.algorithm() != KeyAlgorithm::EcdsaP256Sha256 {
                return Err(format!(
                    "audit key {key_label:?}: only P-256 keys can sign checkpoints"
                ));
            }
            Ok(Arc::new(TokenSigner(key)))
        }
    }
}

/// A checkpoint signer whose key stays in the token.
struct TokenSigner(Arc<dyn SigningKey>);

impl Signer for TokenSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.0
            .sign(msg)
            .map_err(|e| SignerError::Backend(e.to_string()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::EcdsaP256Sha256Asn1
    }

    fn public_key_der(&self) -> Vec<u8> {
        self.0.public_key_der().to_vec()
    }
}
