//! The crate's error type for writing the log.

use std::sync::Arc;
use std::time::Duration;

/// Why a record was not made durable, or why the log could not be opened.
///
/// Cloneable: one write failure is reported to every producer whose record was in the batch.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file operation failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The queue to the writer is full (best-effort: the record was dropped and counted;
    /// fail-closed: it stayed full for the whole bound).
    #[error("audit queue full: record not accepted")]
    QueueFull,
    /// The log's segments have reached [`crate::AuditConfig::max_bytes`]: the record was not
    /// written (best-effort: dropped and counted; fail-closed: the caller refuses). Retention
    /// deleting old segments makes room again.
    #[error("audit log at its disk budget of {max_bytes} bytes: record not written")]
    OverBudget {
        /// The budget.
        max_bytes: u64,
    },
    /// The record was queued but not confirmed durable within the bound. It may still be
    /// written later: the log holds every acknowledged record and possibly some that were not.
    #[error("audit record not durable within {0:?}")]
    Timeout(Duration),
    /// The writer could not write or fsync the batch holding the record; the record is not in
    /// the log.
    #[error("audit record not written: {0}")]
    WriteFailed(String),
    /// The writer has stopped (the log was closed).
    #[error("audit writer has stopped")]
    Closed,
    /// Opening found damage that is not a torn tail (a record that fails its hash followed by
    /// valid ones); the log is left untouched for `portcullis audit verify`.
    #[error("audit segment {segment} line {line}: {reason}; refusing to open (run `portcullis audit verify`)")]
    Corrupt {
        /// Segment file name.
        segment: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The signer failed (checkpoint or retention record not written).
    #[error("audit signer: {0}")]
    Signer(String),
    /// A record could not be encoded.
    #[error("encoding audit record: {0}")]
    Encode(String),
    /// The configuration is invalid.
    #[error("audit config: {0}")]
    Config(String),
    /// Another process (or another log in this one) has the directory open: two writers would
    /// interleave records and break the hash chain.
    #[error("audit log {0} is in use by another writer (its .lock is held); one log, one writer")]
    InUse(String),
}

impl AuditError {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.to_string(),
            source: Arc::new(source),
        }
    }
}
