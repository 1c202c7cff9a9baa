//! The records of one request — the access line, the audit record and the request metrics —
//! all built from one [`Summary`], so the three name the same caller, decision and rule.
//! Identity, decisions and counts only: never bodies, header values or matched data.

use std::net::IpAddr;
use std::time::Duration;

use pingora_core::protocols::l4::socket::SocketAddr;
use portcullis_audit::{
    Decision, DlpFinding, PersonFacts, RateLimitOutcome, RequestEvent, RequestStage,
};
use portcullis_policy::TokenIdentity;

use crate::access_log::AccessLine;
use crate::inspect::BodyScan;
use crate::metrics::{Metrics, RequestOutcome};
use crate::traces::TraceHex;

/// What a request established, in the terms every record uses.
#[derive(Debug)]
pub(crate) struct Summary<'a> {
    pub request_id: &'a str,
    pub tenant: Option<&'a str>,
    pub route: Option<&'a str>,
    /// The caller: the bearer token's subject, else SPIFFE ID, else certificate subject.
    pub caller: Option<&'a str>,
    /// The verified bearer token, on a route that reads them.
    pub token: Option<&'a TokenIdentity>,
    pub client_ip: Option<IpAddr>,
    pub tls_version: Option<&'static str>,
    pub method: &'a str,
    pub host: Option<&'a str>,
    /// The normalised path, else the path as sent (when it could not be normalised).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub http_version: http::Version,
    /// The request's trace id: the gateway's trace when tracing is on, else the incoming
    /// `traceparent`'s.
    pub trace_id: Option<TraceHex>,
    /// Whether admission let the request through (false: refused before admission, or never
    /// decided).
    pub admitted: bool,
    pub outcome: Outcome<'a>,
    pub upstream: Option<&'a SocketAddr>,
    /// The fallback upstream that took the request, if the route's own had no healthy target.
    pub failover: Option<&'a str>,
    /// Sent by the local workload through an egress listener (outbound).
    pub egress: bool,
}

/// The decision a request got.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome<'a> {
    /// `allow`, or the refusal's label; `none` if the request never reached a decision.
    pub label: &'static str,
    pub decision: Decision,
    /// The access rule that allowed or denied it.
    pub rule: Option<&'a str>,
    pub rate_limit: RateLimitOutcome,
}

/// What the request's exchange amounted to, once it is over.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Exchange {
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    /// A gRPC call's status: the upstream's, or the one a refusal answered with.
    pub grpc_status: Option<u8>,
}

/// The `grpc-status` in a header block, if it is a number.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<u8> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The DLP findings of a request's bodies, counted in the metrics once (after the access
/// line is written: a counter never runs ahead of the log).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// `direction:detector:action:count` and `direction:unscanned:reason` items, or `-`.
    pub rendered: String,
    pub list: Vec<DlpFinding>,
    /// What the metrics count: (direction, detector or `None` for unscanned, action or
    /// reason, count).
    counts: Vec<(&'static str, Option<String>, String, u64)>,
}

impl Findings {
    /// Gathers the findings of both bodies. Counts only.
    pub(crate) fn gather(request: Option<&BodyScan>, response: Option<&BodyScan>) -> Self {
        let mut items = Vec::new();
        let mut list = Vec::new();
        let mut counts = Vec::new();
        for (direction, scan) in [("request", request), ("response", response)] {
            let Some(scan) = scan else { continue };
            // What passed unscanned is recorded like a finding: `unscanned:<direction>:<reason>`,
            // action `pass`.
            for reason in scan.unscanned() {
                let reason = reason.as_str();
                counts.push((direction, None, reason.to_owned(), 1));
                items.push(format!("{direction}:unscanned:{reason}"));
                list.push(DlpFinding {
                    detector: format!("unscanned:{direction}:{reason}"),
                    count: 1,
                    action: "pass".to_owned(),
                });
            }
            for f in scan.findings().into_iter().flat_map(|f| f.iter()) {
                let (detector, action) = (f.detector.to_string(), f.action.to_string());
                counts.push((direction, Some(detector.clone()), action.clone(), f.count));
                items.push(format!("{direction}:{detector}:{action}:{}", f.count));
                list.push(DlpFinding {
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
        Self {
            rendered,
            list,
            counts,
        }
    }

    /// Counts the findings in the metrics.
    pub(crate) fn count(&self, metrics: &Metrics, tenant: &str) {
        for (direction, detector, action, count) in &self.counts {
            match detector {
                Some(detector) => metrics.dlp_finding(tenant, direction, detector, action, *count),
                None => metrics.dlp_unscanned(tenant, direction, action),
            }
        }
    }
}

impl Summary<'_> {
    pub(crate) fn access_line<'a>(&'a self, exchange: &Exchange, dlp: &'a str) -> AccessLine<'a> {
        let (path, path_bytes) = crate::access_log::bounded_path(self.path);
        AccessLine {
            duration_ms: exchange.duration.as_secs_f64() * 1000.0,
            request_id: self.request_id,
            trace_id: self.trace_id.as_ref().map(TraceHex::as_str),
            tenant: self.tenant.unwrap_or("-"),
            route: self.route.unwrap_or("-"),
            caller: self.caller.unwrap_or("-"),
            client_ip: self.client_ip,
            tls_version: self.tls_version.unwrap_or("none"),
            method: self.method,
            path,
            path_bytes,
            version: http_version(self.http_version),
            status: exchange.status,
            grpc_status: exchange.grpc_status,
            direction: self.egress.then_some("egress"),
            failover: self.failover,
            decision: self.outcome.label,
            rule: self.outcome.rule.unwrap_or("-"),
            dlp,
            suppressed: 0,
        }
    }

    /// The request's audit record at `stage`; `exchange` is `None` for the `admitted` record
    /// (nothing has been exchanged yet).
    pub(crate) fn audit_event(
        &self,
        stage: RequestStage,
        exchange: Option<&Exchange>,
        include_query: bool,
        dlp: Vec<DlpFinding>,
    ) -> RequestEvent {
        let mut path = self.path.to_owned();
        if let (true, Some(query)) = (include_query, self.query) {
            path.push('?');
            path.push_str(query);
        }
        let exchange = exchange.copied().unwrap_or_default();
        RequestEvent {
            request_id: self.request_id.to_owned(),
            stage,
            trace_id: self.trace_id.map(|t| t.as_str().to_owned()),
            tenant: self.tenant.map(str::to_owned),
            route: self.route.map(str::to_owned),
            identity: self.caller.map(str::to_owned),
            person: self.token.map(|t| PersonFacts {
                provider: t.provider.clone(),
                issuer: t.issuer.clone(),
                subject: t.subject.clone(),
                amr: t.amr.clone(),
                acr: t.acr.clone(),
                auth_time: t.auth_time,
            }),
            source: self.client_ip.map(source_text).unwrap_or_default(),
            method: self.method.to_owned(),
            host: self.host.unwrap_or_default().to_owned(),
            path,
            path_truncated: None,
            status: exchange.status,
            bytes_in: exchange.bytes_in,
            bytes_out: exchange.bytes_out,
            duration_ms: u64::try_from(exchange.duration.as_millis()).unwrap_or(u64::MAX),
            decision: self.outcome.decision,
            rule: self.outcome.rule.map(str::to_owned),
            rate_limit: self.outcome.rate_limit,
            dlp,
            tls_version: self.tls_version.map(str::to_owned),
            upstream: self.upstream.map(ToString::to_string),
            reason: (self.outcome.label != "allow").then(|| self.outcome.label.to_owned()),
            direction: self.egress.then(|| "egress".to_owned()),
            failover: self.failover.map(str::to_owned),
        }
    }

    pub(crate) fn metrics_outcome(&self, exchange: &Exchange) -> RequestOutcome<'_> {
        RequestOutcome {
            tenant: self.tenant.unwrap_or("-"),
            route: self.route.unwrap_or("-"),
            status: exchange.status,
            decision: self.outcome.label,
            duration: exchange.duration,
        }
    }
}

/// The client address as audit records name it. IPv4, nearly every client, is written digit by
/// digit: `Ipv4Addr`'s `Display` costs four passes through the formatter, twice a request.
fn source_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
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

#[cfg(test)]
mod tests;
