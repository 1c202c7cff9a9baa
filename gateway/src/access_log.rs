//! The access log: one JSON line per request on stderr, in the same shape as the rest of the
//! logs (tracing's flattened JSON: `timestamp`, `level`, `message`, dotted fields, `target`).
//!
//! It is written directly rather than through tracing's JSON formatter, which validated and
//! copied every fragment and cost about a tenth of a proxied request's instructions. The
//! `PORTCULLIS_LOG` filter still decides: the line is written only when tracing would emit an
//! INFO event with target `access`.

use std::io::Write;
use std::time::SystemTime;

use serde::Serialize;

/// One request, as logged. Identity, decision and counts only: never bodies or header values.
#[derive(Serialize)]
pub(crate) struct AccessLine<'a> {
    pub duration_ms: f64,
    #[serde(rename = "request.id")]
    pub request_id: &'a str,
    #[serde(rename = "tenant.id")]
    pub tenant: &'a str,
    #[serde(rename = "route.id")]
    pub route: &'a str,
    /// The caller as every record names it: SPIFFE ID, else certificate subject.
    #[serde(rename = "client.id")]
    pub caller: &'a str,
    #[serde(rename = "client.ip")]
    pub client_ip: Option<std::net::IpAddr>,
    #[serde(rename = "tls.version")]
    pub tls_version: &'a str,
    #[serde(rename = "http.method")]
    pub method: &'a str,
    /// At most [`PATH_MAX`] bytes of the path (cut on a character boundary)...
    #[serde(rename = "http.path")]
    pub path: &'a str,
    /// ...and the whole path's length when it was cut.
    #[serde(rename = "http.path_bytes", skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<usize>,
    #[serde(rename = "http.version")]
    pub version: &'a str,
    #[serde(rename = "http.status")]
    pub status: u16,
    #[serde(rename = "authz.decision")]
    pub decision: &'a str,
    #[serde(rename = "authz.rule")]
    pub rule: &'a str,
    #[serde(rename = "dlp.findings")]
    pub dlp: &'a str,
}

/// The longest path an access line carries: a client looping 60 KiB paths must not turn the
/// log into a disk flood (the audit record of a refusal is bounded likewise).
pub(crate) const PATH_MAX: usize = 1024;

/// `path` cut to [`PATH_MAX`] bytes, and its whole length when it was cut.
pub(crate) fn bounded_path(path: &str) -> (&str, Option<usize>) {
    if path.len() <= PATH_MAX {
        return (path, None);
    }
    let mut cut = PATH_MAX;
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    (&path[..cut], Some(path.len()))
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(serialize_with = "display")]
    timestamp: humantime::Rfc3339Timestamp,
    level: &'static str,
    message: &'static str,
    #[serde(flatten)]
    line: &'a AccessLine<'a>,
    target: &'static str,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Writes the line if the log filter lets `access` INFO events through.
pub(crate) fn write(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    let mut buf = Vec::with_capacity(512);
    let envelope = Envelope {
        timestamp: humantime::format_rfc3339_micros(SystemTime::now()),
        level: "INFO",
        message: "request",
        line,
        target: "access",
    };
    if serde_json::to_writer(&mut buf, &envelope).is_ok() {
        buf.push(b'\n');
        // A full or closed stderr must not fail the request.
        let _ = std::io::stderr().lock().write_all(&buf);
    }
}
