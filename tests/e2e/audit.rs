//! The audit trail through the real gateway: every decision recorded, the log verifies and a
//! tampered one does not, a log cut at its end fails against its published head, `kill -9`
//! loses no acknowledged request (nor, half a second on, the last completion record), a full
//! disk refuses traffic in fail-closed mode, and a PostgreSQL outage (over verified TLS) ends
//! with the central table equal to the log.
//! `abuse`: refusals in a loop, and the disk budget.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::postgres::{Postgres, ServerTls, TestCa};

mod abuse;

const CONFIG: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
metrics:
  address: 127.0.0.1:{metrics}
shutdown:
  grace_period: 2s
audit:
  directory: {audit}
  signing_key: audit.key
  node: gw-test
  mode: {mode}
  checkpoint_every: 50
{postgres}
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
tenants:
  - name: acme
    routes:
      - name: api
        path_prefix: /api
        upstream: echo
        access:
          - id: frontend
            spiffe_id: ["spiffe://test.portcullis.local/ns/app/sa/frontend"]
"#;

fn config(echo: &Echo, audit: &str, mode: &str, postgres: &str) -> String {
    CONFIG
        .replace("{echo}", &echo.port.to_string())
        .replace("{audit}", audit)
        .replace("{mode}", mode)
        .replace("{postgres}", postgres)
}

pub(crate) fn cli(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Every record of the log, parsed.
pub(crate) fn records(dir: &Path) -> Vec<serde_json::Value> {
    let out = cli(&["audit", "query", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn request_records<'a>(all: &'a [serde_json::Value], id: &str) -> Vec<&'a serde_json::Value> {
    all.iter()
        .filter(|r| r["kind"] == "request" && r["event"]["request_id"] == id)
        .collect()
}

pub(crate) fn verify(dir: &Path, key: &Path) -> Output {
    verify_with(dir, key, &[])
}

fn verify_with(dir: &Path, key: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

pub(crate) fn stop(gw: &mut Gateway) {
    gw.proc.signal("TERM");
    assert!(gw.proc.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn every_decision_is_recorded_and_the_log_verifies_until_tampered_with() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "audit");
    let yaml = config(&echo, "audit", "fail-closed", "");
    let mut gw = Gateway::start(d, &yaml);
    let frontend = pki.client(Some("frontend"));

    let ok = frontend.get(gw.port, "/api/x?token=hunter2").unwrap();
    assert_eq!(ok.status, 200);
    let ok_id = ok.header("x-request-id").unwrap().to_owned();
    let denied = pki.client(Some("other")).get(gw.port, "/api/x").unwrap();
    assert_eq!(denied.status, 403);
    let denied_id = denied.header("x-request-id").unwrap().to_owned();
    let missing = frontend.get(gw.port, "/elsewhere").unwrap();
    assert_eq!(missing.status, 404);
    let missing_id = missing.header("x-request-id").unwrap().to_owned();
    gw.reload(&yaml, "success");
    stop(&mut gw);

    let dir = d.join("audit");
    let all = records(&dir);
    // The allowed request: admitted (durable before forwarding), then completed.
    let ok_records = request_records(&all, &ok_id);
    assert_eq!(ok_records.len(), 2, "{ok_records:?}");
    let (admitted, completed) = (&ok_records[0]["event"], &ok_records[1]["event"]);
    assert_eq!(admitted["stage"], "admitted");
    assert_eq!(admitted["status"], 0);
    assert_eq!(completed["stage"], "completed");
    assert_eq!(completed["status"], 200);
    assert_eq!(completed["decision"], "allow");
    assert_eq!(completed["rule"], "frontend");
    assert_eq!(completed["tenant"], "acme");
    assert_eq!(completed["route"], "acme/api");
    assert_eq!(
        completed["identity"],
        "spiffe://test.portcullis.local/ns/app/sa/frontend"
    );
    assert_eq!(completed["method"], "GET");
    assert_eq!(completed["path"], "/api/x", "no query string by default");
    assert_eq!(completed["source"], "127.0.0.1");
    assert!(completed["bytes_out"].as_u64().unwrap() > 0);
    assert!(completed["tls_version"]
        .as_str()
        .unwrap()
        .starts_with("TLS"));
    assert_eq!(
        completed["upstream"],
        format!("127.0.0.1:{}", echo.port).as_str()
    );
    // Denied requests were never forwarded: one completed record, with the deciding rule.
    let denied_records = request_records(&all, &denied_id);
    assert_eq!(denied_records.len(), 1);
    assert_eq!(denied_records[0]["event"]["decision"], "deny");
    assert_eq!(denied_records[0]["event"]["status"], 403);
    let missing_records = request_records(&all, &missing_id);
    assert_eq!(missing_records[0]["event"]["reason"], "no_route");
    // The start-up configuration and the reload, with the file's digest.
    let loads: Vec<_> = all
        .iter()
        .filter(|r| r["kind"] == "config_reload")
        .collect();
    assert_eq!(loads.len(), 2);
    assert_eq!(loads[0]["event"]["trigger"], "startup");
    assert_eq!(loads[1]["event"]["trigger"], "signal");
    assert!(loads[1]["event"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    // Shutdown wrote a signed checkpoint over everything.
    assert_eq!(all.last().unwrap()["kind"], "checkpoint");

    // The query string (which carried a secret) is nowhere in the log.
    for seg in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(seg.unwrap().path()).unwrap();
        assert!(!text.contains("hunter2"));
    }
    let tail = cli(&["audit", "tail", dir.to_str().unwrap(), "-n", "3"]);
    assert_eq!(String::from_utf8_lossy(&tail.stdout).lines().count(), 3);

    let key = d.join("audit.key.pub");
    let out = verify(&dir, &key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok: "));

    // Edit the denied request's status in place: verification names that record.
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    let line_no = text.lines().position(|l| l.contains(&denied_id)).unwrap() + 1;
    std::fs::write(&seg, text.replace("\"status\":403", "\"status\":200")).unwrap();
    let out = verify(&dir, &key);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("line {line_no}")) && err.contains("edited"),
        "{err}"
    );
}

/// The attack of issue 11: the last segments deleted, signed checkpoints and all. The log alone
/// still verifies; against the head file the gateway kept (an off-box copy in production) the
/// CLI names the records that are gone.
#[test]
fn deleting_the_last_segments_fails_verification_against_the_head_file() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "audit-head");
    let extra = "  segment_bytes: 4096\n  head_file: off-box/gw.head";
    std::fs::create_dir(d.join("off-box")).unwrap();
    let mut gw = Gateway::start(d, &config(&echo, "audit", "fail-closed", extra));
    let client = pki.client(Some("frontend"));
    for _ in 0..60 {
        assert_eq!(client.get(gw.port, "/api/x").unwrap().status, 200);
    }
    stop(&mut gw);

    let (dir, key) = (d.join("audit"), d.join("audit.key.pub"));
    let head_file = d.join("off-box/gw.head");
    let head: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&head_file).unwrap().trim()).unwrap();
    assert_eq!(head["kind"], "checkpoint");
    let head_arg = ["--expect-head", head_file.to_str().unwrap()];
    let out = verify_with(&dir, &key, &head_arg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("reaches the expected head"), "{text}");
    // The head file holds the final checkpoint written at shutdown: the log's last record.
    assert_eq!(records(&dir).last().unwrap()["seq"], head["seq"]);

    let mut segs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 4, "{} segments", segs.len());
    for seg in &segs[segs.len() - 2..] {
        std::fs::remove_file(seg).unwrap();
    }
    let left = records(&dir);
    let last = left.last().unwrap()["seq"].as_u64().unwrap();
    assert!(
        verify(&dir, &key).status.success(),
        "the log alone cannot tell"
    );
    let out = verify_with(&dir, &key, &head_arg);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let head_seq = head["seq"].as_u64().unwrap();
    let expected = format!(
        "log ends at seq {last}; expected head seq {head_seq} (hash {}): records {}..={head_seq} missing — truncated?",
        head["hash"].as_str().unwrap(),
        last + 1
    );
    assert!(err.contains(&expected), "{err}");
}

/// Requests answered 200 under load, then `kill -9`: every one of them has its admission
/// record in the log after restart (fail-closed acknowledges before forwarding).
#[test]
fn kill_9_under_load_loses_no_acknowledged_request() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "audit-kill");
    let yaml = config(&echo, "audit", "fail-closed", "");
    let mut gw = Gateway::start(d, &yaml);
    let answered = Arc::new(Mutex::new(Vec::new()));
    let stop_load = Arc::new(AtomicBool::new(false));
    let port = gw.port;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let client = pki.client(Some("frontend"));
            let (answered, stop_load) = (answered.clone(), stop_load.clone());
            std::thread::spawn(move || {
                let Ok(mut conn) = client.connect(port) else {
                    return;
                };
                let start = Instant::now();
                while !stop_load.load(Ordering::Relaxed)
                    && start.elapsed() < Duration::from_secs(10)
                {
                    match conn.request("GET", "/api/load", &[]) {
                        Ok(r) if r.status == 200 => answered
                            .lock()
                            .unwrap()
                            .push(r.header("x-request-id").unwrap().to_owned()),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    gw.proc.signal("KILL");
    gw.proc.wait_exit(Duration::from_secs(5));
    stop_load.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 50, "too little load: {}", answered.len());

    // Restart on the same log (recovery cuts any torn tail), then stop cleanly.
    let mut again = Gateway::start(d, &yaml);
    stop(&mut again);
    let dir = d.join("audit");
    let admitted: HashSet<String> = records(&dir)
        .iter()
        .filter(|r| r["kind"] == "request" && r["event"]["stage"] == "admitted")
        .map(|r| r["event"]["request_id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = answered
        .iter()
        .filter(|id| !admitted.contains(*id))
        .collect();
    eprintln!(
        "kill -9: {} requests answered 200, {} admission records, {} lost",
        answered.len(),
        admitted.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "answered but not recorded: {lost:?}");
    let out = verify(&dir, &d.join("audit.key.pub"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A completion record nobody waits on rides on the next admission's fdatasync, but does not
/// wait for one: with no traffic after the last request, it is on disk within the writer's
/// delay, so a `kill -9` half a second later keeps it.
#[test]
fn the_last_requests_completion_record_survives_kill_9_without_further_traffic() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "audit-last");
    let yaml = config(&echo, "audit", "fail-closed", "");
    let mut gw = Gateway::start(d, &yaml);
    let last = pki
        .client(Some("frontend"))
        .get(gw.port, "/api/last")
        .unwrap();
    assert_eq!(last.status, 200);
    let id = last.header("x-request-id").unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(500));
    gw.proc.signal("KILL");
    gw.proc.wait_exit(Duration::from_secs(5));

    let mut again = Gateway::start(d, &yaml);
    stop(&mut again);
    let all = records(&d.join("audit"));
    let stages: Vec<_> = request_records(&all, &id)
        .iter()
        .map(|r| r["event"]["stage"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(stages, ["admitted", "completed"]);
}

/// Fail-closed on a real full disk (a 256 KiB tmpfs): requests are refused with 503 and the
/// gateway turns unready; once space is freed, traffic and readiness come back. Needs mount
/// rights (the CI runs as root); skipped with a message otherwise.
#[test]
fn fail_closed_refuses_traffic_while_the_log_cannot_be_written() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(disk) = SmallDisk::mount(d, "fail_closed_refuses_traffic") else {
        return;
    };
    let echo = Echo::start(d, "audit-full");
    let gw = Gateway::start(d, &config(&echo, "audit-disk/log", "fail-closed", ""));
    let client = pki.client(Some("frontend"));
    assert_eq!(client.get(gw.port, "/api/before").unwrap().status, 200);

    disk.fill();
    // Records fill the slack of pages already allocated first; then writes fail.
    let refused = (0..50)
        .map(|_| client.get(gw.port, "/api/full").unwrap())
        .find(|r| r.status != 200)
        .expect("a full disk must refuse requests");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "audit_unavailable");
    assert_eq!(http_get(gw.metrics_port, "/readyz").unwrap().0, 503);
    let metrics = gw.metrics();
    assert_eq!(metric_value(&metrics, "portcullis_audit_healthy"), 0.0);
    assert!(
        metric_value(
            &metrics,
            "portcullis_audit_refused_requests_total{tenant=\"acme\"}"
        ) >= 1.0
    );

    disk.free();
    let start = Instant::now();
    loop {
        let r = client.get(gw.port, "/api/after").unwrap();
        if r.status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(gw.metrics_port, "/readyz").unwrap().0, 200);
}

/// PostgreSQL stopped mid-load and started again: the local log is the spool, and the
/// central table ends equal to it (same count, no duplicates, same chain head).
#[test]
fn postgres_outage_under_load_ends_with_the_table_equal_to_the_log() {
    let ca = TestCa::new("Audit Store Test CA");
    let (cert_pem, key_pem) = ca.leaf("audit-store", &["127.0.0.1"]);
    let tls = ServerTls {
        cert_pem,
        key_pem,
        client_ca_pem: None,
    };
    let Some(pg) = Postgres::start_tls(tls) else {
        eprintln!("SKIP postgres_outage_under_load: PostgreSQL is not installed");
        return;
    };
    let pki = Pki::new();
    let d = pki.dir.path();
    std::fs::write(d.join("pg-ca.pem"), &ca.cert_pem).unwrap();
    let echo = Echo::start(d, "audit-pg");
    let postgres = format!(
        "  postgres:\n    conninfo: \"{}\"\n    tls: {{ ca: pg-ca.pem }}",
        pg.conninfo()
    );
    let gw = Gateway::start(d, &config(&echo, "audit", "best-effort", &postgres));
    let load = {
        let client = pki.client(Some("frontend"));
        let port = gw.port;
        let stop_load = Arc::new(AtomicBool::new(false));
        let flag = stop_load.clone();
        let handle = std::thread::spawn(move || {
            let mut sent = 0u64;
            let mut errors = Vec::new();
            let start = Instant::now();
            let mut conn = client.connect(port).unwrap();
            while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                match conn.request("GET", "/api/pg", &[]) {
                    Ok(r) => {
                        assert_eq!(r.status, 200);
                        sent += 1;
                    }
                    Err(e) => {
                        errors.push(e.to_string());
                        conn = client.connect(port).unwrap();
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (sent, errors)
        });
        (stop_load, handle)
    };
    let wait = |what: &str, f: &dyn Fn(&str) -> bool| {
        let start = Instant::now();
        loop {
            let m = gw.metrics();
            if f(&m) {
                return m;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out: {what}\n{}",
                gw.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let shipped = "portcullis_audit_sink_shipped_records_total";
    let connected = "portcullis_audit_sink_connected";
    let lag = "portcullis_audit_sink_lag_records";
    wait("records shipped", &|m| metric_value(m, shipped) > 50.0);
    pg.ctl_stop("immediate");
    wait("the sink to notice", &|m| metric_value(m, connected) == 0.0);
    wait("the spool to grow", &|m| metric_value(m, lag) > 100.0);
    pg.ctl_start();
    std::thread::sleep(Duration::from_millis(500));
    load.0.store(true, Ordering::Relaxed);
    let (sent, errors) = load.1.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}\n{}", gw.proc.log_text());
    wait("the sink to catch up", &|m| {
        metric_value(m, connected) == 1.0 && metric_value(m, lag) == 0.0
    });

    // Records made after the load stopped (completions, a checkpoint) can still be on their
    // way when the lag first reads 0: compare once the log and the table agree, or time out.
    let settled = Instant::now();
    let (local_count, head, cols) = loop {
        let out = verify(&d.join("audit"), &d.join("audit.key.pub"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        let local_count: u64 = report
            .split(": ok: ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let head = report
            .rsplit("chain head ")
            .next()
            .unwrap()
            .trim()
            .to_owned();
        let row = pg.psql(
            "SELECT count(*), count(DISTINCT seq), max(seq) FROM audit_records WHERE node = 'gw-test'",
        );
        let cols: Vec<u64> = row.split('|').map(|c| c.parse().unwrap()).collect();
        if cols[0] == local_count || settled.elapsed() > Duration::from_secs(10) {
            break (local_count, head, cols);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let central_head = pg.psql(&format!(
        "SELECT hash FROM audit_records WHERE node = 'gw-test' AND seq = {}",
        cols[2]
    ));
    eprintln!(
        "postgres outage: {sent} requests, local log {local_count} records, central {} rows",
        cols[0]
    );
    assert_eq!(cols[0], local_count, "same count");
    assert_eq!(cols[1], cols[0], "no duplicates");
    assert_eq!(cols[2] + 1, local_count, "sequence has no gaps");
    assert_eq!(central_head, head, "same chain head");
    assert_eq!(
        metric_value(&gw.metrics(), "portcullis_audit_sink_mismatch"),
        0.0
    );
    // The head the sink published in the store (read over the same verified TLS) is one the
    // log reaches.
    let out = verify_with(
        &d.join("audit"),
        &d.join("audit.key.pub"),
        &[
            "--expect-head",
            "pg",
            "--config",
            gw.config.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reaches the expected head"));

    // Whoever can write the table plants a row at a seq the gateway is about to write. The
    // sink finds it, raises the alarm and stops: the lag grows instead of reading 0.
    let durable = metric_value(&gw.metrics(), "portcullis_audit_durable_records") as u64;
    pg.psql(&format!(
        "INSERT INTO audit_records (node, seq, time, kind, record, hash, line) \
         VALUES ('gw-test', {}, now(), 'request', '{{}}', 'forged', 'forged')",
        durable + 10
    ));
    let client = pki.client(Some("frontend"));
    for _ in 0..30 {
        assert_eq!(client.get(gw.port, "/api/after").unwrap().status, 200);
    }
    let m = wait("the mismatch alarm", &|m| {
        metric_value(m, "portcullis_audit_sink_mismatch") == 1.0
    });
    assert!(metric_value(&m, lag) > 0.0);
    assert!(gw.proc.log_text().contains("ALARM"));
}

/// The checkpoint key generated inside a SoftHSM2 token: no key file anywhere, and the log
/// verifies with the public key the gateway wrote beside it.
#[test]
fn checkpoints_signed_by_a_key_in_the_hsm_verify() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(softhsm_conf) = crate::ca::softhsm_token(d, "audit") else {
        return;
    };
    let echo = Echo::start(d, "audit-hsm");
    let yaml = config(&echo, "audit", "fail-closed", "").replace(
        "  signing_key: audit.key\n",
        "  signing_pkcs11: { token_label: audit, key_label: checkpoints, pin_file: hsm.pin }\n",
    );
    let env = [("SOFTHSM2_CONF", softhsm_conf.as_path())];
    let mut gw = Gateway::start_env(d, &yaml, &[], &env);
    let client = pki.client(Some("frontend"));
    for _ in 0..60 {
        assert_eq!(client.get(gw.port, "/api/hsm").unwrap().status, 200);
    }
    stop(&mut gw);
    // Started again: the key is found in the token, not generated anew.
    let mut again = Gateway::start_env(d, &yaml, &[], &env);
    stop(&mut again);
    assert!(!d.join("audit.key").exists());
    let public = std::fs::read_to_string(d.join("audit.pub")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    let dir = d.join("audit");
    let out = verify(&dir, &d.join("audit.pub"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!report.contains(" 0 signed checkpoint"), "{report}");
    let checkpoint = records(&dir)
        .into_iter()
        .find(|r| r["kind"] == "checkpoint")
        .unwrap();
    assert_eq!(checkpoint["event"]["algorithm"], "ecdsa-p256-sha256-asn1");
}

/// A 256 KiB tmpfs at `DIR/audit-disk` (needs mount rights; the CI runs as root), unmounted
/// when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, test: &str) -> Option<Self> {
        let mnt = dir.join("audit-disk");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(&mnt)
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted {
            eprintln!("SKIP {test}: cannot mount a tmpfs here");
            return None;
        }
        Some(SmallDisk(mnt))
    }

    /// Fills the disk with a file until writes fail.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Best-effort on a full disk: traffic continues, the records that could not be written are
/// dropped and counted, and the gateway stays ready.
#[test]
fn best_effort_keeps_serving_and_counts_dropped_records_on_a_full_disk() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(disk) = SmallDisk::mount(d, "best_effort_keeps_serving") else {
        return;
    };
    let echo = Echo::start(d, "audit-best-effort");
    let gw = Gateway::start(d, &config(&echo, "audit-disk/log", "best-effort", ""));
    let client = pki.client(Some("frontend"));
    assert_eq!(client.get(gw.port, "/api/before").unwrap().status, 200);
    disk.fill();
    for _ in 0..100 {
        assert_eq!(client.get(gw.port, "/api/full").unwrap().status, 200);
    }
    let m = gw.wait_metric("portcullis_audit_dropped_records_total", 1.0);
    assert!(metric_value(&m, "portcullis_audit_dropped_records_total") >= 1.0);
    assert_eq!(http_get(gw.metrics_port, "/readyz").unwrap().0, 200);
    assert!(gw.proc.log_text().contains("audit log: batch not written"));
}

/// `portcullis check` refuses an audit key file others can read, naming it and the fix.
#[test]
fn check_refuses_a_readable_audit_key() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let d = pki.dir.path();
    let key = d.join("audit.key");
    std::fs::write(&key, b"not checked for content here").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let yaml = CONFIG
        .replace("{echo}", "9")
        .replace("{audit}", "audit")
        .replace("{mode}", "fail-closed")
        .replace("{postgres}", "")
        .replace("{port}", "18999")
        .replace("{metrics}", "18998");
    let config = d.join("check.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = cli(&["check", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("readable by group or others") && err.contains("chmod 600"),
        "{err}"
    );
}
