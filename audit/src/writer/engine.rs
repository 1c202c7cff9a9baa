//! The writer thread: assigns sequence numbers, chains and encodes records, writes each batch
//! with one `write` and one `fdatasync`, then completes the batch's acknowledgements.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{recovery, retention, AuditConfig, Command, Completion, DurabilityMode, Shared};
use crate::error::AuditError;
use crate::record::{self, Checkpoint, RecordKind};
use crate::segment::{segment_name, sync_dir};
use crate::signer::{key_id, Signer};

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
    /// Completions for buffered records: (completion, seq, is a producer's record).
    pending: Vec<(Arc<Completion>, u64, bool)>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// The active file's state is unknown after a failed write: reopen and cut before writing.
    broken: bool,
}

impl Engine {
    pub(super) fn open(
        cfg: AuditConfig,
        signer: Arc<dyn Signer>,
        shared: Arc<Shared>,
    ) -> Result<Engine, AuditError> {
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
            pending: Vec::new(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            broken: false,
            cfg,
        };
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

    pub(super) fn run(mut self, rx: Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.cfg.max_batch);
        loop {
            let wait = if self.since_checkpoint > 0 {
                self.cfg
                    .checkpoint_interval
                    .saturating_sub(self.last_checkpoint.elapsed())
            } else {
                self.cfg.checkpoint_interval
            };
            let mut shutdown = false;
            match rx.recv_timeout(wait) {
                Ok(cmd) => batch.push(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => shutdown = true,
            }
            while batch.len() < self.cfg.max_batch {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            for cmd in batch.drain(..) {
                match cmd {
                    Command::Append { kind, done } => {
                        if let Err(e) = self.push(kind, Some((done.clone(), true))) {
                            self.count_dropped(1);
                            done.complete(Err(e));
                        }
                    }
                    Command::Flush { done } => {
                        let seq = self.chain.next_seq.saturating_sub(1);
                        self.pending.push((done, seq, false));
                    }
                    Command::Checkpoint { done } => {
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
                        // The caller may have given up waiting; nothing to do then.
                        let _ = reply.send(out);
                    }
                    Command::Shutdown => shutdown = true,
                }
            }
            let due = self.since_checkpoint >= self.cfg.checkpoint_every
                || (self.since_checkpoint > 0
                    && self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval);
            if due || (shutdown && self.since_checkpoint > 0) {
                // A signer failure is counted and retried at the next opportunity.
                let _ = self.push_checkpoint();
            }
            let _ = self.commit();
            if shutdown {
                break;
            }
        }
        // Whatever was queued after the shutdown is refused; dropping `rx` then makes every
        // later `append` fail with `Closed`.
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Command::Append { done, .. }
                | Command::Flush { done }
                | Command::Checkpoint { done } => done.complete(Err(AuditError::Closed)),
                Command::Retention { reply, .. } => {
                    let _ = reply.send(Err(AuditError::Closed));
                }
                Command::Shutdown => {}
            }
        }
    }

    fn count_dropped(&self, n: u64) {
        if self.cfg.mode == DurabilityMode::BestEffort {
            self.shared.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(super) fn now(&self) -> (SystemTime, String) {
        let t = (self.cfg.clock)();
        (t, humantime::format_rfc3339_micros(t).to_string())
    }

    /// Encodes a record at the chain's head into the batch buffer, rolling the segment first if
    /// it is full. Returns its seq.
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
        let (line, hash) = record::encode(
            self.chain.next_seq,
            time,
            &self.cfg.node,
            &kind,
            &self.chain.last_hash,
        )
        .map_err(|e| AuditError::Encode(e.to_string()))?;
        let seq = self.chain.next_seq;
        self.buf.extend_from_slice(&line);
        self.chain.next_seq += 1;
        self.chain.last_hash = hash;
        if !matches!(kind, RecordKind::Checkpoint(_)) {
            self.since_checkpoint += 1;
        }
        if let Some((done, producer)) = done {
            self.pending.push((done, seq, producer));
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
        if self.buf.is_empty() {
            self.complete_pending(Ok(()));
            return Ok(());
        }
        let result = self.write_buffer();
        match &result {
            Ok(()) => {
                self.active.len += self.buf.len() as u64;
                self.committed = self.chain.clone();
                self.shared
                    .durable_next
                    .store(self.chain.next_seq, Ordering::Release);
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                self.shared.healthy.store(true, Ordering::Release);
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
        for (done, seq, producer) in self.pending.drain(..) {
            match &result {
                Ok(()) => done.complete(Ok(seq)),
                Err(e) => {
                    failed += u64::from(producer);
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
