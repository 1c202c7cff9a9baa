use super::*;

/// What the line was when serde wrote it (tracing's flattened JSON envelope).
#[derive(Serialize)]
struct Envelope<'a> {
    timestamp: String,
    level: &'static str,
    message: &'static str,
    #[serde(flatten)]
    line: &'a AccessLine<'a>,
    target: &'static str,
}

fn by_serde(line: &AccessLine<'_>, now: SystemTime) -> String {
    let envelope = Envelope {
        timestamp: humantime::format_rfc3339_micros(now).to_string(),
        level: "INFO",
        message: "request",
        line,
        target: "access",
    };
    serde_json::to_string(&envelope).unwrap() + "\n"
}

fn by_hand(line: &AccessLine<'_>, now: SystemTime, seconds: &mut Seconds) -> String {
    let mut out = Vec::new();
    line.write_json(now, seconds, &mut out);
    String::from_utf8(out).unwrap()
}

fn line(path: &str) -> AccessLine<'_> {
    AccessLine {
        duration_ms: 1.261815,
        request_id: "4b562a76510c4674ac50c6cd740f916b",
        trace_id: None,
        tenant: "bench",
        route: "bench/all",
        caller: "spiffe://bench.local/ns/bench/sa/client",
        client_ip: Some([127, 0, 0, 1].into()),
        tls_version: "TLSv1_3",
        method: "GET",
        path,
        path_bytes: None,
        version: "HTTP/1.1",
        status: 200,
        grpc_status: None,
        direction: None,
        failover: None,
        decision: "allow",
        rule: "bench-client",
        dlp: "-",
        suppressed: 0,
    }
}

#[test]
fn a_suppressed_count_is_written_like_serde_writes_it() {
    let mut seconds = Seconds::default();
    let t0 = UNIX_EPOCH + Duration::from_micros(1_764_558_593_000_042);
    let mut l = line("/x");
    l.suppressed = 17;
    let ours = by_hand(&l, t0, &mut seconds);
    assert_eq!(ours, by_serde(&l, t0));
    assert!(ours.contains(",\"log.suppressed\":17,"));
    l.grpc_status = Some(7);
    let ours = by_hand(&l, t0, &mut seconds);
    assert_eq!(ours, by_serde(&l, t0));
    assert!(ours.contains(",\"http.status\":200,\"grpc.status\":7,"));
    l.direction = Some("egress");
    let ours = by_hand(&l, t0, &mut seconds);
    assert_eq!(ours, by_serde(&l, t0));
    l.failover = Some("us-east");
    let ours = by_hand(&l, t0, &mut seconds);
    assert_eq!(ours, by_serde(&l, t0));
    assert!(ours.contains(",\"upstream.failover\":\"us-east\","));
}

#[test]
fn refusal_lines_are_sampled_per_tenant_and_code_and_the_count_is_carried() {
    let lines = RefusalLines::default();
    let admitted: Vec<_> = (0..25)
        .map(|_| lines.admit("t", "rate_limited", 100))
        .collect();
    assert!(admitted[..20].iter().all(|a| *a == Some(0)));
    assert!(admitted[20..].iter().all(Option::is_none));
    // Another code or tenant has its own allowance.
    assert_eq!(lines.admit("t", "forbidden", 100), Some(0));
    assert_eq!(lines.admit("u", "rate_limited", 100), Some(0));
    // The next second's first line carries the five left out.
    assert_eq!(lines.admit("t", "rate_limited", 101), Some(5));
    assert_eq!(lines.admit("t", "rate_limited", 101), Some(0));
}

#[test]
fn the_line_is_what_serde_wrote_byte_for_byte() {
    let mut seconds = Seconds::default();
    let t0 = UNIX_EPOCH + Duration::from_micros(1_764_558_593_000_042);
    let long = "é".repeat(700);
    let (cut, cut_bytes) = bounded_path(&long);
    let cases = [
        line("/bench/item"),
        AccessLine {
            client_ip: Some("2001:db8::1".parse().unwrap()),
            path: "/q\"uote\\back\u{1}slash\ttab\u{7f}/ünï",
            caller: "O=Evil \"Corp\", CN=a\nb",
            duration_ms: 0.0,
            status: 0,
            ..line("/")
        },
        AccessLine {
            client_ip: None,
            duration_ms: f64::NAN,
            path: cut,
            path_bytes: cut_bytes,
            ..line("/")
        },
        AccessLine {
            client_ip: Some([10, 200, 0, 255].into()),
            duration_ms: 1e-7,
            status: 65535,
            ..line("/")
        },
        AccessLine {
            duration_ms: 123456789.5,
            ..line("/")
        },
        AccessLine {
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ..line("/")
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        // Within one second (the cached text), then across seconds.
        for now in [
            t0,
            t0 + Duration::from_micros(999_000),
            t0 + Duration::from_secs(1),
            t0 + Duration::from_secs(86_400 * 400 + 7),
        ] {
            assert_eq!(
                by_hand(case, now, &mut seconds),
                by_serde(case, now),
                "case {i}"
            );
        }
    }
    assert_eq!(
        by_hand(&cases[0], UNIX_EPOCH, &mut seconds),
        by_serde(&cases[0], UNIX_EPOCH)
    );
}

#[test]
fn queued_lines_are_written_and_a_full_buffer_drops_instead_of_blocking() {
    let writer = Writer::new();
    writer.queue(b"one\n");
    writer.queue(b"two\n");
    let queued = writer.lock().queued;
    assert_eq!((queued, writer.lock().buf.len()), (2, 8));
    let big = vec![b'x'; MAX_BUFFERED - 8];
    writer.queue(&big);
    writer.queue(b"three\n");
    let q = writer.lock();
    assert_eq!((q.queued, q.dropped, q.buf.len()), (3, 1, MAX_BUFFERED));
}

#[test]
fn escapes_are_found_in_every_position() {
    assert!(!needs_escape(b""));
    assert!(!needs_escape(
        "spiffe://a.b/ns/x/sa/y ünï \x7f ~!".as_bytes()
    ));
    for len in 1..20 {
        for at in 0..len {
            for bad in [b'"', b'\\', 0, 0x1f, b'\n'] {
                let mut text = vec![b'a'; len];
                text[at] = bad;
                assert!(needs_escape(&text), "{bad} at {at} of {len}");
            }
            let mut text = vec![0xff; len];
            text[at] = 0x20;
            assert!(!needs_escape(&text));
        }
    }
}

#[test]
fn long_paths_are_cut_on_a_character_boundary() {
    let path = format!("/{}", "é".repeat(600));
    let (cut, whole) = bounded_path(&path);
    assert!(cut.len() <= PATH_MAX && path.starts_with(cut));
    assert_eq!(whole, Some(path.len()));
    assert_eq!(bounded_path("/short"), ("/short", None));
}
