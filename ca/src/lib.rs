//! Certificate authority of Portcullis.
//!
//! - Key backends behind one [`SigningKey`] trait: PKCS#11 (any HSM; SoftHSM2 in tests) and a
//!   software PKCS#8 key with a loud warning. Key material never leaves this crate.
//! - [`Ca`]: a root and an issuing intermediate ([`Ca::init`], [`Ca::open`]), issuance from CSRs
//!   under per-tenant [`IssuanceProfile`]s ([`Ca::issue`]), an [`InventoryStore`] of everything
//!   issued (SQLite by default) with each renewal's lineage, revocation (of a certificate and
//!   its renewals) and CRLs written atomically to `STATE/crl.pem`. Operators are a role:
//!   IDs under [`OPERATOR_PATH`] come only from profiles with `role: operator`.
//!   The CA records its own issuances, refusals and revocations through a [`CaEventSink`].
//! - [`cli`]: the `portcullis ca …` subcommands.
//! - [`dev`]: the development PKI (software keys) used by `portcullis demo` and tests.

// No unwrap/expect on anything a peer or an operator can influence; an expect that guards a
// true invariant is allowed where it stands, with the reason. Tests are exempt.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod authority;
pub mod cli;
mod config;
mod crl;
mod csr;
pub mod dev;
mod events;
mod ids;
mod inventory;
mod key;
mod ocsp;
mod profile;
mod token_signer;

pub use authority::{
    Ca, IssueRequest, IssuedCertificate, Requester, RequesterKind, STATE_IN_POSTGRES,
};
pub use config::{
    BackendConfig, CaConfig, CertConfig, CrlConfig, KeysConfig, Pkcs11Config,
    ProfileApprovalConfig, ProfileConfig, SoftwareConfig, MAX_APPROVAL_WAIT, MIN_APPROVAL_WAIT,
};
pub use crl::{write_atomic, Crl, RevocationReason};
#[doc(hidden)]
pub use csr::{parse_csr_for_fuzzing, requested_names, RequestedNames};
pub use events::{CaEventSink, RevocationSink};
pub use ids::{Serial, TenantId};
#[cfg(feature = "conformance")]
#[doc(hidden)]
pub use inventory::conformance as inventory_conformance;
pub use inventory::{
    CertRecord, CertStatus, GroupCommit, InventoryFilter, InventoryStore, NewCertRecord,
    Revocation, RevocationScope, SqliteInventory,
};
pub use key::{
    KeyAlgorithm, KeyBackend, PinSource, Pkcs11Backend, SigningKey, SoftwareBackend,
    DEFAULT_PKCS11_MODULE,
};
pub use ocsp::{OcspAnswer, OcspOutcome, OcspResponder, MAX_CERTS_PER_REQUEST};
pub use profile::{
    ApprovalRule, DnsPattern, IssuanceProfile, IssueRefusal, KeyType, ProfileRole, SpiffeIdPattern,
    OPERATOR_PATH,
};
pub use token_signer::token_signer;

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// rcgen could not build or sign a certificate or CRL.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The system random generator failed.
    #[error("randomness unavailable")]
    Random,
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("PKCS#11 module {module}: cannot load: {detail}")]
    ModuleLoad { module: String, detail: String },
    /// No token with this label is present in any slot of the module.
    #[error("PKCS#11 token with label {label:?} not found (tokens present: {present})")]
    TokenNotFound { label: String, present: String },
    /// The token refused the PIN.
    #[error("PKCS#11 token {token:?}: PIN incorrect")]
    PinIncorrect { token: String },
    /// The token has locked the PIN after too many failures.
    #[error("PKCS#11 token {token:?}: PIN locked")]
    PinLocked { token: String },
    /// The PIN could not be read from its source (file missing, variable unset, empty).
    #[error("PIN source: {0}")]
    PinSource(String),
    /// No key with this label exists in the backend.
    #[error("key {label:?} not found in {backend}")]
    KeyNotFound { backend: String, label: String },
    /// A key with this label already exists; generating would make labels ambiguous.
    #[error("key {label:?} already exists in {backend}")]
    KeyExists { backend: String, label: String },
    /// The key backend is unreachable (session lost, token removed or logged out). Callers map
    /// this to 503; the backend reopens its sessions on the next call.
    #[error("key backend unavailable: {0}")]
    BackendUnavailable(String),
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {op}: {detail}")]
    Pkcs11 { op: &'static str, detail: String },
    /// A software key file or a PIN file is accessible to group or others.
    #[error(
        "{path} has mode {mode:04o}: a key or PIN file must not be accessible by group or \
         others (chmod 600 {path})"
    )]
    KeyFilePermissions { path: String, mode: u32 },
    /// A software key file is not a usable PKCS#8 EC key.
    #[error("key file {path}: {detail}")]
    KeyFile { path: String, detail: String },
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The CA state directory is missing something or holds something unusable.
    #[error("CA state {path}: {detail}")]
    State { path: String, detail: String },
    /// The CSR or request was refused by policy; [`IssueRefusal::code`] is stable.
    #[error("issuance refused: {0}")]
    Refused(#[from] IssueRefusal),
    /// No certificate with this serial is in the inventory.
    #[error("serial {0}: no such certificate")]
    UnknownSerial(Serial),
    /// The certificate is already revoked.
    #[error("serial {serial}: already revoked at {at} ({reason})")]
    AlreadyRevoked {
        serial: Serial,
        at: String,
        reason: RevocationReason,
    },
    /// A serial number that is not hex.
    #[error("invalid serial {0:?}: expected 1 to 20 bytes of hex")]
    InvalidSerial(String),
    /// The inventory store failed.
    #[error("inventory: {0}")]
    Inventory(String),
    /// Certificates, keys or names that `portcullis-identity` refused.
    #[error("{0}")]
    Identity(portcullis_identity::IdentityError),
}

impl From<portcullis_identity::IdentityError> for CaError {
    fn from(e: portcullis_identity::IdentityError) -> Self {
        use portcullis_identity::IdentityError as E;
        match e {
            E::Io { path, source } => CaError::Io { path, source },
            E::Random => CaError::Random,
            E::Serial(s) => CaError::InvalidSerial(s.input().to_owned()),
            other => CaError::Identity(other),
        }
    }
}

impl From<portcullis_identity::SerialError> for CaError {
    fn from(e: portcullis_identity::SerialError) -> Self {
        CaError::InvalidSerial(e.input().to_owned())
    }
}

impl CaError {
    /// True when the key backend is temporarily unreachable (map to 503 and retry later).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CaError::BackendUnavailable(_))
    }
}

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_across_threads() {
        send_sync::<crate::Ca>();
        send_sync::<crate::Pkcs11Backend>();
        send_sync::<std::sync::Arc<dyn crate::SigningKey>>();
        send_sync::<crate::SqliteInventory>();
    }
}
