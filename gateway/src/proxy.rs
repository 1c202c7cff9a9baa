//! The data plane's pingora phases. Each phase does one job and hands the logic to a named
//! module: admission decides (`admission`), forwarding rewrites the upstream request
//! (`forwarding`), bodies stream through DLP (`inspect`), and one summary feeds the access
//! line, the audit record and the metrics (`record`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use portcullis_policy::BodyDirection;

use crate::admission::{
    body_header, caller_name, plan_body, Bearer, BodyPlan, Refusal, RequestHead, Routing,
};
use crate::assertion::{AssertionFacts, ASSERTION_HEADER};
use crate::audit::AuditTrail;
use crate::forwarding::{
    decodable_accept_encoding, head_size, header_str, known_header, raw_head_names, resolve_client,
    rewrite_upstream_request, Forwarded, Headers,
};
use crate::inspect::{BodyScan, Unscanned};
use crate::metrics::Metrics;
use crate::record::grpc_status;
use crate::traces::Tracing;

mod body_watch;
mod connection;
mod context;
mod finish;
mod grpc;
mod people;
mod refusals;

pub(crate) use connection::Workload;
pub(crate) use context::RequestCtx;

use crate::snapshot::{Fallback, Snapshot};
use crate::upstream::Pool;

pub(crate) struct Gateway {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub audit: Option<Arc<AuditTrail>>,
    /// The listener's downstream write timeout (`connections.write_timeout`).
    pub write_timeout: Duration,
    pub refusal_lines: crate::access_log::RefusalLines,
    /// The gateway-wide cap shared fairly between tenants (`fairness`), if configured.
    pub fairness: Option<Arc<crate::fairness::FairGate>>,
    /// On an egress listener: the local workload every request on it comes from.
    pub egress: Option<Arc<connection::Workload>>,
    /// Traces, when the `tracing` section is on.
    pub tracing: Option<Arc<Tracing>>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: pingora moves the request's future (which holds the context) into a box of its
    /// own for every request, and a small context keeps that copy short.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx::new())
    }

    /// Identity, client, then admission; a refusal is answered here.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        // HTTP/2 flow control: a client that stops granting window is cut too (`connections`).
        session.set_write_timeout(Some(self.write_timeout));
        self.metrics.request_started();
        ctx.counted = true;
        ctx.grpc = grpc::is_call(session);
        let snapshot = self.snapshot.load_full();
        let listener = snapshot.listener(session.server_addr().and_then(|a| a.as_inet()).copied());
        let req = session.req_header();
        ctx.client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|peer| resolve_client(req, peer.ip(), listener));
        let check = match &self.egress {
            Some(workload) => workload.enter(ctx),
            None => connection::check_connection(session, ctx, &snapshot, listener),
        };
        if let Some(tracing) = &self.tracing {
            self.begin_trace(tracing, session, ctx);
        }
        if let Err(refusal) = check.recheck {
            return self.refuse(session, ctx, refusal).await;
        }
        if check.aged {
            // HTTP/1.1: `Connection: close` after this response.
            session.set_keepalive(None);
        }
        if let Some(answer) = self.own_endpoint(&snapshot, session.req_header()).await {
            return self.refuse(session, ctx, answer).await;
        }
        let req = session.req_header();
        let headers = Headers(req);
        let head = RequestHead {
            identity: ctx.identity.as_deref(),
            method: req.method.as_str(),
            authority: req.uri.authority().map(|a| a.as_str()),
            host: header_str(req, http::header::HOST),
            host_required: req.version == http::Version::HTTP_11,
            size: head_size(req),
            both_lengths: req.headers.contains_key(http::header::TRANSFER_ENCODING)
                && raw_head_names(&session.as_downstream().to_h1_raw(), "content-length"),
            path: req.uri.path(),
            source: ctx
                .client
                .as_ref()
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.ip),
            headers: &headers,
            bearer: &Bearer::Absent,
            now: 0,
        };
        let verdict = match snapshot.admission.route(&head) {
            Routing::Refused(verdict) => verdict,
            Routing::Routed(routed) => {
                self.admit_routed(&snapshot, routed, head, req, &mut ctx.set_cookie)
                    .await
            }
        };
        ctx.target = verdict.target;
        ctx.route = verdict.route;
        if let Some(trace) = &ctx.trace {
            trace.admitted(
                verdict
                    .outcome
                    .as_ref()
                    .map_or_else(Refusal::label, |_| "allow"),
            );
        }
        match verdict.outcome {
            Ok(admitted) => {
                if let Some(gate) = &self.fairness {
                    let weight = snapshot
                        .routes
                        .get(admitted.route_index)
                        .map_or(1, |r| r.weight);
                    match gate
                        .acquire(admitted.route.tenant.as_str(), weight, &self.metrics)
                        .await
                    {
                        Some(slot) => ctx.fair_slot = Some(slot),
                        None => {
                            ctx.admitted = Some(admitted);
                            return self.refuse(session, ctx, Refusal::Overloaded).await;
                        }
                    }
                }
                ctx.request_scan = admitted.route.inspection.as_ref().and_then(|i| {
                    BodyScan::planned(i, BodyDirection::Request, &admitted.request_body)
                });
                ctx.admitted = Some(admitted);
                if ctx.grpc {
                    ctx.grpc_deadline = grpc::timeout(session).map(|t| ctx.started + t);
                }
                if let (Some(abort), true) = (check.abort, session.is_http2()) {
                    if !session.is_body_done() {
                        let timeout = listener.map_or(Duration::MAX, |l| l.body_idle_timeout);
                        ctx.body_watch = Some(body_watch::BodyWatch::start(abort, timeout));
                    }
                }
            }
            Err(refusal) => return self.refuse(session, ctx, refusal).await,
        }
        ctx.generation = Some(snapshot);
        self.record_admission(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if end_of_stream {
            ctx.body_watch = None;
        } else if let Some(watch) = &ctx.body_watch {
            watch.touch();
        }
        connection::past_max_age(ctx)?;
        // Bodies without a (truthful) Content-Length are counted as they stream.
        if let Some(max) = ctx.admitted.as_ref().and_then(|a| a.max_request_body) {
            ctx.request_body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
            if ctx.request_body_bytes > max {
                return Err(self.refused_in_request_body(ctx, Refusal::BodyTooLarge));
            }
        }
        // Between two chunks of a body, the other tenants' ready requests go first.
        if ctx.fair_slot.as_ref().is_some_and(|s| s.contended()) {
            tokio::task::yield_now().await;
        }
        let Some(scan) = ctx.request_scan.as_mut() else {
            return Ok(());
        };
        let chunk = body.take().unwrap_or_default();
        let timed = ctx
            .trace
            .as_ref()
            .and_then(|t| t.mark().map(|_| Instant::now()));
        let scanned = scan.push(&chunk, end_of_stream);
        if let (Some(t0), Some(trace)) = (timed, ctx.trace.as_mut()) {
            trace.dlp_scanned(false, t0.elapsed());
        }
        match scanned {
            Ok(out) => {
                // Nothing to send yet is an empty chunk, which pingora skips: `None` would end
                // the upstream body there. At the end, nothing is `None` (an empty chunk after
                // the end is an error upstream).
                *body = (!out.is_empty() || !end_of_stream).then(|| Bytes::from(out));
                Ok(())
            }
            Err(refusal) => Err(self.refused_in_request_body(ctx, refusal)),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        if ctx.admitted.is_none() {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no upstream without admission",
            ));
        }
        // A retry picks again, from the route's own pool first.
        ctx.fallback = None;
        let state = ctx
            .route_state()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route has no pool"))?;
        let pool = state
            .pool
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route has no pool"))?;
        let avoid = match ctx.retry_elsewhere {
            true => ctx.upstream.as_ref(),
            false => None,
        };
        let (peer, fallback) = match pool.peer_avoiding(avoid) {
            Some(peer) => (Some(peer), None),
            None => failover(&self.metrics, &pool, &state.fallbacks),
        };
        ctx.fallback = fallback.as_ref().map(|(i, _)| *i);
        match peer {
            Some(mut peer) => {
                if let Some(deadline) = ctx.grpc_deadline {
                    // The call's deadline caps every wait on the upstream.
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(self.refused_midway(ctx, Refusal::DeadlineExceeded));
                    }
                    let cap = |t: Option<Duration>| Some(t.map_or(left, |t| t.min(left)));
                    peer.options.read_timeout = cap(peer.options.read_timeout);
                    peer.options.connection_timeout = cap(peer.options.connection_timeout);
                }
                ctx.upstream = Some(peer._address.clone());
                if let Some(trace) = ctx.trace.as_mut() {
                    let serving = fallback.as_ref().map_or(&pool, |(_, p)| p);
                    trace.upstream_begin(serving.name.as_str());
                }
                Ok(Box::new(peer))
            }
            None => {
                self.metrics
                    .upstream_error(pool.name.as_str(), "no_healthy_target");
                Err(self.refused_midway(ctx, Refusal::NoHealthyUpstream))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        let (Some(admitted), Some(target), Some(generation)) =
            (&ctx.admitted, &ctx.target, &ctx.generation)
        else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no forwarding without admission",
            ));
        };
        let Some(route) = ctx.route_state().and_then(|r| r.headers.as_ref()) else {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "route names are not header values",
            ));
        };
        rewrite_upstream_request(
            upstream,
            &Forwarded {
                request_id: ctx.request_id.as_str(),
                route,
                target,
                identity: ctx.identity_headers.as_deref(),
                token: ctx.admitted.as_ref().and_then(|a| a.token.as_deref()),
                client: ctx.client.as_ref(),
                strip: generation.admission.stripped(),
            },
        )?;
        if let Some(trace) = &ctx.trace {
            // Our span is the upstream's parent; an outsider's context never goes on as is.
            upstream.insert_header("traceparent", trace.upstream_traceparent())?;
            match trace.tracestate() {
                Some(state) => upstream.insert_header("tracestate", state.clone())?,
                None if upstream.headers.contains_key("tracestate") => {
                    upstream.remove_header("tracestate");
                }
                None => {}
            }
        }
        if let (Some(signer), Some(admitted)) = (&generation.assertion, &ctx.admitted) {
            let token = admitted.token.as_deref();
            let identity = ctx.identity.as_deref();
            let facts = AssertionFacts {
                tenant: admitted.route.tenant.as_str(),
                route: admitted.route.id.as_str(),
                caller: caller_name(identity, token),
                certificate: identity,
                token,
            };
            let jwt = signer.assertion(&facts).ok_or_else(|| {
                Error::explain(ErrorType::InternalError, "identity assertion not signed")
            })?;
            upstream.insert_header(ASSERTION_HEADER, &*jwt)?;
        }
        if let Some(scan) = &ctx.request_scan {
            if scan.decodes() {
                upstream.remove_header(&http::header::CONTENT_ENCODING);
            }
            if scan.changes_length() && upstream.headers.contains_key(http::header::CONTENT_LENGTH)
            {
                // pingora sends the body chunked instead.
                upstream.remove_header(&http::header::CONTENT_LENGTH);
            }
        }
        if admitted
            .route
            .inspection
            .as_ref()
            .is_some_and(|i| i.scans(BodyDirection::Response))
        {
            // The client's choice must not make the upstream send what we cannot read.
            let accepted = decodable_accept_encoding(upstream);
            upstream.insert_header("accept-encoding", accepted)?;
            // gRPC compresses messages inside the body (grpc-encoding), which is not decoded.
            if upstream.headers.contains_key("grpc-accept-encoding") {
                upstream.insert_header("grpc-accept-encoding", "identity")?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if let Some(trace) = &ctx.trace {
            trace.upstream_responded(response.status.as_u16());
        }
        if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            ctx.upgraded = true;
            self.metrics.upgrade_started(ctx.tenant());
        }
        // A gRPC call's headers-only answer carries its status here.
        if ctx.grpc {
            ctx.grpc_status = grpc_status(&response.headers);
        }
        let Some(inspection) = ctx.route.as_ref().and_then(|r| r.inspection.clone()) else {
            return Ok(());
        };
        let status = response.status.as_u16();
        let bodiless = status == 204 || status == 304 || session.req_header().method == "HEAD";
        if !inspection.scans(BodyDirection::Response) || bodiless {
            return Ok(());
        }
        let plan = if status == 101 {
            // An upgrade admission let through (`websocket: allow`): frames, not a body.
            Ok(BodyPlan::Unscanned(Unscanned::Websocket))
        } else {
            let header = |name: &'static str| {
                let mut values = match known_header(name) {
                    Some(known) => response.headers.get_all(known),
                    None => response.headers.get_all(name),
                }
                .iter();
                let first = values.next();
                let count = usize::from(first.is_some()) + values.count();
                body_header(count, first.and_then(|v| v.to_str().ok()))
            };
            plan_body(&inspection, BodyDirection::Response, &header)
        };
        let scan = match plan {
            Ok(plan) => BodyScan::planned(&inspection, BodyDirection::Response, &plan),
            Err(refusal) => return Err(self.refused_midway(ctx, refusal)),
        };
        let Some(scan) = scan else {
            return Ok(());
        };
        if scan.decodes() {
            response.remove_header(&http::header::CONTENT_ENCODING);
        }
        if scan.changes_length() {
            // The length is no longer known: stream it chunked (HTTP/1.1) or framed (h2).
            response.remove_header(&http::header::CONTENT_LENGTH);
            if !session.is_http2() {
                response.insert_header(
                    "transfer-encoding",
                    http::HeaderValue::from_static("chunked"),
                )?;
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
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Option<Duration>> {
        connection::past_max_age(ctx)?;
        let Some(scan) = ctx.response_scan.as_mut() else {
            return Ok(None);
        };
        let chunk = body.take().unwrap_or_default();
        let timed = ctx
            .trace
            .as_ref()
            .and_then(|t| t.mark().map(|_| Instant::now()));
        let scanned = scan.push(&chunk, end_of_stream);
        if let (Some(t0), Some(trace)) = (timed, ctx.trace.as_mut()) {
            trace.dlp_scanned(true, t0.elapsed());
        }
        match scanned {
            Ok(out) => {
                *body = Some(Bytes::from(out));
                Ok(None)
            }
            // The status line is already on its way: the only safe move is to cut the response
            // off before the held-back match is released.
            Err(refusal) => Err(self.refused_midway(ctx, refusal)),
        }
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.grpc_status = grpc_status(trailers).or(ctx.grpc_status);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        // The id that names this request in our logs, so a caller can quote it.
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        // A renewed session (last seen, or a refreshed ID token).
        if let Some(cookie) = ctx.set_cookie.take() {
            response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    /// pingora's own "Fail to proxy" error line: left out for refusals the caller brought on
    /// itself (recorded in the access line, sampled, and the audit record).
    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, _error: &Error) -> bool {
        ctx.refusal
            .as_ref()
            .is_some_and(Refusal::counts_against_caller)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if let Some(trace) = ctx.trace.as_mut() {
            trace.upstream_connected(reused);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<RequestCtx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent: a route with fallbacks tries once more, elsewhere, rather than
        // fail every request until the target's health check notices.
        if ctx.fallback.is_none()
            && !ctx.retry_elsewhere
            && matches!(
                e.etype(),
                ErrorType::ConnectRefused | ErrorType::ConnectError | ErrorType::ConnectTimedout
            )
            && ctx.route_state().is_some_and(|s| !s.fallbacks.is_empty())
        {
            ctx.retry_elsewhere = true;
            e.set_retry(true);
        }
        if let Some(pool) = ctx.pool() {
            let kind = match e.etype() {
                &crate::upstream::IDENTITY_MISMATCH => "identity_mismatch",
                ErrorType::InvalidCert => "certificate",
                ErrorType::TLSHandshakeFailure => "tls",
                _ => "connect",
            };
            self.metrics.upstream_error(pool.name.as_str(), kind);
        }
        e
    }

    /// Answers a request that failed after admission: with the refusal that stopped it, else
    /// with what pingora's error amounts to.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        let upstream_failed = matches!(e.esource(), ErrorSource::Upstream);
        if upstream_failed {
            if let Some(pool) = ctx.pool() {
                self.metrics.upstream_error(pool.name.as_str(), "exchange");
            }
        }
        let dead = matches!(
            e.etype(),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        ) && matches!(e.esource(), ErrorSource::Downstream);
        if upstream_failed
            && ctx
                .grpc_deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
        {
            ctx.refusal.get_or_insert(Refusal::DeadlineExceeded);
        }
        let refusal = ctx.refusal.get_or_insert_with(|| match e.esource() {
            ErrorSource::Upstream => Refusal::UpstreamFailed,
            ErrorSource::Downstream => Refusal::Malformed,
            _ => Refusal::Internal,
        });
        let status = refusal.status();
        if dead {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        // The detail goes to the log; the caller gets a fixed body. A refusal the caller
        // brought on itself (DLP, limits) is in its access line already: its detail is debug,
        // so that a client repeating it cannot flood the log.
        if refusal.counts_against_caller() {
            tracing::debug!(request.id = %ctx.request_id, error = %e, "request refused");
        } else {
            tracing::warn!(request.id = %ctx.request_id, error = %e, "request failed");
        }
        let _ = self.write_refusal(session, ctx).await;
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        self.record(session, e, ctx);
    }
}

/// The first of `fallbacks` with a healthy target, when `pool` has none: its peer, its
/// position and pool, the request counted as failed over to it.
fn failover(
    metrics: &Metrics,
    pool: &Pool,
    fallbacks: &[Fallback],
) -> (Option<HttpPeer>, Option<(usize, Arc<Pool>)>) {
    for (i, fallback) in fallbacks.iter().enumerate() {
        if let Some(peer) = fallback.pool.peer() {
            fallback
                .taken
                .get_or_init(|| {
                    metrics.failover_counter(pool.name.as_str(), fallback.pool.name.as_str())
                })
                .inc();
            return (Some(peer), Some((i, Arc::clone(&fallback.pool))));
        }
    }
    (None, None)
}
