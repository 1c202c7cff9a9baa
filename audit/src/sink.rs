//! The PostgreSQL sink: ships the local log to a central `audit_records` table.
//!
//! The local log is the spool: the sink keeps no state of its own. On every (re)connection it
//! asks the table for `max(seq)` of its node and reads the local segments from the next seq on,
//! inserting in batches with `ON CONFLICT (node, seq) DO NOTHING`, so a retried batch never
//! duplicates and nothing acknowledged locally is skipped. Only durable records are shipped
//! (those below the writer's durable watermark), so a record cut from a torn tail on restart can
//! never have reached the store.
//!
//! Retention must not delete what is not shipped yet: pass
//! [`SinkStats::confirmed_next_seq`] as `keep_from_seq` to
//! [`crate::AuditHandle::apply_retention`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::record::{parse_record, AuditRecord, RecordKind};
use crate::segment::{list_segments, segment_name, LineReader, SegmentFile};
use crate::verify::VerifyError;
use crate::writer::AuditHandle;

/// The central table and its indexes (idempotent: run on every connection).
///
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
";

const INSERT: &str = "
INSERT INTO audit_records (node, seq, time, tenant, identity, decision, kind, record, hash, line)
SELECT n, s, t::timestamptz, te, i, d, k, r::jsonb, h, l
FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[])
     AS u(n, s, t, te, i, d, k, r, h, l)
ON CONFLICT (node, seq) DO NOTHING";

/// Settings for [`PgSink`].
#[derive(Clone, Debug)]
pub struct PgSinkConfig {
    /// libpq-style connection string (`host=127.0.0.1 port=5432 user=audit dbname=audit`).
    /// No TLS: use it on loopback or a trusted network only.
    pub conninfo: String,
    /// The local log directory (the spool).
    pub dir: PathBuf,
    /// This node's id (the resume query's key).
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
    pub fn new(
        conninfo: impl Into<String>,
        dir: impl Into<PathBuf>,
        node: impl Into<String>,
    ) -> Self {
        PgSinkConfig {
            conninfo: conninfo.into(),
            dir: dir.into(),
            node: node.into(),
            batch: 500,
            poll_interval: Duration::from_millis(200),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// Why shipping stopped (the sink retries by itself in [`PgSink::run`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// PostgreSQL refused or went away.
    #[error("audit store: {0}")]
    Pg(#[from] tokio_postgres::Error),
    /// The local log could not be read.
    #[error("audit spool: {0}")]
    Spool(#[from] VerifyError),
    /// The local log is missing records the store has not got (deleted before shipping).
    #[error("audit spool: seq {0} is not in the local log any more")]
    Gap(u64),
}

/// Numbers for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Every seq below this is confirmed in the store.
    pub confirmed_next_seq: u64,
    /// Every seq below this is durable locally (the spool's end).
    pub local_next_seq: u64,
    /// Records durable locally and not yet confirmed in the store (spool depth).
    pub lag_records: u64,
    /// Records inserted by this sink since it started.
    pub shipped: u64,
    /// Whether the sink holds a working connection.
    pub connected: bool,
}

#[derive(Default)]
struct Counters {
    confirmed_next: AtomicU64,
    local_next: AtomicU64,
    shipped: AtomicU64,
    connected: AtomicBool,
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
        let confirmed = self.counters.confirmed_next.load(Ordering::Acquire);
        let local = self.counters.local_next.load(Ordering::Acquire);
        SinkStats {
            confirmed_next_seq: confirmed,
            local_next_seq: local,
            lag_records: local.saturating_sub(confirmed),
            shipped: self.counters.shipped.load(Ordering::Relaxed),
            connected: self.counters.connected.load(Ordering::Acquire),
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

    /// Ships forever, reconnecting after failures, until `shutdown` completes. File reads are
    /// short blocking reads: run it on a runtime (or thread) of its own, not the data plane's.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                r = self.session(false) => if let Err(e) = r { self.failed(&e) },
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.cfg.retry_interval) => {}
            }
        }
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
        tracing::warn!(error = %e, "audit sink: shipping interrupted");
        *self
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }

    async fn session(&self, until_caught_up: bool) -> Result<(), SinkError> {
        let (client, connection) = tokio_postgres::connect(&self.cfg.conninfo, NoTls).await?;
        let conn_task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "audit sink: connection closed");
            }
        });
        let r = self.ship(&client, until_caught_up).await;
        drop(client);
        conn_task.abort();
        r
    }

    async fn ship(&self, client: &Client, until_caught_up: bool) -> Result<(), SinkError> {
        client.batch_execute(TABLE_DDL).await?;
        let row = client
            .query_one(
                "SELECT coalesce(max(seq) + 1, 0) FROM audit_records WHERE node = $1",
                &[&self.cfg.node],
            )
            .await?;
        let next: i64 = row.get(0);
        let mut next = u64::try_from(next).unwrap_or(0);
        self.counters.confirmed_next.store(next, Ordering::Release);
        self.counters.connected.store(true, Ordering::Release);
        let mut cursor = Cursor::new(self.cfg.dir.clone(), next);
        loop {
            let limit = self.local_limit();
            let batch = cursor.read(self.cfg.batch, limit)?;
            // Offline (no writer), the spool's end is wherever reading stopped.
            let local_end = self.writer.as_ref().map_or(cursor.next_seq, |_| limit);
            self.counters.local_next.store(local_end, Ordering::Release);
            if batch.is_empty() {
                if until_caught_up {
                    return Ok(());
                }
                tokio::time::sleep(self.cfg.poll_interval).await;
                continue;
            }
            let n = batch.len() as u64;
            let last = batch.last().map_or(next, |(r, _)| r.seq);
            insert(client, &batch).await?;
            next = last + 1;
            self.counters.confirmed_next.store(next, Ordering::Release);
            self.counters.shipped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Seqs below this may be shipped.
    fn local_limit(&self) -> u64 {
        match &self.writer {
            Some(w) => w.stats().durable_next_seq,
            None => u64::MAX,
        }
    }
}

async fn insert(client: &Client, batch: &[(AuditRecord, String)]) -> Result<(), SinkError> {
    let mut c = Columns::default();
    for (r, line) in batch {
        let (tenant, identity, decision) = columns(r);
        c.node.push(&r.node);
        c.seq.push(i64::try_from(r.seq).unwrap_or(i64::MAX));
        c.time.push(&r.time);
        c.tenant.push(tenant);
        c.identity.push(identity);
        c.decision.push(decision);
        c.kind.push(r.kind.name());
        c.record.push(serde_json::to_string(r).unwrap_or_default());
        c.hash.push(&r.hash);
        c.line.push(line);
    }
    client
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
    Ok(())
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
        RecordKind::Ca(e) => (None, Some(e.requester.as_str()), None),
        RecordKind::Admin(e) => (e.tenant.as_deref(), Some(e.actor.as_str()), None),
        _ => (None, None, None),
    }
}

/// Reads the local log forward from a seq.
struct Cursor {
    dir: PathBuf,
    next_seq: u64,
    reader: Option<(SegmentFile, LineReader)>,
}

impl Cursor {
    fn new(dir: PathBuf, next_seq: u64) -> Self {
        Cursor {
            dir,
            next_seq,
            reader: None,
        }
    }

    /// Up to `max` records with seq in `next_seq..limit`, each with its exact line.
    fn read(&mut self, max: usize, limit: u64) -> Result<Vec<(AuditRecord, String)>, SinkError> {
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
