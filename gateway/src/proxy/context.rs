//! The state of one request as it moves through the proxy phases, and the outcome every
//! record of it states.

use std::sync::Arc;
use std::time::Instant;

use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_http::RequestHeader;
use portcullis_audit::{Decision, RateLimitOutcome};
use portcullis_policy::{Identity, Route};

use crate::admission::{caller_name, Admitted, Refusal, Target};
use crate::forwarding::{header_str, Client, IdentityHeaders};
use crate::inspect::BodyScan;
use crate::record::{Outcome, Summary};
use crate::snapshot::{RouteState, Snapshot};
use crate::traces::{incoming_trace_id, RequestTrace, TRACEPARENT};
use crate::upstream::Pool;

/// The id that names a request in every record and header: a random UUID as 32 lower-case
/// hex digits, kept inline (no allocation, no formatter).
#[derive(Clone, Copy)]
pub(crate) struct RequestId([u8; 32]);

impl RequestId {
    fn new() -> Self {
        let mut hex = [0; 32];
        uuid::Uuid::new_v4().simple().encode_lower(&mut hex);
        Self(hex)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Hex digits are ASCII: the conversion cannot fail.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one request has established so far. `admitted` is the proof admission gave; once
/// anything refuses the request, `refusal` says what and why.
pub(crate) struct RequestCtx {
    pub(super) request_id: RequestId,
    pub(super) started: Instant,
    /// Whether the request was counted in flight (so `logging` must count it out).
    pub(super) counted: bool,
    pub(super) identity: Option<Arc<Identity>>,
    /// The connection's identity headers to the upstream.
    pub(super) identity_headers: Option<Arc<IdentityHeaders>>,
    pub(super) tls_version: Option<&'static str>,
    pub(super) client: Option<Client>,
    pub(super) target: Option<Target>,
    pub(super) route: Option<Arc<Route>>,
    pub(super) admitted: Option<Admitted>,
    /// The generation the request was admitted under: its pools and strip list serve the
    /// rest of the request, whatever a reload stores meanwhile.
    pub(super) generation: Option<Arc<Snapshot>>,
    pub(super) refusal: Option<Refusal>,
    pub(super) request_body_bytes: u64,
    /// HTTP/2: the request body's idle watchdog, while the body is being read.
    pub(super) body_watch: Option<super::body_watch::BodyWatch>,
    /// The bodies' DLP scans, planned at admission and from the response header.
    pub(super) request_scan: Option<BodyScan>,
    pub(super) response_scan: Option<BodyScan>,
    /// The upstream address the request was sent to.
    pub(super) upstream: Option<SocketAddr>,
    /// Which of the route's fallback pools took the request (`None`: the route's own pool).
    pub(super) fallback: Option<usize>,
    /// A target of the route's own pool refused the connection: the retry goes to another
    /// target, else to the fallbacks (once).
    pub(super) retry_elsewhere: bool,
    /// A renewed session cookie to send with the response.
    pub(super) set_cookie: Option<String>,
    /// The request's slot under `fairness`, held until the request ends.
    pub(super) fair_slot: Option<crate::fairness::FairSlot>,
    /// When the connection reaches its listener's `max_connection_age`.
    pub(super) connection_deadline: Option<std::time::Instant>,
    /// The upstream answered 101: the exchange is now frames both ways (WebSocket).
    pub(super) upgraded: bool,
    /// The request came from the local workload through an egress listener.
    pub(super) egress: bool,
    /// A gRPC call (HTTP/2, `application/grpc…`): refused with gRPC statuses, its status and
    /// deadline read. Decided once, at the head.
    pub(super) grpc: bool,
    /// A gRPC call's deadline (`grpc-timeout`), which caps the wait for the upstream.
    pub(super) grpc_deadline: Option<std::time::Instant>,
    /// A gRPC call's status as the upstream sent it (`grpc-status`, in the trailers or a
    /// headers-only answer).
    pub(super) grpc_status: Option<u8>,
    /// The upgraded exchange was cut at the connection's age limit.
    pub(super) cut_at_max_age: bool,
    /// The request's trace, when tracing is on (boxed: with tracing off the context stays
    /// as small as before).
    pub(super) trace: Option<Box<RequestTrace>>,
}

impl RequestCtx {
    pub(super) fn new() -> Self {
        Self {
            request_id: RequestId::new(),
            started: Instant::now(),
            counted: false,
            identity: None,
            identity_headers: None,
            tls_version: None,
            client: None,
            target: None,
            route: None,
            admitted: None,
            generation: None,
            refusal: None,
            request_body_bytes: 0,
            body_watch: None,
            request_scan: None,
            response_scan: None,
            upstream: None,
            fallback: None,
            retry_elsewhere: false,
            set_cookie: None,
            fair_slot: None,
            connection_deadline: None,
            upgraded: false,
            egress: false,
            grpc: false,
            grpc_deadline: None,
            grpc_status: None,
            cut_at_max_age: false,
            trace: None,
        }
    }

    /// The admitted route's state in the request's generation.
    pub(super) fn route_state(&self) -> Option<&RouteState> {
        let index = self.admitted.as_ref()?.route_index;
        self.generation.as_ref()?.routes.get(index)
    }

    /// The pool the request went to, in the request's generation: the admitted route's, or
    /// the fallback that took it.
    pub(super) fn pool(&self) -> Option<&Arc<Pool>> {
        let state = self.route_state()?;
        match self.fallback {
            None => state.pool.as_ref(),
            Some(i) => state.fallbacks.get(i).map(|f| &f.pool),
        }
    }

    pub(super) fn tenant(&self) -> &str {
        self.route.as_ref().map_or("-", |r| r.tenant.as_str())
    }

    /// The decision as every record states it.
    pub(super) fn outcome(&self) -> Outcome<'_> {
        let limited = |rate_limited| {
            if rate_limited {
                RateLimitOutcome::Passed
            } else {
                RateLimitOutcome::None
            }
        };
        match (&self.refusal, &self.admitted) {
            (Some(refusal), admitted) => Outcome {
                label: refusal.label(),
                decision: refusal.decision(),
                rule: refusal
                    .rule()
                    .or(admitted.as_ref().map(|a| a.permit.rule.as_str())),
                rate_limit: match (refusal, admitted) {
                    (Refusal::RateLimited(_), _) => RateLimitOutcome::Limited,
                    (_, Some(a)) => limited(a.rate_limited),
                    (_, None) => RateLimitOutcome::None,
                },
            },
            (None, Some(admitted)) => Outcome {
                label: "allow",
                decision: Decision::Allow,
                rule: Some(admitted.permit.rule.as_str()),
                rate_limit: limited(admitted.rate_limited),
            },
            (None, None) => Outcome {
                label: "none",
                decision: Decision::Error,
                rule: None,
                rate_limit: RateLimitOutcome::None,
            },
        }
    }

    pub(super) fn summary<'a>(&'a self, req: &'a RequestHeader) -> Summary<'a> {
        let token = self.admitted.as_ref().and_then(|a| a.token.as_deref());
        Summary {
            request_id: self.request_id.as_str(),
            tenant: self.route.as_ref().map(|r| r.tenant.as_str()),
            route: self.route.as_ref().map(|r| r.id.as_str()),
            caller: caller_name(self.identity.as_deref(), token),
            token,
            client_ip: self.client.as_ref().map(|c| c.ip),
            tls_version: self.tls_version,
            method: req.method.as_str(),
            host: self.target.as_ref().and_then(|t| t.host.as_deref()),
            path: self
                .target
                .as_ref()
                .map_or_else(|| req.uri.path(), |t| t.path.as_str()),
            query: req.uri.query(),
            http_version: req.version,
            trace_id: match &self.trace {
                Some(trace) => Some(trace.trace_id()),
                None => header_str(req, TRACEPARENT).and_then(incoming_trace_id),
            },
            admitted: self.admitted.is_some(),
            outcome: self.outcome(),
            upstream: self.upstream.as_ref(),
            failover: match self.fallback {
                Some(_) => self.pool().map(|p| p.name.as_str()),
                None => None,
            },
            egress: self.egress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_follows_the_refusal_else_the_admission() {
        let mut ctx = RequestCtx::new();
        let o = ctx.outcome();
        assert_eq!(
            (o.label, o.decision, o.rule),
            ("none", Decision::Error, None)
        );
        ctx.refusal = Some(Refusal::NoRoute);
        let o = ctx.outcome();
        assert_eq!(
            (o.label, o.decision, o.rule),
            ("no_route", Decision::Deny, None)
        );
        assert_eq!(o.rate_limit, RateLimitOutcome::None);
        ctx.refusal = Some(Refusal::RateLimited(crate::limits::LimitExceeded {
            limit: "tenant",
            retry_after: std::time::Duration::from_secs(1),
            policy: None,
        }));
        assert_eq!(ctx.outcome().rate_limit, RateLimitOutcome::Limited);
        let id = ctx.request_id.as_str();
        assert!(
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(id, RequestCtx::new().request_id.as_str());
    }
}
