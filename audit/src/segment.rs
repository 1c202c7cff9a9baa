//! Segment files: naming, listing, and reading lines with their positions.
//!
//! A log directory holds `segment-<first seq, 20 digits>.log` files, each a run of JSON lines
//! whose first record has the sequence number in the name. Other files (saved torn tails, keys)
//! are ignored.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

/// A segment file in a log directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub(crate) path: PathBuf,
    pub(crate) name: String,
    pub(crate) first_seq: u64,
}

pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("segment-{first_seq:020}.log")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("segment-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The directory's segments, oldest first.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_seq) = parse_segment_name(name) {
            out.push(SegmentFile {
                path: entry.path(),
                name: name.to_string(),
                first_seq,
            });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// One line of a segment file.
#[derive(Debug)]
pub(crate) struct RawLine {
    /// 1-based line number.
    pub(crate) number: u64,
    /// Byte offset of the line's start.
    pub(crate) offset: u64,
    /// The line without its `\n`.
    pub(crate) bytes: Vec<u8>,
    /// Whether the line ended with `\n` (the last line of a torn file may not).
    pub(crate) complete: bool,
}

/// Reads a segment's lines in order.
pub(crate) struct LineReader {
    inner: BufReader<File>,
    number: u64,
    offset: u64,
}

impl LineReader {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        Ok(LineReader {
            inner: BufReader::with_capacity(1 << 16, File::open(path)?),
            number: 0,
            offset: 0,
        })
    }

    pub(crate) fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        let mut bytes = Vec::new();
        let n = self.inner.read_until(b'\n', &mut bytes)?;
        if n == 0 {
            return Ok(None);
        }
        let complete = bytes.last() == Some(&b'\n');
        if complete {
            bytes.pop();
        }
        self.number += 1;
        let line = RawLine {
            number: self.number,
            offset: self.offset,
            bytes,
            complete,
        };
        self.offset += n as u64;
        Ok(Some(line))
    }
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_name(42), "segment-00000000000000000042.log");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("segment-42.log"), None);
        assert_eq!(
            parse_segment_name("segment-00000000000000000042.log.torn"),
            None
        );
    }
}
