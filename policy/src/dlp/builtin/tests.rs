//! Each built-in detector on matches, near misses and look-alikes.

use super::numbers::{iban_checksum_ok, luhn_ok};
use crate::dlp::{BodyDirection, BuiltinDetector, DlpAction, DlpPolicy, DlpSpec};

/// `text` scanned in one chunk with only `detector` enabled, set to redact.
fn redact(detector: BuiltinDetector, text: &str) -> String {
    let mut spec = DlpSpec::default();
    spec.request.insert(detector, DlpAction::Redact);
    let policy = DlpPolicy::new(&spec).unwrap();
    let mut scanner = policy.scanner(BodyDirection::Request);
    let mut out = scanner.push(text.as_bytes()).unwrap();
    out.extend(scanner.finish().unwrap());
    String::from_utf8(out).unwrap()
}

fn assert_redacted(detector: BuiltinDetector, matches: &[&str]) {
    let mask = format!("[REDACTED:{}]", detector.as_str());
    for m in matches {
        for (before, after) in [("", ""), ("x ", " y"), ("{\"v\":\"", "\"}"), ("(", ")\n")] {
            let text = format!("{before}{m}{after}");
            assert_eq!(
                redact(detector, &text),
                format!("{before}{mask}{after}"),
                "{detector:?} should match {text:?}"
            );
        }
    }
}

fn assert_untouched(detector: BuiltinDetector, texts: &[&str]) {
    for text in texts {
        assert_eq!(
            redact(detector, text),
            *text,
            "{detector:?} should not match"
        );
    }
}

/// `prefix` completed with its Luhn check digit.
fn with_luhn(prefix: &str) -> String {
    let digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    for check in 0..10u8 {
        let mut all = digits.clone();
        all.push(check);
        if luhn_ok(&all) {
            return format!("{prefix}{check}");
        }
    }
    unreachable!("one check digit always works")
}

#[test]
fn card_numbers_in_common_formats() {
    assert_redacted(
        BuiltinDetector::CardNumber,
        &[
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "378282246310005",
            "3782 822463 10005",
            "4222222222222",
            &with_luhn("601100099013942412"),
        ],
    );
    assert_eq!(
        redact(
            BuiltinDetector::CardNumber,
            "{\"note\":\"a\\n4111111111111111\"}"
        ),
        "{\"note\":\"a\\n[REDACTED:card_number]\"}"
    );
}

#[test]
fn card_look_alikes_are_left_alone() {
    assert_untouched(
        BuiltinDetector::CardNumber,
        &[
            "4111111111111112",                // Luhn fails
            "41111111111111110000",            // 20 digits
            &with_luhn("4111111111111111111"), // 20 digits, Luhn-valid
            "x4111111111111111",               // inside a word
            "4111111111111111abc",             // inside a word
            "id_4111111111111111",             // inside an identifier
            "tok4111111111111111tok",          // inside an alphanumeric token
            "1234 4111 1111 1111 1111",        // 20 digits in groups
            "4111 1111-1111 1111",             // mixed separators
            "41 11 11 11 11 11 11 11",         // groups too short
            "4111  1111 1111 1111",            // double space
            &with_luhn("711111111111111"),     // no such industry prefix
            "411111111111",                    // 12 digits
        ],
    );
}

#[test]
fn ssn_with_valid_area_group_and_serial() {
    assert_redacted(
        BuiltinDetector::UsSsn,
        &["123-45-6789", "078-05-1120", "899-99-9999"],
    );
    assert_untouched(
        BuiltinDetector::UsSsn,
        &[
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123456789",
            "123 45 6789",
            "123-45-67890",
            "1-123-45-6789",
            "123-45-6789-1",
            "a123-45-6789",
        ],
    );
}

const VALID_IBANS: [&str; 16] = [
    "DE89370400440532013000",
    "FR1420041010050500013M02606",
    "GB82WEST12345698765432",
    "ES9121000418450200051332",
    "IT60X0542811101000000123456",
    "NL91ABNA0417164300",
    "BE68539007547034",
    "CH9300762011623852957",
    "AT611904300234573201",
    "PL61109010140000071219812874",
    "SE4550000000058398257466",
    "IE29AIBK93115212345678",
    "PT50000201231234567890154",
    "DK5000400440116243",
    "NO9386011117947",
    "FI2112345600000785",
];

#[test]
fn ibans_compact_and_grouped() {
    for iban in VALID_IBANS {
        assert!(iban_checksum_ok(iban.as_bytes()), "{iban}");
        let grouped: Vec<String> = iban
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        assert_redacted(BuiltinDetector::Iban, &[iban, &grouped.join(" ")]);
    }
    // A country outside the table: any length from 15 to 34 with a valid checksum.
    assert_redacted(BuiltinDetector::Iban, &["ZZ33123456789012345"]);
    assert_eq!(
        redact(BuiltinDetector::Iban, "DE89 3704 0044 0532 0130 00 EUR"),
        "[REDACTED:iban] EUR"
    );
}

#[test]
fn iban_look_alikes_are_left_alone() {
    assert_untouched(
        BuiltinDetector::Iban,
        &[
            "DE88370400440532013000",   // bad check digits
            "DE8937040044053201300",    // one short for Germany
            "DE893704004405320130001",  // one long for Germany
            "DE89370400440532013000x",  // inside a word
            "xDE89370400440532013000",  // inside a word
            "de89370400440532013000",   // lowercase
            "DE89 3704 0044 0532 0130", // grouped, too short
            "ZZ8812345678",             // unknown country, too short
        ],
    );
}

#[test]
fn pem_private_keys_whole_block() {
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END RSA PRIVATE KEY-----";
    let json = key.replace('\n', "\\n");
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\r\nMIIFHzBJBgkqhkiG9w0BBQ0wPDAbBgkqhkiG\r\n-----END ENCRYPTED PRIVATE KEY-----";
    assert_redacted(
        BuiltinDetector::PrivateKey,
        &[
            key,
            &json,
            encrypted,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----",
            "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,AB12\n\nMHcCAQEE\n-----END EC PRIVATE KEY-----",
        ],
    );
    // Without an END line the match runs to the end of the base64 body.
    assert_eq!(
        redact(
            BuiltinDetector::PrivateKey,
            "{\"k\":\"-----BEGIN PRIVATE KEY-----\\nMIIE\"}"
        ),
        "{\"k\":\"[REDACTED:private_key]\"}"
    );
    // It never swallows half of an escape: the JSON string still ends where it did.
    assert_eq!(
        redact(
            BuiltinDetector::PrivateKey,
            "\"-----BEGIN PRIVATE KEY-----\\nMIIE\\\"x\""
        ),
        "\"[REDACTED:private_key]\\\"x\""
    );
    assert_untouched(
        BuiltinDetector::PrivateKey,
        &[
            "-----BEGIN PUBLIC KEY-----\nMFwwDQYJ\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN PRIVATE KEY----",
        ],
    );
}

#[test]
fn aws_access_key_ids() {
    assert_redacted(
        BuiltinDetector::AwsAccessKeyId,
        &["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"],
    );
    assert_untouched(
        BuiltinDetector::AwsAccessKeyId,
        &[
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLE1",
            "xAKIAIOSFODNN7EXAMPLE",
            "AKIAIOSFODNN7EXAMPLEa",
            "AKIAiosfodnn7example",
            "ABIAIOSFODNN7EXAMPLE",
        ],
    );
}

#[test]
fn aws_secret_keys_need_the_keyword() {
    let key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for text in [
        format!("aws_secret_access_key = {key}"),
        format!("{{\"SecretAccessKey\": \"{key}\"}}"),
        format!("AWS_SECRET_ACCESS_KEY={key}\n"),
    ] {
        let want = text.replace(key, "[REDACTED:aws_secret_key]");
        assert_eq!(redact(BuiltinDetector::AwsSecretKey, &text), want);
    }
    assert_untouched(
        BuiltinDetector::AwsSecretKey,
        &[
            "checksum = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "secret = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKE",
            "secret = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYS",
            "secret = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY=",
            "secret = abcdefghijabcdefghijabcdefghijabcdefghij",
            "secret: ............................................................ wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ],
    );
}

#[test]
fn github_tokens() {
    let classic = format!("ghp_{}", "A1b2C3d4E5".repeat(4).get(..36).unwrap());
    let fine = format!(
        "github_pat_{}",
        "11ABCDEFG_0123456789abcdef".repeat(4).get(..82).unwrap()
    );
    let others: Vec<String> = ["gho_", "ghu_", "ghs_", "ghr_"]
        .iter()
        .map(|p| format!("{p}{}", "z".repeat(36)))
        .collect();
    assert_redacted(
        BuiltinDetector::GithubToken,
        &[&classic, &fine, &others[0], &others[3]],
    );
    assert_untouched(
        BuiltinDetector::GithubToken,
        &[
            &format!("ghp_{}", "a".repeat(35)),
            &format!("ghp_{}", "a".repeat(37)),
            &format!("xghp_{}", "a".repeat(36)),
            &format!("ghx_{}", "a".repeat(36)),
            &format!("github_pat_{}", "a".repeat(81)),
        ],
    );
}

#[test]
fn slack_tokens() {
    assert_redacted(
        BuiltinDetector::SlackToken,
        &[
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "xoxp-0123456789",
        ],
    );
    assert_untouched(
        BuiltinDetector::SlackToken,
        &[
            "xoxb-12345",
            "xoxz-123456789012",
            "axoxb-123456789012",
            "xoxb123456789012",
        ],
    );
}

#[test]
fn bearer_tokens_after_the_word_bearer() {
    for (text, want) in [
        (
            "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123\r\n",
            "Authorization: Bearer [REDACTED:bearer_token]\r\n",
        ),
        (
            "{\"auth\":\"bearer  a1b2c3d4e5f6a7b8c9d0e1f2.x-y_z~+/==\"}",
            "{\"auth\":\"bearer  [REDACTED:bearer_token]\"}",
        ),
    ] {
        assert_eq!(redact(BuiltinDetector::BearerToken, text), want);
    }
    assert_untouched(
        BuiltinDetector::BearerToken,
        &[
            "Bearer short",
            "the bearer of good tidings",
            "unbearer abcdefghijklmnopqrstuvwxyz0123",
            "Bearer      abcdefghijklmnopqrstuvwxyz0123",
            "Bearerabcdefghijklmnopqrstuvwxyz0123",
        ],
    );
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

#[test]
fn jwts_with_an_alg_header() {
    assert_redacted(
        BuiltinDetector::Jwt,
        &[JWT, "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."],
    );
    assert_eq!(
        redact(BuiltinDetector::Jwt, &format!("token {JWT}.")),
        "token [REDACTED:jwt]."
    );
    assert_untouched(
        BuiltinDetector::Jwt,
        &[
            // {"typ":"JWT"}: no alg.
            "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2ln",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",
            &format!("x{JWT}"),
            &format!("-{JWT}"),
            "eyJ!!!.abc.def",
        ],
    );
}

proptest::proptest! {
    /// On a whole body the cheap tests decide as the full ones. On part of one they may decide
    /// sooner (a run whose first group rules it out, whatever follows), never later, and never
    /// otherwise.
    #[test]
    fn the_cheap_first_tests_decide_as_the_full_ones(
        text in proptest::collection::vec(
            proptest::sample::select(b"0123456789 -.x\\n".to_vec()),
            0..40,
        ),
        eof: bool,
    ) {
        use super::numbers::{card, card_in_full, ssn, ssn_in_full};
        let w = crate::dlp::window::Window { buf: &text, eof };
        for p in 0..text.len() {
            for (cheap, full) in [(card(&w, p), card_in_full(&w, p)), (ssn(&w, p), ssn_in_full(&w, p))] {
                match (cheap, full) {
                    (Ok(None), Err(_)) if !eof => {}
                    (cheap, full) => proptest::prop_assert_eq!(cheap, full, "at {}", p),
                }
            }
        }
    }
}
