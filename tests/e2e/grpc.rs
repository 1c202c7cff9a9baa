//! gRPC through the gateway: a real tonic client over mTLS, the standard gRPC health service
//! (tonic-health: unary `Check`, server-streaming `Watch`) behind it over HTTP/2 (h2c, and
//! over TLS with ALPN `h2` through a second gateway). Trailers arrive, streams stream, and what
//! the gateway refuses is answered as a gRPC status the client can read.

use std::time::Duration;

use http::uri::PathAndQuery;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;

use crate::harness::*;

const CONFIG: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
metrics:
  address: 127.0.0.1:{metrics}
upstreams:
  - name: grpc
    targets: [127.0.0.1:{backend}]
    protocol: http2
    {tls}
tenants:
  - name: acme
    dlp: { request: { card_number: block, us_ssn: redact } }
    routes:
      - name: check
        path_prefix: /grpc.health.v1.Health/Check
        upstream: grpc
        access: [ { id: anyone } ]
      - name: watch
        path_prefix: /grpc.health.v1.Health/Watch
        upstream: grpc
        access:
          - id: frontend
            spiffe_id: [spiffe://test.portcullis.local/ns/app/sa/frontend]
  - name: limited
    limits: { rate: { requests: 1, per: 1h, burst: 1 } }
    routes:
      - name: limited
        path_prefix: /limited.Orders/
        upstream: grpc
        access: [ { id: anyone } ]
"#;

/// The health service on loopback (h2c), with service `orders` serving.
struct Backend {
    port: u16,
    reporter: HealthReporter,
    /// Serves the backend for as long as the test holds it.
    _rt: tokio::runtime::Runtime,
}

impl Backend {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        rt.block_on(reporter.set_service_status("orders", tonic_health::ServingStatus::Serving));
        Self {
            port,
            reporter,
            _rt: rt,
        }
    }
}

fn config(backend: u16, tls: &str) -> String {
    CONFIG
        .replace("{backend}", &backend.to_string())
        .replace("{tls}", tls)
}

/// A tonic channel to the gateway over mTLS as `client`.
async fn channel(pki: &Pki, client: &str, port: u16) -> Channel {
    let read = |name: &str| std::fs::read(pki.path(name)).unwrap();
    let tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(
            read(&format!("{client}.pem")),
            read(&format!("{client}.key")),
        ));
    Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

fn check(service: &str) -> tonic::Request<HealthCheckRequest> {
    tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    })
}

/// A unary call to any method path, with the health messages as its types.
async fn call(channel: Channel, path: &'static str) -> Result<HealthCheckResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        check("orders"),
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn grpc_calls_stream_and_refusals_are_grpc_statuses() {
    let pki = Pki::new();
    let backend = Backend::start();
    let gw = Gateway::start(pki.dir.path(), &config(backend.port, ""));
    let rt = runtime();
    rt.block_on(async {
        let frontend = channel(&pki, "frontend", gw.port).await;
        // Unary: the answer and the trailers (tonic fails a call whose grpc-status is lost).
        let mut health = HealthClient::new(frontend.clone());
        let answer = health.check(check("orders")).await.unwrap().into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving);
        // The upstream's own error status passes through.
        let unknown = health.check(check("nothing")).await.unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

        // Server streaming: each change arrives as it happens.
        let mut stream = health.watch(check("orders")).await.unwrap().into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert_eq!(
            first.unwrap().unwrap().unwrap().status(),
            ServingStatus::Serving
        );
        backend
            .reporter
            .set_service_status("orders", tonic_health::ServingStatus::NotServing)
            .await;
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert_eq!(
            next.expect("the change was streamed")
                .unwrap()
                .unwrap()
                .status(),
            ServingStatus::NotServing
        );
        drop(stream);

        // A card number in a message on a DLP route: blocked, as PERMISSION_DENIED. Messages
        // compressed by gRPC itself cannot be read, so they are refused (INVALID_ARGUMENT).
        let leak = health
            .check(check("card 4111 1111 1111 1111"))
            .await
            .unwrap_err();
        assert_eq!(leak.code(), Code::PermissionDenied, "{leak:?}");
        assert_eq!(
            leak.metadata().get("portcullis-error").unwrap(),
            "dlp_blocked"
        );
        let compressed = HealthClient::new(frontend.clone())
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .check(check("orders"))
            .await
            .unwrap_err();
        assert_eq!(compressed.code(), Code::InvalidArgument, "{compressed:?}");

        // Denied by the access rules: PERMISSION_DENIED, with the request id in the message.
        let other = channel(&pki, "other", gw.port).await;
        let denied = HealthClient::new(other.clone())
            .watch(check("orders"))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(
            denied.message().contains("request "),
            "{}",
            denied.message()
        );
        assert_eq!(
            denied.metadata().get("portcullis-error").unwrap(),
            "forbidden"
        );
        // No route: UNIMPLEMENTED.
        let none = call(other.clone(), "/nowhere.Svc/Call").await.unwrap_err();
        assert_eq!(none.code(), Code::Unimplemented, "{none:?}");
        // Over the tenant's rate: the first call reaches the upstream (which has no such
        // service), the second is RESOURCE_EXHAUSTED with Retry-After.
        let first = call(other.clone(), "/limited.Orders/Get")
            .await
            .unwrap_err();
        assert_eq!(
            first.code(),
            Code::Unimplemented,
            "from the upstream: {first:?}"
        );
        let limited = call(other, "/limited.Orders/Get").await.unwrap_err();
        assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
        assert!(limited.metadata().get("retry-after").is_some());
    });
    // The access log names each call's gRPC status.
    for (route, status) in [
        ("acme/check", "\"grpc.status\":0"),
        ("acme/check", "\"grpc.status\":5"),
        ("acme/watch", "\"grpc.status\":7"),
        ("limited/limited", "\"grpc.status\":8"),
    ] {
        let route = format!("\"route.id\":\"{route}\"");
        gw.wait_for_line(|l| l.contains(&route) && l.contains(status));
    }
}

#[test]
fn grpc_over_tls_to_an_http2_upstream() {
    // The second gateway is the TLS upstream (HTTP/2 by ALPN), in front of the health service.
    let pki = Pki::new();
    let backend = Backend::start();
    let inner = Gateway::start(pki.dir.path(), &config(backend.port, ""));
    let outer = Gateway::start(
        pki.dir.path(),
        &config(
            inner.port,
            "tls: { server_name: localhost, ca: ca.pem, client_certificate: frontend.pem, client_key: frontend.key }",
        ),
    );
    let rt = runtime();
    rt.block_on(async {
        let mut health = HealthClient::new(channel(&pki, "frontend", outer.port).await);
        for _ in 0..3 {
            let answer = health.check(check("orders")).await.unwrap().into_inner();
            assert_eq!(answer.status(), ServingStatus::Serving);
        }
        let mut stream = health.watch(check("orders")).await.unwrap().into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert_eq!(
            first.unwrap().unwrap().unwrap().status(),
            ServingStatus::Serving
        );
    });
    // Both hops were HTTP/2.
    inner.wait_for_line(|l| l.contains("\"http.version\":\"HTTP/2.0\""));
}

#[test]
fn a_grpc_deadline_caps_the_wait_for_the_upstream() {
    // An upstream that accepts connections (the kernel does) and never answers.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pki = Pki::new();
    let yaml = config(blackhole.local_addr().unwrap().port(), "read_timeout: 20s");
    let gw = Gateway::start(pki.dir.path(), &yaml);
    // A raw HTTP/2 client (PyPI h2), not tonic: tonic enforces a `grpc-timeout` on its side
    // too, which would hide whether the gateway does. It prints the status the gateway sent.
    let script = r#"
import socket, ssl, sys, time, h2.connection, h2.config, h2.events
port, ca, cert, key = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2"])
tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=15), server_hostname="localhost")
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
conn.send_headers(1, [(":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
    (":path", "/grpc.health.v1.Health/Check"), ("content-type", "application/grpc"),
    ("te", "trailers"), ("grpc-timeout", "300m")])
conn.send_data(1, b"\0\0\0\0\0", end_stream=True)
tls.sendall(conn.data_to_send())
while True:
    data = tls.recv(65536)
    if not data:
        break
    for event in conn.receive_data(data):
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            for name, value in event.headers:
                if name == b"grpc-status":
                    print(value.decode())
                    sys.exit(0)
        if isinstance(event, h2.events.StreamReset):
            print("reset")
            sys.exit(0)
    tls.sendall(conn.data_to_send())
"#;
    let started = std::time::Instant::now();
    let out = std::process::Command::new("python3")
        .args(["-c", script, &gw.port.to_string()])
        .arg(pki.path("ca.pem"))
        .arg(pki.path("frontend.pem"))
        .arg(pki.path("frontend.key"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "4",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}: the read timeout, not the deadline",
        started.elapsed()
    );
    gw.wait_for_line(|l| {
        l.contains("\"grpc.status\":4") && l.contains("\"authz.decision\":\"deadline_exceeded\"")
    });
}

/// The built-in echo upstream speaks HTTP/1.1 and h2c on one port, and a `protocol: http2`
/// upstream reaches it over h2c (what bench/run.sh's portcullis-h2up measures).
#[test]
fn echo_speaks_http1_and_h2c() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "echo");
    let (status, body) = http_get(echo.port, "/plain").expect("HTTP/1.1 to the echo");
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["version"], "HTTP/1.1", "{doc}");

    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "10"])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("http://127.0.0.1:{}/prior", echo.port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, tail) = text.rsplit_once('\n').unwrap();
    assert_eq!(tail, "2 200", "{text}");
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["version"], "HTTP/2.0", "{doc}");
    assert_eq!(doc["path"], "/prior", "{doc}");

    let yaml = CONFIG
        .replace("{backend}", &echo.port.to_string())
        .replace("{tls}", "")
        .replace(
            "path_prefix: /grpc.health.v1.Health/Check",
            "path_prefix: /echo",
        );
    let gw = Gateway::start(d, &yaml);
    let through = pki
        .client(Some("frontend"))
        .get(gw.port, "/echo/x")
        .unwrap();
    assert_eq!(through.status, 200);
    let doc = through.json();
    assert_eq!(doc["version"], "HTTP/2.0", "{doc}");
    assert_eq!(doc["path"], "/echo/x", "{doc}");
}
