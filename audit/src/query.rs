//! Reading records back for people: `tail` and filtered `query` (the CLI prints them as JSON
//! lines). These read; they do not verify (use [`crate::verify_dir`] for that).

use std::collections::VecDeque;
use std::path::Path;
use std::time::SystemTime;

use crate::record::{parse_record, AuditRecord, Decision, RecordKind};
use crate::segment::{list_segments, LineReader, SegmentFile};
use crate::verify::{BadRecord, Problem, VerifyError};

/// Which records [`query`] returns. Every field set must match; unset fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryFilter {
    /// Tenant of a request or admin action.
    pub tenant: Option<String>,
    /// Identity: a request's caller, a CA event's requester or subject, an admin's actor.
    pub identity: Option<String>,
    /// Records stamped at or after this time.
    pub since: Option<SystemTime>,
    /// Records stamped before this time.
    pub until: Option<SystemTime>,
    /// A request's decision.
    pub decision: Option<Decision>,
}

impl QueryFilter {
    /// Whether `r` matches.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        if self.since.is_some() || self.until.is_some() {
            let Ok(t) = humantime::parse_rfc3339_weak(&r.time) else {
                return false;
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        let (tenant, identities, decision): (Option<&str>, Vec<&str>, Option<Decision>) =
            match &r.kind {
                RecordKind::Request(e) => (
                    e.tenant.as_deref(),
                    e.identity.as_deref().into_iter().collect(),
                    Some(e.decision),
                ),
                RecordKind::Ca(e) => (
                    None,
                    std::iter::once(e.requester.as_str())
                        .chain(e.subject.as_deref())
                        .collect(),
                    None,
                ),
                RecordKind::Admin(e) => (e.tenant.as_deref(), vec![e.actor.as_str()], None),
                _ => (None, Vec::new(), None),
            };
        if let Some(want) = &self.tenant {
            if tenant != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(want) = &self.identity {
            if !identities.contains(&want.as_str()) {
                return false;
            }
        }
        if let Some(want) = self.decision {
            if decision != Some(want) {
                return false;
            }
        }
        true
    }
}

/// Records of a log directory in order, filtered.
pub struct Records {
    segments: std::vec::IntoIter<SegmentFile>,
    current: Option<(SegmentFile, LineReader)>,
    filter: QueryFilter,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Iterator for Records {
    type Item = Result<AuditRecord, VerifyError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let seg = self.segments.next()?;
                match LineReader::open(&seg.path) {
                    Ok(r) => self.current = Some((seg, r)),
                    Err(source) => {
                        return Some(Err(VerifyError::Io {
                            path: seg.path,
                            source,
                        }))
                    }
                }
            }
            let (seg, reader) = self.current.as_mut()?;
            match reader.next_line() {
                Err(source) => {
                    let path = seg.path.clone();
                    self.current = None;
                    return Some(Err(VerifyError::Io { path, source }));
                }
                Ok(None) => self.current = None,
                // A torn last line is not a record (the writer cuts it on open).
                Ok(Some(line)) if !line.complete => self.current = None,
                Ok(Some(line)) => match parse_record(&line.bytes) {
                    Ok(r) if self.filter.matches(&r) => return Some(Ok(r)),
                    Ok(_) => {}
                    Err(e) => {
                        return Some(Err(VerifyError::Bad(Box::new(BadRecord {
                            segment: seg.name.clone(),
                            line: line.number,
                            seq: None,
                            problem: Problem::Malformed,
                            detail: format!("not a record: {e}"),
                        }))))
                    }
                },
            }
        }
    }
}

/// Every record of the log in `dir` matching `filter`, oldest first.
pub fn query(dir: &Path, filter: QueryFilter) -> Result<Records, VerifyError> {
    let segments = list_segments(dir).map_err(|source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(Records {
        segments: segments.into_iter(),
        current: None,
        filter,
    })
}

/// The last `n` records of the log in `dir`, oldest first.
pub fn tail(dir: &Path, n: usize) -> Result<Vec<AuditRecord>, VerifyError> {
    let segments = list_segments(dir).map_err(|source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out: VecDeque<AuditRecord> = VecDeque::new();
    // Read whole segments from the newest back until `n` records are found.
    for seg in segments.into_iter().rev() {
        if out.len() >= n {
            break;
        }
        let records = Records {
            segments: vec![seg].into_iter(),
            current: None,
            filter: QueryFilter::default(),
        };
        let mut these = records.collect::<Result<Vec<_>, _>>()?;
        while let Some(r) = these.pop() {
            if out.len() >= n {
                break;
            }
            out.push_front(r);
        }
    }
    Ok(out.into())
}
