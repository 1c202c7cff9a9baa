//! `normalize_path` on arbitrary text: never panics, and an accepted path is canonical (one
//! spelling: idempotent, no empty or dot segments, no ambiguous escapes, within the limit) and
//! names the same resource as the input, checked against an independent reference resolution.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::normalize_path;

/// The limit documented on `PathError::TooLong`.
const MAX_PATH_LEN: usize = 8192;

fuzz_target!(|data: &[u8]| {
    // The gateway hands over the request target's path as text.
    let raw = String::from_utf8_lossy(data);
    let Ok(path) = normalize_path(&raw) else {
        return;
    };
    let p = path.as_str();
    assert!(p.starts_with('/'), "{p:?}");
    assert!(p.len() <= MAX_PATH_LEN, "{} bytes", p.len());
    assert!(!p.contains("//"), "{p:?}");
    assert!(!p.contains('\\') && !p.contains('\0'), "{p:?}");
    assert!(p.is_ascii(), "{p:?}");
    let segments: Vec<&str> = p.split('/').skip(1).collect();
    for seg in &segments {
        assert!(*seg != "." && *seg != "..", "dot segment in {p:?}");
    }
    // Escapes are uppercase, never of a slash, backslash, NUL or control character, and never
    // of an unreserved character (those are decoded): one spelling per path.
    let bytes = p.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        assert!(b > 0x20 && b != 0x7f, "raw byte {b:#x} in {p:?}");
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).expect("a complete escape");
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "{p:?}"
            );
            let v = decode_hex(hex[0], hex[1]).expect("hex");
            assert!(!matches!(v, b'/' | b'\\' | 0..=0x1f | 0x7f), "{p:?}");
            assert!(!is_unreserved(v), "needless escape in {p:?}");
        }
    }
    assert_eq!(normalize_path(p).as_ref(), Ok(&path), "not idempotent");

    // Same resource: the decoded segments after RFC 3986 dot removal.
    let (want, want_dir) = reference(&raw);
    let trailing = p.ends_with('/');
    let got: Vec<Vec<u8>> = segments
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s))
        .collect();
    assert_eq!(got, want, "{raw:?} -> {p:?}");
    assert_eq!(trailing, want_dir || want.is_empty(), "{raw:?} -> {p:?}");
});

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn decode_hex(hi: u8, lo: u8) -> Option<u8> {
    let v = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    Some(v(hi)? << 4 | v(lo)?)
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = b.get(i + 1..i + 3).and_then(|h| decode_hex(h[0], h[1])) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The decoded segments `raw` names after merging slashes and removing dot segments (an
/// accepted path has no encoded slash, so splitting before decoding is exact), and whether it
/// names a directory.
fn reference(raw: &str) -> (Vec<Vec<u8>>, bool) {
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut dir = false;
    for seg in raw.split('/').skip(1) {
        let seg = percent_decode(seg);
        dir = matches!(seg.as_slice(), b"" | b"." | b"..");
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => {
                stack.pop();
            }
            _ => stack.push(seg),
        }
    }
    (stack, dir)
}
