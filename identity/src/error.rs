//! The crate's error: what loading TLS material, writing files, reading a certificate or
//! talking to the issuance API can fail with. Parsers of names have their own small error
//! types ([`crate::TenantIdError`], [`crate::SpiffeIdError`], …) so callers can map each reason
//! to their own codes; they convert into this one.

use crate::{DnsNameError, PatternError, SerialError, SpiffeIdError, TenantIdError};

/// Everything this crate can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Bytes that are not a usable X.509 certificate.
    #[error("certificate: {0}")]
    Certificate(String),
    /// PEM that holds nothing usable of the expected kind, or that rustls refused.
    #[error("{what}: {detail}")]
    Pem {
        /// Which file or text.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// rustls refused a configuration (key, chain, trust anchors, CRLs).
    #[error("{0}")]
    Tls(String),
    /// The system random generator failed.
    #[error("randomness unavailable")]
    Random,
    /// A tenant id that is not one.
    #[error(transparent)]
    TenantId(#[from] TenantIdError),
    /// A SPIFFE ID that is not one.
    #[error(transparent)]
    SpiffeId(#[from] SpiffeIdError),
    /// A SPIFFE ID pattern that is not one.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// A DNS name or pattern that is not one.
    #[error(transparent)]
    DnsName(#[from] DnsNameError),
    /// A serial number that is not one.
    #[error(transparent)]
    Serial(#[from] SerialError),
    /// The issuance API could not be reached, or the exchange broke off.
    #[error("issuer {issuer}: {detail}")]
    IssuerUnreachable {
        /// `host:port`.
        issuer: String,
        /// What went wrong.
        detail: String,
    },
    /// The issuance API did not answer in time.
    #[error("issuer {issuer}: no answer within {timeout:?}")]
    IssuerTimeout {
        /// `host:port`.
        issuer: String,
        /// The time allowed.
        timeout: std::time::Duration,
    },
    /// The issuance API refused, with its stable code and public message.
    #[error("the CA refused ({status}, {code}): {message}")]
    IssuerRefused {
        /// The HTTP status.
        status: u16,
        /// The stable error code (`"-"` when the answer had none).
        code: String,
        /// The public message (`"-"` when the answer had none).
        message: String,
    },
    /// The issuance API answered something that is not a valid answer.
    #[error("issuer {issuer}: {detail}")]
    IssuerAnswer {
        /// `host:port`.
        issuer: String,
        /// What is wrong with the answer.
        detail: String,
    },
}

#[cfg(feature = "io")]
impl IdentityError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> IdentityError {
        let path = path.display().to_string();
        move |source| IdentityError::Io { path, source }
    }
}
