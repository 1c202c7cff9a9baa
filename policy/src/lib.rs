//! Pure decision logic for Portcullis: the config model, request path normalisation, routing
//! and access rules.
//!
//! Nothing here reads files, the network, the clock or the environment, so every decision can
//! be tested exhaustively and fuzzed. The gateway establishes the facts (who, what, from where)
//! and asks this crate what to do with them.

mod access;
mod authn;
mod config;
mod dlp;
mod headers;
mod identity;
mod inspection;
mod limits;
mod names;
mod path;
mod routing;

pub use access::{
    Denied, DenyReason, HeaderSource, NoHeaders, PatternError, Permit, RequestFacts, RuleSummary,
};
pub use authn::{
    bearer_token, Authentication, ClaimNames, IdentityProvider, MfaRequirement, ProviderLogin,
    ProviderSettings, SessionSettings, SigningAlgorithm, TokenError, TokenIdentity, CALLBACK_PATH,
    LOGOUT_PATH,
};
#[cfg(feature = "schema")]
pub use config::config_schema;
pub use config::MIN_BUNDLE_REFRESH;
pub use config::{
    overlay_entries, overlay_tenants, tenant_entry, AbuseLimits, AssertionSettings, AuditKey,
    AuditMode, AuditPostgres, AuditSettings, ClientAuth, Config, ConfigError, ConfigProblem,
    ConnectionLimits, DnsDiscovery, DnsQuery, EgressConfig, Fairness, FleetConfig,
    HealthCheckConfig, HttpSettings, IssuerConfig, ListenerConfig, MetricsConfig, OtlpProtocol,
    OtlpTls, PolicySource, PostgresTls, ProxyProtocol, RefusalRecords, SecretSource, TenantConfig,
    TlsListenerConfig, TraceparentTrust, TracingSettings, TrustDomainBundle, UpstreamConfig,
    UpstreamProtocol, UpstreamTls,
};
pub use dlp::{
    Blocked, BodyDirection, BuiltinDetector, CustomPatternSpec, DetectorKind, DetectorName,
    DirectionSelector, DlpAction, DlpError, DlpPolicy, DlpSpec, Finding, Findings, KeywordListSpec,
    Redaction, Scanner,
};
pub use headers::{StripList, ALWAYS_STRIPPED, GATEWAY_PREFIX};
pub use identity::{Identity, PeerIdentity, SpiffeId, SpiffeIdError};
pub use inspection::{
    InspectionLimits, OtherContent, OverLimit, RouteInspection, UnknownEncoding, Upgrades,
};
pub use limits::{RateLimit, TenantLimits};
pub use names::{NameError, RouteId, RuleId, TenantId, UpstreamName};
pub use path::{normalize_path, NormalizedPath, PathError};
pub use routing::{normalize_host, Route, RouteTable};
