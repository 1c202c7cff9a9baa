//! What the fleet side of a process reports, for metrics and readiness.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters and gauges shared by the fleet's threads and the process's metrics.
#[derive(Debug, Default)]
pub struct FleetStatus {
    connected: AtomicBool,
    revocations: AtomicU64,
    watch_restarts: AtomicU64,
    malformed: AtomicU64,
    spooled: AtomicU64,
    published: AtomicU64,
    publish_failures: AtomicU64,
}

/// One reading of [`FleetStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusFigures {
    /// Whether the store answered last time it was asked (and the watch is running).
    pub connected: bool,
    /// Revocations in the set in effect (reading side).
    pub revocations: u64,
    /// Times the watch was started again (lost connection, compaction).
    pub watch_restarts: u64,
    /// Entries read from the store and ignored as malformed.
    pub malformed: u64,
    /// Revocations waiting in the spool for the store (writing side).
    pub spooled: u64,
    /// Revocations the store took from the spool.
    pub published: u64,
    /// Attempts to publish the spool that failed.
    pub publish_failures: u64,
}

impl FleetStatus {
    /// The figures now.
    pub fn figures(&self) -> StatusFigures {
        StatusFigures {
            connected: self.connected.load(Ordering::Relaxed),
            revocations: self.revocations.load(Ordering::Relaxed),
            watch_restarts: self.watch_restarts.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            spooled: self.spooled.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            publish_failures: self.publish_failures.load(Ordering::Relaxed),
        }
    }

    /// Sets whether the store is reachable; whether that changed.
    pub(crate) fn set_connected(&self, connected: bool) -> bool {
        self.connected.swap(connected, Ordering::Relaxed) != connected
    }

    pub(crate) fn set_revocations(&self, n: usize) {
        self.revocations.store(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn watch_restarted(&self) {
        self.watch_restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn malformed(&self, n: u64) {
        self.malformed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_spooled(&self, n: u64) {
        self.spooled.store(n, Ordering::Relaxed);
    }

    pub(crate) fn published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn publish_failed(&self) {
        self.publish_failures.fetch_add(1, Ordering::Relaxed);
    }
}
