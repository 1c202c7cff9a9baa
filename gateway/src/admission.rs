//! Admission: the one step that decides whether a request may go on, shared by the proxy and
//! `portcullis policy explain` so the two cannot disagree.
//!
//! Facts of a request go in ([`RequestHead`]: identity, host and path as sent, method,
//! headers, source); a [`Verdict`] comes out: the normalised target, the route, and either an
//! [`Admitted`] — the proof the rest of the proxy needs (the route, the access permit, the
//! tenant's in-flight slot, the body inspection plan) — or a [`Refusal`]. Every refusal the
//! gateway can make, here or later in the request's life, is a [`Refusal`] variant that owns
//! its status, stable code, public message, audit decision and metric label: one table.
//!
//! Nothing here does I/O. The only state touched is the tenants' limit buckets.

mod refusal;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use portcullis_policy::{
    normalize_host, normalize_path, BodyDirection, Config, HeaderSource, HttpSettings, Identity,
    NormalizedPath, OtherContent, Permit, RequestFacts, Route, RouteInspection, RouteTable,
    StripList, TokenError, TokenIdentity, UnknownEncoding, Upgrades,
};

use crate::identity::ConnectionIdentity;
use crate::inspect::{BodyFormat, Codings, Content, Unscanned};
use crate::limits::{InFlight, Limits};
use crate::snapshot::Snapshot;

pub use refusal::Refusal;

/// What the gateway knows of a request when it decides, before reading any body.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The caller established by the handshake, or `None`.
    pub identity: Option<&'a Identity>,
    /// The method as sent.
    pub method: &'a str,
    /// The request target's authority as sent (absolute-form, or HTTP/2 `:authority`).
    pub authority: Option<&'a str>,
    /// The `Host` header as sent.
    pub host: Option<&'a str>,
    /// Whether the protocol requires a `Host` header (HTTP/1.1).
    pub host_required: bool,
    /// The size of the request head as received.
    pub size: HeadSize,
    /// Whether the head as received carried both Content-Length and Transfer-Encoding (the
    /// HTTP/1 parser keeps only Transfer-Encoding, so the headers alone cannot tell).
    pub both_lengths: bool,
    /// The request target's path as sent (without the query).
    pub path: &'a str,
    /// The client address (after trusted-proxy handling).
    pub source: IpAddr,
    /// The request headers.
    pub headers: &'a dyn HeaderSource,
    /// The bearer token as verified for the route's tenant (see [`Admission::route`]).
    pub bearer: &'a Bearer,
    /// Seconds since the Unix epoch (a route's `mfa.max_age`).
    pub now: u64,
}

/// A request's bearer token, as far as the route's tenant's providers could verify it.
#[derive(Clone, Debug, Default)]
pub enum Bearer {
    /// None sent, or the route reads none.
    #[default]
    Absent,
    Valid(Arc<TokenIdentity>),
    Invalid(TokenError),
}

/// The first half of admission: routed, or already refused.
#[derive(Debug)]
pub enum Routing {
    Routed(Routed),
    Refused(Verdict),
}

/// A request that has been routed, before its caller is judged: what the proxy needs to know
/// to verify a bearer token for the route's tenant.
#[derive(Debug)]
pub struct Routed {
    pub target: Target,
    pub route: Arc<Route>,
    pub index: usize,
}

/// The size of a request head: the request line and header lines, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadSize {
    pub total: usize,
    /// The longest single header line.
    pub longest_line: usize,
}

/// Standard methods, which must be sent in upper case (`delete` is refused, not guessed at:
/// some frameworks upper-case methods, others do not).
const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Where a request is going, normalised once: what policy sees and what the upstream receives.
#[derive(Clone, Debug)]
pub struct Target {
    /// The normalised host, if the request named a usable one.
    pub host: Option<String>,
    pub path: NormalizedPath,
}

/// The outcome of admission.
#[derive(Debug)]
pub struct Verdict {
    /// `None` when the path was refused before routing.
    pub target: Option<Target>,
    /// The route the request matched, if it got that far.
    pub route: Option<Arc<Route>>,
    pub outcome: Result<Admitted, Refusal>,
}

/// Proof that a request passed admission, with what forwarding it needs. The proxy cannot
/// pick an upstream without one.
#[derive(Debug)]
pub struct Admitted {
    pub route: Arc<Route>,
    /// The route's position in the generation's route table (its per-route state there).
    pub route_index: usize,
    /// The access rule that allowed the request.
    pub permit: Permit,
    /// The verified bearer token, on a route that reads them.
    pub token: Option<Arc<TokenIdentity>>,
    /// Whether any rate limit applied to the request (it passed them all).
    pub rate_limited: bool,
    /// The tenant's in-flight slot, freed when the request ends.
    pub(crate) in_flight: Option<InFlight>,
    /// The tenant's cap on request body bytes, checked again as the body streams.
    pub max_request_body: Option<u64>,
    /// What happens to the request body.
    pub request_body: BodyPlan,
}

/// What the gateway does with one body. Planned from the headers alone, whatever the
/// framing (Content-Length, chunked, HTTP/2 DATA without a length); the scanner itself is
/// created on the first body byte, so a request without a body costs nothing more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyPlan {
    /// Forwarded as it comes: the route inspects nothing in this direction.
    Forward,
    /// Scanned by the route's DLP as it streams, read as the format says.
    Scan(BodyFormat),
    /// Forwarded unscanned because the route's policy says so explicitly; counted and
    /// recorded with the reason once a byte passes.
    Unscanned(Unscanned),
}

/// Routes and limits of one configuration: everything admission consults.
#[derive(Debug)]
pub struct Admission {
    routes: RouteTable,
    limits: Limits,
    http: HttpSettings,
}

impl Admission {
    /// Admission for `config`, keeping the limit state of unchanged tenants and routes from
    /// `previous`.
    pub(crate) fn build(config: &Config, previous: Option<&Admission>) -> Self {
        Self {
            routes: config.routes.clone(),
            limits: Limits::build(config, previous.map(|p| &p.limits)),
            http: config.http.clone(),
        }
    }

    /// Admission for `config` with fresh limits, as `policy explain` uses it.
    pub fn from_config(config: &Config) -> Self {
        Self::build(config, None)
    }

    /// The headers removed from every request before it is forwarded.
    pub(crate) fn stripped(&self) -> &StripList {
        &self.http.strip
    }

    /// Decides a request: check the head is unambiguous, normalise, route, authenticate,
    /// authorise, charge the limits, check the declared body size, plan the body's
    /// inspection. Limits are charged only for requests the access rules allow.
    pub fn decide(&self, head: &RequestHead<'_>) -> Verdict {
        match self.route(head) {
            Routing::Routed(routed) => self.admit_routed(routed, head),
            Routing::Refused(verdict) => verdict,
        }
    }

    /// The first half of [`decide`](Self::decide): a strict head, normalised, routed. Between
    /// the two halves the proxy verifies a bearer token for the route's tenant.
    pub fn route(&self, head: &RequestHead<'_>) -> Routing {
        let refused = |target, outcome| {
            Routing::Refused(Verdict {
                target,
                route: None,
                outcome: Err(outcome),
            })
        };
        let host = match self.strict_head(head) {
            Ok(host) => host.and_then(normalize_host),
            Err(refusal) => return refused(None, refusal),
        };
        let path = match normalize_path(head.path) {
            Ok(path) => path,
            Err(e) => return refused(None, Refusal::BadPath(e)),
        };
        let index = self.routes.route_index(host.as_deref(), &path);
        let target = Target { host, path };
        match index.and_then(|i| Some((i, self.routes.get(i)?.clone()))) {
            Some((index, route)) => Routing::Routed(Routed {
                target,
                route,
                index,
            }),
            None => refused(Some(target), Refusal::NoRoute),
        }
    }

    /// The second half of [`decide`](Self::decide), for a routed request.
    pub fn admit_routed(&self, routed: Routed, head: &RequestHead<'_>) -> Verdict {
        let outcome = self.admit(&routed.route, routed.index, &routed.target.path, head);
        Verdict {
            target: Some(routed.target),
            route: Some(routed.route),
            outcome,
        }
    }

    /// Refuses a head that upstreams could read differently from the gateway; returns the
    /// host the request is routed by.
    fn strict_head<'h>(&self, head: &RequestHead<'h>) -> Result<Option<&'h str>, Refusal> {
        if head.size.total > self.http.max_request_head
            || head.size.longest_line > self.http.max_header_line
        {
            return Err(Refusal::HeadTooLarge);
        }
        let headers = head.headers;
        let both_lengths = head.both_lengths
            || (headers.header("content-length").is_some()
                && headers.header_count("transfer-encoding") > 0);
        if both_lengths {
            return Err(Refusal::BadRequest(
                "the request has both Content-Length and Transfer-Encoding",
            ));
        }
        if STANDARD_METHODS
            .iter()
            .any(|m| m.eq_ignore_ascii_case(head.method) && *m != head.method)
        {
            return Err(Refusal::BadRequest(
                "standard methods must be sent in upper case",
            ));
        }
        match (head.authority, head.host) {
            (Some(authority), Some(host)) if normalize_host(authority) != normalize_host(host) => {
                Err(Refusal::BadRequest(
                    "the Host header does not match the request target",
                ))
            }
            (_, None) if head.host_required => Err(Refusal::BadRequest(
                "an HTTP/1.1 request needs a Host header",
            )),
            (authority, host) => Ok(authority.or(host)),
        }
    }

    fn admit(
        &self,
        route: &Arc<Route>,
        index: usize,
        path: &NormalizedPath,
        head: &RequestHead<'_>,
    ) -> Result<Admitted, Refusal> {
        let token = authenticate(route, head)?;
        let facts = RequestFacts {
            identity: head.identity,
            token: token.map(|t| &**t),
            method: head.method,
            path,
            source: head.source,
            headers: head.headers,
        };
        let permit = route.authorize(&facts).map_err(Refusal::Denied)?;
        let charged = self
            .limits
            .admit(index, caller_key(head.identity, facts.token), head.source)
            .map_err(Refusal::RateLimited)?;
        let max_request_body = charged.max_request_body;
        let declared = head
            .headers
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(max), Some(len)) = (max_request_body, declared) {
            if len > max {
                return Err(Refusal::BodyTooLarge);
            }
        }
        let request_body = match &route.inspection {
            Some(inspection) => plan_request_body(inspection, head)?,
            None => BodyPlan::Forward,
        };
        Ok(Admitted {
            route: route.clone(),
            route_index: index,
            permit,
            token: token.cloned(),
            rate_limited: charged.limited,
            in_flight: charged.in_flight,
            max_request_body,
            request_body,
        })
    }
}

impl Admitted {
    /// Whether the request holds one of its tenant's in-flight slots.
    pub fn holds_in_flight_slot(&self) -> bool {
        self.in_flight.is_some()
    }
}

/// Re-checks, on every request, the client certificate its connection was made with against
/// the listener's current revocation list and the certificate's expiry: connections (and
/// resumed TLS sessions) outlive both. A hash lookup, no parsing.
pub(crate) fn recheck_connection(
    connection: &ConnectionIdentity,
    generation: &Snapshot,
    now: SystemTime,
) -> Result<(), Refusal> {
    let Some(credential) = &connection.credential else {
        return Ok(());
    };
    // Revoked: on the listener's CRL, or in the fleet's set (etcd).
    let revoked = generation
        .tls
        .get(connection.listener)
        .is_some_and(|tls| tls.is_revoked(&credential.serial))
        || generation
            .fleet
            .as_ref()
            .is_some_and(|fleet| fleet.contains(&credential.serial));
    if revoked {
        return Err(Refusal::CertificateRevoked);
    }
    if credential.not_after < now {
        return Err(Refusal::CertificateExpired);
    }
    Ok(())
}

/// The request body's plan on a route with DLP. An upgrade (WebSocket over HTTP/1.1, any other
/// `Upgrade`, or CONNECT, which carries HTTP/2's extended-CONNECT WebSockets) would turn the
/// connection into frames no scanner reads: refused on a route with request DLP unless the
/// route says `websocket: allow` (and then only without a body of its own).
fn plan_request_body(
    inspection: &RouteInspection,
    head: &RequestHead<'_>,
) -> Result<BodyPlan, Refusal> {
    let scans = inspection.scans(BodyDirection::Request);
    let upgrade =
        head.headers.header_count("upgrade") > 0 || head.method.eq_ignore_ascii_case("CONNECT");
    if scans && upgrade {
        // An upgrade request that also announces a body would get that body through
        // unscanned: only a bodiless handshake is allowed.
        let announces_body = head.headers.header_count("transfer-encoding") > 0
            || head
                .headers
                .header("content-length")
                .is_some_and(|len| len.trim() != "0");
        return match inspection.upgrades {
            Upgrades::Allow if !announces_body => Ok(BodyPlan::Unscanned(Unscanned::Websocket)),
            _ => Err(Refusal::UpgradeRefused),
        };
    }
    plan_body(inspection, BodyDirection::Request, &|name| {
        let (first, count) = head.headers.header_and_count(name);
        body_header(count, first)
    })
}

/// One of a body's framing headers as DLP reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyHeader<'a> {
    Absent,
    One(&'a str),
    /// Repeated, or not text: refused on a DLP route.
    Ambiguous,
}

/// A header from how many there are and the first one's text.
pub(crate) fn body_header(count: usize, first: Option<&str>) -> BodyHeader<'_> {
    match (count, first) {
        (0, _) => BodyHeader::Absent,
        (1, Some(value)) => BodyHeader::One(value),
        _ => BodyHeader::Ambiguous,
    }
}

/// The plan for a body in `direction` of a route with DLP, from its `Content-Type` and
/// `Content-Encoding` (`header` reads one by lowercase name): repeated or unreadable ones
/// are refused (400); an encoding we cannot decode (including compressed gRPC messages,
/// `grpc-encoding`) is refused (415) unless the tenant says `unknown_encoding: pass`; a content type neither text-like nor multipart is scanned as
/// bytes unless the tenant says `other_content: refuse` (415).
pub(crate) fn plan_body<'a>(
    inspection: &RouteInspection,
    direction: BodyDirection,
    header: &dyn Fn(&'static str) -> BodyHeader<'a>,
) -> Result<BodyPlan, Refusal> {
    if !inspection.scans(direction) {
        return Ok(BodyPlan::Forward);
    }
    let value = |name: &'static str| match header(name) {
        BodyHeader::Absent => Ok(None),
        BodyHeader::One(v) => Ok(Some(v)),
        BodyHeader::Ambiguous => Err(Refusal::AmbiguousBodyHeader(direction, name)),
    };
    let content = Content::of(value("content-type")?);
    // gRPC messages compressed one by one (`grpc-encoding`) are not decoded: an encoding
    // like any other that cannot be read.
    let grpc_compressed = content == Content::Grpc
        && value("grpc-encoding")?.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
    let codings = match Codings::parse(value("content-encoding")?)
        .ok()
        .filter(|_| !grpc_compressed)
    {
        Some(codings) => codings,
        None => {
            return match inspection.limits.unknown_encoding {
                UnknownEncoding::Pass => Ok(BodyPlan::Unscanned(Unscanned::UnknownEncoding)),
                UnknownEncoding::Refuse => Err(Refusal::Uninspectable(direction)),
            }
        }
    };
    if matches!(content, Content::Bytes | Content::Grpc)
        && inspection.limits.other_content == OtherContent::Refuse
    {
        return Err(Refusal::UnsupportedContentType(direction));
    }
    Ok(BodyPlan::Scan(BodyFormat { codings, content }))
}

/// What a route asks of the caller before its rules are read: a client certificate, a
/// verified bearer token, and how the person authenticated. Returns the token.
fn authenticate<'h>(
    route: &Route,
    head: &RequestHead<'h>,
) -> Result<Option<&'h Arc<TokenIdentity>>, Refusal> {
    let wanted = route.authentication;
    if wanted.wants_certificate() && head.identity.is_none() {
        return Err(Refusal::CertificateRequired);
    }
    if !wanted.wants_token() {
        return Ok(None);
    }
    let token = match head.bearer {
        Bearer::Absent => return Err(Refusal::TokenRequired),
        Bearer::Invalid(e) => return Err(Refusal::TokenRefused(*e)),
        Bearer::Valid(token) => token,
    };
    if let Some(mfa) = &route.mfa {
        if !mfa.met_by(token, head.now) {
            return Err(Refusal::StepUpRequired {
                acr_values: mfa.acr.join(" "),
                max_age: mfa.max_age.map(|a| a.as_secs()),
            });
        }
    }
    Ok(Some(token))
}

/// How a caller is named everywhere a request is recorded or counted (access log, audit
/// record, per-identity limits): the bearer token's subject on a route that reads tokens, else
/// the certificate's SPIFFE ID, else its subject.
pub(crate) fn caller_name<'a>(
    identity: Option<&'a Identity>,
    token: Option<&'a TokenIdentity>,
) -> Option<&'a str> {
    token.map(|t| t.subject.as_str()).or_else(|| {
        identity.and_then(|i| {
            i.spiffe_id
                .as_ref()
                .map(|s| s.as_str())
                .or(i.subject.as_deref())
        })
    })
}

/// The key of per-identity limits: the caller's name, else anonymous.
fn caller_key<'a>(identity: Option<&'a Identity>, token: Option<&'a TokenIdentity>) -> &'a str {
    caller_name(identity, token).unwrap_or("anonymous")
}

#[cfg(test)]
mod tests;
