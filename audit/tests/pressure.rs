//! The writer under pressure: records a producer waits on (the gateway's admission records)
//! still go in while the queue of records nothing waits on is full, and the byte budget holds
//! (fail-closed refuses, best-effort drops and counts, retention frees room, the files never
//! pass it, and what is written still verifies).

mod common;

use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use portcullis_audit::{
    query, verify_dir, AuditError, DurabilityMode, QueryFilter, RecordKind, SignatureAlgorithm,
    Signer, SignerError, SoftwareSigner,
};

/// The real software signer, made to hold the writer thread inside `sign` until released (at
/// most 10 s), so that the queues fill up behind it.
struct HeldSigner {
    inner: SoftwareSigner,
    held: Mutex<bool>,
    released: Condvar,
    entered: Mutex<Option<mpsc::Sender<()>>>,
}

impl HeldSigner {
    fn new(inner: SoftwareSigner) -> Self {
        HeldSigner {
            inner,
            held: Mutex::new(false),
            released: Condvar::new(),
            entered: Mutex::new(None),
        }
    }

    /// Holds the next `sign`; the receiver hears when the writer is inside it.
    fn hold(&self) -> mpsc::Receiver<()> {
        *self.held.lock().unwrap() = true;
        let (tx, rx) = mpsc::channel();
        *self.entered.lock().unwrap() = Some(tx);
        rx
    }

    fn release(&self) {
        *self.held.lock().unwrap() = false;
        self.released.notify_all();
    }
}

impl Signer for HeldSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        if let Some(tx) = self.entered.lock().unwrap().take() {
            let _ = tx.send(());
        }
        let held = self.held.lock().unwrap();
        let _ = self
            .released
            .wait_timeout_while(held, Duration::from_secs(10), |h| *h)
            .unwrap();
        self.inner.sign(msg)
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        self.inner.algorithm()
    }
    fn public_key_der(&self) -> Vec<u8> {
        self.inner.public_key_der()
    }
}

/// The attack on the queue: records nothing waits on (a refused request's completion record)
/// fill their queue while the writer is busy. A record a producer waits on (an admission record
/// in fail-closed mode) must still be accepted at once, and is written first once the writer
/// moves on. With one shared queue it waited out its bound and was refused (`QueueFull`: 503).
#[test]
fn records_waited_on_are_accepted_while_the_other_queue_is_full() {
    let t = TestLog::new();
    let signer = Arc::new(HeldSigner::new(SoftwareSigner::generate().unwrap()));
    let mut cfg = t.config();
    cfg.queue_capacity = 16;
    cfg.durable_timeout = Duration::from_secs(1);
    let log = portcullis_audit::AuditLog::open(cfg, signer.clone()).unwrap();
    let h = log.handle();
    h.append_durable(request(0)).unwrap();

    // Hold the writer inside a checkpoint's signature.
    let entered = signer.hold();
    let checkpoint = {
        let h = h.clone();
        std::thread::spawn(move || h.checkpoint_now(Duration::from_secs(20)))
    };
    entered.recv_timeout(Duration::from_secs(10)).unwrap();

    let mut queued = Vec::new();
    let full = (1..=1000).find(|i| match h.try_append(request(*i)) {
        Ok(ack) => {
            queued.push(ack);
            false
        }
        Err(AuditError::QueueFull) => true,
        Err(e) => panic!("{e}"),
    });
    assert!(
        full.is_some(),
        "the queue of records nothing waits on is full"
    );
    assert_eq!(queued.len(), 16);

    let start = Instant::now();
    let admission = h.append(request(5000));
    let waited = start.elapsed();
    signer.release();
    let admission = admission.expect("a record a producer waits on is accepted");
    assert!(
        waited < Duration::from_millis(500),
        "accepted at once: {waited:?}"
    );
    let admitted = admission.wait(Duration::from_secs(10)).unwrap().seq;
    checkpoint.join().unwrap().unwrap();
    let completed: Vec<u64> = queued
        .into_iter()
        .map(|ack| ack.wait(Duration::from_secs(10)).unwrap().seq)
        .collect();
    // The writer takes the waited-on queue first: the admission record precedes the records
    // that were queued before it.
    assert!(
        completed.iter().all(|seq| *seq > admitted),
        "{admitted} {completed:?}"
    );
    log.close();
    let key = portcullis_audit::PublicKey::from_spki_der(&signer.public_key_der()).unwrap();
    verify_dir(t.path(), &key).unwrap();
}

fn on_disk(dir: &std::path::Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

const BUDGET: u64 = 64 << 10;

/// Fail-closed at the byte budget: the record is refused (the gateway answers 503) and the log
/// is unhealthy (unready), without waiting; the files stay within the budget; retention
/// deleting old segments makes room and the log takes records again.
#[test]
fn fail_closed_refuses_at_the_byte_budget_until_retention_frees_room() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.segment_bytes = 8 << 10;
    cfg.max_bytes = Some(BUDGET);
    let log = t.open(cfg);
    let h = log.handle();
    let mut accepted = 0u64;
    let refusal = (0..10_000u64)
        .find_map(|i| match h.append_durable(request(i)) {
            Ok(_) => {
                accepted += 1;
                None
            }
            Err(e) => Some(e),
        })
        .expect("the budget is reached");
    assert!(
        matches!(refusal, AuditError::OverBudget { max_bytes: BUDGET }),
        "{refusal}"
    );
    assert!(accepted > 50, "{accepted}");
    assert!(!h.healthy(), "fail-closed at the budget is unhealthy");
    // Refused at once, every time, until room is freed.
    let start = Instant::now();
    assert!(matches!(
        h.append_durable(request(20_000)),
        Err(AuditError::OverBudget { .. })
    ));
    assert!(start.elapsed() < Duration::from_millis(500));
    let stats = h.stats();
    assert_eq!(stats.max_bytes, Some(BUDGET));
    assert_eq!(stats.disk_bytes, on_disk(t.path()));
    assert!(stats.disk_bytes <= BUDGET, "{}", stats.disk_bytes);

    age_segments(t.path(), 1);
    let out = h
        .apply_retention(Duration::from_secs(86400), None, Duration::from_secs(10))
        .unwrap();
    assert!(!out.deleted_segments.is_empty());
    assert!(h.healthy(), "room freed: healthy again");
    assert!(h.stats().disk_bytes < stats.disk_bytes);
    assert_eq!(h.stats().disk_bytes, on_disk(t.path()));
    for i in 30_000..30_010 {
        h.append_durable(request(i)).unwrap();
    }
    log.close();
    assert!(on_disk(t.path()) <= BUDGET);
    verify_dir(t.path(), &t.key()).unwrap();
}

/// Best-effort at the byte budget: producers are never refused at the queue and never wait;
/// what does not fit is dropped and counted, exactly; the files stay within the budget and
/// what was written verifies.
#[test]
fn best_effort_drops_and_counts_at_the_byte_budget() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.mode = DurabilityMode::BestEffort;
    cfg.segment_bytes = 8 << 10;
    cfg.max_bytes = Some(BUDGET);
    let log = t.open(cfg);
    let h = log.handle();
    let attempted = 2000u64;
    for i in 0..attempted {
        // Both queues: records waited on and records nothing waits on.
        let queued = if i % 2 == 0 {
            h.append(request(i)).map(drop)
        } else {
            h.try_append(request(i)).map(drop)
        };
        if let Err(e) = queued {
            assert!(matches!(e, AuditError::QueueFull), "{e}");
        }
        if i % 100 == 0 {
            h.flush(Duration::from_secs(10)).unwrap();
        }
    }
    h.flush(Duration::from_secs(10)).unwrap();
    assert!(h.healthy(), "best-effort stays healthy at the budget");
    let dropped = h.dropped();
    log.close();
    let written = query(t.path(), QueryFilter::default())
        .unwrap()
        .map(Result::unwrap)
        .filter(|r| matches!(r.kind, RecordKind::Request(_)))
        .count() as u64;
    assert!(dropped > 0 && written > 50, "{written} {dropped}");
    assert_eq!(written + dropped, attempted);
    assert!(on_disk(t.path()) <= BUDGET, "{}", on_disk(t.path()));
    verify_dir(t.path(), &t.key()).unwrap();
}
