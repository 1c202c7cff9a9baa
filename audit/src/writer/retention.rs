//! Retention: delete the oldest whole segments, after recording (signed) what goes.
//!
//! Order matters for crash safety: the signed [`Retention`] record is made durable first, then
//! the files are deleted oldest first, then the directory is fsynced. A crash in between leaves
//! either more segments than the record names (verification still passes: the log then starts
//! at an older record) or exactly what it names.

use std::fs;
use std::time::Duration;

use super::engine::Engine;
use crate::error::AuditError;
use crate::record::{check_line, RecordKind, Retention};
use crate::segment::{list_segments, sync_dir, LineReader, SegmentFile};

/// What a retention pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segment files deleted, oldest first.
    pub deleted_segments: Vec<String>,
    /// The last seq deleted, if any were.
    pub through_seq: Option<u64>,
    /// Seq of the signed retention record written, if any segment was deleted.
    pub record_seq: Option<u64>,
    /// Segments old enough to delete but kept: they hold records at or after `keep_from_seq`
    /// (the central store has not confirmed them).
    pub held_unconfirmed: usize,
}

pub(super) fn apply(
    engine: &mut Engine,
    max_age: Duration,
    keep_from_seq: Option<u64>,
) -> Result<RetentionOutcome, AuditError> {
    let dir = engine.cfg.dir.clone();
    let dir_io = |e| AuditError::io(dir.display(), e);
    let (now, time) = engine.now();
    let segments = list_segments(&dir).map_err(dir_io)?;
    let mut doomed: Vec<&SegmentFile> = Vec::new();
    let mut held_unconfirmed = 0;
    for pair in segments.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        if seg.name == engine.active.name {
            break;
        }
        let modified = fs::metadata(&seg.path)
            .and_then(|m| m.modified())
            .map_err(|e| AuditError::io(seg.path.display(), e))?;
        if now.duration_since(modified).unwrap_or(Duration::ZERO) < max_age {
            break;
        }
        // Old enough, but not confirmed in the central store: kept, and so is every later one.
        let last_seq = next.first_seq.saturating_sub(1);
        if held_unconfirmed > 0 || keep_from_seq.is_some_and(|k| last_seq >= k) {
            held_unconfirmed += 1;
            continue;
        }
        doomed.push(seg);
    }
    if held_unconfirmed > 0 {
        tracing::warn!(
            audit.held_segments = held_unconfirmed,
            audit.keep_from_seq = keep_from_seq,
            "audit log: retention keeps segments past their age: the central store has not confirmed them"
        );
    }
    let Some(first_kept) = segments.get(doomed.len()).filter(|_| !doomed.is_empty()) else {
        return Ok(RetentionOutcome {
            held_unconfirmed,
            ..RetentionOutcome::default()
        });
    };
    let through_seq = first_kept.first_seq.saturating_sub(1);
    let through_hash = first_prev_hash(first_kept)?.unwrap_or_else(|| {
        // The first kept segment is the (empty) active one: the chain head is the last deleted.
        engine.chain.last_hash.clone()
    });
    let names: Vec<String> = doomed.iter().map(|s| s.name.clone()).collect();
    let msg =
        Retention::signed_message(&engine.cfg.node, &time, through_seq, &through_hash, &names);
    let signature = engine
        .signer
        .sign(&msg)
        .map_err(|e| AuditError::Signer(e.to_string()))?;
    let record = Retention {
        deleted_segments: names.clone(),
        through_seq,
        through_hash,
        algorithm: engine.signer.algorithm().name().to_string(),
        key_id: engine.key_id().to_string(),
        signature: hex::encode(signature),
    };
    let record_seq = engine.push_durable(&time, RecordKind::Retention(record))?;
    for seg in &doomed {
        fs::remove_file(&seg.path).map_err(|e| AuditError::io(seg.path.display(), e))?;
    }
    sync_dir(&dir).map_err(dir_io)?;
    tracing::info!(
        audit.deleted = names.len(),
        audit.through_seq = through_seq,
        "audit log: retention deleted old segments"
    );
    Ok(RetentionOutcome {
        deleted_segments: names,
        through_seq: Some(through_seq),
        record_seq: Some(record_seq),
        held_unconfirmed,
    })
}

/// `prev_hash` of a segment's first record (None for an empty segment).
fn first_prev_hash(seg: &SegmentFile) -> Result<Option<String>, AuditError> {
    let io = |e| AuditError::io(seg.path.display(), e);
    let mut reader = LineReader::open(&seg.path).map_err(io)?;
    let Some(line) = reader.next_line().map_err(io)? else {
        return Ok(None);
    };
    let header = check_line(&line.bytes).map_err(|e| AuditError::Corrupt {
        segment: seg.name.clone(),
        line: 1,
        reason: format!("{e:?}"),
    })?;
    Ok(Some(header.prev_hash))
}
