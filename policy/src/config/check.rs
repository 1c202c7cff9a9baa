//! Converts the raw config into checked types, collecting every problem with its location.
//!
//! This file handles the process-wide sections (listeners, metrics, shutdown, upstreams);
//! `check/connections.rs` a listener's connection bounds; `check/tenants.rs` tenants, routes
//! and access rules; `check/upstreams.rs` upstreams.

mod audit;
mod connections;
mod tenants;
mod upstreams;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::locate::Locations;
use super::raw::{
    RawAssertion, RawConfig, RawEgress, RawFairness, RawFleet, RawHttp, RawIssuer, RawListener,
    RawPolicySource, RawSessions, RawTrustDomain,
};
use super::{
    AssertionSettings, AuditKey, BundleEndpointConfig, ClientAuth, Config, ConfigProblem,
    EgressConfig, Fairness, FleetConfig, HttpSettings, IssuerConfig, ListenerConfig, MetricsConfig,
    PolicySource, TlsListenerConfig, TrustDomainBundle, MIN_BUNDLE_REFRESH,
};

mod traces;

/// How often a SPIFFE bundle endpoint is fetched by default.
const DEFAULT_BUNDLE_REFRESH: Duration = Duration::from_secs(300);
use crate::authn::SessionSettings;
use crate::headers::StripList;

const DEFAULT_METRICS_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
const MAX_GRACE: Duration = Duration::from_secs(3600);

/// Collects problems while converting; `locs` gives each node path its position.
pub(crate) struct Checker<'a> {
    locs: &'a Locations,
    base: &'a Path,
    problems: Vec<ConfigProblem>,
    /// Headers removed before forwarding, which access rules may not look at.
    stripped: StripList,
    /// Whether the file has a `sessions` section (routes with `login` need one).
    sessions: bool,
}

impl Checker<'_> {
    /// A problem about the value at `path` (a scalar, or a list entry).
    fn at_value(&mut self, path: &str, message: String) {
        let pos = self.locs.value(path);
        self.problems.push(ConfigProblem::at(pos, message));
    }

    /// A problem about the mapping or list at `path`, pointed at its key.
    fn at_key(&mut self, path: &str, message: String) {
        let pos = self.locs.key(path);
        self.problems.push(ConfigProblem::at(pos, message));
    }

    /// " (line N)" for the node at `path`, to point back at an earlier definition.
    fn line_note(&self, path: &str) -> String {
        self.locs
            .value(path)
            .map(|p| format!(" (line {})", p.line))
            .unwrap_or_default()
    }

    /// Resolves a configured file path against the config file's directory.
    fn file_path(&mut self, path: &str, what: &str, value: &Path) -> PathBuf {
        if value.as_os_str().is_empty() {
            self.at_value(path, format!("{what}: the path is empty"));
        }
        self.base.join(value)
    }

    /// `SECTION.client_certificate` and `SECTION.client_key`: both (their paths) or neither;
    /// `Err` (reported at `section`) when only one is given.
    fn client_pair(
        &mut self,
        section: &str,
        what: &str,
        certificate: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<(PathBuf, PathBuf)>, ()> {
        match (certificate, key) {
            (Some(c), Some(k)) => Ok(Some((
                self.file_path(&format!("{section}.client_certificate"), what, c),
                self.file_path(&format!("{section}.client_key"), what, k),
            ))),
            (None, None) => Ok(None),
            _ => {
                self.at_key(
                    section,
                    format!("{section}: client_certificate and client_key go together"),
                );
                Err(())
            }
        }
    }

    fn socket_addr(&mut self, path: &str, what: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.at_value(
                    path,
                    format!("{what}: `{text}` is not an IP:port address (e.g. 127.0.0.1:8443)"),
                );
                None
            }
        }
    }

    fn nonzero(
        &mut self,
        path: &str,
        what: &str,
        value: Option<Duration>,
        default: Duration,
    ) -> Duration {
        let value = value.unwrap_or(default);
        if value.is_zero() {
            self.at_value(path, format!("{what} must be greater than zero"));
        }
        value
    }

    /// Reports a name already used at `first`, otherwise remembers it.
    fn unique<K: std::hash::Hash + Eq>(
        &mut self,
        seen: &mut HashMap<K, String>,
        key: K,
        path: String,
        message: impl FnOnce() -> String,
    ) {
        match seen.get(&key) {
            Some(first) => {
                let note = self.line_note(first);
                self.at_value(&path, format!("{}{note}", message()));
            }
            None => {
                seen.insert(key, path);
            }
        }
    }
}

/// `(host, port)` of an `https://host:port[/]` URL.
fn https_authority(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// A CIDR such as `10.0.0.0/8`; a bare address means just that address.
pub(crate) fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(format!(
            "`{text}` is not a CIDR (e.g. 10.0.0.0/8) or IP address"
        )),
    }
}

/// Converts `raw`, returning every problem found if there is any.
pub(crate) fn check(
    raw: RawConfig,
    locs: &Locations,
    base: &Path,
) -> Result<Config, Vec<ConfigProblem>> {
    let mut c = Checker {
        locs,
        base,
        problems: Vec::new(),
        stripped: StripList::default(),
        sessions: false,
    };
    let http = c.http(raw.http.as_ref());
    let fairness = raw.fairness.as_ref().map(|f| c.fairness(f));
    c.stripped = http.strip.clone();
    let listeners = c.listeners(&raw.listeners);
    let metrics = c.metrics(&raw, &listeners);
    let shutdown_grace = c.shutdown(&raw);
    let upstreams = c.upstreams(&raw.upstreams);
    let upstream_names = raw.upstreams.iter().map(|u| u.name.as_str()).collect();
    c.sessions = raw.sessions.is_some();
    let (routes, tenants) = c.tenants(&raw.tenants, &upstream_names);
    let sessions = raw.sessions.as_ref().map(|s| c.sessions(s));
    let audit = raw.audit.as_ref().map(|a| c.audit(a));
    let identity_assertion = raw.identity_assertion.as_ref().map(|a| c.assertion(a));
    let egress = c.egress(&raw.egress, &raw.listeners);
    let policy_source = raw.policy_source.as_ref().and_then(|p| c.policy_source(p));
    let tracing = raw.tracing.as_ref().map(|t| c.tracing(t));
    let fleet = raw.fleet.as_ref().and_then(|f| c.fleet(f));
    if c.problems.is_empty() {
        Ok(Config {
            listeners,
            metrics,
            shutdown_grace,
            upstreams,
            routes,
            tenants,
            audit,
            http,
            fairness,
            identity_assertion,
            sessions,
            egress,
            policy_source,
            policy_serial: None,
            tracing,
            fleet,
        })
    } else {
        // Problems without a location first, then in file order.
        c.problems.sort_by_key(|p| (p.line, p.column));
        Err(c.problems)
    }
}

impl Checker<'_> {
    fn egress(&mut self, raw: &[RawEgress], listeners: &[RawListener]) -> Vec<EgressConfig> {
        let mut names: HashMap<&str, String> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.as_str(), format!("listeners[{i}].name")))
            .collect();
        let mut addresses: HashMap<String, String> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (l.address.clone(), format!("listeners[{i}].address")))
            .collect();
        let mut out = Vec::new();
        for (i, e) in raw.iter().enumerate() {
            let p = format!("egress[{i}]");
            let what = format!("egress `{}`", e.name);
            if e.name.is_empty() {
                self.at_value(&format!("{p}.name"), "egress name is empty".to_owned());
            }
            self.unique(&mut names, e.name.as_str(), format!("{p}.name"), || {
                format!("listener name `{}` is already used", e.name)
            });
            self.unique(
                &mut addresses,
                e.address.clone(),
                format!("{p}.address"),
                || {
                    format!(
                        "{what}: address {} is already used by another listener",
                        e.address
                    )
                },
            );
            let address = self.socket_addr(&format!("{p}.address"), &what, &e.address);
            if let Some(addr) = address {
                if !addr.ip().is_loopback() && !e.allow_non_loopback {
                    self.at_value(
                        &format!("{p}.address"),
                        format!("{what}: {addr} is not a loopback address: anyone who reaches it would speak as the workload (set `allow_non_loopback: true` if that is meant)"),
                    );
                }
            }
            let workload = match e.workload.parse::<portcullis_identity::SpiffeId>() {
                Ok(id) => Some(id),
                Err(err) => {
                    self.at_value(
                        &format!("{p}.workload"),
                        format!("{what}: workload `{}`: {err}", e.workload),
                    );
                    None
                }
            };
            let connections = self.connections(&p, &what, e.connections.as_ref());
            if connections.proxy_protocol.is_some() {
                self.at_value(
                    &format!("{p}.connections.proxy_protocol"),
                    format!("{what}: an egress listener takes no PROXY protocol"),
                );
            }
            if let (Some(address), Some(workload)) = (address, workload) {
                out.push(EgressConfig {
                    name: e.name.clone(),
                    address,
                    workload,
                    connections,
                });
            }
        }
        out
    }

    fn listeners(&mut self, raw: &[RawListener]) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.at_key("listeners", "at least one listener is required".to_owned());
        }
        let mut names = HashMap::new();
        let mut addresses = HashMap::new();
        let mut out = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let p = format!("listeners[{i}]");
            let what = format!("listener `{}`", l.name);
            if l.name.is_empty() {
                self.at_value(&format!("{p}.name"), "listener name is empty".to_owned());
            }
            self.unique(&mut names, l.name.as_str(), format!("{p}.name"), || {
                format!("listener name `{}` is already used", l.name)
            });
            let address = self.socket_addr(&format!("{p}.address"), &what, &l.address);
            if let Some(addr) = address {
                self.unique(&mut addresses, addr, format!("{p}.address"), || {
                    format!("{what}: address {addr} is already used by another listener")
                });
            }
            let tls = &l.tls;
            let tp = format!("{p}.tls");
            let certificate = self.file_path(&format!("{tp}.certificate"), &what, &tls.certificate);
            let private_key = self.file_path(&format!("{tp}.private_key"), &what, &tls.private_key);
            let trust_domains = self.trust_domains(&tp, &what, tls.trust_domains.as_deref());
            let client_ca = match &tls.client_ca {
                Some(ca) => {
                    if tls.trust_domains.is_some() {
                        self.at_key(
                            &format!("{tp}.trust_domains"),
                            format!("{what}: give `client_ca` or `trust_domains`, not both"),
                        );
                    }
                    Some(self.file_path(&format!("{tp}.client_ca"), &what, ca))
                }
                None if tls.client_auth != ClientAuth::Off && tls.trust_domains.is_none() => {
                    self.at_key(
                        &tp,
                        format!("{what}: `client_ca` (or `trust_domains`) is required unless `client_auth` is `off`"),
                    );
                    None
                }
                None => None,
            };
            if tls.client_auth == ClientAuth::Off && tls.trust_domains.is_some() {
                self.at_key(
                    &format!("{tp}.trust_domains"),
                    format!("{what}: `trust_domains` verifies client certificates, which `client_auth: off` does not ask for"),
                );
            }
            let crl = tls
                .crl
                .as_ref()
                .map(|crl| self.file_path(&format!("{tp}.crl"), &what, crl));
            if crl.is_some() && client_ca.is_none() && trust_domains.is_empty() {
                self.at_value(
                    &format!("{tp}.crl"),
                    format!("{what}: `crl` needs client certificates (`client_ca`)"),
                );
            }
            let issuer = tls
                .issuer
                .as_ref()
                .and_then(|i| self.issuer(&format!("{tp}.issuer"), &what, i));
            let mut trusted_proxies = Vec::new();
            for (j, text) in l.trusted_proxies.iter().enumerate() {
                match parse_cidr(text) {
                    Ok(net) => trusted_proxies.push(net),
                    Err(msg) => self.at_value(
                        &format!("{p}.trusted_proxies[{j}]"),
                        format!("{what}: trusted_proxies: {msg}"),
                    ),
                }
            }
            let connections = self.connections(&p, &what, l.connections.as_ref());
            if let Some(address) = address {
                out.push(ListenerConfig {
                    name: l.name.clone(),
                    address,
                    tls: TlsListenerConfig {
                        certificate,
                        private_key,
                        client_auth: tls.client_auth,
                        client_ca,
                        trust_domains,
                        crl,
                        issuer,
                    },
                    trusted_proxies,
                    connections,
                });
            }
        }
        out
    }

    fn issuer(&mut self, path: &str, what: &str, raw: &RawIssuer) -> Option<IssuerConfig> {
        let Some((host, port)) = https_authority(&raw.url) else {
            self.at_value(
                &format!("{path}.url"),
                format!("{what}: issuer url `{}` is not https://host:port", raw.url),
            );
            return None;
        };
        if raw.dns_names.is_empty() && raw.spiffe_id.is_none() {
            self.at_key(
                path,
                format!("{what}: issuer needs `dns_names` or a `spiffe_id` to ask for"),
            );
        }
        if raw.lifetime.is_some_and(|l| l < Duration::from_secs(10)) {
            self.at_value(
                &format!("{path}.lifetime"),
                format!("{what}: issuer lifetime must be at least 10s"),
            );
        }
        Some(IssuerConfig {
            url: raw.url.clone(),
            host,
            port,
            ca: self.file_path(&format!("{path}.ca"), what, &raw.ca),
            bootstrap_token_file: raw
                .bootstrap_token_file
                .as_ref()
                .map(|f| self.file_path(&format!("{path}.bootstrap_token_file"), what, f)),
            dns_names: raw.dns_names.clone(),
            spiffe_id: raw.spiffe_id.clone(),
            profile: raw.profile.clone(),
            lifetime: raw.lifetime,
        })
    }

    fn sessions(&mut self, raw: &RawSessions) -> SessionSettings {
        let what = "sessions";
        let key_ring = self.file_path("sessions.key_ring", what, &raw.key_ring);
        let absolute_lifetime = raw
            .absolute_lifetime
            .unwrap_or(Duration::from_secs(12 * 3600));
        let idle_lifetime = raw.idle_lifetime.unwrap_or(Duration::from_secs(3600));
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 86_400))
            .contains(&absolute_lifetime)
        {
            self.at_value(
                "sessions.absolute_lifetime",
                format!("{what}: `absolute_lifetime` must be between 1m and 30d"),
            );
        }
        if idle_lifetime < Duration::from_secs(60) || idle_lifetime > absolute_lifetime {
            self.at_value(
                "sessions.idle_lifetime",
                format!(
                    "{what}: `idle_lifetime` must be at least 1m and at most `absolute_lifetime`"
                ),
            );
        }
        SessionSettings {
            key_ring,
            absolute_lifetime,
            idle_lifetime,
        }
    }

    fn assertion(&mut self, raw: &RawAssertion) -> AssertionSettings {
        let what = "identity_assertion";
        let signing_key = match (&raw.signing_key, &raw.signing_pkcs11) {
            (Some(path), None) => {
                AuditKey::File(self.file_path("identity_assertion.signing_key", what, path))
            }
            (None, Some(pkcs11)) => self.pkcs11_key("identity_assertion.signing_pkcs11", pkcs11),
            _ => {
                self.at_key(
                    what,
                    format!("{what}: give exactly one of `signing_key` (a key file) and `signing_pkcs11`"),
                );
                AuditKey::File(PathBuf::new())
            }
        };
        let lifetime = raw.lifetime.unwrap_or(Duration::from_secs(60));
        if !(Duration::from_secs(10)..=Duration::from_secs(3_600)).contains(&lifetime) {
            self.at_value(
                "identity_assertion.lifetime",
                format!("{what}: `lifetime` must be between 10s and 1h"),
            );
        }
        let issuer = raw
            .issuer
            .clone()
            .unwrap_or_else(|| "portcullis".to_owned());
        if issuer.is_empty() {
            self.at_value(
                "identity_assertion.issuer",
                format!("{what}: `issuer` is empty"),
            );
        }
        AssertionSettings {
            signing_key,
            issuer,
            lifetime,
        }
    }

    fn metrics(&mut self, raw: &RawConfig, listeners: &[ListenerConfig]) -> MetricsConfig {
        let text = raw.metrics.as_ref().and_then(|m| m.address.as_deref());
        let address = match text {
            None => DEFAULT_METRICS_ADDRESS,
            Some(text) => self
                .socket_addr("metrics.address", "metrics", text)
                .unwrap_or(DEFAULT_METRICS_ADDRESS),
        };
        if let Some(l) = listeners.iter().find(|l| l.address == address) {
            let path = if text.is_some() {
                "metrics.address"
            } else {
                "metrics"
            };
            self.at_value(
                path,
                format!(
                    "metrics: address {address} is also used by listener `{}`",
                    l.name
                ),
            );
        }
        MetricsConfig { address }
    }

    fn policy_source(&mut self, raw: &RawPolicySource) -> Option<PolicySource> {
        let what = "policy_source";
        let interval = raw.interval.unwrap_or(Duration::from_secs(5));
        if !(Duration::from_millis(200)..=Duration::from_secs(3600)).contains(&interval) {
            self.at_value(
                "policy_source.interval",
                "policy_source: interval must be between 200ms and 1h".to_owned(),
            );
        }
        let Some((host, port)) = https_authority(&raw.url) else {
            self.at_value(
                "policy_source.url",
                format!("policy_source: url `{}` is not https://host:port", raw.url),
            );
            return None;
        };
        Some(PolicySource {
            url: raw.url.clone(),
            host,
            port,
            ca: self.file_path("policy_source.ca", what, &raw.ca),
            client_certificate: self.file_path(
                "policy_source.client_certificate",
                what,
                &raw.client_certificate,
            ),
            client_key: self.file_path("policy_source.client_key", what, &raw.client_key),
            public_key: self.file_path("policy_source.public_key", what, &raw.public_key),
            cache: self.file_path("policy_source.cache", what, &raw.cache),
            interval,
        })
    }

    fn fleet(&mut self, raw: &RawFleet) -> Option<FleetConfig> {
        use portcullis_identity::{check_fleet_endpoint, check_fleet_prefix, FleetTls};
        let what = "fleet";
        let mut ok = true;
        for (i, endpoint) in raw.endpoints.iter().enumerate() {
            if let Err(e) = check_fleet_endpoint(endpoint) {
                self.at_value(&format!("fleet.endpoints[{i}]"), format!("fleet: {e}"));
                ok = false;
            }
        }
        let prefix = raw
            .prefix
            .clone()
            .unwrap_or_else(|| portcullis_identity::DEFAULT_FLEET_PREFIX.to_owned());
        if let Err(e) = check_fleet_prefix(&prefix) {
            self.at_value("fleet.prefix", format!("fleet: {e}"));
            ok = false;
        }
        let tls = match &raw.tls {
            None => None,
            Some(tls) => {
                let cert = tls.client_certificate.as_deref();
                let client = self
                    .client_pair("fleet.tls", what, cert, tls.client_key.as_deref())
                    .unwrap_or_else(|()| {
                        ok = false;
                        None
                    });
                Some(FleetTls {
                    ca: self.file_path("fleet.tls.ca", what, &tls.ca),
                    client,
                })
            }
        };
        let settings = portcullis_identity::FleetSettings {
            endpoints: raw.endpoints.clone(),
            prefix,
            tls,
        };
        if ok {
            if let Err(e) = settings.check() {
                self.at_key("fleet", format!("fleet: {e}"));
                ok = false;
            }
        }
        let cache = self.file_path("fleet.cache", what, &raw.cache);
        ok.then_some(FleetConfig { settings, cache })
    }

    fn fairness(&mut self, raw: &RawFairness) -> Fairness {
        let queue_timeout = raw.queue_timeout.unwrap_or(Duration::from_secs(1));
        if !(1..=1_000_000).contains(&raw.max_in_flight) {
            self.at_value(
                "fairness.max_in_flight",
                "fairness: max_in_flight must be between 1 and 1000000".to_owned(),
            );
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&queue_timeout) {
            self.at_value(
                "fairness.queue_timeout",
                "fairness: queue_timeout must be between 1ms and 60s".to_owned(),
            );
        }
        Fairness {
            max_in_flight: raw.max_in_flight,
            queue_timeout,
        }
    }

    fn http(&mut self, raw: Option<&RawHttp>) -> HttpSettings {
        let defaults = HttpSettings::default();
        let Some(raw) = raw else {
            return defaults;
        };
        let mut extra = Vec::new();
        for (i, name) in raw.strip_headers.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            let token = lower.strip_suffix('*').unwrap_or(&lower);
            if !is_header_token(token) {
                self.at_value(
                    &format!("http.strip_headers[{i}]"),
                    format!(
                        "http: `{name}` is not a header name (a trailing `*` matches a prefix)"
                    ),
                );
                continue;
            }
            extra.push(lower);
        }
        let mut bytes = |key: &str, value: Option<usize>, default: usize, min: usize| {
            let value = value.unwrap_or(default);
            if !(min..=1 << 20).contains(&value) {
                self.at_value(
                    &format!("http.{key}"),
                    format!("http: {key} must be between {min} and 1048576 bytes"),
                );
            }
            value
        };
        let max_request_head = bytes(
            "max_request_head",
            raw.max_request_head,
            defaults.max_request_head,
            1024,
        );
        let max_header_line = bytes(
            "max_header_line",
            raw.max_header_line,
            defaults.max_header_line,
            256,
        );
        HttpSettings {
            strip: StripList::with_extra(&extra),
            max_request_head,
            max_header_line,
        }
    }

    fn shutdown(&mut self, raw: &RawConfig) -> Duration {
        let grace = raw
            .shutdown
            .as_ref()
            .and_then(|s| s.grace_period)
            .unwrap_or(DEFAULT_GRACE);
        if grace > MAX_GRACE {
            self.at_value(
                "shutdown.grace_period",
                "shutdown: grace_period may be at most 1h".to_owned(),
            );
        }
        grace
    }

    fn trust_domains(
        &mut self,
        tp: &str,
        what: &str,
        raw: Option<&[RawTrustDomain]>,
    ) -> Vec<TrustDomainBundle> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let p = format!("{tp}.trust_domains");
        if raw.is_empty() {
            self.at_key(&p, format!("{what}: `trust_domains` is empty"));
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut seen = HashMap::new();
        for (i, td) in raw.iter().enumerate() {
            // A trust domain is what a SPIFFE ID names before its path.
            if format!("spiffe://{}/x", td.name)
                .parse::<portcullis_identity::SpiffeId>()
                .map_or(true, |id| id.trust_domain() != td.name)
            {
                self.at_value(
                    &format!("{p}[{i}].name"),
                    format!("{what}: `{}` is not a SPIFFE trust domain (lower-case letters, digits, `.`, `-`, `_`)", td.name),
                );
            }
            self.unique(&mut seen, td.name.clone(), format!("{p}[{i}].name"), || {
                format!("{what}: trust domain `{}` is listed twice", td.name)
            });
            let endpoint = td.endpoint.as_ref().map(|e| {
                let ep = format!("{p}[{i}].endpoint");
                let bad_url = e.url.strip_prefix("https://").is_none_or(|rest| {
                    rest.is_empty()
                        || rest.starts_with('/')
                        || rest
                            .bytes()
                            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                });
                if bad_url {
                    self.at_value(
                        &format!("{ep}.url"),
                        format!("{what}: bundle endpoint `{}` is not an https URL", e.url),
                    );
                }
                let refresh = e.refresh.unwrap_or(DEFAULT_BUNDLE_REFRESH);
                if !(MIN_BUNDLE_REFRESH..=Duration::from_secs(86_400)).contains(&refresh) {
                    self.at_value(
                        &format!("{ep}.refresh"),
                        format!("{what}: bundle endpoint refresh must be between 30s and 24h"),
                    );
                }
                BundleEndpointConfig {
                    url: e.url.clone(),
                    ca: e
                        .ca
                        .as_ref()
                        .map(|ca| self.file_path(&format!("{ep}.ca"), what, ca)),
                    refresh,
                }
            });
            out.push(TrustDomainBundle {
                name: td.name.clone(),
                bundle: self.file_path(&format!("{p}[{i}].bundle"), what, &td.bundle),
                endpoint,
            });
        }
        out
    }
}

/// An RFC 9110 token, as header names are.
pub(crate) fn is_header_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
