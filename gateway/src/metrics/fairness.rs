//! `fairness` metrics: requests waiting for a slot, how long they waited, and those refused
//! after `queue_timeout`, per tenant.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::Metrics;

pub(super) struct FairnessMetrics {
    queued: IntGaugeVec,
    wait: HistogramVec,
    timeouts: IntCounterVec,
}

// As for `Metrics::new`: constant definitions, registered once.
#[allow(clippy::expect_used)]
impl FairnessMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let queued = IntGaugeVec::new(
            Opts::new(
                "portcullis_fairness_queued_requests",
                "Requests waiting for a slot because the gateway is at fairness.max_in_flight, by tenant",
            ),
            &["tenant"],
        )
        .expect("valid metric");
        let wait = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_fairness_wait_seconds",
                "How long queued requests waited for a slot, by tenant",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["tenant"],
        )
        .expect("valid metric");
        let timeouts = IntCounterVec::new(
            Opts::new(
                "portcullis_fairness_timeouts_total",
                "Requests refused 503 (overloaded) after waiting fairness.queue_timeout, by tenant",
            ),
            &["tenant"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(queued.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(wait.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(timeouts.clone()))
            .expect("unique metric");
        Self {
            queued,
            wait,
            timeouts,
        }
    }
}

impl Metrics {
    pub(crate) fn fairness_queued(&self, tenant: &str, delta: i64) {
        self.fairness.queued.with_label_values(&[tenant]).add(delta);
    }

    pub(crate) fn fairness_waited(&self, tenant: &str, waited: Duration) {
        self.fairness
            .wait
            .with_label_values(&[tenant])
            .observe(waited.as_secs_f64());
    }

    pub(crate) fn fairness_timeout(&self, tenant: &str) {
        self.fairness.timeouts.with_label_values(&[tenant]).inc();
    }
}
