//! A built-in echo upstream for the demo and the tests: answers every request with a JSON
//! document of what it received (method, path, headers, body), so a caller can see exactly what the
//! gateway forwarded. It speaks HTTP/1.1 and, on the same port, HTTP/2 with prior knowledge
//! (h2c), so an upstream with `protocol: http2` can be tried and benchmarked against it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::apps::HttpServerOptions;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;

use crate::metrics::plain_response;
use crate::GatewayError;

struct Echo {
    name: String,
}

/// Largest request body the echo reads back (it reports only the length).
const MAX_BODY: usize = 1 << 20;
const MAX_DELAY_MS: u64 = 10_000;

#[async_trait]
impl ServeHttp for Echo {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut received = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            received.extend_from_slice(&chunk);
            if received.len() > MAX_BODY {
                return plain_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    b"too large\n".to_vec(),
                );
            }
        }
        let req = session.req_header();
        // Tests use a delay to hold a request in flight (bounded).
        let delay_ms = req
            .headers
            .get("x-echo-delay-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |ms| ms.min(MAX_DELAY_MS));
        if delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        }
        let req = session.req_header();
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        // `x-echo-body: 1` answers with the request body itself, with the request's content
        // type and the content encoding named by `x-echo-content-encoding`.
        if header("x-echo-body") == Some("1") {
            let content_type = header("content-type").unwrap_or("application/octet-stream");
            let mut response = plain_response(StatusCode::OK, content_type, received);
            if let Some(enc) =
                header("x-echo-content-encoding").and_then(|v| http::HeaderValue::from_str(v).ok())
            {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_ENCODING, enc);
            }
            return response;
        }
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in req.headers.iter() {
            headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let doc = serde_json::json!({
            "upstream": self.name,
            "method": req.method.as_str(),
            // How the request arrived: `HTTP/1.1`, or `HTTP/2.0` over h2c.
            "version": format!("{:?}", req.version),
            "uri": req.uri.to_string(),
            "path": req.uri.path(),
            "headers": headers,
            "body_bytes": received.len(),
            "body": String::from_utf8_lossy(&received),
        });
        let mut body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        body.push(b'\n');
        plain_response(StatusCode::OK, "application/json", body)
    }
}

/// Runs an echo upstream on plain HTTP (HTTP/1.1, and h2c for callers that open with the
/// HTTP/2 preface) until SIGINT/SIGTERM.
pub fn serve_echo(addr: SocketAddr, name: &str) -> Result<(), GatewayError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| GatewayError::Bind { addr, source: e })?;
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut app = HttpServer::new_app(Echo {
        name: name.to_owned(),
    });
    // pingora peeks for the HTTP/2 preface on each new connection and keeps HTTP/1.1 otherwise.
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    app.server_options = Some(options);
    let mut service = Service::new(format!("echo {name}"), app);
    service.add_tcp(&addr.to_string());
    server.add_service(service);
    server.run(RunArgs::default());
    Ok(())
}
