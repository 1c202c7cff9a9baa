//! The reading side: the fleet's revocation set in memory (read on every handshake and
//! request) and in a cache file (read at start, so a gateway restarted while etcd is away
//! still refuses what it last saw), kept current by [`follow`].
//!
//! The set only grows until certificates expire: an entry is dropped once its certificate's
//! `not_after` has passed, never because its key was deleted or overwritten in etcd (a later
//! entry for the same serial can only push its expiry later). Malformed entries are counted
//! and ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use portcullis_identity::{write_atomic, Serial, PUBLIC_FILE_MODE};
use serde::{Deserialize, Serialize};

use crate::entry::RevokedEntry;
use crate::status::FleetStatus;
use crate::store::{Change, FleetStore};
use crate::FleetError;

const CACHE_FORMAT: &str = "portcullis-fleet-revocations/1";

/// The cache file's content.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    format: String,
    entries: Vec<RevokedEntry>,
}

/// The fleet's revoked serials, swapped whole on each change (readers take no lock).
pub struct RevokedSet {
    serials: ArcSwap<HashMap<Serial, RevokedEntry>>,
    cache: PathBuf,
    status: Arc<FleetStatus>,
    /// Serialises merges (one writer: the follow thread; tests may add more).
    merging: Mutex<()>,
}

impl std::fmt::Debug for RevokedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevokedSet")
            .field("revoked", &self.len())
            .field("cache", &self.cache)
            .finish()
    }
}

impl RevokedSet {
    /// The set kept in `cache` (empty when the file does not exist yet). A cache that cannot
    /// be read is an error: starting without the revocations it holds would admit them.
    pub fn load(cache: &Path, status: Arc<FleetStatus>) -> Result<Self, FleetError> {
        let entries = match std::fs::read(cache) {
            Ok(bytes) => {
                let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| {
                    FleetError::file(cache, format!("unreadable revocation cache ({e}); move it away to start with an empty set (etcd fills it again)"))
                })?;
                if file.format != CACHE_FORMAT {
                    return Err(FleetError::file(
                        cache,
                        format!("unknown cache format {:?}", file.format),
                    ));
                }
                file.entries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(FleetError::file(cache, e)),
        };
        let now = SystemTime::now();
        let serials: HashMap<Serial, RevokedEntry> = entries
            .into_iter()
            .filter(|e| !e.expired(now))
            .map(|e| (e.serial.clone(), e))
            .collect();
        status.set_revocations(serials.len());
        Ok(Self {
            serials: ArcSwap::from_pointee(serials),
            cache: cache.to_owned(),
            status,
            merging: Mutex::new(()),
        })
    }

    /// Whether `serial` is revoked fleet-wide: a hash lookup.
    pub fn contains(&self, serial: &Serial) -> bool {
        self.serials.load().contains_key(serial)
    }

    /// Revocations in the set.
    pub fn len(&self) -> usize {
        self.serials.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `entries` and drops those expired at `now`; when that changed the set, writes the
    /// cache and swaps the set in. How many serials were new.
    pub fn merge(
        &self,
        entries: impl IntoIterator<Item = RevokedEntry>,
        now: SystemTime,
    ) -> Result<usize, FleetError> {
        let _one = self.merging.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.serials.load_full();
        let mut next: Option<HashMap<Serial, RevokedEntry>> = None;
        let mut added = 0;
        for entry in entries {
            if entry.expired(now) {
                continue;
            }
            match current.get(&entry.serial) {
                // Only a later expiry replaces what is held: never an earlier one.
                Some(held) if held.not_after >= entry.not_after => continue,
                Some(_) => {}
                None => added += 1,
            }
            next.get_or_insert_with(|| (*current).clone())
                .insert(entry.serial.clone(), entry);
        }
        if current.values().any(|e| e.expired(now)) {
            next.get_or_insert_with(|| (*current).clone())
                .retain(|_, e| !e.expired(now));
        }
        let Some(next) = next else {
            return Ok(0);
        };
        let mut entries: Vec<RevokedEntry> = next.values().cloned().collect();
        entries.sort_by(|a, b| a.serial.cmp(&b.serial));
        self.status.set_revocations(next.len());
        // In force before it is on disk: enforcement does not wait for the disk.
        self.serials.store(Arc::new(next));
        let file = CacheFile {
            format: CACHE_FORMAT.to_owned(),
            entries,
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| FleetError::file(&self.cache, format!("encoding: {e}")))?;
        write_atomic(&self.cache, &bytes, PUBLIC_FILE_MODE)
            .map_err(|e| FleetError::file(&self.cache, e))?;
        Ok(added)
    }
}

/// Keeps `set` current from `store` on its own thread, for as long as the process runs: list
/// every revocation, then watch from the listed revision; on any failure (etcd lost, watch
/// compacted) the set stays in force and the whole is started again after a short pause.
pub fn follow(
    set: Arc<RevokedSet>,
    store: Arc<dyn FleetStore>,
    status: Arc<FleetStatus>,
) -> Result<(), FleetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FleetError::Store(format!("runtime: {e}")))?;
    std::thread::Builder::new()
        .name("fleet-follow".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut pause = Duration::from_millis(200);
                loop {
                    let e = follow_once(&set, store.as_ref(), &status).await;
                    if status.set_connected(false) {
                        tracing::warn!(error = %e, fleet.revocations = set.len(), "fleet: etcd lost; enforcing the last revocation set seen");
                        pause = Duration::from_millis(200);
                    } else {
                        tracing::debug!(error = %e, "fleet: etcd still unreachable");
                    }
                    status.watch_restarted();
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            });
        })
        .map_err(|e| FleetError::Store(format!("thread: {e}")))?;
    Ok(())
}

/// One list-then-watch, until it fails; the error that ended it.
async fn follow_once(set: &RevokedSet, store: &dyn FleetStore, status: &FleetStatus) -> FleetError {
    let listing = match store.list().await {
        Ok(listing) => listing,
        Err(e) => return e,
    };
    status.malformed(listing.malformed);
    if let Err(e) = set.merge(listing.entries, SystemTime::now()) {
        tracing::error!(error = %e, "fleet: revocation cache not written; the set is in force in memory");
    }
    let mut changes = match store.watch(listing.revision).await {
        Ok(changes) => changes,
        Err(e) => return e,
    };
    if status.set_connected(true) {
        tracing::info!(
            fleet.revocations = set.len(),
            fleet.revision = listing.revision,
            "fleet: following etcd's revocation set"
        );
    }
    loop {
        let batch = match changes.next().await {
            Ok(batch) => batch,
            Err(e) => return e,
        };
        let mut revoked = Vec::with_capacity(batch.len());
        for change in batch {
            match change {
                Change::Revoked(entry) => revoked.push(entry),
                Change::Malformed(problem) => {
                    tracing::warn!(fleet.problem = %problem, "fleet: malformed revocation entry ignored");
                    status.malformed(1);
                }
            }
        }
        match set.merge(revoked, SystemTime::now()) {
            Ok(0) => {}
            Ok(added) => {
                tracing::info!(
                    fleet.added = added,
                    fleet.revocations = set.len(),
                    "fleet: revocations received"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "fleet: revocation cache not written; the set is in force in memory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: &str, not_after: u64) -> RevokedEntry {
        RevokedEntry {
            serial: serial.parse().expect("serial"),
            tenant: "acme".parse().expect("tenant"),
            not_after,
            revoked_at: 1,
        }
    }

    #[test]
    fn the_set_grows_persists_and_drops_only_expired_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("revoked.json");
        let status = Arc::new(FleetStatus::default());
        let set = RevokedSet::load(&cache, status.clone()).expect("empty");
        assert!(set.is_empty());
        // Times around the real clock: loading the cache drops what has expired by now.
        let now = SystemTime::now();
        let t = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let added = set
            .merge([entry("01", t + 1000), entry("02", t - 500)], now)
            .expect("merge");
        assert_eq!(added, 1, "the expired entry is not taken");
        assert!(set.contains(&"01".parse().expect("serial")));
        // An earlier expiry for a held serial never replaces it.
        set.merge([entry("01", t + 1)], now).expect("merge");
        let later = now + Duration::from_secs(500);
        set.merge([], later).expect("merge");
        assert!(set.contains(&"01".parse().expect("serial")));
        // Restart: the cache holds the set.
        let again = RevokedSet::load(&cache, status.clone()).expect("cache");
        assert!(again.contains(&"01".parse().expect("serial")));
        assert_eq!(status.figures().revocations, 1);
        // Past its certificate's expiry, the entry goes.
        let after = now + Duration::from_secs(1001);
        set.merge([], after).expect("merge");
        assert!(set.is_empty());
    }

    /// A store whose first watch ends at once as if compacted; later watches wait for ever.
    #[derive(Default)]
    struct CompactingStore {
        entries: Mutex<Vec<RevokedEntry>>,
        watches: std::sync::atomic::AtomicU32,
    }

    struct Compacted(bool);

    #[async_trait::async_trait]
    impl crate::Changes for Compacted {
        async fn next(&mut self) -> Result<Vec<Change>, FleetError> {
            if self.0 {
                return Err(FleetError::WatchEnded("compacted".into()));
            }
            std::future::pending().await
        }
    }

    #[async_trait::async_trait]
    impl FleetStore for CompactingStore {
        async fn publish(&self, entries: &[RevokedEntry]) -> Result<(), FleetError> {
            self.entries
                .lock()
                .expect("lock")
                .extend_from_slice(entries);
            Ok(())
        }

        async fn list(&self) -> Result<crate::Listing, FleetError> {
            Ok(crate::Listing {
                entries: self.entries.lock().expect("lock").clone(),
                malformed: 1,
                revision: 7,
            })
        }

        async fn watch(&self, _revision: i64) -> Result<Box<dyn crate::Changes>, FleetError> {
            let first = self
                .watches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                == 0;
            if first {
                // Written while the watch was being set up, past a compaction: only a new
                // listing finds it.
                self.entries
                    .lock()
                    .expect("lock")
                    .push(entry("0b", u64::MAX / 2));
            }
            Ok(Box::new(Compacted(first)))
        }
    }

    #[test]
    fn a_watch_ended_by_a_compaction_lists_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Arc::new(FleetStatus::default());
        let set = Arc::new(
            RevokedSet::load(&dir.path().join("revoked.json"), status.clone()).expect("empty"),
        );
        let store = Arc::new(CompactingStore::default());
        store
            .entries
            .lock()
            .expect("lock")
            .push(entry("0a", u64::MAX / 2));
        follow(set.clone(), store.clone(), status.clone()).expect("follow");
        let start = std::time::Instant::now();
        while !(set.contains(&"0b".parse().expect("serial")) && status.figures().connected) {
            assert!(start.elapsed() < Duration::from_secs(5), "{set:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(set.contains(&"0a".parse().expect("serial")));
        let f = status.figures();
        assert!(f.watch_restarts >= 1);
        assert!(f.malformed >= 2, "each listing's malformed entries counted");
        assert_eq!(f.revocations, 2);
    }

    #[test]
    fn an_unreadable_cache_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("revoked.json");
        std::fs::write(&cache, b"{not json").expect("write");
        let status = Arc::new(FleetStatus::default());
        assert!(RevokedSet::load(&cache, status).is_err());
    }
}
