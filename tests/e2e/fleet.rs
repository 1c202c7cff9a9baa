//! The fleet's revocation set on a real etcd (started here on loopback): a certificate revoked
//! through the admin API on one node is refused by every gateway watching etcd within 5 s —
//! on connections already open (HTTP/1.1 and HTTP/2) and at new handshakes; forged or
//! malformed entries in etcd are counted and ignored and never un-revoke; with etcd gone a
//! gateway keeps serving and enforcing the last set (across a restart, from its cache file),
//! says `degraded` in `/readyz`, and a revocation made meanwhile (spooled by the admin node)
//! reaches it within 5 s of etcd's return.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ca::{AdminApi, HsmCa};
use crate::harness::*;

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// One etcd member on loopback, its data in a temp folder; killed when dropped.
struct Etcd {
    port: u16,
    peer: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// When the member was last started.
    spawned: Instant,
}

impl Etcd {
    /// `None` (the test skips) when etcd is not installed.
    fn start(d: &Path) -> Option<Self> {
        if !Path::new(ETCD).exists() || !Path::new(ETCDCTL).exists() {
            eprintln!(
                "SKIP: {ETCD} or {ETCDCTL} is missing (apt-get install etcd-server etcd-client)"
            );
            return None;
        }
        let mut etcd = Etcd {
            port: free_port(),
            peer: free_port(),
            data: d.join("etcd-data"),
            log: d.join("etcd.log"),
            child: None,
            spawned: Instant::now(),
        };
        etcd.launch();
        Some(etcd)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the member (again, on the same data and ports) and waits until it answers.
    fn launch(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(ETCD)
            .args(["--name", "fleet-test", "--data-dir"])
            .arg(&self.data)
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("fleet-test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.spawned = Instant::now();
        let start = Instant::now();
        while !self.ctl(&["endpoint", "health"]).0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd never became healthy:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: etcd is lost, not stopped politely.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `etcdctl` against this member: success and stdout.
    fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url(), "--dial-timeout", "1s"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    }

    fn put(&self, key: &str, value: &str) {
        let (ok, out) = self.ctl(&["put", key, value]);
        assert!(ok, "etcdctl put {key}: {out}");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gateway on the CA's trust bundle, with no CRL file: revocations reach it only through
/// the fleet's etcd (cache `cache`).
fn gateway_yaml(etcd: &str, echo: u16, cache: &str) -> String {
    format!(
        r#"
listeners:
  - name: public
    address: 127.0.0.1:{{port}}
    tls: {{ certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca/bundle.pem }}
metrics:
  address: 127.0.0.1:{{metrics}}
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
fleet:
  endpoints: [{etcd}]
  cache: {cache}
tenants:
  - name: acme
    routes:
      - name: api
        path_prefix: /
        upstream: echo
        access:
          - id: app
            spiffe_id: ["spiffe://test.portcullis.local/ns/app/**"]
"#
    )
}

fn client(pki: &Pki, name: &str) -> Client {
    let d = pki.dir.path();
    Client::new(
        &pki.path("ca.pem"),
        Some((d.join(format!("{name}.pem")), d.join(format!("{name}.key")))),
    )
}

/// The certificate's holder revokes it through the admin API (`POST …/revoke`, mTLS with the
/// certificate itself); the status.
fn revoke_through_admin(d: &Path, admin: u16, name: &str, serial: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg("--cacert")
        .arg(d.join("ca/bundle.pem"))
        .arg("--cert")
        .arg(d.join(format!("{name}.pem")))
        .arg("--key")
        .arg(d.join(format!("{name}.key")))
        .args(["-H", "content-type: application/json"])
        .args(["--data-binary", r#"{"reason":"keyCompromise"}"#])
        .arg(format!(
            "https://localhost:{admin}/v1/certificates/{serial}/revoke"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn readyz(gw: &Gateway) -> (u16, String) {
    http_get(gw.metrics_port, "/readyz").unwrap_or((0, String::new()))
}

/// Waits up to `limit` for `ok`; how long it took.
fn within(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if ok() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn refused(pki: &Pki, name: &str, port: u16) -> bool {
    client(pki, name)
        .get(port, "/x")
        .map_or(true, |r| r.status != 200)
}

fn admin_fleet(etcd: &Etcd, metrics: u16) -> String {
    format!(
        "metrics: 127.0.0.1:{metrics}\nfleet:\n  endpoints: [{}]\n",
        etcd.url()
    )
}

#[test]
fn a_revocation_on_the_admin_node_reaches_open_connections_on_every_gateway() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(etcd) = Etcd::start(d) else { return };
    let Some(ca) = HsmCa::init(d) else { return };
    let keep = ca.issue(d, "keep", "spiffe://test.portcullis.local/ns/app/sa/keep");
    let doomed = ca.issue(
        d,
        "doomed",
        "spiffe://test.portcullis.local/ns/app/sa/doomed",
    );
    let by_cli = ca.issue(
        d,
        "by-cli",
        "spiffe://test.portcullis.local/ns/app/sa/by-cli",
    );
    let admin_metrics = free_port();
    let admin = AdminApi::start_with(d, &ca, &admin_fleet(&etcd, admin_metrics));
    let echo = Echo::start(d, "fleet");
    let gw_a = Gateway::start(d, &gateway_yaml(&etcd.url(), echo.port, "fleet-a.json"));
    let gw_b = Gateway::start(d, &gateway_yaml(&etcd.url(), echo.port, "fleet-b.json"));
    for gw in [&gw_a, &gw_b] {
        within("gateway follows etcd", Duration::from_secs(10), || {
            readyz(gw).1.contains("fleet: following etcd")
        });
        assert_eq!(
            client(&pki, "doomed").get(gw.port, "/x").unwrap().status,
            200
        );
    }

    // The attacker's connections to gateway B, open before the revocation: HTTP/1.1
    // keep-alive, and HTTP/2 (curl sending a request every 250 ms on one connection).
    let mut kept = client(&pki, "doomed").connect(gw_b.port).unwrap();
    assert_eq!(kept.request("GET", "/x", &[]).unwrap().status, 200);
    let url = format!("https://localhost:{}/x", gw_b.port);
    let h2 = Command::new("curl")
        .args(["-sS", "--http2", "--rate", "4/s"])
        .args(["-w", "%{http_code} %{num_connects} %{http_version}\n"])
        .arg("--cacert")
        .arg(pki.path("ca.pem"))
        .arg("--cert")
        .arg(d.join("doomed.pem"))
        .arg("--key")
        .arg(d.join("doomed.key"))
        .args((0..28).flat_map(|_| ["-o", "/dev/null", url.as_str()]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));

    // Revoked on another node: the admin API's process, which publishes to etcd.
    let revoked_at = Instant::now();
    assert_eq!(revoke_through_admin(d, admin.port, "doomed", &doomed), 200);
    let took = revoked_at.elapsed();
    // Polled together every 20 ms: the next request on the open HTTP/1.1 connection to B
    // (refused, and the connection ends) and a new handshake to A.
    let (mut on_b, mut on_a) = (None, None);
    while on_b.is_none() || on_a.is_none() {
        if on_b.is_none() {
            let resp = kept.request("GET", "/x", &[]).unwrap();
            if resp.status != 200 {
                assert_eq!(resp.status, 403);
                assert_eq!(resp.json()["error"], "certificate_revoked");
                on_b = Some(revoked_at.elapsed());
            }
        }
        if on_a.is_none() && refused(&pki, "doomed", gw_a.port) {
            on_a = Some(revoked_at.elapsed());
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "not enforced 5 s after the revocation (B open connection: {on_b:?}, A handshake: {on_a:?}):\n{}",
            gw_b.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(kept.closed_by_server());
    let (on_a, on_b) = (on_a.unwrap_or_default(), on_b.unwrap_or_default());
    eprintln!(
        "FIGURE fleet propagation from the admin API's revoke call (which took {} ms): next request on an open HTTP/1.1 connection to gateway B refused after {} ms; new handshake to gateway A refused after {} ms",
        took.as_millis(),
        on_b.as_millis(),
        on_a.as_millis()
    );
    // New handshakes are refused on both gateways; everyone else is served.
    for gw in [&gw_a, &gw_b] {
        assert!(refused(&pki, "doomed", gw.port));
        assert_eq!(client(&pki, "keep").get(gw.port, "/x").unwrap().status, 200);
    }

    // HTTP/2: served before, then refused on the connection opened before the revocation,
    // which the gateway then ends (GOAWAY); nothing after is served.
    let out = h2.wait_with_output().unwrap();
    let lines: Vec<(u16, u32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect();
    let curl_err = String::from_utf8_lossy(&out.stderr).to_string();
    let h2_text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        h2_text.lines().next().is_some_and(|l| l.ends_with(" 2")),
        "{h2_text}"
    );
    assert_eq!(
        lines.first().map(|l| l.0),
        Some(200),
        "{lines:?} {curl_err}"
    );
    let first_refused = lines
        .iter()
        .position(|l| l.0 == 403)
        .unwrap_or_else(|| panic!("HTTP/2 never refused: {lines:?} {curl_err}"));
    assert!(
        lines[..=first_refused].iter().skip(1).all(|l| l.1 == 0),
        "the refusal came on the connection opened before the revocation: {lines:?}"
    );
    assert!(
        lines[first_refused + 1..].iter().all(|l| l.0 != 200),
        "{lines:?}"
    );
    eprintln!(
        "FIGURE fleet HTTP/2 on gateway B (one request per 250 ms): {} served before the first refusal (request {})",
        first_refused,
        first_refused + 1
    );

    // Forged and malformed entries: counted, ignored, nothing un-revoked, nothing revoked.
    let before = gw_b.metric("portcullis_fleet_malformed_entries_total");
    etcd.put("/portcullis/revoked/acme/zz-not-hex", "{}");
    etcd.put(&format!("/portcullis/revoked/acme/{keep}"), "garbage");
    etcd.put(
        &format!("/portcullis/revoked/other/{keep}"),
        &format!(r#"{{"serial":"{keep}","tenant":"acme","not_after":4000000000,"revoked_at":1}}"#),
    );
    etcd.put(
        &format!("/portcullis/revoked/acme/{doomed}"),
        "\u{1}\u{2}{not json",
    );
    etcd.put("/portcullis/revoked/acme", "no serial");
    let (ok, _) = etcd.ctl(&["del", &format!("/portcullis/revoked/acme/{doomed}")]);
    assert!(ok);
    for gw in [&gw_a, &gw_b] {
        let m = gw.wait_metric("portcullis_fleet_malformed_entries_total", before + 5.0);
        assert!(
            metric_value(&m, "portcullis_fleet_malformed_entries_total") >= before + 5.0,
            "{m}"
        );
        assert!(
            metric_value(&m, "portcullis_fleet_revocations") >= 1.0,
            "{m}"
        );
        assert_eq!(metric_value(&m, "portcullis_fleet_connected"), 1.0, "{m}");
        assert!(
            refused(&pki, "doomed", gw.port),
            "un-revoked by a forged entry"
        );
        assert_eq!(client(&pki, "keep").get(gw.port, "/x").unwrap().status, 200);
        assert!(gw
            .proc
            .log_text()
            .contains("malformed revocation entry ignored"));
    }
    // `portcullis ca revoke` on the CA's host spools into the admin server's spool, whose
    // publisher puts it into etcd.
    assert_eq!(
        client(&pki, "by-cli").get(gw_a.port, "/x").unwrap().status,
        200
    );
    let cli_at = Instant::now();
    let out = ca.run(&["revoke", &by_cli]);
    assert!(
        out.status.success(),
        "ca revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = cli_at.elapsed();
    for gw in [&gw_a, &gw_b] {
        within("CLI revocation enforced", Duration::from_secs(5), || {
            refused(&pki, "by-cli", gw.port)
        });
    }
    eprintln!(
        "FIGURE fleet propagation, `portcullis ca revoke` on the CLI (which took {} ms) -> refused by both gateways: {} ms",
        took.as_millis(),
        cli_at.elapsed().as_millis()
    );
    // The admin node says what it published.
    let (_, text) = http_get(admin_metrics, "/metrics").unwrap();
    assert!(
        metric_value(&text, "portcullis_fleet_published_total") >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "portcullis_fleet_spooled_revocations"),
        0.0,
        "{text}"
    );
}

#[test]
fn with_etcd_lost_gateways_keep_enforcing_across_a_restart_and_catch_up_when_it_returns() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(mut etcd) = Etcd::start(d) else {
        return;
    };
    let Some(ca) = HsmCa::init(d) else { return };
    ca.issue(d, "keep", "spiffe://test.portcullis.local/ns/app/sa/keep");
    let first = ca.issue(d, "first", "spiffe://test.portcullis.local/ns/app/sa/first");
    let second = ca.issue(
        d,
        "second",
        "spiffe://test.portcullis.local/ns/app/sa/second",
    );
    let admin_metrics = free_port();
    let admin = AdminApi::start_with(d, &ca, &admin_fleet(&etcd, admin_metrics));
    let echo = Echo::start(d, "fleet");
    let yaml = gateway_yaml(&etcd.url(), echo.port, "fleet-cache.json");
    let gw = Gateway::start(d, &yaml);
    within("gateway follows etcd", Duration::from_secs(10), || {
        readyz(&gw).1.contains("fleet: following etcd")
    });
    assert_eq!(revoke_through_admin(d, admin.port, "first", &first), 200);
    within("first refused", Duration::from_secs(5), || {
        refused(&pki, "first", gw.port)
    });

    // etcd is lost: the gateway keeps serving and enforcing, and says degraded (not down).
    etcd.kill();
    within("degraded in /readyz", Duration::from_secs(10), || {
        let (status, body) = readyz(&gw);
        status == 200 && body.contains("fleet: degraded")
    });
    assert_eq!(gw.metric("portcullis_fleet_connected"), 0.0);
    assert_eq!(client(&pki, "keep").get(gw.port, "/x").unwrap().status, 200);
    assert!(refused(&pki, "first", gw.port));

    // Restarted while etcd is away: the cache file keeps the revocation in force.
    drop(gw);
    let gw = Gateway::start(d, &yaml);
    let (status, body) = readyz(&gw);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("fleet: degraded"), "{body}");
    assert!(
        refused(&pki, "first", gw.port),
        "forgotten across the restart"
    );
    assert_eq!(client(&pki, "keep").get(gw.port, "/x").unwrap().status, 200);
    within("a failed attempt counted", Duration::from_secs(10), || {
        gw.metric("portcullis_fleet_watch_restarts_total") >= 1.0
    });

    // A revocation while etcd is away succeeds locally and waits in the admin node's spool.
    assert_eq!(
        client(&pki, "second").get(gw.port, "/x").unwrap().status,
        200
    );
    assert_eq!(revoke_through_admin(d, admin.port, "second", &second), 200);
    within("spooled", Duration::from_secs(5), || {
        http_get(admin_metrics, "/metrics")
            .is_some_and(|(_, t)| metric_value(&t, "portcullis_fleet_spooled_revocations") >= 1.0)
    });
    assert_eq!(
        client(&pki, "second").get(gw.port, "/x").unwrap().status,
        200
    );
    let spooled = std::fs::read_dir(ca.state.join("fleet-spool"))
        .unwrap()
        .count();
    assert_eq!(spooled, 1);

    // etcd returns: the spooled revocation reaches the gateway within 5 s.
    etcd.launch();
    let back = Instant::now();
    within(
        "spooled revocation enforced",
        Duration::from_secs(5),
        || refused(&pki, "second", gw.port),
    );
    let (from_spawn, from_healthy) = (etcd.spawned.elapsed(), back.elapsed());
    eprintln!(
        "FIGURE fleet catch-up, revocation made during the outage refused by the gateway: {} ms after etcd was started again, {} ms after etcdctl first found it healthy",
        from_spawn.as_millis(),
        from_healthy.as_millis()
    );
    assert!(from_spawn < Duration::from_secs(5), "{from_spawn:?}");
    within("following again", Duration::from_secs(5), || {
        readyz(&gw).1.contains("fleet: following etcd")
    });
    assert!(refused(&pki, "first", gw.port));
    assert_eq!(client(&pki, "keep").get(gw.port, "/x").unwrap().status, 200);
    let (_, text) = http_get(admin_metrics, "/metrics").unwrap();
    assert_eq!(
        metric_value(&text, "portcullis_fleet_spooled_revocations"),
        0.0,
        "{text}"
    );
    assert!(
        metric_value(&text, "portcullis_fleet_publish_failures_total") >= 1.0,
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(ca.state.join("fleet-spool"))
            .unwrap()
            .count(),
        0
    );
}
