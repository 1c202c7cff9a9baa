//! The end of a request: its access line (sampled for refusals the caller brought on itself),
//! its audit record and its metrics, in that order (a counter never runs ahead of the log).

use pingora_core::{Error, ErrorType};
use pingora_proxy::Session;

use super::{grpc, Gateway, RequestCtx};
use crate::record::{Exchange, Findings};
use crate::traces::TraceEnd;

impl Gateway {
    /// The request is over: its access line, audit record and metrics (`logging`).
    pub(super) fn record(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if !ctx.counted {
            return;
        }
        self.metrics.request_finished();
        if ctx.upgraded {
            let reason = match e {
                _ if ctx.cut_at_max_age => "max_duration",
                Some(e)
                    if matches!(
                        e.etype(),
                        ErrorType::ReadTimedout | ErrorType::WriteTimedout
                    ) =>
                {
                    "idle"
                }
                Some(_) => "error",
                None => "closed",
            };
            self.metrics.upgrade_ended(ctx.tenant(), reason);
        }
        let exchange = Exchange {
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            duration: ctx.started.elapsed(),
            grpc_status: ctx.grpc_status.or_else(|| {
                ctx.refusal
                    .as_ref()
                    .filter(|_| ctx.grpc)
                    .map(|r| grpc::code(r.status()))
            }),
        };
        let findings = Findings::gather(ctx.request_scan.as_ref(), ctx.response_scan.as_ref());
        if let Some(mut trace) = ctx.trace.take() {
            let outcome = ctx.outcome();
            trace.finish(&TraceEnd {
                request_id: ctx.request_id.as_str(),
                tenant: ctx.route.as_ref().map(|r| r.tenant.as_str()),
                route: ctx.route.as_ref().map(|r| r.id.as_str()),
                decision: outcome.label,
                rule: outcome.rule,
                status: exchange.status,
                http_version: session.req_header().version,
                egress: ctx.egress,
                dlp: &findings.rendered,
            });
            ctx.trace = Some(trace);
        }
        let summary = ctx.summary(session.req_header());
        let written = match &ctx.refusal {
            Some(refusal) if refusal.counts_against_caller() => {
                self.refusal_lines
                    .admit(ctx.tenant(), refusal.code(), crate::authn::unix_now())
            }
            _ => Some(0),
        };
        if let Some(suppressed) = written {
            let mut line = summary.access_line(&exchange, &findings.rendered);
            line.suppressed = suppressed;
            crate::access_log::write(&line);
        }
        // Counted once the line is queued: a counter never runs ahead of the log.
        findings.count(&self.metrics, ctx.tenant());
        if let Some(audit) = &self.audit {
            audit.completed(&summary, &exchange, findings.list);
        }
        // Counted after the log line is written, so a counter never runs ahead of the log.
        let series = ctx.route_state().map(|r| &r.series);
        self.metrics
            .request(&summary.metrics_outcome(&exchange), series);
    }
}
