//! Recovery on open: torn tails are cut and recorded, the chain continues; damage that is not a
//! torn tail is refused; `kill -9` loses no acknowledged record.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use portcullis_audit::{query, verify_dir, AuditError, AuditLog, QueryFilter, RecordKind};

fn append_bytes(path: &std::path::Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn truncations(t: &TestLog) -> Vec<portcullis_audit::Truncation> {
    query(t.path(), QueryFilter::default())
        .unwrap()
        .map(Result::unwrap)
        .filter_map(|r| match r.kind {
            RecordKind::Truncation(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn torn_tail_is_cut(tail: &[u8]) {
    let t = TestLog::new();
    fill(&t, t.config(), 100);
    let before = verify_dir(t.path(), &t.key()).unwrap();
    let seg = segments(t.path()).pop().unwrap();
    append_bytes(&seg, tail);
    assert!(verify_dir(t.path(), &t.key()).is_err());
    // Reopen: the tail is cut, recorded, and the chain continues.
    let log = t.open(t.config());
    log.handle().append_durable(request(1000)).unwrap();
    log.close();
    let after = verify_dir(t.path(), &t.key()).unwrap();
    let cuts = truncations(&t);
    assert_eq!(cuts.len(), 1);
    assert_eq!(cuts[0].bytes, tail.len() as u64);
    assert_eq!(cuts[0].from_seq, before.last_seq.unwrap() + 1);
    let saved = t.path().join(cuts[0].saved_as.as_ref().unwrap());
    assert_eq!(std::fs::read(saved).unwrap(), tail);
    // Before + truncation + one request + final checkpoint.
    assert_eq!(after.records, before.records + 3);
    assert_eq!(after.truncations, 1);
    let reqs = query(t.path(), QueryFilter::default())
        .unwrap()
        .filter(|r| matches!(r.as_ref().unwrap().kind, RecordKind::Request(_)))
        .count();
    assert_eq!(reqs, 101);
}

#[test]
fn half_line_is_cut() {
    let t = TestLog::new();
    fill(&t, t.config(), 3);
    let seg = segments(t.path()).pop().unwrap();
    let line = read_lines(&seg)[1].clone();
    torn_tail_is_cut(&line.as_bytes()[..line.len() / 2]);
}

#[test]
fn garbage_line_is_cut() {
    torn_tail_is_cut(b"{\"v\":1,\"seq\":garbage}\n");
}

#[test]
fn zero_filled_blocks_are_cut() {
    torn_tail_is_cut(&[0u8; 4096]);
}

#[test]
fn valid_records_after_a_bad_one_are_not_cut() {
    let t = TestLog::new();
    fill(&t, t.config(), 20);
    let seg = segments(t.path()).pop().unwrap();
    let mut lines = read_lines(&seg);
    lines[5] = lines[5].replace("req-5", "req-X");
    write_lines(&seg, &lines);
    let before = std::fs::read(&seg).unwrap();
    match AuditLog::open(t.config(), t.signer.clone()) {
        Err(AuditError::Corrupt { line, .. }) => assert_eq!(line, 6),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        before,
        "evidence left untouched"
    );
}

#[test]
fn empty_new_segment_after_a_roll_continues_the_chain() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.segment_bytes = 4096;
    fill(&t, cfg.clone(), 40);
    // A crash right after creating the next segment leaves it empty.
    let next = verify_dir(t.path(), &t.key()).unwrap().last_seq.unwrap() + 1;
    std::fs::write(t.path().join(format!("segment-{next:020}.log")), b"").unwrap();
    fill(&t, cfg, 5);
    verify_dir(t.path(), &t.key()).unwrap();
}

/// Child side of `kill_9_loses_no_acknowledged_record`: appends durably forever, printing each
/// acknowledged seq, until killed.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var("AUDIT_CHILD_DIR") else {
        return;
    };
    let signer = std::sync::Arc::new(
        portcullis_audit::SoftwareSigner::load_or_create(std::path::Path::new(
            &std::env::var("AUDIT_CHILD_KEY").unwrap(),
        ))
        .unwrap(),
    );
    let mut cfg = portcullis_audit::AuditConfig::new(&dir, "node-1");
    cfg.segment_bytes = 64 << 10;
    let log = AuditLog::open(cfg, signer).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|p| {
            let h = log.handle();
            std::thread::spawn(move || {
                let mut out = std::io::stdout();
                for i in 0.. {
                    let d = h.append_durable(request(p * 1_000_000 + i)).unwrap();
                    writeln!(out, "acked {}", d.seq).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn kill_9_loses_no_acknowledged_record() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env("AUDIT_CHILD_DIR", &dir)
            .env("AUDIT_CHILD_KEY", root.path().join("key"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        for line in out.lines() {
            let Ok(line) = line else { break };
            if let Some(seq) = line.strip_prefix("acked ") {
                acked.push(seq.parse::<u64>().unwrap());
                if acked.len() == 3000 {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        child.wait().unwrap();
        assert_eq!(
            acked.len(),
            3000,
            "round {round}: the child acknowledged records"
        );
        // Reopen (recovering any torn tail), then every acknowledged seq is a request record.
        let key_signer =
            portcullis_audit::SoftwareSigner::load_or_create(&root.path().join("key")).unwrap();
        let key = portcullis_audit::PublicKey::from_spki_der(
            &portcullis_audit::Signer::public_key_der(&key_signer),
        )
        .unwrap();
        let log = AuditLog::open(
            portcullis_audit::AuditConfig::new(&dir, "node-1"),
            std::sync::Arc::new(key_signer),
        )
        .unwrap();
        log.close();
        verify_dir(&dir, &key).unwrap();
        let all: Vec<_> = query(&dir, QueryFilter::default())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for seq in &acked {
            let r = &all[*seq as usize];
            assert_eq!(r.seq, *seq);
            assert!(
                matches!(r.kind, RecordKind::Request(_)),
                "round {round}: seq {seq} lost"
            );
        }
    }
}
