//! Upstream discovery and failover metrics: targets found in DNS and failed lookups per
//! upstream, and requests a pool sent to another upstream's pool.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::Metrics;

pub(super) struct UpstreamMetrics {
    discovered: IntGaugeVec,
    discovery_errors: IntCounterVec,
    failover: IntCounterVec,
}

// As for `Metrics::new`: constant definitions, registered once.
#[allow(clippy::expect_used)]
impl UpstreamMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let discovered = IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_discovered_targets",
                "Targets of a DNS-discovered upstream's last good answer, by upstream",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let discovery_errors = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_discovery_errors_total",
                "DNS lookups of an upstream's targets that failed or found none (the last good \
                 targets stay), by upstream",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let failover = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_failover_total",
                "Requests sent to a fallback upstream's pool because the route's upstream had \
                 no healthy target, by upstream and fallback",
            ),
            &["upstream", "to"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(discovered.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(discovery_errors.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(failover.clone()))
            .expect("unique metric");
        Self {
            discovered,
            discovery_errors,
            failover,
        }
    }
}

impl Metrics {
    pub(crate) fn discovered_targets(&self, upstream: &str, count: usize) {
        self.upstreams
            .discovered
            .with_label_values(&[upstream])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// An upstream no longer discovered (gone from the config, or listed now): no gauge.
    pub(crate) fn forget_discovered(&self, upstream: &str) {
        let _ = self.upstreams.discovered.remove_label_values(&[upstream]);
    }

    pub(crate) fn discovery_errors(&self, upstream: &str, count: u64) {
        self.upstreams
            .discovery_errors
            .with_label_values(&[upstream])
            .inc_by(count);
    }

    /// The counter of requests `upstream` sent to `to` (kept by the route's fallback).
    pub(crate) fn failover_counter(&self, upstream: &str, to: &str) -> IntCounter {
        self.upstreams.failover.with_label_values(&[upstream, to])
    }
}
