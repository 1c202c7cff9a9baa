//! Prometheus metrics and the operations listener (`/metrics`, `/healthz`, `/readyz`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::audit::AuditFigures;

mod ops;

pub(crate) use ops::{plain_response, OpsEndpoint};

/// Every metric the gateway exports, registered in its own registry.
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    tls_failures: IntCounterVec,
    upstream_errors: IntCounterVec,
    reloads: IntCounterVec,
    crl_loads: IntCounterVec,
    renewals: IntCounterVec,
    certificate_expiry: prometheus::IntGaugeVec,
    rate_limited: IntCounterVec,
    dlp_findings: IntCounterVec,
    dlp_unscanned: IntCounterVec,
    in_flight: IntGauge,
    access_log_dropped: IntCounter,
    upgrades: IntCounterVec,
    upgrades_ended: IntCounterVec,
    oidc_tokens: IntCounterVec,
    oidc_key_fetches: IntCounterVec,
    oidc_keys_fetched: prometheus::IntGaugeVec,
    audit: AuditMetrics,
    connections: ConnectionMetrics,
    ready: AtomicBool,
}

/// Downstream connections by listener: open, refused at accept, cut by a timeout.
struct ConnectionMetrics {
    open: prometheus::IntGaugeVec,
    refused: IntCounterVec,
    timeouts: IntCounterVec,
}

/// The audit trail's health, as counters and gauges. Writer and sink keep their own counts;
/// these are brought up to date when metrics are read.
struct AuditMetrics {
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

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// One route's series that nearly every request of it counts in, resolved on first use in a
/// generation: requests allowed with a 2xx, and its tenant's latency histogram. Counting them
/// then takes no label lookup (a lookup hashes every label value).
#[derive(Default)]
pub(crate) struct RouteSeries(OnceLock<(IntCounter, prometheus::Histogram)>);

/// The outcome of one request, as counted.
#[derive(Debug)]
pub(crate) struct RequestOutcome<'a> {
    pub tenant: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub decision: &'a str,
    pub duration: Duration,
}

// The metric definitions are constants; registration can only fail on a duplicate name,
// which would be a programming error caught by the first test run.
#[allow(clippy::expect_used)]
impl Metrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests by tenant, route, status class and decision",
            ),
            &["tenant", "route", "status_class", "decision"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from request header to end of response, by tenant",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["tenant"],
        )
        .expect("valid metric");
        let tls_failures = IntCounterVec::new(
            Opts::new(
                "portcullis_tls_handshake_failures_total",
                "Client certificates refused during the handshake (or missing on a `required` \
                 listener: no_certificate), by listener and reason",
            ),
            &["listener", "reason"],
        )
        .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_errors_total",
                "Failed upstream exchanges by upstream and kind",
            ),
            &["upstream", "kind"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_config_reloads_total",
                "Configuration reloads by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let crl_loads = IntCounterVec::new(
            Opts::new(
                "portcullis_crl_loads_total",
                "Revocation lists re-read after their file changed, by listener and result",
            ),
            &["listener", "result"],
        )
        .expect("valid metric");
        let renewals = IntCounterVec::new(
            Opts::new(
                "portcullis_certificate_renewals_total",
                "Renewals of the gateway's own certificates from the CA, by certificate (listener/NAME, upstream/NAME) and result",
            ),
            &["certificate", "result"],
        )
        .expect("valid metric");
        let certificate_expiry = prometheus::IntGaugeVec::new(
            Opts::new(
                "portcullis_certificate_not_after_seconds",
                "Expiry (Unix time) of each certificate the gateway renews itself (listener/NAME, upstream/NAME)",
            ),
            &["certificate"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(certificate_expiry.clone()))
            .expect("unique metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "portcullis_rate_limited_total",
                "Requests refused by a limit, by tenant and limit (source, identity, route, tenant, in_flight, body_size)",
            ),
            &["tenant", "limit"],
        )
        .expect("valid metric");
        let dlp_findings = IntCounterVec::new(
            Opts::new(
                "portcullis_dlp_findings_total",
                "DLP matches by tenant, body direction, detector and action taken (never the data)",
            ),
            &["tenant", "direction", "detector", "action"],
        )
        .expect("valid metric");
        let dlp_unscanned = IntCounterVec::new(
            Opts::new(
                "portcullis_dlp_unscanned_total",
                "Bodies on DLP routes passed (in part) unscanned because the policy says pass, by reason (over_limit, unknown_encoding, websocket)",
            ),
            &["tenant", "direction", "reason"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("portcullis_requests_in_flight", "Requests being served")
            .expect("valid metric");
        let access_log_dropped = IntCounter::new(
            "portcullis_access_log_dropped_lines_total",
            "Access log lines dropped because stderr did not keep up (its buffer was full)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(access_log_dropped.clone()))
            .expect("unique metric");
        let upgrades = IntCounterVec::new(
            Opts::new(
                "portcullis_upgrades_total",
                "Protocol upgrades (WebSocket) the upstream accepted (101), by tenant",
            ),
            &["tenant"],
        )
        .expect("valid metric");
        let upgrades_ended = IntCounterVec::new(
            Opts::new(
                "portcullis_upgrades_ended_total",
                "Upgraded (WebSocket) exchanges that ended, by tenant and reason (closed, idle: the listener's body_idle_timeout, max_duration: its max_connection_age, error)",
            ),
            &["tenant", "reason"],
        )
        .expect("valid metric");
        let oidc_tokens = IntCounterVec::new(
            Opts::new(
                "portcullis_oidc_tokens_total",
                "Bearer tokens presented on routes that read them, by tenant, provider (- when no provider of the tenant names the token's issuer) and result (valid, or why refused: token_expired, token_audience, token_signature, ...)",
            ),
            &["tenant", "provider", "result"],
        )
        .expect("valid metric");
        let oidc_key_fetches = IntCounterVec::new(
            Opts::new(
                "portcullis_oidc_key_fetches_total",
                "Fetches of an identity provider's signing keys (discovery and JWKS), by issuer, reason (schedule, unknown_key) and result",
            ),
            &["issuer", "reason", "result"],
        )
        .expect("valid metric");
        let oidc_keys_fetched = prometheus::IntGaugeVec::new(
            Opts::new(
                "portcullis_oidc_keys_fetched_seconds",
                "When the signing keys in use were fetched (Unix time; 0: never, tokens of that issuer are refused with 503)",
            ),
            &["issuer"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(oidc_keys_fetched.clone()))
            .expect("unique metric");
        let audit = AuditMetrics::new(&registry);
        let connections = ConnectionMetrics::new(&registry);
        for c in [
            &requests,
            &tls_failures,
            &upstream_errors,
            &reloads,
            &crl_loads,
            &renewals,
            &rate_limited,
            &dlp_findings,
            &dlp_unscanned,
            &oidc_tokens,
            &oidc_key_fetches,
            &upgrades,
            &upgrades_ended,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(latency.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric");
        Self {
            registry,
            requests,
            latency,
            tls_failures,
            upstream_errors,
            reloads,
            crl_loads,
            renewals,
            certificate_expiry,
            rate_limited,
            dlp_findings,
            dlp_unscanned,
            in_flight,
            access_log_dropped,
            upgrades,
            upgrades_ended,
            oidc_tokens,
            oidc_key_fetches,
            oidc_keys_fetched,
            audit,
            connections,
            ready: AtomicBool::new(false),
        }
    }

    /// Counts a request; `series` are its route's, when it was admitted.
    pub(crate) fn request(&self, o: &RequestOutcome<'_>, series: Option<&RouteSeries>) {
        let class = match o.status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "none",
        };
        if let (Some(series), "2xx", "allow") = (series, class, o.decision) {
            let (allowed, latency) = series.0.get_or_init(|| {
                (
                    self.requests
                        .with_label_values(&[o.tenant, o.route, class, o.decision]),
                    self.latency.with_label_values(&[o.tenant]),
                )
            });
            allowed.inc();
            latency.observe(o.duration.as_secs_f64());
            return;
        }
        self.requests
            .with_label_values(&[o.tenant, o.route, class, o.decision])
            .inc();
        self.latency
            .with_label_values(&[o.tenant])
            .observe(o.duration.as_secs_f64());
    }

    pub(crate) fn tls_failure(&self, listener: &str, reason: &str) {
        self.tls_failures
            .with_label_values(&[listener, reason])
            .inc();
    }

    pub(crate) fn connection_opened(&self, listener: &str) {
        self.connections.open.with_label_values(&[listener]).inc();
    }

    pub(crate) fn connection_closed(&self, listener: &str) {
        self.connections.open.with_label_values(&[listener]).dec();
    }

    /// A connection closed at accept: `listener_full` or `source_full`.
    pub(crate) fn connection_refused(&self, listener: &str, reason: &str) {
        self.connections
            .refused
            .with_label_values(&[listener, reason])
            .inc();
    }

    /// A connection cut by a timeout: `proxy_header`, `handshake`, `request_head`, `write` or
    /// `body_idle`.
    pub(crate) fn connection_timeout(&self, listener: &str, timeout: &str) {
        self.connections
            .timeouts
            .with_label_values(&[listener, timeout])
            .inc();
    }

    pub(crate) fn upstream_error(&self, upstream: &str, kind: &str) {
        self.upstream_errors
            .with_label_values(&[upstream, kind])
            .inc();
    }

    pub(crate) fn rate_limited(&self, tenant: &str, limit: &str) {
        self.rate_limited.with_label_values(&[tenant, limit]).inc();
    }

    pub(crate) fn dlp_finding(
        &self,
        tenant: &str,
        direction: &str,
        detector: &str,
        action: &str,
        count: u64,
    ) {
        self.dlp_findings
            .with_label_values(&[tenant, direction, detector, action])
            .inc_by(count);
    }

    pub(crate) fn dlp_unscanned(&self, tenant: &str, direction: &str, reason: &str) {
        self.dlp_unscanned
            .with_label_values(&[tenant, direction, reason])
            .inc();
    }

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

    pub(crate) fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
    }

    pub(crate) fn crl_load(&self, listener: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.crl_loads.with_label_values(&[listener, result]).inc();
    }

    pub(crate) fn certificate_renewal(&self, certificate: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.renewals
            .with_label_values(&[certificate, result])
            .inc();
    }

    pub(crate) fn certificate_expiry(&self, certificate: &str, not_after: std::time::SystemTime) {
        let secs = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.certificate_expiry
            .with_label_values(&[certificate])
            .set(secs);
    }

    pub(crate) fn upgrade_started(&self, tenant: &str) {
        self.upgrades.with_label_values(&[tenant]).inc();
    }

    pub(crate) fn upgrade_ended(&self, tenant: &str, reason: &str) {
        self.upgrades_ended
            .with_label_values(&[tenant, reason])
            .inc();
    }

    /// A bearer token judged on a route that reads them.
    pub(crate) fn oidc_token(&self, tenant: &str, provider: &str, result: &str) {
        self.oidc_tokens
            .with_label_values(&[tenant, provider, result])
            .inc();
    }

    /// A fetch of an issuer's keys; on success, when the keys in use were fetched.
    pub(crate) fn oidc_key_fetch(
        &self,
        issuer: &str,
        reason: &str,
        fetched_at: Option<std::time::SystemTime>,
        ok: bool,
    ) {
        let result = if ok { "success" } else { "failure" };
        self.oidc_key_fetches
            .with_label_values(&[issuer, reason, result])
            .inc();
        let secs = fetched_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.oidc_keys_fetched
            .with_label_values(&[issuer])
            .set(secs);
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.inc();
    }

    pub(crate) fn request_finished(&self) {
        self.in_flight.dec();
    }

    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn render(&self) -> Vec<u8> {
        // Every line of the requests counted here is in the log first.
        crate::access_log::flush();
        catch_up(&self.access_log_dropped, crate::access_log::dropped_lines());
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

// As for `Metrics::new`: constant definitions, registered once.
#[allow(clippy::expect_used)]
impl ConnectionMetrics {
    fn new(registry: &Registry) -> Self {
        let open = prometheus::IntGaugeVec::new(
            Opts::new(
                "portcullis_connections_open",
                "Downstream connections open (accepted, under the caps), by listener",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "portcullis_connections_refused_total",
                "Connections closed at accept because a cap was reached or, behind an L4 balancer, \
                 the PROXY protocol was not met, by listener and reason (listener_full, \
                 source_full, proxy_source, proxy_header, proxy_header_size)",
            ),
            &["listener", "reason"],
        )
        .expect("valid metric");
        let timeouts = IntCounterVec::new(
            Opts::new(
                "portcullis_connection_timeouts_total",
                "Connections cut by a timeout, by listener and timeout (proxy_header, handshake, \
                 request_head, write, body_idle)",
            ),
            &["listener", "timeout"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(open.clone()))
            .expect("unique metric");
        for c in [&refused, &timeouts] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        Self {
            open,
            refused,
            timeouts,
        }
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Advances a counter to a total kept elsewhere (totals only grow).
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

// As for `Metrics::new`: constant definitions, registered once.
#[allow(clippy::expect_used)]
impl AuditMetrics {
    fn new(registry: &Registry) -> Self {
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routes_cached_series_count_as_the_labelled_ones() {
        let metrics = Metrics::new();
        let series = RouteSeries::default();
        let allowed = RequestOutcome {
            tenant: "acme",
            route: "acme/api",
            status: 200,
            decision: "allow",
            duration: Duration::from_millis(3),
        };
        let denied = RequestOutcome {
            status: 403,
            decision: "deny",
            ..allowed
        };
        metrics.request(&allowed, Some(&series));
        metrics.request(&allowed, Some(&series));
        metrics.request(&allowed, None);
        metrics.request(&denied, Some(&series));
        let text = String::from_utf8(metrics.render()).unwrap();
        for line in [
            r#"portcullis_requests_total{decision="allow",route="acme/api",status_class="2xx",tenant="acme"} 3"#,
            r#"portcullis_requests_total{decision="deny",route="acme/api",status_class="4xx",tenant="acme"} 1"#,
            r#"portcullis_request_duration_seconds_count{tenant="acme"} 4"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}
