//! The writing side: every revocation is first written to a spool folder (one file per
//! revocation, fsynced), then put into the store by a publisher thread, which deletes the file
//! once the store has taken it. While the store is away the files wait and are retried; a
//! process restarted meanwhile publishes them when it starts. Nothing is lost, and a
//! revocation never waits for etcd.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_identity::{write_atomic, PRIVATE_FILE_MODE};
use tokio::sync::Notify;

use crate::entry::RevokedEntry;
use crate::status::FleetStatus;
use crate::store::FleetStore;
use crate::FleetError;

/// Revocations waiting for the store, in a folder.
#[derive(Debug)]
pub struct RevocationSpool {
    dir: PathBuf,
    wake: Notify,
    status: Arc<FleetStatus>,
    sequence: AtomicU64,
}

impl RevocationSpool {
    /// The spool in `dir` (created, 0700, if missing).
    pub fn open(dir: &Path, status: Arc<FleetStatus>) -> Result<Arc<Self>, FleetError> {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| FleetError::file(dir, e))?;
        }
        let spool = Arc::new(Self {
            dir: dir.to_owned(),
            wake: Notify::new(),
            status,
            sequence: AtomicU64::new(0),
        });
        spool.count()?;
        Ok(spool)
    }

    /// Makes `entries` durable in the spool and wakes the publisher.
    pub fn add(&self, entries: &[RevokedEntry]) -> Result<(), FleetError> {
        if entries.is_empty() {
            return Ok(());
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{nanos:024}-{n:08}.json"));
        let bytes = serde_json::to_vec(entries)
            .map_err(|e| FleetError::file(&path, format!("encoding: {e}")))?;
        write_atomic(&path, &bytes, PRIVATE_FILE_MODE).map_err(|e| FleetError::file(&path, e))?;
        self.count()?;
        self.wake.notify_one();
        Ok(())
    }

    /// The spool's files, oldest first.
    fn pending(&self) -> Result<Vec<PathBuf>, FleetError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| FleetError::file(&self.dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Counts the revocations waiting into the status.
    fn count(&self) -> Result<(), FleetError> {
        let mut n = 0u64;
        for path in self.pending()? {
            n += std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<RevokedEntry>>(&b).ok())
                .map_or(0, |v| v.len() as u64);
        }
        self.status.set_spooled(n);
        Ok(())
    }

    /// Publishes every waiting file in order; stops at the first the store does not take.
    async fn drain(&self, store: &dyn FleetStore) -> Result<u64, FleetError> {
        let mut published = 0;
        for path in self.pending()? {
            let bytes = std::fs::read(&path).map_err(|e| FleetError::file(&path, e))?;
            let entries: Vec<RevokedEntry> = match serde_json::from_slice(&bytes) {
                Ok(entries) => entries,
                Err(e) => {
                    // Not ours to publish: kept aside for an operator, never retried forever.
                    tracing::error!(spool.file = %path.display(), error = %e, "fleet: unreadable spool file set aside (.bad)");
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                    continue;
                }
            };
            store.publish(&entries).await?;
            std::fs::remove_file(&path).map_err(|e| FleetError::file(&path, e))?;
            published += entries.len() as u64;
            self.status.published(entries.len() as u64);
            self.count()?;
        }
        Ok(published)
    }

    /// Publishes the spool to `store` on its own thread, for as long as the process runs: at
    /// once when a revocation is added, and every second while anything waits.
    pub fn spawn_publisher(self: &Arc<Self>, store: Arc<dyn FleetStore>) -> Result<(), FleetError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FleetError::Store(format!("runtime: {e}")))?;
        let spool = Arc::clone(self);
        std::thread::Builder::new()
            .name("fleet-publish".into())
            .spawn(move || {
                runtime.block_on(async move {
                    loop {
                        match spool.drain(store.as_ref()).await {
                            // Connected means: the last publish went through (an empty spool
                            // asks nothing of etcd and changes nothing).
                            Ok(n) => {
                                if n > 0 && spool.status.set_connected(true) {
                                    tracing::info!("fleet: etcd reachable; spooled revocations published");
                                }
                                if n > 0 {
                                    tracing::info!(fleet.published = n, "fleet: revocations published to etcd");
                                }
                            }
                            Err(e) => {
                                spool.status.publish_failed();
                                let waiting = spool.status.figures().spooled;
                                if spool.status.set_connected(false) {
                                    tracing::warn!(error = %e, fleet.spooled = waiting, "fleet: etcd unreachable; revocations stay spooled and are retried");
                                }
                            }
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(1), spool.wake.notified()).await;
                    }
                });
            })
            .map_err(|e| FleetError::Store(format!("thread: {e}")))?;
        Ok(())
    }
}
