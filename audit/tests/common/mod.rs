//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_audit::{
    AuditConfig, AuditLog, Decision, PublicKey, RequestEvent, Signer, SoftwareSigner,
};

pub struct TestLog {
    pub dir: tempfile::TempDir,
    pub signer: Arc<SoftwareSigner>,
}

impl TestLog {
    pub fn new() -> Self {
        TestLog {
            dir: tempfile::tempdir().unwrap(),
            signer: Arc::new(SoftwareSigner::generate().unwrap()),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> AuditConfig {
        let mut c = AuditConfig::new(self.dir.path(), "node-1");
        c.durable_timeout = Duration::from_secs(10);
        c
    }

    pub fn open(&self, cfg: AuditConfig) -> AuditLog {
        AuditLog::open(cfg, self.signer.clone()).unwrap()
    }

    pub fn key(&self) -> PublicKey {
        PublicKey::from_spki_der(&self.signer.public_key_der()).unwrap()
    }
}

pub fn request(i: u64) -> RequestEvent {
    RequestEvent {
        request_id: format!("req-{i}"),
        trace_id: Some(format!("{i:032x}")),
        tenant: Some(
            if i.is_multiple_of(2) {
                "acme"
            } else {
                "globex"
            }
            .into(),
        ),
        route: Some("api".into()),
        identity: Some(format!("spiffe://acme.test/svc/{}", i % 3)),
        source: "127.0.0.1:40000".into(),
        method: "GET".into(),
        host: "api.acme.test".into(),
        path: "/v1/items".into(),
        status: if i.is_multiple_of(5) { 403 } else { 200 },
        bytes_in: 10,
        bytes_out: 200,
        duration_ms: 3,
        decision: if i.is_multiple_of(5) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        rule: Some("r1".into()),
        tls_version: Some("TLSv1.3".into()),
        upstream: Some("127.0.0.1:9000".into()),
        ..Default::default()
    }
}

/// Segment files of a log directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with("segment-") && n.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(path, s).unwrap();
}

/// Recomputes a line's hash the documented way: SHA-256 of the line without the hash member.
pub fn rehash(line: &str) -> String {
    let cut = line.rfind(",\"hash\":\"").unwrap();
    let body = format!("{}}}", &line[..cut]);
    let h = hex::encode(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()));
    format!("{},\"hash\":\"{h}\"}}", &line[..cut])
}

pub fn hash_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["hash"].as_str().unwrap().to_string()
}

pub fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}

pub fn kind_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["kind"].as_str().unwrap().to_string()
}

/// Writes `n` request records durably and closes the log (which appends a final checkpoint).
pub fn fill(t: &TestLog, cfg: AuditConfig, n: u64) {
    let log = t.open(cfg);
    let h = log.handle();
    for i in 0..n {
        h.append_durable(request(i)).unwrap();
    }
    log.close();
}

/// Makes all but the newest `except_last` segments three days old (for retention).
pub fn age_segments(dir: &std::path::Path, except_last: usize) {
    let segs = segments(dir);
    let old = SystemTime::now() - Duration::from_secs(3 * 86400);
    for p in &segs[..segs.len() - except_last] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}
