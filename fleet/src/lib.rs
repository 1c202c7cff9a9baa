//! Fleet state on etcd: what every replica must see within seconds. Today, the revocation set.
//!
//! - [`FleetStore`] is the store behind a trait; [`EtcdStore`] its etcd implementation
//!   (`etcd-client`), keys under `PREFIX/revoked/TENANT/SERIAL`, each value a JSON
//!   [`RevokedEntry`], attached to a lease that ends a day after the certificate expires.
//! - Writing side (the CA behind the admin API): [`RevocationSpool`] makes each revocation
//!   durable in a local folder first, and its publisher thread puts it into the store, retrying
//!   until the store takes it; nothing is lost while etcd is away.
//! - Reading side (the gateway): [`RevokedSet`] is the set in memory and in a cache file,
//!   [`follow`] keeps it current (list, then watch from the listed revision; listed again
//!   after a compaction or a lost connection). An entry is dropped only once its certificate
//!   has expired: an entry deleted or overwritten with garbage in etcd never un-revokes.
//! - [`FleetStatus`] is what both sides report (connected, set size, restarts, malformed
//!   entries, spooled entries) for metrics and readiness.

mod entry;
mod error;
mod revoked;
mod spool;
mod status;
mod store;

pub use entry::{parse_entry, revoked_key, revoked_prefix, RevokedEntry, MAX_ENTRY_BYTES};
pub use error::FleetError;
pub use revoked::{follow, RevokedSet};
pub use spool::RevocationSpool;
pub use status::{FleetStatus, StatusFigures};
pub use store::{Change, Changes, EtcdStore, FleetStore, Listing};
