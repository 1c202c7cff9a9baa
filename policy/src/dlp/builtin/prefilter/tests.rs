//! The prefilter against the position filter it replaced and against trying every position:
//! on random and adversarial bodies, cut into chunks anywhere, all three must release the same
//! bytes, make the same redactions, count the same findings and block on the same detector.

use proptest::prelude::*;

use crate::dlp::{
    BodyDirection, BuiltinDetector, DetectorKind, DlpAction, DlpPolicy, DlpSpec, Findings,
    Redaction, Scanner,
};

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// One match of each built-in, in the formats the detectors accept.
const SECRETS: &[&str] = &[
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "3782 822463 10005",
    "5555555555554444",
    "123-45-6789",
    "DE89370400440532013000",
    "GB82 WEST 1234 5698 7654 32",
    "NO9386011117947",
    "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "{\"SecretAccessKey\": \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"}",
    "ghp_A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3",
    "github_pat_11ABCDEFG_0123456789abcdef11ABCDEFG_0123456789abcdef11ABCDEFG_0123456789abcdef11AB",
    "xoxb-123456789012-1234567890123-AbCdEfGh",
    "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123\r\n",
    "bearer\t\t a1b2c3d4e5f6a7b8c9d0e1f2.x-y_z~+/==",
    JWT,
    "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\\nMIIBOgIBAAJBAKj34GkxFhD90vcNL\\n-----END PRIVATE KEY-----\\n",
    "EMP-123456",
    "Bluebird",
];

/// Near misses and the bytes the prefilter keys on, out of their usual context.
const LOOK_ALIKES: &[&str] = &[
    "4111111111111112",
    "4111 1111-1111 1111",
    "411-11",
    "123-45-678",
    "2024-01-15 10:30",
    "AB12",
    "ZZ",
    "--",
    "-----BEGIN ",
    "-----BEGIN PUBLIC KEY-----",
    "x",
    "xox",
    "xoxb-12",
    "eyJ",
    "eyJhbGciOiJub25lIn0",
    "gh",
    "ghp_",
    "github_pat_",
    "_",
    "AKIA",
    "secret",
    "SeCrEt",
    "secret=",
    "bearer",
    "Bearer ",
    "BEARER     ",
    "bearerbearer ",
    "secretsecret",
    "create",
    "tere",
    "\\n",
    "\\\\",
    "\\t",
    "\"",
];

fn spec(builtins: &[BuiltinDetector], action: DlpAction) -> DlpSpec {
    let yaml = format!(
        r#"
custom:   [ {{ name: employee-id, pattern: "\\bEMP-[0-9]{{6}}\\b", action: {action} }} ]
keywords: [ {{ name: codename, words: [bluebird, nightjar], action: record }} ]
"#
    );
    let mut spec: DlpSpec = serde_yaml_ng::from_str(&yaml).unwrap();
    for &b in builtins {
        spec.request.insert(b, action);
    }
    spec
}

/// Every built-in redacting; every built-in with some blocking; each built-in alone (so the
/// block test's terms for the others are off) without tenant rules.
fn policies() -> Vec<DlpPolicy> {
    let mut specs = vec![spec(&BuiltinDetector::ALL, DlpAction::Redact)];
    let mut blocking = spec(&BuiltinDetector::ALL, DlpAction::Record);
    for b in [
        BuiltinDetector::UsSsn,
        BuiltinDetector::Jwt,
        BuiltinDetector::AwsSecretKey,
    ] {
        blocking.request.insert(b, DlpAction::Block);
    }
    specs.push(blocking);
    for b in BuiltinDetector::ALL {
        let mut alone = DlpSpec::default();
        alone.request.insert(b, DlpAction::Redact);
        specs.push(alone);
    }
    specs.iter().map(|s| DlpPolicy::new(s).unwrap()).collect()
}

#[derive(Debug, PartialEq)]
struct Outcome {
    released: Vec<u8>,
    redactions: Vec<Redaction>,
    blocked: Option<DetectorKind>,
    findings: Findings,
}

/// Scans `body` cut at `cuts` (ascending).
fn run(mut scanner: Scanner, body: &[u8], cuts: &[usize]) -> Outcome {
    let mut released = Vec::new();
    let mut from = 0;
    let mut result = Ok(());
    for to in cuts.iter().copied().chain([body.len()]) {
        let to = to.clamp(from, body.len());
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
        result = scanner.finish().map(|out| released.extend(out));
    }
    Outcome {
        released,
        redactions: scanner.take_redactions(),
        blocked: result.err().map(|b| b.detector),
        findings: scanner.findings().clone(),
    }
}

/// The prefilter, the old filter and every position give the same outcome, also cut at
/// `cuts`, and that is the outcome of the whole body in one chunk (except that what was
/// released before a later chunk blocked stays released).
fn assert_all_agree(policy: &DlpPolicy, body: &[u8], cuts: &[usize]) -> Outcome {
    let dir = BodyDirection::Request;
    let shown = String::from_utf8_lossy(body);
    let truth = run(policy.exhaustive_scanner(dir), body, &[]);
    for (name, scanner) in [
        ("prefilter", policy.scanner(dir)),
        ("old filter", policy.reference_scanner(dir)),
    ] {
        assert_eq!(
            run(scanner, body, &[]),
            truth,
            "{name}, whole body {shown:?}"
        );
    }
    for (name, scanner) in [
        ("prefilter", policy.scanner(dir)),
        ("old filter", policy.reference_scanner(dir)),
        ("every position", policy.exhaustive_scanner(dir)),
    ] {
        let got = run(scanner, body, cuts);
        if truth.blocked.is_some() {
            assert_eq!(
                got.blocked, truth.blocked,
                "{name}, cut at {cuts:?}: {shown:?}"
            );
            assert_eq!(
                got.findings, truth.findings,
                "{name}, cut at {cuts:?}: {shown:?}"
            );
            // Policies that block redact nothing: what went out is the body so far.
            assert!(
                body.starts_with(&got.released),
                "{name}, cut at {cuts:?}: {shown:?}"
            );
        } else {
            assert_eq!(got, truth, "{name}, cut at {cuts:?}: {shown:?}");
        }
    }
    truth
}

fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[ -~\n]{0,40}".prop_map(String::into_bytes),
        2 => "[a-z ]{0,300}".prop_map(String::into_bytes),
        2 => "[0-9 -]{0,30}".prop_map(String::into_bytes),
        1 => "[A-Z0-9 ]{0,20}".prop_map(String::into_bytes),
        2 => "[A-Za-z0-9+/]{38,42}".prop_map(String::into_bytes),
        1 => "[ \t]{0,6}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        4 => prop::sample::select(SECRETS).prop_map(|s| s.as_bytes().to_vec()),
        4 => prop::sample::select(LOOK_ALIKES).prop_map(|s| s.as_bytes().to_vec()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..40).prop_map(|v| v.concat())
}

fn cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
    prop::collection::vec(any::<prop::sample::Index>(), 0..12)
}

fn positions(body: &[u8], cuts: &[prop::sample::Index]) -> Vec<usize> {
    let mut v: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
    v.sort_unstable();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prefilter_old_filter_and_every_position_agree(body in body(), cuts in cuts()) {
        for policy in &policies() {
            assert_all_agree(policy, &body, &positions(&body, &cuts));
        }
    }

    #[test]
    fn arbitrary_bytes_agree(body in prop::collection::vec(any::<u8>(), 0..2000), cuts in cuts()) {
        for policy in &policies()[..2] {
            assert_all_agree(policy, &body, &positions(&body, &cuts));
        }
    }
}

/// Every secret, found once whatever byte of it (or around it) a chunk ends at, with the
/// secret placed around the block test's edges (256 positions, 64 of look-behind).
#[test]
fn a_secret_cut_at_every_byte_is_found() {
    let policy = DlpPolicy::new(&spec(&BuiltinDetector::ALL, DlpAction::Redact)).unwrap();
    for secret in SECRETS {
        for lead in [0, 63, 250, 256] {
            let filler = "lorem ipsum ".repeat(30);
            let body = format!("{} {secret}\n end", filler.get(..lead).unwrap());
            let body = body.as_bytes();
            let whole = assert_all_agree(&policy, body, &[]);
            assert_eq!(whole.findings.total(), 1, "{secret:?} after {lead} bytes");
            for cut in 0..=body.len() {
                let got = run(policy.scanner(BodyDirection::Request), body, &[cut]);
                assert_eq!(got, whole, "{secret:?} after {lead} bytes, cut at {cut}");
            }
        }
    }
}

/// The context word in one chunk and the key in a later one; the word inside an earlier match;
/// the word at the very end of a chunk; many words and runs of every length near each other.
#[test]
fn context_words_across_chunks_and_matches() {
    let policy = DlpPolicy::new(&spec(&BuiltinDetector::ALL, DlpAction::Redact)).unwrap();
    let pem_with_word = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0secret\n-----END PRIVATE KEY-----";
    let mut bodies = vec![
        format!("{pem_with_word} {AWS_SECRET}"),
        format!("{}secret: {AWS_SECRET}", "x ".repeat(120)),
        format!("{}Bearer {}", "y ".repeat(127), "t".repeat(30)),
        format!("secret{}{AWS_SECRET}", " ".repeat(58)),
        format!("secret{}{AWS_SECRET}", " ".repeat(59)),
        format!("SECRET{}{AWS_SECRET}!", "=".repeat(20)),
        format!("bearer{}abcdefghijklmnopqrstu", " ".repeat(5)),
    ];
    for len in 30..50 {
        let run: String = AWS_SECRET.chars().cycle().take(len).collect();
        bodies.push(format!("secret {run} secret {run}/secret={run}"));
    }
    for body in &bodies {
        let body = body.as_bytes();
        let whole = assert_all_agree(&policy, body, &[]);
        for cut in 0..=body.len() {
            let got = run(policy.scanner(BodyDirection::Request), body, &[cut]);
            assert_eq!(
                got,
                whole,
                "cut at {cut}: {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
    let found = assert_all_agree(&policy, bodies[0].as_bytes(), &[]);
    assert_eq!(found.findings.count(&DetectorKind::AwsSecretKey), 1);
}

/// Byte-by-byte feeding of a long body full of flagged but unmatched bytes agrees too.
#[test]
fn tiny_chunks_of_a_busy_body() {
    let body: String = LOOK_ALIKES
        .iter()
        .chain(SECRETS)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let cuts: Vec<usize> = (0..body.len()).collect();
    for policy in &policies()[..2] {
        assert_all_agree(policy, body.as_bytes(), &cuts);
    }
}

/// Bodies an attacker could send to make the prefilter flag every byte: a run of one of the
/// bytes it keys on, or of a context word. Each is left with a handful of positions to decide
/// (those of its last bytes, decided one by one), however long it is.
#[test]
fn runs_of_the_bytes_it_keys_on_flag_almost_nothing() {
    use super::Positions;
    use crate::dlp::window::Window;

    let all = BuiltinDetector::ALL.iter().fold(0, |m, b| m | b.bit());
    for unit in [
        "_", "x", "J", "-", "eyJ", "xox", "ghp_", "secret", "SeCrEt ", "bearer ", "Bearer\t", "1",
        "A", "AKIA", "?e?re?", "e r e",
    ] {
        let body = unit.repeat(64 * 1024 / unit.len());
        let w = Window {
            buf: body.as_bytes(),
            eof: true,
        };
        let mut gated = Vec::new();
        let mut positions = Positions::new(w, 0, all, &mut gated);
        let (mut from, mut decided) = (0, 0);
        loop {
            let p = positions.next(from, body.len());
            if p == body.len() {
                break;
            }
            decided += 1;
            from = p + 1;
        }
        assert!(
            decided <= 16,
            "{unit:?} repeated: {decided} positions to decide"
        );
    }
}
