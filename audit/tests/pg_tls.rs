//! The central store over TLS, against a real PostgreSQL with `ssl=on`, a server certificate
//! from a test CA and client-certificate authentication: the sink ships over verified TLS, and
//! refuses a server whose certificate is not from the configured CA or does not name the host,
//! and a server that does not speak TLS at all (where the old sink went on in clear, password
//! included).

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use std::path::Path;

use common::*;
use portcullis_audit::{
    verify_dir, AuditHead, CentralStore, PgSink, PgSinkConfig, SinkError, StoreTls,
};
use postgres::{Postgres, ServerTls, TestCa};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A verifying client: trusts `ca_pem` only, presents `client` (certificate, key) if given.
fn verified(ca_pem: &str, client: Option<&(String, String)>) -> StoreTls {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    StoreTls::Verified(std::sync::Arc::new(config))
}

fn sink(conninfo: &str, tls: StoreTls, dir: &Path) -> PgSink {
    let store = CentralStore::new(conninfo, tls).unwrap();
    PgSink::new(PgSinkConfig::new(store, dir, "node-1"), None)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn table_exists(pg: &Postgres) -> bool {
    pg.psql("SELECT to_regclass('audit_records') IS NOT NULL") == "t"
}

#[test]
fn ships_over_verified_tls_and_refuses_servers_it_cannot_verify() {
    let ca = TestCa::new("Audit Store Test CA");
    let (cert_pem, key_pem) = ca.leaf("audit-store", &["127.0.0.1"]);
    let tls = ServerTls {
        cert_pem,
        key_pem,
        client_ca_pem: Some(ca.cert_pem.clone()),
    };
    let Some(pg) = Postgres::start_tls(tls) else {
        eprintln!("SKIP ships_over_verified_tls: PostgreSQL is not installed and could not be");
        return;
    };
    let rt = current_thread();
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.checkpoint_every = 50;
    fill(&t, cfg, 120);
    // `cert` authentication: the client certificate's common name is the user.
    let client = ca.leaf("postgres", &["gateway.test"]);

    // A server certificate from another CA: refused before anything is sent.
    let other = TestCa::new("Someone Else's CA");
    let err = rt
        .block_on(
            sink(
                &pg.conninfo(),
                verified(&other.cert_pem, Some(&client)),
                t.path(),
            )
            .ship_until_caught_up(),
        )
        .unwrap_err();
    assert!(matches!(err, SinkError::Pg(_)), "{err}");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    // The right CA, but the certificate does not name the host connected to.
    let by_name = format!(
        "{} hostaddr=127.0.0.1",
        pg.conninfo().replace("host=127.0.0.1", "host=localhost")
    );
    let err = rt
        .block_on(
            sink(&by_name, verified(&ca.cert_pem, Some(&client)), t.path()).ship_until_caught_up(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    // No client certificate: the server refuses (cert authentication over hostssl).
    let err = rt
        .block_on(
            sink(&pg.conninfo(), verified(&ca.cert_pem, None), t.path()).ship_until_caught_up(),
        )
        .unwrap_err();
    assert!(matches!(err, SinkError::Pg(_)), "{err}");
    // In clear: the server takes TCP over TLS only.
    let err = rt
        .block_on(
            sink(&pg.conninfo(), StoreTls::InsecurePlaintext, t.path()).ship_until_caught_up(),
        )
        .unwrap_err();
    assert!(matches!(err, SinkError::Pg(_)), "{err}");
    assert!(!table_exists(&pg), "nothing reached the store");

    // The configured CA and a client certificate from it: shipped, over TLS.
    let good = sink(
        &pg.conninfo(),
        verified(&ca.cert_pem, Some(&client)),
        t.path(),
    );
    let shipped = rt.block_on(good.ship_until_caught_up()).unwrap();
    let report = verify_dir(t.path(), &t.key()).unwrap();
    assert_eq!(shipped, report.records);
    assert_eq!(
        pg.psql("SELECT count(*) FROM audit_records WHERE node = 'node-1'"),
        report.records.to_string()
    );
    // The head published in the store is the log's last checkpoint (the final one at close).
    let store = CentralStore::new(&pg.conninfo(), verified(&ca.cert_pem, Some(&client))).unwrap();
    let head: AuditHead = rt.block_on(store.head("node-1")).unwrap().unwrap();
    assert_eq!(head.seq, report.last_seq.unwrap());
    assert_eq!(head.hash, report.last_hash);
    head.verify(&t.key()).unwrap();
}

/// A server that does not speak TLS: the old sink connected in clear (`NoTls`), password and
/// records readable on the wire; now a required TLS is never given up.
#[test]
fn refuses_a_server_without_tls_when_tls_is_required() {
    let Some(pg) = Postgres::start() else {
        eprintln!(
            "SKIP refuses_a_server_without_tls: PostgreSQL is not installed and could not be"
        );
        return;
    };
    let rt = current_thread();
    let t = TestLog::new();
    fill(&t, t.config(), 10);
    let ca = TestCa::new("Audit Store Test CA");
    let err = rt
        .block_on(
            sink(&pg.conninfo(), verified(&ca.cert_pem, None), t.path()).ship_until_caught_up(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(!table_exists(&pg), "nothing reached the store");
}

#[test]
fn a_connection_string_cannot_switch_tls_off_or_on_behind_the_setting() {
    let ca = TestCa::new("Audit Store Test CA");
    let err =
        CentralStore::new("host=db sslmode=disable", verified(&ca.cert_pem, None)).unwrap_err();
    assert!(err.to_string().contains("insecure_plaintext"), "{err}");
    let err = CentralStore::new(
        "postgresql://audit:hunter2@db/audit?sslmode=require",
        StoreTls::InsecurePlaintext,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no CA"), "{err}");
    let err = CentralStore::new(
        "host=db password=hunter2 sslmode=verify-full",
        StoreTls::InsecurePlaintext,
    )
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!(
        "{:?}",
        CentralStore::new("host=db password=hunter2", StoreTls::InsecurePlaintext).unwrap()
    )
    .contains("hunter2"));
}
