//! The local log's writer: a thread that owns the segment files, fed by two bounded queues (one
//! for records a producer waits on, one for the rest), doing group commit (one write and one
//! fdatasync per batch, at once when a producer waits on a record in it, else within
//! `unwaited_delay`), acknowledging records once durable, and holding the segments to a byte
//! budget.

mod engine;
mod recovery;
mod retention;
mod stamp;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Sender, TrySendError};

use crate::error::AuditError;
use crate::record::{AuditEvent, RecordKind};
use crate::signer::Signer;

pub use retention::RetentionOutcome;

/// What the log promises a producer, and what happens when it cannot keep the promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurabilityMode {
    /// A record that cannot be made durable within [`AuditConfig::durable_timeout`] is reported
    /// as an error, so the caller refuses the request (503), and [`AuditHandle::healthy`] turns
    /// false until a batch is written and fsynced again.
    FailClosed,
    /// Producers never wait: when the queue is full, the disk fails or the log is at its byte
    /// budget, records are dropped and counted in [`AuditHandle::dropped`]; traffic continues.
    BestEffort,
}

/// Settings for [`AuditLog::open`].
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// Directory of segment files (created 0700 if missing).
    pub dir: PathBuf,
    /// This node's id, written in every record.
    pub node: String,
    /// Fail-closed or best-effort.
    pub mode: DurabilityMode,
    /// Capacity of the queue between producers and the writer for records nothing waits on
    /// ([`AuditHandle::try_append`]) and for control commands, in records.
    pub queue_capacity: usize,
    /// Capacity of the separate queue for records a producer waits on ([`AuditHandle::append`],
    /// [`AuditHandle::append_durable`], [`AuditHandle::append_durable_async`]: the gateway's
    /// admission records), so that records nothing waits on cannot crowd them out. The writer
    /// takes this queue first in every batch.
    pub durable_queue_capacity: usize,
    /// Most records written in one batch (one write, one fsync).
    pub max_batch: usize,
    /// The bound on how long a producer waits, for queue space and then for durability.
    pub durable_timeout: Duration,
    /// How long records nobody waits on ([`AuditHandle::try_append`]: completion records, CA
    /// and admin events) may stay buffered, unwritten, for a record a producer waits on to come
    /// and share its fdatasync. A request's completion record thus rides on the next request's
    /// admission record instead of costing an fdatasync of its own that the admission would
    /// queue behind. A crash loses those of the last `unwaited_delay` along with those still
    /// queued. Zero commits every batch at once.
    pub unwaited_delay: Duration,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// A signed checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or this long after the previous one, whichever comes first (if there are new records).
    pub checkpoint_interval: Duration,
    /// The most bytes the segment files may hold together; `None` for no bound. Producers'
    /// records are refused ([`AuditError::OverBudget`]) once they would take the total past
    /// `max_bytes` minus [`OWN_RECORDS_RESERVE`], which is left for the log's own records
    /// (checkpoints, retention and truncation records), so the files stay within `max_bytes`.
    /// A warning is logged when the total crosses 80% and 95% of that. Retention frees room.
    pub max_bytes: Option<u64>,
    /// The wall clock that stamps records and ages segments (tests pass a fixed one).
    pub clock: fn() -> SystemTime,
}

/// The share of [`AuditConfig::max_bytes`] kept for the log's own records: producers' records
/// stop this much short of the budget.
pub const OWN_RECORDS_RESERVE: u64 = 16 << 10;

/// The node id to use when none is configured: the host name.
pub fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "portcullis".to_owned())
}

impl AuditConfig {
    /// Defaults: fail-closed, 65,536-record queue and an 8,192-record queue for records producers
    /// wait on, batches of up to 4,096, 250 ms bound, records nobody waits on buffered up to
    /// 10 ms, 64 MiB segments, checkpoint every 10,000 records or 60 s, no byte budget.
    pub fn new(dir: impl Into<PathBuf>, node: impl Into<String>) -> Self {
        AuditConfig {
            dir: dir.into(),
            node: node.into(),
            mode: DurabilityMode::FailClosed,
            queue_capacity: 65_536,
            durable_queue_capacity: 8_192,
            max_batch: 4_096,
            durable_timeout: Duration::from_millis(250),
            unwaited_delay: Duration::from_millis(10),
            segment_bytes: 64 << 20,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            max_bytes: None,
            clock: SystemTime::now,
        }
    }

    fn check(&self) -> Result<(), AuditError> {
        let bad = |m: &str| Err(AuditError::Config(m.to_string()));
        if self.node.is_empty() {
            return bad("node id is empty");
        }
        if self.queue_capacity == 0 || self.durable_queue_capacity == 0 || self.max_batch == 0 {
            return bad("queue_capacity, durable_queue_capacity and max_batch must be at least 1");
        }
        if self.max_bytes.is_some_and(|m| m < 4 * OWN_RECORDS_RESERVE) {
            return bad("max_bytes must be at least 65536");
        }
        if self.checkpoint_every == 0 || self.checkpoint_interval.is_zero() {
            return bad("checkpoint_every and checkpoint_interval must be positive");
        }
        if self.segment_bytes < 4096 {
            return bad("segment_bytes must be at least 4096");
        }
        Ok(())
    }
}

/// Proof that a record is durable: written and fsynced, in the chain at `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    /// The record's sequence number.
    pub seq: u64,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterStats {
    /// Records durable so far: every seq below this is fsynced (this is the next seq to assign
    /// when the queue is empty).
    pub durable_next_seq: u64,
    /// Records waiting in the queue.
    pub queued: usize,
    /// Records dropped (see [`AuditHandle::dropped`]).
    pub dropped: u64,
    /// Batches written (fsyncs).
    pub batches: u64,
    /// Checkpoints that could not be signed.
    pub checkpoint_failures: u64,
    /// Whether the last batch was made durable and no producer has timed out since (nor, in
    /// fail-closed mode, been refused for the byte budget).
    pub healthy: bool,
    /// Bytes of the segment files on disk.
    pub disk_bytes: u64,
    /// The byte budget ([`AuditConfig::max_bytes`]).
    pub max_bytes: Option<u64>,
}

pub(crate) struct Shared {
    healthy: AtomicBool,
    dropped: AtomicU64,
    durable_next: AtomicU64,
    batches: AtomicU64,
    checkpoint_failures: AtomicU64,
    disk_bytes: AtomicU64,
}

/// A record handed to the writer.
pub(crate) struct Append {
    kind: RecordKind,
    done: Arc<Completion>,
    /// Whether the producer learns the record's fate (it came through the queue for records
    /// producers wait on). A record nobody waits on that is not written is counted as dropped
    /// in either mode.
    waited: bool,
}

impl Append {
    fn new(event: AuditEvent, waited: bool) -> (Self, Arc<Completion>) {
        let done = Completion::new();
        let append = Append {
            kind: RecordKind::from(event),
            done: done.clone(),
            waited,
        };
        (append, done)
    }
}

#[allow(clippy::large_enum_variant)] // appends are nearly every command; see RecordKind
pub(crate) enum Command {
    Append(Append),
    Flush {
        done: Arc<Completion>,
    },
    Checkpoint {
        done: Arc<Completion>,
    },
    Retention {
        max_age: Duration,
        keep_from_seq: Option<u64>,
        reply: Sender<Result<RetentionOutcome, AuditError>>,
    },
    Shutdown,
}

/// Where the writer reports a record's fate.
pub(crate) struct Completion {
    state: Mutex<CompletionState>,
    cv: Condvar,
}

#[derive(Default)]
struct CompletionState {
    result: Option<Result<u64, AuditError>>,
    waker: Option<Waker>,
    /// A thread is blocked in [`Ack::wait`]: only then is the condition variable signalled
    /// (a system call each time), not for the many records nobody waits on.
    blocked: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these short locks leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Completion {
    fn new() -> Arc<Self> {
        Arc::new(Completion {
            state: Mutex::new(CompletionState::default()),
            cv: Condvar::new(),
        })
    }

    pub(crate) fn complete(&self, result: Result<u64, AuditError>) {
        let mut st = lock(&self.state);
        st.result = Some(result);
        let waker = st.waker.take();
        let blocked = st.blocked;
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        if blocked {
            self.cv.notify_all();
        }
    }
}

/// A queued record. Wait on it ([`Ack::wait`], or `.await` it) to learn when it is durable.
/// Dropping it does not cancel the record.
pub struct Ack {
    done: Arc<Completion>,
    shared: Arc<Shared>,
    fail_closed: bool,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack").finish_non_exhaustive()
    }
}

impl Ack {
    /// Blocks until the record is durable, its write failed, or `timeout` passed. In
    /// fail-closed mode a timeout also turns [`AuditHandle::healthy`] false.
    pub fn wait(self, timeout: Duration) -> Result<Durable, AuditError> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.done.state);
        loop {
            if let Some(r) = st.result.clone() {
                return r.map(|seq| Durable { seq });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                return Err(self.timed_out(timeout));
            }
            st.blocked = true;
            st = self
                .done
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn timed_out(&self, timeout: Duration) -> AuditError {
        if self.fail_closed {
            self.shared.healthy.store(false, Ordering::Release);
        }
        AuditError::Timeout(timeout)
    }
}

/// Awaiting an `Ack` resolves when the writer reports the record's fate, or with
/// [`AuditError::Closed`] if the log is closed first. It has no timeout of its own: use
/// [`AuditHandle::append_durable_async`] (or wrap it in `tokio::time::timeout`) for the bounded
/// form.
impl Future for Ack {
    type Output = Result<Durable, AuditError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = lock(&self.done.state);
        match st.result.clone() {
            Some(r) => Poll::Ready(r.map(|seq| Durable { seq })),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A cheap, cloneable handle producers use to append records.
#[derive(Clone)]
pub struct AuditHandle {
    /// Records nothing waits on, and control commands.
    tx: Sender<Command>,
    /// Records a producer waits on.
    durable_tx: Sender<Append>,
    shared: Arc<Shared>,
    max_bytes: Option<u64>,
    mode: DurabilityMode,
    timeout: Duration,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle")
            .field("mode", &self.mode)
            .field("stats", &self.stats())
            .finish()
    }
}

impl AuditHandle {
    /// Queues a record on the queue for records a producer waits on and returns at once with an
    /// [`Ack`] to wait on.
    ///
    /// Best-effort: never blocks; a full queue drops the record, counts it and returns
    /// [`AuditError::QueueFull`]. Fail-closed: waits at most the configured bound for queue
    /// space (then `QueueFull`, and unhealthy). Blocking: call it from a blocking context, or
    /// use [`AuditHandle::append_durable_async`] from async code.
    pub fn append(&self, event: impl Into<AuditEvent>) -> Result<Ack, AuditError> {
        let (cmd, done) = Append::new(event.into(), true);
        match self.mode {
            DurabilityMode::BestEffort => match self.durable_tx.try_send(cmd) {
                Ok(()) => Ok(self.ack(done)),
                Err(e) => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    Err(match e {
                        TrySendError::Full(_) => AuditError::QueueFull,
                        TrySendError::Disconnected(_) => AuditError::Closed,
                    })
                }
            },
            DurabilityMode::FailClosed => match self.durable_tx.send_timeout(cmd, self.timeout) {
                Ok(()) => Ok(self.ack(done)),
                Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                    self.shared.healthy.store(false, Ordering::Release);
                    Err(AuditError::QueueFull)
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                    Err(AuditError::Closed)
                }
            },
        }
    }

    /// Queues a record without ever waiting, in either mode, on the queue for records nothing
    /// waits on: a full queue drops the record, counts it in [`AuditHandle::dropped`] and
    /// returns [`AuditError::QueueFull`]; so does the writer if it cannot write it. For records
    /// nothing waits on (a request's completion record, written from async code).
    pub fn try_append(&self, event: impl Into<AuditEvent>) -> Result<Ack, AuditError> {
        let (append, done) = Append::new(event.into(), false);
        match self.tx.try_send(Command::Append(append)) {
            Ok(()) => Ok(self.ack(done)),
            Err(e) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => AuditError::QueueFull,
                    TrySendError::Disconnected(_) => AuditError::Closed,
                })
            }
        }
    }

    /// Queues a record and blocks until it is durable, within the configured bound in total.
    pub fn append_durable(&self, event: impl Into<AuditEvent>) -> Result<Durable, AuditError> {
        let start = Instant::now();
        let ack = self.append(event)?;
        ack.wait(self.timeout.saturating_sub(start.elapsed()))
    }

    /// Async form of [`AuditHandle::append_durable`] that never blocks the executor thread:
    /// a full queue is an immediate [`AuditError::QueueFull`] (in fail-closed mode too, and the
    /// log turns unhealthy), then the wait for durability is bounded by the configured bound.
    /// Needs a Tokio runtime with timers.
    pub async fn append_durable_async(
        &self,
        event: impl Into<AuditEvent>,
    ) -> Result<Durable, AuditError> {
        let (cmd, done) = Append::new(event.into(), true);
        if let Err(e) = self.durable_tx.try_send(cmd) {
            match self.mode {
                DurabilityMode::BestEffort => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                DurabilityMode::FailClosed => self.shared.healthy.store(false, Ordering::Release),
            }
            return Err(match e {
                TrySendError::Full(_) => AuditError::QueueFull,
                TrySendError::Disconnected(_) => AuditError::Closed,
            });
        }
        let ack = self.ack(done);
        let fail_closed = ack.fail_closed;
        let shared = ack.shared.clone();
        match tokio::time::timeout(self.timeout, ack).await {
            Ok(r) => r,
            Err(_) => {
                if fail_closed {
                    shared.healthy.store(false, Ordering::Release);
                }
                Err(AuditError::Timeout(self.timeout))
            }
        }
    }

    /// Blocks until every record queued before this call is durable (or `timeout`).
    pub fn flush(&self, timeout: Duration) -> Result<(), AuditError> {
        let done = Completion::new();
        self.send_control(Command::Flush { done: done.clone() }, timeout)?;
        self.ack(done).wait(timeout).map(|_| ())
    }

    /// Writes a signed checkpoint now (if there are records since the last one) and waits for
    /// it to be durable.
    pub fn checkpoint_now(&self, timeout: Duration) -> Result<(), AuditError> {
        let done = Completion::new();
        self.send_control(Command::Checkpoint { done: done.clone() }, timeout)?;
        self.ack(done).wait(timeout).map(|_| ())
    }

    /// Deletes whole segments whose files were last modified more than `max_age` ago (by the
    /// configured clock), oldest first, never the active one, and never one holding a record at
    /// or after `keep_from_seq` (pass the sink's first unshipped seq so the spool is kept).
    /// Appends a signed [`crate::Retention`] record first, so verification of what remains
    /// still passes. Blocks until done or `timeout`.
    pub fn apply_retention(
        &self,
        max_age: Duration,
        keep_from_seq: Option<u64>,
        timeout: Duration,
    ) -> Result<RetentionOutcome, AuditError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.send_control(
            Command::Retention {
                max_age,
                keep_from_seq,
                reply,
            },
            timeout,
        )?;
        rx.recv_timeout(timeout)
            .map_err(|_| AuditError::Timeout(timeout))?
    }

    fn send_control(&self, cmd: Command, timeout: Duration) -> Result<(), AuditError> {
        self.tx.send_timeout(cmd, timeout).map_err(|e| match e {
            crossbeam_channel::SendTimeoutError::Timeout(_) => AuditError::QueueFull,
            crossbeam_channel::SendTimeoutError::Disconnected(_) => AuditError::Closed,
        })
    }

    fn ack(&self, done: Arc<Completion>) -> Ack {
        Ack {
            done,
            shared: self.shared.clone(),
            fail_closed: self.mode == DurabilityMode::FailClosed,
        }
    }

    /// Fail-closed readiness: false after a batch failed to be written or fsynced, or a
    /// producer's record was not durable within the bound; true again after the next batch is
    /// made durable.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// Records dropped: best-effort appends that found the queue full, were refused at the byte
    /// budget or were lost in a failed write, and [`AuditHandle::try_append`]s that met any of
    /// these (in either mode: nobody else learns of them).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The durability mode.
    pub fn mode(&self) -> DurabilityMode {
        self.mode
    }

    /// Counters for metrics.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            durable_next_seq: self.shared.durable_next.load(Ordering::Acquire),
            queued: self.tx.len() + self.durable_tx.len(),
            dropped: self.dropped(),
            batches: self.shared.batches.load(Ordering::Relaxed),
            checkpoint_failures: self.shared.checkpoint_failures.load(Ordering::Relaxed),
            healthy: self.healthy(),
            disk_bytes: self.shared.disk_bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
        }
    }
}

/// The open log: owns the writer thread. Dropping it (or [`AuditLog::close`]) drains the queue,
/// writes a final checkpoint and stops the writer.
pub struct AuditLog {
    handle: AuditHandle,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("handle", &self.handle)
            .finish()
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `config.dir`: recovers a torn tail of the last segment
    /// (cutting it, saving the cut bytes beside it as `<segment>.torn-<unix time>`, and
    /// appending a [`crate::Truncation`] record), then starts the writer thread.
    pub fn open(config: AuditConfig, signer: Arc<dyn Signer>) -> Result<AuditLog, AuditError> {
        config.check()?;
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            durable_next: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            checkpoint_failures: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(0),
        });
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        let (durable_tx, durable_rx) = crossbeam_channel::bounded(config.durable_queue_capacity);
        let engine = engine::Engine::open(config.clone(), signer, shared.clone())?;
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || engine.run(durable_rx, rx))
            .map_err(|e| AuditError::io("audit-writer thread", e))?;
        Ok(AuditLog {
            handle: AuditHandle {
                tx,
                durable_tx,
                shared,
                max_bytes: config.max_bytes,
                mode: config.mode,
                timeout: config.durable_timeout,
            },
            thread: Some(thread),
        })
    }

    /// A handle for producers.
    pub fn handle(&self) -> AuditHandle {
        self.handle.clone()
    }

    /// Drains the queue, writes a final checkpoint and stops the writer.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            // The writer may have exited already; a closed channel is fine.
            let _ = self.handle.tx.send(Command::Shutdown);
            if t.join().is_err() {
                tracing::error!("audit writer thread panicked");
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.stop();
    }
}
