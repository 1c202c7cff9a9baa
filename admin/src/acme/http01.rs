//! http-01 validation (RFC 8555 §8.3): GET `http://NAME:PORT/.well-known/acme-challenge/TOKEN`
//! must answer 200 with the key authorization. No redirects are followed; every step is bounded
//! in time and size; at most a few resolved addresses are tried.

use std::time::Duration;

use axum::http::StatusCode;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::Problem;

/// Each connection attempt, and the exchange after it (tls-alpn-01 uses the same bounds).
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Resolved addresses tried at most.
const MAX_ADDRS: usize = 4;
/// Longest answer read.
const MAX_ANSWER: usize = 1024;

pub(super) fn failed(detail: String) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "connection", detail)
}

/// Fetches the challenge from `name` and compares the answer with `key_authorization`.
pub(super) async fn validate(
    name: &str,
    port: u16,
    token: &str,
    key_authorization: &str,
) -> Result<(), Problem> {
    let addrs = resolve(name, port).await?;
    let mut last = failed(format!("{name} has no address"));
    for addr in addrs {
        match fetch(addr, name, port, token).await {
            Ok(answer) if answer.trim_ascii() == key_authorization.as_bytes() => return Ok(()),
            Ok(_) => {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "incorrectResponse",
                    format!("http://{name}:{port}/ did not answer the key authorization"),
                ))
            }
            Err(p) => last = p,
        }
    }
    Err(last)
}

/// The first few addresses of `name`, resolved within [`STEP_TIMEOUT`].
pub(super) async fn resolve(name: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, Problem> {
    Ok(
        tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((name, port)))
            .await
            .map_err(|_| {
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "dns",
                    format!("resolving {name} timed out"),
                )
            })?
            .map_err(|_| {
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "dns",
                    format!("{name} does not resolve"),
                )
            })?
            .take(MAX_ADDRS)
            .collect(),
    )
}

async fn fetch(
    addr: std::net::SocketAddr,
    name: &str,
    port: u16,
    token: &str,
) -> Result<Vec<u8>, Problem> {
    let stream = tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| failed(format!("connecting to {addr} timed out")))?
        .map_err(|_| failed(format!("connecting to {addr} failed")))?;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|_| failed(format!("no HTTP/1.1 at {addr}")))?;
        let driver = tokio::spawn(conn);
        let request = hyper::Request::get(format!("/.well-known/acme-challenge/{token}"))
            .header(hyper::header::HOST, format!("{name}:{port}"))
            .header(hyper::header::USER_AGENT, "portcullis-acme")
            .body(Empty::new())
            .map_err(|_| failed("building the request failed".to_owned()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| failed(format!("{addr} did not answer")))?;
        if response.status() != hyper::StatusCode::OK {
            driver.abort();
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "unauthorized",
                format!(
                    "{addr} answered {} for the challenge",
                    response.status().as_u16()
                ),
            ));
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| {
                failed(format!(
                    "{addr}: answer unreadable or over {MAX_ANSWER} bytes"
                ))
            })?
            .to_bytes();
        driver.abort();
        Ok(body.to_vec())
    };
    tokio::time::timeout(STEP_TIMEOUT, exchange)
        .await
        .map_err(|_| failed(format!("{addr} did not answer in time")))?
}
