//! Abusive callers, as an attacker would be one: a connection whose requests keep being
//! refused is answered later and later, then closed (HTTP/1.1 and HTTP/2), while other
//! clients of the same tenant — and the same client on a fresh connection — are served at
//! once; a source or an identity that keeps reconnecting is refused at accept or right after
//! the handshake, and an exempt source is not. Each interval's escalations are summarised in
//! the signed audit log (`abuse_summary`), with exact counts, and the log still verifies.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::audit::{cli, records, stop, verify};
use crate::harness::*;
use crate::proxy::base_config;

/// A gateway whose listener has this `connections.abuse` section (flow YAML).
fn gateway(pki: &Pki, echo: &Echo, abuse: &str) -> Gateway {
    let yaml = base_config(echo.port).replacen(
        "      client_ca: ca.pem\n",
        &format!("      client_ca: ca.pem\n    connections: {{ abuse: {abuse} }}\n"),
        1,
    );
    Gateway::start(pki.dir.path(), &yaml)
}

fn escalations(gw: &Gateway, action: &str) -> f64 {
    gw.metric(&format!(
        "portcullis_abuse_escalations_total{{action=\"{action}\",listener=\"public\"}}"
    ))
}

fn refused_at_accept(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "portcullis_connections_refused_total{{listener=\"public\",reason=\"{reason}\"}}"
    ))
}

#[test]
fn a_connection_that_keeps_being_refused_is_slowed_then_closed_and_others_are_served() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "abuse");
    let gw = gateway(
        &pki,
        &echo,
        "{ refusals: { window: 1m, slow_after: 3, delay: 800ms, close_after: 6 } }",
    );
    // `other` may not use /admin: every request there is refused (403).
    let abuser = pki.client(Some("other"));
    let mut conn = abuser.connect(gw.port).unwrap();
    let mut took = Vec::new();
    for i in 1..=6 {
        let started = Instant::now();
        let r = conn.request("GET", &format!("/admin/{i}"), &[]).unwrap();
        took.push(started.elapsed());
        assert_eq!(r.status, 403, "request {i}");
        let last = i == 6;
        assert_eq!(r.header("connection") == Some("close"), last, "request {i}");
    }
    // Three answered at once, the next two late (800 ms spread over 400 to 1,200 ms, so a
    // flood's connections do not come back in step), the sixth at once and closing.
    for (i, t) in took.iter().enumerate() {
        let slowed = i == 3 || i == 4;
        if slowed {
            assert!(*t >= Duration::from_millis(390), "request {}: {t:?}", i + 1);
            assert!(*t < Duration::from_millis(1500), "request {}: {t:?}", i + 1);
        } else {
            assert!(*t < Duration::from_millis(300), "request {}: {t:?}", i + 1);
        }
    }
    let (rest, closed) = conn.read_until_closed(Duration::from_secs(2));
    assert!(closed && rest.is_empty());
    assert_eq!(escalations(&gw, "slowed"), 2.0);
    assert_eq!(escalations(&gw, "closed"), 1.0);

    // Meanwhile another caller of the same tenant is served at once, and so is the abuser on
    // a fresh connection where it is allowed.
    let started = Instant::now();
    let ok = pki
        .client(Some("frontend"))
        .get(gw.port, "/public/x")
        .unwrap();
    assert_eq!(ok.status, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(abuser.get(gw.port, "/public/x").unwrap().status, 200);

    // Over HTTP/2 the sixth refusal ends the connection with GOAWAY: curl opens a new one for
    // the seventh request.
    let url = format!("https://localhost:{}/admin/h2", gw.port);
    let out = curl_as(&pki, "other")
        .args(["-sS", "--http2", "-w", "%{http_code} %{num_connects}\n"])
        .args((0..7).flat_map(|_| ["-o", "/dev/null", url.as_str()]))
        .output()
        .unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        ["403 1", "403 0", "403 0", "403 0", "403 0", "403 0", "403 1"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(escalations(&gw, "closed"), 2.0);
}

#[test]
fn a_source_that_keeps_reconnecting_is_refused_at_accept_unless_exempt() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "abuse-rate");
    let gw = gateway(
        &pki,
        &echo,
        "{ connection_rate_per_source: { connections: 3, per: 1m }, connection_rate_per_identity: off }",
    );
    let client = pki.client(Some("frontend"));
    for i in 0..3 {
        assert_eq!(
            client.get(gw.port, &format!("/public/{i}")).unwrap().status,
            200
        );
    }
    // The fourth new connection from 127.0.0.1 within the minute is closed before TLS.
    assert!(client.get(gw.port, "/public/4").is_err());
    assert_eq!(refused_at_accept(&gw, "source_rate"), 1.0);
    // Another source address has its own allowance.
    let out = curl_as(&pki, "frontend")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--interface", "127.0.0.2"])
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", gw.port)])
        .arg(format!("https://localhost:{}/public/other-source", gw.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    drop(gw);

    // The same limits with 127.0.0.1 exempt: no refusal.
    let gw = gateway(
        &pki,
        &echo,
        "{ connection_rate_per_source: { connections: 3, per: 1m }, exempt: [127.0.0.0/8] }",
    );
    for i in 0..6 {
        assert_eq!(
            client.get(gw.port, &format!("/public/{i}")).unwrap().status,
            200
        );
    }
    assert_eq!(refused_at_accept(&gw, "source_rate"), 0.0);
}

#[test]
fn an_identity_that_keeps_reconnecting_is_refused_after_the_handshake() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "abuse-id");
    let gw = gateway(
        &pki,
        &echo,
        "{ connection_rate_per_identity: { connections: 2, per: 1m }, connection_rate_per_source: off }",
    );
    let frontend = pki.client(Some("frontend"));
    for i in 0..2 {
        assert_eq!(
            frontend
                .get(gw.port, &format!("/public/{i}"))
                .unwrap()
                .status,
            200
        );
    }
    assert!(frontend.get(gw.port, "/public/3").is_err());
    assert_eq!(refused_at_accept(&gw, "identity_rate"), 1.0);
    // Another identity from the same address is not affected.
    let other = pki.client(Some("other"));
    assert_eq!(other.get(gw.port, "/public/x").unwrap().status, 200);
}

/// Every `abuse_summary` of the log, summed: the listener's counts and, per source and per
/// identity, `[slowed, closed, refused]` (an interval's events may span two records).
#[derive(Debug, Default, PartialEq)]
struct Summed {
    counts: BTreeMap<String, u64>,
    sources: BTreeMap<String, [u64; 3]>,
    identities: BTreeMap<String, [u64; 3]>,
}

fn abuse_summaries(all: &[serde_json::Value]) -> (usize, Summed) {
    let summaries: Vec<&serde_json::Value> = all
        .iter()
        .filter(|r| r["kind"] == "abuse_summary")
        .collect();
    let mut summed = Summed::default();
    for record in &summaries {
        let listeners = record["event"]["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 1, "{record}");
        let l = &listeners[0];
        assert_eq!(l["listener"], "public");
        for key in [
            "slowed",
            "delayed",
            "closed",
            "source_rate",
            "identity_rate",
        ] {
            *summed.counts.entry(key.to_owned()).or_default() += l[key].as_u64().unwrap();
        }
        for (list, into) in [
            ("sources", &mut summed.sources),
            ("identities", &mut summed.identities),
        ] {
            for c in l[list].as_array().unwrap() {
                let sum = into
                    .entry(c["caller"].as_str().unwrap().to_owned())
                    .or_default();
                for (i, key) in ["slowed", "closed", "refused"].iter().enumerate() {
                    sum[i] += c[*key].as_u64().unwrap();
                }
            }
        }
    }
    (summaries.len(), summed)
}

/// Whether the running gateway's log already holds an `abuse_summary` (written on the
/// interval, not only at exit). A read racing the writer may fail; it is tried again.
fn summarised_while_running(dir: &Path) -> bool {
    let out = cli(&["audit", "query", dir.to_str().unwrap()]);
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains(r#""kind":"abuse_summary""#))
}

#[test]
fn escalations_are_summarised_in_the_audit_log_with_exact_counts() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "abuse-audit");
    let yaml = base_config(echo.port)
        .replacen(
            "      client_ca: ca.pem\n",
            "      client_ca: ca.pem\n    connections: { abuse: { \
             refusals: { window: 1m, slow_after: 2, delay: 100ms, close_after: 5 }, \
             connection_rate_per_source: { connections: 3, per: 1m }, \
             connection_rate_per_identity: off } }\n",
            1,
        )
        .replacen(
            "shutdown:\n",
            "audit:\n  directory: audit\n  signing_key: audit.key\n  \
             refusals: { interval: 1s }\nshutdown:\n",
            1,
        );
    let mut gw = Gateway::start(d, &yaml);

    // Source connection 1: five refusals, the third and fourth answered late, the fifth
    // closing the connection.
    let mut conn = pki.client(Some("other")).connect(gw.port).unwrap();
    for i in 1..=5 {
        let r = conn.request("GET", &format!("/admin/{i}"), &[]).unwrap();
        assert_eq!(r.status, 403, "request {i}");
        assert_eq!(r.header("connection") == Some("close"), i == 5);
    }
    let (_, closed) = conn.read_until_closed(Duration::from_secs(2));
    assert!(closed);
    // Connections 2 and 3 are within the source's rate; 4 and 5 are refused at accept.
    let frontend = pki.client(Some("frontend"));
    for i in 2..=3 {
        assert_eq!(
            frontend
                .get(gw.port, &format!("/public/{i}"))
                .unwrap()
                .status,
            200
        );
    }
    for i in 4..=5 {
        assert!(frontend.get(gw.port, &format!("/public/{i}")).is_err());
    }
    assert_eq!(escalations(&gw, "slowed"), 2.0);
    assert_eq!(escalations(&gw, "closed"), 1.0);
    assert_eq!(refused_at_accept(&gw, "source_rate"), 2.0);

    // The interval's summary is written while the gateway runs (`audit.refusals.interval`).
    let dir = d.join("audit");
    let started = Instant::now();
    while !summarised_while_running(&dir) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no abuse_summary within 10 s:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(&mut gw);

    let all = records(&dir);
    let (written, summed) = abuse_summaries(&all);
    assert!((1..=2).contains(&written), "{written} abuse summaries");
    let counts: Vec<(&str, u64)> = summed
        .counts
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        counts,
        [
            ("closed", 1),
            ("delayed", 2),
            ("identity_rate", 0),
            ("slowed", 1),
            ("source_rate", 2)
        ]
    );
    // One source did all of it; the identity only what it did once through the handshake.
    assert_eq!(
        summed.sources,
        BTreeMap::from([("127.0.0.1".to_owned(), [1, 1, 2])])
    );
    assert_eq!(
        summed.identities,
        BTreeMap::from([(format!("{TD}/ns/app/sa/other"), [1, 1, 0])])
    );
    let out = verify(&dir, &d.join("audit.key.pub"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
