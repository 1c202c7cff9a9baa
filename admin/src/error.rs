//! The crate's error type (operator-facing: startup, config, stores). What API callers see is
//! in `api`'s fixed public bodies, never these messages.

use portcullis_ca::CaError;

/// Errors of the admin server, its configuration and its stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The admin configuration is invalid.
    #[error("admin configuration {path}: {detail}")]
    Config { path: String, detail: String },
    /// The certificate authority failed (open, issue, revoke).
    #[error("certificate authority: {0}")]
    Ca(#[from] CaError),
    /// The TLS setup failed (certificate, key, trust bundle, CRL).
    #[error("TLS: {0}")]
    Tls(String),
    /// The bootstrap token store failed.
    #[error("token store {path}: {detail}")]
    TokenStore { path: String, detail: String },
    /// The PostgreSQL store could not be reached, migrated or configured.
    #[error("admin store: {0}")]
    Store(String),
    /// The listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The socket systemd passed (socket activation) is not the one the config listens on.
    #[error("socket activation: {0}")]
    SocketActivation(String),
    /// A bad argument (CLI or library call).
    #[error("{0}")]
    Invalid(String),
    /// The system random generator failed.
    #[error("randomness unavailable")]
    Random,
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AdminError + '_ {
    move |source| AdminError::Io {
        path: path.display().to_string(),
        source,
    }
}
