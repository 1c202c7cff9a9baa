//! The audit trail's metrics: the writer's and the sink's own counts, brought up to date when
//! metrics are read, and the requests refused fail-closed.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::Metrics;
use crate::audit::AuditFigures;

/// The audit trail's health, as counters and gauges. Writer and sink keep their own counts;
/// these are brought up to date when metrics are read.
pub(super) struct AuditMetrics {
    refused: IntCounterVec,
    healthy: IntGauge,
    durable: IntGauge,
    queued: IntGauge,
    dropped: IntCounter,
    checkpoint_failures: IntCounter,
    disk_bytes: IntGauge,
    max_bytes: IntGauge,
    suppressed_refusals: IntCounter,
    sink_lag: IntGauge,
    sink_connected: IntGauge,
    sink_shipped: IntCounter,
    sink_mismatch: IntGauge,
    retention_held: IntGauge,
}

// As for `Metrics::new`: constant definitions, registered once.
#[allow(clippy::expect_used)]
impl AuditMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let refused = IntCounterVec::new(
            Opts::new(
                "portcullis_audit_refused_requests_total",
                "Requests refused with 503 because their audit record could not be made durable (fail-closed), by tenant",
            ),
            &["tenant"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(refused.clone()))
            .expect("unique metric");
        AuditMetrics {
            refused,
            healthy: gauge(
                "portcullis_audit_healthy",
                "1 while the audit log makes records durable; 0 when a write or fsync failed or timed out",
            ),
            durable: gauge(
                "portcullis_audit_durable_records",
                "Records written and fsynced to the local audit log (its next sequence number)",
            ),
            queued: gauge(
                "portcullis_audit_queued_records",
                "Records waiting in the queue to the audit writer",
            ),
            dropped: counter(
                "portcullis_audit_dropped_records_total",
                "Audit records dropped: best-effort records, and completion records, that could not be queued or written (full queue, disk budget, failed write)",
            ),
            checkpoint_failures: counter(
                "portcullis_audit_checkpoint_failures_total",
                "Checkpoints that could not be signed or written",
            ),
            disk_bytes: gauge(
                "portcullis_audit_disk_bytes",
                "Bytes of the audit log's segment files on disk",
            ),
            max_bytes: gauge(
                "portcullis_audit_disk_budget_bytes",
                "The audit log's disk budget (audit.max_bytes): at it, fail-closed refuses requests and best-effort drops records",
            ),
            suppressed_refusals: counter(
                "portcullis_audit_suppressed_refusals_total",
                "Records of refused requests counted instead of written, their source being over its budget (audit.refusals)",
            ),
            sink_lag: gauge(
                "portcullis_audit_sink_lag_records",
                "Records in the local log not yet confirmed by the central store (the spool depth)",
            ),
            sink_connected: gauge(
                "portcullis_audit_sink_connected",
                "1 while the central store (PostgreSQL) is reachable",
            ),
            sink_shipped: counter(
                "portcullis_audit_sink_shipped_records_total",
                "Records confirmed by the central store since start",
            ),
            sink_mismatch: gauge(
                "portcullis_audit_sink_mismatch",
                "1 when the central store disagrees with the local log: a row with another hash (shipping stopped) or rows beyond the log's head",
            ),
            retention_held: gauge(
                "portcullis_audit_retention_held_segments",
                "Segments past their retention age kept because the central store has not confirmed them",
            ),
        }
    }
}

impl Metrics {
    /// A request refused because its audit record could not be made durable.
    pub(crate) fn audit_refused(&self, tenant: &str) {
        self.audit.refused.with_label_values(&[tenant]).inc();
    }

    /// Brings the audit gauges and counters up to date.
    pub(crate) fn observe_audit(&self, f: &AuditFigures) {
        let a = &self.audit;
        a.healthy.set(i64::from(f.healthy));
        a.durable.set(gauge(f.durable_records));
        a.queued.set(gauge(f.queued));
        catch_up(&a.dropped, f.dropped);
        catch_up(&a.checkpoint_failures, f.checkpoint_failures);
        a.disk_bytes.set(gauge(f.disk_bytes));
        a.max_bytes.set(gauge(f.max_bytes));
        catch_up(&a.suppressed_refusals, f.suppressed_refusals);
        if let (Some(lag), Some(connected), Some(shipped)) =
            (f.sink_lag, f.sink_connected, f.sink_shipped)
        {
            a.sink_lag.set(gauge(lag));
            a.sink_connected.set(i64::from(connected));
            catch_up(&a.sink_shipped, shipped);
        }
        a.sink_mismatch
            .set(i64::from(f.sink_mismatch.unwrap_or_default()));
        a.retention_held.set(gauge(f.retention_held));
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Advances a counter to a total kept elsewhere (totals only grow).
pub(super) fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}
