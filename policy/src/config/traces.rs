//! The `tracing` section: OpenTelemetry spans exported over OTLP, with head sampling and the
//! callers whose `traceparent` the gateway continues. Applied at start.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use portcullis_identity::{SpiffeId, SpiffeIdPattern};

/// How spans travel to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (`POST …/v1/traces`).
    Http,
    /// OTLP/gRPC (`TraceService/Export`).
    Grpc,
}

/// The checked `tracing` section.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingSettings {
    /// The collector's URL, `http://` or `https://`.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// How an `https://` collector is verified and what the gateway presents to it; `None`
    /// for `http://`.
    pub tls: Option<OtlpTls>,
    /// How long one export may take before it is abandoned (its spans counted as dropped).
    pub timeout: Duration,
    /// The share of new traces that are recorded, 0.0 to 1.0.
    pub ratio: f64,
    /// A trusted parent's sampled flag decides for its request.
    pub parent_based: bool,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Whose `traceparent` is continued.
    pub trust: TraceparentTrust,
    /// Finished spans queued for the exporter at most; more are dropped and counted.
    pub max_queued_spans: usize,
}

/// TLS to the collector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtlpTls {
    /// CA certificates (PEM) to verify the collector with; `None`: the webpki roots.
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate and its key (PEM files).
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The callers whose `traceparent` (and `tracestate`) the gateway continues. Empty: nobody's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceparentTrust {
    pub from: Vec<IpNet>,
    pub spiffe_ids: Vec<SpiffeIdPattern>,
}

impl TraceparentTrust {
    /// Whether a request from `client` with the certificate's `spiffe_id` may continue its
    /// caller's trace.
    pub fn trusts(&self, client: Option<IpAddr>, spiffe_id: Option<&SpiffeId>) -> bool {
        client.is_some_and(|ip| self.from.iter().any(|net| net.contains(&ip)))
            || spiffe_id.is_some_and(|id| self.spiffe_ids.iter().any(|p| p.matches(id)))
    }

    /// Whether nobody is trusted (the common case: no check per request).
    pub fn is_empty(&self) -> bool {
        self.from.is_empty() && self.spiffe_ids.is_empty()
    }
}
