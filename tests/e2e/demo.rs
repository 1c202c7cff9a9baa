//! `portcullis demo` as a newcomer runs it: the state folder it makes, and what its printed
//! commands promise — allowed, denied, refused at the handshake, recorded, and revoked.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn demo_serves_denies_records_and_revokes_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (port, upstream, metrics) = (free_port(), free_port(), free_port());
    let out = std::fs::File::create(dir.path().join("demo.out")).unwrap();
    let err = std::fs::File::create(dir.path().join("demo.err")).unwrap();
    let mut demo = Command::new(bin())
        .args(["demo", "--state", state.to_str().unwrap()])
        .args([
            "--port",
            &port.to_string(),
            "--upstream-port",
            &upstream.to_string(),
        ])
        .args(["--metrics-port", &metrics.to_string()])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while http_get(metrics, "/readyz").map(|r| r.0) != Some(200) {
        assert!(demo.try_wait().unwrap().is_none(), "demo exited");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "demo never ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let printed = std::fs::read_to_string(dir.path().join("demo.out")).unwrap();
    let client = |name: Option<&str>| {
        Client::new(
            &state.join("ca.pem"),
            name.map(|n| {
                (
                    state.join(format!("{n}.pem")),
                    state.join(format!("{n}.key")),
                )
            }),
        )
    };
    let allowed = client(Some("allowed")).get(port, "/hello").unwrap();
    assert_eq!(allowed.status, 200);
    assert!(String::from_utf8_lossy(&allowed.body).contains("x-portcullis-spiffe-id"));
    let denied = client(Some("denied")).get(port, "/hello").unwrap();
    assert_eq!(denied.status, 403);
    assert!(denied.json()["request_id"].is_string());
    assert!(client(None).get(port, "/hello").is_err(), "no certificate");
    assert!(
        client(Some("rogue")).get(port, "/hello").is_err(),
        "unknown CA"
    );

    // Step 6: the audit log verifies with the key the demo names.
    let verify_line = printed
        .lines()
        .find(|l| l.contains("portcullis audit verify"))
        .unwrap()
        .trim()
        .to_owned();
    let args: Vec<&str> = verify_line.split_whitespace().skip(1).collect();
    let verify = Command::new(bin()).args(&args).output().unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // Step 7: revoke the allowed certificate as printed; the running gateway refuses it.
    let serial = std::fs::read_to_string(state.join("allowed.serial")).unwrap();
    let mut revoke = Command::new(bin());
    revoke
        .args([
            "ca",
            "revoke",
            "--config",
            state.join("ca.yaml").to_str().unwrap(),
        ])
        .args([serial.trim(), "--reason", "keyCompromise"]);
    if printed.contains("SOFTHSM2_CONF=") {
        revoke.env("SOFTHSM2_CONF", state.join("softhsm/softhsm2.conf"));
    }
    let out = revoke.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    while client(Some("allowed"))
        .get(port, "/hello")
        .is_ok_and(|r| r.status == 200)
    {
        assert!(start.elapsed() < Duration::from_secs(10), "still accepted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = demo.kill();
    let _ = demo.wait();
}
