//! The audit checkpoint signer, made from the configured key: a software Ed25519 key file, or a
//! P-256 key inside a PKCS#11 token through the CA's key backend (generated there, sensitive and
//! non-extractable, the first time). The gateway receives only the `Signer`.

use std::path::Path;
use std::sync::Arc;

use portcullis_audit::{Signer, SoftwareSigner};
use portcullis_ca::PinSource;
use portcullis_policy::{AuditKey, SecretSource};

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
            portcullis_ca::token_signer(module, token_label, &pin, key_label, "audit key")
        }
    }
}
