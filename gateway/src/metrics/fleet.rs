//! Following the fleet's revocation set on etcd: whether etcd is reachable, the set's size,
//! watch restarts and malformed entries, for `/metrics` and the `/readyz` details.

use std::sync::{Arc, OnceLock};

use portcullis_fleet::FleetStatus;
use prometheus::{IntCounter, IntGauge, Registry};

pub(crate) struct FleetMetrics {
    status: OnceLock<Arc<FleetStatus>>,
    connected: IntGauge,
    revocations: IntGauge,
    watch_restarts: IntCounter,
    malformed: IntCounter,
}

// As for `Metrics::new`: constant definitions, registered once.
#[allow(clippy::expect_used)]
impl FleetMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let connected = IntGauge::new(
            "portcullis_fleet_connected",
            "1 while the fleet's etcd answers and its revocations are watched, else 0",
        )
        .expect("valid metric");
        let revocations = IntGauge::new(
            "portcullis_fleet_revocations",
            "Revocations in the fleet set in effect (enforced with the CRLs)",
        )
        .expect("valid metric");
        let watch_restarts = IntCounter::new(
            "portcullis_fleet_watch_restarts_total",
            "Times the watch of the fleet's revocations was started again (etcd lost, compaction)",
        )
        .expect("valid metric");
        let malformed = IntCounter::new(
            "portcullis_fleet_malformed_entries_total",
            "Entries under the fleet's revocation prefix ignored because they do not read",
        )
        .expect("valid metric");
        for gauge in [&connected, &revocations] {
            registry
                .register(Box::new(gauge.clone()))
                .expect("unique metric");
        }
        for counter in [&watch_restarts, &malformed] {
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
        }
        Self {
            status: OnceLock::new(),
            connected,
            revocations,
            watch_restarts,
            malformed,
        }
    }

    /// The fleet status to report from now on (set once, at start).
    pub(crate) fn follow(&self, status: Arc<FleetStatus>) {
        let _ = self.status.set(status);
    }

    /// Copies the status into the series before a scrape.
    pub(super) fn observe(&self) {
        let Some(status) = self.status.get() else {
            return;
        };
        let f = status.figures();
        self.connected.set(i64::from(f.connected));
        self.revocations
            .set(i64::try_from(f.revocations).unwrap_or(i64::MAX));
        super::catch_up(&self.watch_restarts, f.watch_restarts);
        super::catch_up(&self.malformed, f.malformed);
    }

    /// A line for `/readyz` when the gateway follows a fleet: cut off from etcd is degraded,
    /// not down (the last set seen stays in force).
    pub(crate) fn readiness(&self) -> Option<String> {
        let f = self.status.get()?.figures();
        Some(if f.connected {
            format!("fleet: following etcd ({} revocations)\n", f.revocations)
        } else {
            format!(
                "fleet: degraded: etcd unreachable, enforcing the last revocation set seen ({} revocations)\n",
                f.revocations
            )
        })
    }
}
