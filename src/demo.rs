//! `portcullis demo`: a complete local deployment in one command. It creates a development
//! PKI and a config in a state folder, starts the built-in echo upstream as a child process,
//! prints commands to try, and serves until Ctrl-C.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use portcullis_ca::dev::{DevCa, LeafSpec};

const TRUST_DOMAIN: &str = "demo.portcullis.local";
const DAY: Duration = Duration::from_secs(24 * 3600);

pub(crate) struct DemoPorts {
    pub(crate) state: PathBuf,
    pub(crate) gateway: u16,
    pub(crate) upstream: u16,
    pub(crate) metrics: u16,
}

pub(crate) fn run(ports: &DemoPorts) -> anyhow::Result<()> {
    let state = &ports.state;
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let state = state
        .canonicalize()
        .with_context(|| format!("resolving {}", state.display()))?;
    write_pki(&state)?;
    let config = state.join("portcullis.yaml");
    std::fs::write(&config, demo_config(ports))
        .with_context(|| format!("writing {}", config.display()))?;

    // The echo upstream is a child that exits when our end of its stdin closes, so it never
    // outlives the demo, whichever way the demo ends.
    let exe = std::env::current_exe().context("locating the portcullis binary")?;
    let echo = Command::new(exe)
        .args([
            "echo",
            "--exit-with-stdin",
            "--name",
            "demo-echo",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{}", ports.upstream))
        .stdin(Stdio::piped())
        .spawn()
        .context("starting the echo upstream")?;

    eprintln!("portcullis demo: key backend: software (development CA; the HSM-backed CA is not built yet)");
    print_instructions(&state, ports);
    let result = portcullis_gateway::serve(config, true, &crate::keys::audit_signer);
    drop(echo);
    result.map_err(Into::into)
}

fn write_pki(dir: &Path) -> anyhow::Result<()> {
    let ca = DevCa::new("Portcullis Demo CA")?;
    ca.write(dir, "ca")?;
    ca.issue(&LeafSpec::localhost_server(&[], 30 * DAY))?
        .write(dir, "server")?;
    let allowed = format!("spiffe://{TRUST_DOMAIN}/ns/demo/sa/frontend");
    ca.issue(&LeafSpec::client("frontend", Some(&allowed), DAY))?
        .write(dir, "allowed")?;
    let denied = format!("spiffe://{TRUST_DOMAIN}/ns/demo/sa/intruder");
    ca.issue(&LeafSpec::client("intruder", Some(&denied), DAY))?
        .write(dir, "denied")?;
    // A certificate the gateway has never heard of: same SPIFFE ID, wrong CA.
    let rogue = DevCa::new("Unknown CA")?;
    rogue
        .issue(&LeafSpec::client("frontend", Some(&allowed), DAY))?
        .write(dir, "rogue")?;
    Ok(())
}

fn demo_config(ports: &DemoPorts) -> String {
    format!(
        r#"# Written by `portcullis demo`. Edits take effect on save (the demo watches this file).
listeners:
  - name: public
    address: 127.0.0.1:{gateway}
    tls:
      certificate: server.pem
      private_key: server.key
      client_auth: required
      client_ca: ca.pem
metrics:
  address: 127.0.0.1:{metrics}
shutdown:
  grace_period: 5s
audit:
  directory: audit
  signing_key: audit.key
  mode: fail-closed
upstreams:
  - name: echo
    targets: [127.0.0.1:{upstream}]
    connect_timeout: 2s
    read_timeout: 10s
    health_check:
      path: /healthz
      interval: 2s
tenants:
  - name: demo
    routes:
      - name: api
        path_prefix: /
        upstream: echo
        access:
          - id: frontend-may-call
            spiffe_id: [spiffe://{TRUST_DOMAIN}/ns/demo/sa/frontend]
"#,
        gateway = ports.gateway,
        metrics = ports.metrics,
        upstream = ports.upstream,
    )
}

fn print_instructions(state: &Path, ports: &DemoPorts) {
    let s = state.display();
    let url = format!("https://localhost:{}/hello", ports.gateway);
    println!(
        r#"
Portcullis demo: gateway https://localhost:{gw}, echo upstream 127.0.0.1:{up}, metrics http://127.0.0.1:{m}/metrics
State folder: {s}  (config: {s}/portcullis.yaml)

1. Allowed: 200, and the upstream echoes the caller's identity headers (x-portcullis-*):
   curl --cacert {s}/ca.pem --cert {s}/allowed.pem --key {s}/allowed.key {url}

2. Denied by policy: 403 with a JSON body naming the request id:
   curl -i --cacert {s}/ca.pem --cert {s}/denied.pem --key {s}/denied.key {url}

3. No client certificate: refused at the TLS handshake:
   curl --cacert {s}/ca.pem {url}

4. Certificate from an unknown CA: refused at the TLS handshake:
   curl --cacert {s}/ca.pem --cert {s}/rogue.pem --key {s}/rogue.key {url}

5. What was counted:
   curl -s http://127.0.0.1:{m}/metrics | grep ^portcullis_

6. What was recorded: every decision, in a hash-chained log with signed checkpoints:
   portcullis audit tail {s}/audit -n 5
   portcullis audit verify {s}/audit --key {s}/audit.key.pub

Ctrl-C stops everything.
"#,
        gw = ports.gateway,
        up = ports.upstream,
        m = ports.metrics,
    );
}

/// Exits the process when standard input reaches end of file (the parent went away).
pub(crate) fn exit_when_stdin_closes() {
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(|| {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        eprintln!("portcullis: cannot watch stdin: {e}");
    }
}
