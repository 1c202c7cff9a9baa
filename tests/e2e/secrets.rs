//! Secrets on disk: a PIN or connection-string file that other local users can read is
//! refused, by the CA and by the gateway's `check`, naming the file and the fix.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::ca::softhsm_token;
use crate::harness::{bin, Pki};

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `portcullis ca init` with a world-readable PIN file stops before logging in to the token;
/// after `chmod 600` the same command succeeds.
#[test]
fn the_ca_refuses_a_pin_file_others_can_read() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(softhsm_conf) = softhsm_token(d, "pin-check") else {
        return;
    };
    let pin = d.join("hsm.pin");
    let config = d.join("ca.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nbackend:\n  pkcs11:\n    token_label: pin-check\n    pin_file: {}\n\
             keys:\n  root_label: root\n  issuing_label: issuing\nprofiles: []\n",
            d.join("ca").display(),
            pin.display()
        ),
    )
    .unwrap();
    let init = || {
        Command::new(bin())
            .args(["ca", "init", "--config", config.to_str().unwrap()])
            .env("SOFTHSM2_CONF", &softhsm_conf)
            .output()
            .unwrap()
    };
    chmod(&pin, 0o644);
    let out = init();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "init with a 0644 PIN file succeeded");
    assert!(
        err.contains(&pin.display().to_string())
            && err.contains("0644")
            && err.contains("chmod 600"),
        "{err}"
    );
    assert!(
        !err.contains("1234"),
        "the PIN itself is never printed: {err}"
    );
    chmod(&pin, 0o600);
    let out = init();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `portcullis check` refuses the audit log's PKCS#11 PIN file, its PostgreSQL connection file
/// and its PostgreSQL client key when group or others can read them.
#[test]
fn check_refuses_audit_secret_files_others_can_read() {
    let pki = Pki::new();
    let d = pki.dir.path();
    for secret in ["hsm.pin", "pg.conninfo"] {
        std::fs::write(d.join(secret), "secret\n").unwrap();
        chmod(&d.join(secret), 0o600);
    }
    let config = d.join("gw.yaml");
    std::fs::write(
        &config,
        r#"
listeners:
  - name: public
    address: 127.0.0.1:18997
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
audit:
  directory: audit
  signing_pkcs11: { token_label: audit, key_label: checkpoints, pin_file: hsm.pin }
  postgres:
    conninfo_file: pg.conninfo
    tls: { ca: ca.pem, client_certificate: frontend.pem, client_key: frontend.key }
upstreams:
  - name: echo
    targets: [127.0.0.1:9]
tenants:
  - name: acme
    routes:
      - name: api
        path_prefix: /api
        upstream: echo
        access: [ { id: anyone } ]
"#,
    )
    .unwrap();
    let check = || {
        Command::new(bin())
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (secret, named) in [
        ("hsm.pin", "audit key PIN file"),
        ("pg.conninfo", "audit.postgres connection file"),
        ("frontend.key", "audit.postgres client key"),
    ] {
        chmod(&d.join(secret), 0o640);
        let out = check();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{secret} at 0640 passed check");
        assert!(
            err.contains(named) && err.contains(secret) && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains("secret\n"), "{err}");
        chmod(&d.join(secret), 0o600);
    }
}
