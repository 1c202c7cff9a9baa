//! Verifying a log directory: every record's hash, every chain link, sequence continuity, and
//! every checkpoint and retention signature. The first bad record is named with its segment
//! file, line and seq, and what is wrong with it.
//!
//! What verification proves, and what it cannot:
//! - Any edited byte, removed, reordered or inserted record before the last checkpoint is
//!   detected; a rewrite of the whole chain from some point on is detected at the next
//!   checkpoint (its signature no longer matches), unless the attacker holds the signing key.
//! - Records after the last checkpoint are chained but not yet signed
//!   ([`VerifyReport::unsigned_tail`]). Cutting records off the end of the log, checkpoints and
//!   all, cannot be seen from the log alone: [`verify_dir_expecting`] compares the log with its
//!   head published elsewhere ([`AuditHead`]: the central store, a head file) and fails when
//!   the log ends before it or holds another record at its seq.
//! - A log that does not start at seq 0 must be anchored by a signed retention record naming
//!   the deleted records' last hash.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::head::AuditHead;
use crate::record::{check_line, parse_record, AuditRecord, LineFault, RecordKind, GENESIS_HASH};
use crate::record::{Checkpoint, Retention, SCHEMA_VERSION};
use crate::segment::{list_segments, LineReader, SegmentFile};
use crate::signer::PublicKey;

/// What is wrong with the first bad record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The record's bytes do not match its hash, or its hash is not the one the next record
    /// chains to: it was changed after being written.
    Edited,
    /// Records are missing before this one (its seq skips ahead, or the log starts after 0
    /// without a signed retention record).
    Removed,
    /// The record is genuine but out of order.
    Reordered,
    /// The record was not written by the log's writer at this place (it forks the chain).
    Inserted,
    /// A checkpoint or retention signature does not verify, or does not match the chain.
    BadSignature,
    /// The line is not a record at all (not JSON, no hash member, cut short).
    Malformed,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::Edited => "edited",
            Problem::Removed => "removed",
            Problem::Reordered => "reordered",
            Problem::Inserted => "inserted",
            Problem::BadSignature => "bad signature",
            Problem::Malformed => "malformed",
        })
    }
}

/// Where the first bad record is, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    /// Segment file name.
    pub segment: String,
    /// 1-based line in the segment.
    pub line: u64,
    /// The record's seq, if it could be read.
    pub seq: Option<u64>,
    /// The kind of problem.
    pub problem: Problem,
    /// Details for a person.
    pub detail: String,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.segment, self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}: {}", self.problem, self.detail)
    }
}

/// Verification did not pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The log could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record is bad; the first one is named.
    #[error("audit log fails verification at {0}")]
    Bad(Box<BadRecord>),
    /// The log ends before the expected head: records were cut off its end.
    #[error("{}", truncated(*.last_seq, .head))]
    Truncated {
        /// The log's last seq (None: no record at all).
        last_seq: Option<u64>,
        /// The head the log should reach.
        head: Box<AuditHead>,
    },
    /// The log's record at the expected head's seq is another record.
    #[error("the log's record at seq {} has hash {found}, the expected head has hash {}: the log was rewritten from there, or the head is another log's", .head.seq, .head.hash)]
    HeadMismatch {
        /// The head expected.
        head: Box<AuditHead>,
        /// The hash of the log's record at its seq.
        found: String,
    },
    /// The expected head is not a checkpoint signed by the given key.
    #[error("expected head {0}")]
    BadHead(String),
}

fn truncated(last_seq: Option<u64>, head: &AuditHead) -> String {
    let (ends, first_missing) = match last_seq {
        Some(n) => (format!("log ends at seq {n}"), n + 1),
        None => ("log holds no record".to_owned(), 0),
    };
    format!(
        "{ends}; expected head {head}: records {first_missing}..={} missing — truncated?",
        head.seq
    )
}

/// What a passing verification covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files read.
    pub segments: usize,
    /// Records verified.
    pub records: u64,
    /// First seq present (after retention, not 0).
    pub first_seq: Option<u64>,
    /// Last seq present.
    pub last_seq: Option<u64>,
    /// Hash of the last record (the chain head); genesis for an empty log.
    pub last_hash: String,
    /// Checkpoints whose signatures verified.
    pub checkpoints: u64,
    /// Records after the last checkpoint (chained, not yet signed).
    pub unsigned_tail: u64,
    /// Seq of the retention record that anchors a log not starting at 0.
    pub anchored_by: Option<u64>,
    /// Truncation records (torn tails cut on open).
    pub truncations: u64,
    /// Seq of the expected head, when the log holds it (with its hash); None when no head was
    /// expected or it precedes the log's first record (deleted by retention).
    pub matched_head: Option<u64>,
}

#[derive(Clone, Debug)]
struct Pos {
    seg: usize,
    segment: String,
    line: u64,
    seq: u64,
    hash: String,
    prev_hash: String,
}

struct Verifier<'a> {
    key: &'a PublicKey,
    segments: Vec<SegmentFile>,
    report: VerifyReport,
    start: Option<Pos>,
    prev: Option<Pos>,
    /// Hash of the last record of each segment seen, by seq (retention anchors point there).
    segment_ends: HashMap<u64, String>,
    /// Headers of every hash-valid line, built only once something is wrong.
    index: Option<Vec<Pos>>,
    /// The head the log must reach, and the hash of the log's record at its seq once seen.
    expect: Option<(&'a AuditHead, Option<String>)>,
}

/// Verifies the log in `dir` against the checkpoint signing key.
pub fn verify_dir(dir: &Path, key: &PublicKey) -> Result<VerifyReport, VerifyError> {
    verify(dir, key, None)
}

/// Verifies the log in `dir` as [`verify_dir`] does, and that it reaches `head` (the log's
/// latest signed checkpoint as published outside it, itself checked against `key`): a log that
/// ends before the head's seq was cut ([`VerifyError::Truncated`]); one holding another record
/// at that seq was rewritten ([`VerifyError::HeadMismatch`]).
pub fn verify_dir_expecting(
    dir: &Path,
    key: &PublicKey,
    head: &AuditHead,
) -> Result<VerifyReport, VerifyError> {
    head.verify(key)?;
    verify(dir, key, Some(head))
}

fn verify(
    dir: &Path,
    key: &PublicKey,
    head: Option<&AuditHead>,
) -> Result<VerifyReport, VerifyError> {
    let segments = list_segments(dir).map_err(|source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut v = Verifier {
        key,
        report: VerifyReport {
            segments: segments.len(),
            last_hash: GENESIS_HASH.to_string(),
            ..VerifyReport::default()
        },
        segments,
        start: None,
        prev: None,
        segment_ends: HashMap::new(),
        index: None,
        expect: head.map(|h| (h, None)),
    };
    v.run().map_err(|b| VerifyError::Bad(Box::new(b)))?;
    let Some((head, found)) = v.expect else {
        return Ok(v.report);
    };
    match found {
        Some(found) if found == head.hash => v.report.matched_head = Some(head.seq),
        Some(found) => {
            return Err(VerifyError::HeadMismatch {
                head: Box::new(head.clone()),
                found,
            })
        }
        None if v.report.last_seq.is_none_or(|last| last < head.seq) => {
            return Err(VerifyError::Truncated {
                last_seq: v.report.last_seq,
                head: Box::new(head.clone()),
            })
        }
        // The head's record was deleted by retention; the log goes on past it.
        None => {}
    }
    Ok(v.report)
}

fn io_bad(seg: &SegmentFile, e: std::io::Error) -> BadRecord {
    BadRecord {
        segment: seg.name.clone(),
        line: 0,
        seq: None,
        problem: Problem::Malformed,
        detail: format!("cannot read: {e}"),
    }
}

impl Verifier<'_> {
    fn run(&mut self) -> Result<(), BadRecord> {
        for si in 0..self.segments.len() {
            let seg = self.segments[si].clone();
            let mut reader = LineReader::open(&seg.path).map_err(|e| io_bad(&seg, e))?;
            while let Some(line) = reader.next_line().map_err(|e| io_bad(&seg, e))? {
                let bad = |seq, problem, detail: String| BadRecord {
                    segment: seg.name.clone(),
                    line: line.number,
                    seq,
                    problem,
                    detail,
                };
                if !line.complete {
                    return Err(bad(
                        None,
                        Problem::Malformed,
                        "incomplete last line (a torn write the writer has not yet recovered)"
                            .into(),
                    ));
                }
                let header = match check_line(&line.bytes) {
                    Ok(h) => h,
                    Err(LineFault::HashMismatch) => {
                        let seq = serde_json::from_slice::<serde_json::Value>(&line.bytes)
                            .ok()
                            .and_then(|v| v.get("seq").and_then(|s| s.as_u64()));
                        return Err(bad(
                            seq,
                            Problem::Edited,
                            "the record's bytes do not match its hash".into(),
                        ));
                    }
                    Err(LineFault::Malformed(m)) => return Err(bad(None, Problem::Malformed, m)),
                };
                if header.v != SCHEMA_VERSION {
                    return Err(bad(
                        Some(header.seq),
                        Problem::Malformed,
                        format!("unsupported schema version {}", header.v),
                    ));
                }
                let pos = Pos {
                    seg: si,
                    segment: seg.name.clone(),
                    line: line.number,
                    seq: header.seq,
                    hash: header.hash.clone(),
                    prev_hash: header.prev_hash.clone(),
                };
                self.link(&pos)?;
                if let Some((head, found)) = &mut self.expect {
                    if head.seq == pos.seq {
                        *found = Some(pos.hash.clone());
                    }
                }
                match header.kind.as_str() {
                    "checkpoint" | "retention" => self.check_signed(&pos, &line.bytes)?,
                    "truncation" => self.report.truncations += 1,
                    _ => {}
                }
                if header.kind == "checkpoint" {
                    self.report.checkpoints += 1;
                    self.report.unsigned_tail = 0;
                } else {
                    self.report.unsigned_tail += 1;
                }
                self.report.records += 1;
                self.report.first_seq.get_or_insert(pos.seq);
                self.report.last_seq = Some(pos.seq);
                self.report.last_hash = pos.hash.clone();
                self.prev = Some(pos);
            }
            if let Some(p) = &self.prev {
                self.segment_ends.insert(p.seq, p.hash.clone());
            }
        }
        if let Some(start) = &self.start {
            if start.seq > 0 && self.report.anchored_by.is_none() {
                return Err(at(
                    start,
                    Problem::Removed,
                    format!(
                        "the log starts at seq {} and no signed retention record accounts for seqs 0..={}",
                        start.seq,
                        start.seq - 1
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks that `pos` follows the previous record; classifies the break if not.
    fn link(&mut self, pos: &Pos) -> Result<(), BadRecord> {
        let Some(prev) = self.prev.clone() else {
            if pos.seq == 0 && pos.prev_hash != GENESIS_HASH {
                return Err(at(
                    pos,
                    Problem::Edited,
                    "seq 0 does not chain to the genesis hash".into(),
                ));
            }
            self.start = Some(pos.clone());
            return Ok(());
        };
        // A record claiming the last possible sequence number can have no successor.
        let Some(expected) = prev.seq.checked_add(1) else {
            return Err(at(
                pos,
                Problem::Edited,
                format!("follows seq {}, which cannot be followed", prev.seq),
            ));
        };
        if pos.seq == expected && pos.prev_hash == prev.hash {
            return Ok(());
        }
        if pos.seq == expected {
            return Err(at(
                &prev,
                Problem::Edited,
                format!(
                    "its hash is not the one the next record (seq {}) chains to",
                    pos.seq
                ),
            ));
        }
        let index = self.index();
        let later = |p: &Pos| (p.seg, p.line) > (pos.seg, pos.line);
        if pos.seq > expected {
            let continuation = index
                .iter()
                .any(|p| later(p) && p.seq == expected && p.prev_hash == prev.hash);
            if !continuation {
                return Err(at(
                    pos,
                    Problem::Removed,
                    format!(
                        "records seq {expected}..={} are missing before it",
                        pos.seq - 1
                    ),
                ));
            }
            let genuine = index
                .iter()
                .any(|p| p.seq.checked_add(1) == Some(pos.seq) && p.hash == pos.prev_hash);
            return Err(if genuine {
                at(
                    pos,
                    Problem::Reordered,
                    format!("seq {} is here but seq {expected} comes after it", pos.seq),
                )
            } else {
                at(
                    pos,
                    Problem::Inserted,
                    format!(
                        "seq {} chains to no record of the log; seq {expected} follows it",
                        pos.seq
                    ),
                )
            });
        }
        // pos.seq < expected: a second record claims a seq already passed. The one the rest of
        // the chain continues from is genuine; the other was inserted.
        let this_continued = index
            .iter()
            .any(|p| later(p) && Some(p.seq) == pos.seq.checked_add(1) && p.prev_hash == pos.hash);
        let earlier = index
            .iter()
            .find(|p| p.seq == pos.seq && (p.seg, p.line) < (pos.seg, pos.line));
        match earlier {
            Some(e) if this_continued && e.hash != pos.hash => Err(at(
                e,
                Problem::Inserted,
                format!(
                    "a second record with seq {} follows and the chain continues from that one",
                    pos.seq
                ),
            )),
            _ => Err(at(
                pos,
                Problem::Inserted,
                format!("seq {} again, after seq {}", pos.seq, prev.seq),
            )),
        }
    }

    fn index(&mut self) -> &[Pos] {
        if self.index.is_none() {
            let mut out = Vec::new();
            for (si, seg) in self.segments.iter().enumerate() {
                let Ok(mut reader) = LineReader::open(&seg.path) else {
                    continue;
                };
                while let Ok(Some(line)) = reader.next_line() {
                    if let Ok(h) = check_line(&line.bytes) {
                        out.push(Pos {
                            seg: si,
                            segment: seg.name.clone(),
                            line: line.number,
                            seq: h.seq,
                            hash: h.hash,
                            prev_hash: h.prev_hash,
                        });
                    }
                }
            }
            self.index = Some(out);
        }
        self.index.as_deref().unwrap_or_default()
    }

    fn check_signed(&mut self, pos: &Pos, line: &[u8]) -> Result<(), BadRecord> {
        let rec = parse_record(line).map_err(|e| {
            at(
                pos,
                Problem::Malformed,
                format!("signed record does not parse: {e}"),
            )
        })?;
        let sig_bad = |detail: String| at(pos, Problem::BadSignature, detail);
        if let RecordKind::Checkpoint(cp) = &rec.kind {
            check_checkpoint(&rec, cp).map_err(sig_bad)?;
            if cp.segment != pos.segment {
                return Err(at(
                    pos,
                    Problem::Reordered,
                    format!("checkpoint was written in {}", cp.segment),
                ));
            }
        }
        verify_signature(&rec, self.key).map_err(sig_bad)?;
        if let RecordKind::Retention(r) = &rec.kind {
            self.anchor(&rec.seq, r);
        }
        Ok(())
    }

    /// A verified retention record anchors the log's start if it names the deleted records'
    /// last hash: exactly the start's `prev_hash`, or (after a crash mid-deletion left more
    /// than it names deleted) the hash of a segment end still present.
    fn anchor(&mut self, seq: &u64, r: &Retention) {
        let Some(start) = &self.start else { return };
        let anchored = if r.through_seq.checked_add(1) == Some(start.seq) {
            r.through_hash == start.prev_hash
        } else if r.through_seq >= start.seq {
            self.segment_ends.get(&r.through_seq) == Some(&r.through_hash)
                || self
                    .prev
                    .as_ref()
                    .is_some_and(|p| p.seq == r.through_seq && p.hash == r.through_hash)
        } else {
            false
        };
        if anchored {
            self.report.anchored_by = Some(*seq);
        }
    }
}

/// A checkpoint must cover exactly the record before it.
pub(crate) fn check_checkpoint(rec: &AuditRecord, cp: &Checkpoint) -> Result<(), String> {
    if cp.through_seq.checked_add(1) != Some(rec.seq) || cp.chain_hash != rec.prev_hash {
        return Err(format!(
            "checkpoint claims seq {} / {} but follows seq {} / {}",
            cp.through_seq,
            cp.chain_hash,
            rec.seq.wrapping_sub(1),
            rec.prev_hash
        ));
    }
    Ok(())
}

/// Checks a checkpoint's or retention record's signature with `key` (other kinds pass).
pub(crate) fn verify_signature(rec: &AuditRecord, key: &PublicKey) -> Result<(), String> {
    let (algorithm, key_id, signature, msg) = match &rec.kind {
        RecordKind::Checkpoint(cp) => (
            &cp.algorithm,
            &cp.key_id,
            &cp.signature,
            Checkpoint::signed_message(
                &rec.node,
                &rec.time,
                &cp.segment,
                cp.through_seq,
                &cp.chain_hash,
            ),
        ),
        RecordKind::Retention(r) => (
            &r.algorithm,
            &r.key_id,
            &r.signature,
            Retention::signed_message(
                &rec.node,
                &rec.time,
                r.through_seq,
                &r.through_hash,
                &r.deleted_segments,
            ),
        ),
        _ => return Ok(()),
    };
    if *key_id != key.key_id() {
        return Err(format!(
            "signed by key {key_id}, not the given key {}",
            key.key_id()
        ));
    }
    let sig = hex::decode(signature).map_err(|_| "signature is not hex".to_owned())?;
    key.verify(algorithm, &msg, &sig)
        .map_err(|e| format!("{e} (the records it covers may have been rewritten)"))
}

fn at(pos: &Pos, problem: Problem, detail: String) -> BadRecord {
    BadRecord {
        segment: pos.segment.clone(),
        line: pos.line,
        seq: Some(pos.seq),
        problem,
        detail,
    }
}
