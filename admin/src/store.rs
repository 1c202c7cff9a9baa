//! Where the admin plane keeps its state. By default SQLite files in the CA state directory
//! (one node: the inventory, `tokens.sqlite3`, and the policy, webhook and ACME files); with
//! `store.postgres`, the certificate inventory, the bootstrap tokens, the policy versions, the
//! webhook subscriptions and deliveries, the issuances waiting for approval and the ACME server's
//! state (accounts, sealed EAB keys, certificates, nonces, orders and authorizations) live in a
//! shared PostgreSQL database instead, so several admin servers serve one state.
//!
//! ```yaml
//! store:
//!   postgres:
//!     url: postgresql://portcullis@db.internal:5432/portcullis   # or host, port, user, dbname
//!     password_file: /etc/portcullis/pg-password                 # never inline
//!     tls: { ca: pg-ca.pem, client_cert: admin-pg.pem, client_key: admin-pg.key }
//!     max_connections: 16
//! ```

mod acme;
mod config;
mod inventory;
mod pending;
mod policies;
mod pool;
mod tokens;
mod webhooks;

#[cfg(test)]
mod tests;

pub use config::{InlineSecret, PostgresStoreConfig, PostgresTlsConfig, StoreConfig};
pub use inventory::PgInventory;
pub(crate) use pool::mark_state_dir;
pub use pool::PgStore;
pub use tokens::PgTokenStore;
