//! The gateway's audit trail: opens the log the config names, writes each request's records,
//! ships the log to PostgreSQL (over verified TLS), publishes its head (latest signed
//! checkpoint) to the head file, applies retention, and tells readiness and metrics how it is
//! doing.
//!
//! Fail-closed: an allowed request is forwarded only after its `admitted` record is durable
//! (written and fsynced, within `durable_timeout`); otherwise the caller gets 503 and the
//! readiness endpoint turns unready until the log writes again. Every request, allowed or not,
//! also gets a `completed` record when it ends, queued without waiting. Best-effort: only the
//! `completed` record, queued; records that do not fit are dropped and counted.
//!
//! A client must not be able to fill the log with refusals: a request refused before admission
//! is recorded with its path cut to `refusals.path_bytes` (the whole path's length and SHA-256
//! kept), and in detail only within its source's budget (`refusals`); beyond it the refusal is
//! counted, and the counts are written once per interval (`refusals_suppressed`). At the same
//! cadence the escalations against abusive callers (connections slowed, closed, refused for
//! their connection rate) are written as one `abuse_summary`. The log's files are held to
//! `max_bytes` by the writer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use portcullis_audit::{
    default_node, publish_public_key, AbuseSummary, AuditConfig, AuditError, AuditHandle, AuditLog,
    CentralStore, ConfigReload, DlpFinding, DurabilityMode, Durable, HeadTracker, ListenerAbuse,
    PgSink, PgSinkConfig, RequestEvent, RequestStage, Signer, StoreTls, SuppressedRefusals,
};
use portcullis_policy::{
    AuditKey, AuditMode, AuditPostgres, AuditSettings, PostgresTls, RefusalRecords, SecretSource,
};

use crate::record::{Exchange, Summary};
use crate::GatewayError;

mod escalations;
mod refusals;
mod summaries;

use escalations::EscalationTally;
pub(crate) use escalations::{Escalated, Offender};
use refusals::{RefusalBudget, Window};

/// How often retention looks for segments past their age.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
/// How long shutdown waits for queued records to become durable.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the head file is brought up to date with the latest checkpoint.
const HEAD_EVERY: Duration = Duration::from_secs(1);

/// The open audit log and what ships it.
pub(crate) struct AuditTrail {
    handle: AuditHandle,
    fail_closed: bool,
    include_query: bool,
    retention: Option<Duration>,
    sink: Option<Arc<PgSink>>,
    /// The head file and what follows the log for new checkpoints.
    head: Option<(PathBuf, Mutex<HeadTracker>)>,
    /// Owns the writer thread; taken by [`AuditTrail::close`].
    log: Mutex<Option<AuditLog>>,
    /// Requests refused because their record could not be made durable.
    refused: AtomicU64,
    /// Segments the last retention pass kept past their age, unconfirmed by the store.
    retention_held: AtomicU64,
    /// How records of requests refused before admission are bounded.
    refusal_records: RefusalRecords,
    refusal_budget: RefusalBudget,
    /// Escalations against abusive callers in the current interval.
    escalations: EscalationTally,
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrail")
            .field("fail_closed", &self.fail_closed)
            .finish_non_exhaustive()
    }
}

impl AuditTrail {
    /// Opens (creating if needed) the log, its signing key and, if configured, the sink.
    /// Recovery of a torn tail happens here, before any traffic.
    pub(crate) fn open(
        settings: &AuditSettings,
        signer: Arc<dyn Signer>,
    ) -> Result<Self, GatewayError> {
        let node = settings.node.clone().unwrap_or_else(default_node);
        let public_path = public_key_path(settings);
        let public = publish_public_key(signer.as_ref(), &public_path)
            .map_err(|e| GatewayError::Audit(e.to_string()))?;
        tracing::info!(
            key_id = %public.key_id(),
            algorithm = signer.algorithm().name(),
            public_key = %public_path.display(),
            "audit checkpoint signing key ready"
        );
        let mut config = AuditConfig::new(&settings.directory, node.clone());
        config.mode = match settings.mode {
            AuditMode::FailClosed => DurabilityMode::FailClosed,
            AuditMode::BestEffort => DurabilityMode::BestEffort,
        };
        config.durable_timeout = settings.durable_timeout;
        config.segment_bytes = settings.segment_bytes;
        config.checkpoint_every = settings.checkpoint_every;
        config.checkpoint_interval = settings.checkpoint_interval;
        config.max_bytes = Some(settings.max_bytes);
        let log = AuditLog::open(config, signer).map_err(|e| match e {
            AuditError::InUse(dir) => GatewayError::AuditInUse(dir),
            e => GatewayError::Audit(e.to_string()),
        })?;
        let handle = log.handle();
        let sink = match &settings.postgres {
            None => None,
            Some(pg) => {
                let cfg = PgSinkConfig::new(central_store(pg)?, &settings.directory, node.clone());
                Some(Arc::new(PgSink::new(cfg, Some(handle.clone()))))
            }
        };
        let head = match &settings.head_file {
            None => None,
            Some(path) => {
                let tracker = HeadTracker::new(&settings.directory, Some(handle.clone()))
                    .map_err(|e| GatewayError::Audit(e.to_string()))?;
                Some((path.clone(), Mutex::new(tracker)))
            }
        };
        tracing::info!(
            directory = %settings.directory.display(),
            node = %node,
            mode = ?settings.mode,
            max_bytes = settings.max_bytes,
            central_store = sink.is_some(),
            "audit log open"
        );
        Ok(AuditTrail {
            handle,
            fail_closed: settings.mode == AuditMode::FailClosed,
            include_query: settings.include_query,
            retention: settings.retention,
            sink,
            head,
            log: Mutex::new(Some(log)),
            refused: AtomicU64::new(0),
            retention_held: AtomicU64::new(0),
            refusal_records: settings.refusals,
            refusal_budget: RefusalBudget::new(settings.refusals.per_source, SystemTime::now()),
            escalations: EscalationTally::new(SystemTime::now()),
        })
    }

    /// Whether allowed requests must wait for their admission record.
    pub(crate) fn fail_closed(&self) -> bool {
        self.fail_closed
    }

    /// Whether request records keep the query string.
    pub(crate) fn include_query(&self) -> bool {
        self.include_query
    }

    /// Makes a request's admission record durable, within the configured bound.
    pub(crate) async fn admit(&self, event: RequestEvent) -> Result<(), AuditError> {
        self.handle.append_durable_async(event).await.map(drop)
    }

    /// Counts a request refused for want of a durable record; true when it should be logged
    /// (the 1st, 2nd, 4th, 8th… refusal), so an unwritable disk cannot flood the log.
    pub(crate) fn note_refused(&self) -> bool {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_power_of_two()
    }

    /// Queues a request's completion record; never waits. A request refused before admission
    /// is recorded in detail only within its source's budget (else counted for the interval's
    /// summary), with its path cut to the configured length.
    pub(crate) fn completed(
        &self,
        summary: &Summary<'_>,
        exchange: &Exchange,
        dlp: Vec<DlpFinding>,
    ) {
        if !summary.admitted && !self.refusal_budget.detail(summary.client_ip) {
            return;
        }
        let mut event = summary.audit_event(
            RequestStage::Completed,
            Some(exchange),
            self.include_query,
            dlp,
        );
        if !summary.admitted {
            event.bound_path(self.refusal_records.path_bytes);
        }
        if let Err(e) = self.handle.try_append(event) {
            // Logged at 1, 2, 4, 8… drops, so a full queue cannot flood the log; the metric
            // counts every one.
            let dropped = self.handle.dropped();
            if dropped.is_power_of_two() {
                tracing::warn!(error = %e, dropped_total = dropped, "audit record dropped");
            }
        }
    }

    /// Records a configuration load or reload attempt; never waits.
    pub(crate) fn config_loaded(&self, digest: String, trigger: &str, refused: bool) {
        let event = ConfigReload {
            digest,
            trigger: Some(trigger.to_owned()),
            refused,
        };
        if let Err(e) = self.handle.try_append(event) {
            tracing::warn!(error = %e, "audit record of a configuration load dropped");
        }
    }

    /// Readiness: false while the log cannot make records durable (fail-closed).
    pub(crate) fn healthy(&self) -> bool {
        !self.fail_closed || self.handle.healthy()
    }

    /// Writer and sink figures for the metrics endpoint.
    pub(crate) fn figures(&self) -> AuditFigures {
        let writer = self.handle.stats();
        let sink = self.sink.as_ref().map(|s| s.stats());
        AuditFigures {
            healthy: self.healthy(),
            durable_records: writer.durable_next_seq,
            queued: writer.queued as u64,
            dropped: writer.dropped,
            checkpoint_failures: writer.checkpoint_failures,
            disk_bytes: writer.disk_bytes,
            max_bytes: writer.max_bytes.unwrap_or(0),
            suppressed_refusals: self.refusal_budget.suppressed(),
            // Measured against what the writer has made durable, so the spool depth keeps
            // growing while the store is away (the sink's own view stops with it).
            sink_lag: sink
                .as_ref()
                .map(|s| writer.durable_next_seq.saturating_sub(s.confirmed_next_seq)),
            sink_connected: sink.as_ref().map(|s| s.connected),
            sink_shipped: sink.as_ref().map(|s| s.shipped),
            sink_mismatch: sink.as_ref().map(|s| s.mismatch || s.store_ahead),
            retention_held: self.retention_held.load(Ordering::Relaxed),
        }
    }

    /// Writes the newest checkpoint written since the last call, if any, to the head file
    /// (atomically: an off-box reader sees the old head or the new one).
    fn publish_head(&self) {
        let Some((path, tracker)) = &self.head else {
            return;
        };
        let found = tracker.lock().unwrap_or_else(|e| e.into_inner()).poll();
        match found {
            Ok(None) => {}
            Ok(Some(head)) => {
                let line = format!("{}\n", head.line);
                let written = portcullis_identity::write_atomic(
                    path,
                    line.as_bytes(),
                    portcullis_identity::PUBLIC_FILE_MODE,
                );
                if let Err(e) = written {
                    tracing::error!(error = %e, "audit head file not written");
                }
            }
            Err(e) => tracing::warn!(error = %e, "audit head: reading the log failed"),
        }
    }

    /// Writes the last refusal and abuse summaries, drains the queue, writes a final checkpoint and stops
    /// the writer. Called once, on the way out; later appends fail and are counted as dropped.
    pub(crate) fn close(&self) {
        let window = self.refusal_budget.roll(SystemTime::now());
        if let Some(summary) = window.summary() {
            let written = self.handle.append_durable(summary.clone());
            self.summary_written(window, &summary, written);
        }
        let window = self.escalations.roll(SystemTime::now());
        if let Some(summary) = window.summary() {
            let written = self.handle.append_durable(summary.clone());
            self.abuse_written(window, &summary, written);
        }
        if let Err(e) = self.handle.flush(CLOSE_TIMEOUT) {
            tracing::error!(error = %e, "audit log: queued records not made durable at exit");
        }
        let log = self.log.lock().map(|mut l| l.take()).unwrap_or_default();
        if let Some(log) = log {
            log.close();
        }
        // The final checkpoint close wrote is the head from now on.
        self.publish_head();
    }
}

/// What the metrics endpoint shows of the audit trail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditFigures {
    pub healthy: bool,
    pub durable_records: u64,
    pub queued: u64,
    pub dropped: u64,
    pub checkpoint_failures: u64,
    pub disk_bytes: u64,
    pub max_bytes: u64,
    pub suppressed_refusals: u64,
    pub sink_lag: Option<u64>,
    pub sink_connected: Option<bool>,
    pub sink_shipped: Option<u64>,
    /// The store disagrees with the log (a hash mismatch, or rows beyond its head).
    pub sink_mismatch: Option<bool>,
    pub retention_held: u64,
}

/// Ships the log to PostgreSQL, applies retention and writes the refusal summaries, for as long
/// as the server runs.
pub(crate) struct AuditJobs {
    pub trail: Arc<AuditTrail>,
}

#[async_trait]
impl BackgroundService for AuditJobs {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let sink = self.trail.sink.clone();
        let mut stop = shutdown.clone();
        let mut heads_stop = shutdown.clone();
        let shipping = async move {
            if let Some(sink) = sink {
                sink.run(async move {
                    let _ = stop.changed().await;
                })
                .await;
            }
        };
        let mut stop_summaries = shutdown.clone();
        let summaries = async {
            // The last interval's summary is written by `close`.
            loop {
                tokio::select! {
                    _ = stop_summaries.changed() => return,
                    _ = tokio::time::sleep(self.trail.refusal_records.interval) => {}
                }
                self.trail.summarise_refusals().await;
            }
        };
        let retention = async {
            let Some(max_age) = self.trail.retention else {
                return;
            };
            loop {
                self.apply_retention(max_age).await;
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(RETENTION_EVERY) => {}
                }
            }
        };
        let heads = async {
            if self.trail.head.is_none() {
                return;
            }
            loop {
                self.trail.publish_head();
                tokio::select! {
                    _ = heads_stop.changed() => return,
                    _ = tokio::time::sleep(HEAD_EVERY) => {}
                }
            }
        };
        tokio::join!(shipping, summaries, retention, heads);
    }
}

impl AuditJobs {
    async fn apply_retention(&self, max_age: Duration) {
        // Segments the central store has not confirmed yet are the spool: keep them.
        let keep_from = self
            .trail
            .sink
            .as_ref()
            .map(|s| s.stats().confirmed_next_seq);
        let handle = self.trail.handle.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            handle.apply_retention(max_age, keep_from, CLOSE_TIMEOUT)
        })
        .await;
        match outcome {
            Ok(Ok(done)) => {
                let held = done.held_unconfirmed as u64;
                self.trail.retention_held.store(held, Ordering::Relaxed);
                tracing::debug!(outcome = ?done, "audit retention applied");
            }
            Ok(Err(e)) => tracing::error!(error = %e, "audit retention failed"),
            Err(e) => tracing::error!(error = %e, "audit retention task failed"),
        }
    }
}

/// The central store the config names: its connection string read from where the config says,
/// and its TLS client (the restricted provider, the configured CA as the only trust anchor,
/// the optional client certificate). For the sink and for `audit verify --expect-head pg`.
pub fn central_store(pg: &AuditPostgres) -> Result<CentralStore, GatewayError> {
    let tls = store_tls(&pg.tls)?;
    let conninfo = read_secret(&pg.conninfo, "audit.postgres").map_err(GatewayError::Audit)?;
    CentralStore::new(&conninfo, tls).map_err(|e| GatewayError::Audit(format!("postgres: {e}")))
}

/// The TLS client for the central store (loads the CA and client files; `check` runs it too).
pub(crate) fn store_tls(tls: &PostgresTls) -> Result<StoreTls, GatewayError> {
    let (ca, client) = match tls {
        PostgresTls::InsecurePlaintext => {
            tracing::warn!(
                "audit.postgres.insecure_plaintext: the audit log and the PostgreSQL password \
                 cross the network in clear"
            );
            return Ok(StoreTls::InsecurePlaintext);
        }
        PostgresTls::VerifyFull { ca, client } => (ca, client),
    };
    use portcullis_identity::{load_certs, load_private_key, provider, root_store};
    let roots = root_store(load_certs(ca)?, &ca.display().to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_private_key(key)?)
            .map_err(|e| {
                GatewayError::Tls(format!(
                    "audit.postgres.tls: {} and {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?,
    };
    Ok(StoreTls::Verified(Arc::new(config)))
}

/// Reads the secret of `what` from where the config says it is; the value itself is never
/// logged.
pub(crate) fn read_secret(source: &SecretSource, what: &str) -> Result<String, String> {
    match source {
        SecretSource::Inline(value) => Ok(value.clone()),
        SecretSource::Env(var) => {
            std::env::var(var).map_err(|_| format!("{what}: environment variable {var} is not set"))
        }
        SecretSource::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end().to_owned())
            .map_err(|e| format!("{what}: {}: {e}", path.display())),
    }
}

/// Where the public half of the audit signing key is written (PEM), for
/// `portcullis audit verify --key`: `<signing_key>.pub` for a key file, `<directory>.pub` for
/// a key in a token.
fn public_key_path(settings: &AuditSettings) -> std::path::PathBuf {
    if let Some(path) = &settings.public_key {
        return path.clone();
    }
    let base = match &settings.signing_key {
        AuditKey::File(path) => path,
        AuditKey::Pkcs11 { .. } => &settings.directory,
    };
    let mut name = base.as_os_str().to_owned();
    name.push(".pub");
    name.into()
}
