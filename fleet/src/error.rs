//! The fleet crate's errors.

/// What can go wrong talking to the fleet's store or keeping its state on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// etcd could not be reached or answered with an error.
    #[error("etcd: {0}")]
    Store(String),
    /// The watch ended: a compaction passed its revision, or the stream was cut.
    #[error("etcd watch ended: {0}")]
    WatchEnded(String),
    /// A local file (spool, cache, TLS material) could not be read or written.
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
}

impl FleetError {
    pub(crate) fn file(path: &std::path::Path, detail: impl std::fmt::Display) -> Self {
        Self::File {
            path: path.display().to_string(),
            detail: detail.to_string(),
        }
    }
}

impl From<etcd_client::Error> for FleetError {
    fn from(e: etcd_client::Error) -> Self {
        Self::Store(e.to_string())
    }
}
