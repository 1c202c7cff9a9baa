//! Tamper-evident, durable audit log for Portcullis.
//!
//! Every request decision, CA event, admin action and config reload becomes one
//! [`AuditRecord`]: a line of JSON in an append-only segment file, carrying the SHA-256 hash of
//! the record before it (see [`record`](crate::AuditRecord) for the exact bytes hashed). Every
//! N records or T seconds the writer appends a [`Checkpoint`] signed by a [`Signer`] (the HSM
//! in production). [`verify_dir`] proves a log untouched or names the first bad record.
//! [`PgSink`] ships the log to PostgreSQL (over verified TLS, [`CentralStore`]), keyed by
//! `(node, seq)`, confirming every row by hash, and publishes the latest signed checkpoint as
//! the log's [`AuditHead`], which [`verify_dir_expecting`] compares the log with.
//!
//! # Writing
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use portcullis_audit::*;
//! let signer = Arc::new(SoftwareSigner::load_or_create("/var/lib/portcullis/audit.key".as_ref())?);
//! let log = AuditLog::open(AuditConfig::new("/var/lib/portcullis/audit", "gw-1"), signer)?;
//! let audit = log.handle();
//! let durable = audit.append_durable(RequestEvent { request_id: "r1".into(), ..Default::default() })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Producers hand records to one writer thread over two bounded queues: one for records a
//! producer waits on ([`AuditHandle::append`], [`AuditHandle::append_durable`],
//! [`AuditHandle::append_durable_async`]; the gateway's admission records), one for records
//! nothing waits on ([`AuditHandle::try_append`]), so that the second kind cannot crowd out the
//! first. The writer takes what is queued (the waited-on queue first, up to `max_batch` from
//! each), assigns sequence numbers in that order, chains and encodes the records, writes them
//! with one `write` and makes them durable with one `fdatasync` (group commit), then
//! acknowledges every record of the batch at once.
//!
//! # What "acknowledged" means
//!
//! A record is **acknowledged** when [`Ack::wait`] / `.await` on the [`Ack`],
//! [`AuditHandle::append_durable`] or [`AuditHandle::append_durable_async`] returns
//! `Ok(Durable { seq })`. That happens only after the batch holding the record, and every
//! record before it, was written to the segment file and `fdatasync` returned success (and, for
//! a new segment, the directory was fsynced). An acknowledged record therefore survives a
//! process kill (`kill -9`) and an OS crash or power loss on storage that honours flushes; on
//! reopen it is present and chained, in the same place.
//!
//! Returning from [`AuditHandle::append`] is **not** an acknowledgement: the record is only
//! queued in memory and is lost if the process dies before its batch is fsynced.
//!
//! - [`DurabilityMode::FailClosed`]: the caller must not let the audited action take effect
//!   (the gateway answers 503) unless the record was acknowledged within
//!   [`AuditConfig::durable_timeout`]. Queue full for the whole bound → [`AuditError::QueueFull`];
//!   write or fsync failed → [`AuditError::WriteFailed`] (the record is not in the log);
//!   no answer within the bound → [`AuditError::Timeout`] (the record may still be written
//!   later: the log holds every acknowledged record and may hold some that timed out).
//!   At the byte budget ([`AuditConfig::max_bytes`]) → [`AuditError::OverBudget`].
//!   Any of these turns [`AuditHandle::healthy`] false (readiness: unready) until the next
//!   batch is made durable (for the budget: until retention frees room).
//! - [`DurabilityMode::BestEffort`]: producers never wait for the disk (they may still wait on
//!   an `Ack` if they choose). A record that does not fit in the queue or the byte budget, or
//!   whose batch fails to be written, is dropped and counted in [`AuditHandle::dropped`]. Records that were
//!   acknowledged have exactly the fail-closed guarantee; records merely queued have none.
//!
//! After a crash, the torn tail of the last segment (bytes of a batch that was never
//! acknowledged) is cut on open, saved beside the segment as `<segment>.torn-<unix time>`, and a
//! [`Truncation`] record says what was cut; the chain continues from the last intact record.
//!
//! # Files
//!
//! `DIR/segment-<first seq, 20 digits>.log`, JSON lines, a new segment once one reaches
//! [`AuditConfig::segment_bytes`]. [`AuditHandle::apply_retention`] deletes whole old segments
//! after appending a signed [`Retention`] record, so what remains still verifies. With
//! [`AuditConfig::max_bytes`] the writer keeps the segments' total within a budget (counted at
//! open, after each batch and after retention; [`WriterStats::disk_bytes`]).

mod error;
mod head;
mod query;
mod record;
mod segment;
mod signer;
mod sink;
mod store;
mod verify;
mod writer;

pub use error::AuditError;
pub use head::{AuditHead, HeadTracker};
pub use query::{query, tail, QueryFilter, Records};
pub use record::{
    audit_path, AbuseCaller, AbuseSummary, AdminAction, AuditEvent, AuditRecord, CaAction, CaEvent,
    Checkpoint, ConfigReload, Decision, DlpFinding, ListenerAbuse, PersonFacts, RateLimitOutcome,
    RecordKind, RequestEvent, RequestStage, Retention, SuppressedRefusals, SuppressedSource,
    TruncatedPath, Truncation, GENESIS_HASH, SCHEMA_VERSION,
};
pub use signer::{
    key_id, publish_public_key, PublicKey, SignatureAlgorithm, Signer, SignerError, SoftwareSigner,
    P256_SPKI_PREFIX,
};
pub use sink::{with_causes, PgSink, PgSinkConfig, SinkError, SinkStats, TABLE_DDL};
pub use store::{CentralStore, StoreTls};
pub use verify::{verify_dir, verify_dir_expecting, BadRecord, Problem, VerifyError, VerifyReport};
pub use writer::{
    default_node, Ack, AuditConfig, AuditHandle, AuditLog, DurabilityMode, Durable,
    RetentionOutcome, WriterStats, OWN_RECORDS_RESERVE,
};
