//! The log's head: its latest signed checkpoint, published outside the log directory (the
//! central store's `audit_heads` table, an off-box head file) so that cutting records off the
//! end of the log, checkpoints and all, can be seen: `verify` with an expected head fails when
//! the log ends before it.
//!
//! A head is the checkpoint record's exact line: it carries its own hash, the chain hash it
//! covers, and the signature, so whoever holds it can check it against the public key alone.

use std::fmt;
use std::path::PathBuf;

use crate::record::{check_line, parse_record, AuditRecord, RecordKind};
use crate::segment::list_segments;
use crate::signer::PublicKey;
use crate::sink::{local_limit, Cursor, SinkError};
use crate::verify::{check_checkpoint, verify_signature, VerifyError};
use crate::writer::AuditHandle;

/// A signed checkpoint published as the log's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    /// The node whose log it is.
    pub node: String,
    /// The checkpoint record's seq.
    pub seq: u64,
    /// The checkpoint record's hash.
    pub hash: String,
    /// The checkpoint record's line, exactly as written (without `\n`).
    pub line: String,
}

impl fmt::Display for AuditHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {} (hash {})", self.seq, self.hash)
    }
}

impl AuditHead {
    /// Reads a head from a checkpoint line (a head file's content, an `audit_heads` row): the
    /// line must match its own hash and be a checkpoint. Its signature is checked by
    /// [`AuditHead::verify`].
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim_end_matches(['\n', '\r']);
        check_line(line.as_bytes()).map_err(|e| format!("not an intact audit record: {e:?}"))?;
        let record =
            parse_record(line.as_bytes()).map_err(|e| format!("not an audit record: {e}"))?;
        AuditHead::of(&record, line)
            .ok_or_else(|| format!("record seq {} is not a checkpoint", record.seq))
    }

    /// The head a checkpoint record makes; None for other kinds.
    pub(crate) fn of(record: &AuditRecord, line: &str) -> Option<Self> {
        matches!(record.kind, RecordKind::Checkpoint(_)).then(|| AuditHead {
            node: record.node.clone(),
            seq: record.seq,
            hash: record.hash.clone(),
            line: line.to_owned(),
        })
    }

    /// Checks that the head is a checkpoint signed by `key` over the chain it names.
    pub fn verify(&self, key: &PublicKey) -> Result<(), VerifyError> {
        let bad = |detail: String| VerifyError::BadHead(format!("{self}: {detail}"));
        let record = parse_record(self.line.as_bytes()).map_err(|e| bad(e.to_string()))?;
        if record.seq != self.seq || record.hash != self.hash || record.node != self.node {
            return Err(bad("its fields do not match its line".into()));
        }
        if let RecordKind::Checkpoint(cp) = &record.kind {
            check_checkpoint(&record, cp).map_err(bad)?;
        }
        verify_signature(&record, key).map_err(bad)
    }
}

/// Follows a log for new signed checkpoints, to publish each as the head (to a head file).
/// Reads only records the writer has made durable, starting from the newest segment.
pub struct HeadTracker {
    cursor: Cursor,
    writer: Option<AuditHandle>,
    published: Option<u64>,
}

impl fmt::Debug for HeadTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadTracker")
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

impl HeadTracker {
    /// A tracker of the log in `dir`; with `writer`, only durable records are read.
    pub fn new(dir: impl Into<PathBuf>, writer: Option<AuditHandle>) -> Result<Self, SinkError> {
        let dir = dir.into();
        let start = list_segments(&dir)
            .map_err(|source| VerifyError::Io {
                path: dir.clone(),
                source,
            })?
            .last()
            .map_or(0, |s| s.first_seq);
        Ok(HeadTracker {
            cursor: Cursor::new(dir, start),
            writer,
            published: None,
        })
    }

    /// Reads what was written since the last call; returns the newest checkpoint found, if it
    /// is newer than the last one returned.
    pub fn poll(&mut self) -> Result<Option<AuditHead>, SinkError> {
        let mut newest = None;
        loop {
            let batch = self.cursor.read(1024, local_limit(self.writer.as_ref()))?;
            if batch.is_empty() {
                break;
            }
            if let Some(head) = batch.iter().rev().find_map(|(r, l)| AuditHead::of(r, l)) {
                newest = Some(head);
            }
        }
        let newest = newest.filter(|h| self.published.is_none_or(|p| h.seq > p));
        if let Some(h) = &newest {
            self.published = Some(h.seq);
        }
        Ok(newest)
    }
}
