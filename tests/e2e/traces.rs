//! Traces through the real gateway to OTLP receivers the tests run on loopback (OTLP/HTTP with
//! protobuf bodies read off a plain socket, and OTLP/gRPC served by tonic): the request span
//! continues a trusted caller's trace and not an untrusted one's, child spans hang off the
//! request span, attributes name tenant, route, decision and status and never the query
//! string or a credential, the upstream sees the gateway's span as its parent, and the trace
//! id is in the access line and the audit record. With sampling ratio 0 nothing is exported,
//! and the access line still carries the (unsampled) trace id.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::harness::*;

/// What a receiver got: every span, with its resource's `service.name`.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for rs in request.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push((service.clone(), span));
                }
            }
        }
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (at most 20 s) until `done` holds for the spans received.
    fn wait(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Span> = self.spans().into_iter().map(|(_, s)| s).collect();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not received; got {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An OTLP/HTTP receiver: HTTP/1.1 `POST /v1/traces`, protobuf body, answered with an empty
/// `ExportTraceServiceResponse`. Serves at most 200 connections of at most 1000 requests.
fn http_receiver() -> (u16, Received) {
    http_receiver_over(None)
}

/// [`http_receiver`] over TLS with `tls` when given (a failed handshake is dropped).
fn http_receiver_over(tls: Option<Arc<rustls::ServerConfig>>) -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Received::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let sink = sink.clone();
            let tls = tls.clone();
            std::thread::spawn(move || match tls {
                None => serve_otlp_http(stream, &sink),
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    serve_otlp_http(rustls::StreamOwned::new(conn, stream), &sink);
                }
            });
        }
    });
    (port, received)
}

fn serve_otlp_http(stream: impl Read + Write, sink: &Received) {
    let mut reader = BufReader::new(stream);
    for _ in 0..1000 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(
            line.starts_with("POST /v1/traces "),
            "OTLP/HTTP request line: {line:?}"
        );
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_owned(),
                "transfer-encoding" => panic!("chunked OTLP body"),
                _ => {}
            }
        }
        assert_eq!(content_type, "application/x-protobuf");
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        sink.add(ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
        let answer = ExportTraceServiceResponse::default().encode_to_vec();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        let writer = reader.get_mut();
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(&answer).is_err()
            || writer.flush().is_err()
        {
            return;
        }
    }
}

/// An OTLP/gRPC receiver (tonic's `TraceService`), for as long as the runtime is held.
struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn grpc_receiver() -> (u16, Received, tokio::runtime::Runtime) {
    grpc_receiver_over(None)
}

/// [`grpc_receiver`] over TLS: its certificate and key (PEM), and the CA whose client
/// certificates it requires.
fn grpc_receiver_over(
    tls: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
) -> (u16, Received, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Received::default();
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key, ca)) = tls {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(ca));
        server = server.tls_config(config).unwrap();
    }
    rt.spawn(
        server
            .add_service(TraceServiceServer::new(GrpcReceiver(received.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (port, received, rt)
}

fn config(echo: u16, tracing: &str) -> String {
    format!(
        r#"
listeners:
  - name: public
    address: 127.0.0.1:{{port}}
    tls: {{ certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }}
metrics:
  address: 127.0.0.1:{{metrics}}
shutdown:
  grace_period: 2s
audit:
  directory: audit
  signing_key: audit.key
  node: gw-traces
  mode: fail-closed
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
tenants:
  - name: acme
    routes:
      - name: api
        path_prefix: /api
        upstream: echo
        access:
          - id: anyone
      - name: admin
        path_prefix: /admin
        upstream: echo
        access:
          - id: frontend-only
            spiffe_id: ["spiffe://test.portcullis.local/ns/app/sa/frontend"]
{tracing}"#
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|a| {
            let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (a.key.clone(), value)
        })
        .collect()
}

/// The `traceparent` the echo upstream received: (trace id, parent span id, flags).
fn upstream_traceparent(resp: &Response) -> (String, String, String) {
    let doc = resp.json();
    let values = doc["headers"]["traceparent"].as_array().unwrap();
    assert_eq!(values.len(), 1, "one traceparent upstream: {values:?}");
    let parts: Vec<String> = values[0]
        .as_str()
        .unwrap()
        .split('-')
        .map(str::to_owned)
        .collect();
    assert_eq!((parts.len(), parts[0].as_str()), (4, "00"), "{parts:?}");
    (parts[1].clone(), parts[2].clone(), parts[3].clone())
}

fn access_line(gw: &Gateway, request_id: &str) -> serde_json::Value {
    let needle = format!("\"request.id\":\"{request_id}\"");
    let log = gw.wait_for_line(|l| l.contains(&needle) && l.contains("\"target\":\"access\""));
    let line = log.lines().find(|l| l.contains(&needle)).unwrap();
    serde_json::from_str(line).unwrap()
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const OUTSIDER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const OUTSIDER_SPAN: &str = "b7ad6b7169203331";

#[test]
fn spans_reach_an_otlp_http_receiver_continuing_only_trusted_callers() {
    let (otlp, received) = http_receiver();
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "traces");
    let tracing = format!(
        r#"tracing:
  service_name: e2e-gateway
  otlp: {{ endpoint: "http://127.0.0.1:{otlp}/v1/traces", protocol: http, timeout: 2s }}
  sampling: {{ ratio: 1.0 }}
  trust_traceparent:
    spiffe_ids: ["spiffe://test.portcullis.local/ns/app/sa/frontend"]
"#
    );
    let mut gw = Gateway::start(d, &config(echo.port, &tracing));

    // A trusted caller (frontend's SPIFFE ID) on a new connection, with its own trace.
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let trusted = conn
        .request(
            "GET",
            "/api/orders?card=4111111111111111&secret=hunter2",
            &[
                ("traceparent", &caller),
                ("tracestate", "vendor=opaque-value"),
                ("authorization", "Bearer sekrit-token-value"),
            ],
        )
        .unwrap();
    assert_eq!(trusted.status, 200);
    let trusted_id = trusted.header("x-request-id").unwrap().to_owned();
    let (up_trace, up_parent, up_flags) = upstream_traceparent(&trusted);
    assert_eq!(
        up_trace, CALLER_TRACE,
        "the caller's trace goes on upstream"
    );
    assert_ne!(
        up_parent, CALLER_SPAN,
        "with the gateway's span as the parent"
    );
    assert_eq!(up_flags, "01");
    let doc = trusted.json();
    assert_eq!(
        doc["headers"]["tracestate"][0], "vendor=opaque-value",
        "a trusted caller's tracestate is passed on"
    );

    // An untrusted caller (other's SPIFFE ID, same source address) with a forged context.
    let outsider = format!("00-{OUTSIDER_TRACE}-{OUTSIDER_SPAN}-01");
    let mut conn = pki.client(Some("other")).connect(gw.port).unwrap();
    let untrusted = conn
        .request(
            "GET",
            "/api/x",
            &[("traceparent", &outsider), ("tracestate", "forged=1")],
        )
        .unwrap();
    assert_eq!(untrusted.status, 200);
    let untrusted_id = untrusted.header("x-request-id").unwrap().to_owned();
    let (new_trace, new_parent, _) = upstream_traceparent(&untrusted);
    assert_ne!(
        new_trace, OUTSIDER_TRACE,
        "an outsider's trace is not continued"
    );
    assert_ne!(new_parent, OUTSIDER_SPAN);
    assert!(
        untrusted.json()["headers"].get("tracestate").is_none(),
        "an outsider's tracestate is not passed on"
    );
    // The same outsider over HTTP/2, sending the forged header twice: the upstream sees one
    // traceparent, the gateway's.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg("--cert")
        .arg(pki.path("other.pem"))
        .arg("--key")
        .arg(pki.path("other.key"))
        .args(["-H", &format!("traceparent: {outsider}")])
        .args([
            "-H",
            &format!("traceparent: 00-{OUTSIDER_TRACE}-{CALLER_SPAN}-01"),
        ])
        .args(["-H", "tracestate: forged=2"])
        .arg(format!("https://localhost:{}/api/h2", gw.port))
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let sent = doc["headers"]["traceparent"].as_array().unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        !sent[0].as_str().unwrap().contains(OUTSIDER_TRACE),
        "{sent:?}"
    );
    assert!(doc["headers"].get("tracestate").is_none(), "{doc}");

    // Refused by the access rules: a span with the decision, no upstream.
    let refused = conn.request("GET", "/admin/x", &[]).unwrap();
    assert_eq!(refused.status, 403);
    let refused_id = refused.header("x-request-id").unwrap().to_owned();

    // The access lines carry the trace ids.
    assert_eq!(access_line(&gw, &trusted_id)["trace_id"], CALLER_TRACE);
    assert_eq!(
        access_line(&gw, &untrusted_id)["trace_id"],
        new_trace.as_str()
    );
    let refused_trace = access_line(&gw, &refused_id)["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(refused_trace.len(), 32);

    let by_request = |spans: &[Span], id: &str| {
        spans
            .iter()
            .find(|s| {
                attributes(s)
                    .get("portcullis.request_id")
                    .map(String::as_str)
                    == Some(id)
            })
            .cloned()
    };
    let spans = received.wait("the three request spans and their children", |spans| {
        [&trusted_id, &untrusted_id, &refused_id]
            .iter()
            .all(|id| by_request(spans, id).is_some())
            && spans.iter().filter(|s| s.name == "upstream").count() >= 2
    });

    // The trusted request: its caller's span is the parent.
    let request = by_request(&spans, &trusted_id).unwrap();
    assert_eq!(hex(&request.trace_id), CALLER_TRACE);
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(request.name, "GET");
    let a = attributes(&request);
    assert_eq!(a["portcullis.tenant"], "acme");
    assert_eq!(a["portcullis.route"], "acme/api");
    assert_eq!(a["portcullis.decision"], "allow");
    assert_eq!(a["portcullis.rule"], "anyone");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["portcullis.traceparent"], "continued");
    let children: HashMap<String, Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == request.span_id)
        .map(|s| (s.name.clone(), s.clone()))
        .collect();
    for name in ["tls.handshake", "admission", "audit.wait", "upstream"] {
        let child = children
            .get(name)
            .unwrap_or_else(|| panic!("no {name} child in {children:#?}"));
        assert_eq!(child.trace_id, request.trace_id);
        assert!(child.end_time_unix_nano >= child.start_time_unix_nano);
    }
    assert_eq!(
        attributes(&children["admission"])["portcullis.decision"],
        "allow"
    );
    let upstream = &children["upstream"];
    assert_eq!(upstream.kind, 3, "a client span");
    assert_eq!(
        hex(&upstream.span_id),
        up_parent,
        "the upstream saw the gateway's upstream span as its parent"
    );
    assert_eq!(attributes(upstream)["http.response.status_code"], "200");
    assert!(
        spans
            .iter()
            .any(|s| s.name == "upstream.connect" && s.parent_span_id == upstream.span_id),
        "the new upstream connection's connect span"
    );

    // The untrusted request: a new root, the outsider's context only a link.
    let request = by_request(&spans, &untrusted_id).unwrap();
    assert_eq!(hex(&request.trace_id), new_trace);
    assert!(request.parent_span_id.is_empty(), "a root span");
    assert_eq!(attributes(&request)["portcullis.traceparent"], "untrusted");
    assert_eq!(request.links.len(), 1);
    assert_eq!(hex(&request.links[0].trace_id), OUTSIDER_TRACE);
    assert_eq!(hex(&request.links[0].span_id), OUTSIDER_SPAN);

    // The refusal: its decision and status, no upstream span.
    let request = by_request(&spans, &refused_id).unwrap();
    assert_eq!(hex(&request.trace_id), refused_trace);
    let a = attributes(&request);
    assert_eq!(a["portcullis.decision"], "deny");
    assert_eq!(
        a["portcullis.rule"], "default-deny",
        "no rule let `other` in"
    );
    assert_eq!(a["http.response.status_code"], "403");
    assert_eq!(a["error.type"], "deny");
    assert!(!spans
        .iter()
        .any(|s| s.parent_span_id == request.span_id && s.name == "upstream"));

    // Nothing a caller must not leak: no query string, no credential, no path.
    let all = format!("{:?}", received.spans());
    for secret in [
        "hunter2",
        "4111111111111111",
        "sekrit",
        "card=",
        "/api/orders",
    ] {
        assert!(!all.contains(secret), "`{secret}` in the exported spans");
    }
    assert!(received
        .spans()
        .iter()
        .all(|(service, _)| service == "e2e-gateway"));
    let text = gw.wait_metric("portcullis_trace_spans_exported_total", 12.0);
    assert!(
        metric_value(&text, "portcullis_trace_spans_exported_total") >= 12.0,
        "{text}"
    );
    assert_eq!(
        gw.metric("portcullis_trace_spans_dropped_total{reason=\"queue_full\"}"),
        0.0
    );

    // The audit record names the same trace.
    crate::audit::stop(&mut gw);
    let records = crate::audit::records(&d.join("audit"));
    let trace_of = |id: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == "request" && r["event"]["request_id"] == id)
            .map(|r| r["event"]["trace_id"].as_str().unwrap_or("-").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(trace_of(&trusted_id), [CALLER_TRACE, CALLER_TRACE]);
    assert_eq!(trace_of(&untrusted_id), [new_trace.clone(), new_trace]);
}

#[test]
fn grpc_export_works_and_ratio_zero_exports_nothing_but_still_names_the_trace() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "traces-grpc");

    // OTLP/gRPC, every request sampled.
    let (otlp, received, _rt) = grpc_receiver();
    let tracing =
        format!("tracing:\n  otlp: {{ endpoint: \"http://127.0.0.1:{otlp}\", protocol: grpc }}\n");
    let gw = Gateway::start(d, &config(echo.port, &tracing));
    let resp = pki.client(Some("frontend")).get(gw.port, "/api/x").unwrap();
    assert_eq!(resp.status, 200);
    let id = resp.header("x-request-id").unwrap().to_owned();
    let (trace, parent, flags) = upstream_traceparent(&resp);
    assert_eq!(flags, "01");
    let spans = received.wait("the request's spans over gRPC", |spans| {
        spans.iter().any(|s| s.name == "upstream") && spans.iter().any(|s| s.name == "GET")
    });
    let upstream = spans.iter().find(|s| s.name == "upstream").unwrap();
    assert_eq!(
        (hex(&upstream.trace_id), hex(&upstream.span_id)),
        (trace.clone(), parent)
    );
    assert_eq!(access_line(&gw, &id)["trace_id"], trace.as_str());
    assert!(received
        .spans()
        .iter()
        .all(|(service, _)| service == "portcullis"));
    drop(gw);

    // Ratio 0, a trusted caller's unsampled parent: nothing exported; the trace goes on.
    let (otlp, received) = http_receiver();
    let tracing = format!(
        "tracing:\n  otlp: {{ endpoint: \"http://127.0.0.1:{otlp}/v1/traces\" }}\n  sampling: {{ ratio: 0.0 }}\n  trust_traceparent: {{ from: [127.0.0.1] }}\n"
    );
    let gw = Gateway::start(d, &config(echo.port, &tracing));
    let client = pki.client(Some("frontend"));
    let resp = client.get(gw.port, "/api/x").unwrap();
    assert_eq!(resp.status, 200);
    let id = resp.header("x-request-id").unwrap().to_owned();
    let (trace, _, flags) = upstream_traceparent(&resp);
    assert_eq!(flags, "00", "sampled out, and said so upstream");
    assert_eq!(access_line(&gw, &id)["trace_id"], trace.as_str());
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00");
    let mut conn = client.connect(gw.port).unwrap();
    let resp = conn
        .request("GET", "/api/y", &[("traceparent", &caller)])
        .unwrap();
    let (trace, parent, flags) = upstream_traceparent(&resp);
    assert_eq!((trace.as_str(), flags.as_str()), (CALLER_TRACE, "00"));
    assert_ne!(parent, CALLER_SPAN);
    // Past two export intervals: nothing was sent.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(received.spans().is_empty(), "{:?}", received.spans());
    assert_eq!(gw.metric("portcullis_trace_spans_exported_total"), 0.0);
}

/// A TLS server configuration with `NAME.pem`/`NAME.key` from `d` that requires a client
/// certificate from the test CA (`ca.pem`).
fn collector_tls(d: &std::path::Path, name: &str) -> Arc<rustls::ServerConfig> {
    let read_certs = |file: &str| {
        rustls_pemfile::certs(&mut BufReader::new(
            std::fs::File::open(d.join(file)).unwrap(),
        ))
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
    };
    let key = rustls_pemfile::private_key(&mut BufReader::new(
        std::fs::File::open(d.join(format!("{name}.key"))).unwrap(),
    ))
    .unwrap()
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs("ca.pem") {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(read_certs(&format!("{name}.pem")), key)
            .unwrap(),
    )
}

/// A collector at an `https://` endpoint: OTLP/HTTP and OTLP/gRPC over TLS to a receiver that
/// asks for the gateway's client certificate; a collector whose certificate another CA signed
/// gets nothing, and the spans are counted as dropped.
#[test]
fn spans_reach_a_collector_over_verified_tls_only() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "traces-tls");
    let tls = "tls: { ca: ca.pem, client_certificate: gateway.pem, client_key: gateway.key }";

    let (otlp, received) = http_receiver_over(Some(collector_tls(d, "server")));
    let tracing = format!(
        "tracing:\n  otlp:\n    endpoint: \"https://localhost:{otlp}/v1/traces\"\n    {tls}\n"
    );
    let gw = Gateway::start(d, &config(echo.port, &tracing));
    let resp = pki.client(Some("frontend")).get(gw.port, "/api/x").unwrap();
    assert_eq!(resp.status, 200);
    received.wait("spans over OTLP/HTTP with TLS", |spans| {
        spans.iter().any(|s| s.name == "GET")
    });
    drop(gw);

    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    let (otlp, received, _rt) = grpc_receiver_over(Some((
        read("server.pem"),
        read("server.key"),
        read("ca.pem"),
    )));
    let tracing = format!(
        "tracing:\n  otlp:\n    endpoint: \"https://localhost:{otlp}\"\n    protocol: grpc\n    {tls}\n"
    );
    let gw = Gateway::start(d, &config(echo.port, &tracing));
    let resp = pki.client(Some("frontend")).get(gw.port, "/api/x").unwrap();
    assert_eq!(resp.status, 200);
    received.wait("spans over OTLP/gRPC with TLS", |spans| {
        spans.iter().any(|s| s.name == "GET")
    });
    drop(gw);

    // An impostor collector (a localhost certificate from another CA): nothing reaches it,
    // and the spans are counted as dropped; requests are served all the same.
    portcullis_ca::dev::DevCa::new("Impostor CA")
        .unwrap()
        .issue(&portcullis_ca::dev::LeafSpec::localhost_server(
            &[],
            Duration::from_secs(86_400),
        ))
        .unwrap()
        .write(d, "impostor")
        .unwrap();
    let (otlp, received) = http_receiver_over(Some(collector_tls(d, "impostor")));
    let tracing = format!(
        "tracing:\n  otlp:\n    endpoint: \"https://localhost:{otlp}/v1/traces\"\n    timeout: 2s\n    {tls}\n"
    );
    let gw = Gateway::start(d, &config(echo.port, &tracing));
    let resp = pki.client(Some("frontend")).get(gw.port, "/api/x").unwrap();
    assert_eq!(resp.status, 200);
    let dropped = "portcullis_trace_spans_dropped_total{reason=\"export_failed\"}";
    let text = gw.wait_metric(dropped, 1.0);
    assert!(metric_value(&text, dropped) >= 1.0, "{text}");
    assert!(received.spans().is_empty(), "{:?}", received.spans());
}
