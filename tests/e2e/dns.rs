//! Upstreams found in DNS and failover between upstreams, against a real dnsmasq started on
//! loopback by each test (a random port, its own hosts file, `--local-ttl=1`): targets that
//! follow the answer, the last good targets kept while the name server is gone (and across a
//! config reload), SRV targets with their ports, a fallback upstream taking the requests
//! while the local one has no healthy target, and answers that must not be trusted.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::proxy::base_config;

/// A dnsmasq answering from `hosts` (re-read on SIGHUP) and its `--srv-host` lines, on
/// 127.0.0.1 at a random port, TTL 1 s; every query it answers is in its log.
struct Dnsmasq {
    port: u16,
    hosts: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Dnsmasq {
    fn start(dir: &Path, hosts: &str, srv: &[String]) -> Self {
        Self::start_ttl(dir, hosts, srv, 1)
    }

    fn start_ttl(dir: &Path, hosts: &str, srv: &[String], ttl: u32) -> Self {
        let port = free_port();
        let path = dir.join(format!("dns-hosts-{port}"));
        std::fs::write(&path, hosts).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let mut args = vec![
            "--no-daemon".to_owned(),
            format!("--port={port}"),
            "--listen-address=127.0.0.1".into(),
            "--bind-interfaces".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--conf-file=/dev/null".into(),
            "--pid-file".into(),
            format!("--user={user}"),
            format!("--addn-hosts={}", path.display()),
            format!("--local-ttl={ttl}"),
            "--log-facility=-".into(),
            "--log-queries".into(),
        ];
        args.extend(srv.iter().map(|s| format!("--srv-host={s}")));
        let log_path = dir.join(format!("dnsmasq-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("dnsmasq")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsmasq (deploy/setup-debian.sh --test installs it)");
        wait_for_port(port);
        Self {
            port,
            hosts: path,
            log: log_path,
            child: Some(child),
        }
    }

    /// How many `query[TYPE] NAME` lines the log has.
    fn queries(&self, kind: &str, name: &str) -> usize {
        let needle = format!("query[{kind}] {name} ");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    fn resolver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A new hosts file, read again at once.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let pid = self.child.as_ref().unwrap().id();
        assert!(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An echo upstream on a chosen address (distinct loopback addresses share a port).
fn echo_at(dir: &Path, name: &str, addr: &str) -> Proc {
    try_echo_at(dir, name, addr).unwrap_or_else(|log| panic!("{addr} never opened:\n{log}"))
}

/// Like `echo_at`; the echo's log when it could not listen there.
fn try_echo_at(dir: &Path, name: &str, addr: &str) -> Result<Proc, String> {
    let mut proc = spawn_env(
        &[
            "echo",
            "--exit-with-stdin",
            "--name",
            name,
            "--listen",
            addr,
        ],
        dir.join(format!("echo-{name}-{}.log", addr.replace(':', "-"))),
        &[],
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if start.elapsed() > Duration::from_secs(20) || matches!(proc.child.try_wait(), Ok(Some(_)))
        {
            return Err(proc.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

/// Echo upstreams named `names` on 127.0.0.2, 127.0.0.3… at one port (what an A answer
/// needs): a port free on every one of those addresses, tried again if one was not.
fn echoes_on_one_port(dir: &Path, names: &[&str]) -> (u16, Vec<Proc>) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let started: Result<Vec<Proc>, String> = names
            .iter()
            .enumerate()
            .map(|(i, name)| try_echo_at(dir, name, &format!("127.0.0.{}:{port}", i + 2)))
            .collect();
        match started {
            Ok(procs) => return (port, procs),
            Err(log) => last = log,
        }
    }
    panic!("no port free on every address:\n{last}");
}

/// `base_config` with its `echo` upstream's targets replaced by `with` (further keys of
/// the upstream, indented by four spaces).
fn upstream(with: &str) -> String {
    base_config(0).replace("    targets: [127.0.0.1:0]\n", with)
}

/// Which upstream answered `n` requests (the echo's name, or the status when not 200).
fn answers(client: &Client, port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let who = match client.get(port, "/public/x") {
            Ok(r) if r.status == 200 => r.json()["upstream"].as_str().unwrap_or("?").to_owned(),
            Ok(r) => format!("status {}", r.status),
            Err(e) => format!("error {}", e.kind()),
        };
        *seen.entry(who).or_default() += 1;
    }
    seen
}

/// Sends requests (for at most `limit`) until `done` holds for `row` answers in a row; how
/// long it took.
fn until(
    client: &Client,
    port: u16,
    limit: Duration,
    row: usize,
    done: impl Fn(&str) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let mut in_a_row = 0;
    while start.elapsed() < limit {
        let one = answers(client, port, 1);
        let who = one.keys().next().cloned().unwrap_or_default();
        if done(&who) {
            in_a_row += 1;
            if in_a_row == row {
                return Some(start.elapsed());
            }
        } else {
            in_a_row = 0;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    None
}

#[test]
fn targets_follow_the_dns_answer_and_the_last_good_set_outlives_the_name_server() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let (port, _echoes) = echoes_on_one_port(d, &["a", "b"]);
    let mut dns = Dnsmasq::start(d, "127.0.0.2 svc.test\n", &[]);
    let yaml = upstream(&format!(
        "    dns: {{ name: svc.test, port: {port}, resolver: {} }}\n",
        dns.resolver()
    ));
    let gw = Gateway::start(d, &yaml);
    let client = pki.client(Some("frontend"));
    // The first lookup is made before the pool serves.
    let first = answers(&client, gw.port, 10);
    assert_eq!(first, BTreeMap::from([("a".to_owned(), 10)]));
    gw.wait_metric(
        "portcullis_upstream_discovered_targets{upstream=\"echo\"}",
        1.0,
    );

    // The answer changes: within the TTL (1 s) and a refresh tick, b takes every request.
    dns.set_hosts("127.0.0.3 svc.test\n");
    let moved = until(&client, gw.port, Duration::from_secs(10), 10, |who| {
        who == "b"
    })
    .expect("the new target never took every request");
    println!("figure: new DNS answer (TTL 1 s) served alone after {moved:?}");
    assert!(moved < Duration::from_secs(5), "{moved:?}");
    assert_eq!(
        answers(&client, gw.port, 10),
        BTreeMap::from([("b".to_owned(), 10)])
    );

    // Both: round robin over the two.
    dns.set_hosts("127.0.0.2 svc.test\n127.0.0.3 svc.test\n");
    assert!(
        until(&client, gw.port, Duration::from_secs(10), 1, |who| who
            == "a")
        .is_some(),
        "a never came back"
    );
    let both = answers(&client, gw.port, 10);
    assert_eq!(both.get("a"), Some(&5), "{both:?}");
    assert_eq!(both.get("b"), Some(&5), "{both:?}");
    gw.wait_metric(
        "portcullis_upstream_discovered_targets{upstream=\"echo\"}",
        2.0,
    );

    // The name is gone from the answer (NXDOMAIN): an empty answer keeps the last good set.
    dns.set_hosts("");
    let emptied = Instant::now();
    while gw.metric("portcullis_upstream_discovery_errors_total{upstream=\"echo\"}") < 1.0 {
        assert!(
            emptied.elapsed() < Duration::from_secs(15),
            "no discovery error counted for an empty answer:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = answers(&client, gw.port, 10);
    assert_eq!(kept.get("a"), Some(&5), "{kept:?}");
    assert_eq!(kept.get("b"), Some(&5), "{kept:?}");

    // The name server goes away: the last good targets keep serving, the failures counted.
    let before = gw.metric("portcullis_upstream_discovery_errors_total{upstream=\"echo\"}");
    dns.kill();
    let killed = Instant::now();
    while gw.metric("portcullis_upstream_discovery_errors_total{upstream=\"echo\"}") <= before {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "no discovery error counted:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "figure: name server killed -> next discovery error counted after {:?}",
        killed.elapsed()
    );
    let kept = answers(&client, gw.port, 20);
    assert_eq!(kept.get("a"), Some(&10), "{kept:?}");
    assert_eq!(kept.get("b"), Some(&10), "{kept:?}");
    assert!(gw
        .proc
        .log_text()
        .contains("upstream discovery failed; keeping the last good targets"));

    // A config reload builds new pools: the discovered set carries over, DNS still gone.
    gw.reload(
        &yaml.replace("read_timeout: 5s", "read_timeout: 4s"),
        "success",
    );
    let after_reload = answers(&client, gw.port, 10);
    assert_eq!(after_reload.get("a"), Some(&5), "{after_reload:?}");
    assert_eq!(after_reload.get("b"), Some(&5), "{after_reload:?}");

    // Listed targets again: the upstream's target gauge goes away.
    gw.reload(
        &upstream(&format!("    targets: [127.0.0.2:{port}]\n")),
        "success",
    );
    let start = Instant::now();
    while gw
        .metrics()
        .contains("portcullis_upstream_discovered_targets{upstream=\"echo\"}")
    {
        assert!(start.elapsed() < Duration::from_secs(5), "gauge kept");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        answers(&client, gw.port, 4),
        BTreeMap::from([("a".to_owned(), 4)])
    );
}

#[test]
fn the_name_is_asked_again_only_when_its_ttl_runs_out() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "a");
    let dns = Dnsmasq::start_ttl(d, "127.0.0.1 svc.test\n", &[], 2);
    let gw = Gateway::start(
        d,
        &upstream(&format!(
            "    dns: {{ name: svc.test, port: {}, resolver: {} }}\n",
            echo.port,
            dns.resolver()
        )),
    );
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(6500));
    let asked = dns.queries("A", "svc.test");
    // The first lookup, then one each time the 2 s TTL runs out: 4 in 6.5 s (the refresh
    // task looks every 250 ms: 26 if it asked each time).
    println!(
        "figure: TTL 2 s -> {asked} A queries for the name in {:?}",
        start.elapsed()
    );
    assert!((3..=5).contains(&asked), "{asked} queries");
    assert_eq!(
        answers(&pki.client(Some("frontend")), gw.port, 3),
        BTreeMap::from([("a".to_owned(), 3)])
    );
}

#[test]
fn srv_records_give_targets_and_ports_and_only_the_lowest_priority_serves() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let _a = echo_at(d, "a", &format!("127.0.0.1:{pa}"));
    let _b = echo_at(d, "b", &format!("127.0.0.2:{pb}"));
    let _c = echo_at(d, "c", &format!("127.0.0.1:{pc}"));
    let dns = Dnsmasq::start(
        d,
        "127.0.0.1 a.test c.test\n127.0.0.2 b.test\n",
        &[
            format!("_echo._tcp.svc.test,a.test,{pa},1,10"),
            format!("_echo._tcp.svc.test,b.test,{pb},1,10"),
            // A lower priority (a higher number): the service's own fallback, unused.
            format!("_echo._tcp.svc.test,c.test,{pc},5,10"),
        ],
    );
    let gw = Gateway::start(
        d,
        &upstream(&format!(
            "    dns: {{ srv: _echo._tcp.svc.test, resolver: {} }}\n",
            dns.resolver()
        )),
    );
    let client = pki.client(Some("frontend"));
    let seen = answers(&client, gw.port, 20);
    assert_eq!(
        seen,
        BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 10)])
    );
    gw.wait_metric(
        "portcullis_upstream_discovered_targets{upstream=\"echo\"}",
        2.0,
    );
    // `check` accepts the config without asking DNS.
    let out = Command::new(bin())
        .args(["check", "--config", gw.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_pool_without_a_healthy_target_fails_over_to_the_next_upstream_and_comes_back() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let local_port = free_port();
    let local_addr = format!("127.0.0.2:{local_port}");
    let local = echo_at(d, "local", &local_addr);
    // The fallback region is reached over mTLS (its own TLS settings): a gateway in front of
    // its echo, which demands our client certificate.
    let remote_echo = Echo::start(d, "remote");
    let remote = Gateway::start(d, &base_config(remote_echo.port));
    let dns = Dnsmasq::start(d, "127.0.0.2 local.test\n", &[]);
    let yaml = base_config(0).replace(
        "  - name: echo\n    targets: [127.0.0.1:0]\n    connect_timeout: 1s\n    read_timeout: 5s\n",
        &format!(
            "  - name: echo\n    dns: {{ name: local.test, port: {local_port}, resolver: {} }}\n    \
             connect_timeout: 1s\n    read_timeout: 5s\n    health_check: {{ path: /healthz, interval: 200ms }}\n    \
             failover: [other-region]\n\
             \x20 - name: other-region\n    targets: [127.0.0.1:{}]\n    connect_timeout: 1s\n    read_timeout: 5s\n    \
             tls: {{ server_name: localhost, ca: ca.pem, client_certificate: gateway.pem, client_key: gateway.key }}\n",
            dns.resolver(),
            remote.port
        ),
    );
    let audit = d.join("audit");
    let yaml = format!(
        "{yaml}audit:\n  directory: {}\n  signing_key: audit.key\n  node: gw-dns\n  mode: best-effort\n",
        audit.display()
    );
    let gw = Gateway::start(d, &yaml);
    let client = pki.client(Some("frontend"));
    assert_eq!(
        answers(&client, gw.port, 5),
        BTreeMap::from([("local".to_owned(), 5)])
    );

    // The local upstream stops. Requests keep coming (a bounded loop of 60 over the switch
    // and after it): count those that fail. Nothing was sent to a target that refuses the
    // connection, so each is retried on the fallback before its health check notices.
    drop(local);
    let stopped = Instant::now();
    let mut failed = 0;
    let mut last = Vec::new();
    for _ in 0..60 {
        let who = match client.get(gw.port, "/public/x") {
            Ok(r) if r.status == 200 => r.json()["upstream"].as_str().unwrap_or("?").to_owned(),
            Ok(r) => {
                failed += 1;
                format!("status {}", r.status)
            }
            Err(e) => {
                failed += 1;
                format!("error {}", e.kind())
            }
        };
        last.push(who);
    }
    println!(
        "figure: local upstream stopped -> {failed} failed of 60 requests sent one after another over the switch ({:?}; health_check 200ms)",
        stopped.elapsed()
    );
    assert!(failed <= 1, "{last:?}");
    assert!(last[40..].iter().all(|w| w == "remote"), "{last:?}");
    let metrics = gw.wait_metric(
        "portcullis_upstream_failover_total{to=\"other-region\",upstream=\"echo\"}",
        20.0,
    );
    assert!(
        metric_value(
            &metrics,
            "portcullis_upstream_failover_total{to=\"other-region\",upstream=\"echo\"}"
        ) >= 20.0,
        "{metrics}"
    );
    gw.wait_for_line(|l| l.contains("\"upstream.failover\":\"other-region\""));
    // The audit records say so too.
    let start = Instant::now();
    loop {
        let failed_over = crate::audit::records(&audit)
            .iter()
            .filter(|r| r["kind"] == "request" && r["event"]["failover"] == "other-region")
            .count();
        if failed_over >= 20 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{failed_over} audit records name the fallback"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The local upstream is back: once its health check passes, requests return to it.
    let _local = echo_at(d, "local", &local_addr);
    let back = until(&client, gw.port, Duration::from_secs(10), 10, |who| {
        who == "local"
    })
    .expect("requests never came back to the local upstream");
    println!("figure: local upstream restarted -> served locally again after {back:?}");
}

#[test]
fn hostile_answers_never_get_traffic_past_the_pools_tls_identity_and_never_crash() {
    let pki = Pki::new();
    let d = pki.dir.path();
    // A target with a certificate from the same CA but for another name.
    let mut spec = portcullis_ca::dev::LeafSpec::client("evil", None, Duration::from_secs(86400));
    spec.server_auth = true;
    spec.dns_names = vec!["evil.test".into()];
    pki.ca.issue(&spec).unwrap().write(d, "evil").unwrap();
    let evil_echo = Echo::start(d, "evil");
    let evil = Gateway::start(
        d,
        &base_config(evil_echo.port)
            .replace("certificate: server.pem", "certificate: evil.pem")
            .replace("private_key: server.key", "private_key: evil.key"),
    );
    let good_echo = Echo::start(d, "good");
    let good = Gateway::start(d, &base_config(good_echo.port));
    let dns = Dnsmasq::start(
        d,
        "127.0.0.1 good.test evil.test\n",
        &[
            format!("_api._tcp.svc.test,good.test,{},1,1", good.port),
            format!("_api._tcp.svc.test,evil.test,{},1,1", evil.port),
        ],
    );
    let tls = "    tls: { server_name: localhost, ca: ca.pem, client_certificate: gateway.pem, client_key: gateway.key }\n";
    let gw = Gateway::start(
        d,
        &upstream(&format!(
            "    dns: {{ srv: _api._tcp.svc.test, resolver: {} }}\n{tls}",
            dns.resolver()
        )),
    );
    let client = pki.client(Some("frontend"));
    let seen = answers(&client, gw.port, 10);
    // Whatever DNS says, only the upstream that proves the pool's name answers; the other
    // is refused at the handshake (502, or the next target on pingora's retry).
    println!("figure: SRV answer with a good and an impostor target, 10 requests -> {seen:?}");
    assert!(seen.get("good").is_some_and(|n| *n >= 5), "{seen:?}");
    assert!(
        seen.keys().all(|who| who == "good" || who == "status 502"),
        "{seen:?}"
    );
    let text = gw.metrics();
    let refused: f64 = ["identity_mismatch", "certificate", "tls"]
        .iter()
        .map(|k| {
            metric_value(
                &text,
                &format!("portcullis_upstream_errors_total{{kind=\"{k}\",upstream=\"echo\"}}"),
            )
        })
        .sum();
    assert!(refused >= 1.0, "{text}");

    // A name server that answers garbage: the gateway stays up, counts it, and the pool has
    // no target to send to (503).
    let garbage = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_server = stop.clone();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut n = 0u32;
        while !stop_server.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((len, from)) = garbage.recv_from(&mut buf) else {
                continue;
            };
            n = n.wrapping_add(1);
            let mut reply = buf[..len].to_vec();
            match n % 4 {
                // Random bytes.
                0 => {
                    reply = (0..300u32)
                        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                        .collect()
                }
                // The query's id, then a header claiming 65535 answers and nothing after it.
                1 => {
                    reply.truncate(12);
                    if reply.len() == 12 {
                        reply[2] = 0x81;
                        reply[3] = 0x80;
                        reply[6] = 0xff;
                        reply[7] = 0xff;
                    }
                }
                // A response with a compression pointer looping on itself.
                2 => {
                    reply.truncate(len);
                    if reply.len() >= 12 {
                        reply[2] = 0x81;
                        reply[3] = 0x80;
                        reply[7] = 1;
                        reply.extend_from_slice(&[
                            0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 9,
                        ]);
                        let at = reply.len() - 16;
                        reply[at + 1] = (at & 0xff) as u8;
                    }
                }
                // Two bytes.
                _ => reply.truncate(2),
            }
            let _ = garbage.send_to(&reply, from);
        }
    });
    let mut bad = Gateway::start(
        d,
        &upstream(&format!(
            "    dns: {{ name: svc.test, port: 9, resolver: {garbage_addr} }}\n"
        )),
    );
    let start = Instant::now();
    while bad.metric("portcullis_upstream_discovery_errors_total{upstream=\"echo\"}") < 2.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            bad.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = answers(&client, bad.port, 3);
    assert_eq!(seen, BTreeMap::from([("status 503".to_owned(), 3)]));
    assert_eq!(
        http_get(bad.metrics_port, "/healthz").map(|r| r.0),
        Some(200)
    );
    assert!(matches!(bad.proc.child.try_wait(), Ok(None)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();

    // An oversized answer (200 addresses for one name, over TCP after truncation): the pool
    // keeps a bounded number of them.
    let many: String = (1..=200)
        .map(|i| format!("127.0.{}.{} big.test\n", 10 + i / 250, 1 + i % 250))
        .collect();
    let big_dns = Dnsmasq::start(d, &many, &[]);
    let big = Gateway::start(
        d,
        &upstream(&format!(
            "    dns: {{ name: big.test, port: 9, resolver: {} }}\n",
            big_dns.resolver()
        )),
    );
    let text = big.wait_metric(
        "portcullis_upstream_discovered_targets{upstream=\"echo\"}",
        64.0,
    );
    assert_eq!(
        metric_value(
            &text,
            "portcullis_upstream_discovered_targets{upstream=\"echo\"}"
        ),
        64.0,
        "{text}"
    );
}
