//! The PostgreSQL sink: ships the local log to a central `audit_records` table.
//!
//! The local log is the spool. The sink trusts nothing the store says about what it holds
//! until it has compared hashes: for every batch it reads back the rows already stored for the
//! batch's seqs, compares each one's hash with the local record's, inserts the missing ones
//! (`ON CONFLICT (node, seq) DO NOTHING`) and counts the batch confirmed only when every seq is
//! stored with the local hash. A stored row with another hash is the alarm
//! ([`SinkError::Mismatch`], [`SinkStats::mismatch`]): shipping stops until a person looks.
//! Rows stored beyond the log's head (a forged `(node, 2^62)`, or a log cut short) are an alarm
//! too ([`SinkStats::store_ahead`]), never a reason to skip: the sink resumes from what it has
//! confirmed itself. After a restart that is the start of the local log (rows already there
//! are compared, not sent again); after a reconnection, its own watermark, unless the store
//! has lost rows below it since. Only durable records are shipped (those below the writer's
//! durable watermark), so a record cut from a torn tail on restart can never have reached the
//! store.
//!
//! When a batch holding a signed checkpoint is confirmed, the checkpoint is published as the
//! node's head in `audit_heads` (see [`crate::AuditHead`]), so `verify` can tell a log cut off
//! at its end.
//!
//! Retention must not delete what is not confirmed: pass [`SinkStats::confirmed_next_seq`] as
//! `keep_from_seq` to [`crate::AuditHandle::apply_retention`].

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::head::AuditHead;
use crate::record::{parse_record, AuditRecord, RecordKind};
use crate::segment::{list_segments, segment_name, LineReader, SegmentFile};
use crate::store::CentralStore;
use crate::verify::VerifyError;
use crate::writer::AuditHandle;

/// How often a caught-up sink asks whether the store holds rows beyond the log's head.
const AHEAD_CHECK_EVERY: Duration = Duration::from_secs(10);

/// The central tables and indexes (idempotent: run on every connection).
///
/// `audit_records`, one row a record:
/// - `node`, `seq`: the record's origin and sequence: the primary key, so inserts are
///   idempotent.
/// - `time`: the record's time stamp.
/// - `tenant`, `identity`, `decision`: copied out of the record for the compliance queries
///   (identity is a request's caller, a CA event's requester, an admin's actor).
/// - `kind`: the record kind (`request`, `ca`, `admin`, `config_reload`, `checkpoint`, ...).
/// - `record`: the record as `jsonb`, for ad-hoc queries.
/// - `hash`: the record's chain hash.
/// - `line`: the exact line as written, so the chain and checkpoint signatures can be
///   re-verified from the central store (jsonb does not keep the bytes).
///
/// `audit_heads`, one row a node: its latest signed checkpoint the sink has confirmed stored
/// (`seq`, `hash`, `record`: the checkpoint's exact line, signature included), for
/// `portcullis audit verify --expect-head pg`.
pub const TABLE_DDL: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    node     text        NOT NULL,
    seq      bigint      NOT NULL,
    time     timestamptz NOT NULL,
    tenant   text,
    identity text,
    decision text,
    kind     text        NOT NULL,
    record   jsonb       NOT NULL,
    hash     text        NOT NULL,
    line     text        NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX IF NOT EXISTS audit_records_tenant_time ON audit_records (tenant, time);
CREATE INDEX IF NOT EXISTS audit_records_identity_time ON audit_records (identity, time);
CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (time);
CREATE TABLE IF NOT EXISTS audit_heads (
    node       text        PRIMARY KEY,
    seq        bigint      NOT NULL,
    hash       text        NOT NULL,
    record     text        NOT NULL,
    updated_at timestamptz NOT NULL
);
";

const INSERT: &str = "
INSERT INTO audit_records (node, seq, time, tenant, identity, decision, kind, record, hash, line)
SELECT n, s, t::timestamptz, te, i, d, k, r::jsonb, h, l
FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[])
     AS u(n, s, t, te, i, d, k, r, h, l)
ON CONFLICT (node, seq) DO NOTHING";

const STORED: &str =
    "SELECT seq, hash FROM audit_records WHERE node = $1 AND seq BETWEEN $2 AND $3";

/// The head only moves forward (a restarted sink passes older checkpoints again).
const PUBLISH_HEAD: &str = "
INSERT INTO audit_heads (node, seq, hash, record, updated_at) VALUES ($1, $2, $3, $4, now())
ON CONFLICT (node) DO UPDATE
SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, record = EXCLUDED.record,
    updated_at = EXCLUDED.updated_at
WHERE audit_heads.seq < EXCLUDED.seq";

/// Settings for [`PgSink`].
#[derive(Clone, Debug)]
pub struct PgSinkConfig {
    /// The central store and how to reach it.
    pub store: CentralStore,
    /// The local log directory (the spool).
    pub dir: PathBuf,
    /// This node's id (the rows' key).
    pub node: String,
    /// Records per insert.
    pub batch: usize,
    /// How often to look for new records when caught up.
    pub poll_interval: Duration,
    /// Wait between reconnection attempts.
    pub retry_interval: Duration,
}

impl PgSinkConfig {
    /// Defaults: batches of 500, poll every 200 ms, retry every 1 s.
    pub fn new(store: CentralStore, dir: impl Into<PathBuf>, node: impl Into<String>) -> Self {
        PgSinkConfig {
            store,
            dir: dir.into(),
            node: node.into(),
            batch: 500,
            poll_interval: Duration::from_millis(200),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// Why shipping stopped (the sink retries by itself in [`PgSink::run`], except after a
/// [`SinkError::Mismatch`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// PostgreSQL refused or went away (or its certificate was refused).
    #[error("audit store: {}", with_causes(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// The local log could not be read.
    #[error("audit spool: {0}")]
    Spool(#[from] VerifyError),
    /// The local log is missing records the store has not got (deleted before shipping).
    #[error("audit spool: seq {0} is not in the local log any more")]
    Gap(u64),
    /// A row the store holds at a seq of the local log has another hash: the store or the log
    /// was tampered with. Shipping stops.
    #[error("audit store: node {node} seq {seq} is stored with hash {stored}, the local record has {local}: the store and the log disagree; shipping stopped")]
    Mismatch {
        /// The node.
        node: String,
        /// The seq.
        seq: u64,
        /// The stored row's hash.
        stored: String,
        /// The local record's hash.
        local: String,
    },
    /// A row the sink inserted was not there when read back.
    #[error("audit store: seq {0} is not stored after it was inserted")]
    Unconfirmed(u64),
    /// The store's settings are unusable (connection string, TLS).
    #[error("audit store: {0}")]
    Config(String),
}

/// Numbers for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Every seq below this (and in the local log) is stored with the local record's hash, as
    /// this sink has checked.
    pub confirmed_next_seq: u64,
    /// Every seq below this is durable locally (the spool's end).
    pub local_next_seq: u64,
    /// Records durable locally and not yet confirmed in the store (spool depth).
    pub lag_records: u64,
    /// Records inserted by this sink since it started.
    pub shipped: u64,
    /// Whether the sink holds a working connection.
    pub connected: bool,
    /// Alarm: a stored row disagrees with the local record at its seq. Shipping has stopped.
    pub mismatch: bool,
    /// Alarm: the store holds rows (or a head) beyond the log's head: rows this log never
    /// wrote, or a log cut short. Shipping goes on.
    pub store_ahead: bool,
}

#[derive(Default)]
struct Counters {
    confirmed_next: AtomicU64,
    local_next: AtomicU64,
    shipped: AtomicU64,
    connected: AtomicBool,
    mismatch: AtomicBool,
    store_ahead: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// Ships the local log to PostgreSQL. Cheap to clone (shared counters).
#[derive(Clone)]
pub struct PgSink {
    cfg: PgSinkConfig,
    writer: Option<AuditHandle>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for PgSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSink")
            .field("node", &self.cfg.node)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PgSink {
    /// A sink for the log in `cfg.dir`. With `writer` (the same process's log), only records
    /// the writer has made durable are shipped; without, the log must be closed (offline
    /// shipping by the CLI), and every complete record is shipped.
    pub fn new(cfg: PgSinkConfig, writer: Option<AuditHandle>) -> Self {
        PgSink {
            cfg,
            writer,
            counters: Arc::new(Counters::default()),
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> SinkStats {
        let c = &self.counters;
        let confirmed = c.confirmed_next.load(Ordering::Acquire);
        let local = c.local_next.load(Ordering::Acquire);
        SinkStats {
            confirmed_next_seq: confirmed,
            local_next_seq: local,
            lag_records: local.saturating_sub(confirmed),
            shipped: c.shipped.load(Ordering::Relaxed),
            connected: c.connected.load(Ordering::Acquire),
            mismatch: c.mismatch.load(Ordering::Acquire),
            store_ahead: c.store_ahead.load(Ordering::Acquire),
        }
    }

    /// The last error met, for logs and diagnostics.
    pub fn last_error(&self) -> Option<String> {
        self.counters
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ships forever, reconnecting after failures, until `shutdown` completes; after a
    /// [`SinkError::Mismatch`] it ships nothing more (the alarm stays raised). File reads are
    /// short blocking reads: run it on a runtime (or thread) of its own, not the data plane's.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        while !self.counters.mismatch.load(Ordering::Acquire) {
            tokio::select! {
                () = &mut shutdown => return,
                r = self.session(false) => if let Err(e) = r { self.failed(&e) },
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.cfg.retry_interval) => {}
            }
        }
        shutdown.await;
    }

    /// Connects, ships everything durable now, and returns how many records it inserted.
    pub async fn ship_until_caught_up(&self) -> Result<u64, SinkError> {
        let before = self.counters.shipped.load(Ordering::Relaxed);
        let r = self.session(true).await;
        if let Err(e) = &r {
            self.failed(e);
        }
        r.map(|()| self.counters.shipped.load(Ordering::Relaxed) - before)
    }

    fn failed(&self, e: &SinkError) {
        self.counters.connected.store(false, Ordering::Release);
        if matches!(e, SinkError::Mismatch { .. }) {
            self.counters.mismatch.store(true, Ordering::Release);
            tracing::error!(error = %e, "audit sink: ALARM: the central store disagrees with the local log");
        } else {
            tracing::warn!(error = %e, "audit sink: shipping interrupted");
        }
        *self
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }

    async fn session(&self, until_caught_up: bool) -> Result<(), SinkError> {
        let session = self.cfg.store.connect().await?;
        self.ship(&session.client, until_caught_up).await
    }

    async fn ship(&self, client: &Client, until_caught_up: bool) -> Result<(), SinkError> {
        client.batch_execute(TABLE_DDL).await?;
        let mut next = self.resume_from(client).await?;
        self.counters.confirmed_next.store(next, Ordering::Release);
        self.counters.connected.store(true, Ordering::Release);
        let mut cursor = Cursor::new(self.cfg.dir.clone(), next);
        let mut ahead_check = Instant::now();
        loop {
            let limit = local_limit(self.writer.as_ref());
            let mut batch = cursor.read(self.cfg.batch, limit)?;
            // Offline (no writer), the spool's end is wherever reading stopped.
            let local_end = self.writer.as_ref().map_or(cursor.next_seq, |_| limit);
            self.counters.local_next.store(local_end, Ordering::Release);
            if batch.is_empty() {
                if Instant::now() >= ahead_check {
                    self.check_store_ahead(client, local_end).await?;
                    ahead_check = Instant::now() + AHEAD_CHECK_EVERY;
                }
                if until_caught_up {
                    return Ok(());
                }
                tokio::time::sleep(self.cfg.poll_interval).await;
                continue;
            }
            let (inserted, mismatch) = self.confirm(client, &batch).await?;
            if let Some(SinkError::Mismatch { seq, .. }) = &mismatch {
                batch.retain(|(r, _)| r.seq < *seq);
            }
            if let Some(head) = batch.iter().rev().find_map(|(r, l)| AuditHead::of(r, l)) {
                client
                    .execute(
                        PUBLISH_HEAD,
                        &[&head.node, &db_seq(head.seq), &head.hash, &head.line],
                    )
                    .await?;
            }
            next = batch.last().map_or(next, |(r, _)| r.seq + 1);
            self.counters.confirmed_next.store(next, Ordering::Release);
            self.counters.shipped.fetch_add(inserted, Ordering::Relaxed);
            if let Some(e) = mismatch {
                return Err(e);
            }
        }
    }

    /// Where to start comparing: this sink's own watermark if the store still holds every row
    /// below it (down to the local log's first record), else the local log's first record.
    async fn resume_from(&self, client: &Client) -> Result<u64, SinkError> {
        let first = first_local_seq(&self.cfg.dir)?;
        let confirmed = self.counters.confirmed_next.load(Ordering::Acquire);
        if confirmed <= first {
            return Ok(first);
        }
        let row = client
            .query_one(
                "SELECT count(*) FROM audit_records WHERE node = $1 AND seq >= $2 AND seq < $3",
                &[&self.cfg.node, &db_seq(first), &db_seq(confirmed)],
            )
            .await?;
        let stored: i64 = row.get(0);
        if u64::try_from(stored).ok() == Some(confirmed - first) {
            return Ok(confirmed);
        }
        tracing::warn!(
            audit.confirmed_next_seq = confirmed,
            "audit sink: the store lost rows it had confirmed; comparing again from the log's start"
        );
        Ok(first)
    }

    /// Makes sure every record of `batch` (consecutive seqs) is stored with its hash, up to the
    /// first one stored with another hash. Returns how many rows it inserted, and that
    /// mismatch if there is one (the records before it are confirmed).
    async fn confirm(
        &self,
        client: &Client,
        batch: &[(AuditRecord, String)],
    ) -> Result<(u64, Option<SinkError>), SinkError> {
        let mut inserted = 0;
        let mut upto = batch.len();
        let mut mismatch = None;
        // Twice at most: a row another writer inserted between our read and our insert is
        // compared on the second pass.
        for pass in 0..2 {
            let part = &batch[..upto];
            let (Some((first, _)), Some((last, _))) = (part.first(), part.last()) else {
                break;
            };
            let range = [db_seq(first.seq), db_seq(last.seq)];
            let stored: HashMap<i64, String> = client
                .query(STORED, &[&self.cfg.node, &range[0], &range[1]])
                .await?
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let mut missing = Vec::new();
            for (i, entry) in part.iter().enumerate() {
                let record = &entry.0;
                match stored.get(&db_seq(record.seq)) {
                    Some(hash) if *hash == record.hash => {}
                    Some(hash) => {
                        mismatch = Some(SinkError::Mismatch {
                            node: self.cfg.node.clone(),
                            seq: record.seq,
                            stored: hash.clone(),
                            local: record.hash.clone(),
                        });
                        upto = i;
                        break;
                    }
                    None => missing.push(entry),
                }
            }
            let Some(absent) = missing.first().map(|(r, _)| r.seq) else {
                break;
            };
            if pass > 0 {
                return Err(SinkError::Unconfirmed(absent));
            }
            let n = insert(client, &missing).await?;
            inserted += n;
            if n == missing.len() as u64 {
                // Every missing row was inserted by us, with the local hash.
                break;
            }
        }
        Ok((inserted, mismatch))
    }

    /// Raises (or clears) the alarm for rows or a head stored beyond the log's end.
    async fn check_store_ahead(&self, client: &Client, local_end: u64) -> Result<(), SinkError> {
        let row = client
            .query_one(
                "SELECT (SELECT max(seq) FROM audit_records WHERE node = $1),
                        (SELECT seq FROM audit_heads WHERE node = $1)",
                &[&self.cfg.node],
            )
            .await?;
        let (rows, head): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        let beyond = rows
            .max(head)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s >= local_end);
        let was = self
            .counters
            .store_ahead
            .swap(beyond.is_some(), Ordering::AcqRel);
        if let (Some(stored), false) = (beyond, was) {
            let message = format!(
                "the store holds seq {stored} for node {} but the log ends before seq {local_end}: rows this log never wrote, or a log cut short",
                self.cfg.node
            );
            tracing::error!(
                audit.stored_seq = stored,
                audit.local_next_seq = local_end,
                "audit sink: ALARM: {message}"
            );
            *self
                .counters
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(message);
        }
        Ok(())
    }
}

/// An error and its causes (`tokio_postgres` shows only the kind: "error performing TLS
/// handshake", "db error").
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Seqs below this may be read: the writer's durable watermark, or all of a closed log.
pub(crate) fn local_limit(writer: Option<&AuditHandle>) -> u64 {
    writer.map_or(u64::MAX, |w| w.stats().durable_next_seq)
}

/// The seq of the local log's first record (0 for an empty log).
fn first_local_seq(dir: &Path) -> Result<u64, SinkError> {
    let segments = list_segments(dir).map_err(|source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(segments.first().map_or(0, |s| s.first_seq))
}

/// A seq as the table's `bigint` (seqs never reach 2^63).
fn db_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Inserts records whose seqs are not stored; returns how many rows were inserted.
async fn insert(client: &Client, batch: &[&(AuditRecord, String)]) -> Result<u64, SinkError> {
    let mut c = Columns::default();
    for (r, line) in batch.iter().copied() {
        let (tenant, identity, decision) = columns(r);
        c.node.push(&r.node);
        c.seq.push(db_seq(r.seq));
        c.time.push(&r.time);
        c.tenant.push(tenant);
        c.identity.push(identity);
        c.decision.push(decision);
        c.kind.push(r.kind.name());
        c.record.push(serde_json::to_string(r).unwrap_or_default());
        c.hash.push(&r.hash);
        c.line.push(line);
    }
    let n = client
        .execute(
            INSERT,
            &[
                &c.node,
                &c.seq,
                &c.time,
                &c.tenant,
                &c.identity,
                &c.decision,
                &c.kind,
                &c.record,
                &c.hash,
                &c.line,
            ],
        )
        .await?;
    Ok(n)
}

/// One array per column: a batch is inserted with a single `unnest` statement.
#[derive(Default)]
struct Columns<'a> {
    node: Vec<&'a str>,
    seq: Vec<i64>,
    time: Vec<&'a str>,
    tenant: Vec<Option<&'a str>>,
    identity: Vec<Option<&'a str>>,
    decision: Vec<Option<&'a str>>,
    kind: Vec<&'a str>,
    record: Vec<String>,
    hash: Vec<&'a str>,
    line: Vec<&'a str>,
}

/// (tenant, identity, decision) columns of a record.
fn columns(r: &AuditRecord) -> (Option<&str>, Option<&str>, Option<&str>) {
    match &r.kind {
        RecordKind::Request(e) => (
            e.tenant.as_deref(),
            e.identity.as_deref(),
            Some(e.decision.as_str()),
        ),
        RecordKind::Ca(e) => (e.tenant.as_deref(), Some(e.requester.as_str()), None),
        RecordKind::Admin(e) => (e.tenant.as_deref(), Some(e.actor.as_str()), None),
        _ => (None, None, None),
    }
}

/// Reads the local log forward from a seq.
pub(crate) struct Cursor {
    dir: PathBuf,
    pub(crate) next_seq: u64,
    reader: Option<(SegmentFile, LineReader)>,
}

impl Cursor {
    pub(crate) fn new(dir: PathBuf, next_seq: u64) -> Self {
        Cursor {
            dir,
            next_seq,
            reader: None,
        }
    }

    /// Up to `max` records with seq in `next_seq..limit`, each with its exact line.
    pub(crate) fn read(
        &mut self,
        max: usize,
        limit: u64,
    ) -> Result<Vec<(AuditRecord, String)>, SinkError> {
        let mut out = Vec::new();
        while out.len() < max && self.next_seq < limit {
            if self.reader.is_none() && !self.open()? {
                break;
            }
            let Some((seg, reader)) = self.reader.as_mut() else {
                break;
            };
            let io = |source| VerifyError::Io {
                path: seg.path.clone(),
                source,
            };
            match reader.next_line().map_err(io)? {
                // A line still being written: reopen and skip to it next time.
                Some(line) if !line.complete => {
                    self.reader = None;
                    break;
                }
                Some(line) => {
                    let rec = parse_record(&line.bytes).map_err(|e| {
                        SinkError::Spool(VerifyError::Io {
                            path: seg.path.clone(),
                            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                        })
                    })?;
                    if rec.seq < self.next_seq {
                        continue;
                    }
                    if rec.seq > self.next_seq {
                        return Err(SinkError::Gap(self.next_seq));
                    }
                    self.next_seq += 1;
                    let text = String::from_utf8_lossy(&line.bytes).into_owned();
                    out.push((rec, text));
                }
                None => {
                    // End of this segment: move on if the next one exists.
                    let next = self.dir.join(segment_name(self.next_seq));
                    if next.exists() {
                        self.reader = None;
                    } else {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Opens the segment holding `next_seq`; false if there is none yet.
    fn open(&mut self) -> Result<bool, SinkError> {
        let segments = list_segments(&self.dir).map_err(|source| VerifyError::Io {
            path: self.dir.clone(),
            source,
        })?;
        if segments.is_empty() {
            return Ok(false);
        }
        let Some(seg) = segments
            .into_iter()
            .rev()
            .find(|s| s.first_seq <= self.next_seq)
        else {
            return Err(SinkError::Gap(self.next_seq));
        };
        let reader = LineReader::open(&seg.path).map_err(|source| VerifyError::Io {
            path: seg.path.clone(),
            source,
        })?;
        self.reader = Some((seg, reader));
        Ok(true)
    }
}
