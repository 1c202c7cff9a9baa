//! gRPC at the edge: which requests are gRPC calls, their deadlines (`grpc-timeout`), and
//! refusals answered as gRPC statuses (gRPC clients read no HTTP status).

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE};
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::RequestCtx;
use crate::admission::Refusal;

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A call's deadline from its `grpc-timeout` (RFC-less, from the gRPC HTTP/2 protocol: at
/// most 8 digits and a unit, `H` `M` `S` `m` `u` `n`); `None` when absent or malformed.
pub(super) fn timeout(session: &Session) -> Option<Duration> {
    parse_timeout(
        session
            .req_header()
            .headers
            .get("grpc-timeout")?
            .to_str()
            .ok()?,
    )
}

fn parse_timeout(value: &str) -> Option<Duration> {
    let (unit, digits) = value.as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // ASCII digits: valid UTF-8, and at most 99,999,999.
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A gRPC call: HTTP/2 with an `application/grpc` content type (`+proto`, `+json`…).
pub(super) fn is_call(session: &Session) -> bool {
    session.as_downstream().is_http2()
        && session
            .req_header()
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.trim_start();
                ct.len() >= 16
                    && ct[..16].eq_ignore_ascii_case("application/grpc")
                    && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
            })
}

/// A refusal as a gRPC "trailers-only" answer: HTTP 200 and the status in the one header
/// block, which ends the stream.
pub(super) async fn write_refusal(
    session: &mut Session,
    ctx: &RequestCtx,
    refusal: &Refusal,
) -> Result<()> {
    let mut header = ResponseHeader::build_no_case(200, Some(8))?;
    header.insert_header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))?;
    header.insert_header("grpc-status", code(refusal.status()).to_string())?;
    header.insert_header(
        "grpc-message",
        message(&format!(
            "{} (request {})",
            refusal.message(),
            ctx.request_id.as_str()
        )),
    )?;
    header.insert_header("portcullis-error", refusal.code())?;
    header.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
    for (name, value) in refusal.headers() {
        header.append_header(name, value)?;
    }
    session.write_response_header(Box::new(header), true).await
}

/// The gRPC status code for a refusal's HTTP status: the gRPC project's HTTP mapping, except
/// that a rate limit or a body over a limit is RESOURCE_EXHAUSTED and a bad request
/// INVALID_ARGUMENT, as a gRPC server would answer them.
pub(super) fn code(http_status: u16) -> u8 {
    match http_status {
        400 | 415 | 431 => 3, // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 12,            // UNIMPLEMENTED (no route for this method)
        413 | 429 => 8,       // RESOURCE_EXHAUSTED
        502 | 503 => 14,      // UNAVAILABLE
        504 => 4,             // DEADLINE_EXCEEDED
        500 => 13,            // INTERNAL
        _ => 2,               // UNKNOWN
    }
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`.
fn message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            "",
            "m",
            "123456789m",
            "10x",
            "-1S",
            "1.5S",
            "१S",
            "5१",
            "10 m",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn codes_and_messages() {
        assert_eq!(code(403), 7);
        assert_eq!(code(429), 8);
        assert_eq!(code(401), 16);
        assert_eq!(code(404), 12);
        assert_eq!(code(503), 14);
        assert_eq!(code(302), 2);
        assert_eq!(
            message("denied: 100% sure ✓"),
            "denied: 100%25 sure %E2%9C%93"
        );
    }
}
