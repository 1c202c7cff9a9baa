//! The config file's exact shape, as serde reads it. Unknown keys are errors everywhere.
//!
//! Addresses, CIDRs and names are kept as text here and parsed in `check`, so that all their
//! problems are reported together, each with its line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ClientAuth;
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
    #[serde(default)]
    pub(crate) listeners: Vec<RawListener>,
    #[serde(default)]
    pub(crate) metrics: Option<RawMetrics>,
    #[serde(default)]
    pub(crate) shutdown: Option<RawShutdown>,
    #[serde(default)]
    pub(crate) upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub(crate) tenants: Vec<RawTenant>,
    #[serde(default)]
    pub(crate) audit: Option<RawAudit>,
    #[serde(default)]
    pub(crate) http: Option<RawHttp>,
    #[serde(default)]
    pub(crate) identity_assertion: Option<RawAssertion>,
    #[serde(default)]
    pub(crate) sessions: Option<RawSessions>,
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
    #[serde(default)]
    pub(crate) signing_key: Option<PathBuf>,
    #[serde(default)]
    pub(crate) signing_pkcs11: Option<RawPkcs11Key>,
    #[serde(default)]
    pub(crate) issuer: Option<String>,
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
    #[serde(default)]
    pub(crate) strip_headers: Vec<String>,
    #[serde(default)]
    pub(crate) max_request_head: Option<usize>,
    #[serde(default)]
    pub(crate) max_header_line: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Audit")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub(crate) directory: PathBuf,
    #[serde(default)]
    pub(crate) node: Option<String>,
    #[serde(default)]
    pub(crate) mode: Option<String>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) durable_timeout: Option<Duration>,
    #[serde(default)]
    pub(crate) signing_key: Option<PathBuf>,
    #[serde(default)]
    pub(crate) signing_pkcs11: Option<RawPkcs11Key>,
    #[serde(default)]
    pub(crate) checkpoint_every: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) checkpoint_interval: Option<Duration>,
    #[serde(default)]
    pub(crate) segment_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) retention: Option<Duration>,
    #[serde(default)]
    pub(crate) include_query: bool,
    #[serde(default)]
    pub(crate) max_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) refusals: Option<RawRefusalRecords>,
    #[serde(default)]
    pub(crate) postgres: Option<RawAuditPostgres>,
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
    #[serde(default)]
    pub(crate) path_bytes: Option<usize>,
    #[serde(default)]
    pub(crate) per_source: Option<u32>,
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
    #[serde(default)]
    pub(crate) module: Option<PathBuf>,
    pub(crate) token_label: String,
    #[serde(default)]
    pub(crate) pin_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) pin_env: Option<String>,
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
    #[serde(default)]
    pub(crate) conninfo: Option<String>,
    #[serde(default)]
    pub(crate) conninfo_env: Option<String>,
    #[serde(default)]
    pub(crate) conninfo_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) tls: Option<RawPostgresTls>,
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
    pub(crate) ca: PathBuf,
    #[serde(default)]
    pub(crate) client_certificate: Option<PathBuf>,
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
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) tls: RawListenerTls,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
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
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) handshake_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) request_head_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) h2_idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) write_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) body_idle_timeout: Option<Duration>,
    #[serde(default)]
    pub(crate) max_connections: Option<u32>,
    #[serde(default)]
    pub(crate) max_connections_per_source: Option<u32>,
    #[serde(default)]
    pub(crate) max_requests_per_connection: Option<u32>,
    #[serde(default)]
    pub(crate) h2_max_concurrent_streams: Option<u32>,
    #[serde(default)]
    pub(crate) h2_max_header_list_size: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) max_connection_age: Option<Duration>,
    #[serde(default)]
    pub(crate) proxy_protocol: Option<RawProxyProtocol>,
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
    pub(crate) from: Vec<String>,
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
    pub(crate) certificate: PathBuf,
    pub(crate) private_key: PathBuf,
    #[serde(default)]
    pub(crate) client_auth: ClientAuth,
    #[serde(default)]
    pub(crate) client_ca: Option<PathBuf>,
    #[serde(default)]
    pub(crate) crl: Option<PathBuf>,
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
    pub(crate) url: String,
    pub(crate) ca: PathBuf,
    #[serde(default)]
    pub(crate) bootstrap_token_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) dns_names: Vec<String>,
    #[serde(default)]
    pub(crate) spiffe_id: Option<String>,
    #[serde(default)]
    pub(crate) profile: Option<String>,
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
    pub(crate) name: String,
    pub(crate) targets: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) read_timeout: Option<Duration>,
    #[serde(default)]
    pub(crate) tls: Option<RawUpstreamTls>,
    #[serde(default)]
    pub(crate) health_check: Option<RawHealthCheck>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "UpstreamTls")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub(crate) server_name: String,
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    #[serde(default)]
    pub(crate) client_certificate: Option<PathBuf>,
    #[serde(default)]
    pub(crate) client_key: Option<PathBuf>,
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
    pub(crate) path: String,
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
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) limits: Option<RawTenantLimits>,
    #[serde(default)]
    pub(crate) dlp: Option<crate::dlp::DlpSpec>,
    #[serde(default)]
    pub(crate) body_inspection: Option<RawInspection>,
    #[serde(default)]
    pub(crate) identity_providers: Vec<RawIdentityProvider>,
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
    pub(crate) name: String,
    pub(crate) issuer: String,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    /// Trust anchors for the provider's HTTPS (default: the public web roots).
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    #[serde(default)]
    pub(crate) algorithms: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) clock_skew: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) keys_refresh: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) unknown_key_refetch: Option<Duration>,
    #[serde(default)]
    pub(crate) claims: Option<RawClaimNames>,
    /// The browser login: the gateway as a confidential client of the provider.
    #[serde(default)]
    pub(crate) client_id: Option<String>,
    #[serde(default)]
    pub(crate) client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) client_secret_env: Option<String>,
    #[serde(default)]
    pub(crate) redirect_uri: Option<String>,
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
    pub(crate) key_ring: PathBuf,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) absolute_lifetime: Option<Duration>,
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
    #[serde(default)]
    pub(crate) groups: Option<String>,
    #[serde(default)]
    pub(crate) email: Option<String>,
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
    #[serde(default)]
    pub(crate) amr: Vec<String>,
    #[serde(default)]
    pub(crate) acr: Vec<String>,
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
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) host: Option<String>,
    #[serde(default)]
    pub(crate) path_prefix: Option<String>,
    pub(crate) upstream: String,
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
    #[serde(default)]
    pub(crate) mfa: Option<RawMfa>,
    /// The provider browsers without a session are sent to for a login.
    #[serde(default)]
    pub(crate) login: Option<String>,
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
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) effect: crate::access::Effect,
    #[serde(default)]
    pub(crate) spiffe_id: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) dns_san: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) subject: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) path_prefix: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) path: Option<Vec<String>>,
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
    #[serde(default)]
    pub(crate) rate: Option<RawRate>,
    #[serde(default)]
    pub(crate) per_identity: Option<RawRate>,
    #[serde(default)]
    pub(crate) per_source: Option<RawRate>,
    #[serde(default)]
    pub(crate) max_in_flight: Option<u32>,
    #[serde(default)]
    pub(crate) max_request_body: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Rate")
)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRate {
    pub(crate) requests: u32,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<HumanDuration>"))]
    pub(crate) per: Option<Duration>,
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
    #[serde(default)]
    pub(crate) max_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) over_limit: Option<crate::inspection::OverLimit>,
    #[serde(default)]
    pub(crate) max_decompressed_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) max_ratio: Option<u64>,
    #[serde(default)]
    pub(crate) unknown_encoding: Option<crate::inspection::UnknownEncoding>,
    #[serde(default)]
    pub(crate) other_content: Option<crate::inspection::OtherContent>,
}
