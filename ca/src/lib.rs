//! Certificate authority. Today: the development PKI (`dev`) that `portcullis demo` and the
//! tests use, with software keys. The HSM-backed CA with issuance profiles, inventory and
//! revocation is issue 3.

pub mod dev;

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("randomness unavailable")]
    Random,
}
