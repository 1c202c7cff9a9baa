//! The config file's exact shape, as serde reads it. Unknown keys are errors everywhere.
//!
//! Addresses, CIDRs and names are kept as text here and parsed in `check`, so that all their
//! problems are reported together, each with its line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ClientAuth, UpstreamProtocol};
#[cfg(feature = "schema")]
use portcullis_identity::schema::HumanDuration;

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "GatewayConfig")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// TLS listeners (at least one).
    #[serde(default)]
    pub(crate) listeners: Vec<RawListener>,
    /// The metrics and health listener: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub(crate) metrics: Option<RawMetrics>,
    /// Shutdown on SIGTERM.
    #[serde(default)]
    pub(crate) shutdown: Option<RawShutdown>,
    /// The services routes forward to.
    #[serde(default)]
    pub(crate) upstreams: Vec<RawUpstream>,
    /// Tenants, each with its routes, limits, DLP and identity providers.
    #[serde(default)]
    pub(crate) tenants: Vec<RawTenant>,
    /// The audit log; without it nothing is audited (a warning says so).
    #[serde(default)]
    pub(crate) audit: Option<RawAudit>,
    /// Request head limits and headers stripped before forwarding.
    #[serde(default)]
    pub(crate) http: Option<RawHttp>,
    /// A signed JWT naming the caller, sent to upstreams as `x-portcullis-assertion`.
    #[serde(default)]
    pub(crate) identity_assertion: Option<RawAssertion>,
    /// The browser login's session cookies (routes with `login`).
    #[serde(default)]
    pub(crate) sessions: Option<RawSessions>,
    /// A share of the gateway for every tenant when it is saturated.
    #[serde(default)]
    pub(crate) fairness: Option<RawFairness>,
    /// Sidecar outbound listeners: plain HTTP from the local workload, on loopback.
    #[serde(default)]
    pub(crate) egress: Vec<RawEgress>,
    /// OpenTelemetry traces exported over OTLP; without it nothing is traced.
    #[serde(default)]
    pub(crate) tracing: Option<RawTracing>,
    /// Tenants' policies followed from the admin plane (signed), on top of this file's.
    #[serde(default)]
    pub(crate) policy_source: Option<RawPolicySource>,
    /// The fleet's etcd cluster: the revocation set every gateway enforces with its CRLs.
    #[serde(default)]
    pub(crate) fleet: Option<RawFleet>,
}

/// `fleet`: the etcd cluster holding the fleet's revocation set, watched by the gateway.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Fleet")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    /// etcd client URLs, `http://host:port` or `https://host:port` (with `tls`).
    pub(crate) endpoints: Vec<String>,
    /// Key prefix (default `/portcullis`); revocations are under `PREFIX/revoked/`.
    #[serde(default)]
    pub(crate) prefix: Option<String>,
    /// TLS to etcd.
    #[serde(default)]
    pub(crate) tls: Option<RawFleetTls>,
    /// Where the last revocation set seen is kept; read at start, so a gateway restarted while
    /// etcd is unreachable still refuses what it last saw.
    pub(crate) cache: PathBuf,
}

/// `fleet.tls`: etcd's CA, and a client certificate when etcd asks for one.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "FleetTls")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleetTls {
    pub(crate) ca: PathBuf,
    #[serde(default)]
    pub(crate) client_certificate: Option<PathBuf>,
    #[serde(default)]
    pub(crate) client_key: Option<PathBuf>,
}

/// `policy_source`: the admin plane whose activated tenant policies the gateway runs.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "PolicySource")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicySource {
    /// `https://host:port` of the admin API.
    pub(crate) url: String,
    /// Trust bundle for the admin API's certificate.
    pub(crate) ca: PathBuf,
    /// The gateway's client certificate (chain, PEM) and key, listed in the admin config's
    /// `policies.gateways`.
    pub(crate) client_certificate: PathBuf,
    pub(crate) client_key: PathBuf,
    /// The admin plane's policy signing key (public, PEM): bundles not signed by it are refused.
    pub(crate) public_key: PathBuf,
    /// Where the last verified bundle is kept; read at start, so a gateway that cannot reach
    /// the admin plane keeps running the policies it last saw.
    pub(crate) cache: PathBuf,
    /// How often the admin plane is asked (default 5s; 200ms to 1h).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) interval: Option<Duration>,
}

/// `tracing`: a span per request (children for the phases that cost time), exported over OTLP.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Tracing")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTracing {
    /// Where spans are sent.
    pub(crate) otlp: RawOtlp,
    /// Which requests are traced (default: every one).
    #[serde(default)]
    pub(crate) sampling: Option<RawSampling>,
    /// The `service.name` of the spans (default `portcullis`).
    #[serde(default)]
    pub(crate) service_name: Option<String>,
    /// Callers whose `traceparent` is continued; anyone else's starts a new trace (default:
    /// nobody's).
    #[serde(default)]
    pub(crate) trust_traceparent: Option<RawTraceparentTrust>,
    /// Finished spans waiting for the exporter at most; beyond it spans are dropped and
    /// counted (default 4096; 1 to 1000000).
    #[serde(default)]
    pub(crate) max_queued_spans: Option<usize>,
}

/// The OTLP collector.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Otlp")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOtlp {
    /// `http(s)://host:port/v1/traces` (protocol `http`) or `http(s)://host:port` (protocol
    /// `grpc`); `https://` verifies the collector (public roots, or `tls.ca`).
    pub(crate) endpoint: String,
    /// `http` (OTLP/HTTP, protobuf; the default) or `grpc`.
    #[serde(default)]
    pub(crate) protocol: Option<String>,
    /// How long one export may take (default 10s; 1ms to 60s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) timeout: Option<Duration>,
    /// TLS to an `https://` collector: its CA, and a client certificate if it asks for one.
    #[serde(default)]
    pub(crate) tls: Option<RawOtlpTls>,
}

/// `tracing.otlp.tls`.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "OtlpTls")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOtlpTls {
    /// CA certificates (PEM) the collector's certificate chains to (default: the public web
    /// PKI's roots).
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    /// A client certificate (PEM) presented to the collector; with `client_key`.
    #[serde(default)]
    pub(crate) client_certificate: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub(crate) client_key: Option<PathBuf>,
}

/// Head sampling.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Sampling")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSampling {
    /// The share of new traces recorded and exported, 0.0 to 1.0 (default 1.0).
    #[serde(default)]
    pub(crate) ratio: Option<f64>,
    /// A trusted caller's sampling decision (its `traceparent`'s flag) is followed (default
    /// true).
    #[serde(default)]
    pub(crate) parent_based: Option<bool>,
}

/// Whose `traceparent` is continued: a caller from one of these networks or with one of these
/// SPIFFE IDs.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "TraceparentTrust")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTraceparentTrust {
    /// Client networks (CIDRs or addresses), as the request's client address resolves.
    #[serde(default)]
    pub(crate) from: Vec<String>,
    /// SPIFFE ID patterns of the caller's certificate (`*` one segment, final `**` more).
    #[serde(default)]
    pub(crate) spiffe_ids: Vec<String>,
}

/// A sidecar's outbound listener: the local workload sends plain HTTP here, and the gateway
/// judges each request as coming from `workload` before forwarding it over (m)TLS.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Egress")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEgress {
    /// The listener's name (metrics, logs).
    pub(crate) name: String,
    /// The address to bind: loopback (`127.0.0.1:15001`, `[::1]:15001`) unless
    /// `allow_non_loopback`.
    pub(crate) address: String,
    /// The SPIFFE ID of the workload whose outbound calls arrive here: rules, limits, logs and
    /// audit records name it.
    pub(crate) workload: String,
    /// Bind a non-loopback address (anyone who can reach it speaks as `workload`).
    #[serde(default)]
    pub(crate) allow_non_loopback: bool,
    /// Connection bounds; each omitted key takes its default.
    #[serde(default)]
    pub(crate) connections: Option<RawConnections>,
}

/// `identity_assertion`: a JWT the gateway signs for each upstream request, saying who called.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Assertion")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAssertion {
    /// P-256 PKCS#8 PEM key file, mode 0600 (or `signing_pkcs11`).
    #[serde(default)]
    pub(crate) signing_key: Option<PathBuf>,
    /// The signing key in a PKCS#11 token (P-256, generated there if missing).
    #[serde(default)]
    pub(crate) signing_pkcs11: Option<RawPkcs11Key>,
    /// The JWT's `iss` (default `portcullis`).
    #[serde(default)]
    pub(crate) issuer: Option<String>,
    /// How long an assertion is valid (default 60s; 10s to 1h).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) lifetime: Option<Duration>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Http")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    /// Headers removed before forwarding, on top of the built-in list (`x-internal-*` patterns).
    #[serde(default)]
    pub(crate) strip_headers: Vec<String>,
    /// Bytes of a request head at most (default 32768; 431 above).
    #[serde(default)]
    pub(crate) max_request_head: Option<usize>,
    /// Bytes of one header line at most (default 8192; 431 above).
    #[serde(default)]
    pub(crate) max_header_line: Option<usize>,
}

/// `fairness`: requests beyond `max_in_flight` wait, per tenant, for a slot; a freed slot
/// goes to the waiting tenant with the fewest requests in flight for its weight.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Fairness")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFairness {
    /// Requests served at once, all tenants together (1 to 1000000).
    pub(crate) max_in_flight: u32,
    /// How long a request may wait for a slot before it is refused 503 (default 1s; 1ms to
    /// 60s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) queue_timeout: Option<Duration>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Audit")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    /// Folder of the segment files.
    pub(crate) directory: PathBuf,
    /// This node's id in every record (default: the host name).
    #[serde(default)]
    pub(crate) node: Option<String>,
    /// `fail-closed` (default: a request waits for its record to be durable, else 503) or
    /// `best-effort`.
    #[serde(default)]
    pub(crate) mode: Option<String>,
    /// How long a request waits for its record (default 250ms, at most 10s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) durable_timeout: Option<Duration>,
    /// Ed25519 PKCS#8 key file for checkpoints, created 0600 if missing (or `signing_pkcs11`).
    #[serde(default)]
    pub(crate) signing_key: Option<PathBuf>,
    /// The checkpoint key in a PKCS#11 token (P-256, generated there if missing).
    #[serde(default)]
    pub(crate) signing_pkcs11: Option<RawPkcs11Key>,
    /// A signed checkpoint after this many records (default 10000)...
    #[serde(default)]
    pub(crate) checkpoint_every: Option<u64>,
    /// ...or after this long (default 60s), whichever first.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) checkpoint_interval: Option<Duration>,
    /// Size at which a segment file is closed (default 64 MiB).
    #[serde(default)]
    pub(crate) segment_bytes: Option<u64>,
    /// Whole segments older than this are deleted, with a signed record (at least 1h).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) retention: Option<Duration>,
    /// Keep query strings in records (default false: they often carry secrets).
    #[serde(default)]
    pub(crate) include_query: bool,
    /// The segment files' byte budget (default 10 GiB; at least 64 KiB and twice segment_bytes).
    #[serde(default)]
    pub(crate) max_bytes: Option<u64>,
    /// Bounds on the records of requests refused before admission.
    #[serde(default)]
    pub(crate) refusals: Option<RawRefusalRecords>,
    /// A central PostgreSQL store the log is shipped to.
    #[serde(default)]
    pub(crate) postgres: Option<RawAuditPostgres>,
    /// The latest signed checkpoint, also written here (for `audit verify --expect-head`).
    #[serde(default)]
    pub(crate) head_file: Option<PathBuf>,
    /// Where the signing key's public half is written (default: beside a key file as
    /// `KEY.pub`, or `DIRECTORY.pub` for a key in a token). Set it when the key file is in a
    /// read-only place such as a systemd credential or a mounted secret.
    #[serde(default)]
    pub(crate) public_key: Option<PathBuf>,
}

/// `audit.refusals`; each omitted key takes its default.
#[derive(Deserialize, Debug, Default)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "RefusalRecords")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRefusalRecords {
    /// Path (and query) cut to this many bytes, length and SHA-256 kept (default 1024; 64-65536).
    #[serde(default)]
    pub(crate) path_bytes: Option<usize>,
    /// Detailed records per client address per interval (default 100).
    #[serde(default)]
    pub(crate) per_source: Option<u32>,
    /// The interval (default 1m; 1s to 1h); beyond per_source, counted and summarised once.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) interval: Option<Duration>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Pkcs11Key")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPkcs11Key {
    /// The PKCS#11 module (default SoftHSM2's).
    #[serde(default)]
    pub(crate) module: Option<PathBuf>,
    /// The token's label.
    pub(crate) token_label: String,
    /// A file holding the PIN, mode 0600 (or `pin_env`; never inline).
    #[serde(default)]
    pub(crate) pin_file: Option<PathBuf>,
    /// An environment variable holding the PIN (or `pin_file`).
    #[serde(default)]
    pub(crate) pin_env: Option<String>,
    /// The key's label in the token.
    pub(crate) key_label: String,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "AuditPostgres")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuditPostgres {
    /// A libpq connection string without a password (or `conninfo_env` / `conninfo_file`).
    #[serde(default)]
    pub(crate) conninfo: Option<String>,
    /// An environment variable holding the connection string.
    #[serde(default)]
    pub(crate) conninfo_env: Option<String>,
    /// A file holding the connection string.
    #[serde(default)]
    pub(crate) conninfo_file: Option<PathBuf>,
    /// TLS to the server, verified in full (required unless `insecure_plaintext`).
    #[serde(default)]
    pub(crate) tls: Option<RawPostgresTls>,
    /// Clear text to the server: only on a trusted network.
    #[serde(default)]
    pub(crate) insecure_plaintext: bool,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "PostgresTls")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgresTls {
    /// The CA that signed the server's certificate.
    pub(crate) ca: PathBuf,
    /// A client certificate (with `client_key`).
    #[serde(default)]
    pub(crate) client_certificate: Option<PathBuf>,
    /// The client certificate's key.
    #[serde(default)]
    pub(crate) client_key: Option<PathBuf>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Listener")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    /// The listener's name (metrics, logs).
    pub(crate) name: String,
    /// The address to bind, e.g. `0.0.0.0:443`.
    pub(crate) address: String,
    /// The server certificate and client certificate checks.
    pub(crate) tls: RawListenerTls,
    /// CIDRs whose X-Forwarded-For is believed (default none).
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    /// Connection bounds; each omitted key takes its default.
    #[serde(default)]
    pub(crate) connections: Option<RawConnections>,
}

/// A listener's connection bounds; each omitted key takes its default.
#[derive(Deserialize, Debug, Default)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Connections")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnections {
    /// Accept to a completed TLS handshake (default 10s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) handshake_timeout: Option<Duration>,
    /// For a complete request head (default 10s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) request_head_timeout: Option<Duration>,
    /// HTTP/1 keep-alive without a request (default 60s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) idle_timeout: Option<Duration>,
    /// HTTP/2 connection without a stream (default 60s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) h2_idle_timeout: Option<Duration>,
    /// A write that makes no progress (default 30s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) write_timeout: Option<Duration>,
    /// A body (or an upgraded connection) without bytes (default 30s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) body_idle_timeout: Option<Duration>,
    /// Open connections on this listener (default 10000).
    #[serde(default)]
    pub(crate) max_connections: Option<u32>,
    /// Open connections from one address (default 256).
    #[serde(default)]
    pub(crate) max_connections_per_source: Option<u32>,
    /// Requests on one connection (default 1000).
    #[serde(default)]
    pub(crate) max_requests_per_connection: Option<u32>,
    /// HTTP/2 streams at once (default 100).
    #[serde(default)]
    pub(crate) h2_max_concurrent_streams: Option<u32>,
    /// HTTP/2 header list bytes (default 32768).
    #[serde(default)]
    pub(crate) h2_max_header_list_size: Option<u32>,
    /// Older connections end after their current request (default 10m; 1s to 24h).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) max_connection_age: Option<Duration>,
    /// Behind an L4 balancer: read a PROXY header (v1 or v2) from these sources.
    #[serde(default)]
    pub(crate) proxy_protocol: Option<RawProxyProtocol>,
    /// Callers who keep reconnecting or keep being refused: slowed, then closed.
    #[serde(default)]
    pub(crate) abuse: Option<RawAbuse>,
}

/// `connections.abuse`; each omitted key takes its default.
#[derive(Deserialize, Debug, Default)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Abuse")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAbuse {
    /// New connections per source address, counted at accept before TLS (default 200 per
    /// 1s), or `off`.
    #[serde(default)]
    pub(crate) connection_rate_per_source: Option<RawRateOrOff>,
    /// New connections per client identity, counted after the handshake (default 100 per
    /// 1s), or `off`.
    #[serde(default)]
    pub(crate) connection_rate_per_identity: Option<RawRateOrOff>,
    /// When a connection's refused requests are slowed, then the connection closed.
    #[serde(default)]
    pub(crate) refusals: Option<RawRefusals>,
    /// Addresses or CIDRs none of this applies to.
    #[serde(default)]
    pub(crate) exempt: Vec<String>,
}

/// A connection rate, or `off`.
#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub(crate) enum RawRateOrOff {
    Off(RawOff),
    Rate(RawConnectionRate),
}

#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawOff {
    Off,
}

/// New connections allowed per period.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ConnectionRate")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnectionRate {
    /// Connections per `per`.
    pub(crate) connections: u32,
    /// The period (default 1s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) per: Option<Duration>,
    /// Burst size (default `connections`).
    #[serde(default)]
    pub(crate) burst: Option<u32>,
}

/// `connections.abuse.refusals`.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "AbuseRefusals")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRefusals {
    /// The window refusals are counted in (default 10s; 1s to 1h).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) window: Option<Duration>,
    /// Refusals in the window answered at once (default 20).
    #[serde(default)]
    pub(crate) slow_after: Option<u32>,
    /// How late each further refusal is answered (default 250ms; at most 10s), spread over
    /// half to one and a half times it so that slowed connections do not come back in step.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) delay: Option<Duration>,
    /// The refusal that closes the connection (default 50).
    #[serde(default)]
    pub(crate) close_after: Option<u32>,
}

/// `connections.proxy_protocol`: the balancers allowed to send a PROXY header.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ProxyProtocol")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxyProtocol {
    /// The balancers' CIDRs (required, non-empty); nobody else may connect.
    pub(crate) from: Vec<String>,
    /// Accept to the header's last byte (default 5s; 100ms to 60s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) timeout: Option<Duration>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ListenerTls")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerTls {
    /// The server certificate chain (PEM); relative paths resolve against the config's folder.
    pub(crate) certificate: PathBuf,
    /// The server certificate's key (PEM).
    pub(crate) private_key: PathBuf,
    /// `required` (default), `optional` or `off`.
    #[serde(default)]
    pub(crate) client_auth: ClientAuth,
    /// Trust anchors for client certificates (PEM).
    #[serde(default)]
    pub(crate) client_ca: Option<PathBuf>,
    /// Instead of `client_ca`: a bundle per SPIFFE trust domain; a client certificate is
    /// verified only against the bundle of its SPIFFE ID's trust domain.
    #[serde(default)]
    pub(crate) trust_domains: Option<Vec<RawTrustDomain>>,
    /// A CRL (PEM) of revoked client certificates, re-read when it changes.
    #[serde(default)]
    pub(crate) crl: Option<PathBuf>,
    /// Obtain and renew `certificate`/`private_key` from the CA's issuance API.
    #[serde(default)]
    pub(crate) issuer: Option<RawIssuer>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Issuer")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIssuer {
    /// The issuance API, e.g. `https://ca.internal:9443`.
    pub(crate) url: String,
    /// The CA bundle the API's certificate is checked against.
    pub(crate) ca: PathBuf,
    /// A one-time token for the first certificate; renewals use the current one.
    #[serde(default)]
    pub(crate) bootstrap_token_file: Option<PathBuf>,
    /// DNS names to request.
    #[serde(default)]
    pub(crate) dns_names: Vec<String>,
    /// A SPIFFE ID to request.
    #[serde(default)]
    pub(crate) spiffe_id: Option<String>,
    /// The CA profile to issue under.
    #[serde(default)]
    pub(crate) profile: Option<String>,
    /// The lifetime to request.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) lifetime: Option<Duration>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Metrics")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    /// Address of `/metrics`, `/healthz`, `/readyz` (default 127.0.0.1:9901).
    #[serde(default)]
    pub(crate) address: Option<String>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Shutdown")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShutdown {
    /// How long in-flight requests get to finish after SIGTERM (default 10s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) grace_period: Option<Duration>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Upstream")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    /// The name routes refer to.
    pub(crate) name: String,
    /// `IP:port` addresses (names are not resolved), balanced round-robin. Either `targets`
    /// or `dns`.
    #[serde(default)]
    pub(crate) targets: Option<Vec<String>>,
    /// The targets found in DNS instead (A/AAAA of a name with a port, or SRV records),
    /// refreshed in the background as their TTL runs out.
    #[serde(default)]
    pub(crate) dns: Option<RawDns>,
    /// Other upstreams whose pools take this one's requests, in this order, while none of
    /// its targets is healthy (needs `health_check`). Their own `failover` lists are not
    /// followed, so two regions may name each other.
    #[serde(default)]
    pub(crate) failover: Option<Vec<String>>,
    /// Connect timeout.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) connect_timeout: Option<Duration>,
    /// Read timeout.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) read_timeout: Option<Duration>,
    /// TLS or mTLS to the upstream.
    #[serde(default)]
    pub(crate) tls: Option<RawUpstreamTls>,
    /// `http1` (default) or `http2` (over TLS by ALPN, else h2c; needed for gRPC).
    #[serde(default)]
    pub(crate) protocol: UpstreamProtocol,
    /// An HTTP health check of each target.
    #[serde(default)]
    pub(crate) health_check: Option<RawHealthCheck>,
}

/// An upstream's targets from DNS: `name` and `port` (A/AAAA records), or `srv`.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "UpstreamDns")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    /// A name whose A and AAAA records are the targets' addresses (with `port`).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// The port of every address `name` resolves to.
    #[serde(default)]
    pub(crate) port: Option<u16>,
    /// An SRV name (`_service._tcp.domain`): its records give the targets and their ports.
    #[serde(default)]
    pub(crate) srv: Option<String>,
    /// The name server to ask, `IP:port` or `IP` (port 53); default: the system's
    /// (`/etc/resolv.conf`).
    #[serde(default)]
    pub(crate) resolver: Option<String>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "TrustDomain")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrustDomain {
    /// The trust domain, e.g. `example.org`.
    pub(crate) name: String,
    /// Its CA certificates (PEM); with `endpoint`, where the last good bundle fetched is kept.
    pub(crate) bundle: PathBuf,
    /// The trust domain's SPIFFE bundle endpoint (`https_web`), fetched again and again.
    #[serde(default)]
    pub(crate) endpoint: Option<RawBundleEndpoint>,
}

/// A SPIFFE bundle endpoint.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "BundleEndpoint")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBundleEndpoint {
    /// `https://…` of the bundle document.
    pub(crate) url: String,
    /// Trust anchors for the endpoint's server certificate (default: the web PKI roots).
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    /// How often to fetch (default 5m; sooner when the bundle's refresh hint says so, never
    /// more than every 30s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) refresh: Option<Duration>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "UpstreamTls")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    /// The name sent in SNI that the upstream's certificate must carry. At least one of
    /// `server_name` and `spiffe_id` is required; with both, both are checked.
    #[serde(default)]
    pub(crate) server_name: Option<String>,
    /// SPIFFE ID patterns (`spiffe://td/path`, `*` one segment, `**` the rest): the upstream's
    /// certificate must carry exactly one SPIFFE ID, matching one of them. Needs `ca`.
    #[serde(default)]
    pub(crate) spiffe_id: Option<Vec<String>>,
    /// Trust anchors for the upstream's certificate.
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    /// The gateway's client certificate (mTLS).
    #[serde(default)]
    pub(crate) client_certificate: Option<PathBuf>,
    /// Its key.
    #[serde(default)]
    pub(crate) client_key: Option<PathBuf>,
    /// Obtain and renew the client certificate from the CA's issuance API.
    #[serde(default)]
    pub(crate) issuer: Option<RawIssuer>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "HealthCheck")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    /// The path requested on each target.
    pub(crate) path: String,
    /// How often.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) interval: Option<Duration>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Tenant")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    /// The tenant id (1-63 of a-z 0-9 -).
    pub(crate) name: String,
    /// Rate, in-flight and body-size limits.
    #[serde(default)]
    pub(crate) limits: Option<RawTenantLimits>,
    /// DLP detectors and actions for the tenant's routes.
    #[serde(default)]
    pub(crate) dlp: Option<crate::dlp::DlpSpec>,
    /// Bounds of DLP body inspection.
    #[serde(default)]
    pub(crate) body_inspection: Option<RawInspection>,
    /// OpenID Connect providers whose bearer tokens routes may accept.
    #[serde(default)]
    pub(crate) identity_providers: Vec<RawIdentityProvider>,
    /// The tenant's routes.
    #[serde(default)]
    pub(crate) routes: Vec<RawRoute>,
}

/// An OpenID Connect provider whose bearer tokens the tenant's routes may accept.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "IdentityProvider")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentityProvider {
    /// 1-63 of a-z 0-9 - _ (records and metrics).
    pub(crate) name: String,
    /// Exactly the tokens' `iss`; https only.
    pub(crate) issuer: String,
    /// A token's `aud` must name one (required).
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    /// Trust anchors for the provider's HTTPS (default: the public web roots).
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    /// Accepted algorithms (default every asymmetric one; HS* and none never).
    #[serde(default)]
    pub(crate) algorithms: Option<Vec<String>>,
    /// Leeway on exp/nbf/iat (default 60s, at most 5m).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) clock_skew: Option<Duration>,
    /// The JWKS is fetched again this often (default 5m).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) keys_refresh: Option<Duration>,
    /// At most one fetch per interval for unknown `kid`s (default 30s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) unknown_key_refetch: Option<Duration>,
    /// Claim names for groups, e-mail and tenant.
    #[serde(default)]
    pub(crate) claims: Option<RawClaimNames>,
    /// The browser login: the gateway as a confidential client of the provider.
    #[serde(default)]
    pub(crate) client_id: Option<String>,
    /// A file holding the client secret (or `client_secret_env`; never inline).
    #[serde(default)]
    pub(crate) client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    #[serde(default)]
    pub(crate) client_secret_env: Option<String>,
    /// The gateway's callback URL (`…/.portcullis/oidc/callback`).
    #[serde(default)]
    pub(crate) redirect_uri: Option<String>,
    /// Scopes asked for (default [openid, email, profile]).
    #[serde(default)]
    pub(crate) scopes: Option<Vec<String>>,
}

/// `sessions`: the browser login's session cookies.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Sessions")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSessions {
    /// Mode 0600; lines `ID BASE64-OF-32-BYTES`, the first seals, all open.
    pub(crate) key_ring: PathBuf,
    /// A session ends this long after the login (default 12h).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) absolute_lifetime: Option<Duration>,
    /// ...or this long after its last request (default 1h).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) idle_lifetime: Option<Duration>,
}

#[derive(Deserialize, Debug, Default)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ClaimNames")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaimNames {
    /// The claim holding groups.
    #[serde(default)]
    pub(crate) groups: Option<String>,
    /// The claim holding the e-mail address.
    #[serde(default)]
    pub(crate) email: Option<String>,
    /// A claim that must name the tenant (none by default).
    #[serde(default)]
    pub(crate) tenant: Option<String>,
}

/// `mfa` on a route: what a token must say of how the person authenticated.
#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Mfa")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMfa {
    /// Any of these `amr` values.
    #[serde(default)]
    pub(crate) amr: Vec<String>,
    /// One of these `acr` values.
    #[serde(default)]
    pub(crate) acr: Vec<String>,
    /// At most this long since `auth_time`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) max_age: Option<Duration>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Route")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    /// The route's name (unique within the tenant).
    pub(crate) name: String,
    /// Exact host or `*.example.com` (default any).
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// Path prefix, matched on segment boundaries after normalisation.
    #[serde(default)]
    pub(crate) path_prefix: Option<String>,
    /// The upstream's name.
    pub(crate) upstream: String,
    /// The route's own rate limit.
    #[serde(default)]
    pub(crate) rate_limit: Option<RawRate>,
    /// Replaces the tenant's DLP spec for this route.
    #[serde(default)]
    pub(crate) dlp: Option<crate::dlp::DlpSpec>,
    /// Whether WebSocket upgrades (and CONNECT tunnels) pass on a route with request DLP.
    #[serde(default)]
    pub(crate) websocket: Option<crate::inspection::Upgrades>,
    /// Who callers must prove to be: a client certificate (default), a bearer token, or both.
    #[serde(default)]
    pub(crate) authentication: Option<crate::authn::Authentication>,
    /// Step-up: what a token must say of how the person authenticated.
    #[serde(default)]
    pub(crate) mfa: Option<RawMfa>,
    /// The provider browsers without a session are sent to for a login.
    #[serde(default)]
    pub(crate) login: Option<String>,
    /// Access rules: a matching deny wins, else the first matching allow; none: denied.
    #[serde(default)]
    pub(crate) access: Vec<RawRule>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Rule")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    /// Named in the access log and the audit record.
    pub(crate) id: String,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub(crate) effect: crate::access::Effect,
    /// SPIFFE ID patterns (`*` one segment, final `**` the rest).
    #[serde(default)]
    pub(crate) spiffe_id: Option<Vec<String>>,
    /// DNS SAN patterns.
    #[serde(default)]
    pub(crate) dns_san: Option<Vec<String>>,
    /// Certificate subjects.
    #[serde(default)]
    pub(crate) subject: Option<Vec<String>>,
    /// HTTP methods.
    #[serde(default)]
    pub(crate) methods: Option<Vec<String>>,
    /// Path prefixes.
    #[serde(default)]
    pub(crate) path_prefix: Option<Vec<String>>,
    /// Exact paths.
    #[serde(default)]
    pub(crate) path: Option<Vec<String>>,
    /// Client address CIDRs.
    #[serde(default)]
    pub(crate) source: Option<Vec<String>>,
    /// Header name -> accepted values (`["*"]`: any value, only presence is required).
    #[serde(default)]
    pub(crate) headers: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Bearer-token conditions: the token's `sub`, e-mail, e-mail domain, groups, and any
    /// claim by dotted path.
    #[serde(default)]
    pub(crate) token_subject: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) email: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) email_domain: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) groups: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) claims: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "TenantLimits")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenantLimits {
    /// The tenant's rate limit.
    #[serde(default)]
    pub(crate) rate: Option<RawRate>,
    /// Per caller identity.
    #[serde(default)]
    pub(crate) per_identity: Option<RawRate>,
    /// Per client address.
    #[serde(default)]
    pub(crate) per_source: Option<RawRate>,
    /// Requests in progress at once.
    #[serde(default)]
    pub(crate) max_in_flight: Option<u32>,
    /// Request body bytes at most (413 above).
    #[serde(default)]
    pub(crate) max_request_body: Option<u64>,
    /// The tenant's share of the gateway's in-flight requests when `fairness` is on and the
    /// gateway is full (default 1; 1 to 1000).
    #[serde(default)]
    pub(crate) weight: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Rate")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRate {
    /// Requests per `per`.
    pub(crate) requests: u32,
    /// The period (default 1s).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) per: Option<Duration>,
    /// Burst size (default `requests`).
    #[serde(default)]
    pub(crate) burst: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Inspection")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInspection {
    /// Decoded bytes scanned at most (default 1048576).
    #[serde(default)]
    pub(crate) max_bytes: Option<u64>,
    /// `refuse` (413, default) or `pass` (rest unscanned, counted and recorded).
    #[serde(default)]
    pub(crate) over_limit: Option<crate::inspection::OverLimit>,
    /// Bytes after decompression at most (default 8388608).
    #[serde(default)]
    pub(crate) max_decompressed_bytes: Option<u64>,
    /// Decompression ratio at most (default 100).
    #[serde(default)]
    pub(crate) max_ratio: Option<u64>,
    /// `refuse` (415, default) or `pass`.
    #[serde(default)]
    pub(crate) unknown_encoding: Option<crate::inspection::UnknownEncoding>,
    /// `scan` (as bytes, default) or `refuse` (415): types neither text nor multipart.
    #[serde(default)]
    pub(crate) other_content: Option<crate::inspection::OtherContent>,
}
