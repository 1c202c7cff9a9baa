//! The writer thread: assigns sequence numbers, chains and encodes records, writes each batch
//! with one `write` and one `fdatasync`, then completes the batch's acknowledgements.
//!
//! Each batch takes the queue of records producers wait on first, then the other queue, up to
//! `max_batch` from each: the chain's order is the order the writer takes records in, and
//! records nothing waits on can neither crowd out nor starve the ones that are waited on.
//! A batch is committed at once when a producer waits on something in it; records nobody waits
//! on stay buffered (at most [`AuditConfig::unwaited_delay`]) to share the next waited record's
//! fdatasync. So the batch size follows the load: one record when idle, everything that queued
//! during the previous fdatasync when busy.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Select, TryRecvError};

use super::stamp::TimeStamp;
use super::{
    recovery, retention, Append, AuditConfig, Command, Completion, DurabilityMode, Shared,
    OWN_RECORDS_RESERVE,
};
use crate::error::AuditError;
use crate::record::{self, Checkpoint, RecordKind};
use crate::segment::{list_segments, segment_name, sync_dir};
use crate::signer::{key_id, Signer};

/// Records nobody waits on are committed once the buffer holds this many bytes, if
/// [`AuditConfig::unwaited_delay`] has not passed before.
const UNWAITED_BYTES: usize = 256 << 10;

pub(super) struct Active {
    pub(super) file: File,
    pub(super) name: String,
    /// Bytes in the file that are durable.
    pub(super) len: u64,
}

/// The chain position: everything needed to encode the next record.
#[derive(Clone, Debug)]
pub(super) struct ChainState {
    pub(super) next_seq: u64,
    pub(super) last_hash: String,
}

pub(super) struct Engine {
    pub(super) cfg: AuditConfig,
    pub(super) signer: Arc<dyn Signer>,
    key_id: String,
    shared: Arc<Shared>,
    pub(super) active: Active,
    /// Position including buffered (not yet durable) records.
    pub(super) chain: ChainState,
    /// Position of the durable log (rolled back to on a failed write).
    committed: ChainState,
    buf: Vec<u8>,
    /// When the oldest record in the buffer was encoded.
    buffered_since: Option<Instant>,
    stamp: TimeStamp,
    /// Completions for buffered records: (completion, seq, counted as dropped if not written).
    pending: Vec<(Arc<Completion>, u64, bool)>,
    /// Bytes of the segment files, durable (the buffer not included).
    disk_bytes: u64,
    /// The highest budget level warned about (0, 80, 95 or 100 percent); lowered again when
    /// retention frees room, so each crossing is logged once.
    budget_level: u8,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// The active file's state is unknown after a failed write: reopen and cut before writing.
    broken: bool,
    /// The directory's writer lock, held while the engine lives.
    _lock: std::fs::File,
}

impl Engine {
    pub(super) fn open(
        cfg: AuditConfig,
        signer: Arc<dyn Signer>,
        shared: Arc<Shared>,
    ) -> Result<Engine, AuditError> {
        // Before recovery: it cuts a torn tail, which another writer's tail would look like.
        let lock = recovery::lock(&cfg.dir)?;
        let rec = recovery::recover(&cfg.dir, cfg.clock)?;
        let key_id = key_id(&signer.public_key_der());
        shared
            .durable_next
            .store(rec.chain.next_seq, Ordering::Release);
        let mut engine = Engine {
            key_id,
            signer,
            shared,
            active: rec.active,
            committed: rec.chain.clone(),
            chain: rec.chain,
            buf: Vec::with_capacity(1 << 20),
            buffered_since: None,
            stamp: TimeStamp::default(),
            pending: Vec::new(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            broken: false,
            disk_bytes: 0,
            budget_level: 0,
            _lock: lock,
            cfg,
        };
        engine.measure_disk()?;
        if let Some(cut) = rec.truncation {
            tracing::warn!(
                audit.segment = %cut.segment,
                audit.from_seq = cut.from_seq,
                audit.bytes = cut.bytes,
                "audit log: torn tail cut on open"
            );
            engine.push(RecordKind::Truncation(cut), None)?;
            engine.commit()?;
        }
        Ok(engine)
    }

    pub(super) fn run(mut self, durable_rx: Receiver<Append>, rx: Receiver<Command>) {
        let mut batch = Vec::with_capacity(2 * self.cfg.max_batch);
        loop {
            let mut shutdown = self.take_batch(&durable_rx, &rx, self.next_wakeup(), &mut batch);
            // Whether someone waits on what this batch buffered: then it is committed now.
            let mut waited = shutdown;
            for cmd in batch.drain(..) {
                match cmd {
                    Command::Append(append) => {
                        waited |= append.waited;
                        self.append(append);
                    }
                    Command::Flush { done } => {
                        // Records a producer queued for waiting before the flush come first.
                        self.take_waiting(&durable_rx);
                        let seq = self.chain.next_seq.saturating_sub(1);
                        self.pending.push((done, seq, false));
                        waited = true;
                    }
                    Command::Checkpoint { done } => {
                        waited = true;
                        let seq = self.chain.next_seq.saturating_sub(1);
                        match self.push_checkpoint() {
                            Ok(()) => self.pending.push((done, seq, false)),
                            Err(e) => done.complete(Err(e)),
                        }
                    }
                    Command::Retention {
                        max_age,
                        keep_from_seq,
                        reply,
                    } => {
                        let _ = self.commit();
                        let out = retention::apply(&mut self, max_age, keep_from_seq);
                        // Deleted segments free budget: count the files again.
                        if let Err(e) = self.measure_disk() {
                            tracing::warn!(error = %e, "audit log: could not measure segments");
                        }
                        // The caller may have given up waiting; nothing to do then.
                        let _ = reply.send(out);
                    }
                    Command::Shutdown => {
                        self.take_waiting(&durable_rx);
                        shutdown = true;
                        waited = true;
                    }
                }
            }
            let due = self.since_checkpoint >= self.cfg.checkpoint_every
                || (self.since_checkpoint > 0
                    && self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval);
            if due || (shutdown && self.since_checkpoint > 0) {
                // A signer failure is counted and retried at the next opportunity.
                let _ = self.push_checkpoint();
            }
            if waited || due || self.unwaited_due() {
                let _ = self.commit();
            }
            if shutdown {
                break;
            }
        }
        // Whatever was queued after the shutdown is refused; dropping the receivers then makes
        // every later `append` fail with `Closed`.
        while let Ok(append) = durable_rx.try_recv() {
            append.done.complete(Err(AuditError::Closed));
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Command::Append(Append { done, .. })
                | Command::Flush { done }
                | Command::Checkpoint { done } => done.complete(Err(AuditError::Closed)),
                Command::Retention { reply, .. } => {
                    let _ = reply.send(Err(AuditError::Closed));
                }
                Command::Shutdown => {}
            }
        }
    }

    /// How long to wait for commands: until the next checkpoint is due, or until the records
    /// nobody waits on that sit in the buffer have waited [`AuditConfig::unwaited_delay`].
    fn next_wakeup(&self) -> Duration {
        let checkpoint = if self.since_checkpoint > 0 {
            self.cfg
                .checkpoint_interval
                .saturating_sub(self.last_checkpoint.elapsed())
        } else {
            self.cfg.checkpoint_interval
        };
        match self.buffered_since {
            Some(since) => checkpoint.min(self.cfg.unwaited_delay.saturating_sub(since.elapsed())),
            None => checkpoint,
        }
    }

    /// Whether the buffered records, none of which a producer waits on, are to be committed
    /// now: they have waited [`AuditConfig::unwaited_delay`], or the buffer holds
    /// [`UNWAITED_BYTES`].
    fn unwaited_due(&self) -> bool {
        self.buf.len() >= UNWAITED_BYTES
            || self
                .buffered_since
                .is_some_and(|since| since.elapsed() >= self.cfg.unwaited_delay)
    }

    /// Waits up to `wait` for either queue, then takes up to `max_batch` commands from the
    /// queue of records producers wait on, then up to `max_batch` from the other. Returns true
    /// when the producers are all gone (both queues are closed together).
    fn take_batch(
        &self,
        durable_rx: &Receiver<Append>,
        rx: &Receiver<Command>,
        wait: Duration,
        batch: &mut Vec<Command>,
    ) -> bool {
        let mut ready = Select::new();
        ready.recv(durable_rx);
        ready.recv(rx);
        // A timeout just means a quiet period: the checkpoint timer is looked at below.
        let _ = ready.ready_timeout(wait);
        let mut closed = false;
        for _ in 0..self.cfg.max_batch {
            match durable_rx.try_recv() {
                Ok(append) => batch.push(Command::Append(append)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        for _ in 0..self.cfg.max_batch {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        closed
    }

    /// Appends what is queued now on the queue of records producers wait on (bounded by its
    /// length at the call).
    fn take_waiting(&mut self, durable_rx: &Receiver<Append>) {
        for _ in 0..durable_rx.len() {
            match durable_rx.try_recv() {
                Ok(append) => self.append(append),
                Err(_) => break,
            }
        }
    }

    fn append(&mut self, append: Append) {
        let Append { kind, done, waited } = append;
        let counted = !waited || self.cfg.mode == DurabilityMode::BestEffort;
        if let Err(e) = self.push(kind, Some((done.clone(), counted))) {
            self.count_dropped(u64::from(counted));
            done.complete(Err(e));
        }
    }

    /// Counts the segment files' bytes again (at open, and after retention deleted some).
    fn measure_disk(&mut self) -> Result<(), AuditError> {
        let dir = &self.cfg.dir;
        let io = |e| AuditError::io(dir.display(), e);
        let mut total = 0u64;
        for seg in list_segments(dir).map_err(io)? {
            // A segment deleted meanwhile holds no bytes.
            total += std::fs::metadata(&seg.path).map_or(0, |m| m.len());
        }
        let freed = total < self.disk_bytes;
        self.disk_bytes = total;
        self.shared.disk_bytes.store(total, Ordering::Relaxed);
        self.budget_moved(freed);
        Ok(())
    }

    /// After the segments grew (`freed` false) or shrank: logs each crossing of 80% and 95% of
    /// the budget (less the reserve) once; leaving the budget (only by freeing room) is logged
    /// too, and lets the log be healthy again.
    fn budget_moved(&mut self, freed: bool) {
        let Some(max) = self.cfg.max_bytes else {
            return;
        };
        // Measured against what producers may use: reaching it is reaching the budget.
        let usable = max.saturating_sub(OWN_RECORDS_RESERVE).max(1);
        let level = match self.disk_bytes.saturating_mul(100) / usable {
            95.. => 95,
            80.. => 80,
            _ => 0,
        };
        if level >= self.budget_level {
            self.raise_budget_level(level, max);
        } else if freed {
            if self.budget_level == 100 {
                tracing::info!(
                    audit.disk_bytes = self.disk_bytes,
                    audit.max_bytes = max,
                    "audit log below its disk budget again"
                );
                if !self.broken {
                    self.shared.healthy.store(true, Ordering::Release);
                }
            }
            // Lowered, so that the next crossing is logged again.
            self.budget_level = level;
        }
    }

    /// Logs every level from the current one up to `level` (80 and 95: warnings; 100, the
    /// budget reached: an error), each once.
    fn raise_budget_level(&mut self, level: u8, max: u64) {
        for threshold in [80, 95] {
            if self.budget_level < threshold && threshold <= level {
                tracing::warn!(
                    audit.disk_bytes = self.disk_bytes,
                    audit.max_bytes = max,
                    "audit log past {threshold}% of its disk budget"
                );
            }
        }
        if self.budget_level < 100 && level == 100 {
            tracing::error!(
                audit.disk_bytes = self.disk_bytes,
                audit.max_bytes = max,
                audit.mode = ?self.cfg.mode,
                "audit log at its disk budget: records are refused (fail-closed) or dropped (best-effort) until retention frees room"
            );
        }
        self.budget_level = self.budget_level.max(level);
    }

    /// A producer's record did not fit in the budget: logged once until room is freed; in
    /// fail-closed mode the log is unhealthy meanwhile.
    fn budget_reached(&mut self, max: u64) -> AuditError {
        self.raise_budget_level(100, max);
        if self.cfg.mode == DurabilityMode::FailClosed {
            self.shared.healthy.store(false, Ordering::Release);
        }
        AuditError::OverBudget { max_bytes: max }
    }

    /// Whether the segments and the buffer (holding a producer's new line) still fit in the
    /// budget.
    fn fits(&self) -> bool {
        let Some(max) = self.cfg.max_bytes else {
            return true;
        };
        let limit = max.saturating_sub(OWN_RECORDS_RESERVE);
        self.disk_bytes + (self.buf.len() as u64) <= limit
    }

    fn count_dropped(&self, n: u64) {
        self.shared.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn now(&mut self) -> (SystemTime, String) {
        let t = (self.cfg.clock)();
        (t, self.stamp.format(t))
    }

    /// Encodes a record at the chain's head into the batch buffer, rolling the segment first if
    /// it is full. Returns its seq. A producer's record (`done` given) that would take the
    /// segments past the byte budget is refused; the log's own records are not (they have the
    /// reserve).
    pub(super) fn push(
        &mut self,
        kind: RecordKind,
        done: Option<(Arc<Completion>, bool)>,
    ) -> Result<u64, AuditError> {
        if let Err(e) = self.maybe_roll() {
            tracing::warn!(error = %e, "audit log: could not roll segment");
        }
        let (_, time) = self.now();
        self.push_at(&time, kind, done)
    }

    fn push_at(
        &mut self,
        time: &str,
        kind: RecordKind,
        done: Option<(Arc<Completion>, bool)>,
    ) -> Result<u64, AuditError> {
        let start = self.buf.len();
        if start == 0 {
            self.buffered_since = Some(Instant::now());
        }
        let hash = record::encode_into(
            &mut self.buf,
            self.chain.next_seq,
            time,
            &self.cfg.node,
            &kind,
            &self.chain.last_hash,
        )
        .map_err(|e| AuditError::Encode(e.to_string()))?;
        if let (Some(max), Some(_)) = (self.cfg.max_bytes, &done) {
            if !self.fits() {
                self.buf.truncate(start);
                return Err(self.budget_reached(max));
            }
        }
        let seq = self.chain.next_seq;
        self.chain.next_seq += 1;
        self.chain.last_hash = hash;
        if !matches!(kind, RecordKind::Checkpoint(_)) {
            self.since_checkpoint += 1;
        }
        if let Some((done, counted)) = done {
            self.pending.push((done, seq, counted));
        }
        Ok(seq)
    }

    /// Rolls to a new segment if the active one is full. Commits the buffer first, so a
    /// segment only ever holds whole batches' worth of its own records.
    fn maybe_roll(&mut self) -> Result<(), AuditError> {
        if self.active.len + (self.buf.len() as u64) < self.cfg.segment_bytes {
            return Ok(());
        }
        self.commit()?;
        let name = segment_name(self.chain.next_seq);
        let path = self.cfg.dir.join(&name);
        let file = create_segment(&path).map_err(|e| AuditError::io(path.display(), e))?;
        sync_dir(&self.cfg.dir).map_err(|e| AuditError::io(self.cfg.dir.display(), e))?;
        self.active = Active { file, name, len: 0 };
        Ok(())
    }

    /// Appends a signed checkpoint over the chain so far, if there is anything to cover.
    pub(super) fn push_checkpoint(&mut self) -> Result<(), AuditError> {
        if self.chain.next_seq == 0 {
            return Ok(());
        }
        if let Err(e) = self.maybe_roll() {
            tracing::warn!(error = %e, "audit log: could not roll segment");
        }
        let (_, time) = self.now();
        let through_seq = self.chain.next_seq - 1;
        let msg = Checkpoint::signed_message(
            &self.cfg.node,
            &time,
            &self.active.name,
            through_seq,
            &self.chain.last_hash,
        );
        let signature = match self.signer.sign(&msg) {
            Ok(s) => s,
            Err(e) => {
                self.shared
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "audit log: checkpoint not signed");
                return Err(AuditError::Signer(e.to_string()));
            }
        };
        let cp = Checkpoint {
            segment: self.active.name.clone(),
            through_seq,
            chain_hash: self.chain.last_hash.clone(),
            algorithm: self.signer.algorithm().name().to_string(),
            key_id: self.key_id.clone(),
            signature: hex::encode(signature),
        };
        self.push_at(&time, RecordKind::Checkpoint(cp), None)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    pub(super) fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Writes and fsyncs the buffer, then completes the pending acknowledgements. On failure
    /// the buffered records are discarded (the chain rolls back to the durable head) and every
    /// pending producer gets the error.
    pub(super) fn commit(&mut self) -> Result<(), AuditError> {
        self.buffered_since = None;
        if self.buf.is_empty() {
            self.complete_pending(Ok(()));
            return Ok(());
        }
        let result = self.write_buffer();
        match &result {
            Ok(()) => {
                self.active.len += self.buf.len() as u64;
                self.disk_bytes += self.buf.len() as u64;
                self.shared
                    .disk_bytes
                    .store(self.disk_bytes, Ordering::Relaxed);
                self.committed = self.chain.clone();
                self.shared
                    .durable_next
                    .store(self.chain.next_seq, Ordering::Release);
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                // Fail-closed at the byte budget stays unhealthy until room is freed.
                let at_budget = self.budget_level == 100;
                let healthy = !(at_budget && self.cfg.mode == DurabilityMode::FailClosed);
                self.shared.healthy.store(healthy, Ordering::Release);
                self.budget_moved(false);
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log: batch not written");
                self.broken = true;
                self.chain = self.committed.clone();
                self.shared.healthy.store(false, Ordering::Release);
                // The partial write, if any, is cut before the next one.
                if self.active.file.set_len(self.active.len).is_ok() {
                    self.broken = false;
                }
            }
        }
        self.buf.clear();
        let r = result
            .clone()
            .map_err(|e| AuditError::WriteFailed(e.to_string()));
        self.complete_pending(r);
        result
    }

    fn write_buffer(&mut self) -> Result<(), AuditError> {
        let path = self.cfg.dir.join(&self.active.name);
        let io = |e| AuditError::io(path.display(), e);
        if self.broken {
            let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
            file.set_len(self.active.len).map_err(io)?;
            self.active.file = file;
            self.broken = false;
        }
        self.active.file.write_all(&self.buf).map_err(io)?;
        self.active.file.sync_data().map_err(io)
    }

    fn complete_pending(&mut self, result: Result<(), AuditError>) {
        let mut failed = 0;
        for (done, seq, counted) in self.pending.drain(..) {
            match &result {
                Ok(()) => done.complete(Ok(seq)),
                Err(e) => {
                    failed += u64::from(counted);
                    done.complete(Err(e.clone()));
                }
            }
        }
        self.count_dropped(failed);
    }

    /// Appends a record now and makes it durable (used for the log's own records).
    pub(super) fn push_durable(&mut self, time: &str, kind: RecordKind) -> Result<u64, AuditError> {
        self.maybe_roll()?;
        let seq = self.push_at(time, kind, None)?;
        self.commit()?;
        Ok(seq)
    }
}

pub(super) fn create_segment(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o600)
        .open(path)
}
