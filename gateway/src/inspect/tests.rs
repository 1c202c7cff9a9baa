//! The inspector end to end on bytes: every decoder path, and the property that a body cut
//! into any chunks gives exactly what the whole body gives (bytes forwarded, findings,
//! refusal).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use portcullis_policy::Config;

use super::*;

/// The inspection of the only route of a config with the given tenant settings.
fn inspection(tenant_settings: &str) -> Arc<RouteInspection> {
    let yaml = format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:8443\n    tls: {{ certificate: s.pem, private_key: s.key, client_ca: ca.pem }}\n\
         upstreams:\n  - name: u\n    targets: [127.0.0.1:9000]\n\
         tenants:\n  - name: t\n{tenant_settings}    routes:\n      - name: r\n        upstream: u\n"
    );
    let config = Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap();
    let route = config.routes.iter().next().unwrap();
    route.inspection.clone().unwrap()
}

const REDACT: &str = "    dlp: { request: { us_ssn: redact, card_number: redact } }\n";
const BLOCK: &str = "    dlp: { request: { us_ssn: block, card_number: block } }\n";

fn format_of(codings: &str, content_type: &str) -> BodyFormat {
    format(codings, Some(content_type))
}

fn format(codings: &str, content_type: Option<&str>) -> BodyFormat {
    BodyFormat {
        codings: Codings::parse(Some(codings)).unwrap(),
        content: Content::of(content_type),
    }
}

/// What one run gives: the bytes forwarded (or the refusal's code), the findings, the reasons.
type Outcome = (
    Result<Vec<u8>, &'static str>,
    Vec<(String, u64)>,
    Vec<Unscanned>,
);

fn run(settings: &str, format: &BodyFormat, chunks: &[&[u8]]) -> Outcome {
    let mut scan = BodyScan::planned(
        &inspection(settings),
        BodyDirection::Request,
        &BodyPlan::Scan(format.clone()),
    )
    .unwrap();
    let mut sent = Vec::new();
    let mut result = Ok(());
    for (i, chunk) in chunks.iter().enumerate() {
        match scan.push(chunk, i + 1 == chunks.len()) {
            Ok(out) => sent.extend(out),
            Err(refusal) => {
                result = Err(refusal.code());
                break;
            }
        }
    }
    let findings = scan
        .findings()
        .map(|f| {
            f.iter()
                .map(|f| (f.detector.to_string(), f.count))
                .collect()
        })
        .unwrap_or_default();
    (result.map(|()| sent), findings, scan.unscanned().to_vec())
}

/// A small deterministic generator for the chunk splits.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Whether a chunked run gives what the whole body gives: the same bytes, findings and
/// reasons; for a refused body, the same refusal, after finding no more than the whole did
/// (a redaction that cannot be made is refused as soon as the scanner releases it, so a
/// chunked run may stop before later matches are counted).
fn agrees(chunked: &Outcome, whole: &Outcome) -> bool {
    match &whole.0 {
        Ok(_) => chunked == whole,
        Err(_) => {
            chunked.0 == whole.0
                && (chunked.1.is_empty() == whole.1.is_empty())
                && chunked.1.iter().all(|f| whole.1.contains(f))
        }
    }
}

/// Streams `body` in many random splits (and byte by byte) and checks each gives what the
/// whole body gives; returns that.
fn same_whatever_the_chunks(settings: &str, format: &BodyFormat, body: &[u8]) -> Outcome {
    let whole = run(settings, format, &[body]);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    let chunked = run(settings, format, &bytes);
    assert!(
        agrees(&chunked, &whole),
        "byte by byte: {chunked:?} != {whole:?}"
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ body.len() as u64);
    for _ in 0..60 {
        let mut cuts: Vec<usize> = (0..rng.below(8) + 1)
            .map(|_| rng.below(body.len() + 1))
            .collect();
        cuts.push(0);
        cuts.push(body.len());
        cuts.sort_unstable();
        let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &body[w[0]..w[1]]).collect();
        let chunked = run(settings, format, &chunks);
        assert!(
            agrees(&chunked, &whole),
            "cuts {cuts:?}: {chunked:?} != {whole:?}"
        );
    }
    whole
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

const PII: &[u8] = br#"{"note":"ssn 123-45-6789, card 4111 1111 1111 1111, end"}"#;
const REDACTED: &[u8] = br#"{"note":"ssn [REDACTED:us_ssn], card [REDACTED:card_number], end"}"#;

fn found(outcome: &Outcome) -> Vec<(String, u64)> {
    outcome.1.clone()
}

#[test]
fn every_content_coding_is_decoded_scanned_and_forwarded_decoded() {
    let json = Some("application/json");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("", PII.to_vec()),
        ("gzip", gzip(PII)),
        ("deflate", deflate(PII)),
        ("br", brotli(PII)),
        ("zstd", zstd(PII)),
        ("gzip, br", brotli(&gzip(PII))),
        ("zstd, gzip, deflate", deflate(&gzip(&zstd(PII)))),
    ];
    for (codings, body) in cases {
        let outcome = same_whatever_the_chunks(REDACT, &format(codings, json), &body);
        assert_eq!(outcome.0.as_deref(), Ok(REDACTED), "{codings}");
        let blocked = same_whatever_the_chunks(BLOCK, &format(codings, json), &body);
        assert_eq!(blocked.0, Err("dlp_blocked"), "{codings}");
    }
}

#[test]
fn a_false_label_or_corrupt_data_is_refused_not_passed() {
    for codings in ["br", "gzip", "deflate", "zstd", "gzip, br"] {
        let outcome = same_whatever_the_chunks(REDACT, &format(codings, None), PII);
        assert_eq!(outcome.0, Err("undecodable_body"), "{codings}");
    }
}

#[test]
fn bombs_are_refused_in_every_coding() {
    let settings = format!("{REDACT}    body_inspection: {{ max_decompressed_bytes: 1000000 }}\n");
    let big = vec![b'a'; 4 << 20];
    for (codings, body) in [
        ("gzip", gzip(&big)),
        ("br", brotli(&big)),
        ("zstd", zstd(&big)),
    ] {
        let outcome = run(&settings, &format(codings, None), &[&body]);
        assert_eq!(outcome.0, Err("payload_too_large"), "{codings}");
    }
}

#[test]
fn json_escapes_cannot_hide_a_match_and_the_body_is_forwarded_as_sent() {
    let escaped = br#"{"note":"ssn \u0031\u00323-45-6789 and card 4111\u00201111 1111 1111"}"#;
    let blocked = same_whatever_the_chunks(BLOCK, &format("", Some("application/json")), escaped);
    assert_eq!(blocked.0, Err("dlp_blocked"));
    // Labelled as something else, the same bytes are still read with escapes decoded.
    let blocked =
        same_whatever_the_chunks(BLOCK, &format("gzip", Some("text/plain")), &gzip(escaped));
    assert_eq!(blocked.0, Err("dlp_blocked"));
    // Escapes elsewhere in the body do not stop an exact redaction, and are kept as sent.
    let elsewhere = br#"{"a":"caf\u00e9 \/ x","ssn":"123-45-6789"}"#;
    let outcome = same_whatever_the_chunks(REDACT, &format("", None), elsewhere);
    assert_eq!(
        outcome.0.as_deref(),
        Ok(&br#"{"a":"caf\u00e9 \/ x","ssn":"[REDACTED:us_ssn]"}"#[..])
    );
    // A match to redact that lies in an escape cannot be redacted exactly: refused.
    let outcome = same_whatever_the_chunks(REDACT, &format("", None), escaped);
    assert_eq!(outcome.0, Err("dlp_blocked"));
    assert!(found(&outcome).contains(&("us_ssn".to_owned(), 1)));
}

#[test]
fn octet_stream_is_scanned_as_bytes_and_luhn_stays_precise() {
    let mut body = vec![0u8, 159, 146, 150, 255];
    body.extend_from_slice(b"4111111111111111");
    body.extend_from_slice(&[0, 1, 2]);
    let format = format("", Some("application/octet-stream"));
    assert_eq!(format.content, Content::Bytes);
    let outcome = same_whatever_the_chunks(BLOCK, &format, &body);
    assert_eq!(outcome.0, Err("dlp_blocked"));
    let mut clean = vec![0u8, 159];
    clean.extend_from_slice(b"4111111111111112");
    let outcome = same_whatever_the_chunks(BLOCK, &format, &clean);
    assert_eq!(outcome.0.as_deref(), Ok(&clean[..]));
}

const FORM: &[u8] = b"--b0undary\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
--b0undary\r\nContent-Disposition: form-data; name=\"id\"\r\nContent-Type: application/json\r\n\r\n{\"ssn\":\"123-45-6789\"}\r\n\
--b0undary--\r\n";

#[test]
fn multipart_parts_are_scanned_and_plain_parts_redacted_exactly() {
    let format = format("", Some("multipart/form-data; boundary=b0undary"));
    let outcome = same_whatever_the_chunks(REDACT, &format, FORM);
    let want = String::from_utf8_lossy(FORM).replace("123-45-6789", "[REDACTED:us_ssn]");
    assert_eq!(outcome.0.as_deref(), Ok(want.as_bytes()));
    let gzipped = format_of("gzip", "multipart/form-data; boundary=b0undary");
    let blocked = same_whatever_the_chunks(BLOCK, &gzipped, &gzip(FORM));
    assert_eq!(blocked.0, Err("dlp_blocked"));
}

#[test]
fn encoded_parts_are_scanned_decoded_and_as_sent() {
    let format = format("", Some("multipart/mixed; boundary=b"));
    // base64 of "ssn 123-45-6789".
    let b64 =
        b"--b\r\nContent-Transfer-Encoding: base64\r\n\r\nc3NuIDEy\r\nMy00NS02Nzg5\r\n--b--\r\n";
    let outcome = same_whatever_the_chunks(BLOCK, &format, b64);
    assert_eq!(outcome.0, Err("dlp_blocked"));
    // Redacting inside the decoded bytes is not possible: refused.
    let outcome = same_whatever_the_chunks(REDACT, &format, b64);
    assert_eq!(outcome.0, Err("dlp_blocked"));
    // A card in the text of a part labelled base64 is found too (many upstreams ignore the
    // label), and can be redacted there.
    let raw = b"--b\r\nContent-Transfer-Encoding: base64\r\n\r\n4111111111111111\r\n--b--\r\n";
    let outcome = same_whatever_the_chunks(REDACT, &format, raw);
    let want = String::from_utf8_lossy(raw).replace("4111111111111111", "[REDACTED:card_number]");
    assert_eq!(outcome.0.as_deref(), Ok(want.as_bytes()));
    let qp = b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nssn =31=32=33-45-=\r\n6789\r\n--b--\r\n";
    let outcome = same_whatever_the_chunks(BLOCK, &format, qp);
    assert_eq!(outcome.0, Err("dlp_blocked"));
    let unknown = b"--b\r\nContent-Transfer-Encoding: x-secret\r\n\r\nzzz\r\n--b--\r\n";
    let outcome = same_whatever_the_chunks(BLOCK, &format, unknown);
    assert_eq!(outcome.0, Err("uninspectable_body"));
    let pass = format!("{BLOCK}    body_inspection: {{ unknown_encoding: pass }}\n");
    let outcome = same_whatever_the_chunks(&pass, &format, unknown);
    assert_eq!(outcome.0.as_deref(), Ok(&unknown[..]));
    assert_eq!(outcome.2, vec![Unscanned::UnknownEncoding]);
}

#[test]
fn over_the_limit_is_refused_by_default_and_passed_only_when_said() {
    let body = b"ssn 123-45-6789 then padding padding padding 987-65-4321";
    let limited = format!("{REDACT}    body_inspection: {{ max_bytes: 32 }}\n");
    let outcome = same_whatever_the_chunks(&limited, &format("", None), body);
    assert_eq!(outcome.0, Err("payload_too_large"));
    let pass = format!("{REDACT}    body_inspection: {{ max_bytes: 32, over_limit: pass }}\n");
    let outcome = same_whatever_the_chunks(&pass, &format("", None), body);
    let sent = String::from_utf8(outcome.0.clone().unwrap()).unwrap();
    assert!(sent.starts_with("ssn [REDACTED:us_ssn] then"), "{sent}");
    assert!(
        sent.ends_with("987-65-4321"),
        "past the limit: unscanned: {sent}"
    );
    assert_eq!(outcome.2, vec![Unscanned::OverLimit]);
    assert_eq!(found(&outcome), vec![("us_ssn".to_owned(), 1)]);
}

#[test]
fn a_planned_scan_costs_nothing_without_a_body() {
    let mut scan = BodyScan::planned(
        &inspection(BLOCK),
        BodyDirection::Request,
        &BodyPlan::Scan(format("", None)),
    )
    .unwrap();
    assert_eq!(scan.push(b"", true).unwrap(), b"");
    assert!(scan.findings().is_none(), "no scanner was made");
    let mut pass = BodyScan::planned(
        &inspection(BLOCK),
        BodyDirection::Request,
        &BodyPlan::Unscanned(Unscanned::Websocket),
    )
    .unwrap();
    assert!(pass.unscanned().is_empty());
    assert_eq!(pass.push(b"frame", false).unwrap(), b"frame");
    assert_eq!(pass.unscanned(), &[Unscanned::Websocket]);
}
