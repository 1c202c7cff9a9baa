//! Prometheus metrics and the operations listener (`/metrics`, `/healthz`, `/readyz`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

mod audit;
mod connections;
mod fairness;
mod fleet;
mod ops;
mod policy;
mod traces;
mod upstreams;

use audit::{catch_up, AuditMetrics};
use connections::ConnectionMetrics;
use fairness::FairnessMetrics;
use upstreams::UpstreamMetrics;

pub(crate) use ops::{plain_response, OpsEndpoint};
pub(crate) use traces::TraceMetrics;

/// Every metric the gateway exports, registered in its own registry.
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    tls_failures: IntCounterVec,
    upstream_errors: IntCounterVec,
    reloads: IntCounterVec,
    crl_loads: IntCounterVec,
    bundle_fetches: IntCounterVec,
    /// Following the admin plane's policy bundle.
    pub(crate) policy: policy::PolicyMetrics,
    /// Following the fleet's revocation set on etcd.
    pub(crate) fleet: fleet::FleetMetrics,
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
    fairness: FairnessMetrics,
    upstreams: UpstreamMetrics,
    /// The trace exporter's counters (handed to it at start).
    pub(crate) traces: TraceMetrics,
    ready: AtomicBool,
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
        let bundle_fetches = IntCounterVec::new(
            Opts::new(
                "portcullis_trust_bundle_fetches_total",
                "SPIFFE bundle endpoint fetches, by trust domain and result",
            ),
            &["trust_domain", "result"],
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
        let fairness = FairnessMetrics::new(&registry);
        let upstreams = UpstreamMetrics::new(&registry);
        let policy = policy::PolicyMetrics::new(&registry);
        let fleet = fleet::FleetMetrics::new(&registry);
        let traces = TraceMetrics::register(&registry);
        for c in [
            &requests,
            &tls_failures,
            &upstream_errors,
            &reloads,
            &crl_loads,
            &bundle_fetches,
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
            bundle_fetches,
            policy,
            fleet,
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
            fairness,
            upstreams,
            traces,
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

    pub(crate) fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
    }

    pub(crate) fn crl_load(&self, listener: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.crl_loads.with_label_values(&[listener, result]).inc();
    }

    pub(crate) fn bundle_fetch(&self, trust_domain: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.bundle_fetches
            .with_label_values(&[trust_domain, result])
            .inc();
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
        self.fleet.observe();
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
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
