//! Zero-downtime upgrade: a new gateway takes the running one's listening sockets over
//! `--upgrade-socket`, the old one drains and exits, the new one opens the audit log after it
//! — and a client sending requests throughout sees no failure.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

const CONFIG: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
    # The client below opens a connection per request, faster than the default per-source rate.
    connections:
      abuse: { connection_rate_per_source: off, connection_rate_per_identity: off }
metrics:
  address: 127.0.0.1:{metrics}
shutdown:
  grace_period: 5s
audit:
  directory: audit
  signing_key: audit.key
  node: gw-upgrade
  mode: fail-closed
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
tenants:
  - name: acme
    routes:
      - name: all
        upstream: echo
        access: [ { id: anyone } ]
"#;

#[test]
fn an_upgrade_under_load_fails_no_request() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "echo");
    let yaml = CONFIG.replace("{echo}", &echo.port.to_string());
    let socket = d.join("upgrade.sock");
    let socket_arg = socket.to_str().unwrap();
    let mut old = Gateway::start_with(d, &yaml, &["--upgrade-socket", socket_arg]);
    let port = old.port;

    // A client sending requests, each on a new connection, all along (bounded: 30 s, 5,000).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let client = pki.client(Some("frontend"));
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut errors = Vec::new();
            for i in 0..5000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(30) {
                    break;
                }
                match client.get(port, &format!("/r/{i}")) {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!(
                            "{:?} at {:?}",
                            other.map(|r| r.status),
                            std::time::SystemTime::now()
                        ));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // The new gateway: same config (another metrics port; the listener's port is taken over).
    let metrics = free_port();
    let config = d.join("gateway-new.yaml");
    std::fs::write(
        &config,
        yaml.replace("{port}", &port.to_string())
            .replace("{metrics}", &metrics.to_string()),
    )
    .unwrap();
    let mut new = spawn_env(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--upgrade",
            "--upgrade-socket",
            socket_arg,
        ],
        d.join("gateway-new.log"),
        &[],
    );
    let exited = old.proc.wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some(),
        "the old gateway did not exit:\n{}",
        old.proc.log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(metrics, "/readyz").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the new gateway never got ready:\n{}",
            new.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let before = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < before + 50 {
        assert!(
            Instant::now() < deadline,
            "no request served by the new gateway"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}\nold:\n{}\nnew:\n{}",
        old.proc.log_text(),
        new.log_text()
    );
    assert!(old.proc.log_text().contains("handed to the new gateway"));
    let served = ok.load(Ordering::Relaxed);
    eprintln!("upgrade under load: {served} requests, 0 failed");

    // One audit chain, written by one process after the other.
    new.signal("TERM");
    assert!(new.wait_exit(Duration::from_secs(20)).is_some());
    let out = crate::audit::verify(&d.join("audit"), &d.join("audit.key.pub"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Only the gateway's own user may take its sockets: another user connecting to the upgrade
/// socket gets nothing, and the running gateway keeps serving.
#[test]
fn another_user_cannot_take_the_sockets_over() {
    if !std::path::Path::new("/usr/bin/setpriv").exists() {
        return;
    }
    let pki = Pki::new();
    let d = pki.dir.path();
    let echo = Echo::start(d, "echo");
    let socket = d.join("upgrade.sock");
    let yaml = CONFIG
        .replace("{echo}", &echo.port.to_string())
        .replace("audit:\n  directory: audit\n  signing_key: audit.key\n  node: gw-upgrade\n  mode: fail-closed\n", "");
    let gw = Gateway::start_with(d, &yaml, &["--upgrade-socket", socket.to_str().unwrap()]);
    // Another user connecting to the socket (the folder and the 0600 socket keep it out;
    // a caller that got through would meet the peer-credential check).
    let connect = "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint(s.recv(4096))\n";
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "python3",
            "-c",
            connect,
        ])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let client = pki.client(Some("frontend"));
    assert_eq!(client.get(gw.port, "/still").unwrap().status, 200);
    assert!(!gw.proc.log_text().contains("handed to the new gateway"));
}
