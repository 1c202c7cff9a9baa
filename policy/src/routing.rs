//! Routing: which tenant's route, and so which upstream and access rules, a request belongs to.
//!
//! Hosts are matched in three classes, most specific first: exact host, `*.domain` wildcard
//! (exactly one extra label), then routes with no host. Within a class the longest path
//! prefix that matches on a segment boundary wins; if no route of a class matches the path, the
//! next class is tried.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::access::{decide, AccessRule, Denied, Permit, RequestFacts};
use crate::authn::{Authentication, MfaRequirement};
use crate::inspection::RouteInspection;
use crate::limits::RateLimit;
use crate::names::{RouteId, TenantId, UpstreamName};
use crate::path::{prefix_matches, NormalizedPath};

/// One route: where matching requests go and who may send them.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// `tenant/route`.
    pub id: RouteId,
    /// The tenant that owns the route.
    pub tenant: TenantId,
    /// Where allowed requests are sent.
    pub upstream: UpstreamName,
    /// The normalised host (`api.example.com` or `*.example.com`), or `None` for any host.
    pub host: Option<String>,
    /// Normalised prefix without a trailing slash, except `/` itself.
    pub path_prefix: String,
    /// The route's own request rate, shared by all its callers.
    pub rate_limit: Option<RateLimit>,
    /// DLP on this route's bodies (the route's own spec, else its tenant's), if any.
    pub inspection: Option<std::sync::Arc<RouteInspection>>,
    /// What callers must prove before the access rules are read.
    pub authentication: Authentication,
    /// How a person must have authenticated (a route reading bearer tokens only).
    pub mfa: Option<MfaRequirement>,
    /// The tenant's provider that browsers without a session are sent to, to log in.
    pub login: Option<String>,
    pub(crate) access: Vec<AccessRule>,
}

impl Route {
    /// Decides whether the request may use this route: the first matching access rule permits;
    /// with none, the request is denied by default.
    pub fn authorize(&self, facts: &RequestFacts<'_>) -> Result<Permit, Denied> {
        decide(&self.access, facts)
    }

    /// The route's rules as an access review shows them, in the order they are judged (deny
    /// rules first).
    pub fn rule_summaries(&self) -> Vec<crate::access::RuleSummary> {
        self.access.iter().map(|r| r.summary()).collect()
    }

    /// Whether any of the route's rules reads a fact the audit log does not record (headers,
    /// DNS SANs, the certificate subject beside a SPIFFE ID, or a bearer token's claims), so
    /// that replaying recorded requests against it can only approximate its decisions.
    pub fn reads_unrecorded_facts(&self) -> bool {
        self.access.iter().any(|r| r.reads_unrecorded_facts())
    }
}

/// All routes, indexed for lookup. Immutable once built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTable {
    /// Shared, so a request can hold on to its route without borrowing the table.
    routes: Vec<Arc<Route>>,
    /// Exact host -> route indices, longest prefix first.
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard suffix (`example.com` for `*.example.com`) -> route indices, longest prefix first.
    wildcard: HashMap<String, Vec<usize>>,
    /// Routes without a host, longest prefix first.
    any_host: Vec<usize>,
}

impl RouteTable {
    /// Indexes `routes`. Duplicate (host, prefix) pairs are the config checker's business; here
    /// the first one wins.
    pub(crate) fn new(routes: Vec<Route>) -> RouteTable {
        let mut table = RouteTable {
            routes: routes.into_iter().map(Arc::new).collect(),
            ..RouteTable::default()
        };
        for (i, route) in table.routes.iter().enumerate() {
            let list = match route.host.as_deref() {
                None => &mut table.any_host,
                Some(h) => match h.strip_prefix("*.") {
                    Some(suffix) => table.wildcard.entry(suffix.to_owned()).or_default(),
                    None => table.exact.entry(h.to_owned()).or_default(),
                },
            };
            list.push(i);
        }
        let routes = &table.routes;
        // Stable sort: for equal lengths, config order is kept.
        let by_prefix_len = |list: &mut Vec<usize>| {
            list.sort_by_key(|&i| std::cmp::Reverse(routes[i].path_prefix.len()));
        };
        table.exact.values_mut().for_each(by_prefix_len);
        table.wildcard.values_mut().for_each(by_prefix_len);
        by_prefix_len(&mut table.any_host);
        table
    }

    /// The route for a request to `host` (already normalised by [`normalize_host`]) and `path`.
    pub fn route(&self, host: Option<&str>, path: &NormalizedPath) -> Option<&Arc<Route>> {
        self.route_index(host, path)
            .and_then(|i| self.routes.get(i))
    }

    /// The position of [`route`](Self::route)'s answer in [`iter`](Self::iter) order, by which
    /// a caller can keep its own per-route state in a `Vec`.
    pub fn route_index(&self, host: Option<&str>, path: &NormalizedPath) -> Option<usize> {
        let longest = |list: &[usize]| {
            list.iter()
                .copied()
                .find(|&i| prefix_matches(&self.routes[i].path_prefix, path.as_str()))
        };
        if let Some(host) = host {
            if let Some(found) = self.exact.get(host).and_then(|l| longest(l)) {
                return Some(found);
            }
            if let Some((label, suffix)) = host.split_once('.') {
                if !label.is_empty() {
                    if let Some(found) = self.wildcard.get(suffix).and_then(|l| longest(l)) {
                        return Some(found);
                    }
                }
            }
        }
        longest(&self.any_host)
    }

    /// The route at `index` ([`iter`](Self::iter) order).
    pub fn get(&self, index: usize) -> Option<&Arc<Route>> {
        self.routes.get(index)
    }

    /// All routes, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().map(|r| &**r)
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Normalises a `Host` header or `:authority`: lowercase, no port, no trailing dot, IPv6
/// literals without brackets. `None` if empty or malformed.
pub fn normalize_host(raw: &str) -> Option<String> {
    if raw.starts_with('[') {
        let lower = raw.to_ascii_lowercase();
        let rest = &lower[1..];
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        inner.parse::<Ipv6Addr>().ok()?;
        return Some(inner.to_owned());
    }
    // Checked as sent, lower-cased once at the end: one allocation.
    let host = match raw.bytes().filter(|&b| b == b':').count() {
        0 => raw,
        1 => {
            let (host, port) = raw.split_once(':')?;
            if !is_port(port) {
                return None;
            }
            host
        }
        // A bare IPv6 literal (seen in some :authority values).
        _ => {
            let lower = raw.to_ascii_lowercase();
            lower.parse::<Ipv6Addr>().ok()?;
            return Some(lower);
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// An empty port is allowed by RFC 3986 (`host:`).
fn is_port(s: &str) -> bool {
    s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests;
