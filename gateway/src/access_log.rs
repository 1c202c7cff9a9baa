//! The access log: one JSON line per request on stderr, in the same shape as the rest of the
//! logs (tracing's flattened JSON: `timestamp`, `level`, `message`, dotted fields, `target`).
//!
//! The line is written by hand rather than through tracing's or serde's JSON machinery, which
//! cost more than a tenth of a proxied request's instructions; a unit test holds it to serde's
//! output byte for byte. The `PORTCULLIS_LOG` filter still decides: the line is written only
//! when tracing would emit an INFO event with target `access`.
//!
//! A worker only appends the line to a shared buffer; the `access-log` thread writes it to
//! stderr. So a slow or stopped reader of stderr never holds up a request: the buffer is
//! bounded ([`MAX_BUFFERED`]), and a line that does not fit is dropped and counted
//! (`portcullis_access_log_dropped_lines_total`). The buffer is written out every
//! [`FLUSH_INTERVAL`], as soon as it holds [`FLUSH_AT`] bytes, before `/metrics` is rendered (a
//! counter never runs ahead of the log) and at exit.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::forwarding::IpText;

/// One request, as logged. Identity, decision and counts only: never bodies or header values.
#[derive(Serialize)]
pub(crate) struct AccessLine<'a> {
    pub duration_ms: f64,
    #[serde(rename = "request.id")]
    pub request_id: &'a str,
    /// The request's trace: the gateway's when tracing is on, else the caller's
    /// `traceparent`'s (as the audit record carries it).
    #[serde(rename = "trace_id", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    #[serde(rename = "tenant.id")]
    pub tenant: &'a str,
    #[serde(rename = "route.id")]
    pub route: &'a str,
    /// The caller as every record names it: SPIFFE ID, else certificate subject.
    #[serde(rename = "client.id")]
    pub caller: &'a str,
    #[serde(rename = "client.ip")]
    pub client_ip: Option<IpAddr>,
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
    /// A gRPC call's status code.
    #[serde(rename = "grpc.status", skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u8>,
    /// `egress` for a request the local workload sent out; absent for inbound ones.
    #[serde(rename = "direction", skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    /// The fallback upstream that took the request while the route's own had no healthy
    /// target; absent otherwise.
    #[serde(rename = "upstream.failover", skip_serializing_if = "Option::is_none")]
    pub failover: Option<&'a str>,
    #[serde(rename = "authz.decision")]
    pub decision: &'a str,
    #[serde(rename = "authz.rule")]
    pub rule: &'a str,
    #[serde(rename = "dlp.findings")]
    pub dlp: &'a str,
    /// Refusals of the same tenant and code whose lines were left out since the last one
    /// written (see [`RefusalLines`]).
    #[serde(rename = "log.suppressed", skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Refused requests' access lines, sampled: a flood of refusals must cost little and must not
/// flood the log. Per tenant and refusal code, the first [`REFUSAL_LINES_PER_SECOND`] lines
/// of each second are written; the rest are left out and counted, and the next line written
/// for that tenant and code carries the count (`log.suppressed`). Metrics and the audit log
/// still count every refusal.
#[derive(Debug, Default)]
pub(crate) struct RefusalLines(std::sync::Mutex<std::collections::HashMap<u64, LineWindow>>);

#[derive(Debug, Default)]
struct LineWindow {
    second: u64,
    written: u32,
    suppressed: u64,
}

const REFUSAL_LINES_PER_SECOND: u32 = 20;
/// Keys remembered; beyond it the map starts again (tenants and codes are few).
const REFUSAL_KEYS: usize = 4096;

impl RefusalLines {
    /// Whether to write a refusal's line at `second` (since the epoch); if so, how many were
    /// left out before it.
    pub(crate) fn admit(&self, tenant: &str, code: &str, second: u64) -> Option<u64> {
        use std::hash::Hasher;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(tenant.as_bytes());
        h.write_u8(0xff);
        h.write(code.as_bytes());
        let key = h.finish();
        let mut windows = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= REFUSAL_KEYS && !windows.contains_key(&key) {
            windows.clear();
        }
        let w = windows.entry(key).or_default();
        if w.second != second {
            w.second = second;
            w.written = 0;
        }
        if w.written >= REFUSAL_LINES_PER_SECOND {
            w.suppressed += 1;
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

/// The longest path an access line carries: a client looping 60 KiB paths must not turn the
/// log into a disk flood (the audit record of a refusal is bounded likewise).
pub(crate) const PATH_MAX: usize = 1024;

/// The most bytes of lines waiting for the writer; past it lines are dropped (and counted).
const MAX_BUFFERED: usize = 4 << 20;
/// The writer is woken early once this much is waiting.
const FLUSH_AT: usize = 64 << 10;
/// How long a line waits for the writer at most, when stderr keeps up.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// How long a flush (before `/metrics`, at exit) waits for the writer: a blocked stderr holds
/// up neither for longer.
const FLUSH_WAIT: Duration = Duration::from_millis(500);

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

/// Queues the line if the log filter lets `access` INFO events through.
pub(crate) fn write(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    thread_local! {
        static SCRATCH: RefCell<(Vec<u8>, Seconds)> = RefCell::new((Vec::with_capacity(512), Seconds::default()));
    }
    SCRATCH.with(|scratch| {
        // Re-entered only if formatting logged, which it does not; then the line is skipped.
        let Ok(mut scratch) = scratch.try_borrow_mut() else {
            return;
        };
        let (buf, seconds) = &mut *scratch;
        buf.clear();
        line.write_json(SystemTime::now(), seconds, buf);
        writer().queue(buf);
    });
}

/// Writes out every queued line (waiting at most [`FLUSH_WAIT`]).
pub(crate) fn flush() {
    if let Some(writer) = WRITER.get() {
        writer.flush();
    }
}

/// Lines dropped so far because the buffer was full.
pub(crate) fn dropped_lines() -> u64 {
    WRITER.get().map_or(0, |w| w.lock().dropped)
}

impl AccessLine<'_> {
    /// The line as JSON, as serde would write the envelope below (see the tests), with `\n`.
    fn write_json(&self, now: SystemTime, seconds: &mut Seconds, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        seconds.write_timestamp(now, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"duration_ms\":");
        if self.duration_ms.is_finite() {
            out.extend_from_slice(
                ryu::Buffer::new()
                    .format_finite(self.duration_ms)
                    .as_bytes(),
            );
        } else {
            out.extend_from_slice(b"null");
        }
        string_field(out, b",\"request.id\":", self.request_id);
        if let Some(trace_id) = self.trace_id {
            string_field(out, b",\"trace_id\":", trace_id);
        }
        string_field(out, b",\"tenant.id\":", self.tenant);
        string_field(out, b",\"route.id\":", self.route);
        string_field(out, b",\"client.id\":", self.caller);
        out.extend_from_slice(b",\"client.ip\":");
        match self.client_ip {
            Some(ip) => {
                out.push(b'"');
                out.extend_from_slice(IpText::new(ip).as_str().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        string_field(out, b",\"tls.version\":", self.tls_version);
        string_field(out, b",\"http.method\":", self.method);
        string_field(out, b",\"http.path\":", self.path);
        if let Some(bytes) = self.path_bytes {
            out.extend_from_slice(b",\"http.path_bytes\":");
            out.extend_from_slice(itoa::Buffer::new().format(bytes).as_bytes());
        }
        string_field(out, b",\"http.version\":", self.version);
        out.extend_from_slice(b",\"http.status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        if let Some(code) = self.grpc_status {
            out.extend_from_slice(b",\"grpc.status\":");
            out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
        }
        if let Some(direction) = self.direction {
            string_field(out, b",\"direction\":", direction);
        }
        if let Some(failover) = self.failover {
            string_field(out, b",\"upstream.failover\":", failover);
        }
        string_field(out, b",\"authz.decision\":", self.decision);
        string_field(out, b",\"authz.rule\":", self.rule);
        string_field(out, b",\"dlp.findings\":", self.dlp);
        if self.suppressed > 0 {
            out.extend_from_slice(b",\"log.suppressed\":");
            out.extend_from_slice(itoa::Buffer::new().format(self.suppressed).as_bytes());
        }
        out.extend_from_slice(b",\"target\":\"access\"}\n");
    }
}

/// `key` then `value` as a JSON string.
fn string_field(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    // Nearly every value needs no escaping: copied whole. Otherwise serde_json escapes it.
    if !needs_escape(value.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, value).is_err() {
        // Writing a string into a Vec cannot fail; keep the line valid JSON if it did.
        out.extend_from_slice(b"\"\"");
    }
}

/// Whether `bytes` hold a byte JSON strings escape: a control character, `"` or `\\`. Eight
/// bytes at a time (the classic "has a zero/less-than byte" word tests, exact for "any").
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        let x = u64::from_ne_bytes(w);
        if x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// The RFC 3339 text of the current second (`2026-01-31T12:00:00.`), made once a second.
#[derive(Default)]
struct Seconds {
    second: Option<u64>,
    text: Vec<u8>,
}

impl Seconds {
    /// `now` as humantime's `format_rfc3339_micros` writes it.
    fn write_timestamp(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            self.text.clear();
            let whole = UNIX_EPOCH + Duration::from_secs(second);
            let _ = write!(self.text, "{}", humantime::format_rfc3339_seconds(whole));
            // `…:SSZ` becomes `…:SS.`: the fraction follows.
            self.text.pop();
            self.text.push(b'.');
            self.second = Some(second);
        }
        out.extend_from_slice(&self.text);
        let mut micros = since.subsec_micros();
        let mut digits = [b'0'; 6];
        for digit in digits.iter_mut().rev() {
            // `micros % 10` is a digit.
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// The lines waiting for stderr, shared by the workers and the `access-log` thread.
struct Writer {
    state: Mutex<Queue>,
    /// Wakes the writer early: the buffer is filling up, or a flush is waiting.
    wake: Condvar,
    /// Tells flushes that the writer has written what they wait for.
    written: Condvar,
}

#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    /// Lines queued so far, and written so far (a flush waits for the second to reach the
    /// first).
    queued: u64,
    written: u64,
    dropped: u64,
    /// Whether a flush is waiting.
    urgent: bool,
}

/// The writer, its thread started with the first line.
fn writer() -> &'static Writer {
    WRITER.get_or_init(|| {
        // The thread's `writer()` waits for this initialisation to finish.
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(|| run_writer(writer()));
        if let Err(e) = spawned {
            // Lines then wait until the buffer is full and are dropped, never blocking.
            tracing::error!(error = %e, "access log: no writer thread; lines are dropped");
        }
        Writer::new()
    })
}

impl Writer {
    fn new() -> Self {
        Writer {
            state: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; a poisoned queue is still a queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one line; drops it when the buffer is full.
    fn queue(&self, line: &[u8]) {
        let mut q = self.lock();
        if q.buf.len() + line.len() > MAX_BUFFERED {
            q.dropped += 1;
            return;
        }
        q.buf.extend_from_slice(line);
        q.queued += 1;
        if q.buf.len() >= FLUSH_AT && q.buf.len() - line.len() < FLUSH_AT {
            self.wake.notify_one();
        }
    }

    fn flush(&self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut q = self.lock();
        let target = q.queued;
        q.urgent = true;
        self.wake.notify_one();
        while q.written < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            q = self
                .written
                .wait_timeout(q, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The `access-log` thread: writes the buffer out every [`FLUSH_INTERVAL`], or sooner when
/// woken. A blocked stderr blocks only this thread.
fn run_writer(writer: &Writer) {
    let mut out = Vec::new();
    let mut reported_drops = 0;
    loop {
        let (lines, dropped) = {
            let mut q = writer.lock();
            if !q.urgent && q.buf.len() < FLUSH_AT {
                q = writer
                    .wake
                    .wait_timeout(q, FLUSH_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            q.urgent = false;
            std::mem::swap(&mut q.buf, &mut out);
            (q.queued, q.dropped)
        };
        if !out.is_empty() {
            // A closed stderr loses the lines; nothing else can be done with them.
            let _ = std::io::stderr().lock().write_all(&out);
            out.clear();
        }
        if dropped > reported_drops {
            tracing::warn!(
                dropped = dropped - reported_drops,
                "access log: lines dropped, stderr is not keeping up"
            );
            reported_drops = dropped;
        }
        writer.lock().written = lines;
        writer.written.notify_all();
    }
}

#[cfg(test)]
mod tests;
