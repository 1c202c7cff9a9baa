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
  - name: edge
    tenant: acme
    require_spiffe_id: false
    dns_names: [localhost]
    server_auth: true
    client_auth: true
    max_lifetime: 1h
  - name: admin-server
    tenant: platform
    require_spiffe_id: false
    dns_names: [localhost]
    server_auth: true
    client_auth: false
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
            "--profile",
            "workloads",
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

/// curl sending 24 GETs at 4/s over one HTTP/2 connection with `name`'s certificate: a client
/// that keeps its connection open across a revocation.
struct H2Probe(std::process::Child);

impl H2Probe {
    fn start(pki: &Pki, d: &Path, name: &str, url: &str) -> Self {
        let child = Command::new("curl")
            .args(["-sS", "--http2", "--rate", "4/s"])
            .args(["-w", "%{http_code} %{num_connects}\n"])
            .arg("--cacert")
            .arg(pki.path("ca.pem"))
            .arg("--cert")
            .arg(d.join(format!("{name}.pem")))
            .arg("--key")
            .arg(d.join(format!("{name}.key")))
            .args((0..24).flat_map(|_| ["-o", "/dev/null", url]))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Self(child)
    }

    /// Served before, refused after on the same connection, which the gateway then ends.
    fn assert_cut_after_revocation(self) {
        let out = self.0.wait_with_output().unwrap();
        let lines: Vec<(u16, u32)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (code, connects) = l.split_once(' ')?;
                Some((code.parse().ok()?, connects.parse().ok()?))
            })
            .collect();
        let curl_err = String::from_utf8_lossy(&out.stderr).to_string();
        eprintln!("HTTP/2 (status, new connections) per request: {lines:?}");
        assert_eq!(
            lines.first().map(|l| l.0),
            Some(200),
            "{lines:?} {curl_err}"
        );
        // The first refusal comes on the connection opened before the revocation; the gateway
        // then ends that connection (GOAWAY), and nothing after it is served.
        let first_refused = lines
            .iter()
            .position(|l| l.0 == 403)
            .unwrap_or_else(|| panic!("never refused: {lines:?} {curl_err}"));
        assert!(
            lines[..=first_refused].iter().skip(1).all(|l| l.1 == 0),
            "the refused request came on the connection opened before the revocation: {lines:?}"
        );
        let after = &lines[first_refused + 1..];
        assert!(after.iter().all(|l| l.0 != 200), "{lines:?}");
        assert!(
            after.iter().all(|l| l.0 == 0 || l.1 == 1),
            "the old connection was not ended after the refusal: {lines:?} {curl_err}"
        );
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
    // What an attacker holding the doomed certificate keeps open across the revocation: an
    // HTTP/1.1 keep-alive connection, an HTTP/2 connection (curl sending a request every
    // 250 ms on one connection), and a TLS session to resume.
    let mut kept = client("doomed").connect(gw.port).unwrap();
    assert_eq!(kept.request("GET", "/x", &[]).unwrap().status, 200);
    let resumable = client("doomed");
    assert_eq!(resumable.get(gw.port, "/x").unwrap().status, 200);
    let url = format!("https://localhost:{}/x", gw.port);
    let h2 = H2Probe::start(&pki, d, "doomed", &url);

    let (audit_dir, audit_key) = (d.join("ca-audit"), d.join("ca-audit.key"));
    let out = ca.run(&[
        "revoke",
        &doomed,
        "--reason",
        "keyCompromise",
        "--audit-dir",
        audit_dir.to_str().unwrap(),
        "--audit-key",
        audit_key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "ca revoke: {}", stderr(&out));
    // The revocation is in the CA's audit log, which verifies.
    let recorded = Command::new(bin())
        .args(["audit", "query", audit_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let recorded = String::from_utf8_lossy(&recorded.stdout).to_string();
    assert!(
        recorded.contains("\"action\":\"revoke\"") && recorded.contains(&doomed),
        "{recorded}"
    );
    let verify = Command::new(bin())
        .args(["audit", "verify", audit_dir.to_str().unwrap(), "--key"])
        .arg(d.join("ca-audit.key.pub"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", stderr(&verify));
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
    // The connection opened before the revocation is refused on its next request, and closed.
    let resp = kept.request("GET", "/x", &[]).unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"], "certificate_revoked");
    assert!(kept.closed_by_server());
    // A resumed TLS session restores the revoked certificate without a handshake check; the
    // request on it is refused all the same.
    if let Ok(mut conn) = resumable.connect(gw.port) {
        let resumed = conn.resumed();
        let status = conn.request("GET", "/x", &[]).map_or(0, |r| r.status);
        assert_ne!(status, 200, "resumed session served (resumed: {resumed})");
        eprintln!("after revocation: resumed={resumed}, status {status}");
    }
    // The HTTP/2 connection: served before, refused after, never reconnected.
    h2.assert_cut_after_revocation();
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

/// A second region's CA: its issuing key in its own token, its intermediate signed by the
/// first CA's root key (`ca init --region`). A gateway that trusts only the root serves both
/// regions' workloads, and a revocation on the region's own CRL reaches it through a CRL file
/// holding every region's CRL: new handshakes are refused, and so is the next request on a
/// connection opened before; the first region's workloads are unaffected.
#[test]
fn a_region_revokes_on_its_own_crl_and_a_gateway_trusting_the_root_enforces_it() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(home) = HsmCa::init(d) else { return };
    softhsm_token(d, "portcullis-eu").unwrap();
    let eu = HsmCa {
        config: d.join("eu.yaml"),
        state: d.join("eu"),
        softhsm_conf: home.softhsm_conf.clone(),
    };
    let home_config = std::fs::read_to_string(&home.config).unwrap();
    std::fs::write(
        &eu.config,
        home_config
            .replace(
                &format!("state_dir: {}", home.state.display()),
                &format!("state_dir: {}", eu.state.display()),
            )
            .replace(
                "    token_label: portcullis-ca\n",
                &format!(
                    "    token_label: portcullis-eu\n    pin_file: {pin}\nroot_backend:\n  pkcs11:\n    token_label: portcullis-ca\n",
                    pin = d.join("hsm.pin").display()
                ),
            ),
    )
    .unwrap();
    let root = home.state.join("root.pem");
    // Without the root certificate, or with the region's intermediate in its place: refused.
    let out = eu.run(&["init", "--region", "eu"]);
    assert!(!out.status.success());
    let out = eu.run(&[
        "init",
        "--region",
        "eu",
        "--root",
        home.state.join("intermediate.pem").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a root CA"), "{}", stderr(&out));
    let out = eu.run(&["init", "--region", "eu", "--root", root.to_str().unwrap()]);
    assert!(out.status.success(), "ca init --region: {}", stderr(&out));
    assert_eq!(
        std::fs::read(eu.state.join("root.pem")).unwrap(),
        std::fs::read(&root).unwrap()
    );

    let home_leaf = home.issue(d, "home", "spiffe://test.portcullis.local/ns/app/sa/home");
    let eu_leaf = eu.issue(d, "eu-app", "spiffe://test.portcullis.local/ns/app/sa/eu");
    // Every region's CRL in the one file the gateway reads.
    let crls = d.join("crls.pem");
    let union = || {
        let text = [&home.state, &eu.state]
            .iter()
            .map(|s| std::fs::read_to_string(s.join("crl.pem")).unwrap())
            .collect::<String>();
        std::fs::write(&crls, text).unwrap();
    };
    union();
    let echo = Echo::start(d, "regions");
    let gw = Gateway::start(
        d,
        &GATEWAY
            .replace("{echo}", &echo.port.to_string())
            .replace("crl: ca/crl.pem", "crl: crls.pem"),
    );
    let client = |name: &str| {
        Client::new(
            &pki.path("ca.pem"),
            Some((d.join(format!("{name}.pem")), d.join(format!("{name}.key")))),
        )
    };
    assert_eq!(client("home").get(gw.port, "/x").unwrap().status, 200);
    assert_eq!(client("eu-app").get(gw.port, "/x").unwrap().status, 200);
    let mut kept = client("eu-app").connect(gw.port).unwrap();
    assert_eq!(kept.request("GET", "/x", &[]).unwrap().status, 200);
    // And an HTTP/2 connection carrying requests across the revocation.
    let h2 = H2Probe::start(
        &pki,
        d,
        "eu-app",
        &format!("https://localhost:{}/x", gw.port),
    );
    std::thread::sleep(Duration::from_millis(600));

    let out = eu.run(&["revoke", &eu_leaf, "--reason", "keyCompromise"]);
    assert!(out.status.success(), "ca revoke: {}", stderr(&out));
    union();
    let start = Instant::now();
    while client("eu-app")
        .get(gw.port, "/x")
        .is_ok_and(|r| r.status == 200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the region's revocation was not enforced:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let resp = kept.request("GET", "/x", &[]).unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"], "certificate_revoked");
    h2.assert_cut_after_revocation();
    assert_eq!(client("home").get(gw.port, "/x").unwrap().status, 200);
    assert_ne!(home_leaf, eu_leaf);
}

/// The gateway obtains its serving certificate from the CA's admin API with a bootstrap token,
/// then renews it (by mTLS with the current one) at two thirds of its lifetime, swapping it in
/// under a live keep-alive client.
#[test]
fn the_gateway_certificate_rotates_under_a_live_keep_alive_client() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(ca) = HsmCa::init(d) else { return };
    let admin = AdminApi::start(d, &ca);
    let admin_port = admin.port;
    std::fs::write(d.join("gw.token"), admin.token(&ca, None)).unwrap();

    let echo = Echo::start(d, "renew");
    let yaml = format!(
        r#"
listeners:
  - name: public
    address: 127.0.0.1:{{port}}
    tls:
      certificate: gw.pem
      private_key: gw.key
      client_auth: required
      client_ca: ca.pem
      issuer:
        url: https://localhost:{admin_port}
        ca: ca/bundle.pem
        bootstrap_token_file: gw.token
        dns_names: [localhost]
        profile: edge
        lifetime: 12s
metrics:
  address: 127.0.0.1:{{metrics}}
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
tenants:
  - name: acme
    routes:
      - name: api
        path_prefix: /
        upstream: echo
        access: [ {{ id: anyone }} ]
"#,
        echo = echo.port
    );
    let gw = Gateway::start(d, &yaml);
    let key_mode = std::fs::metadata(d.join("gw.key")).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );
    let client = || {
        Client::new(
            &ca.state.join("bundle.pem"),
            Some((pki.path("frontend.pem"), pki.path("frontend.key"))),
        )
    };
    let mut conn = client().connect(gw.port).unwrap();
    let first = conn.server_certificate();
    assert_eq!(conn.request("GET", "/before", &[]).unwrap().status, 200);

    let renewed =
        "portcullis_certificate_renewals_total{certificate=\"listener/public\",result=\"success\"}";
    let start = Instant::now();
    while gw.metric(renewed) < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no renewal:\n{}",
            gw.proc.log_text()
        );
        // The live connection keeps working throughout.
        assert_eq!(conn.request("GET", "/during", &[]).unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(conn.request("GET", "/after", &[]).unwrap().status, 200);
    // A new client (a resumed TLS session would show the certificate of the first one).
    let fresh = client().connect(gw.port).unwrap();
    assert_ne!(
        fresh.server_certificate(),
        first,
        "new connections get the new certificate"
    );
    let listed = ca.run(&["list", "--tenant", "acme", "--json"]);
    let edge = String::from_utf8_lossy(&listed.stdout)
        .matches("\"edge\"")
        .count();
    assert!(edge >= 2, "bootstrap issuance and a renewal: {edge}");
    // The CA goes away: renewal fails and backs off, and the current certificate keeps
    // serving.
    drop(admin);
    let failed =
        "portcullis_certificate_renewals_total{certificate=\"listener/public\",result=\"failure\"}";
    let start = Instant::now();
    while gw.metric(failed) < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no failed renewal"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(client().get(gw.port, "/still").unwrap().status, 200);
    assert!(gw.proc.log_text().contains("certificate renewal failed"));
    // The issuance API recorded the issuances as CA events.
    let audit = Command::new(bin())
        .args(["audit", "query", d.join("admin-audit").to_str().unwrap()])
        .output()
        .unwrap();
    let issued = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .filter(|l| l.contains("\"kind\":\"ca\"") && l.contains("\"action\":\"issue\""))
        .count();
    assert!(issued >= 2, "{}", String::from_utf8_lossy(&audit.stdout));
}

/// `portcullis admin serve` for a CA, with its calls audited in `admin-audit/`; stopped with
/// SIGTERM (which closes its audit log) when dropped.
pub struct AdminApi {
    pub port: u16,
    proc: Proc,
}

impl AdminApi {
    pub fn start(d: &Path, ca: &HsmCa) -> Self {
        Self::start_with(d, ca, "")
    }

    /// With `extra` YAML appended to the admin config (`agents:`).
    pub fn start_with(d: &Path, ca: &HsmCa, extra: &str) -> Self {
        let port = free_port();
        std::fs::write(
            d.join("admin.yaml"),
            format!(
                "listen: 127.0.0.1:{port}\nca: ca.yaml\ntls:\n  self_issue: {{ tenant: platform, profile: admin-server, dns_names: [localhost] }}\n{extra}"
            ),
        )
        .unwrap();
        let (config, audit, key) = (
            d.join("admin.yaml"),
            d.join("admin-audit"),
            d.join("admin-audit.key"),
        );
        let args = [
            "admin",
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--audit-dir",
            audit.to_str().unwrap(),
            "--audit-key",
            key.to_str().unwrap(),
        ];
        let env = [("SOFTHSM2_CONF", ca.softhsm_conf.as_path())];
        let proc = spawn_env(&args, d.join("admin.log"), &env);
        wait_for_port(port);
        AdminApi { port, proc }
    }

    /// A one-time bootstrap token for tenant `acme`.
    pub fn token(&self, ca: &HsmCa, spiffe_id: Option<&str>) -> Vec<u8> {
        let mut cmd = Command::new(bin());
        cmd.args([
            "admin",
            "token",
            "create",
            "--ca-config",
            ca.config.to_str().unwrap(),
        ])
        .args(["--tenant", "acme", "--ttl", "10m"])
        .env("SOFTHSM2_CONF", &ca.softhsm_conf);
        if let Some(id) = spiffe_id {
            cmd.args(["--spiffe-id", id]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    }
}

impl Drop for AdminApi {
    /// SIGTERM, so the admin server stops and closes its audit log.
    fn drop(&mut self) {
        self.proc.signal("TERM");
        self.proc.wait_exit(Duration::from_secs(10));
    }
}

/// The gateway's upstream-client certificate comes from the CA too: obtained with a bootstrap
/// token, renewed, and used for new upstream connections — after the first one is revoked and
/// the upstream restarted (so no pooled connection survives), traffic still flows.
#[test]
fn the_upstream_client_certificate_is_obtained_renewed_and_used() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(ca) = HsmCa::init(d) else { return };
    let admin = AdminApi::start(d, &ca);
    let gateway_id = "spiffe://test.portcullis.local/ns/app/sa/gateway";
    std::fs::write(d.join("up.token"), admin.token(&ca, Some(gateway_id))).unwrap();
    let echo = Echo::start(d, "inner");
    // The upstream: a gateway that admits only the outer gateway's CA-issued identity and
    // enforces the CA's CRL.
    let inner_yaml = |port: &str| {
        format!(
            r#"
listeners:
  - name: inner
    address: 127.0.0.1:{port}
    tls: {{ certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca/bundle.pem, crl: ca/crl.pem }}
metrics:
  address: 127.0.0.1:{{metrics}}
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
          - id: only-the-gateway
            spiffe_id: ["{gateway_id}"]
"#,
            echo = echo.port
        )
    };
    let inner = Gateway::start(d, &inner_yaml("{port}"));
    let inner_port = inner.port;
    let outer_yaml = format!(
        r#"
listeners:
  - name: outer
    address: 127.0.0.1:{{port}}
    tls: {{ certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }}
metrics:
  address: 127.0.0.1:{{metrics}}
upstreams:
  - name: inner
    targets: [127.0.0.1:{inner_port}]
    tls:
      server_name: localhost
      ca: ca.pem
      client_certificate: up.pem
      client_key: up.key
      issuer:
        url: https://localhost:{admin_port}
        ca: ca/bundle.pem
        bootstrap_token_file: up.token
        spiffe_id: "{gateway_id}"
        profile: workloads
        lifetime: 12s
tenants:
  - name: acme
    routes:
      - name: api
        path_prefix: /
        upstream: inner
        access: [ {{ id: anyone }} ]
"#,
        admin_port = admin.port
    );
    let outer = Gateway::start(d, &outer_yaml);
    let client = pki.client(Some("frontend"));
    assert_eq!(client.get(outer.port, "/first").unwrap().status, 200);
    let first = std::fs::read(d.join("up.pem")).unwrap();
    let first_serial = ca_serial_of(&d.join("up.pem"));

    let renewed =
        "portcullis_certificate_renewals_total{certificate=\"upstream/inner\",result=\"success\"}";
    let start = Instant::now();
    while outer.metric(renewed) < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no renewal:\n{}",
            outer.proc.log_text()
        );
        assert_eq!(client.get(outer.port, "/during").unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_ne!(std::fs::read(d.join("up.pem")).unwrap(), first);
    outer.wait_metric("portcullis_config_reloads_total{result=\"success\"}", 1.0);

    // Revoke the first certificate only (by default its renewals would go with it) and
    // restart the upstream: only the renewed one gets in.
    let out = ca.run(&[
        "revoke",
        &first_serial,
        "--reason",
        "superseded",
        "--only-this",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(inner);
    let _inner = Gateway::start(d, &inner_yaml(&inner_port.to_string()));
    let start = Instant::now();
    loop {
        let status = client.get(outer.port, "/after").unwrap().status;
        if status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "upstream refused the renewed certificate ({status}):\n{}",
            outer.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The serial (hex, as the CA prints it) of the first certificate in a PEM file.
fn ca_serial_of(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// A certificate that expires while its connection is open stops working on that connection
/// (over HTTP/1.1 here; the check is the same per-request one for HTTP/2).
#[test]
fn a_certificate_that_expires_on_an_open_connection_is_refused() {
    let pki = Pki::new();
    let now = std::time::SystemTime::now();
    let mut brief = portcullis_ca::dev::LeafSpec::client(
        "brief",
        Some("spiffe://test.portcullis.local/ns/app/sa/frontend"),
        Duration::from_secs(3),
    );
    brief.not_before = now - Duration::from_secs(60);
    brief.not_after = now + Duration::from_secs(3);
    pki.ca
        .issue(&brief)
        .unwrap()
        .write(pki.dir.path(), "brief")
        .unwrap();
    let echo = Echo::start(pki.dir.path(), "exp");
    let gw = Gateway::start(pki.dir.path(), &crate::proxy::base_config(echo.port));
    let mut conn = pki.client(Some("brief")).connect(gw.port).unwrap();
    assert_eq!(conn.request("GET", "/admin/x", &[]).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(3500));
    let resp = conn.request("GET", "/admin/x", &[]).unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"], "certificate_expired");
    assert!(conn.closed_by_server());
}

/// Operators are a role. An operator ID that a tenant's profile could issue (a bootstrap token
/// for that tenant would then buy a certificate that lists and revokes every other) is refused
/// by `portcullis admin check` and by `admin serve` before it listens, with a message naming
/// the operator, the profile and the pattern; an operator under the reserved path, issued by a
/// `role: operator` profile, passes.
#[test]
fn an_operator_id_a_tenant_profile_could_issue_is_refused_by_check_and_serve() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(ca) = HsmCa::init(d) else { return };
    let port = free_port();
    let admin_config = |operator: &str| {
        std::fs::write(
            d.join("admin.yaml"),
            format!(
                "listen: 127.0.0.1:{port}\nca: ca.yaml\ntls:\n  self_issue: {{ tenant: platform, \
                 profile: admin-server, dns_names: [localhost] }}\noperators: [\"{operator}\"]\n"
            ),
        )
        .unwrap();
    };
    let admin = d.join("admin.yaml");
    let check = || {
        Command::new(bin())
            .args(["admin", "check", "--config", admin.to_str().unwrap()])
            .env("SOFTHSM2_CONF", &ca.softhsm_conf)
            .output()
            .unwrap()
    };

    // Tenant acme's profile "workloads" issues spiffe://test.portcullis.local/ns/app/**.
    let overlapping = "spiffe://test.portcullis.local/ns/app/sa/ops";
    admin_config(overlapping);
    let out = check();
    assert!(!out.status.success(), "admin check accepted {overlapping}");
    let err = stderr(&out);
    for needle in [
        overlapping,
        "tenant acme's profile \"workloads\"",
        "spiffe://test.portcullis.local/ns/app/**",
        "spiffe://test.portcullis.local/portcullis/operator/",
    ] {
        assert!(err.contains(needle), "{needle} not in: {err}");
    }
    let mut serve = spawn_env(
        &["admin", "serve", "--config", admin.to_str().unwrap()],
        d.join("admin-refused.log"),
        &[("SOFTHSM2_CONF", ca.softhsm_conf.as_path())],
    );
    let status = serve
        .wait_exit(Duration::from_secs(20))
        .expect("admin serve must refuse to start, not listen");
    assert!(!status.success());
    assert!(
        serve.log_text().contains(overlapping),
        "{}",
        serve.log_text()
    );

    // The safe pattern: the operator under the reserved path, from an operator profile.
    let mut yaml = std::fs::read_to_string(&ca.config).unwrap();
    yaml.push_str(
        "  - name: operators\n    tenant: platform\n    role: operator\n    \
         spiffe_ids: [\"spiffe://test.portcullis.local/portcullis/operator/*\"]\n",
    );
    std::fs::write(&ca.config, yaml).unwrap();
    admin_config("spiffe://test.portcullis.local/portcullis/operator/alice");
    let out = check();
    assert!(out.status.success(), "admin check: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 operator(s)"));
}
