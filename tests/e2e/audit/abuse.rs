//! The audit trail under abuse: a client with a valid certificate looping refused requests
//! with 60 KiB paths neither fills the log nor turns the gateway into 503 for everyone, and no
//! refusal goes unrecorded; at the disk budget fail-closed answers 503 and best-effort drops
//! and counts, with warnings before.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{config, records, stop, verify};
use crate::harness::*;

/// The request heads a 60 KiB path needs (the defaults refuse it with 431 before anything else).
const BIG_HEADS: &str = "http: { max_request_head: 200000, max_header_line: 100000 }\n";

/// The audit section's extra keys for these tests. The durability bound is generous: a slow
/// fsync on a loaded machine is not what these tests are about.
fn with_audit(yaml: &str, extra: &str) -> String {
    let yaml = yaml.replacen(
        "  checkpoint_every: 50\n",
        &format!("  checkpoint_every: 50\n  durable_timeout: 5s\n{extra}"),
        1,
    );
    format!("{BIG_HEADS}{yaml}")
}

fn on_disk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn sha256_hex(data: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Legitimate traffic on its own connection until told to stop (at most 60 s): every status
/// seen.
fn legitimate_caller(
    client: Client,
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u16>> {
    std::thread::spawn(move || {
        let mut statuses = Vec::new();
        let start = Instant::now();
        let mut conn = client.connect(port).unwrap();
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
            match conn.request("GET", "/api/legit", &[]) {
                Ok(r) => statuses.push(r.status),
                Err(_) => conn = client.connect(port).unwrap(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        statuses
    })
}

/// The attack from the issue: `GET /<60 KiB>%2F` (400) and `GET /<60 KiB>` (404) in a loop
/// from a client with a valid certificate, with a 1 MiB disk budget and 5 detailed refusal
/// records per source per second. Before, every refusal was a ~60 KiB record: ~400 of them
/// filled the disk, and in fail-closed mode everyone got 503 once it was full.
#[test]
fn a_client_looping_refused_requests_neither_fills_the_log_nor_goes_unrecorded() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "audit-abuse");
    let budget: u64 = 1 << 20;
    let yaml = with_audit(
        &config(&echo, "audit", "fail-closed", ""),
        &format!(
            "  segment_bytes: 65536\n  max_bytes: {budget}\n  refusals: {{ path_bytes: 1024, per_source: 5, interval: 1s }}\n"
        ),
    );
    // The attacker reconnects after every 400 (which closes): without the connection rates,
    // which would refuse its reconnections at ~100/s (they are tested in e2e abuse).
    let tls = "client_ca: ca.pem }\n";
    let yaml = yaml.replacen(
        tls,
        &format!("{tls}    connections: {{ abuse: {{ connection_rate_per_source: off, connection_rate_per_identity: off }} }}\n"),
        1,
    );
    let mut gw = Gateway::start(d, &yaml);
    let stop_legit = Arc::new(AtomicBool::new(false));
    let legit = legitimate_caller(pki.client(Some("frontend")), gw.port, stop_legit.clone());

    let malformed = format!("/{}%2F", "a".repeat(60 << 10));
    // Paths over 8 KiB are refused as malformed (400); the longest that can be routed (404).
    let missing = format!("/{}", "b".repeat(8000));
    let attacker = pki.client(Some("frontend"));
    let mut conn = attacker.connect(gw.port).unwrap();
    let (mut sent, mut bad_request, mut not_found) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while sent < 400 && start.elapsed() < Duration::from_secs(60) {
        let path = if sent % 2 == 0 { &malformed } else { &missing };
        let response = match conn.request("GET", path, &[]) {
            Ok(r) => r,
            Err(_) => {
                // The gateway may close after a refusal: the attacker reconnects.
                conn = attacker.connect(gw.port).unwrap();
                conn.request("GET", path, &[]).unwrap()
            }
        };
        match response.status {
            400 => bad_request += 1,
            404 => not_found += 1,
            other => panic!("attack request answered {other}"),
        }
        sent += 1;
    }
    let attack_time = start.elapsed();
    assert_eq!((bad_request, not_found), (200, 200));
    // Let the legitimate caller go on past the attack for a moment, then stop.
    std::thread::sleep(Duration::from_millis(300));
    stop_legit.store(true, Ordering::Relaxed);
    let statuses = legit.join().unwrap();
    assert!(
        statuses.len() > 20,
        "too few legitimate requests: {}",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| *s == 200),
        "the legitimate caller got {:?}\n{}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>(),
        gw.proc.log_text()
    );

    let metrics = gw.wait_metric("portcullis_audit_suppressed_refusals_total", 1.0);
    let suppressed_metric = metric_value(&metrics, "portcullis_audit_suppressed_refusals_total");
    assert!(suppressed_metric > 0.0);
    assert_eq!(
        metric_value(&metrics, "portcullis_audit_disk_budget_bytes"),
        budget as f64
    );
    assert!(metric_value(&metrics, "portcullis_audit_disk_bytes") <= budget as f64);
    assert_eq!(metric_value(&metrics, "portcullis_audit_healthy"), 1.0);
    stop(&mut gw);

    // The access log is bounded the same way: every line's path at most 1 KiB, with the whole
    // path's length beside it (400 lines of 60 KiB paths were 24 MiB of stderr); and refusals'
    // lines are sampled (20 a second per tenant and code), each line written carrying how
    // many were left out before it.
    let stderr = gw.proc.log_text();
    let cut: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access" && v["http.path_bytes"].is_u64())
        .collect();
    let carried: u64 = cut
        .iter()
        .filter_map(|l| l["log.suppressed"].as_u64())
        .sum();
    assert!(
        cut.len() >= 40 && cut.len() as u64 + carried <= sent,
        "{} cut access lines, {carried} left out and counted, {sent} refused",
        cut.len()
    );
    for line in &cut {
        let path = line["http.path"].as_str().unwrap();
        let whole = line["http.path_bytes"].as_u64().unwrap();
        assert!(path.len() <= 1024 && whole > 1024, "{line}");
    }
    assert!(stderr.len() < 2 << 20, "stderr {} bytes", stderr.len());

    let dir = d.join("audit");
    let log_bytes = on_disk(&dir);
    eprintln!(
        "audit abuse: {sent} refused requests (60 KiB and 8 KiB paths) in {attack_time:?}, {} legitimate 200s, log {log_bytes} bytes (budget {budget})",
        statuses.len()
    );
    assert!(log_bytes <= budget, "{log_bytes}");
    let all = records(&dir);
    let refusals: Vec<&serde_json::Value> = all
        .iter()
        .filter(|r| r["kind"] == "request" && r["event"]["decision"] != "allow")
        .collect();
    // Each detailed refusal record: the path cut to 1 KiB, the whole one's length and digest.
    let (malformed_sha, missing_sha) = (sha256_hex(&malformed), sha256_hex(&missing));
    for r in &refusals {
        let e = &r["event"];
        assert_eq!(e["source"], "127.0.0.1");
        assert!(e["path"].as_str().unwrap().len() <= 1024);
        let cut = &e["path_truncated"];
        let (whole, sha) = match e["status"].as_u64().unwrap() {
            400 => (&malformed, &malformed_sha),
            404 => (&missing, &missing_sha),
            other => panic!("refusal record with status {other}"),
        };
        assert!(whole.starts_with(e["path"].as_str().unwrap()));
        assert_eq!(cut["bytes"], whole.len() as u64);
        assert_eq!(cut["sha256"], sha.as_str());
    }
    // At most 5 detailed records a second, and every other refusal counted in a summary:
    // together exactly what was refused.
    let seconds = attack_time.as_secs() + 2;
    assert!(
        !refusals.is_empty() && refusals.len() as u64 <= 5 * seconds,
        "{} detailed refusal records in {attack_time:?}",
        refusals.len()
    );
    let summaries: Vec<&serde_json::Value> = all
        .iter()
        .filter(|r| r["kind"] == "refusals_suppressed")
        .collect();
    assert!(!summaries.is_empty());
    let suppressed: u64 = summaries
        .iter()
        .map(|s| {
            let e = &s["event"];
            assert_eq!(e["sources"][0]["source"], "127.0.0.1");
            assert_eq!(e["sources"][0]["suppressed"], e["suppressed"]);
            e["suppressed"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(refusals.len() as u64 + suppressed, sent);
    assert!(suppressed as f64 >= suppressed_metric);
    // The legitimate requests were all recorded, admitted and completed.
    let allowed = all
        .iter()
        .filter(|r| r["kind"] == "request" && r["event"]["decision"] == "allow")
        .count();
    assert!(allowed >= 2 * statuses.len(), "{allowed}");
    let out = verify(&dir, &d.join("audit.key.pub"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// At the disk budget (128 KiB here): fail-closed answers 503 `audit_unavailable` and turns
/// unready, best-effort keeps serving and counts what it drops; both warn at 80% and 95% first,
/// once each, and the log stays within the budget and verifies.
#[test]
fn at_the_disk_budget_fail_closed_refuses_and_best_effort_drops_and_counts() {
    let budget: u64 = 128 << 10;
    for mode in ["fail-closed", "best-effort"] {
        let pki = Pki::new();
        let d = pki.dir.path();
        let echo = Echo::start(d, "audit-budget");
        let yaml = with_audit(
            &config(&echo, "audit", mode, ""),
            &format!("  segment_bytes: 16384\n  max_bytes: {budget}\n"),
        );
        let mut gw = Gateway::start(d, &yaml);
        let client = pki.client(Some("frontend"));
        let mut conn = client.connect(gw.port).unwrap();
        let mut answered = Vec::new();
        for _ in 0..400 {
            let r = conn.request("GET", "/api/fill", &[]).unwrap();
            answered.push(r.status);
            if r.status == 503 {
                assert_eq!(r.json()["error"], "audit_unavailable");
                break;
            }
        }
        let log = gw.proc.log_text();
        // Warned at 80% and 95%, once each, before the budget was reached.
        let warned_80 = log.find("past 80% of its disk budget");
        let warned_95 = log.find("past 95% of its disk budget");
        let reached = log.find("audit log at its disk budget");
        assert!(
            warned_80 < warned_95 && warned_95 < reached && warned_80.is_some(),
            "{mode}:\n{log}"
        );
        assert_eq!(log.matches("past 80% of its disk budget").count(), 1);
        assert_eq!(log.matches("past 95% of its disk budget").count(), 1);
        let metrics = gw.metrics();
        let used = metric_value(&metrics, "portcullis_audit_disk_bytes");
        assert_eq!(
            metric_value(&metrics, "portcullis_audit_disk_budget_bytes"),
            budget as f64
        );
        assert!(
            used <= budget as f64 && used > 0.8 * budget as f64,
            "{used}"
        );
        if mode == "fail-closed" {
            assert_eq!(
                answered.last(),
                Some(&503),
                "fail-closed must refuse at the budget"
            );
            assert_eq!(http_get(gw.metrics_port, "/readyz").unwrap().0, 503);
            assert_eq!(metric_value(&metrics, "portcullis_audit_healthy"), 0.0);
            assert!(
                metric_value(
                    &metrics,
                    "portcullis_audit_refused_requests_total{tenant=\"acme\"}"
                ) >= 1.0
            );
            // Still at the budget: still refused.
            let again = client.get(gw.port, "/api/more").unwrap();
            assert_eq!(again.status, 503);
        } else {
            assert!(answered.iter().all(|s| *s == 200));
            let m = gw.wait_metric("portcullis_audit_dropped_records_total", 1.0);
            assert!(metric_value(&m, "portcullis_audit_dropped_records_total") >= 1.0);
            assert_eq!(http_get(gw.metrics_port, "/readyz").unwrap().0, 200);
        }
        stop(&mut gw);
        let dir = d.join("audit");
        assert!(on_disk(&dir) <= budget, "{mode}: {}", on_disk(&dir));
        let out = verify(&dir, &d.join("audit.key.pub"));
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
