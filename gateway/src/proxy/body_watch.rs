//! HTTP/2 request bodies held to the listener's `body_idle_timeout`: pingora 0.9 reads an
//! HTTP/2 body with no deadline, so a watchdog per request with a body notes each chunk and,
//! when none came for the timeout, has the accept loop drop the connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The watchdog of one request body; stops when dropped (the request ended).
#[derive(Debug)]
pub(crate) struct BodyWatch {
    started: Instant,
    /// Milliseconds from `started` to the last chunk.
    last: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl BodyWatch {
    /// Watches from now; `abort` drops the connection.
    pub(crate) fn start(abort: Arc<Notify>, timeout: Duration) -> Self {
        let started = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&last);
        let task = tokio::spawn(async move {
            loop {
                let quiet_since = started + Duration::from_millis(seen.load(Ordering::Relaxed));
                let idle = quiet_since.elapsed();
                if idle >= timeout {
                    abort.notify_one();
                    return;
                }
                tokio::time::sleep(timeout - idle).await;
            }
        });
        Self {
            started,
            last,
            task,
        }
    }

    /// A chunk arrived.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl Drop for BodyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
