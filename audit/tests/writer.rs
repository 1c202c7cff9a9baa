//! The writer: group commit under concurrent producers, best-effort drops, fail-closed refusal
//! on a full disk, and retention.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use portcullis_audit::{
    query, tail, verify_dir, AuditError, AuditRecord, DurabilityMode, QueryFilter, RecordKind,
};

fn requests(dir: &std::path::Path) -> Vec<AuditRecord> {
    query(dir, QueryFilter::default())
        .unwrap()
        .map(Result::unwrap)
        .filter(|r| matches!(r.kind, RecordKind::Request(_)))
        .collect()
}

#[test]
fn group_commit_with_eight_producers_keeps_every_record_in_order() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.segment_bytes = 256 << 10;
    let log = t.open(cfg);
    let threads: Vec<_> = (0..8u64)
        .map(|p| {
            let h = log.handle();
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..1000u64 {
                    let d = h.append_durable(request(p * 1000 + i)).unwrap();
                    seqs.push(d.seq);
                }
                seqs
            })
        })
        .collect();
    let mut acked: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let stats = log.handle().stats();
    log.close();
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(
        acked.len(),
        8000,
        "every acknowledgement names a distinct seq"
    );
    // Group commit: far fewer fsyncs than records.
    assert!(stats.batches < 8000, "batches = {}", stats.batches);
    let report = verify_dir(t.path(), &t.key()).unwrap();
    assert!(segments(t.path()).len() > 1);
    let all: Vec<AuditRecord> = query(t.path(), QueryFilter::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.len() as u64, report.records);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as u64, "records are in seq order");
    }
    let reqs: Vec<&AuditRecord> = all
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::Request(_)))
        .collect();
    assert_eq!(reqs.len(), 8000);
    for seq in &acked {
        assert!(matches!(all[*seq as usize].kind, RecordKind::Request(_)));
    }
    let mut ids: Vec<String> = reqs
        .iter()
        .map(|r| match &r.kind {
            RecordKind::Request(e) => e.request_id.clone(),
            _ => unreachable!(),
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8000);
}

#[test]
fn best_effort_drops_and_counts_when_the_queue_is_full() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.mode = DurabilityMode::BestEffort;
    cfg.durable_queue_capacity = 4;
    let log = t.open(cfg);
    let attempted = 4 * 5000u64;
    let threads: Vec<_> = (0..4u64)
        .map(|p| {
            let h = log.handle();
            std::thread::spawn(move || {
                let mut refused = 0u64;
                for i in 0..5000u64 {
                    let start = std::time::Instant::now();
                    match h.append(request(p * 5000 + i)) {
                        Ok(_) => {}
                        Err(AuditError::QueueFull) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                    // Never waits for the disk: a full queue refuses at once (the drops counted
                    // below prove it). The bound is loose so that a descheduled thread on a
                    // loaded CI machine is not mistaken for a blocking append.
                    assert!(start.elapsed() < Duration::from_secs(2));
                }
                refused
            })
        })
        .collect();
    let refused: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let h = log.handle();
    h.flush(Duration::from_secs(10)).unwrap();
    let dropped = h.dropped();
    log.close();
    assert!(dropped > 0, "a 4-record queue must overflow");
    assert_eq!(dropped, refused);
    let written = requests(t.path()).len() as u64;
    assert_eq!(written + dropped, attempted);
    verify_dir(t.path(), &t.key()).unwrap();
}

/// Fail-closed on a real full disk: a 256 KiB tmpfs filled up. Needs mount rights (tests run as
/// root); skipped with a message otherwise.
#[test]
fn fail_closed_refuses_when_the_disk_is_full_and_recovers() {
    let mnt = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(mnt.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP fail_closed_refuses_when_the_disk_is_full: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.path().to_path_buf());
    let dir = mnt.path().join("audit");
    let signer = Arc::new(portcullis_audit::SoftwareSigner::generate().unwrap());
    let mut cfg = portcullis_audit::AuditConfig::new(&dir, "node-1");
    cfg.durable_timeout = Duration::from_millis(500);
    let log = portcullis_audit::AuditLog::open(cfg, signer.clone()).unwrap();
    let h = log.handle();
    for i in 0..10 {
        h.append_durable(request(i)).unwrap();
    }
    assert!(h.healthy());
    // Fill the disk.
    let filler = mnt.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 512 << 10]);
    let mut refused = 0;
    for i in 10..200 {
        match h.append_durable(request(i)) {
            Ok(_) => {}
            Err(AuditError::WriteFailed(_)) | Err(AuditError::Timeout(_)) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused > 0, "a full disk must refuse records");
    assert!(!h.healthy(), "fail-closed turns unhealthy");
    // Free the disk: the next record is durable again and the log is healthy.
    std::fs::remove_file(&filler).unwrap();
    h.append_durable(request(1000)).unwrap();
    assert!(h.healthy());
    log.close();
    let key = portcullis_audit::PublicKey::from_spki_der(
        &portcullis_audit::Signer::public_key_der(&*signer),
    )
    .unwrap();
    let report = verify_dir(&dir, &key).unwrap();
    assert!(report.records >= 11);
}

#[test]
fn fail_closed_timeout_turns_unhealthy_and_append_durable_async_works() {
    let t = TestLog::new();
    let log = t.open(t.config());
    let h = log.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = rt.block_on(h.append_durable_async(request(1))).unwrap();
    assert_eq!(d.seq, 0);
    // An Ack is a future too.
    let ack = h.append(request(2)).unwrap();
    assert_eq!(rt.block_on(ack).unwrap().seq, 1);
    // A zero wait cannot be met: fail-closed reports it and turns unhealthy.
    let ack = h.append(request(3)).unwrap();
    assert!(matches!(
        ack.wait(Duration::ZERO),
        Err(AuditError::Timeout(_))
    ));
    assert!(!h.healthy());
    h.append_durable(request(4)).unwrap();
    assert!(h.healthy(), "a durable batch makes it healthy again");
    log.close();
}

#[test]
fn checkpoints_every_n_records_and_on_demand() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.checkpoint_every = 25;
    let log = t.open(cfg);
    let h = log.handle();
    for i in 0..60 {
        h.append_durable(request(i)).unwrap();
    }
    h.checkpoint_now(Duration::from_secs(5)).unwrap();
    let r = verify_dir(t.path(), &t.key()).unwrap();
    assert_eq!(r.checkpoints, 3);
    assert_eq!(r.unsigned_tail, 0);
    drop(log);
}

#[test]
fn checkpoint_after_an_interval() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.checkpoint_interval = Duration::from_millis(100);
    let log = t.open(cfg);
    log.handle().append_durable(request(0)).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let r = verify_dir(t.path(), &t.key()).unwrap();
    assert_eq!((r.records, r.checkpoints), (2, 1));
    log.close();
}

#[test]
fn retention_deletes_old_segments_and_verify_still_passes() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.segment_bytes = 4096;
    let log = t.open(cfg.clone());
    let h = log.handle();
    for i in 0..200 {
        h.append_durable(request(i)).unwrap();
    }
    let before = segments(t.path());
    assert!(before.len() > 5);
    // Age all but the newest three segments.
    age_segments(t.path(), 3);
    let out = h
        .apply_retention(Duration::from_secs(86400), None, Duration::from_secs(10))
        .unwrap();
    assert_eq!(out.deleted_segments.len(), before.len() - 3);
    for i in 200..220 {
        h.append_durable(request(i)).unwrap();
    }
    log.close();
    let r = verify_dir(t.path(), &t.key()).unwrap();
    assert_eq!(r.first_seq, out.through_seq.map(|s| s + 1));
    assert_eq!(r.anchored_by, out.record_seq);
    // The log reopens and continues after retention.
    fill(&t, cfg, 5);
    verify_dir(t.path(), &t.key()).unwrap();
    // Deleting one more segment by hand is still caught.
    std::fs::remove_file(&segments(t.path())[0]).unwrap();
    assert!(verify_dir(t.path(), &t.key()).is_err());
}

#[test]
fn retention_keeps_what_the_sink_has_not_shipped() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.segment_bytes = 4096;
    let log = t.open(cfg);
    let h = log.handle();
    for i in 0..200 {
        h.append_durable(request(i)).unwrap();
    }
    age_segments(t.path(), 1);
    let out = h
        .apply_retention(Duration::from_secs(86400), Some(0), Duration::from_secs(10))
        .unwrap();
    assert!(out.deleted_segments.is_empty());
    let out = h
        .apply_retention(
            Duration::from_secs(86400),
            Some(60),
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(out.through_seq.unwrap() < 60);
    log.close();
    verify_dir(t.path(), &t.key()).unwrap();
}

#[test]
fn tail_and_query() {
    let t = TestLog::new();
    let log = t.open(t.config());
    let h = log.handle();
    for i in 0..50 {
        h.append_durable(request(i)).unwrap();
    }
    log.close();
    let last = tail(t.path(), 3).unwrap();
    assert_eq!(last.len(), 3);
    assert!(matches!(last[2].kind, RecordKind::Checkpoint(_)));
    assert_eq!(last[0].seq + 2, last[2].seq);
    let denied: Vec<_> = query(
        t.path(),
        QueryFilter {
            tenant: Some("acme".into()),
            decision: Some(portcullis_audit::Decision::Deny),
            ..Default::default()
        },
    )
    .unwrap()
    .map(Result::unwrap)
    .collect();
    // i % 5 == 0 is denied, even i is acme: i in {0, 10, 20, 30, 40}.
    assert_eq!(denied.len(), 5);
    let future = query(
        t.path(),
        QueryFilter {
            since: Some(SystemTime::now() + Duration::from_secs(3600)),
            ..Default::default()
        },
    )
    .unwrap()
    .count();
    assert_eq!(future, 0);
}

#[test]
fn appends_after_close_are_refused() {
    let t = TestLog::new();
    let log = t.open(t.config());
    let h = log.handle();
    h.append_durable(request(0)).unwrap();
    log.close();
    assert!(matches!(h.append(request(1)), Err(AuditError::Closed)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(h.append_durable_async(request(2))),
        Err(AuditError::Closed)
    ));
}

/// A request's completion record (nobody waits on it) does not cost an fdatasync of its own:
/// it stays buffered until the next admission record, a producer waits on, carries it to disk;
/// with no admission coming, it is made durable after `unwaited_delay`.
#[test]
fn records_nobody_waits_on_ride_on_the_next_waited_records_fdatasync() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.unwaited_delay = Duration::from_secs(3);
    let log = t.open(cfg);
    let h = log.handle();
    h.append_durable(request(0)).unwrap();
    let before = h.stats();

    let completion = h.try_append(request(1)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        h.stats().durable_next_seq,
        before.durable_next_seq,
        "not written on its own"
    );
    let admission = h.append_durable(request(2)).unwrap();
    assert_eq!(completion.wait(Duration::from_secs(1)).unwrap().seq, 1);
    assert_eq!(admission.seq, 2);
    assert_eq!(
        h.stats().batches,
        before.batches + 1,
        "one fdatasync for both"
    );

    // Alone, it waits out the delay, then is written.
    let alone = std::time::Instant::now();
    let completion = h.try_append(request(3)).unwrap();
    assert_eq!(completion.wait(Duration::from_secs(10)).unwrap().seq, 3);
    assert!(
        alone.elapsed() >= Duration::from_secs(2),
        "{:?}",
        alone.elapsed()
    );
    assert_eq!(h.stats().batches, before.batches + 2);
    log.close();
    assert_eq!(verify_dir(t.path(), &t.key()).unwrap().records, 5);
}

#[test]
fn one_log_has_one_writer() {
    let t = TestLog::new();
    let first = t.open(t.config());
    first.handle().append_durable(request(1)).unwrap();
    // A second writer on the same directory (another process, or a second gateway with the
    // same config) would interleave records and break the chain: refused, nothing written.
    match portcullis_audit::AuditLog::open(t.config(), t.signer.clone()) {
        Err(AuditError::InUse(dir)) => assert!(dir.contains(&*t.dir.path().to_string_lossy())),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a second writer opened the log"),
    }
    // Another process is refused the same way (the lock is the kernel's, per open file).
    let out = Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(t.dir.path().join(".lock"))
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success(), "flock took the held lock");
    first.close();
    let again = t.open(t.config());
    again.handle().append_durable(request(2)).unwrap();
    again.close();
    assert_eq!(requests(t.dir.path()).len(), 2);
    assert!(verify_dir(t.dir.path(), &t.key()).is_ok());
}
