//! The recorded traffic: request records of the gateways' audit logs (`policies.traffic`),
//! read for impact analysis and reports.

use std::path::PathBuf;

use portcullis_audit::{QueryFilter, RecordKind, RequestEvent, RequestStage};

/// What a read of the logs met besides the records.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Read {
    /// Configured logs that do not exist (yet): read as empty.
    pub(crate) missing: u64,
    /// The read stopped at its bound.
    pub(crate) truncated: bool,
}

/// Calls `f` with each completed request record (and its time) of `logs` matching `filter`,
/// reading at most `max` records in all.
pub(crate) fn each_request(
    logs: &[PathBuf],
    filter: &QueryFilter,
    max: u64,
    mut f: impl FnMut(&str, RequestEvent),
) -> Result<Read, String> {
    let mut read = Read::default();
    let mut seen = 0u64;
    for dir in logs {
        if !dir.exists() {
            read.missing += 1;
            continue;
        }
        let records = portcullis_audit::query(dir, filter.clone())
            .map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for record in records {
            let record = record.map_err(|e| format!("reading {}: {e}", dir.display()))?;
            seen += 1;
            if seen > max {
                read.truncated = true;
                return Ok(read);
            }
            if let RecordKind::Request(event) = record.kind {
                // Fail-closed mode writes an `admitted` record before the `completed` one.
                if event.stage != RequestStage::Admitted {
                    f(&record.time, event);
                }
            }
        }
    }
    Ok(read)
}
