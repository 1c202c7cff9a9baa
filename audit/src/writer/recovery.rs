//! Opening a log directory: find the chain's head in the last segment and cut a torn tail.
//!
//! A crash can leave, at the end of the last segment, bytes of a batch that was never fsynced
//! (and so never acknowledged): a partial line, or zero-filled blocks. Those are cut. A record
//! that fails its hash or chain *followed by* records that pass theirs is not a crash artifact
//! but damage or tampering: the log is then left as it is and opening fails, so that
//! `portcullis audit verify` can name the record.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::engine::{create_segment, Active, ChainState};
use crate::error::AuditError;
use crate::record::{check_line, Truncation, GENESIS_HASH};
use crate::segment::{list_segments, segment_name, sync_dir, LineReader, SegmentFile};

pub(super) struct Recovered {
    pub(super) active: Active,
    pub(super) chain: ChainState,
    pub(super) truncation: Option<Truncation>,
}

/// The valid prefix of one segment.
struct Scan {
    valid_len: u64,
    file_len: u64,
    /// (seq, hash) of the last valid record.
    last: Option<(u64, String)>,
    /// Line number and reason of the first invalid line.
    first_bad: Option<(u64, String)>,
}

fn scan(seg: &SegmentFile) -> Result<Scan, AuditError> {
    let io = |e| AuditError::io(seg.path.display(), e);
    let mut reader = LineReader::open(&seg.path).map_err(io)?;
    let mut out = Scan {
        valid_len: 0,
        file_len: 0,
        last: None,
        first_bad: None,
    };
    let mut bad_is_artifact = true;
    while let Some(line) = reader.next_line().map_err(io)? {
        out.file_len = line.offset + line.bytes.len() as u64 + u64::from(line.complete);
        if out.first_bad.is_some() {
            if line.complete && check_line(&line.bytes).is_ok() && !bad_is_artifact {
                let (n, reason) = out.first_bad.clone().unwrap_or_default();
                return Err(AuditError::Corrupt {
                    segment: seg.name.clone(),
                    line: n,
                    reason: format!(
                        "{reason}, and valid records follow it (line {})",
                        line.number
                    ),
                });
            }
            continue;
        }
        let verdict = if !line.complete {
            Err("incomplete last line".to_string())
        } else {
            match check_line(&line.bytes) {
                Err(e) => Err(format!("invalid record: {e:?}")),
                Ok(h) => match &out.last {
                    None if h.seq != seg.first_seq => Err(format!(
                        "first record has seq {} but the segment starts at {}",
                        h.seq, seg.first_seq
                    )),
                    Some((seq, hash)) if h.seq != seq + 1 || &h.prev_hash != hash => {
                        Err(format!("record seq {} does not follow seq {seq}", h.seq))
                    }
                    _ => Ok((h.seq, h.hash)),
                },
            }
        };
        match verdict {
            Ok(last) => {
                out.last = Some(last);
                out.valid_len = out.file_len;
            }
            Err(reason) => {
                // Blocks the kernel allocated but never filled read back as zeros; JSON never
                // holds a raw NUL, so a line with one is a crash artifact, not an edit.
                bad_is_artifact = line.bytes.contains(&0) || !line.complete;
                out.first_bad = Some((line.number, reason));
            }
        }
    }
    Ok(out)
}

/// Takes the directory's writer lock (`.lock`, an advisory `flock` held for the writer's
/// life, released by the kernel when the process ends however it ends).
pub(super) fn lock(dir: &Path) -> Result<fs::File, AuditError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| AuditError::io(dir.display(), e))?;
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| AuditError::io(path.display(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(AuditError::InUse(dir.display().to_string())),
        Err(fs::TryLockError::Error(e)) => Err(AuditError::io(path.display(), e)),
    }
}

pub(super) fn recover(dir: &Path, clock: fn() -> SystemTime) -> Result<Recovered, AuditError> {
    let dir_io = |e| AuditError::io(dir.display(), e);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(dir_io)?;
    let segments = list_segments(dir).map_err(dir_io)?;
    let Some(last) = segments.last() else {
        let name = segment_name(0);
        let path = dir.join(&name);
        let file = create_segment(&path).map_err(|e| AuditError::io(path.display(), e))?;
        sync_dir(dir).map_err(dir_io)?;
        return Ok(Recovered {
            active: Active { file, name, len: 0 },
            chain: ChainState {
                next_seq: 0,
                last_hash: GENESIS_HASH.to_string(),
            },
            truncation: None,
        });
    };
    let scan_last = scan(last)?;
    let chain = match &scan_last.last {
        Some((seq, hash)) => ChainState {
            next_seq: seq + 1,
            last_hash: hash.clone(),
        },
        None => head_before(&segments, last)?,
    };
    let mut truncation = None;
    if scan_last.valid_len < scan_last.file_len {
        let cut = scan_last.file_len - scan_last.valid_len;
        let saved_as = save_tail(dir, last, scan_last.valid_len, clock)?;
        let f = OpenOptions::new()
            .write(true)
            .open(&last.path)
            .map_err(|e| AuditError::io(last.path.display(), e))?;
        f.set_len(scan_last.valid_len)
            .and_then(|()| f.sync_all())
            .map_err(|e| AuditError::io(last.path.display(), e))?;
        truncation = Some(Truncation {
            segment: last.name.clone(),
            from_seq: chain.next_seq,
            bytes: cut,
            saved_as,
        });
    }
    let file = OpenOptions::new()
        .append(true)
        .open(&last.path)
        .map_err(|e| AuditError::io(last.path.display(), e))?;
    Ok(Recovered {
        active: Active {
            file,
            name: last.name.clone(),
            len: scan_last.valid_len,
        },
        chain,
        truncation,
    })
}

/// The chain head when the last segment holds no valid record: the previous segment's last
/// record (it must be intact), or genesis for a log that starts at 0.
fn head_before(segments: &[SegmentFile], last: &SegmentFile) -> Result<ChainState, AuditError> {
    let corrupt = |reason: String| AuditError::Corrupt {
        segment: last.name.clone(),
        line: 1,
        reason,
    };
    if segments.len() < 2 {
        if last.first_seq == 0 {
            return Ok(ChainState {
                next_seq: 0,
                last_hash: GENESIS_HASH.to_string(),
            });
        }
        return Err(corrupt(
            "the only segment holds no valid record and does not start at seq 0".into(),
        ));
    }
    let prev = &segments[segments.len() - 2];
    let s = scan(prev)?;
    if let Some((line, reason)) = s.first_bad {
        return Err(AuditError::Corrupt {
            segment: prev.name.clone(),
            line,
            reason,
        });
    }
    match s.last {
        Some((seq, hash)) if seq + 1 == last.first_seq => Ok(ChainState {
            next_seq: seq + 1,
            last_hash: hash,
        }),
        _ => Err(corrupt(format!(
            "previous segment {} does not end just before seq {}",
            prev.name, last.first_seq
        ))),
    }
}

/// Saves the bytes about to be cut to `<segment>.torn-<unix secs>` for forensics.
fn save_tail(
    dir: &Path,
    seg: &SegmentFile,
    from: u64,
    clock: fn() -> SystemTime,
) -> Result<Option<String>, AuditError> {
    let bytes = fs::read(&seg.path).map_err(|e| AuditError::io(seg.path.display(), e))?;
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    let secs = clock()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for n in 0..100u32 {
        let name = if n == 0 {
            format!("{}.torn-{secs}", seg.name)
        } else {
            format!("{}.torn-{secs}-{n}", seg.name)
        };
        let path = dir.join(&name);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        let mut f: File = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(AuditError::io(path.display(), e)),
        };
        f.write_all(&bytes[start..])
            .and_then(|()| f.sync_all())
            .map_err(|e| AuditError::io(path.display(), e))?;
        return Ok(Some(name));
    }
    Ok(None)
}
