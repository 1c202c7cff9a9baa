//! Operating the gateway: config checks, reloads, metrics, draining on SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::proxy::base_config;

/// The base config with fixed ports, for commands that do not serve.
fn static_config() -> String {
    base_config(9)
        .replace("{port}", "18443")
        .replace("{metrics}", "19901")
}

#[test]
fn check_names_file_and_line_of_the_problem() {
    let pki = Pki::new();
    let good = pki.path("good.yaml");
    std::fs::write(&good, static_config()).unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A route naming an upstream that does not exist.
    let bad = pki.path("bad.yaml");
    let text = static_config().replacen("upstream: echo", "upstream: nope", 2);
    let line = text
        .lines()
        .position(|l| l.contains("upstream: nope"))
        .unwrap()
        + 1;
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("bad.yaml:{line}:")), "{err}");
    assert!(err.contains("nope"), "{err}");

    // An unknown key (a typo in a security policy) is an error too.
    let typo = pki.path("typo.yaml");
    let text = static_config().replacen("spiffe_id:", "spiffe_ids:", 1);
    let line = text
        .lines()
        .position(|l| l.contains("spiffe_ids:"))
        .unwrap()
        + 1;
    std::fs::write(&typo, text).unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("typo.yaml:{line}:")), "{err}");

    // A missing certificate file is named.
    let missing = pki.path("missing.yaml");
    std::fs::write(
        &missing,
        static_config().replace("server.pem", "nothere.pem"),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nothere.pem"), "{err}");
}

#[test]
fn serve_refuses_a_bad_config_with_a_clear_error() {
    let pki = Pki::new();
    let bad = pki.path("bad.yaml");
    std::fs::write(&bad, "listeners: [").unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn reload_applies_to_an_open_connection_and_bad_configs_are_refused() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "r");
    let config = base_config(echo.port);
    let gw = Gateway::start(pki.dir.path(), &config);
    let mut conn = pki.client(Some("other")).connect(gw.port).unwrap();
    assert_eq!(conn.request("GET", "/admin/x", &[]).unwrap().status, 403);

    // Let `other` into /admin; the same keep-alive connection sees the new rule.
    let opened = config.replace(
        "spiffe_id: [spiffe://test.portcullis.local/ns/app/sa/frontend]",
        "spiffe_id: [spiffe://test.portcullis.local/ns/app/sa/*]",
    );
    gw.reload(&opened, "success");
    assert_eq!(conn.request("GET", "/admin/x", &[]).unwrap().status, 200);

    // A broken config is refused and the running one keeps serving, same connection.
    gw.reload("listeners: [}", "failure");
    gw.reload(
        &opened.replace("upstream: echo", "upstream: missing"),
        "failure",
    );
    assert_eq!(conn.request("GET", "/admin/x", &[]).unwrap().status, 200);
    assert!(gw.proc.log_text().contains("reload refused"));
}

/// A reload is one generation: certificate, verifier and policy change together or not at
/// all. A config with a new certificate and a broken client CA file changes nothing; the same
/// config with a good CA file swaps the certificate for new handshakes.
#[test]
fn a_reload_that_fails_anywhere_changes_nothing() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "g");
    let config = base_config(echo.port);
    let gw = Gateway::start(pki.dir.path(), &config);
    // A fresh client (and session cache) for each look: a resumed session would show the
    // certificate of the session it resumes.
    let client = || pki.client(Some("frontend"));
    let before = client().connect(gw.port).unwrap().server_certificate();

    pki.server("server2");
    std::fs::write(
        pki.path("broken-ca.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .unwrap();
    let renewed = config
        .replace("certificate: server.pem", "certificate: server2.pem")
        .replace("private_key: server.key", "private_key: server2.key");
    gw.reload(
        &renewed.replace("client_ca: ca.pem", "client_ca: broken-ca.pem"),
        "failure",
    );
    let mut conn = client().connect(gw.port).unwrap();
    assert_eq!(
        conn.server_certificate(),
        before,
        "the old certificate still serves"
    );
    assert_eq!(conn.request("GET", "/admin/x", &[]).unwrap().status, 200);
    // The old verifier still refuses a certificate from another CA.
    assert!(pki.client(Some("rogue")).get(gw.port, "/admin/x").is_err());

    gw.reload(&renewed, "success");
    let mut conn = client().connect(gw.port).unwrap();
    assert_ne!(
        conn.server_certificate(),
        before,
        "the new certificate serves"
    );
    assert_eq!(conn.request("GET", "/admin/x", &[]).unwrap().status, 200);

    // A listener's client_auth mode is fixed at start-up: changing it is refused, not
    // silently half-applied.
    gw.reload(
        &renewed.replace("client_auth: required", "client_auth: optional"),
        "failure",
    );
    assert!(gw.proc.log_text().contains("only at restart"));
    assert_eq!(client().get(gw.port, "/admin/x").unwrap().status, 200);
}

#[test]
fn watched_config_reloads_on_change() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "w");
    let config = base_config(echo.port);
    let gw = Gateway::start_with(pki.dir.path(), &config, &["--watch"]);
    let other = pki.client(Some("other"));
    assert_eq!(other.get(gw.port, "/admin/x").unwrap().status, 403);
    let opened = config.replace("ns/app/sa/frontend]", "ns/app/sa/other]");
    gw.rewrite(&opened, "success", false);
    assert_eq!(other.get(gw.port, "/admin/x").unwrap().status, 200);
}

#[test]
fn metrics_count_what_was_done() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "m");
    let gw = Gateway::start(pki.dir.path(), &base_config(echo.port));
    let frontend = pki.client(Some("frontend"));
    let other = pki.client(Some("other"));
    for _ in 0..3 {
        assert_eq!(frontend.get(gw.port, "/admin/a").unwrap().status, 200);
    }
    for _ in 0..2 {
        assert_eq!(other.get(gw.port, "/admin/a").unwrap().status, 403);
    }
    let allowed = r#"portcullis_requests_total{decision="allow",route="acme/admin",status_class="2xx",tenant="acme"}"#;
    let denied = r#"portcullis_requests_total{decision="deny",route="acme/admin",status_class="4xx",tenant="acme"}"#;
    gw.wait_metric(allowed, 3.0);
    let m = gw.wait_metric(denied, 2.0);
    assert_eq!(metric_value(&m, allowed), 3.0, "{m}");
    assert_eq!(metric_value(&m, denied), 2.0, "{m}");
    assert!(
        metric_value(
            &m,
            r#"portcullis_request_duration_seconds_count{tenant="acme"}"#
        ) >= 5.0
    );
    assert_eq!(http_get(gw.metrics_port, "/healthz").unwrap().0, 200);
    // The access log has one JSON line per request, with identity and decision.
    let log = gw.proc.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "access")
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    assert!(lines.iter().any(|l| l["authz.decision"] == "deny"
        && l["authz.rule"] == "default-deny"
        && l["client.id"] == "spiffe://test.portcullis.local/ns/app/sa/other"));
}

/// A log shipper that stops reading the gateway's stderr must not stop the gateway: once the
/// pipe is full (64 KiB, a couple of hundred access lines), writing the access line straight
/// to stderr blocked the worker and every request behind it. Lines now wait in a bounded
/// buffer for the writer thread, and past it are dropped and counted.
#[test]
fn a_stalled_stderr_holds_up_no_request() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "s");
    let gw = Gateway::start_with_stderr_unread(pki.dir.path(), &base_config(echo.port));
    let frontend = pki.client(Some("frontend"));
    let mut conn = frontend.connect(gw.port).unwrap();
    // Long paths make long lines: ~1.4 KiB each, so the 4 MiB buffer fills after ~3,000.
    let path = format!("/admin/{}", "x".repeat(1000));
    let started = Instant::now();
    let mut served = 0;
    while served < 3500 {
        if served % 500 == 0 {
            // Within the default 1,000 requests per connection.
            conn = frontend.connect(gw.port).unwrap();
        }
        let response = conn.request("GET", &path, &[]).unwrap_or_else(|e| {
            panic!(
                "request {served} failed ({e}) after {:?}",
                started.elapsed()
            )
        });
        assert_eq!(response.status, 200);
        served += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{served} requests in 120 s"
        );
    }
    let dropped = gw.metric("portcullis_access_log_dropped_lines_total");
    assert!(dropped > 0.0, "no access line dropped with stderr stalled");
    assert_eq!(http_get(gw.metrics_port, "/healthz").unwrap().0, 200);
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "d");
    let mut gw = Gateway::start(pki.dir.path(), &base_config(echo.port));
    let port = gw.port;
    let client = pki.client(Some("frontend"));
    let mut conn = client.connect(port).unwrap();
    let slow = std::thread::spawn(move || {
        conn.request("GET", "/public/slow", &[("x-echo-delay-ms", "1000")])
            .map(|r| r.status)
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    gw.proc.signal("TERM");
    assert_eq!(
        slow.join().unwrap().unwrap(),
        200,
        "in-flight request finished"
    );
    let status = gw.proc.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success());
    // It exits once drained, well before the 3 s grace period is over.
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "{:?}",
        started.elapsed()
    );
    // New connections are no longer accepted.
    assert!(client.connect(port).is_err());
}

/// Keep-alive connections waiting for their next request are closed at once when the gateway
/// drains (they hold no request): the process exits promptly instead of waiting out their
/// idle timeout, and the client sees a clean close, not an answer.
#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "k");
    let mut gw = Gateway::start(pki.dir.path(), &base_config(echo.port));
    let client = pki.client(Some("frontend"));
    let mut idle: Vec<_> = (0..3)
        .map(|i| {
            let mut conn = client.connect(gw.port).unwrap();
            let path = format!("/public/idle-{i}");
            assert_eq!(conn.request("GET", &path, &[]).unwrap().status, 200);
            conn
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    gw.proc.signal("TERM");
    for conn in &mut idle {
        let (answer, closed) = conn.read_until_closed(Duration::from_secs(3));
        assert!(
            closed,
            "idle connection still open after {:?}",
            started.elapsed()
        );
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    }
    let status = gw.proc.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "{:?}",
        started.elapsed()
    );
}

/// A policy with an explicit deny and a header condition, explained and then served.
#[test]
fn explain_matches_what_the_gateway_does() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "x");
    let yaml = base_config(echo.port).replace(
        "          - id: anyone\n",
        "          - id: anyone\n            headers: { x-env: [prod] }\n          - id: no-secrets\n            effect: deny\n            path_prefix: [/public/secrets]\n",
    );
    let gw = Gateway::start(pki.dir.path(), &yaml);
    let explain = |path: &str, header: Option<&str>| {
        let mut cmd = Command::new(bin());
        cmd.args(["policy", "explain", "--config"])
            .arg(&gw.config)
            .args([
                "--identity",
                "spiffe://test.portcullis.local/ns/app/sa/other",
                "--path",
                path,
            ]);
        if let Some(h) = header {
            cmd.args(["--header", h]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = explain("/public/secrets/../x", Some("X-Env=prod"));
    assert!(
        text.contains("(normalised from /public/secrets/../x)"),
        "{text}"
    );
    assert!(text.contains("decision: allow (rule anyone)"), "{text}");
    let text = explain("/public/secrets/k", Some("x-env=prod"));
    assert!(
        text.contains("decision: deny (rule no-secrets: a deny rule matched)"),
        "{text}"
    );
    let text = explain("/public/x", None);
    assert!(text.contains("decision: deny (rule default-deny"), "{text}");

    let mut conn = pki.client(Some("other")).connect(gw.port).unwrap();
    let env = [("X-Env", "prod")];
    assert_eq!(
        conn.request("GET", "/public/secrets/../x", &env)
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        conn.request("GET", "/public/secrets/k", &env)
            .unwrap()
            .status,
        403
    );
    assert_eq!(conn.request("GET", "/public/x", &[]).unwrap().status, 403);
}
