//! The data plane of Portcullis, on pingora: mTLS listeners that establish the caller's
//! identity, routing and access decisions (from `portcullis-policy`), upstream pools, header
//! hygiene, metrics, reload and graceful shutdown.

// Nothing a peer or an operator sends may panic the data plane.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod abuse;
mod access_log;
mod admission;
mod assertion;
mod audit;
mod authn;
mod bundles;
mod connections;
mod echo;
mod fairness;
mod follow;
mod forwarding;
mod identity;
mod inspect;
mod limits;
mod metrics;
mod proxy;
mod record;
mod reload;
mod renew;
mod server;
mod snapshot;
mod tls;
mod traces;
mod upgrade;
mod upstream;

use std::path::Path;
use std::sync::Arc;

pub use admission::{
    Admission, Admitted, Bearer, BodyPlan, HeadSize, Refusal, RequestHead, Target, Verdict,
};
pub use audit::central_store;
pub use echo::serve_echo;
pub use inspect::{BodyFormat, Coding, Codings, Content, Unscanned};
pub use limits::LimitExceeded;
pub use portcullis_identity::install_crypto_provider;
pub use server::{check, load_config, serve, ServeOptions};

/// Makes the audit checkpoint signer for the configured key. The binary supplies it (from the
/// CA's key backends), so the gateway never touches key material.
pub type AuditSigners = dyn Fn(&portcullis_policy::AuditKey) -> Result<Arc<dyn portcullis_audit::Signer>, String>
    + Send
    + Sync;

/// Everything that can stop the gateway from starting or a config from being applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The config file failed validation; the message names file, line and problem.
    #[error("{0}")]
    Config(portcullis_policy::ConfigError),
    /// A file the config refers to could not be read.
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    /// Certificates, keys or trust bundles that rustls refused.
    #[error("TLS: {0}")]
    Tls(String),
    /// An upstream pool could not be built.
    #[error("{0}")]
    Upstream(String),
    /// A listening address is taken or not ours to bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("signal handling: {0}")]
    Signal(String),
    /// Handing the listening sockets over to a new gateway failed.
    #[error("upgrade: {0}")]
    Upgrade(String),
    /// The listening sockets systemd passed (socket activation) do not fit the config.
    #[error("socket activation: {0}")]
    SocketActivation(String),
    /// The policy bundle kept from the admin plane cannot be used.
    #[error("policy bundle: {0}")]
    PolicyBundle(String),
    /// The audit log could not be opened (unwritable directory, bad key, missing secret).
    #[error("audit: {0}")]
    Audit(String),
    /// The audit log directory has a writer already (another gateway, or the one an upgrade
    /// replaces, still draining).
    #[error("audit: the log in {0} is in use by another writer; one log, one writer")]
    AuditInUse(String),
    /// An identity provider's settings could not be used (trust anchors, issuer, thread).
    #[error("identity provider: {0}")]
    IdentityProvider(String),
    /// The trace exporter could not be started.
    #[error("tracing: {0}")]
    Tracing(String),
    /// The fleet's revocation set could not be loaded or followed (cache, etcd TLS files).
    #[error("fleet: {0}")]
    Fleet(String),
}

impl From<portcullis_identity::IdentityError> for GatewayError {
    fn from(e: portcullis_identity::IdentityError) -> Self {
        match e {
            portcullis_identity::IdentityError::Io { path, source } => {
                GatewayError::File { path, source }
            }
            other => GatewayError::Tls(other.to_string()),
        }
    }
}

impl GatewayError {
    fn file(path: &Path, source: std::io::Error) -> Self {
        GatewayError::File {
            path: path.display().to_string(),
            source,
        }
    }
}
