//! `portcullis demo`: a complete local deployment in one command. It creates a development
//! PKI and a config in a state folder, starts the built-in echo upstream as a child process,
//! prints commands to try, and serves until Ctrl-C.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use portcullis_ca::dev::{DevCa, LeafSpec};
use portcullis_ca::{write_atomic, Ca, CaConfig, IssueRequest, Requester, RequesterKind};

const TRUST_DOMAIN: &str = "demo.portcullis.local";
const DAY: Duration = Duration::from_secs(24 * 3600);
const HSM_TOKEN: &str = "portcullis-demo";

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
    let backend = write_pki(&state)?;
    let config = state.join("portcullis.yaml");
    let hsm = std::env::var_os("SOFTHSM2_CONF").is_some();
    std::fs::write(&config, demo_config(ports, hsm))
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

    eprintln!("portcullis demo: CA key backend: {backend}");
    print_instructions(&state, ports);
    let result = portcullis_gateway::serve(
        config,
        portcullis_gateway::ServeOptions {
            watch: true,
            ..Default::default()
        },
        &crate::keys::audit_signer,
    );
    drop(echo);
    result.map_err(Into::into)
}

/// The demo's CA: its keys in a fresh SoftHSM2 token when SoftHSM2 is installed, else software
/// key files. Returns the backend's description. Everything is made anew on every run.
fn write_pki(dir: &Path) -> anyhow::Result<String> {
    for stale in ["ca", "ca-keys", "softhsm"] {
        let path = dir.join(stale);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let (backend_yaml, backend) = match softhsm_token(dir)? {
        Some(conf) => {
            // The CA in this process and the `portcullis ca` commands printed below use it.
            std::env::set_var("SOFTHSM2_CONF", &conf);
            (
                format!(
                    "  pkcs11:\n    token_label: {HSM_TOKEN}\n    pin_file: {}\n",
                    dir.join("hsm.pin").display()
                ),
                format!("PKCS#11 (SoftHSM2 token `{HSM_TOKEN}`; the CA keys are non-extractable)"),
            )
        }
        None => (
            format!(
                "  software:\n    key_dir: {}\n",
                dir.join("ca-keys").display()
            ),
            "software key files (install softhsm2 to keep the CA keys in a token)".to_owned(),
        ),
    };
    let yaml = format!(
        "# Written by `portcullis demo`.\nstate_dir: {state}\nbackend:\n{backend_yaml}keys:\n  root_label: demo-root\n  issuing_label: demo-issuing\nprofiles:\n  - name: workloads\n    tenant: demo\n    spiffe_ids: [\"spiffe://{TRUST_DOMAIN}/ns/**\"]\n    max_lifetime: 24h\n  - name: gateway\n    tenant: demo\n    require_spiffe_id: false\n    dns_names: [localhost]\n    server_auth: true\n    client_auth: false\n    max_lifetime: 24h\n",
        state = dir.join("ca").display(),
    );
    std::fs::write(dir.join("ca.yaml"), &yaml).context("writing ca.yaml")?;
    let config = CaConfig::from_yaml(&yaml)?;
    let ca = Ca::init(&config, SystemTime::now())?;
    std::fs::copy(dir.join("ca/bundle.pem"), dir.join("ca.pem")).context("copying the bundle")?;

    issue(&ca, dir, "server", "gateway", &["localhost"], None)?;
    let allowed = format!("spiffe://{TRUST_DOMAIN}/ns/demo/sa/frontend");
    issue(&ca, dir, "allowed", "workloads", &[], Some(&allowed))?;
    let denied = format!("spiffe://{TRUST_DOMAIN}/ns/demo/sa/intruder");
    issue(&ca, dir, "denied", "workloads", &[], Some(&denied))?;
    // A certificate the gateway has never heard of: same SPIFFE ID, wrong CA.
    DevCa::new("Unknown CA")?
        .issue(&LeafSpec::client("frontend", Some(&allowed), DAY))?
        .write(dir, "rogue")?;
    Ok(backend)
}

/// Issues `NAME.pem` (leaf and intermediate) and `NAME.key` from a CSR, as the CA would for a
/// workload.
fn issue(
    ca: &Ca,
    dir: &Path,
    name: &str,
    profile: &str,
    dns_names: &[&str],
    spiffe_id: Option<&str>,
) -> anyhow::Result<()> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(
        dns_names
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
    )?;
    if let Some(id) = spiffe_id {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(id)?));
    }
    let csr = params.serialize_request(&key)?.pem()?;
    let issued = ca.issue(
        &IssueRequest {
            csr: csr.as_bytes(),
            tenant: "demo".parse()?,
            profile: Some(profile),
            lifetime: Some(DAY),
            requester: Requester {
                kind: RequesterKind::Operator,
                id: "portcullis demo".to_owned(),
            },
        },
        SystemTime::now(),
    )?;
    std::fs::write(dir.join(format!("{name}.pem")), issued.chain_pem)?;
    write_atomic(
        &dir.join(format!("{name}.key")),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    std::fs::write(
        dir.join(format!("{name}.serial")),
        issued.serial.to_string(),
    )?;
    Ok(())
}

/// A fresh SoftHSM2 token store in `dir/softhsm` with the demo's token and a random PIN in
/// `dir/hsm.pin` (0600); `None` when SoftHSM2 is not installed.
fn softhsm_token(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if !Path::new(portcullis_ca::DEFAULT_PKCS11_MODULE).exists() {
        return Ok(None);
    }
    let tokens = dir.join("softhsm/tokens");
    std::fs::create_dir_all(&tokens).context("creating the token folder")?;
    let conf = dir.join("softhsm/softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let mut pin = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut pin))
        .context("reading /dev/urandom")?;
    let pin: String = pin.iter().map(|b| format!("{b:02x}")).collect();
    write_atomic(&dir.join("hsm.pin"), pin.as_bytes(), 0o600)?;
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", HSM_TOKEN])
        .args(["--pin", &pin, "--so-pin", &pin])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .context("running softhsm2-util")?;
    if !out.status.success() {
        anyhow::bail!(
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Some(conf))
}

fn demo_config(ports: &DemoPorts, hsm: bool) -> String {
    // With SoftHSM2, the audit checkpoint key lives in the CA's token too.
    let audit_key = if hsm {
        format!("signing_pkcs11: {{ token_label: {HSM_TOKEN}, key_label: demo-audit, pin_file: hsm.pin }}")
    } else {
        "signing_key: audit.key".to_owned()
    };
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
      crl: ca/crl.pem
metrics:
  address: 127.0.0.1:{metrics}
shutdown:
  grace_period: 5s
audit:
  directory: audit
  {audit_key}
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
   portcullis audit verify {s}/audit --key {s}/{audit_pub}

7. Revoke the allowed certificate; within a second the running gateway refuses it (repeat 1):
   {env}portcullis ca revoke --config {s}/ca.yaml $(cat {s}/allowed.serial) --reason keyCompromise
   {env}portcullis ca list --config {s}/ca.yaml

Ctrl-C stops everything.
"#,
        gw = ports.gateway,
        up = ports.upstream,
        m = ports.metrics,
        audit_pub = if std::env::var_os("SOFTHSM2_CONF").is_some() {
            "audit.pub"
        } else {
            "audit.key.pub"
        },
        env = if std::env::var_os("SOFTHSM2_CONF").is_some() {
            format!("SOFTHSM2_CONF={s}/softhsm/softhsm2.conf ")
        } else {
            String::new()
        },
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
