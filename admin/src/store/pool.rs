//! The connection pool to the admin plane's PostgreSQL database (sync `postgres` client in an
//! `r2d2` pool: the stores are called from blocking threads, as the SQLite ones are), and the
//! schema's migrations, applied at start under an advisory lock.

use std::path::Path;
use std::time::Duration;

use portcullis_audit::with_causes;
use postgres::{Client, NoTls};
use r2d2::ManageConnection;
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::config::PostgresStoreConfig;
use super::{PgInventory, PgTokenStore};
use crate::error::AdminError;

/// Connection attempts give up after this long unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock under which migrations run ("portcull"): two admin servers starting on
/// one empty database apply each migration once.
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// The schema's history table, kept by refinery.
const MIGRATION_TABLE: &str = "portcullis_admin_schema_history";

/// The history table of releases before refinery kept it: a database it describes is adopted.
const LEGACY_MIGRATION_TABLE: &str = "portcullis_admin_migrations";

/// The schema, in order (`migrations/V{n}__{name}.sql`, embedded at build time). A migration is
/// never edited once released (refinery refuses a database whose applied migration's checksum
/// differs): a change is a new one.
mod embedded {
    refinery::embed_migrations!("src/store/migrations");
}

/// The admin plane's PostgreSQL database: a pool of connections, each store's handle a clone.
#[derive(Clone)]
pub struct PgStore {
    pool: r2d2::Pool<Connector>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.pool.state();
        f.debug_struct("PgStore")
            .field("connections", &state.connections)
            .finish_non_exhaustive()
    }
}

/// Opens connections for the pool. Holds the password: never shown.
pub(crate) struct Connector {
    config: postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A pooled client. The sync client closes its connection on a runtime of its own when
/// dropped, which panics on a tokio worker thread; the pool (and its idle connections) may be
/// dropped there with the last `Ca` handle, so such a drop is moved to a thread of its own.
pub(crate) struct PgClient(Option<Client>);

impl std::ops::Deref for PgClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        // Some from `connect` until `drop`.
        #[allow(clippy::expect_used)]
        self.0
            .as_ref()
            .expect("a pooled client is present until dropped")
    }
}

impl std::ops::DerefMut for PgClient {
    fn deref_mut(&mut self) -> &mut Client {
        // Some from `connect` until `drop`.
        #[allow(clippy::expect_used)]
        self.0
            .as_mut()
            .expect("a pooled client is present until dropped")
    }
}

impl Drop for PgClient {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            let closing = std::thread::Builder::new()
                .name("pg-close".to_owned())
                .spawn(move || drop(client));
            if let Err(e) = closing {
                tracing::warn!(error = %e, "admin store: a connection could not be closed cleanly");
            }
        }
    }
}

impl r2d2::ManageConnection for Connector {
    type Connection = PgClient;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgClient, postgres::Error> {
        let client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        client.map(|c| PgClient(Some(c)))
    }

    fn is_valid(&self, conn: &mut PgClient) -> Result<(), postgres::Error> {
        conn.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgClient) -> bool {
        conn.is_closed()
    }
}

/// A connection lent by the pool (derefs to the client).
pub(crate) type PgConn = r2d2::PooledConnection<Connector>;

fn store_error(detail: impl Into<String>) -> AdminError {
    AdminError::Store(detail.into())
}

impl PgStore {
    /// Connects (reading the password file and the TLS files) and brings the schema up to
    /// date. Blocking: call it off the async runtime.
    pub fn open(cfg: &PostgresStoreConfig) -> Result<Self, AdminError> {
        let mut config = cfg.connection().map_err(store_error)?;
        if let Some(path) = &cfg.password_file {
            config.password(read_password(path)?.as_bytes());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("portcullis-admin");
        let tls = match &cfg.tls {
            Some(tls) => Some(MakeRustlsConnect::new(client_tls(tls)?)),
            None => {
                tracing::warn!(
                    "store.postgres.insecure_plaintext: the admin state crosses loopback in clear"
                );
                None
            }
        };
        let connector = Connector { config, tls };
        migrate(&connector)?;
        let pool = r2d2::Pool::builder()
            .max_size(cfg.max_connections)
            .min_idle(Some(0))
            // No round trip to test each connection lent: one that broke meanwhile fails its
            // call and is dropped when returned (`has_broken`).
            .test_on_check_out(false)
            .connection_timeout(CONNECT_TIMEOUT)
            .build_unchecked(connector);
        Ok(Self { pool })
    }

    /// A connection from the pool (waits up to 10 s for one).
    pub(crate) fn conn(&self) -> Result<PgConn, String> {
        self.pool.get().map_err(|e| format!("postgres: {e}"))
    }

    /// The certificate inventory in this database.
    pub fn inventory(&self) -> PgInventory {
        PgInventory::new(self.clone())
    }

    /// The bootstrap tokens in this database.
    pub fn tokens(&self) -> PgTokenStore {
        PgTokenStore::new(self.clone())
    }
}

/// Applies the migrations the database lacks, in order, in one transaction, under an advisory
/// lock held by this connection. Refuses a database migrated by a newer release, or one whose
/// applied migrations differ from this release's.
fn migrate(connector: &Connector) -> Result<(), AdminError> {
    // A connection of its own, not the pool's: a failure to connect is shown with its
    // causes (TLS, authentication), which r2d2's timeout would hide.
    let mut conn = connector
        .connect()
        .map_err(|e| store_error(format!("postgres: {}", pg_error(&e))))?;
    // A session lock, not a transaction's: refinery opens its own transactions on `conn`.
    // Dropping the connection on an error releases it as well.
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(migration_error)?;
    run_migrations(&mut conn)?;
    conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .map_err(migration_error)?;
    Ok(())
}

/// This release's migrations, applied in one transaction.
fn runner() -> refinery::Runner {
    let mut runner = embedded::migrations::runner().set_grouped(true);
    runner.set_migration_table_name(MIGRATION_TABLE);
    runner
}

fn run_migrations(client: &mut Client) -> Result<(), AdminError> {
    let runner = runner();
    let known = runner
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0);
    adopt_legacy_history(client, known)?;
    let report = runner.run(client).map_err(|e| match e.kind() {
        refinery::error::Kind::MissingVersion(m) if m.version() > known => {
            newer_schema(m.version(), known)
        }
        refinery::error::Kind::DivergentVersion(applied, ours) => store_error(format!(
            "migrations: the database's migration {applied} differs from this release's {ours} \
             (edited after it was applied?): the schema is not the one this release expects"
        )),
        _ => store_error(format!("migrations: {}", with_causes(&e))),
    })?;
    for m in report.applied_migrations() {
        tracing::info!(
            store.migration = m.version(),
            store.migration_name = m.name(),
            "admin store: migration applied"
        );
    }
    Ok(())
}

fn migration_error(e: postgres::Error) -> AdminError {
    store_error(format!("migrations: {}", pg_error(&e)))
}

fn newer_schema(version: i32, known: i32) -> AdminError {
    store_error(format!(
        "the database's schema is at version {version}, newer than this release knows \
         ({known}): run the release that migrated it, or a newer one"
    ))
}

/// A database migrated before refinery kept the history (`portcullis_admin_migrations`, same
/// migrations): its versions are recorded in refinery's table without being run again.
fn adopt_legacy_history(client: &mut Client, known: i32) -> Result<(), AdminError> {
    let tables = client
        .query_one(
            "SELECT to_regclass($1)::text, to_regclass($2)::text",
            &[&LEGACY_MIGRATION_TABLE, &MIGRATION_TABLE],
        )
        .map_err(migration_error)?;
    let (legacy, current): (Option<String>, Option<String>) = (tables.get(0), tables.get(1));
    if legacy.is_none() || current.is_some() {
        return Ok(());
    }
    let applied: i32 = client
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {LEGACY_MIGRATION_TABLE}"),
            &[],
        )
        .map_err(migration_error)?
        .get(0);
    if applied > known {
        return Err(newer_schema(applied, known));
    }
    runner()
        .set_target(refinery::Target::FakeVersion(applied))
        .run(client)
        .map_err(|e| {
            store_error(format!(
                "migrations: adopting {LEGACY_MIGRATION_TABLE}: {}",
                with_causes(&e)
            ))
        })?;
    tracing::info!(
        store.migration = applied,
        "admin store: migration history adopted from {LEGACY_MIGRATION_TABLE}"
    );
    Ok(())
}

/// Writes `STATE/state-in-postgres`: from now on, the CA refuses to open without
/// `store.postgres` (its SQLite files are out of date).
pub(crate) fn mark_state_dir(state_dir: &Path) -> Result<(), AdminError> {
    let marker = state_dir.join(portcullis_ca::STATE_IN_POSTGRES);
    if marker.exists() {
        return Ok(());
    }
    let text = "The admin plane's certificate inventory and bootstrap tokens are kept in \
                PostgreSQL (store.postgres in the admin config). The SQLite files in this \
                directory are out of date: the CA refuses to open them while this file exists.\n";
    portcullis_ca::write_atomic(&marker, text.as_bytes(), 0o644)?;
    tracing::info!(path = %marker.display(), "admin state is in PostgreSQL: marker written");
    Ok(())
}

fn read_password(path: &Path) -> Result<Zeroizing<String>, AdminError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        store_error(format!(
            "store.postgres.password_file {}: {e}",
            path.display()
        ))
    })?);
    let password = Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned());
    if password.is_empty() {
        return Err(store_error(format!(
            "store.postgres.password_file {}: empty",
            path.display()
        )));
    }
    Ok(password)
}

/// The TLS client: the configured CA as the only trust anchor (the server's name is checked
/// against the host), the client certificate when configured.
fn client_tls(tls: &super::PostgresTlsConfig) -> Result<rustls::ClientConfig, AdminError> {
    use portcullis_identity::{load_certs, load_private_key, provider, root_store};
    let field = |name: &str, path: &Path, e: &dyn std::fmt::Display| {
        store_error(format!("store.postgres.tls.{name} {}: {e}", path.display()))
    };
    let ca = load_certs(&tls.ca).map_err(|e| field("ca", &tls.ca, &e))?;
    let roots =
        root_store(ca, &tls.ca.display().to_string()).map_err(|e| field("ca", &tls.ca, &e))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| store_error(format!("store.postgres.tls: {e}")))?
        .with_root_certificates(roots);
    Ok(match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert).map_err(|e| field("client_cert", cert, &e))?;
            let key_der = load_private_key(key).map_err(|e| field("client_key", key, &e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| field("client_key", key, &e))?
        }
        _ => builder.with_no_client_auth(),
    })
}

/// A PostgreSQL error with its causes (the bare one says only "db error").
pub(crate) fn pg_error(e: &postgres::Error) -> String {
    with_causes(e)
}

/// Text holds no NUL in PostgreSQL: a value with one names nothing stored (and is refused on
/// writes rather than failing the query with a backend error).
pub(crate) fn has_nul(values: &[&str]) -> bool {
    values.iter().any(|v| v.contains('\0'))
}
