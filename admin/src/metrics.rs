//! The admin API's Prometheus endpoint: `GET /metrics` on its own plain-HTTP listener
//! (`metrics:` in the admin config; keep it on loopback or a management network), rendered
//! from [`IssuanceStats`] at each scrape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::stats::{IssuanceStats, StatsSnapshot};

/// Serves `/metrics` on `listener` until the task is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    stats: Arc<IssuanceStats>,
    fleet: Option<Arc<portcullis_fleet::FleetStatus>>,
) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let stats = Arc::clone(&stats);
            let fleet = fleet.as_ref().map(|f| f.figures());
            async move { scrape(&stats.snapshot(), fleet.as_ref()) }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin metrics listener failed");
    }
}

/// Binds the metrics listener, so that a taken port is an error at start.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::AdminError::Listen { addr, source })
}

fn scrape(
    s: &StatsSnapshot,
    fleet: Option<&portcullis_fleet::StatusFigures>,
) -> axum::response::Response {
    let text = render(s).and_then(|mut text| {
        if let Some(f) = fleet {
            text.push_str(&render_fleet(f)?);
        }
        Ok(text)
    });
    match text {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "admin metrics: rendering failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The Prometheus text of one snapshot (counters since start, gauges now).
fn render(s: &StatsSnapshot) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let counter = |name: &str, help: &str, label: &str, values: &[(&str, u64)]| {
        let vec = IntCounterVec::new(Opts::new(name, help), &[label])?;
        for (value, n) in values {
            vec.with_label_values(&[*value]).inc_by(*n);
        }
        registry.register(Box::new(vec))
    };
    counter(
        "portcullis_admin_issuance_total",
        "Issuance and renewal requests by outcome.",
        "outcome",
        &[
            ("issued", s.issued),
            ("refused", s.refused),
            ("unavailable", s.unavailable),
        ],
    )?;
    let c = &s.closed;
    counter(
        "portcullis_admin_connections_closed_total",
        "Connections the admin API closed before their client did, by reason.",
        "reason",
        &[
            ("handshake_timeout", c.handshake_timeout),
            ("handshake_failed", c.handshake_failed),
            ("first_request_timeout", c.first_request_timeout),
            ("idle_timeout", c.idle_timeout),
            ("total_cap", c.total_cap),
            ("source_cap", c.source_cap),
            ("unauthenticated_cap", c.unauthenticated_cap),
        ],
    )?;
    let r = &s.rate_limited;
    counter(
        "portcullis_admin_rate_limited_total",
        "Requests answered 429, by the kind of key whose limit they ran into.",
        "key",
        &[
            ("identity", r.identity),
            ("token", r.token),
            ("source", r.source),
        ],
    )?;
    let w = &s.webhooks;
    counter(
        "portcullis_admin_webhook_deliveries_total",
        "Webhook delivery attempts by outcome (dropped: events lost before they were queued).",
        "outcome",
        &[
            ("delivered", w.delivered),
            ("retrying", w.retrying),
            ("dead", w.dead),
            ("dropped", w.dropped),
        ],
    )?;
    let open = IntGaugeVec::new(
        Opts::new(
            "portcullis_admin_connections_open",
            "Connections open now, by class.",
        ),
        &["class"],
    )?;
    for (class, n) in [
        ("handshaking", s.open.handshaking),
        ("unauthenticated", s.open.unauthenticated),
        ("certified", s.open.certified),
    ] {
        open.with_label_values(&[class])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    registry.register(Box::new(open))?;
    let mut text = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut text)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The fleet publisher's series: whether etcd took the last publish, revocations waiting in
/// the spool, published, and failed attempts.
fn render_fleet(f: &portcullis_fleet::StatusFigures) -> Result<String, prometheus::Error> {
    use prometheus::{IntCounter, IntGauge};
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, value: u64| {
        let g = IntGauge::new(name, help)?;
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(Box::new(g))
    };
    let counter = |name: &str, help: &str, value: u64| {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        registry.register(Box::new(c))
    };
    gauge(
        "portcullis_fleet_connected",
        "1 when etcd took the last revocations published, 0 after a failed attempt.",
        u64::from(f.connected),
    )?;
    gauge(
        "portcullis_fleet_spooled_revocations",
        "Revocations waiting in the spool for etcd.",
        f.spooled,
    )?;
    counter(
        "portcullis_fleet_published_total",
        "Revocations etcd took from the spool.",
        f.published,
    )?;
    counter(
        "portcullis_fleet_publish_failures_total",
        "Attempts to publish the spool to etcd that failed.",
        f.publish_failures,
    )?;
    let mut text = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut text)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_rendered_with_its_label() {
        let mut s = StatsSnapshot::default();
        s.closed.first_request_timeout = 7;
        s.rate_limited.token = 3;
        s.open.unauthenticated = 2;
        let text = render(&s).unwrap();
        for line in [
            "portcullis_admin_connections_closed_total{reason=\"first_request_timeout\"} 7",
            "portcullis_admin_rate_limited_total{key=\"token\"} 3",
            "portcullis_admin_connections_open{class=\"unauthenticated\"} 2",
            "portcullis_admin_issuance_total{outcome=\"issued\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
