//! The trace exporter's counters: spans exported, and spans dropped (queue full, export
//! failed). Registered whether or not tracing is on (then they stay at zero).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone, Debug)]
pub(crate) struct TraceMetrics {
    exported: IntCounter,
    dropped: IntCounterVec,
}

// As for `Metrics::new`: constant definitions, registered once.
#[allow(clippy::expect_used)]
impl TraceMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let exported = IntCounter::new(
            "portcullis_trace_spans_exported_total",
            "Spans the OTLP collector accepted",
        )
        .expect("valid metric");
        let dropped = IntCounterVec::new(
            Opts::new(
                "portcullis_trace_spans_dropped_total",
                "Spans dropped: the export queue was full (queue_full) or their export failed or timed out (export_failed)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in ["queue_full", "export_failed"] {
            dropped.with_label_values(&[reason]);
        }
        registry
            .register(Box::new(exported.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(dropped.clone()))
            .expect("unique metric");
        Self { exported, dropped }
    }

    pub(crate) fn exported(&self, spans: u64) {
        self.exported.inc_by(spans);
    }

    pub(crate) fn dropped(&self, reason: &'static str, spans: u64) {
        self.dropped.with_label_values(&[reason]).inc_by(spans);
    }
}
