//! The PostgreSQL stores pass the same tests as the SQLite ones (`portcullis_ca`'s inventory
//! conformance suite, the token store's tests), on a throwaway cluster on loopback; plus the
//! migrations under concurrent starts and the config's refusals.

#[path = "../../../audit/tests/common/postgres.rs"]
mod pg;

use std::path::Path;

use pg::Postgres;
use portcullis_ca::inventory_conformance as conformance;

use super::*;
use crate::acme::store::tests as acme_suite;
use crate::acme::AcmeStore;
use crate::pending::tests as pending_suite;
use crate::policies::store_tests as policy_suite;
use crate::token::tests as token_suite;
use crate::webhooks::store::tests as webhook_suite;

/// A fresh database `db` on the cluster, its store opened (and migrated) in clear on loopback.
fn store_in(pg: &Postgres, db: &str) -> PgStore {
    pg.psql(&format!("CREATE DATABASE {db}"));
    PgStore::open(&plain_config(pg, db)).unwrap()
}

fn plain_config(pg: &Postgres, db: &str) -> PostgresStoreConfig {
    let yaml = format!(
        "postgres:\n  url: \"{}\"\n  insecure_plaintext: true\n",
        pg.conninfo()
            .replace("dbname=postgres", &format!("dbname={db}"))
    );
    parse(&yaml).unwrap().postgres.unwrap()
}

/// A `store:` section as the admin config parses it.
fn parse(yaml: &str) -> Result<StoreConfig, String> {
    let mut store: StoreConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
    store.resolve(Path::new("/etc/portcullis"));
    store.check()?;
    Ok(store)
}

#[test]
fn inventory_passes_the_inventory_store_tests() {
    let Some(pg) = Postgres::start_or_skip("inventory_passes_the_inventory_store_tests", None)
    else {
        return;
    };
    conformance::filters_revokes_and_counts(&store_in(&pg, "filters").inventory());
    conformance::revoking_a_certificate_revokes_its_renewals_unless_only_this(
        &store_in(&pg, "lineage").inventory(),
    );
    conformance::concurrent_issuances_each_with_its_own_outcome(
        &store_in(&pg, "concurrent").inventory(),
    );
    conformance::hostile_values_are_kept_intact_or_refused(&store_in(&pg, "hostile").inventory());
}

#[test]
fn tokens_pass_the_token_store_tests() {
    let Some(pg) = Postgres::start_or_skip("tokens_pass_the_token_store_tests", None) else {
        return;
    };
    token_suite::one_time_expiring(&store_in(&pg, "tokens").tokens());
    // Two pools, as two admin servers would have.
    let a = store_in(&pg, "race");
    let b = PgStore::open(&plain_config(&pg, "race")).unwrap();
    token_suite::concurrent_consumers_exactly_one_wins(&a.tokens(), &b.tokens());
    token_suite::hostile_values_kept_intact_or_refused(&store_in(&pg, "hostile").tokens());
}

#[test]
fn policies_pass_the_policy_store_tests() {
    let Some(pg) = Postgres::start_or_skip("policies_pass_the_policy_store_tests", None) else {
        return;
    };
    policy_suite::versions_number_per_tenant_and_activation_moves_the_pointer(
        &store_in(&pg, "versions").policies(),
    );
    policy_suite::an_approval_needs_another_person_and_expires(
        &store_in(&pg, "approvals").policies(),
    );
    // Two pools, as two admin servers would have.
    let a = store_in(&pg, "race");
    let b = PgStore::open(&plain_config(&pg, "race")).unwrap();
    policy_suite::concurrent_activations_leave_one_active_and_a_consistent_history(
        &a.policies(),
        &b.policies(),
    );
}

#[test]
fn nodes_agree_on_one_policy_signing_key() {
    let Some(pg) = Postgres::start_or_skip("nodes_agree_on_one_policy_signing_key", None) else {
        return;
    };
    let store = store_in(&pg, "signing");
    let now = std::time::SystemTime::now();
    store.agree_on_policy_key(b"first key", now).unwrap();
    store.agree_on_policy_key(b"first key", now).unwrap();
    let err = store.agree_on_policy_key(b"other key", now).unwrap_err();
    let (mine, theirs) = (
        portcullis_audit::key_id(b"other key"),
        portcullis_audit::key_id(b"first key"),
    );
    assert!(err.contains(&mine) && err.contains(&theirs), "{err}");
    assert!(err.contains("copy STATE/policy-signing.key"), "{err}");
}

#[test]
fn webhooks_pass_the_webhook_store_tests() {
    let Some(pg) = Postgres::start_or_skip("webhooks_pass_the_webhook_store_tests", None) else {
        return;
    };
    webhook_suite::subscriptions_queue_retries_and_dead_letters(
        &store_in(&pg, "webhooks").webhooks(),
    );
    // Two pools, as two admin servers' delivery loops would have.
    let a = store_in(&pg, "claims");
    let b = PgStore::open(&plain_config(&pg, "claims")).unwrap();
    webhook_suite::a_claimed_delivery_goes_to_one_claimant(&a.webhooks(), &b.webhooks());
}

#[test]
fn pending_issuances_pass_the_pending_store_tests() {
    let Some(pg) = Postgres::start_or_skip("pending_issuances_pass_the_pending_store_tests", None)
    else {
        return;
    };
    let store = store_in(&pg, "pending");
    pending_suite::a_request_is_claimed_once_and_picked_up_with_its_secret_only(&store.pending());
    pending_suite::an_expired_request_is_neither_claimed_nor_rejected(&store.pending());
    pending_suite::an_abandoned_claim_is_taken_over_after_the_claim_timeout(&store.pending());
    // Two pools, as two admin servers would have.
    let a = store_in(&pg, "decisions");
    let b = PgStore::open(&plain_config(&pg, "decisions")).unwrap();
    pending_suite::concurrent_decisions_through_two_handles_exactly_one_wins(
        &a.pending(),
        &b.pending(),
    );
    // Only the secret's SHA-256 is kept.
    let mut conn = store.conn().unwrap();
    let rows = conn
        .query("SELECT secret_hash FROM pending_issuances", &[])
        .unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(row.get::<_, Vec<u8>>(0).len(), 32);
    }
}

#[test]
fn nodes_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let Some(pg) = Postgres::start_or_skip("nodes_starting_at_once_migrate_once", None) else {
        return;
    };
    pg.psql("CREATE DATABASE shared");
    let config = plain_config(&pg, "shared");
    let opened: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| PgStore::open(&config))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(opened.iter().all(Result::is_ok), "{opened:?}");
    let store = PgStore::open(&config).unwrap();
    let mut conn = store.conn().unwrap();
    let migrations: i64 = conn
        .query_one("SELECT count(*) FROM portcullis_admin_schema_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(migrations, 7);
    conn.execute(
        "INSERT INTO portcullis_admin_schema_history (version, name, applied_on, checksum) \
         VALUES (99, 'future', '2030-01-01T00:00:00Z', '1')",
        &[],
    )
    .unwrap();
    drop(conn);
    let err = PgStore::open(&config).unwrap_err().to_string();
    assert!(
        err.contains("schema is at version 99, newer than this release knows (7)"),
        "{err}"
    );
}

#[test]
fn an_edited_migration_is_refused_and_an_older_history_is_adopted() {
    let Some(pg) = Postgres::start_or_skip("an_edited_migration_is_refused", None) else {
        return;
    };
    let store = store_in(&pg, "history");
    let config = plain_config(&pg, "history");
    let mut conn = store.conn().unwrap();

    // The schema as an older release left it: its own history table, all seven applied. It is
    // adopted, not migrated again (V1's CREATE TABLE would fail on the existing tables).
    conn.batch_execute(
        "DROP TABLE portcullis_admin_schema_history;
         CREATE TABLE portcullis_admin_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         INSERT INTO portcullis_admin_migrations (version, name)
             SELECT v, 'old' FROM generate_series(1, 7) AS v;",
    )
    .unwrap();
    PgStore::open(&config).unwrap();
    let adopted: Vec<i32> = conn
        .query(
            "SELECT version FROM portcullis_admin_schema_history ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(adopted, (1..=7).collect::<Vec<_>>());

    // A migration whose text changed after it was applied: the schema is not what this release
    // expects, so the store does not open.
    conn.execute(
        "UPDATE portcullis_admin_schema_history SET checksum = '1' WHERE version = 3",
        &[],
    )
    .unwrap();
    drop(conn);
    let err = PgStore::open(&config).unwrap_err().to_string();
    assert!(
        err.contains("the database's migration V3__webhooks differs from this release's"),
        "{err}"
    );
}

#[test]
fn config_refusals_name_the_field_and_why() {
    let tls = "  tls: { ca: pg-ca.pem }\n";
    for (yaml, expected) in [
        (
            format!("postgres:\n  url: postgresql://a@db/x\n  password: hunter2\n{tls}"),
            "store.postgres.password: a password is never written in the config",
        ),
        (
            format!("postgres:\n  url: postgresql://a:hunter2@db/x\n{tls}"),
            "store.postgres.url: carries a password",
        ),
        (
            "postgres:\n  url: postgresql://a@db.example/x\n  insecure_plaintext: true\n"
                .to_owned(),
            "store.postgres.insecure_plaintext: only for a PostgreSQL on loopback",
        ),
        (
            "postgres:\n  host: 10.0.0.5\n  user: a\n  dbname: x\n  insecure_plaintext: true\n"
                .to_owned(),
            "store.postgres.insecure_plaintext: only for a PostgreSQL on loopback",
        ),
        (
            "postgres:\n  url: postgresql://a@db/x\n".to_owned(),
            "store.postgres.tls: required",
        ),
        (
            format!("postgres:\n  url: postgresql://a@db/x\n  insecure_plaintext: true\n{tls}"),
            "tls and insecure_plaintext: true contradict",
        ),
        (
            format!("postgres:\n  url: postgresql://a@db/x\n  host: db\n{tls}"),
            "url and host/port/user/dbname both given",
        ),
        (
            format!("postgres:\n  host: db\n  dbname: x\n{tls}"),
            "store.postgres.user: required",
        ),
        (
            format!("postgres:\n  url: postgresql://a@db/x\n  max_connections: 0\n{tls}"),
            "store.postgres.max_connections: 0 is outside",
        ),
        (
            format!("postgres:\n  url: postgresql://a@db/x?sslmode=disable\n{tls}"),
            "sslmode=disable",
        ),
        (
            "postgres:\n  url: postgresql://a@db/x\n  tls: { ca: a.pem, client_cert: c.pem }\n"
                .to_owned(),
            "client_cert and client_key go together",
        ),
        (
            format!("postgres:\n  url: postgresql://a@db/x\n  passwd_file: p\n{tls}"),
            "unknown field `passwd_file`",
        ),
    ] {
        let err = parse(&yaml).unwrap_err();
        assert!(err.contains(expected), "{yaml}\n=> {err}");
        assert!(!err.contains("hunter2"), "the password is shown: {err}");
    }
    // In clear to loopback, as a URL or as fields, and a Unix socket.
    for ok in [
        "postgres:\n  url: postgresql://a@127.0.0.1:5/x\n  insecure_plaintext: true\n",
        "postgres:\n  host: localhost\n  user: a\n  dbname: x\n  insecure_plaintext: true\n",
        "postgres:\n  url: \"host=/run/postgresql user=a dbname=x\"\n  insecure_plaintext: true\n",
    ] {
        parse(ok).unwrap();
    }
    let resolved = parse(&format!(
        "postgres:\n  url: postgresql://a@db/x\n  password_file: pw\n{tls}"
    ))
    .unwrap()
    .postgres
    .unwrap();
    assert_eq!(
        resolved.password_file.as_deref(),
        Some(Path::new("/etc/portcullis/pw"))
    );
    assert!(!format!("{resolved:?}").contains("hunter2"));
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "postgres:\n  url: postgresql://a@127.0.0.1/x\n  tls: { ca: nowhere.pem }\n";
    let mut store: StoreConfig = serde_yaml_ng::from_str(yaml).unwrap();
    store.resolve(dir.path());
    let err = PgStore::open(store.postgres.as_ref().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("store.postgres.tls.ca") && err.contains("nowhere.pem"),
        "{err}"
    );

    let yaml = "postgres:\n  url: postgresql://a@127.0.0.1/x\n  password_file: pw\n  insecure_plaintext: true\n";
    let mut store: StoreConfig = serde_yaml_ng::from_str(yaml).unwrap();
    store.resolve(dir.path());
    let err = PgStore::open(store.postgres.as_ref().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("store.postgres.password_file") && err.contains("pw"),
        "{err}"
    );
}

#[test]
fn tls_is_verified_in_full_and_a_client_certificate_presented() {
    let ca = pg::TestCa::new("postgres test CA");
    let (cert_pem, key_pem) = ca.leaf("127.0.0.1", &["127.0.0.1"]);
    let tls = pg::ServerTls {
        cert_pem,
        key_pem,
        // `cert` authentication: the client certificate's common name is the user.
        client_ca_pem: Some(ca.cert_pem.clone()),
    };
    let Some(pg) = Postgres::start_or_skip("tls_is_verified_in_full", Some(tls)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (client_pem, client_key) = ca.leaf("postgres", &[]);
    let other = pg::TestCa::new("another CA");
    for (name, text) in [
        ("ca.pem", ca.cert_pem.as_str()),
        ("other-ca.pem", other.cert_pem.as_str()),
        ("client.pem", client_pem.as_str()),
        ("client.key", client_key.as_str()),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let open = |tls: &str| {
        let yaml = format!("postgres:\n  url: \"{}\"\n  tls: {tls}\n", pg.conninfo());
        let mut store: StoreConfig = serde_yaml_ng::from_str(&yaml).unwrap();
        store.resolve(dir.path());
        store.check().unwrap();
        PgStore::open(store.postgres.as_ref().unwrap())
    };
    let store = open("{ ca: ca.pem, client_cert: client.pem, client_key: client.key }").unwrap();
    token_suite::one_time_expiring(&store.tokens());

    // A server whose certificate does not chain to the configured CA is refused.
    let err = open("{ ca: other-ca.pem, client_cert: client.pem, client_key: client.key }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");
    // Without a client certificate, the server refuses the connection.
    assert!(open("{ ca: ca.pem }").is_err());
}

#[test]
fn acme_passes_the_acme_store_tests() {
    let Some(pg) = Postgres::start_or_skip("acme_passes_the_acme_store_tests", None) else {
        return;
    };
    // Two pools on one database, as two admin servers would have, sealing under one key.
    let state = tempfile::tempdir().unwrap();
    let open = |store: &PgStore| AcmeStore::postgres(store, state.path()).unwrap();
    let a = store_in(&pg, "acme");
    let b = PgStore::open(&plain_config(&pg, "acme")).unwrap();
    let (a, b) = (open(&a), open(&b));
    acme_suite::accounts_are_found_by_key_and_an_eab_key_binds_one(&a);
    acme_suite::concurrent_bindings_of_one_eab_key_make_one_account(&a, &b);
    acme_suite::a_nonce_is_taken_once_under_a_race(&a, &b);
    acme_suite::challenges_and_finalization_are_claimed_once_under_a_race(&a, &b);
    acme_suite::orders_are_bounded_and_a_certificate_is_replaced_once(&a, &b);
}

#[test]
fn nodes_agree_on_one_acme_seal_key() {
    let Some(pg) = Postgres::start_or_skip("nodes_agree_on_one_acme_seal_key", None) else {
        return;
    };
    let store = store_in(&pg, "seal");
    let (first, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = AcmeStore::postgres(&store, first.path()).unwrap();
    let now = std::time::SystemTime::now();
    let cred = a
        .create_eab(
            &"webco".parse().unwrap(),
            "webco-web",
            std::time::Duration::from_secs(60),
            now,
        )
        .unwrap();
    // A node with another key is refused, naming both keys and the file.
    let err = AcmeStore::postgres(&store, other.path())
        .unwrap_err()
        .to_string();
    let mine = AcmeStore::in_state_dir(other.path()).unwrap();
    assert!(
        err.contains(mine.seal_key_id()) && err.contains(a.seal_key_id()),
        "{err}"
    );
    assert!(err.contains("copy STATE/acme-eab.key"), "{err}");
    // With the first node's key copied, it opens the keys the first node sealed.
    std::fs::copy(
        first.path().join("acme-eab.key"),
        other.path().join("acme-eab.key"),
    )
    .unwrap();
    let b = AcmeStore::postgres(&store, other.path()).unwrap();
    assert_eq!(
        crate::acme::jws::b64(&b.eab_mac_key(&cred.kid, now).unwrap().unwrap()),
        cred.expose_hmac()
    );
    // Only the sealed key is in the database.
    let mut conn = store.conn().unwrap();
    let sealed: Vec<u8> = conn
        .query_one("SELECT sealed FROM acme_eab_keys", &[])
        .unwrap()
        .get(0);
    let hmac = crate::acme::jws::unb64(cred.expose_hmac(), "hmac").unwrap();
    assert!(!sealed.windows(hmac.len()).any(|w| w == hmac.as_slice()));
}
