//! The audit log verifier (`verify_dir`, which reads segment files line by line, checks each
//! line's hash, parses records and checks the chain and signatures) on fuzzed segment files.
//! Three shapes, chosen by the first byte:
//!
//! - raw bytes, cut into one to three segment files;
//! - sealed lines: each line ending in `}` gets a correct hash member appended and `@prev`
//!   replaced by the previous line's hash, so the chain, checkpoint and retention logic is
//!   reached rather than every line failing its hash (a line `--segment--` starts a new file);
//! - tampering: in-place byte edits to a real log written by `AuditLog` (with checkpoints and
//!   a retention record).
//!
//! Properties: never a panic and never an I/O error; a passing report counts every line of
//! every file; a failure names one of the files and a line in it. Tampering is always detected,
//! and named at the line holding the first edited byte.

#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portcullis_audit::{
    verify_dir, AuditConfig, AuditLog, PublicKey, RequestEvent, Signer, SoftwareSigner, VerifyError,
};

const HASH_MEMBER: &[u8] = b",\"hash\":\"";

struct Fixture {
    key: PublicKey,
    /// The real log's segment files: (name, bytes), oldest first.
    segments: Vec<(String, Vec<u8>)>,
    /// Where each iteration writes its segment files.
    work: PathBuf,
    _dirs: [tempfile::TempDir; 2],
}

fn tempdir() -> tempfile::TempDir {
    // tmpfs when there is one: each iteration writes files.
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory")
}

fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            (name.starts_with("segment-") && name.ends_with(".log"))
                .then(|| (name, fs::read(&p).expect("segment")))
        })
        .collect();
    out.sort();
    out
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let signer = Arc::new(SoftwareSigner::generate().expect("a key"));
        let key = PublicKey::from_spki_der(&signer.public_key_der()).expect("public key");
        let log_dir = tempdir();
        let mut cfg = AuditConfig::new(log_dir.path(), "fuzz-1");
        cfg.segment_bytes = 4096;
        cfg.checkpoint_every = 5;
        cfg.durable_timeout = Duration::from_secs(10);
        let log = AuditLog::open(cfg, signer).expect("open the log");
        let audit = log.handle();
        let request = |i: u64| RequestEvent {
            request_id: format!("req-{i}"),
            method: "GET".into(),
            path: format!("/v1/items/{i}"),
            status: 200,
            ..Default::default()
        };
        for i in 0..30 {
            audit.append_durable(request(i)).expect("append");
        }
        // Delete the older segments: what remains starts after seq 0, anchored by retention.
        audit
            .apply_retention(Duration::ZERO, None, Duration::from_secs(10))
            .expect("retention");
        for i in 30..40 {
            audit.append_durable(request(i)).expect("append");
        }
        log.close();
        let segments = segment_files(log_dir.path());
        let report = verify_dir(log_dir.path(), &key).expect("the untouched log verifies");
        assert!(
            report.anchored_by.is_some() && report.checkpoints > 0,
            "{report:?}"
        );
        let work = tempdir();
        Fixture {
            key,
            segments,
            work: work.path().to_path_buf(),
            _dirs: [log_dir, work],
        }
    })
}

/// Replaces the work directory's segment files with `segments`.
fn write_segments(work: &Path, segments: &[(String, Vec<u8>)]) {
    for entry in fs::read_dir(work).expect("work dir") {
        fs::remove_file(entry.expect("entry").path()).expect("remove");
    }
    for (name, bytes) in segments {
        fs::write(work.join(name), bytes).expect("write segment");
    }
}

fn name(i: usize) -> String {
    format!("segment-{:020}.log", i * 1000)
}

/// Raw bytes cut into up to three files at fuzzer-chosen points.
fn raw_segments(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let Some((&n, rest)) = data.split_first() else {
        return vec![(name(0), Vec::new())];
    };
    let n = usize::from(n % 3);
    let (cuts, body) = rest.split_at(rest.len().min(2 * n));
    let mut cuts: Vec<usize> = cuts
        .chunks(2)
        .map(|c| usize::from(c[0]) << 8 | usize::from(c.get(1).copied().unwrap_or(0)))
        .map(|c| c % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for (i, to) in cuts.into_iter().chain([body.len()]).enumerate() {
        out.push((name(i), body[from..to].to_vec()));
        from = to;
    }
    out
}

/// Sealed lines: hash members computed here, `@prev` chained to the previous line's hash.
fn sealed_segments(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(name(0), Vec::new())];
    let mut prev = portcullis_audit::GENESIS_HASH.to_owned();
    for line in data.split_inclusive(|b| *b == b'\n') {
        let (body, newline) = match line.strip_suffix(b"\n") {
            Some(b) => (b, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        if body == b"--segment--" && out.len() < 3 {
            out.push((name(out.len()), Vec::new()));
            continue;
        }
        let body = replace(body, b"@prev", prev.as_bytes());
        let mut sealed = body.clone();
        if body.ends_with(b"}") {
            let hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, &body));
            sealed.pop();
            sealed.extend_from_slice(HASH_MEMBER);
            sealed.extend_from_slice(hash.as_bytes());
            sealed.extend_from_slice(b"\"}");
            prev = hash;
        }
        let file = &mut out.last_mut().expect("a segment").1;
        file.extend_from_slice(&sealed);
        file.extend_from_slice(newline);
    }
    out
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// The real log with byte edits: [offset high] [offset low] [xor] repeated, offsets over the
/// concatenated files. Returns the files and, if anything changed, the first changed byte as
/// (file index, 1-based line).
fn tampered_segments(
    fixture: &Fixture,
    data: &[u8],
) -> (Vec<(String, Vec<u8>)>, Option<(usize, u64)>) {
    let mut segments = fixture.segments.clone();
    let total: usize = segments.iter().map(|s| s.1.len()).sum();
    for edit in data.chunks_exact(3) {
        let mut at = (usize::from(edit[0]) << 8 | usize::from(edit[1])) % total;
        for (_, bytes) in &mut segments {
            if at < bytes.len() {
                bytes[at] ^= edit[2];
                break;
            }
            at -= bytes.len();
        }
    }
    let first =
        segments
            .iter()
            .zip(&fixture.segments)
            .enumerate()
            .find_map(|(i, ((_, now), (_, was)))| {
                let at = now.iter().zip(was).position(|(a, b)| a != b)?;
                let line = 1 + was[..at].iter().filter(|b| **b == b'\n').count() as u64;
                Some((i, line))
            });
    (segments, first)
}

fn lines(bytes: &[u8]) -> u64 {
    bytes.split_inclusive(|b| *b == b'\n').count() as u64
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (segments, tampered) = match mode % 3 {
        0 => (raw_segments(rest), None),
        1 => (sealed_segments(rest), None),
        _ => {
            let (segments, first) = tampered_segments(fixture, rest);
            (segments, Some(first))
        }
    };
    write_segments(&fixture.work, &segments);
    let result = verify_dir(&fixture.work, &fixture.key);
    match &result {
        Ok(report) => {
            assert_eq!(report.segments, segments.len());
            let total: u64 = segments.iter().map(|s| lines(&s.1)).sum();
            assert_eq!(report.records, total, "{report:?}");
        }
        Err(VerifyError::Bad(bad)) => {
            let Some(file) = segments.iter().position(|s| s.0 == bad.segment) else {
                panic!("names a file that is not there: {bad}");
            };
            let n = lines(&segments[file].1);
            assert!(
                bad.line >= 1 && bad.line <= n,
                "line {} of {n}: {bad}",
                bad.line
            );
            let _ = bad.to_string();
        }
        Err(e) => panic!("not a verdict on the records: {e}"),
    }
    match tampered {
        Some(None) => assert!(result.is_ok(), "the untouched log fails: {result:?}"),
        Some(Some((file, line))) => match &result {
            Err(VerifyError::Bad(bad)) => assert_eq!(
                (bad.segment.as_str(), bad.line),
                (segments[file].0.as_str(), line),
                "{bad}"
            ),
            other => panic!("an edit at {file}:{line} was not detected: {other:?}"),
        },
        None => {}
    }
});
