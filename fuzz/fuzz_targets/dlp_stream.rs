//! The DLP scanner, whole body against the same body streamed in fuzzer-chosen chunks.
//!
//! Policies come from config (`Config::from_yaml`, then the route's
//! `inspection.policy.scanner(direction)`, as the gateway gets them): every built-in detector
//! plus a tenant pattern and a keyword list, once redacting, once recording, once with some
//! detectors blocking. Streaming must be exact: the same counts per detector, byte-identical
//! released output (the input itself when nothing redacts), the same blocking detector; and the
//! scanner never holds back more than `max_hold_back`.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_policy::{BodyDirection, Config, DetectorKind, DlpPolicy, Findings};

const DETECTORS: &[&str] = &[
    "card_number",
    "us_ssn",
    "iban",
    "private_key",
    "aws_access_key_id",
    "aws_secret_key",
    "github_token",
    "slack_token",
    "bearer_token",
    "jwt",
];

/// Tenants `redact`, `record` and `block`: all built-ins with that action (`block` blocks
/// some and records the rest), a tenant pattern and a keyword list.
fn config_yaml() -> String {
    let mut y = String::from(
        "listeners:\n  - name: l\n    address: 0.0.0.0:443\n    tls: {certificate: c, private_key: k, client_ca: ca}\n\
         upstreams:\n  - name: app\n    targets: [127.0.0.1:8080]\ntenants:\n",
    );
    for tenant in ["redact", "record", "block"] {
        let action = |i: usize| match tenant {
            "block" if i % 3 == 1 => "block",
            "block" => "record",
            other => other,
        };
        let builtins: Vec<String> = DETECTORS
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{d}: {}", action(i)))
            .collect();
        y += &format!(
            "  - name: {tenant}\n    dlp:\n      request: {{ {} }}\n      response: {{ {} }}\n      custom:\n        - {{ name: employee-id, pattern: '\\bEMP-[0-9]{{6}}\\b', action: {}, direction: both }}\n        - {{ name: ticket, pattern: 'TKT-[A-Z]{{2,8}}-[0-9]{{1,8}}', action: {}, direction: request }}\n      keywords:\n        - {{ name: codename, words: [bluebird, nightjar, 'project x'], action: {} }}\n    routes:\n      - name: r\n        path_prefix: /\n        host: {tenant}.example.org\n        upstream: app\n        access: [ {{ id: anyone }} ]\n",
            builtins.join(", "),
            builtins.join(", "),
            action(0),
            action(1),
            action(2),
        );
    }
    y
}

fn policies() -> &'static [DlpPolicy; 3] {
    static POLICIES: OnceLock<[DlpPolicy; 3]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let yaml = config_yaml();
        let config = Config::from_yaml(&yaml, Path::new("/fuzz/config.yaml"))
            .unwrap_or_else(|e| panic!("the fixed config loads: {e}\n{yaml}"));
        let policy = |tenant: &str| {
            let route = config
                .routes
                .iter()
                .find(|r| r.tenant.as_str() == tenant)
                .expect("route");
            route.inspection.as_ref().expect("DLP").policy.clone()
        };
        [policy("redact"), policy("record"), policy("block")]
    })
}

#[derive(Debug, PartialEq)]
struct Outcome {
    released: Vec<u8>,
    blocked: Option<DetectorKind>,
    findings: Findings,
}

/// Scans `body` in chunks ending at `cuts` (sorted), then finishes.
fn scan(policy: &DlpPolicy, direction: BodyDirection, body: &[u8], cuts: &[usize]) -> Outcome {
    let mut scanner = policy.scanner(direction);
    let mut released = Vec::new();
    let mut from = 0;
    let mut blocked = None;
    for &to in cuts.iter().chain([&body.len()]) {
        match scanner.push(&body[from..to]) {
            Ok(out) => released.extend(out),
            Err(b) => {
                blocked = Some(b.detector);
                break;
            }
        }
        assert!(
            scanner.held_back() <= policy.max_hold_back(),
            "held back {} > {}",
            scanner.held_back(),
            policy.max_hold_back()
        );
        from = to;
    }
    if blocked.is_none() {
        match scanner.finish() {
            Ok(out) => released.extend(out),
            Err(b) => blocked = Some(b.detector),
        }
    }
    if blocked.is_none() {
        assert_eq!(scanner.held_back(), 0, "bytes left after finish");
    }
    Outcome {
        released,
        blocked,
        findings: scanner.findings().clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    // Layout: [policy and direction] [number of cuts] [cuts, 2 bytes each] body...
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((&ncuts, rest)) = rest.split_first() else {
        return;
    };
    let ncuts = usize::from(ncuts % 32);
    let Some((cut_bytes, body)) = rest.split_at_checked(ncuts * 2) else {
        return;
    };
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    let which = usize::from(mode % 3);
    let policy = &policies()[which];
    let direction = if mode & 0x80 == 0 {
        BodyDirection::Request
    } else {
        BodyDirection::Response
    };

    let whole = scan(policy, direction, body, &[]);
    let streamed = scan(policy, direction, body, &cuts);
    // Counts per detector, in detector order, with the action taken.
    assert_eq!(streamed.findings, whole.findings, "cuts {cuts:?}");
    assert_eq!(streamed.blocked, whole.blocked, "cuts {cuts:?}");
    match (which, &whole.blocked) {
        (0, None) => assert_eq!(streamed.released, whole.released, "cuts {cuts:?}"),
        (1 | 2, None) => {
            // Nothing redacts: the body passes unchanged, however it was cut.
            assert_eq!(whole.released, body);
            assert_eq!(streamed.released, body, "cuts {cuts:?}");
        }
        // Blocked: what was released before the block is a clean prefix of the body.
        (_, Some(_)) => {
            assert!(whole.released.is_empty() || body.starts_with(&whole.released));
            assert!(body.starts_with(&streamed.released), "cuts {cuts:?}");
        }
        _ => unreachable!(),
    }
    if which == 0 && whole.findings.is_empty() {
        assert_eq!(whole.released, body, "nothing found, yet the body changed");
    }
});
