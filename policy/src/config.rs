//! The gateway's configuration: YAML in, checked types out.
//!
//! The text is deserialised into `raw` structs that refuse unknown keys, then converted once
//! into the checked types below. Every problem found on the way is collected with the line
//! and column of the YAML node it is about, so an operator sees all mistakes at once.

mod check;
mod locate;
mod overlay;
mod raw;
#[cfg(feature = "schema")]
mod schema;
mod traces;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::limits::TenantLimits;
use crate::names::{TenantId, UpstreamName};
use crate::routing::RouteTable;
use locate::{Locations, Position};
pub use overlay::{overlay_entries, overlay_tenants, tenant_entry};
#[cfg(feature = "schema")]
pub use schema::config_schema;
pub use traces::{OtlpProtocol, OtlpTls, TraceparentTrust, TracingSettings};

/// The whole checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// TLS listeners (at least one).
    pub listeners: Vec<ListenerConfig>,
    /// Where metrics are served.
    pub metrics: MetricsConfig,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Upstream services routes may send requests to.
    pub upstreams: Vec<UpstreamConfig>,
    /// All tenants' routes.
    pub routes: RouteTable,
    /// Every tenant, with its limits.
    pub tenants: Vec<TenantConfig>,
    /// The audit log; `None` when the file has no `audit` section (no audit trail).
    pub audit: Option<AuditSettings>,
    /// How strictly request heads are read (the `http` section).
    pub http: HttpSettings,
    /// The signed identity assertion sent to upstreams, if configured.
    pub identity_assertion: Option<AssertionSettings>,
    /// The browser login's session cookies, if configured.
    pub sessions: Option<crate::authn::SessionSettings>,
    /// A share of the gateway per tenant when it is saturated; `None`: no shared cap.
    pub fairness: Option<Fairness>,
    /// Sidecar outbound listeners (plain HTTP from the local workload).
    pub egress: Vec<EgressConfig>,
    /// OpenTelemetry traces; `None`: nothing is traced.
    pub tracing: Option<TracingSettings>,
    /// The admin plane whose activated tenant policies this gateway follows, if any.
    pub policy_source: Option<PolicySource>,
    /// The serial of the admin plane's bundle laid over the file, when one was (set by the
    /// gateway after loading; never read from YAML).
    pub policy_serial: Option<u64>,
    /// The fleet's etcd cluster, whose revocation set is enforced with the CRLs; `None`: the
    /// CRL files alone.
    pub fleet: Option<FleetConfig>,
}

/// The `fleet` section: the etcd cluster and where the last revocation set seen is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    pub settings: portcullis_identity::FleetSettings,
    pub cache: PathBuf,
}

/// The `policy_source` section: where the signed bundle of tenants' active policies comes
/// from, how it is verified and where the last good one is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySource {
    /// `https://host:port` of the admin API.
    pub url: String,
    pub host: String,
    pub port: u16,
    /// Trust bundle for the admin API's certificate.
    pub ca: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
    /// The admin plane's policy signing key (SPKI PEM).
    pub public_key: PathBuf,
    /// The last verified bundle.
    pub cache: PathBuf,
    pub interval: Duration,
}

/// A sidecar's outbound listener: plain HTTP/1.1 from the local workload, each request judged
/// as coming from `workload` (routes by host, rules, limits, DLP, audit with direction
/// `egress`) and forwarded over the route's upstream TLS.
#[derive(Clone, Debug, PartialEq)]
pub struct EgressConfig {
    pub name: String,
    pub address: SocketAddr,
    pub workload: portcullis_identity::SpiffeId,
    pub connections: ConnectionLimits,
}

/// The `fairness` section: at most `max_in_flight` requests are served at once; the others
/// wait (at most `queue_timeout`, then 503) in their tenant's queue, and each freed slot goes
/// to the waiting tenant with the fewest requests in flight for its weight. Applied at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fairness {
    pub max_in_flight: u32,
    pub queue_timeout: Duration,
}

/// The identity assertion the gateway signs for upstreams (`identity_assertion`).
#[derive(Clone, Debug, PartialEq)]
pub struct AssertionSettings {
    /// The P-256 (ES256) key: a PKCS#8 PEM file (`AuditKey::File`), or a key in a PKCS#11
    /// token (generated there if missing). Its public key is served as a JWKS on the metrics
    /// listener.
    pub signing_key: AuditKey,
    /// The assertion's `iss`.
    pub issuer: String,
    /// How long an assertion is valid.
    pub lifetime: Duration,
}

/// Request-head limits and header hygiene (the `http` section).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSettings {
    /// Headers removed before forwarding: the built-in list plus `strip_headers`.
    pub strip: crate::headers::StripList,
    /// Largest request head (request line and every header line), bytes; larger gets 431.
    pub max_request_head: usize,
    /// Longest single header line, bytes; longer gets 431.
    pub max_header_line: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            strip: crate::headers::StripList::default(),
            max_request_head: 32 * 1024,
            max_header_line: 8 * 1024,
        }
    }
}

/// The audit log's settings (the `audit` section). Changing them takes a restart.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditSettings {
    /// Directory of the log's segment files.
    pub directory: PathBuf,
    /// This node's id in every record; `None` means the host name.
    pub node: Option<String>,
    /// What happens to a request whose record cannot be made durable.
    pub mode: AuditMode,
    /// How long a request may wait for its record to become durable (fail-closed).
    pub durable_timeout: Duration,
    /// The checkpoint signing key.
    pub signing_key: AuditKey,
    /// A signed checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or after this long, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Size at which a segment file is closed and a new one begun.
    pub segment_bytes: u64,
    /// Whole segments older than this are deleted (with a signed record of the deletion).
    pub retention: Option<Duration>,
    /// Whether request records keep the query string (off: it often carries secrets).
    pub include_query: bool,
    /// The most bytes the log's segment files may hold together. At it, fail-closed refuses
    /// requests (503) and best-effort drops records (counted) until retention frees room.
    pub max_bytes: u64,
    /// How the records of requests refused before admission are bounded.
    pub refusals: RefusalRecords,
    /// The central store the log is shipped to, if any.
    pub postgres: Option<AuditPostgres>,
    /// Where the log's head (its latest signed checkpoint) is also written, atomically, at
    /// each checkpoint: an off-box copy for `portcullis audit verify --expect-head FILE`.
    pub head_file: Option<PathBuf>,
    /// Where the signing key's public half is written; `None`: beside a key file
    /// (`KEY.pub`), or `DIRECTORY.pub` for a key in a token.
    pub public_key: Option<PathBuf>,
}

/// The central store (PostgreSQL) the audit log is shipped to.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditPostgres {
    /// The libpq-style connection string (it may carry a password: never inline).
    pub conninfo: SecretSource,
    /// How the connection is protected.
    pub tls: PostgresTls,
}

/// How the connection to PostgreSQL is protected.
#[derive(Clone, Debug, PartialEq)]
pub enum PostgresTls {
    /// TLS required, `verify-full`: the server's certificate must chain to `ca` and name the
    /// connection string's host.
    VerifyFull {
        /// The CA certificate(s) (PEM) that signed the server's certificate.
        ca: PathBuf,
        /// A client certificate chain and key (PEM) to present, if the server asks for one.
        client: Option<(PathBuf, PathBuf)>,
    },
    /// No TLS, said explicitly (`insecure_plaintext: true`): the password and every record
    /// cross the network in clear.
    InsecurePlaintext,
}

/// How the audit records of requests refused before admission (400, 403, 404, 429…) are
/// bounded, so that a client cannot fill the log with refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusalRecords {
    /// A refused request's path (with its query string, when kept) is cut to this many bytes;
    /// the record keeps the whole path's length and SHA-256.
    pub path_bytes: usize,
    /// Detailed records per source (client address) per interval; beyond it they are only
    /// counted.
    pub per_source: u32,
    /// The interval; the counts of suppressed records are written once per interval.
    pub interval: Duration,
}

/// Where the audit checkpoint signing key lives.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditKey {
    /// A software Ed25519 key (PKCS#8 file, created 0600 if missing).
    File(PathBuf),
    /// A P-256 key inside a PKCS#11 token (generated there, non-extractable, if missing).
    Pkcs11 {
        /// The PKCS#11 module; `None` for SoftHSM2's.
        module: Option<PathBuf>,
        /// The token, found by label.
        token_label: String,
        /// Where the user PIN is read from (never the config file).
        pin: SecretSource,
        /// The key's label in the token.
        key_label: String,
    },
}

/// The audit log's durability mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditMode {
    /// A request is forwarded only once its admission record is durable; otherwise 503.
    FailClosed,
    /// Records are queued and never waited for; records that cannot be written are counted.
    BestEffort,
}

/// Where a secret value (such as a connection string with a password) is read from. Secrets
/// never sit in the config file in clear.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretSource {
    /// Given in the file; only allowed for values that carry no password.
    Inline(String),
    /// The named environment variable.
    Env(String),
    /// The contents of a file (trailing newline trimmed), resolved against the config's folder.
    File(PathBuf),
}

/// One tenant's settings beyond its routes.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantConfig {
    pub id: TenantId,
    pub limits: TenantLimits,
    /// OpenID Connect providers whose bearer tokens the tenant's routes may accept.
    pub identity_providers: Vec<crate::authn::IdentityProvider>,
}

/// One TLS listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Unique address to bind.
    pub address: SocketAddr,
    /// Server certificate and client authentication.
    pub tls: TlsListenerConfig,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// How the listener bounds its connections (timeouts, caps, HTTP/2 limits).
    pub connections: ConnectionLimits,
}

/// How one listener bounds its connections. Every field has a safe default (the `DEFAULT`
/// constant); `check` keeps each within a sane range. Applied at start, like the address: a
/// reload that changes them is warned about and takes effect at restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accept to a completed TLS handshake.
    pub handshake_timeout: Duration,
    /// From the start of a request's head (the connection's handshake for the first request,
    /// the first byte for later ones) to its end: the whole head, however it trickles in.
    pub request_head_timeout: Duration,
    /// HTTP/1: how long a kept-alive connection may wait for its next request (whole seconds).
    pub idle_timeout: Duration,
    /// HTTP/2: how long a connection with no stream open stays open.
    pub h2_idle_timeout: Duration,
    /// How long a write to the client may make no progress before the connection is cut.
    pub write_timeout: Duration,
    /// How long a request body may stall between two reads.
    pub body_idle_timeout: Duration,
    /// Open connections on the listener; further ones are closed at accept.
    pub max_connections: u32,
    /// Open connections from one source address; further ones are closed at accept.
    pub max_connections_per_source: u32,
    /// Requests served on one HTTP/1 connection before it is closed (`Connection: close`).
    pub max_requests_per_connection: u32,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` (decoded bytes); larger header blocks are refused.
    pub h2_max_header_list_size: u32,
    /// A connection older than this is ended after its current request (HTTP/1.1: closed;
    /// HTTP/2: GOAWAY), so no connection outlives a certificate generation by much.
    pub max_connection_age: Duration,
    /// Behind an L4 balancer: connections carry the client's address in a PROXY header.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Callers that keep reconnecting or keep being refused.
    pub abuse: AbuseLimits,
}

/// How a listener slows and then drops callers who abuse it: new connections per source
/// address (counted at accept, before any TLS) and per client identity (after the
/// handshake), and a connection whose requests keep being refused — each further refusal
/// delayed once `slow_after` were refused within `window`, the connection closed (HTTP/1.1
/// `Connection: close`, HTTP/2 GOAWAY) at `close_after`. None of it applies to `exempt`
/// sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbuseLimits {
    pub connection_rate_per_source: Option<crate::RateLimit>,
    pub connection_rate_per_identity: Option<crate::RateLimit>,
    pub window: Duration,
    pub slow_after: u32,
    pub delay: Duration,
    pub close_after: u32,
    pub exempt: Vec<IpNet>,
}

impl AbuseLimits {
    /// The defaults: far above what one well-behaved client does, and low enough that a
    /// flood from one source or identity is cut early.
    pub const DEFAULT: Self = Self {
        connection_rate_per_source: Some(crate::RateLimit::per_second(200)),
        connection_rate_per_identity: Some(crate::RateLimit::per_second(100)),
        window: Duration::from_secs(10),
        slow_after: 20,
        delay: Duration::from_millis(250),
        close_after: 50,
        exempt: Vec::new(),
    };

    /// Whether `ip` is exempt (IPv4-mapped addresses compare as IPv4).
    pub fn exempts(&self, ip: std::net::IpAddr) -> bool {
        let ip = portcullis_identity::canonical_ip(ip);
        self.exempt.iter().any(|net| net.contains(&ip))
    }
}

/// A listener's PROXY protocol (v1 or v2): every connection must come from one of `from` and
/// begin with a header, read within `timeout`, whose source address becomes the connection's
/// client address (rules, limits, forwarding headers, access log, audit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// The balancers' addresses (non-empty); a connection from anywhere else is closed.
    pub from: Vec<IpNet>,
    /// From accept to the header's last byte.
    pub timeout: Duration,
}

impl ProxyProtocol {
    /// The timeout when the file gives none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
}

impl ConnectionLimits {
    /// The defaults of every setting.
    pub const DEFAULT: Self = Self {
        handshake_timeout: Duration::from_secs(10),
        request_head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        h2_idle_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(30),
        body_idle_timeout: Duration::from_secs(30),
        max_connections: 10_000,
        max_connections_per_source: 256,
        max_requests_per_connection: 1_000,
        h2_max_concurrent_streams: 100,
        h2_max_header_list_size: 32 * 1024,
        // Well under the hour-long certificates the CA issues by default.
        max_connection_age: Duration::from_secs(600),
        proxy_protocol: None,
        abuse: AbuseLimits::DEFAULT,
    };
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A listener's TLS settings. Paths are resolved against the config file's directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsListenerConfig {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key.
    pub private_key: PathBuf,
    /// Whether clients must present a certificate.
    pub client_auth: ClientAuth,
    /// CA bundle client certificates are verified against; `None` with [`ClientAuth::Off`] or
    /// with `trust_domains`.
    pub client_ca: Option<PathBuf>,
    /// Instead of `client_ca`: one bundle per SPIFFE trust domain, a client certificate
    /// verified only against the bundle of its SPIFFE ID's trust domain.
    pub trust_domains: Vec<TrustDomainBundle>,
    /// Certificate revocation list(s), PEM or DER, re-read whenever the file changes; client
    /// certificates it lists are refused at the handshake.
    pub crl: Option<PathBuf>,
    /// Where the certificate comes from when the gateway obtains and renews it itself:
    /// `certificate` and `private_key` are then where it keeps them.
    pub issuer: Option<IssuerConfig>,
}

/// The trust anchors of one SPIFFE trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustDomainBundle {
    /// The trust domain, e.g. `example.org`.
    pub name: String,
    /// Its CA certificates (PEM); with `endpoint`, where the last good bundle fetched is kept.
    pub bundle: PathBuf,
    /// Where the trust domain publishes its bundle, if it is fetched.
    pub endpoint: Option<BundleEndpointConfig>,
}

/// The shortest interval between two fetches of a SPIFFE bundle endpoint.
pub const MIN_BUNDLE_REFRESH: Duration = Duration::from_secs(30);

/// A SPIFFE bundle endpoint (`https_web`): its URL, the anchors for its server certificate
/// (`None`: the web PKI roots) and how often it is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleEndpointConfig {
    pub url: String,
    pub ca: Option<PathBuf>,
    pub refresh: Duration,
}

/// The Portcullis CA (its admin API) a listener obtains its certificate from, renewing it at
/// two thirds of its lifetime.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuerConfig {
    /// `https://host:port` of the admin API.
    pub url: String,
    /// Host and port from `url`.
    pub host: String,
    pub port: u16,
    /// Trust bundle for the admin API's certificate.
    pub ca: PathBuf,
    /// A one-time bootstrap token for the first certificate (renewals use the current one).
    pub bootstrap_token_file: Option<PathBuf>,
    /// DNS names to ask for (with `spiffe_id`, at least one name).
    pub dns_names: Vec<String>,
    /// SPIFFE ID to ask for, if any.
    pub spiffe_id: Option<String>,
    /// The CA's issuance profile to ask for (`None`: the tenant's only one).
    pub profile: Option<String>,
    /// Lifetime to ask for (`None`: the profile's default).
    pub lifetime: Option<Duration>,
}

/// Whether a listener asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A valid client certificate is required to connect.
    #[default]
    Required,
    /// A client certificate is verified if presented; callers without one are anonymous.
    Optional,
    /// No client certificates are asked for.
    Off,
}

/// The metrics endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    /// Address to serve metrics on.
    pub address: SocketAddr,
}

/// The HTTP version spoken to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS: ALPN `http/1.1`).
    #[default]
    Http1,
    /// HTTP/2: over TLS by ALPN `h2` only, in plaintext with prior knowledge (h2c). gRPC needs it.
    Http2,
}

/// One upstream service.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConfig {
    /// Unique name routes refer to.
    pub name: UpstreamName,
    /// Addresses to balance over: the configured `targets`, or empty when `dns` finds them.
    pub targets: Vec<SocketAddr>,
    /// Where the targets come from when they are discovered by DNS instead of listed.
    pub dns: Option<DnsDiscovery>,
    /// Upstreams whose pools take this one's requests, in order, while none of this pool's
    /// targets is healthy (their own `failover` lists are not followed).
    pub failover: Vec<UpstreamName>,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed between reads.
    pub read_timeout: Duration,
    /// TLS to the upstream; `None` for plain HTTP.
    pub tls: Option<UpstreamTls>,
    /// HTTP/1.1 or HTTP/2.
    pub protocol: UpstreamProtocol,
    /// Active health checking, if configured.
    pub health_check: Option<HealthCheckConfig>,
}

/// How an upstream's targets are found in DNS (`dns:`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsDiscovery {
    /// What is asked.
    pub query: DnsQuery,
    /// The name server asked; `None` for the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
}

/// The records an upstream's targets are read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DnsQuery {
    /// A and AAAA records of `name`, each address with `port`.
    Address {
        /// The name looked up (absolute: ends with `.`).
        name: String,
        /// The port every address is reached on.
        port: u16,
    },
    /// SRV records of `name` (`_service._proto.domain.`): the records of the lowest priority
    /// give targets and ports; each target's A/AAAA records its addresses.
    Srv {
        /// The SRV owner name (absolute: ends with `.`).
        name: String,
    },
}

impl std::fmt::Display for DnsQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsQuery::Address { name, port } => write!(f, "A/AAAA {name} port {port}"),
            DnsQuery::Srv { name } => write!(f, "SRV {name}"),
        }
    }
}

/// TLS settings towards an upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamTls {
    /// Name to send in SNI and verify in the upstream's certificate; `None` when the upstream
    /// is known by its SPIFFE ID alone (no SNI is then sent).
    pub server_name: Option<String>,
    /// The upstream certificate's SPIFFE ID must match one of these (empty: not checked).
    pub spiffe_id: Vec<portcullis_identity::SpiffeIdPattern>,
    /// CA bundle to verify the upstream with; `None` for the webpki roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key presented to the upstream: `(certificate, key)`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Where the client certificate comes from when the gateway obtains and renews it itself
    /// (`client_cert` is then where it keeps it).
    pub issuer: Option<IssuerConfig>,
}

/// Active health checking of an upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheckConfig {
    /// Path requested (starts with '/').
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
}

/// One thing wrong with a config file, with where it is when known (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Line of the offending YAML node.
    pub line: Option<usize>,
    /// Column of the offending YAML node.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ConfigProblem {
    pub(crate) fn at(pos: Option<Position>, message: String) -> ConfigProblem {
        ConfigProblem {
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            message,
        }
    }
}

/// Why a config file was refused: every problem found, one per line when displayed as
/// `FILE:LINE:COLUMN: message`.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(file, problems))]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The problems, in the order found (at least one).
    pub problems: Vec<ConfigProblem>,
}

fn render_problems(file: &Path, problems: &[ConfigProblem]) -> String {
    let file = file.display();
    let lines: Vec<String> = problems
        .iter()
        .map(|p| match (p.line, p.column) {
            (Some(line), Some(col)) => format!("{file}:{line}:{col}: {}", p.message),
            (Some(line), None) => format!("{file}:{line}: {}", p.message),
            _ => format!("{file}: {}", p.message),
        })
        .collect();
    lines.join("\n")
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(col)) => write!(f, "{line}:{col}: {}", self.message),
            (Some(line), None) => write!(f, "{line}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// Turns a serde/libyaml error into a problem, moving its location out of the message.
fn serde_problem(err: &serde_yaml_ng::Error) -> ConfigProblem {
    let mut message = err.to_string();
    let pos = err.location().map(|loc| {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(i) = message.find(&suffix) {
            message.replace_range(i..i + suffix.len(), "");
        }
        Position {
            line: loc.line(),
            column: loc.column(),
        }
    });
    ConfigProblem::at(pos, message)
}

fn describe(value: &serde_yaml_ng::Value) -> &'static str {
    use serde_yaml_ng::Value;
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl Config {
    /// Parses and checks a YAML config. `file` is used in messages and to resolve relative
    /// paths; it is not read.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_path_buf(),
            problems,
        };
        // First as a generic value: catches syntax errors and an empty or non-mapping file with a
        // clearer message than the struct's.
        match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
            Err(err) => return Err(fail(vec![serde_problem(&err)])),
            Ok(serde_yaml_ng::Value::Mapping(_)) => {}
            Ok(serde_yaml_ng::Value::Null) => {
                return Err(fail(vec![ConfigProblem::at(
                    None,
                    "the file is empty; expected a mapping with `listeners`, `upstreams` and \
                     `tenants`"
                        .to_owned(),
                )]))
            }
            Ok(other) => {
                return Err(fail(vec![ConfigProblem::at(
                    Some(Position { line: 1, column: 1 }),
                    format!(
                        "the top level must be a mapping with `listeners`, `upstreams` and \
                         `tenants`, found {}",
                        describe(&other)
                    ),
                )]))
            }
        }
        let raw: raw::RawConfig =
            serde_yaml_ng::from_str(text).map_err(|err| fail(vec![serde_problem(&err)]))?;
        let locations = Locations::from_text(text);
        let base = file.parent().unwrap_or_else(|| Path::new(""));
        check::check(raw, &locations, base).map_err(fail)
    }
}

#[cfg(test)]
mod tests;
