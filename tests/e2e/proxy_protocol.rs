//! A listener behind an L4 balancer (`connections.proxy_protocol`): HAProxy in `mode tcp` with
//! `send-proxy-v2` in front of the gateway, clients bound to distinct loopback addresses so the
//! carried address differs from the balancer's (the carried address is what `source` rules,
//! per-source limits, X-Forwarded-For and the access log see); then the attacks straight at the
//! gateway: a forged header from elsewhere, malformed, oversized, dribbled and split headers,
//! a bare ClientHello, and the per-source connection cap counted by the carried address.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::proxy::base_config;

/// The balancers: HAProxy connects from 127.0.0.1; the hand-made headers come from 127.0.0.9.
const BALANCED: &str = "    connections:
      handshake_timeout: 2s
      max_connections_per_source: 2
      proxy_protocol:
        from: [127.0.0.1, 127.0.0.9/32]
        timeout: 1s
";

/// A route only 127.0.0.7 may use, and a per-source request budget.
const ROUTES: &str = "      - name: only7
        path_prefix: /only7
        upstream: echo
        access:
          - id: from-7
            source: [127.0.0.7/32]
";

const LIMITS: &str = "    limits:
      per_source: { requests: 4, per: 1m, burst: 4 }
";

const AUDIT: &str = "audit:
  directory: audit
  signing_key: audit.key
  node: gw-proxied
";

const ALLOWED: [u8; 4] = [127, 0, 0, 9];

struct Setup {
    pki: Pki,
    _echo: Echo,
    gw: Gateway,
}

/// With `haproxy`: a per-source limit, an audit log, and no connection cap in the way.
fn setup(haproxy: bool) -> Setup {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "e1");
    let mut yaml = base_config(echo.port)
        .replacen(
            "      client_ca: ca.pem\n",
            &format!("      client_ca: ca.pem\n{BALANCED}"),
            1,
        )
        .replacen("    routes:\n", &format!("    routes:\n{ROUTES}"), 1);
    if haproxy {
        // Connections through HAProxy close as fast as the test opens them: no cap in the way.
        yaml = yaml
            .replacen("    routes:\n", &format!("{LIMITS}    routes:\n"), 1)
            .replacen(
                "max_connections_per_source: 2",
                "max_connections_per_source: 50",
                1,
            )
            .replacen("shutdown:\n", &format!("{AUDIT}shutdown:\n"), 1);
    }
    let gw = Gateway::start(pki.dir.path(), &yaml);
    Setup {
        pki,
        _echo: echo,
        gw,
    }
}

/// HAProxy in TCP mode on a free loopback port, sending a v2 header to the gateway.
struct Haproxy {
    port: u16,
    _proc: Proc,
}

impl Haproxy {
    fn start(dir: &std::path::Path, gateway: u16) -> Self {
        let port = free_port();
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  \
                 timeout client 10s\n  timeout server 10s\nfrontend fe\n  bind 127.0.0.1:{port}\n  \
                 default_backend be\nbackend be\n  server gw 127.0.0.1:{gateway} send-proxy-v2\n"
            ),
        )
        .unwrap();
        let log = dir.join("haproxy.log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("haproxy (deploy/setup-debian.sh --test installs it)");
        wait_for_port(port);
        Self {
            port,
            _proc: Proc { child, log },
        }
    }
}

fn refused(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "portcullis_connections_refused_total{{listener=\"public\",reason=\"{reason}\"}}"
    ))
}

fn echoed(resp: &Response, name: &str) -> Option<String> {
    resp.json()["headers"][name][0].as_str().map(str::to_owned)
}

/// The access line of a request, once it is written (lines are flushed before /metrics).
fn access_line(gw: &Gateway, resp: &Response) -> serde_json::Value {
    let id = resp.header("x-request-id").unwrap().to_owned();
    let _ = gw.metrics();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = gw
            .proc
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["request.id"] == id.as_str());
        if let Some(line) = found {
            return line;
        }
        assert!(Instant::now() < deadline, "no access line for {id}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn v2_header(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&source);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8443u16.to_be_bytes());
    h
}

/// Whether the gateway closes `tcp` (EOF or reset) within `limit`.
fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    tcp.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn behind_haproxy_the_carried_address_is_the_client() {
    let s = setup(true);
    let lb = Haproxy::start(s.pki.dir.path(), s.gw.port);
    let client = s.pki.client(Some("frontend"));
    let via = |source: [u8; 4], path: &str| {
        client
            .connect_from(source, lb.port, b"")
            .and_then(|mut c| c.request("GET", path, &[]))
            .unwrap()
    };
    // The `source` rule sees the carried address, not HAProxy's 127.0.0.1.
    let resp = via([127, 0, 0, 7], "/only7/x");
    assert_eq!(resp.status, 200);
    assert_eq!(
        echoed(&resp, "x-forwarded-for").as_deref(),
        Some("127.0.0.7")
    );
    let line = access_line(&s.gw, &resp);
    assert_eq!(line["client.ip"], "127.0.0.7", "{line}");
    let denied = via([127, 0, 0, 8], "/only7/x");
    assert_eq!(denied.status, 403);
    assert_eq!(access_line(&s.gw, &denied)["client.ip"], "127.0.0.8");
    // The per-source budget (4 a minute) is 127.0.0.7's own: its fifth request is refused,
    // while 127.0.0.8, through the same balancer, is still served.
    for _ in 0..3 {
        assert_eq!(via([127, 0, 0, 7], "/public/x").status, 200);
    }
    assert_eq!(via([127, 0, 0, 7], "/public/x").status, 429);
    assert_eq!(via([127, 0, 0, 8], "/public/x").status, 200);
    assert_eq!(refused(&s.gw, "proxy_source"), 0.0);
    assert_eq!(refused(&s.gw, "proxy_header"), 0.0);

    // The audit record names the carried address too.
    let mut s = s;
    s.gw.proc.signal("TERM");
    assert!(s.gw.proc.wait_exit(Duration::from_secs(10)).is_some());
    let out = Command::new(bin())
        .args(["audit", "query"])
        .arg(s.pki.path("audit"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = resp.header("x-request-id").unwrap();
    let completed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["event"]["request_id"] == id && r["event"]["stage"] == "completed")
        .expect("the completed record of the request from 127.0.0.7");
    assert_eq!(completed["event"]["source"], "127.0.0.7");
}

#[test]
fn only_well_formed_headers_from_the_balancers_are_accepted() {
    let s = setup(false);
    let client = s.pki.client(Some("frontend"));
    let port = s.gw.port;

    // A forged header straight from a host that is not a balancer: closed before TLS.
    let forged = client.connect_from([127, 0, 0, 3], port, &v2_header([127, 0, 0, 7], 4000));
    assert!(
        forged.is_err(),
        "a forged header from 127.0.0.3 was accepted"
    );
    assert_eq!(refused(&s.gw, "proxy_source"), 1.0);

    // A v1 line from a balancer: accepted, its source used by the rule.
    let v1 = format!("PROXY TCP4 127.0.0.7 127.0.0.1 4001 {port}\r\n");
    let mut conn = client.connect_from(ALLOWED, port, v1.as_bytes()).unwrap();
    assert_eq!(conn.request("GET", "/only7/v1", &[]).unwrap().status, 200);
    drop(conn);

    // LOCAL (a health check) keeps the balancer's own address.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let mut conn = client.connect_from(ALLOWED, port, local).unwrap();
    let resp = conn.request("GET", "/public/local", &[]).unwrap();
    assert_eq!(
        echoed(&resp, "x-forwarded-for").as_deref(),
        Some("127.0.0.9")
    );
    assert_eq!(
        conn.request("GET", "/only7/local", &[]).unwrap().status,
        403
    );
    drop(conn);

    // A TLS ClientHello with no header, from a balancer: refused.
    assert!(client.connect_from(ALLOWED, port, b"").is_err());
    assert_eq!(refused(&s.gw, "proxy_header"), 1.0);

    // A malformed line, and an oversized v2 header: closed, each counted.
    let mut bad = tcp_from(ALLOWED, port).unwrap();
    bad.write_all(b"PROXY TCP4 127.0.0.7 127.0.0.1 04001 8443\r\n")
        .unwrap();
    assert!(closed_within(&mut bad, Duration::from_secs(3)));
    assert_eq!(refused(&s.gw, "proxy_header"), 2.0);
    let mut big = tcp_from(ALLOWED, port).unwrap();
    big.write_all(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff")
        .unwrap();
    assert!(closed_within(&mut big, Duration::from_secs(3)));
    assert_eq!(refused(&s.gw, "proxy_header_size"), 1.0);

    // A header dribbled a byte every 100 ms: cut at the 1 s timeout, before it is whole.
    let mut slow = tcp_from(ALLOWED, port).unwrap();
    let started = Instant::now();
    let mut cut = false;
    for b in v1.as_bytes() {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(cut || closed_within(&mut slow, Duration::from_secs(2)));
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    s.gw.wait_metric(
        "portcullis_connection_timeouts_total{listener=\"public\",timeout=\"proxy_header\"}",
        1.0,
    );

    // A header split across TCP segments, whole within the timeout: accepted, and the
    // ClientHello after it intact.
    let header = v2_header([127, 0, 0, 7], 4002);
    let mut tcp = tcp_from(ALLOWED, port).unwrap();
    for piece in [&header[..5], &header[5..14], &header[14..]] {
        tcp.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut conn = client.over(tcp).unwrap();
    assert_eq!(
        conn.request("GET", "/only7/split", &[]).unwrap().status,
        200
    );
    drop(conn);

    // The per-source connection cap (2) counts the carried address: a third connection
    // carried from 127.0.0.21 is closed, one carried from 127.0.0.22 is served.
    let carried = |last: u8| v2_header([127, 0, 0, last], 5000);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = client.connect_from(ALLOWED, port, &carried(21)).unwrap();
        assert_eq!(c.request("GET", "/public/held", &[]).unwrap().status, 200);
        held.push(c);
    }
    let before = refused(&s.gw, "source_full");
    assert!(client
        .connect_from(ALLOWED, port, &carried(21))
        .and_then(|mut c| c.request("GET", "/public/third", &[]))
        .is_err());
    assert_eq!(refused(&s.gw, "source_full"), before + 1.0);
    let mut other = client.connect_from(ALLOWED, port, &carried(22)).unwrap();
    assert_eq!(
        other.request("GET", "/public/other", &[]).unwrap().status,
        200
    );
}
