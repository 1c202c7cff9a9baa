//! Traces (the `tracing` section): a server span per request, built with the OpenTelemetry
//! API in the proxy phases, with child spans for what costs time — the TLS handshake (on a
//! connection's first request), admission, the audit wait (fail-closed), the upstream exchange
//! and its connect — and the DLP scan time as attributes. Finished spans are exported by
//! `export`, off the request path.
//!
//! Attributes: tenant, route, decision, rule, status, method, request id. Never a path or
//! query string, header value, body, token or certificate: spans leave the machine.
//!
//! A `traceparent` is continued only from the callers `trust_traceparent` names; anyone
//! else's starts a new trace, with the incoming context kept as a link (attribute
//! `portcullis.traceparent: untrusted`), and is replaced upstream by the gateway's own.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceState, Tracer,
    TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use pingora_http::RequestHeader;
use portcullis_policy::{SpiffeId, TraceparentTrust, TracingSettings};

use crate::forwarding::header_str;
use crate::metrics::Metrics;

mod export;
mod w3c;

pub(crate) use w3c::TraceHex;
use w3c::{acceptable_tracestate, format_traceparent, parse_traceparent};

/// The W3C trace context headers.
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The process's tracer: built at start from the `tracing` section (a change takes a restart).
pub(crate) struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    trust: TraceparentTrust,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracing")
    }
}

/// What a request's span starts from.
pub(crate) struct TraceStart<'a> {
    pub req: &'a RequestHeader,
    /// The resolved client address (trusted proxies' X-Forwarded-For, PROXY header).
    pub client: Option<IpAddr>,
    pub spiffe_id: Option<&'a SpiffeId>,
    /// When the request began (its context was made).
    pub started: Instant,
}

impl Tracing {
    /// Starts the exporter; an endpoint the OTLP client refuses is an error at start.
    pub(crate) fn start(settings: &TracingSettings, metrics: &Metrics) -> Result<Self, String> {
        let resource = Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .build();
        let queue = export::SpanQueue::start(settings, resource.clone(), metrics.traces.clone())?;
        let ratio = Sampler::TraceIdRatioBased(settings.ratio);
        let sampler = if settings.parent_based {
            Sampler::ParentBased(Box::new(ratio))
        } else {
            ratio
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("portcullis");
        Ok(Self {
            provider,
            tracer,
            trust: settings.trust.clone(),
        })
    }

    /// Exports what is queued and stops the exporter (at exit), within a bound.
    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(3)) {
            tracing::debug!(error = %e, "trace exporter shutdown");
        }
    }

    /// The request's span, continuing a trusted caller's trace.
    pub(crate) fn begin(&self, start: &TraceStart<'_>) -> RequestTrace {
        let now = SystemTime::now();
        let began = now.checked_sub(start.started.elapsed()).unwrap_or(now);
        let incoming = header_str(start.req, TRACEPARENT).and_then(parse_traceparent);
        let trusted = incoming.is_some()
            && !self.trust.is_empty()
            && self.trust.trusts(start.client, start.spiffe_id);
        let mut builder = self
            .tracer
            .span_builder(span_name(&start.req.method))
            .with_kind(SpanKind::Server)
            .with_start_time(began);
        let mut tracestate = None;
        let parent = match incoming {
            Some(p) if trusted => {
                let state = start
                    .req
                    .headers
                    .get(TRACESTATE)
                    .filter(|v| acceptable_tracestate(v.as_bytes()));
                let trace_state = state
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<TraceState>().ok())
                    .unwrap_or_default();
                tracestate = state.cloned();
                Context::new().with_remote_span_context(SpanContext::new(
                    p.trace_id,
                    p.span_id,
                    p.flags,
                    true,
                    trace_state,
                ))
            }
            Some(p) => {
                // Kept as a link, never as the parent: an outsider cannot join our traces.
                builder = builder.with_links(vec![Link::new(
                    SpanContext::new(p.trace_id, p.span_id, p.flags, true, TraceState::NONE),
                    vec![KeyValue::new("portcullis.traceparent", "untrusted")],
                    0,
                )]);
                Context::new()
            }
            None => Context::new(),
        };
        let span = self.tracer.build_with_context(builder, &parent);
        let context = span.span_context().clone();
        let recording = span.is_recording();
        // Sampled out, the span is dropped here (it records nothing): no context to allocate,
        // no tracer to hold.
        let cx = if recording {
            Context::new().with_span(span)
        } else {
            Context::new()
        };
        if recording {
            let origin = match incoming {
                Some(_) if trusted => Some("continued"),
                Some(_) => Some("untrusted"),
                None => None,
            };
            if let Some(origin) = origin {
                cx.span()
                    .set_attribute(KeyValue::new("portcullis.traceparent", origin));
            }
        }
        RequestTrace {
            tracer: recording.then(|| self.tracer.clone()),
            trace_id: TraceHex::of(context.trace_id()),
            sampled: context.trace_flags().is_sampled(),
            context,
            cx,
            recording,
            began,
            tracestate,
            upstream: None,
            connect_started: None,
            dlp: [Duration::ZERO; 2],
        }
    }
}

/// A request's trace: its span, and its open upstream span.
pub(crate) struct RequestTrace {
    /// Only while recording: child spans are made with it.
    tracer: Option<SdkTracer>,
    /// The request span's context (empty when not recording).
    cx: Context,
    context: SpanContext,
    trace_id: TraceHex,
    sampled: bool,
    /// Sampled (and so exported): only then are child spans and attributes made.
    recording: bool,
    began: SystemTime,
    /// A trusted parent's `tracestate`, passed upstream.
    tracestate: Option<http::HeaderValue>,
    upstream: Option<Context>,
    connect_started: Option<SystemTime>,
    /// Time spent in the DLP scanners: request body, response body.
    dlp: [Duration; 2],
}

/// What the request amounted to, for its span's attributes.
pub(crate) struct TraceEnd<'a> {
    pub request_id: &'a str,
    pub tenant: Option<&'a str>,
    pub route: Option<&'a str>,
    pub decision: &'a str,
    pub rule: Option<&'a str>,
    pub status: u16,
    pub http_version: http::Version,
    pub egress: bool,
    /// The DLP findings as the access line states them (counts only), `-` for none.
    pub dlp: &'a str,
}

impl RequestTrace {
    pub(crate) fn trace_id(&self) -> TraceHex {
        self.trace_id
    }

    pub(crate) fn recording(&self) -> bool {
        self.recording
    }

    /// A child span of the request from `start` to `end`.
    fn child(
        &self,
        parent: &Context,
        name: &'static str,
        kind: SpanKind,
        start: SystemTime,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let Some(tracer) = &self.tracer else {
            return Context::new();
        };
        let builder = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes);
        let span = tracer.build_with_context(builder, parent);
        Context::new().with_span(span)
    }

    fn closed_child(
        &self,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
    ) {
        let cx = self.child(&self.cx, name, SpanKind::Internal, start, attributes);
        cx.span().end_with_timestamp(end);
    }

    /// The connection's TLS handshake, `ago` before now and `took` long (its first request).
    pub(crate) fn handshake(&self, ago: Duration, took: Duration, tls_version: &'static str) {
        if !self.recording {
            return;
        }
        let now = SystemTime::now();
        let end = now.checked_sub(ago).unwrap_or(now);
        let start = end.checked_sub(took).unwrap_or(end);
        self.closed_child(
            "tls.handshake",
            start,
            end,
            vec![KeyValue::new("tls.protocol.version", tls_version)],
        );
    }

    /// Admission's decision (routing, credentials, rules, limits), from the request's start.
    pub(crate) fn admitted(&self, decision: &'static str) {
        if self.recording {
            self.closed_child(
                "admission",
                self.began,
                SystemTime::now(),
                vec![KeyValue::new("portcullis.decision", decision)],
            );
        }
    }

    /// The wait for the `admitted` audit record to be durable (fail-closed), from `start`.
    pub(crate) fn audit_waited(&self, start: Option<SystemTime>, durable: bool) {
        if let (true, Some(start)) = (self.recording, start) {
            self.closed_child(
                "audit.wait",
                start,
                SystemTime::now(),
                vec![KeyValue::new("portcullis.audit.durable", durable)],
            );
        }
    }

    /// Now, if the span is recording (a phase's start).
    pub(crate) fn mark(&self) -> Option<SystemTime> {
        self.recording.then(SystemTime::now)
    }

    /// The upstream exchange begins (a peer was picked); a retry ends the previous attempt.
    pub(crate) fn upstream_begin(&mut self, pool: &str) {
        if !self.recording {
            return;
        }
        if let Some(previous) = self.upstream.take() {
            previous.span().set_status(Status::error("retried"));
            previous.span().end();
        }
        let now = SystemTime::now();
        let cx = self.child(
            &self.cx,
            "upstream",
            SpanKind::Client,
            now,
            vec![KeyValue::new("portcullis.upstream", pool.to_owned())],
        );
        self.upstream = Some(cx);
        self.connect_started = Some(now);
    }

    /// The upstream connection is ready: new (its connect is a span) or reused.
    pub(crate) fn upstream_connected(&mut self, reused: bool) {
        let (Some(upstream), Some(start)) = (&self.upstream, self.connect_started.take()) else {
            return;
        };
        upstream
            .span()
            .set_attribute(KeyValue::new("portcullis.upstream.reused", reused));
        if !reused {
            let connect = self.child(
                upstream,
                "upstream.connect",
                SpanKind::Internal,
                start,
                Vec::new(),
            );
            connect.span().end();
        }
    }

    /// The upstream's response head arrived.
    pub(crate) fn upstream_responded(&self, status: u16) {
        if let Some(upstream) = &self.upstream {
            let span = upstream.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            span.add_event("response_head", Vec::new());
        }
    }

    /// Time spent scanning a body chunk (`response`: the response body).
    pub(crate) fn dlp_scanned(&mut self, response: bool, took: Duration) {
        self.dlp[usize::from(response)] += took;
    }

    /// The upstream request's `traceparent`: our trace, our upstream span (else the request's
    /// span, when not sampled) as the parent.
    pub(crate) fn upstream_traceparent(&self) -> http::HeaderValue {
        let span_id = self.upstream.as_ref().map_or(self.context.span_id(), |u| {
            u.span().span_context().span_id()
        });
        let text = format_traceparent(self.context.trace_id(), span_id, self.sampled);
        // 55 bytes of hex digits and dashes: always a valid header value.
        http::HeaderValue::from_bytes(&text).unwrap_or(http::HeaderValue::from_static(""))
    }

    /// A trusted caller's `tracestate`, if any (else none goes upstream).
    pub(crate) fn tracestate(&self) -> Option<&http::HeaderValue> {
        self.tracestate.as_ref()
    }

    /// Ends the request's spans with what it amounted to.
    pub(crate) fn finish(&mut self, end: &TraceEnd<'_>) {
        if !self.recording {
            return;
        }
        if let Some(upstream) = self.upstream.take() {
            upstream.span().end();
        }
        let span = self.cx.span();
        let mut attributes = vec![
            KeyValue::new("portcullis.request_id", end.request_id.to_owned()),
            KeyValue::new("portcullis.decision", end.decision.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(end.status)),
            KeyValue::new(
                "network.protocol.version",
                protocol_version(end.http_version),
            ),
        ];
        for (key, value) in [
            ("portcullis.tenant", end.tenant),
            ("portcullis.route", end.route),
            ("portcullis.rule", end.rule),
        ] {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value.to_owned()));
            }
        }
        if end.egress {
            attributes.push(KeyValue::new("portcullis.direction", "egress"));
        }
        if end.decision != "allow" {
            attributes.push(KeyValue::new("error.type", end.decision.to_owned()));
        }
        if end.dlp != "-" {
            attributes.push(KeyValue::new("portcullis.dlp.findings", end.dlp.to_owned()));
        }
        for (key, took) in [
            ("portcullis.dlp.request_scan_us", self.dlp[0]),
            ("portcullis.dlp.response_scan_us", self.dlp[1]),
        ] {
            if !took.is_zero() {
                let micros = i64::try_from(took.as_micros()).unwrap_or(i64::MAX);
                attributes.push(KeyValue::new(key, micros));
            }
        }
        span.set_attributes(attributes);
        if end.status >= 500 {
            span.set_status(Status::error(end.decision.to_owned()));
        }
        span.end();
    }
}

fn span_name(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "HTTP",
    }
}

fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "other",
    }
}

/// The trace id of an incoming `traceparent` as the records carry it when tracing is off:
/// read leniently (any case), as before tracing existed.
pub(crate) fn incoming_trace_id(traceparent: &str) -> Option<TraceHex> {
    let mut parts = traceparent.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    TraceHex::from_checked(id.as_bytes()).filter(|h| h.as_str().bytes().any(|b| b != b'0'))
}
