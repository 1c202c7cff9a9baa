//! Checks tenants, their routes and access rules, and builds the [`RouteTable`].

use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::{parse_cidr, Checker};
use crate::access::{deny_rules_first, AccessRule, DnsPattern, HeaderCondition, SpiffePattern};
use crate::authn::{
    Authentication, ClaimNames, IdentityProvider, MfaRequirement, ProviderLogin, ProviderSettings,
    SigningAlgorithm, CALLBACK_PATH,
};
use crate::config::raw::{
    RawIdentityProvider, RawMfa, RawRate, RawRoute, RawRule, RawTenant, RawTenantLimits,
};
use crate::config::SecretSource;
use crate::config::TenantConfig;
use crate::dlp::{DlpPolicy, DlpSpec};
use crate::inspection::{InspectionLimits, RouteInspection};
use crate::limits::{RateLimit, TenantLimits};
use crate::names::{RouteId, RuleId, TenantId, UpstreamName};
use crate::path::{normalize_path, prefix_matches};
use crate::routing::{normalize_host, Route, RouteTable};

/// Where a (host, prefix) pair was first claimed: route id and the node path to point at.
type Claims = HashMap<(Option<String>, String), (String, String)>;

/// The tenant whose routes are being checked.
struct TenantScope<'r> {
    raw: &'r RawTenant,
    /// How many identity providers the tenant lists.
    providers: usize,
    /// `None` if the name was invalid (already reported).
    id: Option<TenantId>,
    /// Rule ids seen in this tenant -> node path of the first.
    rule_ids: HashMap<String, String>,
    /// The tenant's DLP policy and inspection limits, for routes without their own spec.
    inspection: Option<Arc<RouteInspection>>,
    limits: InspectionLimits,
}

/// Checks that `text` is already a normalised path and returns it as a stored prefix (no
/// trailing slash except for `/`).
fn stored_prefix(text: &str) -> Result<String, String> {
    match normalize_path(text) {
        Ok(n) if n.as_str() == text => {
            let trimmed = text.trim_end_matches('/');
            Ok(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            })
        }
        Ok(n) => Err(format!("`{text}` is not a normalised path (write `{n}`)")),
        Err(e) => Err(format!("`{text}` is not a valid path: {e}")),
    }
}

/// A route's `host`: an exact host name or IP, or `*.domain`. Returned lowercase.
fn route_host(text: &str) -> Result<String, String> {
    let bad = || format!("`{text}` is not a host name, IP address or `*.domain` wildcard");
    let lower = text.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(suffix) = lower.strip_prefix("*.") {
        return match normalize_host(suffix) {
            Some(n) if n == suffix && !n.contains(':') => Ok(format!("*.{n}")),
            _ => Err(bad()),
        };
    }
    if lower.parse::<Ipv6Addr>().is_ok() {
        return Ok(lower.to_owned());
    }
    match normalize_host(lower) {
        // Equal only when nothing (such as a port or brackets) was stripped.
        Some(n) if n == lower => Ok(n),
        _ => Err(bad()),
    }
}

fn authentication_name(a: Authentication) -> &'static str {
    match a {
        Authentication::Mtls => "mtls",
        Authentication::Oidc => "oidc",
        Authentication::MtlsAndOidc => "mtls_and_oidc",
    }
}

/// A provider's name: 1-63 of `a-z 0-9 - _` (it appears in metrics and records).
fn is_provider_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// An issuer identifier (OIDC Discovery §2): an `https` URL with a host, no query or
/// fragment.
fn check_issuer(issuer: &str) -> Result<(), String> {
    let Some(rest) = issuer.strip_prefix("https://") else {
        return Err(format!("`{issuer}` must be an https URL"));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || issuer.contains(['?', '#']) || issuer.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{issuer}` must be an https URL with a host and no query or fragment"
        ));
    }
    Ok(())
}

/// An HTTP method token (RFC 9110 `tchar`s), uppercased.
fn method(text: &str) -> Result<String, String> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if text.is_empty() || !text.bytes().all(is_tchar) {
        return Err(format!("`{text}` is not an HTTP method"));
    }
    Ok(text.to_ascii_uppercase())
}

impl Checker<'_> {
    pub(super) fn tenants(
        &mut self,
        raw: &[RawTenant],
        upstreams: &HashSet<&str>,
    ) -> (RouteTable, Vec<TenantConfig>) {
        let mut tenant_names = HashMap::new();
        let mut claims = Claims::new();
        let mut routes = Vec::new();
        let mut tenants = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            let p = format!("tenants[{i}]");
            let tenant = match t.name.parse::<TenantId>() {
                Ok(id) => Some(id),
                Err(e) => {
                    let msg = format!("tenant `{}`: invalid name: {e}", t.name);
                    self.at_value(&format!("{p}.name"), msg);
                    None
                }
            };
            self.unique(
                &mut tenant_names,
                t.name.as_str(),
                format!("{p}.name"),
                || format!("tenant name `{}` is already used", t.name),
            );
            let limits = match &t.limits {
                Some(l) => self.tenant_limits(&format!("{p}.limits"), &t.name, l),
                None => Some(TenantLimits::default()),
            };
            let providers = self.identity_providers(&p, t);
            let provider_count = t.identity_providers.len();
            if let (Some(id), Some(limits), Some(identity_providers)) = (&tenant, limits, providers)
            {
                tenants.push(TenantConfig {
                    id: id.clone(),
                    limits,
                    identity_providers,
                });
            }
            let mut route_names = HashMap::new();
            let limits = self.inspection_limits(&format!("{p}.body_inspection"), &t.name, t);
            let inspection = t.dlp.as_ref().and_then(|spec| {
                self.dlp(
                    &format!("{p}.dlp"),
                    &format!("tenant `{}`", t.name),
                    spec,
                    limits,
                )
            });
            let mut scope = TenantScope {
                providers: provider_count,
                raw: t,
                id: tenant,
                rule_ids: HashMap::new(),
                inspection,
                limits,
            };
            for (j, r) in t.routes.iter().enumerate() {
                let rp = format!("{p}.routes[{j}]");
                self.unique(
                    &mut route_names,
                    r.name.as_str(),
                    format!("{rp}.name"),
                    || {
                        format!(
                            "route `{}/{}`: the name is already used in this tenant",
                            t.name, r.name
                        )
                    },
                );
                routes.extend(self.route(&rp, &mut scope, r, upstreams, &mut claims));
            }
        }
        (RouteTable::new(routes), tenants)
    }

    /// Compiles a DLP spec; a problem is reported at `p` and the route gets no inspection.
    fn dlp(
        &mut self,
        p: &str,
        what: &str,
        spec: &DlpSpec,
        limits: InspectionLimits,
    ) -> Option<Arc<RouteInspection>> {
        match DlpPolicy::new(spec) {
            Ok(policy) => Some(Arc::new(RouteInspection::new(spec.clone(), policy, limits))),
            Err(e) => {
                self.at_key(p, format!("{what}: dlp: {e}"));
                None
            }
        }
    }

    fn inspection_limits(&mut self, p: &str, tenant: &str, t: &RawTenant) -> InspectionLimits {
        let defaults = InspectionLimits::default();
        let Some(raw) = &t.body_inspection else {
            return defaults;
        };
        let mut positive = |key: &str, value: Option<u64>, default: u64| match value {
            Some(0) => {
                let msg = format!("tenant `{tenant}`: body_inspection.{key} must be at least 1");
                self.at_value(&format!("{p}.{key}"), msg);
                default
            }
            Some(v) => v,
            None => default,
        };
        InspectionLimits {
            max_bytes: positive("max_bytes", raw.max_bytes, defaults.max_bytes),
            over_limit: raw.over_limit.unwrap_or_default(),
            max_decompressed_bytes: positive(
                "max_decompressed_bytes",
                raw.max_decompressed_bytes,
                defaults.max_decompressed_bytes,
            ),
            max_ratio: positive("max_ratio", raw.max_ratio, defaults.max_ratio),
            unknown_encoding: raw.unknown_encoding.unwrap_or_default(),
            other_content: raw.other_content.unwrap_or_default(),
        }
    }

    fn tenant_limits(
        &mut self,
        p: &str,
        tenant: &str,
        l: &RawTenantLimits,
    ) -> Option<TenantLimits> {
        let what = format!("tenant `{tenant}`");
        let rate = |c: &mut Self, key: &str, raw: &Option<RawRate>| match raw {
            None => Some(None),
            Some(r) => c.rate(&format!("{p}.{key}"), &what, r).map(Some),
        };
        let tenant_rate = rate(self, "rate", &l.rate);
        let per_identity = rate(self, "per_identity", &l.per_identity);
        let per_source = rate(self, "per_source", &l.per_source);
        let max_in_flight = match l.max_in_flight {
            None => Some(None),
            Some(n) => match NonZeroU32::new(n) {
                Some(n) => Some(Some(n)),
                None => {
                    let msg = format!("{what}: max_in_flight must be at least 1");
                    self.at_value(&format!("{p}.max_in_flight"), msg);
                    None
                }
            },
        };
        let weight = match l.weight {
            None => None,
            Some(w @ 1..=1000) => NonZeroU32::new(w),
            Some(_) => {
                let msg = format!("{what}: weight must be between 1 and 1000");
                self.at_value(&format!("{p}.weight"), msg);
                return None;
            }
        };
        if l.max_request_body == Some(0) {
            let msg = format!("{what}: max_request_body must be at least 1 byte");
            self.at_value(&format!("{p}.max_request_body"), msg);
            return None;
        }
        Some(TenantLimits {
            rate: tenant_rate?,
            per_identity: per_identity?,
            per_source: per_source?,
            max_in_flight: max_in_flight?,
            max_request_body: l.max_request_body,
            weight,
        })
    }

    /// A rate limit: at least one request per period, a period between 1 ms and 1 day, and a
    /// burst of at least one (default: `requests`).
    pub(super) fn rate(&mut self, p: &str, what: &str, r: &RawRate) -> Option<RateLimit> {
        let per = r.per.unwrap_or(Duration::from_secs(1));
        let Some(requests) = NonZeroU32::new(r.requests) else {
            let msg = format!("{what}: `requests` must be at least 1");
            self.at_value(&format!("{p}.requests"), msg);
            return None;
        };
        if per < Duration::from_millis(1) || per > Duration::from_secs(86_400) {
            let msg = format!("{what}: `per` must be between 1ms and 24h");
            self.at_value(&format!("{p}.per"), msg);
            return None;
        }
        let burst = match r.burst {
            None => requests,
            Some(b) => match NonZeroU32::new(b) {
                Some(b) => b,
                None => {
                    self.at_value(
                        &format!("{p}.burst"),
                        format!("{what}: `burst` must be at least 1"),
                    );
                    return None;
                }
            },
        };
        Some(RateLimit {
            requests,
            per,
            burst,
        })
    }

    fn route(
        &mut self,
        rp: &str,
        scope: &mut TenantScope<'_>,
        r: &RawRoute,
        upstreams: &HashSet<&str>,
        claims: &mut Claims,
    ) -> Option<Route> {
        let t = scope.raw;
        let tenant = scope.id.as_ref();
        let label = format!("{}/{}", t.name, r.name);
        let what = format!("route {label}");
        let id = tenant.and_then(|tenant| match RouteId::new(tenant, &r.name) {
            Ok(id) => Some(id),
            Err(e) => {
                self.at_value(&format!("{rp}.name"), format!("{what}: invalid name: {e}"));
                None
            }
        });
        let host = match &r.host {
            None => Some(None),
            Some(h) => match route_host(h) {
                Ok(h) => Some(Some(h)),
                Err(msg) => {
                    self.at_value(&format!("{rp}.host"), format!("{what}: host {msg}"));
                    None
                }
            },
        };
        let prefix_path = format!("{rp}.path_prefix");
        let prefix = match stored_prefix(r.path_prefix.as_deref().unwrap_or("/")) {
            Ok(p) => Some(p),
            Err(msg) => {
                self.at_value(&prefix_path, format!("{what}: path_prefix {msg}"));
                None
            }
        };
        let upstream = if upstreams.contains(r.upstream.as_str()) {
            r.upstream.parse::<UpstreamName>().ok()
        } else {
            let msg = format!("{what}: upstream `{}` is not defined", r.upstream);
            self.at_value(&format!("{rp}.upstream"), msg);
            None
        };
        if let (Some(host), Some(prefix)) = (&host, &prefix) {
            // Point at what makes the pair: the prefix if written, else the host, else the route.
            let at = if r.path_prefix.is_some() {
                prefix_path.clone()
            } else if r.host.is_some() {
                format!("{rp}.host")
            } else {
                rp.to_owned()
            };
            let key = (host.clone(), prefix.clone());
            if let Some((first, first_at)) = claims.get(&key) {
                let note = self.line_note(first_at);
                let host_text = host.as_deref().unwrap_or("(any)");
                let msg = format!(
                    "{what}: same host {host_text} and path_prefix `{prefix}` as route \
                     {first}{note}; one of them could never be reached"
                );
                self.at_value(&at, msg);
            } else {
                claims.insert(key, (label.clone(), at));
            }
        }
        let rate_limit = match &r.rate_limit {
            None => Some(None),
            Some(raw) => self.rate(&format!("{rp}.rate_limit"), &what, raw).map(Some),
        };
        let authentication = r.authentication.unwrap_or_default();
        if authentication.wants_token() && scope.providers == 0 {
            let msg = format!(
                "{what}: authentication `{}` needs an identity provider in tenant `{}` \
                 (`identity_providers`)",
                authentication_name(authentication),
                t.name
            );
            self.at_value(&format!("{rp}.authentication"), msg);
        }
        let mfa = r
            .mfa
            .as_ref()
            .and_then(|m| self.mfa(&format!("{rp}.mfa"), &what, authentication, m));
        if let Some(provider) = &r.login {
            let found = t.identity_providers.iter().find(|p| &p.name == provider);
            let problem = if !authentication.wants_token() {
                Some("`login` needs `authentication: oidc` or `mtls_and_oidc`".to_owned())
            } else if found.is_none() {
                Some(format!(
                    "`login`: tenant `{}` has no identity provider `{provider}`",
                    t.name
                ))
            } else if found.is_some_and(|p| p.client_id.is_none()) {
                Some(format!("`login`: identity provider `{provider}` has no `client_id` (the browser login's client)"))
            } else if !self.sessions {
                Some(
                    "`login` needs a `sessions` section (the session cookies' key ring)".to_owned(),
                )
            } else {
                None
            };
            if let Some(problem) = problem {
                self.at_value(&format!("{rp}.login"), format!("{what}: {problem}"));
            }
        }
        let mut access = Vec::new();
        for (k, rule) in r.access.iter().enumerate() {
            let path = format!("{rp}.access[{k}]");
            self.unique(
                &mut scope.rule_ids,
                rule.id.clone(),
                format!("{path}.id"),
                || {
                    format!(
                        "{what}: rule id `{}` is already used in tenant `{}`",
                        rule.id, t.name
                    )
                },
            );
            access.extend(self.rule(&path, &what, prefix.as_deref(), authentication, rule));
        }
        deny_rules_first(&mut access);
        let inspection = match &r.dlp {
            Some(spec) => self.dlp(&format!("{rp}.dlp"), &what, spec, scope.limits),
            None => scope.inspection.clone(),
        };
        let inspection = match (r.websocket, inspection) {
            (Some(upgrades), Some(i)) => Some(Arc::new(i.with_upgrades(upgrades))),
            (Some(_), None) => {
                let msg = format!("{what}: `websocket` applies only to a route with DLP");
                self.at_key(&format!("{rp}.websocket"), msg);
                None
            }
            (None, inspection) => inspection,
        };
        Some(Route {
            id: id?,
            tenant: tenant?.clone(),
            upstream: upstream?,
            host: host?,
            path_prefix: prefix?,
            rate_limit: rate_limit?,
            inspection,
            authentication,
            mfa: match (&r.mfa, mfa) {
                (Some(_), None) => return None,
                (_, mfa) => mfa,
            },
            login: r.login.clone(),
            access,
        })
    }

    fn rule(
        &mut self,
        p: &str,
        route: &str,
        route_prefix: Option<&str>,
        authentication: Authentication,
        r: &RawRule,
    ) -> Option<AccessRule> {
        let what = format!("{route}, rule `{}`", r.id);
        let id = match r.id.parse::<RuleId>() {
            Ok(id) => Some(id),
            Err(e) => {
                self.at_value(&format!("{p}.id"), format!("{what}: invalid id: {e}"));
                None
            }
        };
        let spiffe_id = self.condition(p, &what, "spiffe_id", &r.spiffe_id, |s| {
            s.parse::<SpiffePattern>()
                .map_err(|e| format!("`{s}`: {e}"))
        });
        let dns_san = self.condition(p, &what, "dns_san", &r.dns_san, |s| {
            s.parse::<DnsPattern>().map_err(|e| format!("`{s}`: {e}"))
        });
        let subject = self.condition(p, &what, "subject", &r.subject, |s| {
            if s.is_empty() {
                Err("the subject is empty".to_owned())
            } else {
                Ok(s.to_owned())
            }
        });
        let methods = self.condition(p, &what, "methods", &r.methods, method);
        let path_prefix = self.condition(p, &what, "path_prefix", &r.path_prefix, |s| {
            let prefix = stored_prefix(s)?;
            match route_prefix {
                Some(rp) if !prefix_matches(rp, &prefix) && !prefix_matches(&prefix, rp) => Err(
                    format!("`{s}` can never match: the route only serves paths under `{rp}`"),
                ),
                _ => Ok(prefix),
            }
        });
        let path = self.condition(p, &what, "path", &r.path, |s| match normalize_path(s) {
            Ok(n) if n.as_str() == s => match route_prefix {
                Some(rp) if !prefix_matches(rp, s) => Err(format!(
                    "`{s}` can never match: the route only serves paths under `{rp}`"
                )),
                _ => Ok(s.to_owned()),
            },
            Ok(n) => Err(format!("`{s}` is not a normalised path (write `{n}`)")),
            Err(e) => Err(format!("`{s}` is not a valid path: {e}")),
        });
        let source = self.condition(p, &what, "source", &r.source, parse_cidr);
        let headers = self.header_conditions(p, &what, r);
        let non_empty = |s: &str| {
            if s.is_empty() {
                Err("is empty".to_owned())
            } else {
                Ok(s.to_owned())
            }
        };
        let token_subject = self.condition(p, &what, "token_subject", &r.token_subject, non_empty);
        let email = self.condition(p, &what, "email", &r.email, |s| match s.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                Ok(s.to_ascii_lowercase())
            }
            _ => Err(format!("`{s}` is not an e-mail address")),
        });
        let email_domain = self.condition(p, &what, "email_domain", &r.email_domain, |s| {
            if s.is_empty() || s.contains('@') {
                Err(format!("`{s}` is not a domain (write it without `@`)"))
            } else {
                Ok(s.to_ascii_lowercase())
            }
        });
        let groups = self.condition(p, &what, "groups", &r.groups, non_empty);
        let claims = self.claim_conditions(p, &what, r);
        let reads_token = token_subject.as_ref().is_some_and(Option::is_some)
            || r.email.is_some()
            || r.email_domain.is_some()
            || r.groups.is_some()
            || r.claims.is_some();
        if reads_token && !authentication.wants_token() {
            let msg = format!(
                "{what}: token conditions can never match: the route reads no bearer tokens \
                 (set `authentication: oidc` or `mtls_and_oidc`)"
            );
            self.at_key(p, msg);
            return None;
        }
        Some(AccessRule {
            id: id?,
            effect: r.effect,
            spiffe_id: spiffe_id?,
            dns_san: dns_san?,
            subject: subject?,
            methods: methods?,
            path_prefix: path_prefix?,
            path: path?,
            source: source?,
            headers: headers?,
            token_subject: token_subject?,
            email: email?,
            email_domain: email_domain?,
            groups: groups?,
            claims: claims?,
        })
    }

    /// `claims: { dotted.path: [values] }`.
    fn claim_conditions(
        &mut self,
        p: &str,
        what: &str,
        r: &RawRule,
    ) -> Option<Vec<(String, Vec<String>)>> {
        let Some(map) = &r.claims else {
            return Some(Vec::new());
        };
        let mut ok = true;
        for (path, values) in map {
            let at = format!("{p}.claims.{path}");
            if path.is_empty() || path.split('.').any(str::is_empty) {
                self.at_key(&at, format!("{what}: `{path}` is not a claim path"));
                ok = false;
            } else if values.is_empty() {
                self.at_key(&at, format!("{what}: claim `{path}` lists no values"));
                ok = false;
            }
        }
        ok.then(|| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// A route's `mfa` requirement.
    fn mfa(
        &mut self,
        p: &str,
        what: &str,
        authentication: Authentication,
        m: &RawMfa,
    ) -> Option<MfaRequirement> {
        if !authentication.wants_token() {
            let msg = format!("{what}: `mfa` needs a route that reads bearer tokens (`authentication: oidc` or `mtls_and_oidc`)");
            self.at_key(p, msg);
            return None;
        }
        if m.amr.is_empty() && m.acr.is_empty() && m.max_age.is_none() {
            let msg = format!("{what}: `mfa` asks for nothing; give `amr`, `acr` or `max_age`");
            self.at_key(p, msg);
            return None;
        }
        if m.amr.iter().chain(&m.acr).any(String::is_empty) {
            self.at_key(p, format!("{what}: `mfa` lists an empty value"));
            return None;
        }
        if m.max_age.is_some_and(|a| a < Duration::from_secs(1)) {
            let msg = format!("{what}: `mfa.max_age` must be at least 1s");
            self.at_value(&format!("{p}.max_age"), msg);
            return None;
        }
        Some(MfaRequirement {
            amr: m.amr.clone(),
            acr: m.acr.clone(),
            max_age: m.max_age,
        })
    }

    /// A tenant's `identity_providers`; `None` after reporting a problem.
    fn identity_providers(&mut self, p: &str, t: &RawTenant) -> Option<Vec<IdentityProvider>> {
        let mut names = HashMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, raw) in t.identity_providers.iter().enumerate() {
            let ip = format!("{p}.identity_providers[{i}]");
            self.unique(&mut names, raw.name.as_str(), format!("{ip}.name"), || {
                format!(
                    "tenant `{}`: identity provider `{}` is listed twice",
                    t.name, raw.name
                )
            });
            match self.identity_provider(&ip, &t.name, raw) {
                Some(provider) => out.push(provider),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn identity_provider(
        &mut self,
        p: &str,
        tenant: &str,
        raw: &RawIdentityProvider,
    ) -> Option<IdentityProvider> {
        let what = format!("tenant `{tenant}`, identity provider `{}`", raw.name);
        let mut ok = true;
        if !is_provider_name(&raw.name) {
            let msg = format!("{what}: the name must be 1-63 of a-z 0-9 - _");
            self.at_value(&format!("{p}.name"), msg);
            ok = false;
        }
        if let Err(msg) = check_issuer(&raw.issuer) {
            self.at_value(&format!("{p}.issuer"), format!("{what}: issuer {msg}"));
            ok = false;
        }
        if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
            let msg = format!(
                "{what}: `audiences` must name at least one audience (the `aud` this service's \
                 tokens carry); without it a token meant for any other service would pass"
            );
            self.at_key(&format!("{p}.audiences"), msg);
            ok = false;
        }
        let algorithms = match &raw.algorithms {
            None => Some(SigningAlgorithm::ALL.to_vec()),
            Some(list) if list.is_empty() => {
                let msg = format!(
                    "{what}: `algorithms` is empty; remove it to allow every asymmetric algorithm"
                );
                self.at_key(&format!("{p}.algorithms"), msg);
                None
            }
            Some(list) => {
                let mut parsed = Vec::new();
                for (k, a) in list.iter().enumerate() {
                    match a.parse::<SigningAlgorithm>() {
                        Ok(a) => parsed.push(a),
                        Err(msg) => {
                            self.at_value(
                                &format!("{p}.algorithms[{k}]"),
                                format!("{what}: {msg}"),
                            );
                        }
                    }
                }
                (parsed.len() == list.len()).then_some(parsed)
            }
        };
        let mut bounded = |key: &str,
                           value: Option<Duration>,
                           default: Duration,
                           min: Duration,
                           max: Duration| {
            let v = value.unwrap_or(default);
            if v < min || v > max {
                let msg = format!(
                    "{what}: `{key}` must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                );
                self.at_value(&format!("{p}.{key}"), msg);
                return None;
            }
            Some(v)
        };
        let clock_skew = bounded(
            "clock_skew",
            raw.clock_skew,
            Duration::from_secs(60),
            Duration::ZERO,
            Duration::from_secs(300),
        );
        let keys_refresh = bounded(
            "keys_refresh",
            raw.keys_refresh,
            Duration::from_secs(300),
            Duration::from_secs(10),
            Duration::from_secs(86_400),
        );
        let unknown_key_refetch = bounded(
            "unknown_key_refetch",
            raw.unknown_key_refetch,
            Duration::from_secs(30),
            Duration::from_secs(1),
            Duration::from_secs(3_600),
        );
        let names = raw.claims.as_ref();
        let defaults = ClaimNames::default();
        let claim = |name: &Option<String>| name.clone().filter(|n| !n.is_empty());
        let claims = ClaimNames {
            groups: names
                .and_then(|n| claim(&n.groups))
                .unwrap_or(defaults.groups),
            email: names
                .and_then(|n| claim(&n.email))
                .unwrap_or(defaults.email),
            tenant: names.and_then(|n| claim(&n.tenant)),
        };
        if names.is_some_and(|n| {
            [&n.groups, &n.email, &n.tenant]
                .iter()
                .any(|c| c.as_deref() == Some(""))
        }) {
            self.at_key(
                &format!("{p}.claims"),
                format!("{what}: a claim name is empty"),
            );
            ok = false;
        }
        let ca = raw
            .ca
            .as_ref()
            .map(|ca| self.file_path(&format!("{p}.ca"), &what, ca));
        let login = self.provider_login(p, &what, raw);
        if !ok {
            return None;
        }
        Some(IdentityProvider {
            settings: ProviderSettings {
                name: raw.name.clone(),
                tenant: tenant.to_owned(),
                issuer: raw.issuer.clone(),
                audiences: raw.audiences.clone(),
                algorithms: algorithms?,
                clock_skew: clock_skew?,
                claims,
            },
            ca,
            keys_refresh: keys_refresh?,
            unknown_key_refetch: unknown_key_refetch?,
            login: login?,
        })
    }

    /// A provider's browser-login client: `Some(None)` when it has none.
    fn provider_login(
        &mut self,
        p: &str,
        what: &str,
        raw: &RawIdentityProvider,
    ) -> Option<Option<ProviderLogin>> {
        let Some(client_id) = &raw.client_id else {
            if raw.client_secret_file.is_some()
                || raw.client_secret_env.is_some()
                || raw.redirect_uri.is_some()
                || raw.scopes.is_some()
            {
                let msg = format!("{what}: the browser login needs `client_id`");
                self.at_key(p, msg);
                return None;
            }
            return Some(None);
        };
        let secret = match (&raw.client_secret_file, &raw.client_secret_env) {
            (Some(file), None) => Some(SecretSource::File(self.file_path(
                &format!("{p}.client_secret_file"),
                what,
                file,
            ))),
            (None, Some(env)) if !env.is_empty() => Some(SecretSource::Env(env.clone())),
            _ => {
                let msg = format!(
                    "{what}: give the client secret as exactly one of `client_secret_file` or \
                     `client_secret_env` (never in this file)"
                );
                self.at_key(p, msg);
                None
            }
        };
        let redirect_uri = match raw.redirect_uri.as_deref() {
            Some(uri)
                if uri.starts_with("https://")
                    && uri
                        .strip_prefix("https://")
                        .and_then(|r| r.split_once('/'))
                        .is_some_and(|(host, path)| {
                            !host.is_empty() && format!("/{path}") == CALLBACK_PATH
                        }) =>
            {
                Some(uri.to_owned())
            }
            _ => {
                let msg = format!(
                    "{what}: `redirect_uri` must be `https://HOST{CALLBACK_PATH}` (the gateway's \
                     callback, registered at the provider)"
                );
                self.at_key(p, msg);
                None
            }
        };
        let scopes = raw
            .scopes
            .clone()
            .unwrap_or_else(|| ["openid", "email", "profile"].map(str::to_owned).to_vec());
        if client_id.is_empty() || !scopes.iter().any(|s| s == "openid") {
            let msg =
                format!("{what}: `client_id` must not be empty and `scopes` must include `openid`");
            self.at_key(p, msg);
            return None;
        }
        Some(Some(ProviderLogin {
            client_id: client_id.clone(),
            client_secret: secret?,
            redirect_uri: redirect_uri?,
            scopes,
        }))
    }

    /// `headers: { name: [values] }`; a value list of `["*"]` requires presence only.
    fn header_conditions(
        &mut self,
        p: &str,
        what: &str,
        r: &RawRule,
    ) -> Option<Vec<HeaderCondition>> {
        let Some(map) = &r.headers else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (name, values) in map {
            let at = format!("{p}.headers.{name}");
            let lower = name.to_ascii_lowercase();
            if !super::is_header_token(&lower) {
                self.at_key(&at, format!("{what}: `{name}` is not a header name"));
                ok = false;
                continue;
            }
            if self.stripped.strips(&lower) {
                self.at_key(&at, format!("{what}: `{name}` is set or removed by the gateway (or forgeable by any caller); a rule on it would read what the caller chose to send"));
                ok = false;
                continue;
            }
            if values.is_empty() {
                self.at_key(&at, format!("{what}: header `{name}` lists no values; use [\"*\"] to require presence only"));
                ok = false;
                continue;
            }
            let values = (values.as_slice() != ["*"]).then(|| values.clone());
            out.push(HeaderCondition {
                name: lower,
                values,
            });
        }
        ok.then_some(out)
    }

    /// Parses one condition list. `Some(None)` when absent; `None` after reporting a problem.
    pub(super) fn condition<T>(
        &mut self,
        rule_path: &str,
        what: &str,
        key: &str,
        entries: &Option<Vec<String>>,
        mut parse: impl FnMut(&str) -> Result<T, String>,
    ) -> Option<Option<Vec<T>>> {
        let Some(entries) = entries else {
            return Some(None);
        };
        let p = format!("{rule_path}.{key}");
        if entries.is_empty() {
            let msg =
                format!("{what}: `{key}` is empty and would match nothing; remove it to match any");
            self.at_key(&p, msg);
            return None;
        }
        let mut out = Vec::with_capacity(entries.len());
        let mut ok = true;
        for (i, entry) in entries.iter().enumerate() {
            match parse(entry) {
                Ok(v) => out.push(v),
                Err(msg) => {
                    ok = false;
                    self.at_value(&format!("{p}[{i}]"), format!("{what}: {key} {msg}"));
                }
            }
        }
        ok.then_some(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_must_be_normalised() {
        assert_eq!(stored_prefix("/"), Ok("/".to_owned()));
        assert_eq!(stored_prefix("/api/"), Ok("/api".to_owned()));
        assert_eq!(stored_prefix("/api"), Ok("/api".to_owned()));
        assert!(stored_prefix("/a/../b").unwrap_err().contains("write `/b`"));
        assert!(stored_prefix("/a//b").is_err());
        assert!(stored_prefix("/%7e").is_err());
        assert!(stored_prefix("api")
            .unwrap_err()
            .contains("not a valid path"));
    }

    #[test]
    fn route_hosts() {
        assert_eq!(
            route_host("API.example.com"),
            Ok("api.example.com".to_owned())
        );
        assert_eq!(route_host("*.Example.com."), Ok("*.example.com".to_owned()));
        assert_eq!(route_host("127.0.0.1"), Ok("127.0.0.1".to_owned()));
        assert_eq!(route_host("::1"), Ok("::1".to_owned()));
        for bad in [
            "api.example.com:443",
            "[::1]",
            "*.*.example.com",
            "a.*.com",
            "*",
            "",
            "a b",
        ] {
            assert!(route_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_are_uppercased_tokens() {
        assert_eq!(method("get"), Ok("GET".to_owned()));
        assert_eq!(method("PROPFIND"), Ok("PROPFIND".to_owned()));
        assert!(method("GE T").is_err());
        assert!(method("").is_err());
    }
}
