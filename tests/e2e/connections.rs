//! Bounded connections: the head deadline, keep-alive idle and request caps (HTTP/1 and
//! HTTP/2), connection caps per listener and per source, clients that stop reading, HTTP/2
//! floods, and the TLS details (server cipher order, a certificate-less handshake on a
//! `required` listener). Timeouts are configured short (1-2 s) so that the tests stay quick.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::proxy::base_config;

const CONNECTIONS: &str = "    connections:
      handshake_timeout: 1s
      request_head_timeout: 1s
      idle_timeout: 1s
      h2_idle_timeout: 2s
      write_timeout: 1s
      body_idle_timeout: 1s
      max_connections_per_source: 3
      max_requests_per_connection: 3
      h2_max_concurrent_streams: 10
";

struct Setup {
    pki: Pki,
    _echo: Echo,
    gw: Gateway,
}

fn setup() -> Setup {
    setup_with(CONNECTIONS)
}

/// A gateway whose listener has these `connections` settings.
fn setup_with(connections: &str) -> Setup {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "e1");
    let yaml = base_config(echo.port).replacen(
        "      client_ca: ca.pem\n",
        &format!("      client_ca: ca.pem\n{connections}"),
        1,
    );
    let gw = Gateway::start(pki.dir.path(), &yaml);
    Setup {
        pki,
        _echo: echo,
        gw,
    }
}

fn timeouts(gw: &Gateway, timeout: &str) -> f64 {
    gw.metric(&format!(
        "portcullis_connection_timeouts_total{{listener=\"public\",timeout=\"{timeout}\"}}"
    ))
}

/// A well-behaved request's status and how long it took.
fn timed_get(s: &Setup) -> (u16, Duration) {
    let started = Instant::now();
    let status = s
        .pki
        .client(Some("frontend"))
        .get(s.gw.port, "/public/ok")
        .map_or(0, |r| r.status);
    (status, started.elapsed())
}

/// Writes `start` of a head, then a header one byte every 200 ms (each read well within any
/// per-read timeout): the gateway closes the connection at the 1 s head deadline, answers
/// nothing, and counts it.
fn assert_trickled_head_is_cut(s: &Setup, conn: &mut Conn, start: &[u8]) {
    let started = Instant::now();
    conn.raw().write_all(start).unwrap();
    let mut cut = None;
    for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        std::thread::sleep(Duration::from_millis(200));
        if conn
            .raw()
            .write_all(&[*b])
            .and_then(|()| conn.raw().flush())
            .is_err()
        {
            cut = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let (answer, closed) = conn.read_until_closed(Duration::from_secs(3));
    let elapsed = cut.unwrap_or_else(|| started.elapsed());
    assert!(closed, "connection still open after {elapsed:?}");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        elapsed < Duration::from_millis(3500),
        "cut after {elapsed:?}, the deadline is 1 s"
    );
    assert_eq!(timeouts(&s.gw, "request_head"), 1.0);
}

#[test]
fn a_header_trickled_byte_by_byte_is_cut_at_the_head_deadline() {
    let s = setup();
    let mut conn = s.pki.client(Some("frontend")).connect(s.gw.port).unwrap();
    assert_trickled_head_is_cut(
        &s,
        &mut conn,
        b"GET /public/slow HTTP/1.1\r\nHost: localhost\r\n",
    );
    // A normal client is served meanwhile.
    assert_eq!(timed_get(&s).0, 200);
}

#[test]
fn an_http2_client_that_never_sends_its_preface_is_cut_at_the_head_deadline() {
    let s = setup();
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", s.gw.port)])
        .args(["-servername", "localhost", "-alpn", "h2", "-ign_eof"])
        .arg("-CAfile")
        .arg(s.pki.path("ca.pem"))
        .arg("-cert")
        .arg(s.pki.path("frontend.pem"))
        .arg("-key")
        .arg(s.pki.path("frontend.key"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // openssl keeps its stdin open and sends nothing; the gateway closes at about 1 s.
    let started = Instant::now();
    let mut child = out;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.is_some(), "still open after 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    s.gw.wait_metric(
        "portcullis_connection_timeouts_total{listener=\"public\",timeout=\"request_head\"}",
        1.0,
    );
    assert_eq!(timeouts(&s.gw, "request_head"), 1.0);
}

#[test]
fn keep_alive_is_idle_bounded_and_capped_in_requests() {
    let s = setup();
    let client = s.pki.client(Some("frontend"));
    // Idle: the connection is closed about 1 s after the response.
    let mut conn = client.connect(s.gw.port).unwrap();
    assert_eq!(conn.request("GET", "/public/1", &[]).unwrap().status, 200);
    let started = Instant::now();
    let (rest, closed) = conn.read_until_closed(Duration::from_secs(4));
    assert!(closed && rest.is_empty());
    let idle = started.elapsed();
    assert!(
        idle > Duration::from_millis(700) && idle < Duration::from_millis(3000),
        "{idle:?}"
    );
    // Three requests per connection: the third answer says close, then the server closes.
    let mut conn = client.connect(s.gw.port).unwrap();
    assert_eq!(conn.request("GET", "/public/1", &[]).unwrap().status, 200);
    assert_eq!(conn.request("GET", "/public/2", &[]).unwrap().status, 200);
    let third = conn.request("GET", "/public/3", &[]).unwrap();
    assert_eq!(third.status, 200);
    assert_eq!(third.header("connection"), Some("close"));
    let (rest, closed) = conn.read_until_closed(Duration::from_secs(2));
    assert!(closed && rest.is_empty());
}

/// The first byte of each request is read apart from the rest of the head (fresh and reused
/// connections alike): what a client puts there must mean what it meant in one read. A
/// request after an empty line (RFC 9112 §2.2: ignored) is served as itself; a head starting
/// with a byte that cannot start a request is refused with 400 and goes no further.
#[test]
fn the_first_byte_of_a_head_read_apart_changes_nothing() {
    let s = setup();
    let client = s.pki.client(Some("frontend"));
    for reused in [false, true] {
        let mut conn = client.connect(s.gw.port).unwrap();
        if reused {
            assert_eq!(
                conn.request("GET", "/public/first", &[]).unwrap().status,
                200
            );
        }
        let r = conn
            .send_raw(b"\r\nGET /public/after-crlf HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(r.status, 200, "reused: {reused}");
        assert_eq!(r.json()["path"], "/public/after-crlf", "reused: {reused}");
        let r = conn
            .send_raw(b"\x00GET /public/nul HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(r.status, 400, "reused: {reused}");
        assert!(conn.closed_by_server(), "reused: {reused}");
    }
}

/// A connection that completes its handshake and sends nothing is cut at the head deadline
/// (the gateway waits for its first byte itself, holding no session meanwhile).
#[test]
fn a_silent_http1_connection_is_cut_at_the_head_deadline() {
    let s = setup();
    let mut conn = s.pki.client(Some("frontend")).connect(s.gw.port).unwrap();
    let started = Instant::now();
    let (answer, closed) = conn.read_until_closed(Duration::from_secs(4));
    assert!(closed, "still open after {:?}", started.elapsed());
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "cut after {:?}, the deadline is 1 s",
        started.elapsed()
    );
    assert_eq!(timeouts(&s.gw, "request_head"), 1.0);
}

/// Between requests the gateway waits for the next request's first byte itself, then hands
/// it to pingora: the request must arrive whole however it is split, and a head started on a
/// reused connection must still be cut at the head deadline, not kept for the idle timeout.
#[test]
fn a_request_on_a_reused_connection_is_read_whole_and_its_head_is_still_timed() {
    let s = setup();
    let mut conn = s.pki.client(Some("frontend")).connect(s.gw.port).unwrap();
    assert_eq!(
        conn.request("GET", "/public/first", &[]).unwrap().status,
        200
    );
    // One byte, a pause, then the rest: the first byte is not lost.
    conn.raw().write_all(b"G").unwrap();
    conn.raw().flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let second = conn
        .send_raw(b"ET /public/second HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(
        second.json()["path"],
        "/public/second",
        "{:?}",
        second.json()
    );
    // A third head begun and then trickled: cut at the 1 s head deadline.
    assert_trickled_head_is_cut(
        &s,
        &mut conn,
        b"GET /public/third HTTP/1.1\r\nHost: localhost\r\n",
    );
}

#[test]
fn the_per_source_cap_holds_and_frees() {
    let s = setup();
    let client = s.pki.client(Some("frontend"));
    let held: Vec<Conn> = (0..3).map(|_| client.connect(s.gw.port).unwrap()).collect();
    // The fourth from the same address is closed at accept: the handshake fails.
    assert!(client
        .connect(s.gw.port)
        .and_then(|mut c| c.request("GET", "/public/x", &[]))
        .is_err());
    let refused =
        "portcullis_connections_refused_total{listener=\"public\",reason=\"source_full\"}";
    assert_eq!(s.gw.metric(refused), 1.0);
    assert_eq!(
        s.gw.metric("portcullis_connections_open{listener=\"public\"}"),
        3.0
    );
    // Another source address is not affected.
    let out = curl_as(&s.pki, "frontend")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            "127.0.0.2",
        ])
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", s.gw.port)])
        .arg(format!(
            "https://localhost:{}/public/other-source",
            s.gw.port
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // Closing one frees its place.
    drop(held);
    let open = "portcullis_connections_open{listener=\"public\"}";
    let m = s.gw.wait_metric_at_most(open, 0.0);
    assert_eq!(metric_value(&m, open), 0.0, "{m}");
    assert_eq!(client.get(s.gw.port, "/public/again").unwrap().status, 200);
}

#[test]
fn a_certificate_less_handshake_on_a_required_listener_is_counted_and_never_served() {
    let s = setup();
    let anonymous = s.pki.client(None);
    for _ in 0..2 {
        let outcome = anonymous
            .connect(s.gw.port)
            .and_then(|mut c| c.request("GET", "/public/x", &[]));
        assert!(
            outcome.is_err(),
            "served without a certificate: {:?}",
            outcome.map(|r| r.status)
        );
    }
    // HTTP/2 (curl) without a certificate gets no answer either.
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("--cacert")
        .arg(s.pki.path("ca.pem"))
        .arg(format!("https://localhost:{}/public/x", s.gw.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");
    s.gw.wait_metric(
        "portcullis_tls_handshake_failures_total{listener=\"public\",reason=\"no_certificate\"}",
        3.0,
    );
    assert_eq!(
        s.gw.metric("portcullis_requests_total{tenant=\"acme\",route=\"public\",status_class=\"2xx\",decision=\"allowed\"}"),
        0.0
    );
}

#[test]
fn tls12_uses_the_servers_cipher_order() {
    let s = setup();
    // The client prefers ChaCha20; the server's order puts AES-256-GCM first.
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", s.gw.port)])
        .args(["-servername", "localhost", "-tls1_2"])
        .args([
            "-cipher",
            "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
        ])
        .arg("-CAfile")
        .arg(s.pki.path("ca.pem"))
        .arg("-cert")
        .arg(s.pki.path("frontend.pem"))
        .arg("-key")
        .arg(s.pki.path("frontend.key"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Cipher is ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{text}"
    );
}

/// Runs `h2_client.py MODE` against the gateway; its JSON verdict.
fn h2_script(s: &Setup, mode: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/h2_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(s.gw.port.to_string())
        .arg(s.pki.path("ca.pem"))
        .arg(s.pki.path("frontend.pem"))
        .arg(s.pki.path("frontend.key"))
        .arg(mode)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{mode}: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// GOAWAY ENHANCE_YOUR_CALM, PROTOCOL_ERROR or a plain close: the connection is over.
fn assert_connection_closed(mode: &str, verdict: &serde_json::Value) {
    let goaway = verdict["goaway"].as_u64();
    assert!(
        matches!(goaway, Some(0xb) | Some(0x1)) || verdict["closed"] == true,
        "{mode}: {verdict}"
    );
}

#[test]
fn http2_floods_close_the_offending_connection_only() {
    // Reset streams count as requests: a cap of 3 would end the control run's connection.
    let s = setup_with(&CONNECTIONS.replace(
        "max_requests_per_connection: 3",
        "max_requests_per_connection: 1000",
    ));
    // The script itself works: one ordinary request is answered.
    let verdict = h2_script(&s, "normal");
    assert_eq!(verdict["responses"], 1, "{verdict}");
    let verdict = h2_script(&s, "few_resets");
    assert_eq!(
        verdict["responses"], 1,
        "a few resets are no flood: {verdict}"
    );
    let verdict = h2_script(&s, "rapid_reset");
    eprintln!("rapid_reset: {verdict}");
    assert_connection_closed("rapid_reset", &verdict);
    let (status, latency) = timed_get(&s);
    assert_eq!(status, 200);
    assert!(latency < Duration::from_secs(1), "{latency:?}");

    let verdict = h2_script(&s, "continuation_flood");
    eprintln!("continuation_flood: {verdict}");
    assert_connection_closed("continuation_flood", &verdict);
    let (status, latency) = timed_get(&s);
    assert_eq!(status, 200);
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    let (version, status, _) = curl_h2(&s.pki, "frontend", s.gw.port, "/public/h2");
    assert_eq!((version.as_str(), status), ("2", 200));
}

#[test]
fn a_client_that_stops_reading_is_cut_at_the_write_timeout() {
    let s = setup();
    let script = std::thread::scope(|scope| {
        let stalled = scope.spawn(|| h2_script(&s, "stalled_window"));
        // Others are served at normal latency while it hangs.
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..3 {
            let (status, latency) = timed_get(&s);
            assert_eq!(status, 200);
            assert!(latency < Duration::from_millis(500), "{latency:?}");
        }
        stalled.join().unwrap()
    });
    eprintln!("stalled_window: {script}");
    // Its stream is reset once the write timeout (1 s) passes, and its in-flight slot is free.
    assert!(
        script["resets"].as_u64() >= Some(1) || script["closed"] == true,
        "{script}"
    );
    let seconds = script["seconds"].as_f64().unwrap_or(99.0);
    assert!(seconds < 4.0, "{script}");
    let m =
        s.gw.wait_metric_at_most("portcullis_requests_in_flight", 0.0);
    assert_eq!(
        metric_value(&m, "portcullis_requests_in_flight"),
        0.0,
        "{m}"
    );
}

/// An HTTP/1.1 client that asks for a large response and never reads it (a 2 KiB receive
/// buffer): the gateway's writes stall and the connection is cut at the write timeout, its
/// in-flight slot freed, while other clients are served at normal latency.
#[test]
fn an_http1_client_that_stops_reading_is_cut_at_the_write_timeout() {
    // Heads large enough that the echo's answer (which repeats them) overflows any loopback
    // buffer: three 250 KB headers.
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "slow");
    // Requests come 1.5 s apart (see below): more requests and a longer idle allowance.
    let connections = CONNECTIONS
        .replace(
            "max_requests_per_connection: 3",
            "max_requests_per_connection: 100",
        )
        .replace("      idle_timeout: 1s\n", "      idle_timeout: 5s\n");
    let yaml = base_config(echo.port).replacen(
        "      client_ca: ca.pem\n",
        &format!("      client_ca: ca.pem\n{connections}"),
        1,
    );
    let yaml = format!("http: {{ max_request_head: 1000000, max_header_line: 300000 }}\n{yaml}");
    let gw = Gateway::start(pki.dir.path(), &yaml);
    let s = Setup {
        pki,
        _echo: echo,
        gw,
    };
    let before = timeouts(&s.gw, "write");
    let mut conn = s
        .pki
        .client(Some("frontend"))
        .connect_small_window(s.gw.port, 2048)
        .unwrap();
    let pad = "p".repeat(250_000);
    let request = format!(
        "GET /public/big HTTP/1.1\r\nHost: localhost\r\nX-Pad-1: {pad}\r\nX-Pad-2: {pad}\r\nX-Pad-3: {pad}\r\n\r\n"
    );
    // One request after another on the keep-alive connection, never reading an answer, until
    // the kernel buffers between the two ends are full and the gateway's write stalls. Each
    // request waits 1.5 s: longer than the 1 s write timeout, so that no request arrives while
    // a response is still being written (pingora would take it for pipelining and close).
    conn.raw()
        .sock
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    for _ in 0..12 {
        let sent = conn.raw().write_all(request.as_bytes());
        if sent.and_then(|_| conn.raw().flush()).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1500));
        if timeouts(&s.gw, "write") > before {
            break;
        }
    }
    for _ in 0..3 {
        let (status, latency) = timed_get(&s);
        assert_eq!(status, 200);
        assert!(latency < Duration::from_millis(500), "{latency:?}");
    }
    // Not reading: the gateway's write stalled and it cut the connection after 1 s.
    let (_, closed) = conn.read_until_closed(Duration::from_secs(5));
    assert!(closed, "the stalled connection is still open");
    // Our socket-level timer counts it; pingora's own session write timeout (same 1 s) may
    // win the race and only log it.
    let log = s.gw.proc.log_text();
    assert!(
        timeouts(&s.gw, "write") > before || log.contains("WriteTimedout"),
        "no write timeout:\n{log}"
    );
    s.gw.wait_metric_at_most("portcullis_requests_in_flight", 0.0);
}

/// The listener-wide cap holds (whatever the source) and frees.
#[test]
fn the_listener_cap_holds_and_frees() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "cap");
    let yaml = base_config(echo.port).replacen(
        "      client_ca: ca.pem\n",
        "      client_ca: ca.pem\n    connections: { max_connections: 2, max_connections_per_source: 2 }\n",
        1,
    );
    let gw = Gateway::start(pki.dir.path(), &yaml);
    let client = pki.client(Some("frontend"));
    let held: Vec<Conn> = (0..2).map(|_| client.connect(gw.port).unwrap()).collect();
    assert!(client
        .connect(gw.port)
        .and_then(|mut c| c.request("GET", "/public/x", &[]))
        .is_err());
    let refused =
        "portcullis_connections_refused_total{listener=\"public\",reason=\"listener_full\"}";
    assert_eq!(gw.metric(refused), 1.0);
    drop(held);
    gw.wait_metric_at_most("portcullis_connections_open{listener=\"public\"}", 0.0);
    assert_eq!(client.get(gw.port, "/public/x").unwrap().status, 200);
}

/// `max_requests_per_connection` holds on HTTP/2 too: after the third request the gateway
/// sends GOAWAY, and the client's fourth request opens a new connection.
#[test]
fn http2_connections_are_capped_in_requests() {
    let s = setup();
    let url = format!("https://localhost:{}/public/x", s.gw.port);
    let out = curl_as(&s.pki, "frontend")
        .args(["-sS", "--http2", "-w", "%{http_code} %{num_connects}\n"])
        .args((0..5).flat_map(|_| ["-o", "/dev/null", url.as_str()]))
        .output()
        .unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        ["200 1", "200 0", "200 0", "200 1", "200 0"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTP/2 upload that stops sending is cut at `body_idle_timeout` (1 s here): pingora 0.9
/// has no HTTP/2 read timeout, so the gateway's own watchdog drops the connection.
#[test]
fn a_stalled_http2_request_body_is_cut_at_the_body_idle_timeout() {
    let s = setup();
    let before = timeouts(&s.gw, "body_idle");
    let verdict = h2_script(&s, "stalled_body");
    assert!(
        verdict["closed"] == true || verdict["resets"].as_u64() > Some(0),
        "{verdict}"
    );
    let seconds = verdict["seconds"].as_f64().unwrap_or(99.0);
    assert!((0.9..5.0).contains(&seconds), "{verdict}");
    assert!(timeouts(&s.gw, "body_idle") > before);
    s.gw.wait_metric_at_most("portcullis_requests_in_flight", 0.0);
}
