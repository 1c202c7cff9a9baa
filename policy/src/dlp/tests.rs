//! The DLP spec, its validation, and policies end to end on whole bodies.

use super::*;

const EXAMPLE: &str = r#"
request:  { card_number: block, us_ssn: redact, jwt: record }
response: { card_number: redact, private_key: block }
custom:   [ { name: employee-id, pattern: "EMP-[0-9]{6}", action: redact } ]
keywords: [ { name: codename, words: [bluebird, nightjar], action: record } ]
"#;

fn policy(yaml: &str) -> DlpPolicy {
    let spec: DlpSpec = serde_yaml_ng::from_str(yaml).unwrap();
    DlpPolicy::new(&spec).unwrap()
}

fn spec_error(yaml: &str) -> String {
    match serde_yaml_ng::from_str::<DlpSpec>(yaml) {
        Err(e) => e.to_string(),
        Ok(spec) => DlpPolicy::new(&spec).unwrap_err().to_string(),
    }
}

/// The whole body in one chunk.
fn scan(
    policy: &DlpPolicy,
    direction: BodyDirection,
    body: &str,
) -> (Result<String, Blocked>, Findings) {
    let mut s = policy.scanner(direction);
    let out = s.push(body.as_bytes()).and_then(|mut out| {
        out.extend(s.finish()?);
        Ok(String::from_utf8(out).unwrap())
    });
    (out, s.findings().clone())
}

#[test]
fn the_documented_example_works_per_direction() {
    let p = policy(EXAMPLE);
    let body = r#"{"ssn":"123-45-6789","who":"EMP-001234","note":"Bluebird is go"}"#;
    let (out, found) = scan(&p, BodyDirection::Request, body);
    assert_eq!(
        out.unwrap(),
        r#"{"ssn":"[REDACTED:us_ssn]","who":"[REDACTED:custom:employee-id]","note":"Bluebird is go"}"#
    );
    assert_eq!(found.count(&DetectorKind::UsSsn), 1);
    let codename = DetectorKind::Keyword(DetectorName::new("codename").unwrap());
    assert_eq!(found.count(&codename), 1);
    assert_eq!(found.total(), 3);

    let (out, found) = scan(&p, BodyDirection::Request, "pay 4111 1111 1111 1111");
    assert_eq!(
        out,
        Err(Blocked {
            detector: DetectorKind::CardNumber
        })
    );
    assert_eq!(found.count(&DetectorKind::CardNumber), 1);

    let (out, _) = scan(
        &p,
        BodyDirection::Response,
        "card 4111111111111111, ssn 123-45-6789",
    );
    assert_eq!(out.unwrap(), "card [REDACTED:card_number], ssn 123-45-6789");
    let (out, _) = scan(
        &p,
        BodyDirection::Response,
        "-----BEGIN PRIVATE KEY-----\nMIIE",
    );
    assert!(out.is_err());
    assert!(p.scans(BodyDirection::Request) && p.scans(BodyDirection::Response));
}

#[test]
fn record_counts_and_leaves_the_body_alone() {
    let p = policy("request: { jwt: record, us_ssn: record }");
    let body = "a 123-45-6789 b 123-45-6789 c eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
    let (out, found) = scan(&p, BodyDirection::Request, body);
    assert_eq!(out.unwrap(), body);
    let counts: Vec<(String, DlpAction, u64)> = found
        .iter()
        .map(|f| (f.detector.to_string(), f.action, f.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("us_ssn".to_owned(), DlpAction::Record, 2),
            ("jwt".to_owned(), DlpAction::Record, 1)
        ]
    );
    assert!(!p.scans(BodyDirection::Response));
}

#[test]
fn a_block_releases_nothing_of_its_chunk_and_sticks() {
    let p = policy("request: { us_ssn: block }");
    let mut s = p.scanner(BodyDirection::Request);
    let first = s.push(b"hello world, ").unwrap();
    assert!(b"hello world, ".starts_with(&first));
    let blocked = s.push(b"my ssn is 123-45-6789 ok").unwrap_err();
    assert_eq!(blocked.detector, DetectorKind::UsSsn);
    assert_eq!(blocked.to_string(), "body blocked by DLP detector us_ssn");
    assert_eq!(s.push(b"more"), Err(blocked.clone()));
    assert_eq!(s.finish(), Err(blocked));
}

#[test]
fn a_match_split_across_chunks_is_found() {
    let p = policy("request: { card_number: redact }");
    let mut s = p.scanner(BodyDirection::Request);
    let mut out = s.push(b"{\"card\":\"4111 1111").unwrap();
    out.extend(s.push(b" 1111 1111\"}").unwrap());
    out.extend(s.finish().unwrap());
    assert_eq!(out, b"{\"card\":\"[REDACTED:card_number]\"}");
}

#[test]
fn matched_bytes_are_never_kept_in_findings_or_debug_output() {
    let p = policy("request: { card_number: record }");
    let mut s = p.scanner(BodyDirection::Request);
    s.push(b"4111111111111111 and 4111111111").unwrap();
    let shown = format!("{s:?} {:?} {p:?}", s.findings());
    assert!(!shown.contains("4111"), "{shown}");
}

#[test]
fn keywords_are_whole_words_in_any_case() {
    let p = policy(
        "keywords: [ { name: codename, words: [bluebird, night-jar, \"#tag\"], action: redact } ]",
    );
    let (out, found) = scan(
        &p,
        BodyDirection::Response,
        "BLUEBIRD, bluebirds, Night-Jar; x#tag #tags; bluebird_x",
    );
    assert_eq!(
        out.unwrap(),
        "[REDACTED:keyword:codename], bluebirds, [REDACTED:keyword:codename]; x[REDACTED:keyword:codename] #tags; bluebird_x"
    );
    assert_eq!(found.total(), 3);
}

#[test]
fn custom_patterns_apply_to_the_selected_direction() {
    let p = policy(
        r#"custom:
  - { name: order, pattern: "(?i)\\bORD-[0-9]{4}\\b", action: record, direction: response }"#,
    );
    let (_, found) = scan(&p, BodyDirection::Response, "ord-1234 ORD-12345 xORD-1234");
    assert_eq!(found.total(), 1);
    let (_, found) = scan(&p, BodyDirection::Request, "ORD-1234");
    assert!(found.is_empty());
    assert!(!p.scans(BodyDirection::Request));
}

#[test]
fn typos_and_bad_values_are_errors() {
    for (yaml, want) in [
        ("request: { card_numbr: block }", "unknown variant"),
        ("request: { card_number: drop }", "unknown variant"),
        ("requests: {}", "unknown field"),
        (
            "custom: [ { name: a, pattern: x, action: record, extra: 1 } ]",
            "unknown field",
        ),
        (
            "keywords: [ { name: a, words: [x], action: record, direction: up } ]",
            "unknown variant",
        ),
    ] {
        let got = spec_error(yaml);
        assert!(got.contains(want), "{yaml}: {got}");
    }
}

#[test]
fn tenant_rules_are_checked() {
    for (yaml, want) in [
        (
            "custom: [ { name: Emp, pattern: x, action: record } ]",
            "DLP name \"Emp\": names may only contain",
        ),
        (
            "custom: [ { name: a, pattern: x, action: record } ]\nkeywords: [ { name: a, words: [y], action: record } ]",
            "DLP name a is used twice",
        ),
        (
            "custom: [ { name: a, pattern: \"EMP-[0-9]+\", action: record } ]",
            "DLP custom pattern a: the pattern can match more than 1024 bytes; bound every repetition",
        ),
        (
            "custom: [ { name: a, pattern: \"^EMP\", action: record } ]",
            "may only use word boundaries",
        ),
        ("custom: [ { name: a, pattern: \"x*\", action: record } ]", "can match empty text"),
        ("custom: [ { name: a, pattern: \"(x\", action: record } ]", "DLP custom pattern a: regex parse error"),
        ("keywords: [ { name: k, words: [], action: record } ]", "DLP keyword list k: the list has no words"),
        ("keywords: [ { name: k, words: [\"\"], action: record } ]", "word 1 must be 1-128 bytes long"),
        ("keywords: [ { name: k, words: [\"a\\tb\"], action: record } ]", "word 1 has a control character"),
    ] {
        let got = spec_error(yaml);
        assert!(got.contains(want), "{yaml}: {got}");
    }
    let long = format!(
        "custom: [ {{ name: a, pattern: \"{}\", action: record }} ]",
        "a".repeat(1025)
    );
    assert!(spec_error(&long).contains("longer than 1024 bytes"));
    let huge = format!(
        "custom: [ {{ name: a, pattern: \"\\\\w{{100}}{}\", action: record }} ]",
        "[a-z]{9}".repeat(100)
    );
    let got = spec_error(&huge);
    assert!(got.contains("DLP custom pattern a:"), "{got}");
}

#[test]
fn detector_names_display_as_in_config() {
    let names: Vec<String> = BuiltinDetector::ALL
        .iter()
        .map(|&b| DetectorKind::from(b).to_string())
        .collect();
    assert_eq!(
        names,
        [
            "card_number",
            "us_ssn",
            "iban",
            "private_key",
            "aws_access_key_id",
            "aws_secret_key",
            "github_token",
            "slack_token",
            "bearer_token",
            "jwt"
        ]
    );
    for b in BuiltinDetector::ALL {
        assert_eq!(DetectorKind::from(b).builtin(), Some(b));
        let parsed: BuiltinDetector = serde_yaml_ng::from_str(b.as_str()).unwrap();
        assert_eq!(parsed, b);
    }
    let n = DetectorName::new("employee-id").unwrap();
    assert_eq!(
        DetectorKind::Custom(n.clone()).to_string(),
        "custom:employee-id"
    );
    assert_eq!(DetectorKind::Keyword(n).to_string(), "keyword:employee-id");
    assert_eq!(DlpAction::Redact.to_string(), "redact");
}

#[test]
fn policies_share_across_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    fn sendable<T: Send + 'static>() {}
    shareable::<DlpPolicy>();
    sendable::<Scanner>();
    let p = policy(EXAMPLE);
    assert!(p.max_hold_back() >= 8 * 1024);
    assert!(p.max_hold_back() < 9 * 1024);
}
