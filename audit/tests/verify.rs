//! `verify_dir` passes on an untouched log and names the first bad record after each kind of
//! tampering; `verify_dir_expecting` also names a log cut off at its end.

mod common;

use common::*;
use portcullis_audit::{
    verify_dir, verify_dir_expecting, AuditHead, BadRecord, HeadTracker, Problem, VerifyError,
};

fn small_log(n: u64) -> TestLog {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.checkpoint_every = 10;
    fill(&t, cfg, n);
    t
}

fn bad(t: &TestLog) -> BadRecord {
    match verify_dir(t.path(), &t.key()) {
        Err(VerifyError::Bad(b)) => *b,
        other => panic!("expected a bad record, got {other:?}"),
    }
}

fn only_segment(t: &TestLog) -> std::path::PathBuf {
    let segs = segments(t.path());
    assert_eq!(segs.len(), 1);
    segs[0].clone()
}

/// Rewrites `prev_hash` (and a checkpoint's `chain_hash`) and `hash` from line `from` on, as an
/// attacker without the signing key would.
fn rechain(lines: &mut [String], from: usize) {
    for i in from..lines.len() {
        let prev = hash_of(&lines[i - 1]);
        let v: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
        let old_prev = v["prev_hash"].as_str().unwrap().to_string();
        let mut l = lines[i].replace(
            &format!("\"prev_hash\":\"{old_prev}\""),
            &format!("\"prev_hash\":\"{prev}\""),
        );
        l = l.replace(
            &format!("\"chain_hash\":\"{old_prev}\""),
            &format!("\"chain_hash\":\"{prev}\""),
        );
        lines[i] = rehash(&l);
    }
}

#[test]
fn untouched_log_verifies() {
    let t = small_log(50);
    let r = verify_dir(t.path(), &t.key()).unwrap();
    // 50 requests + a checkpoint every 10 records + the final one on close.
    assert_eq!(r.records, 55);
    assert_eq!(r.first_seq, Some(0));
    assert_eq!(r.last_seq, Some(54));
    assert_eq!(r.checkpoints, 5);
    assert_eq!(r.unsigned_tail, 0);
    let lines = read_lines(&only_segment(&t));
    assert_eq!(r.last_hash, hash_of(lines.last().unwrap()));
}

#[test]
fn edited_field_is_named() {
    let t = small_log(30);
    let seg = only_segment(&t);
    let mut lines = read_lines(&seg);
    assert_eq!(seq_of(&lines[5]), 5);
    lines[5] = lines[5].replace("\"status\":403", "\"status\":200");
    write_lines(&seg, &lines);
    let b = bad(&t);
    assert_eq!(
        (b.problem, b.line, b.seq),
        (Problem::Edited, 6, Some(5)),
        "{b}"
    );
    assert!(b.segment.starts_with("segment-"));
}

#[test]
fn edited_and_rehashed_record_is_named() {
    let t = small_log(30);
    let seg = only_segment(&t);
    let mut lines = read_lines(&seg);
    lines[5] = rehash(&lines[5].replace("\"status\":403", "\"status\":200"));
    write_lines(&seg, &lines);
    let b = bad(&t);
    assert_eq!(
        (b.problem, b.line, b.seq),
        (Problem::Edited, 6, Some(5)),
        "{b}"
    );
}

#[test]
fn rewritten_chain_fails_at_the_next_checkpoint() {
    let t = small_log(30);
    let seg = only_segment(&t);
    let mut lines = read_lines(&seg);
    lines[12] = lines[12].replace("\"status\":200", "\"status\":500");
    lines[12] = rehash(&lines[12]);
    rechain(&mut lines, 13);
    write_lines(&seg, &lines);
    let b = bad(&t);
    assert_eq!(kind_of(&lines[(b.line - 1) as usize]), "checkpoint");
    assert_eq!((b.problem, b.seq), (Problem::BadSignature, Some(21)), "{b}");
}

#[test]
fn deleted_line_is_named() {
    let t = small_log(30);
    let seg = only_segment(&t);
    let mut lines = read_lines(&seg);
    lines.remove(5);
    write_lines(&seg, &lines);
    let b = bad(&t);
    assert_eq!(
        (b.problem, b.line, b.seq),
        (Problem::Removed, 6, Some(6)),
        "{b}"
    );
}

#[test]
fn swapped_lines_are_named() {
    let t = small_log(30);
    let seg = only_segment(&t);
    let mut lines = read_lines(&seg);
    lines.swap(5, 6);
    write_lines(&seg, &lines);
    let b = bad(&t);
    assert_eq!(
        (b.problem, b.line, b.seq),
        (Problem::Reordered, 6, Some(6)),
        "{b}"
    );
}

#[test]
fn inserted_forged_line_is_named() {
    let t = small_log(30);
    let seg = only_segment(&t);
    let mut lines = read_lines(&seg);
    // A well-formed forgery: takes seq 5's place, chains to seq 4, correct hash.
    let forged = rehash(&lines[5].replace("req-5", "req-forged"));
    lines.insert(5, forged);
    write_lines(&seg, &lines);
    let b = bad(&t);
    assert_eq!(
        (b.problem, b.line, b.seq),
        (Problem::Inserted, 6, Some(5)),
        "{b}"
    );
}

#[test]
fn inserted_line_with_a_new_seq_is_named() {
    let t = small_log(30);
    let seg = only_segment(&t);
    let mut lines = read_lines(&seg);
    let forged = rehash(&lines[5].replace("\"seq\":5,", "\"seq\":999,"));
    lines.insert(5, forged);
    write_lines(&seg, &lines);
    let b = bad(&t);
    assert_eq!(
        (b.problem, b.line, b.seq),
        (Problem::Inserted, 6, Some(999)),
        "{b}"
    );
}

#[test]
fn corrupt_checkpoint_signature_is_named() {
    let t = small_log(30);
    let seg = only_segment(&t);
    let mut lines = read_lines(&seg);
    let last = lines.len() - 1;
    assert_eq!(kind_of(&lines[last]), "checkpoint");
    let v: serde_json::Value = serde_json::from_str(&lines[last]).unwrap();
    let sig = v["event"]["signature"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    lines[last] = rehash(&lines[last].replace(&sig, &flipped));
    write_lines(&seg, &lines);
    let b = bad(&t);
    assert_eq!(
        (b.problem, b.line, b.seq),
        (Problem::BadSignature, last as u64 + 1, Some(last as u64)),
        "{b}"
    );
}

#[test]
fn wrong_key_is_refused() {
    let t = small_log(12);
    let other = TestLog::new();
    match verify_dir(t.path(), &other.key()) {
        Err(VerifyError::Bad(b)) => assert_eq!(b.problem, Problem::BadSignature),
        other => panic!("expected a bad signature, got {other:?}"),
    }
}

#[test]
fn removed_segment_is_named() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.segment_bytes = 4096;
    fill(&t, cfg, 200);
    assert!(verify_dir(t.path(), &t.key()).is_ok());
    let segs = segments(t.path());
    assert!(segs.len() >= 4, "{segs:?}");
    let first_after = seq_of(&read_lines(&segs[2])[0]);
    std::fs::remove_file(&segs[1]).unwrap();
    let b = bad(&t);
    assert_eq!(
        (b.problem, b.line, b.seq),
        (Problem::Removed, 1, Some(first_after)),
        "{b}"
    );
    assert_eq!(b.segment, segs[2].file_name().unwrap().to_str().unwrap());
}

#[test]
fn removed_first_segment_without_retention_is_named() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.segment_bytes = 4096;
    fill(&t, cfg, 100);
    let segs = segments(t.path());
    std::fs::remove_file(&segs[0]).unwrap();
    let b = bad(&t);
    assert_eq!((b.problem, b.line), (Problem::Removed, 1), "{b}");
}

/// Found by the `audit_segment` fuzz target: a record claiming the largest sequence number,
/// followed by another, overflowed the verifier (a panic in debug builds, a wrap to seq 0 in
/// release). It is a bad record now, named, and nothing panics.
#[test]
fn a_record_claiming_the_last_sequence_number_cannot_be_followed() {
    let t = small_log(8);
    let seg = only_segment(&t);
    let mut lines = read_lines(&seg);
    // The log now starts at the last possible seq, and the next record chains to it.
    lines[0] = rehash(&lines[0].replace("\"seq\":0,", &format!("\"seq\":{},", u64::MAX)));
    rechain(&mut lines, 1);
    write_lines(&seg, &lines);
    let b = bad(&t);
    assert_eq!(b.line, 2, "{b}");
}

fn last_head(t: &TestLog) -> AuditHead {
    HeadTracker::new(t.path(), None)
        .unwrap()
        .poll()
        .unwrap()
        .expect("the log has a checkpoint")
}

/// The attack of issue 11: whole trailing segments deleted, signed checkpoints and all. The log
/// alone still verifies; against its head published elsewhere it does not.
#[test]
fn deleting_the_last_segments_is_named_by_the_expected_head() {
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.checkpoint_every = 10;
    cfg.segment_bytes = 4096;
    fill(&t, cfg, 100);
    let head = last_head(&t);
    let whole = verify_dir_expecting(t.path(), &t.key(), &head).unwrap();
    assert_eq!(whole.matched_head, Some(head.seq));
    assert_eq!(
        whole.last_seq,
        Some(head.seq),
        "the final checkpoint is the head"
    );

    let segs = segments(t.path());
    assert!(segs.len() >= 4, "{} segments", segs.len());
    for seg in &segs[segs.len() - 2..] {
        std::fs::remove_file(seg).unwrap();
    }
    let cut = verify_dir(t.path(), &t.key()).expect("the log alone cannot tell");
    let last = cut.last_seq.unwrap();
    assert!(last < head.seq);
    let err = verify_dir_expecting(t.path(), &t.key(), &head).unwrap_err();
    assert!(matches!(err, VerifyError::Truncated { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "log ends at seq {last}; expected head seq {} (hash {}): records {}..={} missing — truncated?",
            head.seq,
            head.hash,
            last + 1,
            head.seq
        )
    );
}

#[test]
fn an_expected_head_must_be_this_log_s_and_signed() {
    let t = small_log(30);
    // Another log signed with the same key, as long: its head has the same seq, another hash.
    let other = TestLog {
        dir: tempfile::tempdir().unwrap(),
        signer: t.signer.clone(),
    };
    let mut cfg = other.config();
    cfg.checkpoint_every = 10;
    fill(&other, cfg, 30);
    let (mine, theirs) = (last_head(&t), last_head(&other));
    assert_eq!(mine.seq, theirs.seq);
    let err = verify_dir_expecting(t.path(), &t.key(), &theirs).unwrap_err();
    assert!(matches!(err, VerifyError::HeadMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&theirs.hash), "{err}");

    // A head claiming a later seq, hashed again but not signed by the key: refused as a head.
    let forged = rehash(&mine.line.replace(
        &format!("\"seq\":{}", mine.seq),
        &format!("\"seq\":{}", mine.seq + 1000),
    ));
    let head = AuditHead::parse(&forged).unwrap();
    let err = verify_dir_expecting(t.path(), &t.key(), &head).unwrap_err();
    assert!(matches!(err, VerifyError::BadHead(_)), "{err:?}");
    // Not a record at all, or not a checkpoint.
    assert!(AuditHead::parse("{}").is_err());
    let first = read_lines(&only_segment(&t))[0].clone();
    assert!(AuditHead::parse(&first)
        .unwrap_err()
        .contains("not a checkpoint"));
}
