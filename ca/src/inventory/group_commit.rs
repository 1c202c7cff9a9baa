//! Group commit of issuance records, shared by the inventory stores: each caller queues its
//! record; when no batch is being written, the caller becomes the writer and writes every
//! record queued so far in one transaction, then hands each caller its outcome and wakes them
//! all. The others wait on a condition variable, not on the connection: a caller whose record
//! was committed returns as soon as that commit ends, while the records queued during it go in
//! the next batch, written at once by one of their callers. So no certificate is returned
//! before its row is durable, and under load a batch holds everything that arrived during the
//! previous commit.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::NewCertRecord;
use crate::CaError;

/// The queue of records waiting for a commit (one per store).
#[derive(Default)]
pub struct GroupCommit {
    /// Records waiting for the next commit, and whether a batch is being written.
    commits: Mutex<Commits>,
    /// Signalled when a batch's outcomes are set.
    committed: Condvar,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Commits {
    /// Each with where its outcome goes.
    queued: Vec<QueuedRecord>,
    /// A caller is writing a batch.
    writing: bool,
}

/// Where one queued record's outcome is written (once, after its batch's commit).
type Outcome = Arc<Mutex<Option<Result<(), CaError>>>>;

struct QueuedRecord {
    record: NewCertRecord,
    outcome: Outcome,
}

/// Held by the caller writing a batch: gives the role up (and wakes the waiters) however the
/// write ends.
struct Writing<'a>(&'a GroupCommit);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.lock().writing = false;
        self.0.committed.notify_all();
    }
}

fn take(outcome: &Outcome) -> Option<Result<(), CaError>> {
    outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Commits> {
        self.commits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `record` and returns once its batch's commit is known. `write` writes one batch
    /// in one transaction: the outcome of each record (in order), or the error that kept the
    /// whole batch from committing.
    pub fn record(
        &self,
        record: &NewCertRecord,
        write: impl FnOnce(&[&NewCertRecord]) -> Result<Vec<Result<(), CaError>>, CaError>,
    ) -> Result<(), CaError> {
        let outcome: Outcome = Arc::default();
        let mut commits = self.lock();
        commits.queued.push(QueuedRecord {
            record: record.clone(),
            outcome: Arc::clone(&outcome),
        });
        loop {
            // Set (with its batch's commit known) by whichever caller wrote the batch.
            if let Some(done) = take(&outcome) {
                return done;
            }
            if !commits.writing {
                commits.writing = true;
                let batch = std::mem::take(&mut commits.queued);
                drop(commits);
                let writing = Writing(self);
                write_batch(&batch, write);
                drop(writing);
                return take(&outcome).unwrap_or_else(|| {
                    Err(CaError::Inventory(
                        "the record was not written (not in the batch)".to_owned(),
                    ))
                });
            }
            commits = self
                .committed
                .wait(commits)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Writes a batch and sets every outcome once the commit is known.
fn write_batch(
    batch: &[QueuedRecord],
    write: impl FnOnce(&[&NewCertRecord]) -> Result<Vec<Result<(), CaError>>, CaError>,
) {
    let set = |q: &QueuedRecord, result: Result<(), CaError>| {
        *q.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
    };
    let records: Vec<&NewCertRecord> = batch.iter().map(|q| &q.record).collect();
    match write(&records) {
        Ok(results) if results.len() == batch.len() => {
            for (q, result) in batch.iter().zip(results) {
                set(q, result);
            }
        }
        Ok(_) => {
            for q in batch {
                set(q, Err(CaError::Inventory("batch outcome lost".to_owned())));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, batch = batch.len(), "inventory: batch not committed");
            for q in batch {
                set(q, Err(CaError::Inventory(e.to_string())));
            }
        }
    }
}
