//! The data plane: pingora's `ProxyHttp` phases driving identity, routing, access decisions,
//! header hygiene, forwarding and the access log. Each phase does one job; the logic lives in
//! the named functions below and in `policy`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::HeaderName;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use portcullis_audit::{Decision, DlpFinding, RateLimitOutcome, RequestEvent, RequestStage};
use portcullis_policy::{
    normalize_host, normalize_path, BodyDirection, HeaderSource, Identity, NormalizedPath,
    RequestFacts, RouteInspection,
};

use crate::access_log::{self, AccessLine};
use crate::audit::AuditTrail;
use crate::identity::ConnectionIdentity;
use crate::inspect::{BodyInspector, Encoding, Refused};
use crate::limits::{InFlight, Refusal};
use crate::metrics::{Metrics, RequestOutcome};
use crate::snapshot::{canonical, ListenerView, Snapshot};
use crate::upstream::Pool;

/// Header prefix of every identity fact the gateway sends upstream. Anything with this
/// prefix that arrives from outside is removed before forwarding, always.
const IDENTITY_PREFIX: &str = "x-portcullis-";
const XFCC: &str = "x-forwarded-client-cert";

pub(crate) struct Gateway {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub audit: Option<Arc<AuditTrail>>,
}

/// What one request has established so far, phase by phase.
pub(crate) struct RequestCtx {
    request_id: String,
    started: Instant,
    counted: bool,
    snapshot: Option<Arc<Snapshot>>,
    identity: Option<Arc<Identity>>,
    tls_version: &'static str,
    client_ip: Option<IpAddr>,
    forwarded_for: Option<String>,
    forwarded_proto: Option<String>,
    host: Option<String>,
    path: Option<NormalizedPath>,
    matched: Option<Matched>,
    decision: &'static str,
    rule: String,
    /// Held while the request runs; frees the tenant's in-flight slot when dropped.
    in_flight: Option<InFlight>,
    max_request_body: Option<u64>,
    request_body_bytes: u64,
    /// The route's DLP, and the scanners of this request's bodies.
    inspection: Option<Arc<RouteInspection>>,
    request_scan: Option<BodyInspector>,
    response_scan: Option<BodyInspector>,
    /// The upstream address the request was sent to.
    upstream: Option<pingora_core::protocols::l4::socket::SocketAddr>,
    /// Whether a rate limit applied, and its outcome, for the audit record.
    rate_limit: RateLimitOutcome,
}

/// The route a request matched, with what forwarding needs.
struct Matched {
    tenant: String,
    route: String,
    pool: Option<Arc<Pool>>,
}

impl RequestCtx {
    fn tenant(&self) -> &str {
        self.matched.as_ref().map_or("-", |m| m.tenant.as_str())
    }
    fn route(&self) -> &str {
        self.matched.as_ref().map_or("-", |m| m.route.as_str())
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            started: Instant::now(),
            counted: false,
            snapshot: None,
            identity: None,
            tls_version: "none",
            client_ip: None,
            forwarded_for: None,
            forwarded_proto: None,
            host: None,
            path: None,
            matched: None,
            decision: "none",
            rule: String::from("-"),
            in_flight: None,
            max_request_body: None,
            request_body_bytes: 0,
            inspection: None,
            request_scan: None,
            response_scan: None,
            upstream: None,
            rate_limit: RateLimitOutcome::None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.metrics.request_started();
        ctx.counted = true;
        let snapshot = self.snapshot.load_full();
        read_connection_identity(session.digest(), ctx);

        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| canonical(a.ip()));
        let listener = snapshot.listener(session.server_addr().and_then(|a| a.as_inet()).copied());
        resolve_client(session.req_header(), peer_ip, listener, ctx);

        let req = session.req_header();
        ctx.host = req
            .uri
            .host()
            .map(str::to_owned)
            .or_else(|| header_str(req, "host").map(str::to_owned))
            .and_then(|h| normalize_host(&h));
        let path = match normalize_path(req.uri.path()) {
            Ok(path) => path,
            Err(e) => {
                ctx.decision = "invalid";
                ctx.snapshot = Some(snapshot);
                let message = format!("request path rejected: {e}");
                return reply(session, ctx, 400, "bad_request", &message).await;
            }
        };

        let Some(route) = snapshot.routes.route(ctx.host.as_deref(), &path) else {
            ctx.decision = "no_route";
            ctx.path = Some(path);
            ctx.snapshot = Some(snapshot);
            return reply(
                session,
                ctx,
                404,
                "no_route",
                "no route for this host and path",
            )
            .await;
        };
        ctx.matched = Some(Matched {
            tenant: route.tenant.to_string(),
            route: route.id.to_string(),
            pool: snapshot.pools.get(&route.upstream).cloned(),
        });
        let facts = RequestFacts {
            identity: ctx.identity.as_deref(),
            method: req.method.as_str(),
            path: &path,
            source: ctx.client_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            headers: &Headers(req),
        };
        let verdict = route.authorize(&facts);
        ctx.path = Some(path);
        ctx.snapshot = Some(snapshot.clone());
        let permit = match verdict {
            Ok(permit) => permit,
            Err(denied) => {
                ctx.decision = "deny";
                ctx.rule = denied.rule_label().to_owned();
                return reply(session, ctx, 403, "forbidden", "access denied by policy").await;
            }
        };
        ctx.decision = "allow";
        ctx.rule = permit.rule.to_string();

        let source = ctx.client_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        match snapshot
            .limits
            .admit(route, identity_key(ctx.identity.as_deref()), source)
        {
            Ok(slot) => {
                ctx.in_flight = slot;
                ctx.rate_limit = RateLimitOutcome::Passed;
            }
            Err(refusal) => {
                ctx.decision = "rate_limited";
                ctx.rate_limit = RateLimitOutcome::Limited;
                self.metrics
                    .rate_limited(route.tenant.as_str(), refusal.limit);
                return too_many(session, ctx, &refusal).await;
            }
        }
        ctx.max_request_body = snapshot
            .limits
            .tenant(&route.tenant)
            .and_then(|t| t.max_request_body());
        if let Some(max) = ctx.max_request_body {
            let declared = header_str(session.req_header(), "content-length")
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max) {
                ctx.decision = "too_large";
                self.metrics
                    .rate_limited(route.tenant.as_str(), "body_size");
                return reply(
                    session,
                    ctx,
                    413,
                    "payload_too_large",
                    "request body exceeds the limit",
                )
                .await;
            }
        }
        if let Some(inspection) = &route.inspection {
            ctx.inspection = Some(inspection.clone());
        }
        let req = session.req_header();
        // A request without a body has nothing to scan.
        let has_body = || {
            req.headers.contains_key("transfer-encoding")
                || header_str(req, "content-length").is_some_and(|len| len.trim() != "0")
        };
        if let Some(inspection) = route.inspection.as_ref().filter(|_| has_body()) {
            let scan = BodyInspector::new(
                inspection,
                BodyDirection::Request,
                header_str(req, "content-type"),
                Encoding::from_header(header_str(req, "content-encoding")),
            );
            match scan {
                None => {}
                Some(Ok(scan)) => ctx.request_scan = Some(scan),
                Some(Err(_)) => {
                    ctx.decision = "dlp_refused";
                    let msg = "the request body's encoding cannot be inspected";
                    return reply(session, ctx, 415, "uninspectable_body", msg).await;
                }
            }
        }
        self.admit(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Bodies without a (truthful) Content-Length are counted as they stream.
        if let Some(max) = ctx.max_request_body {
            ctx.request_body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
            if ctx.request_body_bytes > max {
                ctx.decision = "too_large";
                self.metrics.rate_limited(ctx.tenant(), "body_size");
                let msg = "request body exceeds the limit";
                return Err(Error::explain(ErrorType::HTTPStatus(413), msg));
            }
        }
        let Some(scan) = ctx.request_scan.as_mut() else {
            return Ok(());
        };
        let chunk = body.take().unwrap_or_default();
        match scan.push(&chunk, end_of_stream) {
            Ok(out) => {
                // Nothing to send is None: an empty chunk after the end is an error upstream.
                *body = (!out.is_empty()).then(|| Bytes::from(out));
                Ok(())
            }
            Err(refused) => {
                ctx.decision = "dlp_refused";
                Err(refusal_error(&refused, BodyDirection::Request))
            }
        }
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(inspection) = ctx.inspection.clone() else {
            return Ok(());
        };
        let header = |name: &str| response.headers.get(name).and_then(|v| v.to_str().ok());
        let scan = BodyInspector::new(
            &inspection,
            BodyDirection::Response,
            header("content-type"),
            Encoding::from_header(header("content-encoding")),
        );
        let scan = match scan {
            None => return Ok(()),
            Some(Err(refused)) => {
                ctx.decision = "dlp_refused";
                return Err(refusal_error(&refused, BodyDirection::Response));
            }
            Some(Ok(scan)) => scan,
        };
        if scan.decodes() {
            response.remove_header("content-encoding");
        }
        if scan.decodes() || inspection.may_rewrite(BodyDirection::Response) {
            // The length is no longer known: stream it chunked (HTTP/1.1) or framed (h2).
            response.remove_header("content-length");
            if !session.is_http2() {
                response.insert_header("transfer-encoding", "chunked")?;
            }
        }
        ctx.response_scan = Some(scan);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(scan) = ctx.response_scan.as_mut() else {
            return Ok(None);
        };
        let chunk = body.take().unwrap_or_default();
        match scan.push(&chunk, end_of_stream) {
            Ok(out) => {
                *body = Some(Bytes::from(out));
                Ok(None)
            }
            // The status line is already on its way: the only safe move is to cut the response
            // off before the held-back match is released.
            Err(refused) => {
                ctx.decision = "dlp_refused";
                Err(refusal_error(&refused, BodyDirection::Response))
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let matched = ctx
            .matched
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route matched"))?;
        let Some(pool) = &matched.pool else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "route has no upstream pool",
            ));
        };
        match pool.peer() {
            Some(peer) => {
                ctx.upstream = Some(peer._address.clone());
                Ok(Box::new(peer))
            }
            None => {
                self.metrics
                    .upstream_error(pool.name.as_str(), "no_healthy_target");
                Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    format!("upstream {}: no healthy target", pool.name),
                ))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        strip_spoofable_headers(upstream);
        if let (Some(scan), Some(inspection)) = (&ctx.request_scan, &ctx.inspection) {
            if scan.decodes() {
                upstream.remove_header("content-encoding");
            }
            if scan.decodes() || inspection.may_rewrite(BodyDirection::Request) {
                // Redaction changes the length; pingora sends the body chunked instead.
                upstream.remove_header("content-length");
            }
        }
        if let Some(path) = ctx
            .path
            .as_ref()
            .filter(|p| p.as_str() != upstream.uri.path())
        {
            let uri = match upstream.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_string(),
            };
            let uri = uri
                .parse::<http::Uri>()
                .map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e.to_string()))?;
            upstream.set_uri(uri);
        }
        if upstream.headers.get("host").is_none() {
            if let Some(host) = &ctx.host {
                set_header(upstream, "host", host)?;
            }
        }
        set_identity_headers(upstream, ctx)?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The id that names this request in our logs, so a caller can quote it.
        response.insert_header("x-request-id", &ctx.request_id)?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        if let Some(pool) = ctx.matched.as_ref().and_then(|m| m.pool.as_ref()) {
            self.metrics.upstream_error(pool.name.as_str(), "connect");
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, kind, message) = match e.etype() {
            ErrorType::HTTPStatus(503) => {
                (503, "upstream_unavailable", "no healthy upstream target")
            }
            ErrorType::HTTPStatus(413) => (
                413,
                "payload_too_large",
                "request body too large to accept or inspect",
            ),
            ErrorType::HTTPStatus(403) => {
                (403, "dlp_blocked", "body refused by data protection policy")
            }
            ErrorType::HTTPStatus(code) => (*code, "error", "request failed"),
            _ => match e.esource() {
                pingora_core::ErrorSource::Upstream => (502, "bad_gateway", "upstream failed"),
                pingora_core::ErrorSource::Downstream => (400, "bad_request", "malformed request"),
                _ => (500, "internal_error", "internal error"),
            },
        };
        if matches!(e.esource(), pingora_core::ErrorSource::Upstream) {
            if let Some(pool) = ctx.matched.as_ref().and_then(|m| m.pool.as_ref()) {
                self.metrics.upstream_error(pool.name.as_str(), "exchange");
            }
        }
        let dead = matches!(
            e.etype(),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        ) && matches!(e.esource(), pingora_core::ErrorSource::Downstream);
        if !dead {
            // The detail goes to the log; the caller gets a fixed body.
            tracing::warn!(request.id = %ctx.request_id, error = %e, "request failed");
            let _ = write_json(session, ctx, code, kind, message, &[]).await;
        }
        FailToProxy {
            error_code: if dead { 0 } else { code },
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if !ctx.counted {
            return;
        }
        self.metrics.request_finished();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let duration = ctx.started.elapsed();
        let req = session.req_header();
        let spiffe = ctx
            .identity
            .as_ref()
            .and_then(|i| i.spiffe_id.as_ref())
            .map(|s| s.as_str())
            .unwrap_or("-");
        let (dlp, findings) = self.record_findings(ctx);
        access_log::write(&AccessLine {
            duration_ms: duration.as_secs_f64() * 1000.0,
            request_id: &ctx.request_id,
            tenant: ctx.tenant(),
            route: ctx.route(),
            spiffe_id: spiffe,
            client_ip: ctx.client_ip,
            tls_version: ctx.tls_version,
            method: req.method.as_str(),
            path: ctx.path.as_ref().map_or("-", |p| p.as_str()),
            version: http_version(req.version),
            status,
            decision: ctx.decision,
            rule: &ctx.rule,
            dlp: &dlp,
        });
        if let Some(audit) = &self.audit {
            audit.complete(request_event(
                session,
                ctx,
                audit,
                RequestStage::Completed,
                findings,
            ));
        }
        // Counted after the log line is written, so a counter never runs ahead of the log.
        self.metrics.request(&RequestOutcome {
            tenant: ctx.tenant(),
            route: ctx.route(),
            status,
            decision: ctx.decision,
            duration,
        });
    }
}

impl Gateway {
    /// Fail-closed audit: the request goes on only once its admission record is durable.
    async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(audit) = self.audit.as_ref().filter(|a| a.fail_closed()) else {
            return Ok(false);
        };
        let event = request_event(session, ctx, audit, RequestStage::Admitted, Vec::new());
        match audit.admit(event).await {
            Ok(()) => Ok(false),
            Err(e) => {
                ctx.decision = "audit_unavailable";
                self.metrics.audit_refused(ctx.tenant());
                if audit.note_refused() {
                    tracing::error!(request.id = %ctx.request_id, error = %e, "request refused: its audit record could not be made durable (logged at 1, 2, 4, 8… refusals; portcullis_audit_refused_requests_total counts all)");
                }
                let msg = "the request cannot be recorded right now; try again later";
                reply(session, ctx, 503, "audit_unavailable", msg).await
            }
        }
    }

    /// Counts the DLP findings of both bodies, renders them for the access log as
    /// `direction:detector:action:count` items (or `-`), and returns them for the audit record.
    /// Counts only, never data.
    fn record_findings(&self, ctx: &RequestCtx) -> (String, Vec<DlpFinding>) {
        let mut items = Vec::new();
        let mut findings = Vec::new();
        for (direction, scan) in [
            ("request", &ctx.request_scan),
            ("response", &ctx.response_scan),
        ] {
            let Some(scan) = scan else { continue };
            if scan.incomplete {
                self.metrics.dlp_incomplete(ctx.tenant(), direction);
                items.push(format!("{direction}:uninspected"));
            }
            for f in scan.findings().iter() {
                let (detector, action) = (f.detector.to_string(), f.action.to_string());
                self.metrics
                    .dlp_finding(ctx.tenant(), direction, &detector, &action, f.count);
                items.push(format!("{direction}:{detector}:{action}:{}", f.count));
                findings.push(DlpFinding {
                    detector,
                    count: f.count,
                    action,
                });
            }
        }
        let rendered = if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(",")
        };
        (rendered, findings)
    }
}

/// One of a request's audit records, from what the request established. Never bodies, header
/// values or matched data.
fn request_event(
    session: &Session,
    ctx: &RequestCtx,
    audit: &AuditTrail,
    stage: RequestStage,
    dlp: Vec<DlpFinding>,
) -> RequestEvent {
    let req = session.req_header();
    let completed = stage == RequestStage::Completed;
    let mut path = ctx
        .path
        .as_ref()
        .map_or_else(|| req.uri.path().to_owned(), |p| p.as_str().to_owned());
    if let (true, Some(query)) = (audit.include_query(), req.uri.query()) {
        path.push('?');
        path.push_str(query);
    }
    let decision = match ctx.decision {
        "allow" => Decision::Allow,
        "none" | "invalid" => Decision::Error,
        _ => Decision::Deny,
    };
    RequestEvent {
        request_id: ctx.request_id.clone(),
        stage,
        trace_id: header_str(req, "traceparent").and_then(trace_id),
        tenant: ctx.matched.as_ref().map(|m| m.tenant.clone()),
        route: ctx.matched.as_ref().map(|m| m.route.clone()),
        identity: identity_name(ctx.identity.as_deref()).map(str::to_owned),
        source: ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        method: req.method.as_str().to_owned(),
        host: ctx.host.clone().unwrap_or_default(),
        path,
        status: if completed {
            session.response_written().map_or(0, |r| r.status.as_u16())
        } else {
            0
        },
        bytes_in: if completed {
            session.body_bytes_read() as u64
        } else {
            0
        },
        bytes_out: if completed {
            session.body_bytes_sent() as u64
        } else {
            0
        },
        duration_ms: if completed {
            u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX)
        } else {
            0
        },
        decision,
        rule: (ctx.rule != "-").then(|| ctx.rule.clone()),
        rate_limit: ctx.rate_limit,
        dlp,
        tls_version: (ctx.tls_version != "none").then(|| ctx.tls_version.to_owned()),
        upstream: ctx.upstream.as_ref().map(ToString::to_string),
        reason: (ctx.decision != "allow").then(|| ctx.decision.to_owned()),
    }
}

fn http_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "other",
    }
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let valid = id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && id.bytes().any(|b| b != b'0');
    valid.then(|| id.to_ascii_lowercase())
}

fn read_connection_identity(digest: Option<&Digest>, ctx: &mut RequestCtx) {
    let connection = digest
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|ssl| ssl.extension.get::<ConnectionIdentity>());
    if let Some(connection) = connection {
        ctx.identity = connection.identity.clone();
        ctx.tls_version = connection.tls_version;
    }
}

/// Works out the client address and the X-Forwarded-* values to send upstream. Inbound
/// forwarding headers are believed only when the connection comes from a trusted proxy; the
/// client is then the right-most address in X-Forwarded-For that is not itself trusted.
fn resolve_client(
    req: &RequestHeader,
    peer_ip: Option<IpAddr>,
    listener: Option<&ListenerView>,
    ctx: &mut RequestCtx,
) {
    let Some(peer_ip) = peer_ip else { return };
    ctx.client_ip = Some(peer_ip);
    let trusted = listener.is_some_and(|l| l.trusts(peer_ip));
    let inbound_xff: Vec<&str> = if trusted {
        req.headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    if trusted {
        if let Some(listener) = listener {
            for hop in inbound_xff.iter().rev() {
                match hop.parse::<IpAddr>() {
                    Ok(ip) => {
                        let ip = canonical(ip);
                        ctx.client_ip = Some(ip);
                        if !listener.trusts(ip) {
                            break;
                        }
                    }
                    // An unparsable hop ends what we can believe.
                    Err(_) => break,
                }
            }
        }
        ctx.forwarded_proto = header_str(req, "x-forwarded-proto").map(str::to_owned);
    }
    let mut chain = inbound_xff.join(", ");
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(&peer_ip.to_string());
    ctx.forwarded_for = Some(chain);
}

/// The error that ends a request whose body DLP refused; `fail_to_proxy` turns it into the
/// response (or, once a response has started, pingora cuts the connection).
fn refusal_error(refused: &Refused, direction: BodyDirection) -> Box<Error> {
    let (status, what) = match refused {
        Refused::Blocked(detector) => (
            403,
            format!("{direction:?} body blocked by DLP detector {detector}"),
        ),
        Refused::TooLarge => (413, format!("{direction:?} body over the inspection limit")),
        Refused::Undecodable(why) => (413, format!("{direction:?} body: {why}")),
    };
    Error::explain(ErrorType::HTTPStatus(status), what)
}

/// The caller's name: SPIFFE ID, else certificate subject.
fn identity_name(identity: Option<&Identity>) -> Option<&str> {
    identity.and_then(|i| {
        i.spiffe_id
            .as_ref()
            .map(|s| s.as_str())
            .or(i.subject.as_deref())
    })
}

/// The key of per-identity limits: the caller's name, else anonymous.
fn identity_key(identity: Option<&Identity>) -> &str {
    identity_name(identity).unwrap_or("anonymous")
}

/// The request's headers as policy reads them.
#[derive(Debug)]
struct Headers<'a>(&'a RequestHeader);

impl HeaderSource for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        header_str(self.0, name)
    }
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Removes every header a caller could use to impersonate someone or fake its origin. The
/// gateway sets its own versions afterwards.
fn strip_spoofable_headers(req: &mut RequestHeader) {
    let spoofable = |n: &str| {
        n.starts_with(IDENTITY_PREFIX)
            || n == XFCC
            || n == "x-forwarded-for"
            || n == "x-forwarded-proto"
            || n == "forwarded"
            || n == "x-real-ip"
    };
    // Most requests carry none: look before allocating.
    if !req.headers.keys().any(|name| spoofable(name.as_str())) {
        return;
    }
    let names: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|name| spoofable(name.as_str()))
        .cloned()
        .collect();
    for name in names {
        req.remove_header(&name);
    }
}

fn set_header(req: &mut RequestHeader, name: &'static str, value: &str) -> Result<()> {
    req.insert_header(name, value).map(|_| ())
}

fn set_identity_headers(req: &mut RequestHeader, ctx: &RequestCtx) -> Result<()> {
    set_header(req, "x-portcullis-request-id", &ctx.request_id)?;
    if let Some(m) = &ctx.matched {
        set_header(req, "x-portcullis-tenant", &m.tenant)?;
        set_header(req, "x-portcullis-route", &m.route)?;
    }
    if let Some(identity) = &ctx.identity {
        if let Some(spiffe) = &identity.spiffe_id {
            set_header(req, "x-portcullis-spiffe-id", spiffe.as_str())?;
        }
        if !identity.dns_sans.is_empty() {
            set_header(req, "x-portcullis-dns-sans", &identity.dns_sans.join(","))?;
        }
        if let Some(subject) = &identity.subject {
            // A subject with characters a header cannot carry is left out rather than mangled.
            if set_header(req, "x-portcullis-subject", subject).is_err() {
                tracing::debug!(request.id = %ctx.request_id, "subject not representable as a header");
            }
        }
    }
    if let Some(xff) = &ctx.forwarded_for {
        set_header(req, "x-forwarded-for", xff)?;
    }
    set_header(
        req,
        "x-forwarded-proto",
        ctx.forwarded_proto.as_deref().unwrap_or("https"),
    )?;
    Ok(())
}

/// Answers the request ourselves with a JSON error and ends the proxy phases.
async fn reply(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    kind: &str,
    message: &str,
) -> Result<bool> {
    write_json(session, ctx, status, kind, message, &[]).await?;
    Ok(true)
}

/// 429 with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` fields.
async fn too_many(session: &mut Session, ctx: &RequestCtx, refusal: &Refusal) -> Result<bool> {
    let retry = refusal.retry_after.as_secs() + u64::from(refusal.retry_after.subsec_nanos() > 0);
    let retry = retry.max(1);
    let mut headers = vec![("retry-after", retry.to_string())];
    if let Some(policy) = refusal.policy {
        let window = policy.per.as_secs().max(1);
        headers.push((
            "ratelimit-policy",
            format!("\"{}\";q={};w={window}", refusal.limit, policy.requests),
        ));
        headers.push(("ratelimit", format!("\"{}\";r=0;t={retry}", refusal.limit)));
    }
    write_json(
        session,
        ctx,
        429,
        "rate_limited",
        "too many requests",
        &headers,
    )
    .await?;
    Ok(true)
}

async fn write_json(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    kind: &str,
    message: &str,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let body = serde_json::json!({
        "error": kind,
        "message": message,
        "request_id": ctx.request_id,
    })
    .to_string();
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("x-request-id", &ctx.request_id)?;
    header.insert_header("cache-control", "no-store")?;
    for (name, value) in extra {
        header.insert_header(*name, value)?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}
