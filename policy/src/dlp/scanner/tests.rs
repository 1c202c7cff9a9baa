//! Streaming is exact: any chunking of a body gives the bytes and findings of scanning it whole.

use proptest::prelude::*;

use crate::dlp::{BodyDirection, DetectorKind, DlpPolicy, DlpSpec, Findings};

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----";
const PEM_JSON: &str =
    "-----BEGIN PRIVATE KEY-----\\nMIIBOgIBAAJBAKj34GkxFhD90vcNL\\n-----END PRIVATE KEY-----\\n";

/// Secrets that each match exactly one detector, with its config name.
const SECRETS: &[(&str, &str)] = &[
    ("4111111111111111", "card_number"),
    ("4111 1111 1111 1111", "card_number"),
    ("3782-822463-10005", "card_number"),
    ("5555555555554444", "card_number"),
    ("123-45-6789", "us_ssn"),
    ("078-05-1120", "us_ssn"),
    ("DE89370400440532013000", "iban"),
    ("GB82 WEST 1234 5698 7654 32", "iban"),
    ("NO9386011117947", "iban"),
    ("AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    (
        "secret=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_key",
    ),
    ("ghp_A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3", "github_token"),
    ("xoxb-123456789012-1234567890123-AbCdEfGh", "slack_token"),
    ("Bearer abcdefghijklmnopqrstuvwxyz0123", "bearer_token"),
    (JWT, "jwt"),
    (PEM, "private_key"),
    (PEM_JSON, "private_key"),
    ("EMP-123456", "custom:employee-id"),
    ("Bluebird", "keyword:codename"),
    ("NIGHTJAR", "keyword:codename"),
];

/// Built-ins given, plus a tenant pattern (with `custom`'s action) and a keyword list.
fn policy(builtins: &str, custom: &str) -> DlpPolicy {
    let yaml = format!(
        r#"
request:  {{ {builtins} }}
custom:   [ {{ name: employee-id, pattern: "\\bEMP-[0-9]{{6}}\\b", action: {custom} }} ]
keywords: [ {{ name: codename, words: [bluebird, nightjar], action: record }} ]
"#
    );
    let spec: DlpSpec = serde_yaml_ng::from_str(&yaml).unwrap();
    DlpPolicy::new(&spec).unwrap()
}

fn redacting() -> DlpPolicy {
    policy(
        "card_number: redact, us_ssn: redact, iban: record, private_key: redact, \
         aws_access_key_id: redact, aws_secret_key: redact, github_token: record, \
         slack_token: redact, bearer_token: redact, jwt: redact",
        "redact",
    )
}

fn blocking() -> DlpPolicy {
    policy(
        "card_number: record, us_ssn: block, iban: record, private_key: record, \
         aws_access_key_id: block, aws_secret_key: record, github_token: record, \
         slack_token: record, bearer_token: record, jwt: block",
        "record",
    )
}

#[derive(Debug, PartialEq)]
struct Outcome {
    released: Vec<u8>,
    blocked: Option<DetectorKind>,
    findings: Findings,
}

/// Scans `body` cut at `cuts`, checking the hold-back bound after every chunk.
fn run(policy: &DlpPolicy, body: &[u8], cuts: &[usize]) -> Outcome {
    let mut scanner = policy.scanner(BodyDirection::Request);
    let mut released = Vec::new();
    let mut from = 0;
    let ends = cuts.iter().copied().chain([body.len()]);
    let mut result = Ok(());
    for to in ends.filter(|&c| c <= body.len()) {
        let to = to.max(from);
        match scanner.push(&body[from..to]) {
            Ok(out) => released.extend(out),
            Err(b) => {
                result = Err(b);
                break;
            }
        }
        assert!(scanner.held_back() < policy.max_hold_back());
        from = to;
    }
    if result.is_ok() {
        result = scanner.finish().map(|out| released.extend(out));
        if result.is_ok() {
            assert_eq!(scanner.held_back(), 0);
        }
    }
    Outcome {
        released,
        blocked: result.err().map(|b| b.detector),
        findings: scanner.findings().clone(),
    }
}

/// As [`run`], with the last chunk handed over with [`Scanner::push_last`].
fn run_last(policy: &DlpPolicy, body: &[u8], cuts: &[usize]) -> Outcome {
    let mut scanner = policy.scanner(BodyDirection::Request);
    let mut released = Vec::new();
    let mut from = 0;
    let mut result = Ok(());
    for to in cuts.iter().copied().filter(|&c| c <= body.len()) {
        let to = to.max(from);
        match scanner.push(&body[from..to]) {
            Ok(out) => released.extend(out),
            Err(b) => {
                result = Err(b);
                break;
            }
        }
        from = to;
    }
    if result.is_ok() {
        result = scanner
            .push_last(&body[from..])
            .map(|out| released.extend(out));
        if result.is_ok() {
            assert_eq!(scanner.held_back(), 0);
        }
    }
    Outcome {
        released,
        blocked: result.err().map(|b| b.detector),
        findings: scanner.findings().clone(),
    }
}

/// Random text with secrets mixed in, some glued to their neighbours.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => "[ -~\n]{0,24}",
        2 => "[0-9 -]{0,24}",
        1 => "[A-Z0-9 ]{0,12}",
        4 => prop::sample::select(SECRETS).prop_map(|(s, _)| s.to_owned()),
        2 => prop::sample::select(SECRETS).prop_map(|(s, _)| format!(" {s}\"")),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat().into_bytes())
}

fn cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
    prop::collection::vec(any::<prop::sample::Index>(), 0..10)
}

fn positions(body: &[u8], cuts: &[prop::sample::Index]) -> Vec<usize> {
    let mut v: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
    v.sort_unstable();
    v
}

proptest! {
    #[test]
    fn any_chunking_redacts_and_counts_like_one_chunk(body in body(), cuts in cuts()) {
        let p = redacting();
        let whole = run(&p, &body, &[]);
        prop_assert_eq!(run(&p, &body, &positions(&body, &cuts)), whole);
    }

    #[test]
    fn a_last_chunk_with_the_end_scans_like_a_chunk_then_the_end(body in body(), cuts in cuts()) {
        let cuts = positions(&body, &cuts);
        let p = redacting();
        prop_assert_eq!(run_last(&p, &body, &cuts), run(&p, &body, &cuts));
        // Blocked by the last chunk: nothing of it is released (as `push` releases nothing of
        // a chunk it blocks), where a chunk then the end may have released its start.
        let p = blocking();
        let (last, apart) = (run_last(&p, &body, &cuts), run(&p, &body, &cuts));
        prop_assert_eq!(&last.blocked, &apart.blocked);
        prop_assert_eq!(&last.findings, &apart.findings);
        prop_assert!(apart.released.starts_with(&last.released));
        if apart.blocked.is_none() {
            prop_assert_eq!(&last.released, &apart.released);
        }
    }

    #[test]
    fn any_chunking_blocks_like_one_chunk(body in body(), cuts in cuts()) {
        let p = blocking();
        let whole = run(&p, &body, &[]);
        let split = run(&p, &body, &positions(&body, &cuts));
        prop_assert_eq!(&split.blocked, &whole.blocked);
        prop_assert_eq!(&split.findings, &whole.findings);
        // Nothing is redacted here, so what was released is the body up to some point.
        prop_assert!(body.starts_with(&split.released));
        if whole.blocked.is_none() {
            prop_assert_eq!(&split.released, &body);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stream_exactly(
        body in prop::collection::vec(any::<u8>(), 0..3000),
        cuts in cuts(),
    ) {
        let p = redacting();
        let whole = run(&p, &body, &[]);
        prop_assert_eq!(run(&p, &body, &positions(&body, &cuts)), whole);
        prop_assert!(run(&blocking(), &body, &positions(&body, &cuts)).released.len() <= body.len());
    }

    #[test]
    fn every_embedded_secret_is_found(
        picks in prop::collection::vec(prop::sample::select(SECRETS), 1..12),
        cuts in cuts(),
    ) {
        let body = picks.iter().map(|(s, _)| *s).collect::<Vec<_>>().join("\n| ");
        let p = policy(
            "card_number: record, us_ssn: record, iban: record, private_key: record, \
             aws_access_key_id: record, aws_secret_key: record, github_token: record, \
             slack_token: record, bearer_token: record, jwt: record",
            "record",
        );
        let got = run(&p, body.as_bytes(), &positions(body.as_bytes(), &cuts));
        prop_assert_eq!(&got.released, body.as_bytes());
        for (_, name) in SECRETS {
            let want = picks.iter().filter(|(_, n)| n == name).count() as u64;
            let found: u64 = got
                .findings
                .iter()
                .filter(|f| f.detector.to_string() == *name)
                .map(|f| f.count)
                .sum();
            prop_assert_eq!(found, want, "{} in {:?}", name, body);
        }
    }
}

#[test]
fn long_candidates_fed_byte_by_byte_stay_linear_and_bounded() {
    let p = redacting();
    for head in [
        "eyJ",
        "-----BEGIN PRIVATE KEY-----\n",
        "Bearer ",
        "EMP-",
        "4111",
    ] {
        let mut body = head.as_bytes().to_vec();
        body.extend(std::iter::repeat_n(b'A', 40_000));
        body.extend(b" end 123-45-6789");
        let cuts: Vec<usize> = (0..body.len()).collect();
        let whole = run(&p, &body, &[]);
        assert_eq!(run(&p, &body, &cuts), whole, "{head}");
        assert!(
            whole.released.ends_with(b" end [REDACTED:us_ssn]"),
            "{head}"
        );
    }
}

#[test]
fn clean_text_is_released_promptly() {
    let p = redacting();
    let mut scanner = p.scanner(BodyDirection::Request);
    let body = b"{\"greeting\": \"hello, world\"}\n";
    let out = scanner.push(body).unwrap();
    // Only the last bytes, where the tenant pattern (10 bytes) could still start, are held.
    assert_eq!(out.len() + scanner.held_back(), body.len());
    assert!(scanner.held_back() <= 14, "{}", scanner.held_back());
}

#[test]
fn redactions_are_reported_with_their_offsets_and_masks() {
    let mut scanner = redacting().scanner(BodyDirection::Request);
    let mut out = scanner.push(b"id 123-45-").unwrap();
    assert!(scanner.take_redactions().is_empty());
    out.extend(scanner.push(b"6789 and 4111111111111111").unwrap());
    out.extend(scanner.finish().unwrap());
    assert_eq!(scanner.released(), 35);
    let r = scanner.take_redactions();
    assert_eq!(
        r.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(),
        vec![(3, 14), (19, 35)]
    );
    assert_eq!(&*r[0].mask, b"[REDACTED:us_ssn]");
    assert_eq!(out, b"id [REDACTED:us_ssn] and [REDACTED:card_number]");
}
