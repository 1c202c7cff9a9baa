//! `portcullis agent` as a user runs it: the real `portcullis admin serve` (a SoftHSM2 CA) with
//! an `agents:` grant, the agent obtaining its node certificate with a bootstrap token, and the
//! README's py-spiffe command fetching an SVID over the socket; SIGTERM removes the socket.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ca::{AdminApi, HsmCa};
use crate::harness::*;

const NODE: &str = "spiffe://test.portcullis.local/ns/app/agent/node-1";
const WORKLOAD: &str = "spiffe://test.portcullis.local/ns/app/sa/python";

/// What `/proc/PID/exe` names for `python3`.
fn python_exe() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import spiffe, os; print(os.readlink('/proc/self/exe'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "SKIP: python3 with the PyPI spiffe package is missing (deploy/setup-debian.sh --test)"
        );
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[test]
fn a_workload_gets_its_svid_from_the_agent_with_py_spiffe() {
    let Some(python) = python_exe() else { return };
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(ca) = HsmCa::init(d) else { return };
    let grant = format!(
        "agents:\n  - spiffe_id: \"{NODE}\"\n    tenant: acme\n    grants:\n      - tenant: acme\n        \
         spiffe_ids: [\"spiffe://test.portcullis.local/ns/app/sa/*\"]\n"
    );
    let admin = AdminApi::start_with(d, &ca, &grant);
    std::fs::write(d.join("node.token"), admin.token(&ca, Some(NODE))).unwrap();
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(d.join("node.token")).unwrap().uid()
    };
    std::fs::write(
        d.join("agent.yaml"),
        format!(
            r#"socket: run/workload.sock
admin:
  url: https://localhost:{port}
  ca: ca/bundle.pem
node:
  spiffe_id: "{NODE}"
  certificate: node.pem
  private_key: node.key
  bootstrap_token_file: node.token
  profile: workloads
svid_lifetime: 10m
workloads:
  - selectors: {{ uid: {uid}, path: "{python}" }}
    spiffe_id: "{WORKLOAD}"
    profile: workloads
"#,
            port = admin.port,
            python = python.display()
        ),
    )
    .unwrap();
    let config = d.join("agent.yaml");
    let mut agent = spawn_env(
        &["agent", "--config", config.to_str().unwrap()],
        d.join("agent.log"),
        &[],
    );
    let socket = d.join("run/workload.sock");
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no agent socket:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The README's command.
    let out = Command::new("python3")
        .args([
            "-c",
            "from spiffe import WorkloadApiClient; s = WorkloadApiClient().fetch_x509_svid(); \
             print(s.spiffe_id, s.leaf.not_valid_after_utc)",
        ])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket.display()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\nagent:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );
    assert!(stdout.starts_with(WORKLOAD), "{stdout}");
    assert!(agent.log_text().contains("Workload API: caller attested"));

    // SIGTERM: the agent stops and removes its socket.
    agent.signal("TERM");
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent exits");
    assert!(status.success(), "{}", agent.log_text());
    assert!(!socket.exists());
}
