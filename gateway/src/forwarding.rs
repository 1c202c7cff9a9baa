//! What the gateway believes about where a request came from, and what it tells the upstream:
//! the client address (X-Forwarded-For only from trusted proxies), removal of every header a
//! caller could use to impersonate someone, and the gateway's own identity and forwarding
//! headers on the upstream request.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use portcullis_policy::{HeaderSource, Identity, Route, StripList, TokenIdentity};

use crate::admission::{HeadSize, Target};
use crate::inspect::Codings;
use crate::snapshot::{canonical, ListenerView};

/// The client of a request, as far as the gateway can believe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Client {
    /// The connecting peer, or the right-most untrusted hop named by trusted proxies.
    pub ip: IpAddr,
    /// The X-Forwarded-For chain to send upstream: the trusted inbound hops, then the peer.
    pub forwarded_for: String,
    /// X-Forwarded-Proto as a trusted proxy sent it.
    pub forwarded_proto: Option<String>,
}

/// Works out the client of a request from the connecting peer. Inbound forwarding headers are
/// believed only when the peer is a trusted proxy of the listener; the client is then the
/// right-most address in X-Forwarded-For that is not itself trusted.
pub(crate) fn resolve_client(
    req: &RequestHeader,
    peer: IpAddr,
    listener: Option<&ListenerView>,
) -> Client {
    let peer = canonical(peer);
    let trusted = listener.filter(|l| l.trusts(peer));
    let mut client = Client {
        ip: peer,
        forwarded_for: String::new(),
        forwarded_proto: None,
    };
    if let Some(listener) = trusted {
        let inbound: Vec<&str> = req
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        for hop in inbound.iter().rev() {
            // An unparsable hop ends what we can believe.
            let Ok(ip) = hop.parse::<IpAddr>() else { break };
            client.ip = canonical(ip);
            if !listener.trusts(client.ip) {
                break;
            }
        }
        client.forwarded_proto = header_str(req, X_FORWARDED_PROTO).map(str::to_owned);
        for hop in inbound {
            client.forwarded_for.push_str(hop);
            client.forwarded_for.push_str(", ");
        }
    }
    client.forwarded_for.push_str(IpText::new(peer).as_str());
    client
}

/// An address as `Display` writes it, on the stack; IPv4 (nearly every client) without the
/// formatter, which costs more than the rest of the client's resolution.
pub(crate) struct IpText {
    text: [u8; 45],
    len: usize,
}

impl IpText {
    pub(crate) fn new(ip: IpAddr) -> Self {
        let mut out = IpText {
            text: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b".");
                    }
                    out.push(digits.format(octet).as_bytes());
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                let mut cursor = std::io::Cursor::new(&mut out.text[..]);
                // The longest IPv6 text (45 bytes, an IPv4-mapped form) fits.
                let _ = write!(cursor, "{v6}");
                out.len = usize::try_from(cursor.position()).unwrap_or_default();
            }
        }
        out
    }

    fn push(&mut self, bytes: &[u8]) {
        if let Some(to) = self.text.get_mut(self.len..self.len + bytes.len()) {
            to.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Digits, dots, hex and colons only.
        std::str::from_utf8(self.text.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

/// The size of a request head as a client sends it in HTTP/1.1: request line and header
/// lines with their separators (for HTTP/2, the same measure of the decoded fields).
pub(crate) fn head_size(req: &RequestHeader) -> HeadSize {
    let request_line = req.method.as_str().len() + req.raw_path().len() + " HTTP/1.1\r\n".len() + 1;
    let mut size = HeadSize {
        total: request_line + 2,
        longest_line: 0,
    };
    for (name, value) in &req.headers {
        let line = name.as_str().len() + value.len() + 4;
        size.total += line;
        size.longest_line = size.longest_line.max(line);
    }
    size
}

/// Whether a raw HTTP/1 request head has a header called `name` (any case).
pub(crate) fn raw_head_names(raw: &[u8], name: &str) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.iter()
            .position(|b| *b == b':')
            .is_some_and(|colon| line[..colon].eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// The first value of a header, if it is text. Name it by a `HeaderName` constant: a `&str`
/// is parsed on every lookup.
pub(crate) fn header_str(
    req: &RequestHeader,
    name: impl http::header::AsHeaderName,
) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Removes every header a caller could use to impersonate someone, fake its origin or
/// reroute the request upstream (`strip`: the built-in list and the config's additions). The
/// gateway sets its own identity and forwarding headers afterwards.
pub(crate) fn strip_spoofable_headers(req: &mut RequestHeader, strip: &StripList) {
    // Most requests carry none: look before allocating.
    if !req.headers.keys().any(|name| strip.strips(name.as_str())) {
        return;
    }
    let names: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|name| strip.strips(name.as_str()))
        .cloned()
        .collect();
    for name in names {
        req.remove_header(&name);
    }
}

/// A route's headers to the upstream (`x-portcullis-tenant`, `x-portcullis-route`), made once
/// per generation.
#[derive(Debug, Clone)]
pub(crate) struct RouteHeaders {
    tenant: HeaderValue,
    route: HeaderValue,
}

impl RouteHeaders {
    /// `None` only if a name could not be a header value, which checked names never are.
    pub(crate) fn of(route: &Route) -> Option<Self> {
        Some(Self {
            tenant: HeaderValue::from_str(route.tenant.as_str()).ok()?,
            route: HeaderValue::from_str(route.id.as_str()).ok()?,
        })
    }
}

/// A caller's identity headers to the upstream (`x-portcullis-spiffe-id`, `-dns-sans`,
/// `-subject`), made once per connection: its requests only clone them.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentityHeaders {
    spiffe_id: Option<HeaderValue>,
    dns_sans: Option<HeaderValue>,
    subject: Option<HeaderValue>,
}

impl IdentityHeaders {
    pub(crate) fn of(identity: &Identity) -> Self {
        let value = |text: &str| HeaderValue::from_str(text).ok();
        let subject = identity.subject.as_deref().and_then(|subject| {
            let value = value(subject);
            if value.is_none() {
                // Left out rather than mangled.
                tracing::debug!("subject not representable as a header");
            }
            value
        });
        Self {
            // SPIFFE IDs and DNS names are checked names: always header values.
            spiffe_id: identity.spiffe_id.as_ref().and_then(|s| value(s.as_str())),
            dns_sans: (!identity.dns_sans.is_empty())
                .then(|| value(&identity.dns_sans.join(",")))
                .flatten(),
            subject,
        }
    }
}

/// What the upstream request says about the request it forwards.
#[derive(Debug)]
pub(crate) struct Forwarded<'a> {
    pub request_id: &'a str,
    pub route: &'a RouteHeaders,
    pub target: &'a Target,
    pub identity: Option<&'a IdentityHeaders>,
    /// The verified bearer token, on a route that reads them.
    pub token: Option<&'a TokenIdentity>,
    pub client: Option<&'a Client>,
    /// Headers removed before forwarding.
    pub strip: &'a StripList,
}

/// Turns the caller's request head into the upstream's: spoofable headers out, the normalised
/// path in (query kept), a Host if the caller sent none, then the gateway's identity headers
/// and X-Forwarded-For/-Proto.
pub(crate) fn rewrite_upstream_request(req: &mut RequestHeader, f: &Forwarded<'_>) -> Result<()> {
    strip_spoofable_headers(req, f.strip);
    strip_gateway_cookies(req)?;
    let path = f.target.path.as_str();
    if path != req.uri.path() {
        let uri = match req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let uri = uri
            .parse::<http::Uri>()
            .map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e.to_string()))?;
        req.set_uri(uri);
    }
    if req.headers.get(http::header::HOST).is_none() {
        if let Some(host) = &f.target.host {
            set(req, "host", host)?;
        }
    }
    set(req, "x-portcullis-request-id", f.request_id)?;
    req.insert_header("x-portcullis-tenant", f.route.tenant.clone())?;
    req.insert_header("x-portcullis-route", f.route.route.clone())?;
    if let Some(identity) = f.identity {
        for (name, value) in [
            ("x-portcullis-spiffe-id", &identity.spiffe_id),
            ("x-portcullis-dns-sans", &identity.dns_sans),
            ("x-portcullis-subject", &identity.subject),
        ] {
            if let Some(value) = value {
                req.insert_header(name, value.clone())?;
            }
        }
    }
    if let Some(token) = f.token {
        forward_token_identity(req, token)?;
    }
    if let Some(client) = f.client {
        set(req, "x-forwarded-for", &client.forwarded_for)?;
    }
    match f.client.and_then(|c| c.forwarded_proto.as_deref()) {
        Some(proto) => set(req, "x-forwarded-proto", proto),
        None => req
            .insert_header("x-forwarded-proto", http::HeaderValue::from_static("https"))
            .map(|_| ()),
    }
}

/// The prefix of the gateway's own cookies (the login session and a login in progress).
const GATEWAY_COOKIE_PREFIX: &str = "__Host-portcullis-";

/// Removes the gateway's own cookies from `Cookie` headers: a session cookie is a credential,
/// and an upstream that saw it could replay it. Other cookies pass as sent.
fn strip_gateway_cookies(req: &mut RequestHeader) -> Result<()> {
    let values: Vec<HeaderValue> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .cloned()
        .collect();
    if !values
        .iter()
        .any(|v| memchr::memmem::find(v.as_bytes(), GATEWAY_COOKIE_PREFIX.as_bytes()).is_some())
    {
        return Ok(());
    }
    req.remove_header(&http::header::COOKIE);
    for value in values {
        // A value that is not text cannot be split safely; it cannot hold our cookies either
        // (they are base64url).
        let Ok(text) = value.to_str() else {
            req.append_header(http::header::COOKIE, value)?;
            continue;
        };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|pair| !pair.starts_with(GATEWAY_COOKIE_PREFIX))
            .collect();
        if !kept.is_empty() {
            req.append_header(http::header::COOKIE, kept.join("; "))?;
        }
    }
    Ok(())
}

/// A person's identity to the upstream: the verified token's issuer, subject, e-mail, groups
/// and authentication methods as `x-portcullis-user-*` headers (lists comma-separated; a value
/// that cannot be a header, or a list item holding a comma, is left out rather than mangled).
/// The token itself stays at the gateway: `Authorization` is removed.
fn forward_token_identity(req: &mut RequestHeader, token: &TokenIdentity) -> Result<()> {
    req.remove_header(&http::header::AUTHORIZATION);
    let list = |items: &[String]| {
        items
            .iter()
            .filter(|i| !i.contains(','))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    let groups = list(&token.groups);
    let amr = list(&token.amr);
    for (name, value) in [
        ("x-portcullis-user-issuer", Some(token.issuer.as_str())),
        ("x-portcullis-user-subject", Some(token.subject.as_str())),
        ("x-portcullis-user-email", token.email.as_deref()),
        (
            "x-portcullis-user-groups",
            Some(groups.as_str()).filter(|g| !g.is_empty()),
        ),
        (
            "x-portcullis-user-amr",
            Some(amr.as_str()).filter(|a| !a.is_empty()),
        ),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            req.insert_header(name, value)?;
        }
    }
    Ok(())
}

fn set(req: &mut RequestHeader, name: &'static str, value: &str) -> Result<()> {
    req.insert_header(name, value).map(|_| ())
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");

/// The constant of a header admission or body inspection asks for on every request or
/// response, which skips parsing the name on each lookup.
pub(crate) fn known_header(name: &str) -> Option<HeaderName> {
    use http::header;
    match name {
        "content-length" => Some(header::CONTENT_LENGTH),
        "transfer-encoding" => Some(header::TRANSFER_ENCODING),
        "content-type" => Some(header::CONTENT_TYPE),
        "content-encoding" => Some(header::CONTENT_ENCODING),
        "upgrade" => Some(header::UPGRADE),
        "grpc-encoding" => Some(GRPC_ENCODING),
        _ => None,
    }
}

/// The request's headers as policy reads them.
#[derive(Debug)]
pub(crate) struct Headers<'a>(pub &'a RequestHeader);

impl Headers<'_> {
    /// The values of `name` (see [`known_header`]).
    fn all(&self, name: &str) -> http::header::GetAll<'_, http::HeaderValue> {
        match known_header(name) {
            Some(known) => self.0.headers.get_all(known),
            None => self.0.headers.get_all(name),
        }
    }
}

impl HeaderSource for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).iter().next().and_then(|v| v.to_str().ok())
    }

    fn header_values(&self, name: &str) -> Vec<Option<&str>> {
        self.all(name).iter().map(|v| v.to_str().ok()).collect()
    }

    fn header_count(&self, name: &str) -> usize {
        self.all(name).iter().count()
    }

    fn header_and_count(&self, name: &str) -> (Option<&str>, usize) {
        let mut values = self.all(name).iter();
        let first = values.next();
        let count = usize::from(first.is_some()) + values.count();
        (first.and_then(|v| v.to_str().ok()), count)
    }
}

/// The codings of the request's `Accept-Encoding` (all its headers) that the gateway can
/// decode, or `identity` when none is left: what a route with response DLP asks of the
/// upstream.
pub(crate) fn decodable_accept_encoding(request: &RequestHeader) -> http::HeaderValue {
    let mut kept: Vec<String> = Vec::new();
    for value in request.headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let coding = item.split(';').next().unwrap_or("").trim();
            let refused = item.split(';').skip(1).any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            let known = Codings::parse(Some(coding)).is_ok_and(|c| !c.is_empty());
            if known && !refused && !kept.iter().any(|k| k.eq_ignore_ascii_case(coding)) {
                kept.push(coding.to_ascii_lowercase());
            }
        }
    }
    if kept.is_empty() {
        return http::HeaderValue::from_static("identity");
    }
    // Codings are tokens: always a valid value.
    http::HeaderValue::from_str(&kept.join(", "))
        .unwrap_or_else(|_| http::HeaderValue::from_static("identity"))
}

#[cfg(test)]
mod tests;
