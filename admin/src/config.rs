//! The admin server's configuration (YAML), strictly parsed, paths resolved against the file's
//! folder, then checked once.
//!
//! ```yaml
//! listen: 127.0.0.1:8443
//! ca: ca.yaml                     # the CA's own config file
//! tls:
//!   self_issue:                   # or: certificate: admin.pem + private_key: admin.key
//!     tenant: platform
//!     profile: admin-server
//!     dns_names: [admin.portcullis.internal, localhost]
//!     spiffe_id: spiffe://portcullis.internal/admin   # when the profile requires one
//! operators:                      # issued by a CA profile with `role: operator`
//!   - spiffe://portcullis.internal/portcullis/operator/alice
//! crl_poll_interval: 2s           # default 2s
//! connections:                    # defaults shown; timeouts 100ms to 1h
//!   handshake_timeout: 10s        # accept to a completed TLS handshake
//!   first_request_timeout: 10s    # handshake to the first complete request head
//!   idle_timeout: 60s             # no request in progress (HTTP/1 keep-alive and HTTP/2)
//!   max_connections: 4096         # open in all, handshakes included
//!   max_unauthenticated_connections: 2048   # of those, without a client certificate
//!   max_connections_per_source: 256         # from one IP address
//! rate_limits:                    # defaults shown; per: 1s and burst: requests by default
//!   per_identity: { requests: 30, per: 1m, burst: 60 }    # client certificate's SPIFFE ID
//!   per_operator: { requests: 600, per: 1m, burst: 300 }  # instead of per_identity
//!   per_token: { requests: 10, per: 1m, burst: 20 }       # bootstrap token (its id)
//!   per_source: { requests: 1200, per: 1m, burst: 600 }   # IP address, whoever calls
//! metrics: 127.0.0.1:9443         # optional plain-HTTP Prometheus /metrics (connections open
//!                                 # by class, closed by reason, 429s by key, issuance outcomes)
//! revocation_http: 0.0.0.0:8080   # optional plain-HTTP /crl.der, /crl.pem and OCSP at /ocsp
//!                                 # (the CA config's crl_distribution_points and ocsp_url)
//! acme:                           # the ACME server under /acme/ (off by default)
//!   enabled: true
//!   http01_port: 80               # where http-01 challenges are fetched (default 80)
//!   tls_alpn01_port: 443          # where tls-alpn-01 handshakes go (default 443)
//!   dns01_resolver: 127.0.0.1:53  # offer dns-01, asking this resolver (none by default)
//! agents:                         # node agents and the SPIFFE IDs they may obtain SVIDs for
//!   - spiffe_id: spiffe://portcullis.internal/agent/node-1       # (see `config/agents.rs`)
//!     tenant: platform
//!     grants: [{ tenant: acme, spiffe_ids: ["spiffe://acme.example/ns/**"] }]
//! store:                          # optional: admin state in PostgreSQL (`store.rs`)
//!   postgres: { url: "postgresql://portcullis@db.internal/portcullis",
//!               password_file: pg-password, tls: { ca: pg-ca.pem } }
//! ```
//!
//! Operators are a role: [`AdminConfig::check_operators`] refuses an operator ID that a tenant
//! profile of the CA could issue, or that no operator profile issues.

mod agents;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_ca::{IssuanceProfile, ProfileRole, TenantId, OPERATOR_PATH};
#[cfg(feature = "schema")]
use portcullis_identity::schema::HumanDuration;
use portcullis_identity::SpiffeId;
use serde::{Deserialize, Serialize};

use crate::error::{io_error, AdminError};
use crate::policies::PoliciesConfig;
use crate::roles::RoleBinding;
use crate::store::StoreConfig;
pub use agents::{AgentConfig, AgentGrant};
pub(crate) use agents::{AgentRefusal, Agents};

/// The admin server's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the HTTPS listener.
    pub listen: SocketAddr,
    /// The CA's configuration file (relative paths: against this file's folder).
    pub ca: PathBuf,
    /// The server's own certificate.
    pub tls: ServingTlsConfig,
    /// SPIFFE IDs allowed to revoke and list certificates of any tenant, when their certificate
    /// was issued under a CA profile with `role: operator`.
    #[serde(default)]
    pub operators: Vec<String>,
    /// How often `STATE/crl.pem` is checked for a change (default 2 s).
    #[serde(default = "default_crl_poll", with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub crl_poll_interval: Duration,
    /// How the listener bounds its connections.
    #[serde(default)]
    pub connections: ConnectionsConfig,
    /// Request rates per caller.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// Address of a plain-HTTP listener serving Prometheus `/metrics` (none by default; keep
    /// it on loopback or a management network).
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Address of a plain-HTTP listener serving the CRL (`/crl.der`, `/crl.pem`) and the OCSP
    /// responder (`/ocsp`) to relying parties other than Portcullis (none by default).
    #[serde(default)]
    pub revocation_http: Option<SocketAddr>,
    /// The ACME server (RFC 8555) on this listener.
    #[serde(default)]
    pub acme: AcmeConfig,
    /// Node agents and the SPIFFE IDs (per tenant) they may obtain SVIDs for.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// Roles bound to callers' SPIFFE IDs, per tenant or platform-wide (`roles.rs`).
    #[serde(default)]
    pub roles: Vec<RoleBinding>,
    /// Tenants' policies as versioned objects (off unless set; `policies.rs`).
    #[serde(default)]
    pub policies: Option<PoliciesConfig>,
    /// OpenID Connect providers whose bearer tokens identify people (`people.rs`).
    #[serde(default)]
    pub identity_providers: Vec<crate::people::IdentityProviderConfig>,
    /// Changes by people need a token whose `amr` names a second factor.
    #[serde(default)]
    pub mfa_for_writes: bool,
    /// One person's several identities (certificates, OIDC subjects): a request and its
    /// approval must come from two persons, whichever way each signed in (`persons.rs`).
    #[serde(default)]
    pub persons: Vec<crate::persons::PersonConfig>,
    /// Tenants' webhook subscriptions (off unless set; `webhooks.rs`).
    #[serde(default)]
    pub webhooks: Option<crate::webhooks::WebhooksConfig>,
    /// The fleet's etcd cluster: every revocation is also published there for every gateway
    /// (through a local spool, so it is never lost while etcd is unreachable).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    /// Where the admin plane's state lives (`store.rs`): SQLite files in the CA state
    /// directory unless `store.postgres` is set.
    #[serde(default)]
    pub store: StoreConfig,
}

/// The `fleet:` section of the admin config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// etcd client URLs, `http://host:port` or `https://host:port` (with `tls`).
    pub endpoints: Vec<String>,
    /// Key prefix (default `/portcullis`); revocations are under `PREFIX/revoked/`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// TLS to etcd.
    #[serde(default)]
    pub tls: Option<FleetTlsConfig>,
    /// Where revocations wait for etcd (default: the CA's `STATE/fleet-spool`).
    #[serde(default)]
    pub spool: Option<PathBuf>,
}

/// `fleet.tls`: etcd's CA, and a client certificate when etcd asks for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FleetTlsConfig {
    pub ca: PathBuf,
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

impl FleetConfig {
    /// The checked connection settings.
    pub fn settings(&self) -> Result<portcullis_identity::FleetSettings, String> {
        let tls = match &self.tls {
            None => None,
            Some(tls) => Some(portcullis_identity::FleetTls {
                ca: tls.ca.clone(),
                client: match (&tls.client_certificate, &tls.client_key) {
                    (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                    (None, None) => None,
                    _ => {
                        return Err(
                            "fleet.tls: client_certificate and client_key go together".to_owned()
                        )
                    }
                },
            }),
        };
        let settings = portcullis_identity::FleetSettings {
            endpoints: self.endpoints.clone(),
            prefix: self
                .prefix
                .clone()
                .unwrap_or_else(|| portcullis_identity::DEFAULT_FLEET_PREFIX.to_owned()),
            tls,
        };
        settings.check().map_err(|e| format!("fleet: {e}"))?;
        Ok(settings)
    }

    fn resolve(&mut self, base: &Path) {
        resolve_opt(&mut self.spool, base);
        if let Some(tls) = &mut self.tls {
            if tls.ca.is_relative() {
                tls.ca = base.join(&tls.ca);
            }
            resolve_opt(&mut tls.client_certificate, base);
            resolve_opt(&mut tls.client_key, base);
        }
    }
}

/// The ACME server's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// Serve `/acme/` (off by default).
    pub enabled: bool,
    /// The port http-01 challenges are fetched from (80 unless a test or a proxy says
    /// otherwise).
    pub http01_port: u16,
    /// The port tls-alpn-01 handshakes are made to (443 unless a test or a proxy says
    /// otherwise).
    pub tls_alpn01_port: u16,
    /// When set, dns-01 is offered too: `_acme-challenge` TXT records are asked of this
    /// resolver (and wildcard names may be ordered).
    pub dns01_resolver: Option<SocketAddr>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            http01_port: 80,
            tls_alpn01_port: 443,
            dns01_resolver: None,
        }
    }
}

fn default_crl_poll() -> Duration {
    Duration::from_secs(2)
}

/// How the listener bounds its connections. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// From accept to a completed TLS handshake.
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub handshake_timeout: Duration,
    /// From the handshake's end to the first complete request head (HTTP/1 head, HTTP/2
    /// HEADERS), protocol detection included; a connection without one is closed.
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub first_request_timeout: Duration,
    /// How long a connection with no request in progress stays open after its last one
    /// (HTTP/1 keep-alive and HTTP/2 alike); a later request head must complete within it.
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub idle_timeout: Duration,
    /// Open connections in all, handshakes included; more are closed at accept.
    pub max_connections: u32,
    /// Of those, connections that completed the handshake without a client certificate; more
    /// are closed after the handshake. The rest is kept for certified clients.
    pub max_unauthenticated_connections: u32,
    /// Open connections from one IP address (IPv4-mapped counted as IPv4); more are closed
    /// at accept.
    pub max_connections_per_source: u32,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_unauthenticated_connections: 2048,
            max_connections_per_source: 256,
        }
    }
}

impl ConnectionsConfig {
    fn check(&self) -> Result<(), String> {
        let range = Duration::from_millis(100)..=Duration::from_secs(3600);
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("first_request_timeout", self.first_request_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if !range.contains(&value) {
                return Err(format!(
                    "connections.{name}: {} is outside 100ms..1h",
                    humantime::format_duration(value)
                ));
            }
        }
        for (name, value) in [
            ("max_connections", self.max_connections),
            (
                "max_unauthenticated_connections",
                self.max_unauthenticated_connections,
            ),
            (
                "max_connections_per_source",
                self.max_connections_per_source,
            ),
        ] {
            if value == 0 {
                return Err(format!("connections.{name} must be at least 1"));
            }
        }
        if self.max_unauthenticated_connections >= self.max_connections {
            return Err(format!(
                "connections.max_unauthenticated_connections ({}) must be below \
                 max_connections ({}): the rest is kept for clients with a certificate",
                self.max_unauthenticated_connections, self.max_connections
            ));
        }
        Ok(())
    }
}

/// Request rates, each a GCRA limit per key. Every field has a default; a request is charged
/// to its source address and to its identity (operators: `per_operator`) or bootstrap token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Per client certificate: its SPIFFE ID (else its serial).
    pub per_identity: RateLimit,
    /// Per operator (their SPIFFE ID), in place of `per_identity`.
    pub per_operator: RateLimit,
    /// Per bootstrap token (its public id).
    pub per_token: RateLimit,
    /// Per source IP address (IPv4-mapped counted as IPv4), operators included.
    pub per_source: RateLimit,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Self {
            per_identity: RateLimit::new(30, minute, 60),
            per_operator: RateLimit::new(600, minute, 300),
            per_token: RateLimit::new(10, minute, 20),
            per_source: RateLimit::new(1200, minute, 600),
        }
    }
}

/// A GCRA limit: on average `requests` per `per`, in bursts of up to `burst`. Written
/// `{ requests: 30, per: 1m, burst: 60 }`; `per` defaults to 1s and `burst` to `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(try_from = "RawRateLimit", into = "RawRateLimit")]
pub struct RateLimit {
    pub requests: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// A limit from literal, non-zero figures (defaults).
    fn new(requests: u32, per: Duration, burst: u32) -> Self {
        let nonzero = |n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            requests: nonzero(requests),
            per,
            burst: nonzero(burst),
        }
    }

    /// The time one request's allowance takes to come back (at least 1 ns).
    pub fn replenish_interval(&self) -> Duration {
        (self.per / self.requests.get()).max(Duration::from_nanos(1))
    }
}

/// A [`RateLimit`] as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests: u32,
    #[serde(default = "one_second", with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    per: Duration,
    #[serde(default)]
    burst: Option<u32>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl TryFrom<RawRateLimit> for RateLimit {
    type Error = String;

    fn try_from(raw: RawRateLimit) -> Result<Self, String> {
        let requests =
            NonZeroU32::new(raw.requests).ok_or("rate limit: requests must be at least 1")?;
        let burst = NonZeroU32::new(raw.burst.unwrap_or(raw.requests))
            .ok_or("rate limit: burst must be at least 1")?;
        if !(Duration::from_millis(1)..=Duration::from_secs(24 * 3600)).contains(&raw.per) {
            return Err(format!(
                "rate limit: per {} is outside 1ms..24h",
                humantime::format_duration(raw.per)
            ));
        }
        Ok(Self {
            requests,
            per: raw.per,
            burst,
        })
    }
}

impl From<RateLimit> for RawRateLimit {
    fn from(limit: RateLimit) -> Self {
        Self {
            requests: limit.requests.get(),
            per: limit.per,
            burst: Some(limit.burst.get()),
        }
    }
}

/// The server certificate, as written: either `self_issue`, or `certificate` and `private_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ServingTlsConfig {
    /// Issue the server certificate from the CA at start, and renew it.
    #[serde(default)]
    pub self_issue: Option<SelfIssueConfig>,
    /// PEM certificate chain (leaf first).
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
}

/// What the self-issued server certificate asks the CA for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SelfIssueConfig {
    /// The tenant whose profile issues it.
    pub tenant: TenantId,
    /// The CA profile (must grant `server_auth`); its default lifetime is used.
    pub profile: String,
    /// DNS names the certificate carries (at least one).
    pub dns_names: Vec<String>,
    /// A SPIFFE ID, for profiles that require one.
    #[serde(default)]
    pub spiffe_id: Option<String>,
}

/// Where the server certificate comes from, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServingCertSource {
    /// Issued by the CA at start and renewed at 2/3 of its lifetime.
    SelfIssue(SelfIssueConfig),
    /// Read from files once at start.
    Files {
        certificate: PathBuf,
        private_key: PathBuf,
    },
}

impl AdminConfig {
    /// Reads a YAML file, resolves relative paths against its folder, and checks it.
    pub fn load(path: &Path) -> Result<Self, AdminError> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base).map_err(|detail| AdminError::Config {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Parses YAML text, resolving relative paths against `base`, and checks it.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Self, String> {
        let mut config: AdminConfig = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut config.ca);
        resolve_opt(&mut config.tls.certificate, base);
        resolve_opt(&mut config.tls.private_key, base);
        config.serving_cert()?;
        for op in &config.operators {
            op.parse::<SpiffeId>()
                .map_err(|e| format!("operators: {op:?} is not a SPIFFE ID: {e}"))?;
        }
        if config.crl_poll_interval < Duration::from_millis(100) {
            return Err("crl_poll_interval must be at least 100ms".to_owned());
        }
        config.connections.check()?;
        config.checked_agents()?;
        for p in &mut config.identity_providers {
            resolve_opt(&mut p.ca, base);
        }
        let providers: Vec<&str> = config
            .identity_providers
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        crate::roles::check_bindings(&config.roles, &providers)?;
        crate::persons::check(&config.persons, &providers)?;
        if let Some(p) = &mut config.policies {
            p.resolve(base);
            p.check()?;
        }
        if let Some(w) = &mut config.webhooks {
            w.resolve(base);
            w.check().map_err(|e| format!("webhooks.{e}"))?;
        }
        if let Some(fleet) = &mut config.fleet {
            fleet.resolve(base);
            fleet.settings()?;
        }
        config.store.resolve(base);
        config.store.check()?;
        if config.store.postgres.is_some() {
            for (set, what) in [
                (
                    config
                        .policies
                        .as_ref()
                        .is_some_and(|p| p.database.is_some()),
                    "policies",
                ),
                (
                    config
                        .webhooks
                        .as_ref()
                        .is_some_and(|w| w.database.is_some()),
                    "webhooks",
                ),
            ] {
                if set {
                    return Err(format!(
                        "store.postgres: {what} are kept in PostgreSQL; leave {what}.database \
                         (a SQLite file) unset"
                    ));
                }
            }
        }
        Ok(config)
    }

    /// Checks the operators against the CA's profiles. Operators are a role: an operator's ID
    /// must be one no tenant profile could issue (or that tenant could act as the operator:
    /// list and revoke every certificate), and one that a profile with `role: operator`
    /// issues (else no certificate could act as it). The error names the operator, the
    /// profile and the pattern.
    pub fn check_operators(&self, profiles: &[IssuanceProfile]) -> Result<(), String> {
        for op in &self.operators {
            let id: SpiffeId = op
                .parse()
                .map_err(|e| format!("operators: {op:?} is not a SPIFFE ID: {e}"))?;
            let issued_by = |role: ProfileRole| {
                profiles
                    .iter()
                    .filter(move |p| p.role == role)
                    .find_map(|p| {
                        let pattern = p.spiffe_ids.iter().find(|pattern| pattern.matches(&id))?;
                        Some((p, pattern))
                    })
            };
            if let Some((profile, pattern)) = issued_by(ProfileRole::Tenant) {
                return Err(format!(
                    "operators: {op} could be issued by tenant {}'s profile {:?} (SPIFFE ID \
                     pattern {pattern}), so that tenant could act as this operator; give \
                     operators IDs under spiffe://{}{OPERATOR_PATH}, issued by a profile with \
                     role: operator",
                    profile.tenant,
                    profile.name,
                    id.trust_domain()
                ));
            }
            if issued_by(ProfileRole::Operator).is_none() {
                return Err(format!(
                    "operators: no CA profile with role: operator issues {op}, so no \
                     certificate could act as this operator"
                ));
            }
        }
        Ok(())
    }

    /// The `agents:` section, checked.
    pub(crate) fn checked_agents(&self) -> Result<Agents, String> {
        Agents::check(&self.agents, &self.operators)
    }

    /// Where the server certificate comes from.
    pub fn serving_cert(&self) -> Result<ServingCertSource, String> {
        let tls = &self.tls;
        match (&tls.self_issue, &tls.certificate, &tls.private_key) {
            (Some(s), None, None) => {
                if s.dns_names.is_empty() {
                    return Err("tls.self_issue.dns_names: name at least one".to_owned());
                }
                Ok(ServingCertSource::SelfIssue(s.clone()))
            }
            (None, Some(c), Some(k)) => Ok(ServingCertSource::Files {
                certificate: c.clone(),
                private_key: k.clone(),
            }),
            _ => Err("tls: give either self_issue, or both certificate and private_key".to_owned()),
        }
    }
}

fn resolve_opt(p: &mut Option<PathBuf>, base: &Path) {
    if let Some(p) = p {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen: 127.0.0.1:8443
ca: ca.yaml
tls:
  self_issue:
    tenant: platform
    profile: admin-server
    dns_names: [localhost]
operators: ["spiffe://example.org/portcullis/operator/alice"]
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let c = AdminConfig::from_yaml(GOOD, Path::new("/etc/portcullis")).unwrap();
        assert_eq!(c.ca, PathBuf::from("/etc/portcullis/ca.yaml"));
        assert_eq!(c.crl_poll_interval, Duration::from_secs(2));
        assert!(matches!(
            c.serving_cert().unwrap(),
            ServingCertSource::SelfIssue(_)
        ));
        let files = GOOD.replace(
            "  self_issue:\n    tenant: platform\n    profile: admin-server\n    dns_names: [localhost]\n",
            "  certificate: a.pem\n  private_key: /k/a.key\n",
        );
        let c = AdminConfig::from_yaml(&files, Path::new("/etc/p")).unwrap();
        assert_eq!(
            c.serving_cert().unwrap(),
            ServingCertSource::Files {
                certificate: "/etc/p/a.pem".into(),
                private_key: "/k/a.key".into()
            }
        );
    }

    #[test]
    fn the_fleet_section_is_checked_and_its_paths_resolved() {
        let with = |fleet: &str| format!("{GOOD}fleet:\n{fleet}");
        let c = AdminConfig::from_yaml(
            &with("  endpoints: [https://etcd:2379]\n  tls: { ca: etcd.pem }\n  spool: spool\n"),
            Path::new("/etc/portcullis"),
        )
        .unwrap();
        let fleet = c.fleet.expect("fleet");
        assert_eq!(fleet.spool, Some(PathBuf::from("/etc/portcullis/spool")));
        let settings = fleet.settings().unwrap();
        assert_eq!(settings.prefix, "/portcullis");
        assert_eq!(
            settings.tls.map(|t| t.ca),
            Some(PathBuf::from("/etc/portcullis/etcd.pem"))
        );
        for (bad, needle) in [
            (
                "  endpoints: [http://etcd:2379]\n  spoool: x\n",
                "unknown field",
            ),
            ("  endpoints: []\n", "at least one"),
            ("  endpoints: [etcd:2379]\n", "http://"),
            ("  endpoints: [https://etcd:2379]\n", "need a `tls` section"),
            (
                "  endpoints: [http://etcd:2379]\n  prefix: nope\n",
                "prefix",
            ),
        ] {
            let err =
                AdminConfig::from_yaml(&with(bad), Path::new("/etc/portcullis")).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn refuses_typos_and_ambiguity() {
        for (bad, needle) in [
            (GOOD.replace("operators", "operator"), "unknown field"),
            (
                GOOD.replace("dns_names: [localhost]", "dns_names: []"),
                "at least one",
            ),
            (
                GOOD.replace(
                    "    dns_names: [localhost]\n",
                    "    dns_names: [localhost]\n  certificate: x.pem\n",
                ),
                "either",
            ),
            (
                GOOD.replace("spiffe://example.org/portcullis/operator/alice", "alice"),
                "SPIFFE",
            ),
            (
                GOOD.replace(
                    "/portcullis/operator/alice",
                    "/portcullis/operator/../alice",
                ),
                "SPIFFE",
            ),
            (
                GOOD.replace("tenant: platform", "tenant: Platform"),
                "tenant id",
            ),
        ] {
            let err = AdminConfig::from_yaml(&bad, Path::new("/")).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn an_operator_a_tenant_profile_could_issue_is_refused() {
        let profiles = |yaml: &str| {
            portcullis_ca::CaConfig::from_yaml(&format!(
                "state_dir: /s\nbackend:\n  software:\n    key_dir: /k\nkeys:\n  \
                 root_label: r\n  issuing_label: i\nprofiles:\n{yaml}"
            ))
            .unwrap()
            .profiles()
            .unwrap()
        };
        let operators = "  - name: ops\n    tenant: platform\n    role: operator\n    \
                         spiffe_ids: [\"spiffe://example.org/portcullis/operator/*\"]\n";
        let c = AdminConfig::from_yaml(GOOD, Path::new("/")).unwrap();
        c.check_operators(&profiles(operators)).unwrap();

        let legacy = GOOD.replace("/portcullis/operator/alice", "/operator/alice");
        let legacy = AdminConfig::from_yaml(&legacy, Path::new("/")).unwrap();
        let tenant = "  - name: team-a\n    tenant: a\n    spiffe_ids: [\"spiffe://example.org/operator/*\"]\n";
        let err = legacy
            .check_operators(&profiles(&format!("{operators}{tenant}")))
            .unwrap_err();
        for needle in [
            "spiffe://example.org/operator/alice",
            "\"team-a\"",
            "spiffe://example.org/operator/*",
            "tenant a",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // No operator profile issues it: no certificate could ever act as it.
        let err = c.check_operators(&profiles(tenant)).unwrap_err();
        assert!(err.contains("role: operator"), "{err}");
    }

    #[test]
    fn connection_and_rate_limits_default_and_parse() {
        let c = AdminConfig::from_yaml(GOOD, Path::new("/")).unwrap();
        assert_eq!(c.connections, ConnectionsConfig::default());
        assert_eq!(c.rate_limits, RateLimitsConfig::default());
        let yaml = format!(
            "{GOOD}connections:\n  first_request_timeout: 2s\n  max_connections: 100\n  \
             max_unauthenticated_connections: 60\nrate_limits:\n  per_token: {{ requests: 3 }}\n  \
             per_source: {{ requests: 5, per: 1m, burst: 20 }}\n"
        );
        let c = AdminConfig::from_yaml(&yaml, Path::new("/")).unwrap();
        assert_eq!(c.connections.first_request_timeout, Duration::from_secs(2));
        assert_eq!(c.connections.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.connections.max_connections, 100);
        let token = c.rate_limits.per_token;
        assert_eq!(
            (token.requests.get(), token.per, token.burst.get()),
            (3, Duration::from_secs(1), 3)
        );
        let source = c.rate_limits.per_source;
        assert_eq!(source.replenish_interval(), Duration::from_secs(12));
        assert_eq!(source.burst.get(), 20);
        assert_eq!(
            c.rate_limits.per_identity,
            RateLimitsConfig::default().per_identity
        );
    }

    #[test]
    fn refuses_bad_connection_and_rate_limits() {
        for (extra, needle) in [
            (
                "connections:\n  idle_timout: 5s\n",
                "unknown field `idle_timout`",
            ),
            ("connections:\n  idle_timeout: 5\n", "idle_timeout"),
            (
                "connections:\n  handshake_timeout: 10ms\n",
                "outside 100ms..1h",
            ),
            (
                "connections:\n  first_request_timeout: 2h\n",
                "outside 100ms..1h",
            ),
            (
                "connections:\n  max_connections_per_source: 0\n",
                "at least 1",
            ),
            (
                "connections:\n  max_connections: 10\n  max_unauthenticated_connections: 10\n",
                "must be below max_connections",
            ),
            (
                "rate_limits:\n  per_token: { requests: 0 }\n",
                "requests must be at least 1",
            ),
            (
                "rate_limits:\n  per_source: { requests: 5, burst: 0 }\n",
                "burst must be at least 1",
            ),
            (
                "rate_limits:\n  per_identity: { requests: 5, per: 0s }\n",
                "outside 1ms..24h",
            ),
            (
                "rate_limits:\n  per_identity: { request: 5 }\n",
                "unknown field",
            ),
            (
                "rate_limits:\n  per_client: { requests: 5 }\n",
                "unknown field",
            ),
        ] {
            let err =
                AdminConfig::from_yaml(&format!("{GOOD}{extra}"), Path::new("/")).unwrap_err();
            assert!(err.contains(needle), "{extra}: {needle}: {err}");
        }
    }
}
