//! Abusive callers, as an attacker would be one: a connection whose requests keep being
//! refused is answered later and later, then closed (HTTP/1.1 and HTTP/2), while other
//! clients of the same tenant — and the same client on a fresh connection — are served at
//! once; a source or an identity that keeps reconnecting is refused at accept or right after
//! the handshake, and an exempt source is not.

use std::time::{Duration, Instant};

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
        "{ refusals: { window: 1m, slow_after: 3, delay: 400ms, close_after: 6 } }",
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
    // Three answered at once, the next two 400 ms late, the sixth at once and closing.
    for (i, t) in took.iter().enumerate() {
        let slowed = i == 3 || i == 4;
        if slowed {
            assert!(*t >= Duration::from_millis(380), "request {}: {t:?}", i + 1);
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
