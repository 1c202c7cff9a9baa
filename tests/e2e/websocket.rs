//! WebSocket through the gateway, with real peers (PyPI `websockets`, tests/e2e/ws_peer.py): a
//! thousand messages each way on a plain route and on a route whose responses are redacted
//! (the 101 and the frames left as they are), the access rules deciding the upgrade, and an
//! idle upgraded connection cut at the listener's body idle timeout.

use std::process::{Child, Command, Stdio};

use crate::harness::*;

const CONFIG: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
    connections: { body_idle_timeout: 2s }
metrics:
  address: 127.0.0.1:{metrics}
shutdown:
  grace_period: 1s
upstreams:
  - name: ws
    targets: [127.0.0.1:{ws}]
tenants:
  - name: acme
    routes:
      - name: chat
        path_prefix: /chat
        upstream: ws
        access:
          - id: frontend
            spiffe_id: [spiffe://test.portcullis.local/ns/app/sa/frontend]
  - name: redacting
    dlp: { response: { card_number: redact } }
    routes:
      - name: feed
        path_prefix: /feed
        upstream: ws
        websocket: allow
        access: [ { id: anyone } ]
"#;

/// The WebSocket echo server; stopped when its stdin closes (on drop).
struct WsEcho {
    port: u16,
    child: Child,
}

impl WsEcho {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/ws_peer.py"))
            .args(["serve", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 with the websockets package (deploy/setup-debian.sh --test)");
        wait_for_port(port);
        Self { port, child }
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `count` messages of `size` bytes through the gateway as `client`, `pause` apart.
fn exchange(
    pki: &Pki,
    gw: &Gateway,
    client: &str,
    path: &str,
    count: usize,
    size: usize,
    pause: f64,
) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/ws_peer.py"))
        .arg("client")
        .arg(format!("wss://localhost:{}{path}", gw.port))
        .arg(pki.path("ca.pem"))
        .arg(pki.path(&format!("{client}.pem")))
        .arg(pki.path(&format!("{client}.key")))
        .args([count.to_string(), size.to_string(), pause.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {stdout}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            gw.proc.log_text()
        )
    })
}

#[test]
fn a_thousand_messages_pass_each_way_and_the_rules_decide_the_upgrade() {
    let pki = Pki::new();
    let ws = WsEcho::start();
    let gw = Gateway::start(
        pki.dir.path(),
        &CONFIG.replace("{ws}", &ws.port.to_string()),
    );

    let r = exchange(&pki, &gw, "frontend", "/chat/room", 1_000, 64, 0.0);
    assert_eq!(
        (r["sent"].as_u64(), r["echoed"].as_u64()),
        (Some(1_000), Some(1_000)),
        "{r}"
    );
    assert!(r["error"].is_null(), "{r}");

    // A route whose responses are redacted: the 101 and the frames are not touched (no
    // chunked framing added), and frames are not scanned (counted as unscanned instead).
    let r = exchange(&pki, &gw, "frontend", "/feed/live", 1_000, 200, 0.0);
    assert_eq!(r["echoed"].as_u64(), Some(1_000), "{r}");

    // The access rules decide the upgrade: another caller is refused before any frame.
    let r = exchange(&pki, &gw, "other", "/chat/room", 1, 16, 0.0);
    assert_eq!(r["sent"].as_u64(), Some(0), "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("403"), "{r}");

    let metrics = gw.metrics();
    assert_eq!(
        metric_value(
            &metrics,
            "portcullis_dlp_unscanned_total{direction=\"response\",reason=\"websocket\",tenant=\"redacting\"}"
        ),
        1.0,
        "{metrics}"
    );
    for tenant in ["acme", "redacting"] {
        let sample = format!("portcullis_upgrades_total{{tenant=\"{tenant}\"}}");
        assert_eq!(metric_value(&metrics, &sample), 1.0, "{metrics}");
    }
}

#[test]
fn an_idle_upgraded_connection_is_cut_at_the_body_idle_timeout() {
    let pki = Pki::new();
    let ws = WsEcho::start();
    let gw = Gateway::start(
        pki.dir.path(),
        &CONFIG.replace("{ws}", &ws.port.to_string()),
    );
    // Two messages 3 s apart: the listener lets a connection idle for 2 s at most.
    let r = exchange(&pki, &gw, "frontend", "/chat/idle", 2, 16, 3.0);
    assert_eq!(r["echoed"].as_u64(), Some(1), "{r}");
    assert!(r["closed"] == true || !r["error"].is_null(), "{r}");
    gw.wait_metric(
        "portcullis_upgrades_ended_total{reason=\"idle\",tenant=\"acme\"}",
        1.0,
    );
}

#[test]
fn a_busy_upgraded_connection_is_cut_at_the_listeners_max_connection_age() {
    let pki = Pki::new();
    let ws = WsEcho::start();
    let yaml = CONFIG.replace("{ws}", &ws.port.to_string()).replace(
        "connections: { body_idle_timeout: 2s }",
        "connections: { body_idle_timeout: 30s, max_connection_age: 2s }",
    );
    let gw = Gateway::start(pki.dir.path(), &yaml);
    // A message every 250 ms for 5 s: never idle, but older than 2 s after the eighth or so.
    let r = exchange(&pki, &gw, "frontend", "/chat/long", 20, 16, 0.25);
    let echoed = r["echoed"].as_u64().unwrap_or(0);
    assert!((4..20).contains(&echoed), "{r}");
    gw.wait_metric(
        "portcullis_upgrades_ended_total{reason=\"max_duration\",tenant=\"acme\"}",
        1.0,
    );
}
