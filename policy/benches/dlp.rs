//! DLP scan throughput on 1 MiB of clean JSON-ish text and on 1 MiB dense with matches, three
//! ways side by side in one run: our streaming scanner (all built-in detectors, action
//! `record`), the same scanner with the position filter it had before the block prefilter
//! (`reference_scanner`: same findings, the old speed), and a naive baseline (the built-in
//! patterns as one `regex::bytes::RegexSet` pass, then `Regex::find_iter` for each pattern that
//! matched). Before criterion's own runs it prints the three throughputs, measured interleaved
//! (the best of 60 alternating runs each, so that load from elsewhere hits all three alike),
//! and the ratios of ours to the others.
//!
//! `cargo bench -p portcullis-policy --bench dlp`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_policy::{BodyDirection, BuiltinDetector, DlpAction, DlpPolicy, DlpSpec};
use regex::bytes::{Regex, RegexSet};

const BODY_LEN: usize = 1 << 20;
/// The gateway sees bodies in chunks of about this size.
const CHUNK: usize = 16 * 1024;

const WORDS: &[&str] = &[
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "order",
    "shipped",
    "customer",
    "invoice",
    "account",
    "balance",
    "payment",
    "service",
    "request",
    "response",
    "gateway",
    "tenant",
    "policy",
    "Portcullis",
    "London",
    "Berlin",
    "status",
    "pending",
    "approved",
    "with",
    "and",
    "for",
    "from",
    "about",
    "within",
    "delivery",
    "address",
    "street",
    "number",
    "bearer",
    "secret",
    "token",
    "example",
    "value",
    "description",
    "large",
    "small",
    "green",
    "blue",
];

const SECRETS: &[&str] = &[
    "4111 1111 1111 1111",
    "5555555555554444",
    "378282246310005",
    "123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "ghp_A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3",
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
    "Bearer abcdefghijklmnopqrstuvwxyz0123456789",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN PRIVATE KEY-----\\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+LQmlQ\\n-----END PRIVATE KEY-----",
];

/// A small deterministic generator (xorshift), so both corpora are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// JSON records of English-ish text; with `dense`, a secret in every record (~every 150 bytes).
fn corpus(dense: bool) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::with_capacity(BODY_LEN + 1024);
    let mut id = 0u64;
    while out.len() < BODY_LEN {
        id += 1;
        let words: Vec<&str> = (0..8 + rng.next() % 12).map(|_| rng.pick(WORDS)).collect();
        let note = if dense {
            format!(
                "{} {} {}",
                words[..4].join(" "),
                rng.pick(SECRETS),
                words[4..].join(" ")
            )
        } else {
            words.join(" ")
        };
        out.push_str(&format!(
            "{{\"id\": {id}, \"amount\": {}.{:02}, \"city\": \"{}\", \"note\": \"{note}\"}},\n",
            rng.next() % 10_000,
            rng.next() % 100,
            rng.pick(WORDS),
        ));
    }
    out.truncate(BODY_LEN);
    out.into_bytes()
}

fn all_builtins_record() -> DlpPolicy {
    let mut spec = DlpSpec::default();
    for d in BuiltinDetector::ALL {
        spec.request.insert(d, DlpAction::Record);
    }
    DlpPolicy::new(&spec).expect("the built-in spec is valid")
}

/// Streams `body` through a fresh scanner in gateway-sized chunks; returns the match count.
fn ours(policy: &DlpPolicy, body: &[u8]) -> u64 {
    stream(policy.scanner(BodyDirection::Request), body)
}

/// The same with the position filter scanners had before the block prefilter.
fn old(policy: &DlpPolicy, body: &[u8]) -> u64 {
    stream(policy.reference_scanner(BodyDirection::Request), body)
}

fn stream(mut scanner: portcullis_policy::Scanner, body: &[u8]) -> u64 {
    let mut released = 0;
    for chunk in body.chunks(CHUNK) {
        released += scanner.push(chunk).map_or(0, |out| out.len());
    }
    released += scanner.finish().map_or(0, |out| out.len());
    black_box(released);
    scanner.findings().total()
}

/// The built-in detectors as plain regular expressions, without validation.
const BASELINE_PATTERNS: &[&str] = &[
    r"\b(?:[0-9][ -]?){12,18}[0-9]\b",
    r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
    r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
    r"-----BEGIN (?:RSA |EC |ENCRYPTED |OPENSSH )?PRIVATE KEY-----",
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    r"(?i:secret)[^\n]{0,40}?[^A-Za-z0-9/+][A-Za-z0-9/+]{40}\b",
    r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b",
    r"\bxox[baprs]-[A-Za-z0-9-]{10,}",
    r"(?i:\bbearer)[ \t]+[A-Za-z0-9._~+/=-]{20,}",
    r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
];

struct Baseline {
    set: RegexSet,
    each: Vec<Regex>,
}

impl Baseline {
    fn new() -> Self {
        Baseline {
            set: RegexSet::new(BASELINE_PATTERNS).expect("baseline patterns compile"),
            each: BASELINE_PATTERNS
                .iter()
                .map(|p| Regex::new(p).expect("baseline pattern compiles"))
                .collect(),
        }
    }

    fn count(&self, body: &[u8]) -> u64 {
        self.set
            .matches(body)
            .iter()
            .map(|i| self.each[i].find_iter(body).count() as u64)
            .sum()
    }
}

/// One way of scanning a body, returning its match count.
type Scan<'a> = &'a dyn Fn(&[u8]) -> u64;

/// MiB/s of each scan over `body`: the best of `rounds` alternating runs (the run least
/// disturbed by other load on the machine; the rounds alternate so that all scans see alike).
fn interleaved(body: &[u8], scans: &[Scan<'_>], rounds: usize) -> Vec<f64> {
    let mut best = vec![f64::MAX; scans.len()];
    for _ in 0..rounds {
        for (scan, best) in scans.iter().zip(&mut best) {
            let start = Instant::now();
            black_box(scan(black_box(body)));
            *best = best.min(start.elapsed().as_secs_f64());
        }
    }
    best.into_iter()
        .map(|t| body.len() as f64 / t / f64::from(1 << 20))
        .collect()
}

fn scan_throughput(c: &mut Criterion) {
    let policy = all_builtins_record();
    let baseline = Baseline::new();
    for (name, body) in [("clean", corpus(false)), ("dense", corpus(true))] {
        let found = (ours(&policy, &body), old(&policy, &body));
        assert_eq!(found.0, found.1, "{name}: the new and old filters disagree");
        let mibs = interleaved(
            &body,
            &[&|b| ours(&policy, b), &|b| old(&policy, b), &|b| {
                baseline.count(b)
            }],
            60,
        );
        eprintln!(
            "{name}: ours {:.0} MiB/s, old filter {:.0} MiB/s, RegexSet {:.0} MiB/s; \
             ours/old {:.2}x, ours/RegexSet {:.2}x ({} matches; RegexSet {})",
            mibs[0],
            mibs[1],
            mibs[2],
            mibs[0] / mibs[1],
            mibs[0] / mibs[2],
            found.0,
            baseline.count(&body),
        );
    }
    let mut group = c.benchmark_group("dlp_scan_1MiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(BODY_LEN as u64));
    for (name, body) in [("clean", corpus(false)), ("dense", corpus(true))] {
        group.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| ours(&policy, black_box(&body)))
        });
        group.bench_function(format!("old/{name}"), |b| {
            b.iter(|| old(&policy, black_box(&body)))
        });
        group.bench_function(format!("baseline/{name}"), |b| {
            b.iter(|| baseline.count(black_box(&body)))
        });
    }
    group.finish();
}

criterion_group!(benches, scan_throughput);
criterion_main!(benches);
