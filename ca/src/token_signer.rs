//! A P-256 key inside a PKCS#11 token as a `portcullis_audit::Signer`: what signs audit
//! checkpoints and the admin plane's policy bundles when their key is kept in an HSM. The key
//! is found by its label, or generated there (sensitive, non-extractable) the first time.

use std::path::Path;
use std::sync::Arc;

use portcullis_audit::{SignatureAlgorithm, Signer, SignerError};

use crate::{CaError, KeyAlgorithm, KeyBackend, PinSource, Pkcs11Backend, SigningKey};

/// One session is enough: these keys sign every few seconds at most.
const SESSIONS: usize = 1;

/// The signer for `key_label` in the token `token_label` of `module`; `what` names its use in
/// errors and logs ("audit key", "policy signing key").
pub fn token_signer(
    module: &Path,
    token_label: &str,
    pin: &PinSource,
    key_label: &str,
    what: &str,
) -> Result<Arc<dyn Signer>, String> {
    let backend = Pkcs11Backend::open(module, token_label, pin, SESSIONS)
        .map_err(|e| format!("{what}: {e}"))?;
    let key = match backend.find_key(key_label) {
        Ok(key) => key,
        Err(CaError::KeyNotFound { .. }) => {
            tracing::info!(token = %token_label, key = %key_label, "generating the {what} in the token");
            backend
                .generate_key(key_label, KeyAlgorithm::EcdsaP256Sha256)
                .map_err(|e| format!("{what}: {e}"))?
        }
        Err(e) => return Err(format!("{what}: {e}")),
    };
    if key.algorithm() != KeyAlgorithm::EcdsaP256Sha256 {
        return Err(format!(
            "{what} {key_label:?} in token {token_label:?}: only a P-256 key can sign here"
        ));
    }
    Ok(Arc::new(TokenSigner(key)))
}

/// A signer whose key stays in the token.
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
