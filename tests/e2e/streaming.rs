//! Streamed responses leave as the upstream sends them: a response header sent before any body
//! (a long poll) and each server-sent event reach the client while the upstream still holds the
//! rest, through a route that passes responses as they are and through one whose DLP may redact
//! them (the gateway then re-frames the body chunked), over HTTP/1.1 and HTTP/2. The write
//! coalescing (our pingora patch's one flush per batch of response tasks, vendor/README.md, and
//! the downstream stream gathering writes until a flush) must never hold a part back until the
//! response ends.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::*;

const CARD: &str = "4111 1111 1111 1111";

const CONFIG: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
metrics:
  address: 127.0.0.1:{metrics}
upstreams:
  - name: events
    targets: [127.0.0.1:{events}]
tenants:
  - name: feed
    routes:
      - name: redacting
        path_prefix: /redacting
        upstream: events
        dlp:
          response: { card_number: redact }
        access: [ { id: redacting-anyone } ]
      - name: plain
        path_prefix: /plain
        upstream: events
        access: [ { id: plain-anyone } ]
"#;

/// How long a part the upstream has sent may take to reach the client: generous, because the
/// machine may be loaded; the upstream holds the rest far longer (until told).
const PROMPT: Duration = Duration::from_secs(10);

/// A plain-HTTP upstream answering each request in steps, each step waiting for a message on
/// the returned channel: the response header, the first event (holding a card number), then
/// the last event with the end of the chunked body. With `header_apart` the header is a step of
/// its own (a long poll), otherwise it leaves with the first event, in one write.
fn event_upstream(shapes: Vec<bool>) -> (u16, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, steps) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for header_apart in shapes {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(tcp.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut out = tcp;
            let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
            let header = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                          transfer-encoding: chunked\r\n\r\n";
            let first = chunk(&format!("data: one {CARD}\n\n"));
            let last = chunk("data: two\n\n") + "0\r\n\r\n";
            let parts = match header_apart {
                true => vec![header.to_owned(), first, last],
                false => vec![header.to_owned() + &first, last],
            };
            for part in parts {
                if steps.recv_timeout(Duration::from_secs(60)).is_err() {
                    return;
                }
                if out.write_all(part.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (port, tx)
}

/// Each route with the header sent apart (a long poll) and with the first event.
const CASES: [(&str, bool); 4] = [
    ("plain", true),
    ("plain", false),
    ("redacting", true),
    ("redacting", false),
];

/// A gateway in front of an [`event_upstream`] answering each of `cases` once, and its steps.
fn start(pki: &Pki, cases: &[(&str, bool)]) -> (Gateway, mpsc::Sender<()>) {
    let (events, step) = event_upstream(cases.iter().map(|c| c.1).collect());
    let gw = Gateway::start(
        pki.dir.path(),
        &CONFIG.replace("{events}", &events.to_string()),
    );
    (gw, step)
}

#[test]
fn a_streamed_response_reaches_the_client_part_by_part() {
    let pki = Pki::new();
    let (gw, step) = start(&pki, &CASES);
    let client = pki.client(Some("frontend"));
    for (route, header_apart) in CASES {
        let case = format!("{route}, header apart: {header_apart}");
        let mut conn = client.connect(gw.port).unwrap();
        let head = format!("GET /{route}/events HTTP/1.1\r\nHost: localhost\r\n\r\n");
        conn.raw().write_all(head.as_bytes()).unwrap();
        conn.raw().flush().unwrap();

        step.send(()).unwrap();
        let mut got = conn.read_until(b"\r\n\r\n", PROMPT);
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{case}: header held back: {got:?}"
        );
        if header_apart {
            assert!(!got.windows(5).any(|w| w == b"data:"), "{case}: {got:?}");
            step.send(()).unwrap();
        }
        let needle = b"\n\n";
        let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        if !got[body_at..].windows(2).any(|w| w == needle) {
            got.extend(conn.read_until(needle, PROMPT));
        }
        let got = String::from_utf8_lossy(&got[body_at..]).into_owned();
        assert!(
            got.contains("data: one "),
            "{case}: first event held back: {got:?}"
        );
        match route {
            "redacting" => assert!(got.contains("[REDACTED:card_number]"), "{case}: {got:?}"),
            _ => assert!(got.contains(CARD), "{case}: {got:?}"),
        }
        assert!(!got.contains("two"), "{case}: {got:?}");

        step.send(()).unwrap();
        let got = String::from_utf8_lossy(&conn.read_until(b"0\r\n\r\n", PROMPT)).into_owned();
        assert!(got.contains("data: two\n\n"), "{case}: {got:?}");
        assert!(got.ends_with("0\r\n\r\n"), "{case}: {got:?}");
    }
}

/// The lines curl prints as they arrive (`-N`: unbuffered; `-i`: the response head first), for
/// a GET of `path` over HTTP/2.
fn h2_lines(pki: &Pki, port: u16, path: &str) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = curl_as(pki, "frontend")
        .args(["-sS", "-N", "-i", "--http2", "--max-time", "60"])
        .arg(format!("https://localhost:{port}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, lines)
}

/// The lines up to and including the first that contains `needle` (fails after [`PROMPT`]).
fn lines_until(lines: &mpsc::Receiver<String>, needle: &str, case: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        match lines.recv_timeout(PROMPT) {
            Ok(line) => {
                let found = line.contains(needle);
                got.push(line);
                if found {
                    return got;
                }
            }
            Err(e) => panic!("{case}: no {needle:?} ({e}) after {got:?}"),
        }
    }
}

/// Over HTTP/2 each event leaves as the upstream sends it. Not covered: a head sent alone (a
/// long poll) — over HTTP/2 it reaches the client only with the first body bytes (seen before
/// this change as after it; README, "Not built yet").
#[test]
fn over_http2_each_event_reaches_the_client_as_it_is_sent() {
    let pki = Pki::new();
    let cases = [("plain", false), ("redacting", false)];
    let (gw, step) = start(&pki, &cases);
    for (route, _) in cases {
        let case = format!("HTTP/2, {route}");
        let (mut curl, lines) = h2_lines(&pki, gw.port, &format!("/{route}/events"));

        step.send(()).unwrap();
        let got = lines_until(&lines, "data: one ", &case);
        assert!(got[0].starts_with("HTTP/2 200"), "{case}: {got:?}");
        let got = got.join("\n");
        match route {
            "redacting" => assert!(got.contains("[REDACTED:card_number]"), "{case}: {got}"),
            _ => assert!(got.contains(CARD), "{case}: {got}"),
        }
        assert!(!got.contains("two"), "{case}: {got}");

        step.send(()).unwrap();
        lines_until(&lines, "data: two", &case);
        let status = curl.wait().unwrap();
        assert!(status.success(), "{case}: curl {status}");
    }
}
