//! `fairness`: with the gateway at `max_in_flight`, a tenant whose requests are slow (within
//! its own limits) cannot make another tenant wait behind its queue — a freed slot goes to
//! the tenant with the fewest requests in flight for its weight — nor fill the gateway while
//! another tenant is using it (it holds at most its weight's share, and the rest stay free),
//! and a request that waits past `queue_timeout` gets 503 `overloaded` with Retry-After.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

fn config(echo_port: u16, max_in_flight: u32, queue_timeout: &str) -> String {
    format!(
        r#"
listeners:
  - name: public
    address: 127.0.0.1:{{port}}
    tls:
      certificate: server.pem
      private_key: server.key
      client_auth: required
      client_ca: ca.pem
metrics:
  address: 127.0.0.1:{{metrics}}
fairness:
  max_in_flight: {max_in_flight}
  queue_timeout: {queue_timeout}
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo_port}]
    read_timeout: 10s
tenants:
  - name: slow
    limits: {{ weight: 1 }}
    routes:
      - name: slow
        path_prefix: /slow
        upstream: echo
        access: [{{ id: anyone }}]
  - name: quick
    limits: {{ weight: 1 }}
    routes:
      - name: quick
        path_prefix: /quick
        upstream: echo
        access: [{{ id: anyone }}]
"#
    )
}

/// `n` requests of `secs` seconds each to /slow, each on its own connection, started together.
fn slow_requests(pki: &Pki, port: u16, n: usize, secs: u64) -> Vec<std::thread::JoinHandle<u16>> {
    let delay = (secs * 1000).to_string();
    (0..n)
        .map(|i| {
            let client = pki.client(Some("frontend"));
            let delay = delay.clone();
            std::thread::spawn(move || {
                let mut conn = client.connect(port).unwrap();
                conn.request(
                    "GET",
                    &format!("/slow/{i}"),
                    &[("x-echo-delay-ms", delay.as_str())],
                )
                .map_or(0, |r| r.status)
            })
        })
        .collect()
}

/// One GET as `frontend` on a new connection: its status and how long it took.
fn timed_get(pki: &Pki, port: u16, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = pki.client(Some("frontend")).get(port, path).unwrap().status;
    (status, started.elapsed())
}

#[test]
fn a_slow_tenant_at_the_cap_does_not_queue_another_tenant_behind_it() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "fair");
    let gw = Gateway::start(pki.dir.path(), &config(echo.port, 4, "10s"));
    // Twelve one-second requests of `slow`: four in flight, eight waiting (three rounds).
    let slow = slow_requests(&pki, gw.port, 12, 1);
    let queued = "portcullis_fairness_queued_requests{tenant=\"slow\"}";
    gw.wait_metric(queued, 8.0);
    // `quick` gets the first slot that frees (about a second), not the fourth round's.
    let (status, waited) = timed_get(&pki, gw.port, "/quick/x");
    assert_eq!(status, 200);
    assert!(
        waited < Duration::from_millis(1900),
        "quick waited {waited:?} (first in, first out would be about 3 s)"
    );
    let statuses: Vec<u16> = slow.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let m = gw.metrics();
    assert!(
        metric_value(
            &m,
            "portcullis_fairness_wait_seconds_count{tenant=\"quick\"}"
        ) >= 1.0
    );
    assert_eq!(metric_value(&m, queued), 0.0);
}

/// Eight two-second requests of `slow` at once (`open` starts them and gives back a wait for
/// their statuses) beside `quick`'s steady requests.
type OpenSlow = fn(&Pki, u16) -> Box<dyn FnOnce() -> Vec<u16>>;

#[test]
fn a_slow_tenant_cannot_fill_the_gateway_while_another_tenant_is_active() {
    held_to_its_share("fair-share", |pki, port| {
        let slow = slow_requests(pki, port, 8, 2);
        Box::new(move || slow.into_iter().map(|h| h.join().unwrap()).collect())
    });
}

/// The same over HTTP/2, the eight requests as streams of one already-open connection.
#[test]
fn a_slow_tenant_cannot_fill_the_gateway_with_the_streams_of_one_http2_connection() {
    held_to_its_share("fair-share-h2", |pki, port| {
        let mut curl = curl_as(pki, "frontend");
        curl.args(["-sS", "--http2", "--parallel", "--parallel-max", "8"])
            .args(["--max-time", "20", "-H", "x-echo-delay-ms: 2000"])
            .args(["-w", "\n%{http_version} %{http_code} %{num_connects}\n"]);
        for i in 0..8 {
            curl.arg(format!("https://localhost:{port}/slow/{i}"));
        }
        let child = curl.stdout(std::process::Stdio::piped()).spawn().unwrap();
        Box::new(move || {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let answers: Vec<Vec<u32>> = text
                .lines()
                .filter(|l| l.starts_with("2 "))
                .map(|l| l.split(' ').map(|n| n.parse().unwrap()).collect())
                .collect();
            assert_eq!(answers.len(), 8, "{text}");
            let connects: u32 = answers.iter().map(|a| a[2]).sum();
            assert_eq!(connects, 1, "not one connection: {text}");
            answers.iter().map(|a| a[1] as u16).collect()
        })
    });
}

fn held_to_its_share(echo_name: &str, open_slow: OpenSlow) {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), echo_name);
    let gw = Gateway::start(pki.dir.path(), &config(echo.port, 4, "10s"));
    // `quick` sends a request every 100 ms on one keep-alive connection, as a steady user.
    let stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let client = pki.client(Some("frontend"));
        let stop = Arc::clone(&stop);
        let port = gw.port;
        std::thread::spawn(move || {
            let mut conn = client.connect(port).unwrap();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(
                    conn.request("GET", "/quick/tick", &[])
                        .map_or(0, |r| r.status),
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            statuses
        })
    };
    gw.wait_metric(
        "portcullis_requests_total{decision=\"allow\",route=\"quick/quick\",status_class=\"2xx\",tenant=\"quick\"}",
        1.0,
    );
    // `slow` opens eight two-second requests at once: it gets two of the four slots (its half
    // while `quick` is active), the other six wait although two slots are free.
    let slow = open_slow(&pki, gw.port);
    let queued = "portcullis_fairness_queued_requests{tenant=\"slow\"}";
    gw.wait_metric(queued, 6.0);
    // Waiters look again every 100 ms; still six wait.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        gw.metric(queued),
        6.0,
        "the slow tenant took more than its share"
    );
    // So `quick` is answered at once, not after a slow request frees a slot (up to 2 s).
    let (status, waited) = timed_get(&pki, gw.port, "/quick/now");
    assert_eq!(status, 200);
    assert!(
        waited < Duration::from_millis(700),
        "quick waited {waited:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let statuses = steady.join().unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Once `quick` has been idle for a second, `slow` may use the whole gateway: all eight
    // are served, none refused.
    let statuses = slow();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[test]
fn a_request_that_waits_past_the_queue_timeout_gets_503_overloaded() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "fair-timeout");
    let gw = Gateway::start(pki.dir.path(), &config(echo.port, 2, "200ms"));
    let slow = slow_requests(&pki, gw.port, 2, 1);
    gw.wait_metric("portcullis_requests_in_flight", 2.0);
    let started = Instant::now();
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let refused = conn.request("GET", "/quick/x", &[]).unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
    for h in slow {
        assert_eq!(h.join().unwrap(), 200);
    }
    // Once the slots are free the same connection is served at once.
    assert_eq!(conn.request("GET", "/quick/y", &[]).unwrap().status, 200);
    assert_eq!(
        gw.metric("portcullis_fairness_timeouts_total{tenant=\"quick\"}"),
        1.0
    );
}
