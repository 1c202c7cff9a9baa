//! Downstream connection metrics: open per listener, refused at accept, cut by a timeout.

use prometheus::{IntCounterVec, Opts, Registry};

use super::Metrics;
use crate::abuse::Escalation;

/// Downstream connections by listener: open, refused at accept, cut by a timeout.
pub(super) struct ConnectionMetrics {
    open: prometheus::IntGaugeVec,
    /// All listeners' open connections together, for draining.
    open_total: std::sync::atomic::AtomicI64,
    refused: IntCounterVec,
    timeouts: IntCounterVec,
    abuse: IntCounterVec,
}

// As for `Metrics::new`: constant definitions, registered once.
#[allow(clippy::expect_used)]
impl ConnectionMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
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
                 source_full, source_rate, identity_rate, proxy_source, proxy_header, \
                 proxy_header_size)",
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
        let abuse = IntCounterVec::new(
            Opts::new(
                "portcullis_abuse_escalations_total",
                "Refusals on connections whose requests keep being refused: answered late \
                 (slowed) or ending the connection (closed), by listener and action",
            ),
            &["listener", "action"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(open.clone()))
            .expect("unique metric");
        for c in [&refused, &timeouts, &abuse] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        Self {
            open,
            open_total: std::sync::atomic::AtomicI64::new(0),
            refused,
            timeouts,
            abuse,
        }
    }
}

impl Metrics {
    pub(crate) fn connection_opened(&self, listener: &str) {
        self.connections.open.with_label_values(&[listener]).inc();
        self.connections
            .open_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self, listener: &str) {
        self.connections.open.with_label_values(&[listener]).dec();
        self.connections
            .open_total
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Downstream connections open on every listener.
    pub(crate) fn connections_open(&self) -> i64 {
        self.connections
            .open_total
            .load(std::sync::atomic::Ordering::Relaxed)
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

    /// A refusal that slowed or closed its connection (`abuse`).
    pub(crate) fn abuse(&self, listener: &str, escalation: Escalation) {
        let action = match escalation {
            Escalation::Slow(_) => "slowed",
            Escalation::Close => "closed",
            Escalation::None => return,
        };
        self.connections
            .abuse
            .with_label_values(&[listener, action])
            .inc();
    }
}
