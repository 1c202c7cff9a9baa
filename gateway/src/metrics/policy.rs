//! Following the admin plane: the policy bundle in effect and each fetch's result, for
//! `/metrics` and the `/readyz` details.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

pub(crate) struct PolicyMetrics {
    serial: IntGauge,
    fetches: IntCounterVec,
    /// The last fetch's result (`""` before the first).
    last: Mutex<&'static str>,
    in_effect: AtomicI64,
}

// As for `Metrics::new`: constant definitions, registered once.
#[allow(clippy::expect_used)]
impl PolicyMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let serial = IntGauge::new(
            "portcullis_policy_bundle_serial",
            "Serial of the admin plane's policy bundle in effect (-1: none, the file's tenants)",
        )
        .expect("valid metric");
        let fetches = IntCounterVec::new(
            Opts::new(
                "portcullis_policy_bundle_fetches_total",
                "Fetches of the admin plane's policy bundle by result (applied, unchanged, \
                 unreachable, refused, malformed, bad_signature, stale, invalid, local_files)",
            ),
            &["result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(serial.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(fetches.clone()))
            .expect("unique metric");
        serial.set(-1);
        Self {
            serial,
            fetches,
            last: Mutex::new(""),
            in_effect: AtomicI64::new(-1),
        }
    }

    pub(crate) fn fetched(&self, result: &'static str) {
        self.fetches.with_label_values(&[result]).inc();
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = result;
    }

    /// The generation now serving was built with this bundle (`None`: no bundle).
    pub(crate) fn in_effect(&self, serial: Option<u64>) {
        let value = serial.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
        self.serial.set(value);
        self.in_effect.store(value, Ordering::Relaxed);
    }

    /// A line for `/readyz` when the gateway follows an admin plane.
    pub(crate) fn readiness(&self) -> Option<String> {
        let last = *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_empty() && self.in_effect.load(Ordering::Relaxed) < 0 {
            return None;
        }
        let serial = self.in_effect.load(Ordering::Relaxed);
        let state = match last {
            "applied" | "unchanged" => "following",
            "" => "not fetched yet",
            _ => "degraded: running the last verified bundle",
        };
        Some(format!(
            "policy bundle: serial {serial}; admin plane {state} (last fetch: {})\n",
            if last.is_empty() { "none" } else { last }
        ))
    }
}
