//! Access decisions: deny by default; an explicit deny rule wins over any allow rule;
//! otherwise the first matching allow rule permits.
//!
//! A route carries an ordered list of [`AccessRule`]s. A rule matches when every condition it
//! has matches (AND); a condition matches when any of its entries does (OR); an absent
//! condition matches anything. The result is a proof: a [`Permit`] naming the rule, or a
//! [`Denied`] naming the rule (if any) and the reason.

use std::net::IpAddr;

use ipnet::IpNet;
pub(crate) use portcullis_identity::{DnsPattern, SpiffeIdPattern as SpiffePattern};

use crate::authn::TokenIdentity;
use crate::identity::Identity;
use crate::names::RuleId;
use crate::path::{prefix_matches, NormalizedPath};

pub use portcullis_identity::PatternError;

/// Read access to a request's headers, by lowercase name.
pub trait HeaderSource: std::fmt::Debug + Sync {
    /// The value of the first header called `name`, if present and valid text.
    fn header(&self, name: &str) -> Option<&str>;

    /// Every value of the headers called `name`, in order: `None` for a value that is not
    /// text (obs-text), so that a rule can treat it as unreadable rather than absent.
    fn header_values(&self, name: &str) -> Vec<Option<&str>>;

    /// How many headers called `name` there are, readable or not (DLP refuses a repeated
    /// or unreadable `Content-Type`/`Content-Encoding`).
    fn header_count(&self, name: &str) -> usize {
        self.header_values(name).len()
    }

    /// [`header`](Self::header) and [`header_count`](Self::header_count) together (one lookup
    /// where the source can).
    fn header_and_count(&self, name: &str) -> (Option<&str>, usize) {
        (self.header(name), self.header_count(name))
    }
}

/// No headers at all.
#[derive(Debug)]
pub struct NoHeaders;

impl HeaderSource for NoHeaders {
    fn header(&self, _name: &str) -> Option<&str> {
        None
    }

    fn header_values(&self, _name: &str) -> Vec<Option<&str>> {
        Vec::new()
    }
}

/// Headers as (lowercase name, value) pairs, e.g. from a command line.
impl HeaderSource for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header_values(&self, name: &str) -> Vec<Option<&str>> {
        self.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| Some(v.as_str()))
            .collect()
    }
}

/// What the gateway knows about a request when it asks for a decision.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The caller's client certificate, or `None` for an anonymous one.
    pub identity: Option<&'a Identity>,
    /// The caller's verified bearer token, on a route that reads them.
    pub token: Option<&'a TokenIdentity>,
    /// The HTTP method as sent, e.g. `GET`.
    pub method: &'a str,
    /// The normalised request path.
    pub path: &'a NormalizedPath,
    /// The client address (after trusted-proxy handling).
    pub source: IpAddr,
    /// The request headers.
    pub headers: &'a dyn HeaderSource,
}

/// Proof that a request was allowed, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// The rule that allowed the request.
    pub rule: RuleId,
}

/// A refusal, with the rule that caused it (`None` for the default deny) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Denied {
    /// The rule that denied the request; `None` when no rule matched.
    pub rule: Option<RuleId>,
    /// Why the request was denied.
    pub reason: DenyReason,
}

/// Why a request was denied.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum DenyReason {
    /// No access rule of the route matched the request (deny by default).
    NoMatchingRule,
    /// A deny rule matched the request.
    ExplicitDeny,
}

impl Denied {
    /// A label for logs and metrics: the rule id, or `default-deny`.
    pub fn rule_label(&self) -> &str {
        self.rule.as_ref().map_or("default-deny", RuleId::as_str)
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenyReason::NoMatchingRule => f.write_str("no access rule matched"),
            DenyReason::ExplicitDeny => f.write_str("a deny rule matched"),
        }
    }
}

/// Whether a matching rule allows or denies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum Effect {
    #[default]
    Allow,
    Deny,
}

/// A header condition: the header must be present and, unless `values` is `None`, equal one
/// of them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HeaderCondition {
    /// Lowercase header name.
    pub(crate) name: String,
    pub(crate) values: Option<Vec<String>>,
}

impl HeaderCondition {
    /// Whether the condition holds, judged against every value of the header so that a
    /// duplicate or unreadable value can only ever make a request look worse: for a deny rule
    /// it holds if any value matches or any value is unreadable; for an allow rule, only if
    /// there is a value and every value is readable and matches.
    fn holds(&self, effect: Effect, headers: &dyn HeaderSource) -> bool {
        let values = headers.header_values(&self.name);
        let matches = |v: &Option<&str>| match (v, &self.values) {
            (None, _) => effect == Effect::Deny,
            (Some(_), None) => true,
            (Some(value), Some(wanted)) => wanted.iter().any(|w| w == value),
        };
        match effect {
            Effect::Deny => values.iter().any(matches),
            Effect::Allow => !values.is_empty() && values.iter().all(matches),
        }
    }
}

/// One access rule, already checked. Conditions that are `None` match anything.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AccessRule {
    pub(crate) id: RuleId,
    pub(crate) effect: Effect,
    pub(crate) spiffe_id: Option<Vec<SpiffePattern>>,
    pub(crate) dns_san: Option<Vec<DnsPattern>>,
    pub(crate) subject: Option<Vec<String>>,
    /// Uppercase method tokens.
    pub(crate) methods: Option<Vec<String>>,
    /// Normalised prefixes without a trailing slash (except `/`).
    pub(crate) path_prefix: Option<Vec<String>>,
    /// Exact normalised paths.
    pub(crate) path: Option<Vec<String>>,
    pub(crate) source: Option<Vec<IpNet>>,
    /// All must hold.
    pub(crate) headers: Vec<HeaderCondition>,
    /// The bearer token's `sub`.
    pub(crate) token_subject: Option<Vec<String>>,
    /// Lower-case e-mail addresses.
    pub(crate) email: Option<Vec<String>>,
    /// Lower-case e-mail domains.
    pub(crate) email_domain: Option<Vec<String>>,
    pub(crate) groups: Option<Vec<String>>,
    /// (dotted claim path, accepted values); all must hold, each by any value.
    pub(crate) claims: Vec<(String, Vec<String>)>,
}

/// An absent condition matches; a present one needs any entry to match.
fn any_of<T>(condition: &Option<Vec<T>>, pred: impl FnMut(&T) -> bool) -> bool {
    condition
        .as_ref()
        .is_none_or(|entries| entries.iter().any(pred))
}

/// Whether `net` contains `ip`, treating IPv4-mapped IPv6 addresses as the IPv4 address.
pub(crate) fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    net.contains(&portcullis_identity::canonical_ip(ip))
}

/// An access rule as an access review shows it: who, with what, may (or may not) do what.
/// Absent conditions match anything.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleSummary {
    pub id: String,
    /// `allow` or `deny`.
    pub effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_sans: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_subjects: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emails: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_domains: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<String>,
    /// `None`: every method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefixes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// Header names the rule reads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

impl AccessRule {
    pub(crate) fn summary(&self) -> RuleSummary {
        let strings = |v: &Option<Vec<String>>| v.clone();
        RuleSummary {
            id: self.id.as_str().to_owned(),
            effect: match self.effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
            },
            spiffe_ids: self
                .spiffe_id
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
            dns_sans: self
                .dns_san
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
            subjects: strings(&self.subject),
            token_subjects: strings(&self.token_subject),
            emails: strings(&self.email),
            email_domains: strings(&self.email_domain),
            groups: strings(&self.groups),
            claims: self
                .claims
                .iter()
                .map(|(path, values)| format!("{path} in [{}]", values.join(", ")))
                .collect(),
            methods: strings(&self.methods),
            path_prefixes: strings(&self.path_prefix),
            paths: strings(&self.path),
            sources: self
                .source
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
            headers: self.headers.iter().map(|h| h.name.clone()).collect(),
        }
    }

    /// See [`crate::Route::reads_unrecorded_facts`].
    pub(crate) fn reads_unrecorded_facts(&self) -> bool {
        !self.headers.is_empty()
            || self.dns_san.is_some()
            || self.subject.is_some()
            || self.needs_token()
    }

    /// Whether the rule needs to know who the caller is.
    fn needs_identity(&self) -> bool {
        self.spiffe_id.is_some() || self.dns_san.is_some() || self.subject.is_some()
    }

    /// Whether the rule reads the bearer token.
    fn needs_token(&self) -> bool {
        self.token_subject.is_some()
            || self.email.is_some()
            || self.email_domain.is_some()
            || self.groups.is_some()
            || !self.claims.is_empty()
    }

    pub(crate) fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        if self.needs_token() {
            let Some(token) = facts.token else {
                return false;
            };
            if !self.token_matches(token) {
                return false;
            }
        }
        if self.needs_identity() {
            let Some(identity) = facts.identity else {
                return false;
            };
            if !self.identity_matches(identity) {
                return false;
            }
        }
        // Standard methods in another case are refused before policy; extension methods are
        // compared without regard to case, as some frameworks upper-case them.
        any_of(&self.methods, |m| m.eq_ignore_ascii_case(facts.method))
            && any_of(&self.path_prefix, |p| {
                prefix_matches(p, facts.path.as_str())
            })
            && any_of(&self.path, |p| p == facts.path.as_str())
            && any_of(&self.source, |net| net_contains(net, facts.source))
            && self
                .headers
                .iter()
                .all(|h| h.holds(self.effect, facts.headers))
    }

    fn token_matches(&self, token: &TokenIdentity) -> bool {
        any_of(&self.token_subject, |s| *s == token.subject)
            && any_of(&self.email, |e| token.email.as_ref() == Some(e))
            && any_of(&self.email_domain, |d| {
                token.email_domain() == Some(d.as_str())
            })
            && any_of(&self.groups, |g| token.groups.contains(g))
            && self
                .claims
                .iter()
                .all(|(path, wanted)| token.claim_values(path).iter().any(|v| wanted.contains(v)))
    }

    fn identity_matches(&self, identity: &Identity) -> bool {
        let spiffe_ok = match (&self.spiffe_id, &identity.spiffe_id) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(patterns), Some(id)) => patterns.iter().any(|p| p.matches(id)),
        };
        spiffe_ok
            && any_of(&self.dns_san, |p| {
                identity.dns_sans.iter().any(|name| p.matches(name))
            })
            && any_of(&self.subject, |s| identity.subject.as_deref() == Some(s))
    }
}

/// Applies `rules`, which the config checker has ordered deny rules first (see
/// [`deny_rules_first`]): the first matching rule decides; with none, deny by default.
pub(crate) fn decide(rules: &[AccessRule], facts: &RequestFacts<'_>) -> Result<Permit, Denied> {
    match rules.iter().find(|rule| rule.matches(facts)) {
        Some(rule) if rule.effect == Effect::Allow => Ok(Permit {
            rule: rule.id.clone(),
        }),
        Some(rule) => Err(Denied {
            rule: Some(rule.id.clone()),
            reason: DenyReason::ExplicitDeny,
        }),
        None => Err(Denied {
            rule: None,
            reason: DenyReason::NoMatchingRule,
        }),
    }
}

/// Orders rules so that every deny rule is tried before any allow rule (a deny wins), keeping
/// the written order within each kind.
pub(crate) fn deny_rules_first(rules: &mut [AccessRule]) {
    rules.sort_by_key(|r| r.effect == Effect::Allow);
}

#[cfg(test)]
mod tests;
