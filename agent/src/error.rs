//! The agent's errors: each names what to fix.

/// Why the agent could not start or keep going.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration file is unreadable or wrong.
    #[error("{path}: {detail}")]
    Config { path: String, detail: String },
    /// A file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The agent's own certificate could not be obtained.
    #[error("node certificate from {issuer}: {detail}")]
    NodeCertificate { issuer: String, detail: String },
    /// The Workload API server failed.
    #[error("Workload API: {0}")]
    Serve(String),
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.display().to_string(),
        source,
    }
}
