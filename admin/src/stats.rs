//! Issuance counters (atomics), read through [`AdminServer::stats`](crate::AdminServer::stats).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of issuance outcomes since start.
#[derive(Debug, Default)]
pub struct IssuanceStats {
    issued: AtomicU64,
    refused: AtomicU64,
    unavailable: AtomicU64,
}

/// A copy of [`IssuanceStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Certificates issued through the API.
    pub issued: u64,
    /// Requests refused by the CA's profiles or by the identity checks of this API.
    pub refused: u64,
    /// Requests answered 503 because the CA's key backend was unavailable.
    pub unavailable: u64,
}

impl IssuanceStats {
    pub(crate) fn issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unavailable(&self) {
        self.unavailable.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            issued: self.issued.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            unavailable: self.unavailable.load(Ordering::Relaxed),
        }
    }
}
