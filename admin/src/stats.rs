//! The admin API's counters (atomics), read through
//! [`AdminServer::stats`](crate::AdminServer::stats): issuance outcomes, open connections by
//! class, connections the server closed by reason, requests refused by a rate limit.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts since start.
#[derive(Debug, Default)]
pub struct IssuanceStats {
    issued: AtomicU64,
    refused: AtomicU64,
    unavailable: AtomicU64,
    open: [AtomicU64; 3],
    closed: [AtomicU64; 7],
    rate_limited: [AtomicU64; 3],
    webhooks: [AtomicU64; 4],
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
    /// Connections open now.
    pub open: OpenConnections,
    /// Connections the server closed before their client did.
    pub closed: ClosedConnections,
    /// Requests answered 429.
    pub rate_limited: RateLimited,
    /// Webhook delivery attempts and events, by outcome.
    pub webhooks: WebhookOutcomes,
}

/// Webhook delivery attempts by outcome, and events dropped before they were queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WebhookOutcomes {
    /// The receiver answered 2xx.
    pub delivered: u64,
    /// The attempt failed; another is scheduled.
    pub retrying: u64,
    /// The last attempt failed: the delivery is a dead letter.
    pub dead: u64,
    /// Events dropped because the queue in front of the store was full.
    pub dropped: u64,
}

/// The outcome of a webhook attempt, or an event dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookOutcome {
    Delivered = 0,
    Retrying = 1,
    Dead = 2,
    Dropped = 3,
}

/// Open connections by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpenConnections {
    /// Accepted, TLS handshake not finished.
    pub handshaking: u64,
    /// Handshake finished without a client certificate.
    pub unauthenticated: u64,
    /// Handshake finished with a verified client certificate.
    pub certified: u64,
}

/// Connections closed by the server, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClosedConnections {
    /// The TLS handshake did not finish within `handshake_timeout`.
    pub handshake_timeout: u64,
    /// The TLS handshake failed (bad or refused certificate, protocol error).
    pub handshake_failed: u64,
    /// No complete first request head within `first_request_timeout`.
    pub first_request_timeout: u64,
    /// No request in progress for `idle_timeout`.
    pub idle_timeout: u64,
    /// At accept: `max_connections` reached.
    pub total_cap: u64,
    /// At accept: `max_connections_per_source` reached for its address.
    pub source_cap: u64,
    /// After the handshake, without a certificate: `max_unauthenticated_connections` reached.
    pub unauthenticated_cap: u64,
}

/// Requests answered 429, by the limit they ran into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RateLimited {
    /// `per_identity` or `per_operator`.
    pub identity: u64,
    /// `per_token`.
    pub token: u64,
    /// `per_source`.
    pub source: u64,
}

/// The class of an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnClass {
    Handshaking = 0,
    Unauthenticated = 1,
    Certified = 2,
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    HandshakeTimeout = 0,
    HandshakeFailed = 1,
    FirstRequestTimeout = 2,
    IdleTimeout = 3,
    TotalCap = 4,
    SourceCap = 5,
    UnauthenticatedCap = 6,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::HandshakeFailed => "handshake_failed",
            CloseReason::FirstRequestTimeout => "first_request_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::TotalCap => "total_cap",
            CloseReason::SourceCap => "source_cap",
            CloseReason::UnauthenticatedCap => "unauthenticated_cap",
        }
    }
}

/// The kind of key whose rate limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitKey {
    Identity = 0,
    Token = 1,
    Source = 2,
}

impl LimitKey {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitKey::Identity => "identity",
            LimitKey::Token => "token",
            LimitKey::Source => "source",
        }
    }
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

    pub(crate) fn opened(&self, class: ConnClass) {
        self.open[class as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn left(&self, class: ConnClass) {
        self.open[class as usize].fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rate_limited(&self, key: LimitKey) {
        self.rate_limited[key as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn webhook(&self, outcome: WebhookOutcome) {
        self.webhooks[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let [handshaking, unauthenticated, certified] = self.open.each_ref().map(load);
        let [handshake_timeout, handshake_failed, first_request_timeout, idle_timeout, total_cap, source_cap, unauthenticated_cap] =
            self.closed.each_ref().map(load);
        let [identity, token, source] = self.rate_limited.each_ref().map(load);
        let [delivered, retrying, dead, dropped] = self.webhooks.each_ref().map(load);
        StatsSnapshot {
            issued: load(&self.issued),
            refused: load(&self.refused),
            unavailable: load(&self.unavailable),
            open: OpenConnections {
                handshaking,
                unauthenticated,
                certified,
            },
            closed: ClosedConnections {
                handshake_timeout,
                handshake_failed,
                first_request_timeout,
                idle_timeout,
                total_cap,
                source_cap,
                unauthenticated_cap,
            },
            rate_limited: RateLimited {
                identity,
                token,
                source,
            },
            webhooks: WebhookOutcomes {
                delivered,
                retrying,
                dead,
                dropped,
            },
        }
    }
}
