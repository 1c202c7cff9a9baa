//! `portcullis ca …` subcommands on a software-key CA, checked with the real `openssl`.

#[path = "support/pki.rs"]
mod pki;

use std::path::Path;
use std::time::{Duration, SystemTime};

use pki::{csr, dns, openssl, uri};
use portcullis_ca::cli::{run_with, CaCommand};
use portcullis_ca::{CaError, CertStatus, RevocationReason};

#[test]
fn cli_runs_init_issue_list_revoke_crl_on_a_software_ca() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ca.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
state_dir: {state}
backend:
  software:
    key_dir: {keys}
keys:
  root_label: root
  issuing_label: issuing
profiles:
  - name: web
    tenant: web
    spiffe_ids: ["spiffe://web.example/*"]
    dns_names: ["*.web.internal"]
    server_auth: true
"#,
            state = dir.path().join("state").display(),
            keys = dir.path().join("keys").display()
        ),
    )
    .unwrap();
    let run = |cmd: CaCommand| -> String {
        let mut out = Vec::new();
        run_with(cmd, &mut out, SystemTime::now()).unwrap();
        String::from_utf8(out).unwrap()
    };
    let out = run(CaCommand::Init {
        config: config.clone(),
        region: None,
        root: None,
    });
    assert!(out.contains("CA initialised"), "{out}");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&dir.path().join("keys/issuing.key")), 0o600);

    let csr_path = dir.path().join("req.csr");
    std::fs::write(
        &csr_path,
        csr(&[
            uri("spiffe://web.example/frontend"),
            dns("app.web.internal"),
        ]),
    )
    .unwrap();
    let chain_path = dir.path().join("chain.pem");
    let out = run(CaCommand::Issue {
        config: config.clone(),
        csr: csr_path,
        tenant: "web".parse().unwrap(),
        profile: None,
        lifetime: Some(Duration::from_secs(600)),
        out: Some(chain_path.clone()),
    });
    assert!(out.contains("issued serial"), "{out}");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &dir.path().join("state/bundle.pem").display().to_string(),
        "-untrusted",
        &dir.path()
            .join("state/intermediate.pem")
            .display()
            .to_string(),
        &chain_path.display().to_string(),
    ]);
    assert!(ok, "{text}");

    let json = run(CaCommand::List {
        config: config.clone(),
        tenant: Some("web".parse().unwrap()),
        status: None,
        expires_within: None,
        limit: None,
        json: true,
    });
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let serial = listed[0]["serial"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["status"], "valid");
    assert_eq!(listed[0]["sans"][0], "URI:spiffe://web.example/frontend");

    let out = run(CaCommand::Revoke {
        config: config.clone(),
        serial: serial.clone(),
        reason: RevocationReason::Superseded,
        only_this: false,
    });
    assert!(out.contains("revoked"), "{out}");
    let table = run(CaCommand::List {
        config: config.clone(),
        tenant: None,
        status: Some(CertStatus::Revoked),
        expires_within: None,
        limit: None,
        json: false,
    });
    assert!(
        table.contains(&serial) && table.contains("revoked"),
        "{table}"
    );

    let crl_out = dir.path().join("copy.crl.pem");
    let out = run(CaCommand::Crl {
        config: config.clone(),
        out: Some(crl_out.clone()),
    });
    assert!(out.contains("with 1 revoked"), "{out}");
    let (ok, text) = openssl(&[
        "crl",
        "-in",
        &crl_out.display().to_string(),
        "-CAfile",
        &dir.path().join("state/chain.pem").display().to_string(),
        "-noout",
    ]);
    assert!(ok && text.contains("verify OK"), "{text}");

    // A wrong serial and a group-readable key file are clear errors.
    let mut sink = Vec::new();
    let err = run_with(
        CaCommand::Revoke {
            config: config.clone(),
            serial: "zz".into(),
            reason: RevocationReason::Unspecified,
            only_this: false,
        },
        &mut sink,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, CaError::InvalidSerial(_)), "{err}");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("keys/issuing.key"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
    }
    let err = run_with(
        CaCommand::Crl { config, out: None },
        &mut sink,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, CaError::KeyFilePermissions { .. }), "{err}");
}
