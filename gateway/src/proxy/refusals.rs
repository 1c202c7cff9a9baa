//! Refusals on the wire: the fail-closed audit wait before forwarding, the counting of each
//! refusal, and its answer (before anything was forwarded, or as the error that ends a request
//! under way): JSON, or to a gRPC caller a gRPC status (`grpc`).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use portcullis_audit::RequestStage;

use super::{Gateway, RequestCtx};
use crate::abuse::Escalation;
use crate::admission::{caller_name, Refusal};
use crate::audit::{Escalated, Offender};
use crate::identity::ConnectionIdentity;
use crate::snapshot::canonical;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Gateway {
    /// Fail-closed audit: the request goes on only once its admission record is durable.
    pub(super) async fn record_admission(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(audit) = self.audit.as_ref().filter(|a| a.fail_closed()) else {
            return Ok(false);
        };
        let event = ctx.summary(session.req_header()).audit_event(
            RequestStage::Admitted,
            None,
            audit.include_query(),
            Vec::new(),
        );
        let waiting = ctx.trace.as_ref().and_then(|t| t.mark());
        let admitted = audit.admit(event).await;
        if let Some(trace) = &ctx.trace {
            trace.audit_waited(waiting, admitted.is_ok());
        }
        match admitted {
            Ok(()) => Ok(false),
            Err(e) => {
                if audit.note_refused() {
                    tracing::error!(request.id = %ctx.request_id, error = %e, "request refused: its audit record could not be made durable (logged at 1, 2, 4, 8… refusals; portcullis_audit_refused_requests_total counts all)");
                }
                self.refuse(session, ctx, Refusal::AuditUnavailable).await
            }
        }
    }

    /// Counts a refusal where its kind has a metric of its own.
    fn count_refusal(&self, tenant: &str, refusal: &Refusal) {
        match refusal {
            Refusal::RateLimited(limit) => self.metrics.rate_limited(tenant, limit.limit),
            Refusal::BodyTooLarge => self.metrics.rate_limited(tenant, "body_size"),
            Refusal::AuditUnavailable => self.metrics.audit_refused(tenant),
            _ => {}
        }
    }

    /// Answers a refusal made before anything was forwarded, and ends the proxy phases.
    pub(super) async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<bool> {
        self.count_refusal(ctx.tenant(), &refusal);
        if refusal.closes_connection() {
            session.set_keepalive(None);
        }
        if refusal.counts_against_caller() {
            self.escalate(session).await;
        }
        ctx.refusal = Some(refusal);
        self.write_refusal(session, ctx).await?;
        Ok(true)
    }

    /// Counts a refusal against its connection: past `slow_after` in the window it is answered
    /// late, at `close_after` the connection ends after it (unless its source is exempt).
    async fn escalate(&self, session: &mut Session) {
        // The digest is the session's; a handle of its own lets the session be answered below.
        let Some(ssl) = session.digest().and_then(|d| d.ssl_digest.clone()) else {
            return;
        };
        let Some(connection) = ssl.extension.get::<ConnectionIdentity>() else {
            return;
        };
        let abuse = &connection.abuse;
        let escalation = connection
            .refusals
            .refused(&abuse.limits, std::time::Instant::now());
        let source = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| canonical(a.ip()));
        if escalation == Escalation::None || source.is_some_and(|ip| abuse.limits.exempts(ip)) {
            return;
        }
        self.metrics.abuse(&abuse.listener, escalation);
        if let Some(audit) = &self.audit {
            let what = match escalation {
                Escalation::Close => Escalated::Closed,
                _ => Escalated::Delayed {
                    first: connection.refusals.first_slowed(),
                },
            };
            let offender = Offender {
                listener: &abuse.listener,
                source,
                identity: caller_name(connection.identity.as_deref(), None),
            };
            audit.escalated(offender, what);
        }
        match escalation {
            Escalation::Slow(delay) => tokio::time::sleep(crate::abuse::spread(delay)).await,
            Escalation::Close => {
                session.set_keepalive(None);
                connection.end();
            }
            Escalation::None => {}
        }
    }

    /// Records a refusal made once the request is under way, as the error that ends it;
    /// `fail_to_proxy` answers it (or, once a response has started, pingora cuts the
    /// connection).
    pub(super) fn refused_midway(&self, ctx: &mut RequestCtx, refusal: Refusal) -> Box<Error> {
        self.count_refusal(ctx.tenant(), &refusal);
        let error = Error::explain(ErrorType::HTTPStatus(refusal.status()), refusal.to_string());
        ctx.refusal = Some(refusal);
        error
    }

    /// A refusal of the request body, as the downstream's error: over HTTP/2 to an HTTP/2
    /// upstream pingora then stops at once, instead of waiting (up to the read timeout) for
    /// an answer the upstream will not give to a body that never ends.
    pub(super) fn refused_in_request_body(
        &self,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Box<Error> {
        self.refused_midway(ctx, refusal).into_down()
    }

    /// Writes the request's refusal: its JSON body, or its gRPC status to a gRPC caller.
    pub(super) async fn write_refusal(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let Some(refusal) = &ctx.refusal else {
            return Ok(());
        };
        if ctx.grpc {
            return super::grpc::write_refusal(session, ctx, refusal).await;
        }
        let body = refusal.body(ctx.request_id.as_str());
        // Without a case map: the names are written as given (lower case), and each insert
        // costs less.
        let mut header = ResponseHeader::build_no_case(refusal.status(), Some(8))?;
        header.insert_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))?;
        header.insert_header(CONTENT_LENGTH, HeaderValue::from(body.len()))?;
        header.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
        header.insert_header(CACHE_CONTROL, HeaderValue::from_static("no-store"))?;
        // Appended: a login answer sets two cookies.
        for (name, value) in refusal.headers() {
            header.append_header(name, value)?;
        }
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await
    }
}
