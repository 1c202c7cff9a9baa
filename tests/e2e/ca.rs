//! The certificate authority with its issuing key in SoftHSM2, driven through the CLI, and a
//! gateway that was already running when a client certificate was revoked.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A private SoftHSM2 token store in `dir` with one initialised token; returns the config
/// file to pass as `SOFTHSM2_CONF` to the processes that use it.
pub fn softhsm_token(dir: &Path, label: &str) -> Option<PathBuf> {
    if !Path::new(MODULE).exists() {
        eprintln!("SKIP: {MODULE} is missing (apt-get install softhsm2)");
        return None;
    }
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let ok = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--pin", "1234", "--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "softhsm2-util --init-token failed");
    let pin = dir.join("hsm.pin");
    std::fs::write(&pin, "1234\n").unwrap();
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Some(conf)
}

/// A CA in `dir/ca` whose keys live in a SoftHSM2 token, with a profile for tenant `acme`.
pub struct HsmCa {
    pub config: PathBuf,
    pub state: PathBuf,
    pub softhsm_conf: PathBuf,
}

impl HsmCa {
    pub fn init(dir: &Path) -> Option<Self> {
        let softhsm_conf = softhsm_token(dir, "portcullis-ca")?;
        let state = dir.join("ca");
        let config = dir.join("ca.yaml");
        std::fs::write(
            &config,
            format!(
                r#"state_dir: {state}
backend:
  pkcs11:
    token_label: portcullis-ca
    pin_file: {pin}
keys:
  root_label: root
  issuing_label: issuing
profiles:
  - name: workloads
    tenant: acme
    spiffe_ids: ["spiffe://test.portcullis.local/ns/app/**"]
    max_lifetime: 1h
"#,
                state = state.display(),
                pin = dir.join("hsm.pin").display()
            ),
        )
        .unwrap();
        let ca = HsmCa {
            config,
            state,
            softhsm_conf,
        };
        let out = ca.run(&["init"]);
        assert!(out.status.success(), "ca init: {}", stderr(&out));
        Some(ca)
    }

    /// `portcullis ca <sub> --config … <args>` with the token's configuration.
    pub fn run(&self, args: &[&str]) -> Output {
        let (sub, rest) = args.split_first().unwrap();
        Command::new(bin())
            .args(["ca", sub, "--config", self.config.to_str().unwrap()])
            .args(rest)
            .env("SOFTHSM2_CONF", &self.softhsm_conf)
            .output()
            .unwrap()
    }

    /// A P-256 key and CSR made by openssl for `spiffe_id`, issued for tenant `acme`: writes
    /// `NAME.pem` (leaf + intermediate) and `NAME.key` in `dir`; returns the serial.
    pub fn issue(&self, dir: &Path, name: &str, spiffe_id: &str) -> String {
        let key = dir.join(format!("{name}.key"));
        let csr = dir.join(format!("{name}.csr"));
        let ok = Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-subj", "/CN=workload", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-addext", &format!("subjectAltName=URI:{spiffe_id}")])
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "openssl req failed");
        let pem = dir.join(format!("{name}.pem"));
        let out = self.run(&[
            "issue",
            "--csr",
            csr.to_str().unwrap(),
            "--tenant",
            "acme",
            "--out",
            pem.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "ca issue: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .skip_while(|w| *w != "serial")
            .nth(1)
            .unwrap_or_else(|| panic!("no serial in {text}"))
            .to_owned()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

const GATEWAY: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls:
      certificate: server.pem
      private_key: server.key
      client_auth: required
      client_ca: ca/bundle.pem
      crl: ca/crl.pem
metrics:
  address: 127.0.0.1:{metrics}
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
tenants:
  - name: acme
    routes:
      - name: api
        path_prefix: /
        upstream: echo
        access:
          - id: app
            spiffe_id: ["spiffe://test.portcullis.local/ns/app/**"]
"#;

#[test]
fn a_revoked_certificate_is_refused_by_a_gateway_already_running() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(ca) = HsmCa::init(d) else { return };
    let keep = ca.issue(d, "keep", "spiffe://test.portcullis.local/ns/app/sa/keep");
    let doomed = ca.issue(
        d,
        "doomed",
        "spiffe://test.portcullis.local/ns/app/sa/doomed",
    );
    // The chain the CA hands out verifies against its bundle with openssl.
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca.state.join("bundle.pem"))
        .arg("-untrusted")
        .arg(ca.state.join("intermediate.pem"))
        .arg(d.join("doomed.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", stderr(&verify));

    let echo = Echo::start(d, "ca");
    let gw = Gateway::start(d, &GATEWAY.replace("{echo}", &echo.port.to_string()));
    let client = |name: &str| {
        Client::new(
            &pki.path("ca.pem"),
            Some((d.join(format!("{name}.pem")), d.join(format!("{name}.key")))),
        )
    };
    assert_eq!(client("doomed").get(gw.port, "/x").unwrap().status, 200);
    assert_eq!(client("keep").get(gw.port, "/x").unwrap().status, 200);

    let out = ca.run(&["revoke", &doomed, "--reason", "keyCompromise"]);
    assert!(out.status.success(), "ca revoke: {}", stderr(&out));
    let listed = ca.run(&["list", "--status", "revoked", "--json"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&doomed));

    // Within a few seconds, new handshakes with the revoked certificate are refused.
    let start = Instant::now();
    let refused_after = loop {
        let refused = client("doomed")
            .get(gw.port, "/x")
            .map_or(true, |r| r.status != 200);
        if refused {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "revoked certificate still accepted:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("revocation enforced {refused_after:?} after `ca revoke`");
    let m = gw.wait_metric(
        "portcullis_tls_handshake_failures_total{listener=\"public\",reason=\"revoked\"}",
        1.0,
    );
    assert!(
        metric_value(
            &m,
            "portcullis_tls_handshake_failures_total{listener=\"public\",reason=\"revoked\"}"
        ) >= 1.0
    );
    assert!(
        metric_value(
            &m,
            "portcullis_crl_loads_total{listener=\"public\",result=\"success\"}"
        ) >= 1.0
    );
    // Everyone else is unaffected.
    assert_eq!(client("keep").get(gw.port, "/x").unwrap().status, 200);
    assert_ne!(keep, doomed);

    // A corrupt CRL is refused and the previous one stays in force.
    std::fs::write(
        ca.state.join("crl.pem"),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    gw.wait_metric(
        "portcullis_crl_loads_total{listener=\"public\",result=\"failure\"}",
        1.0,
    );
    assert!(client("doomed")
        .get(gw.port, "/x")
        .map_or(true, |r| r.status != 200));
    assert_eq!(client("keep").get(gw.port, "/x").unwrap().status, 200);
}
