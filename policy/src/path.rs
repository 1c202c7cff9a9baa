//! Request path normalisation.
//!
//! Routing and access rules compare path prefixes, so every spelling of a path that an upstream
//! could treat as the same resource must normalise to one string first: otherwise
//! `/public/%2e%2e/admin` would slip past a rule written for `/admin`. Anything ambiguous
//! (encoded slashes, backslashes, NULs, control characters, malformed escapes) is rejected
//! rather than guessed at.

use std::fmt;

/// Longest path accepted, in bytes, both before and after normalisation.
const MAX_PATH_LEN: usize = 8192;

/// A request path in canonical form.
///
/// It starts with `/`, has no empty, `.` or `..` segments, has percent-encoding only where
/// needed (uppercase hex), and keeps a trailing `/` if the request had one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NormalizedPath(String);

impl NormalizedPath {
    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NormalizedPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a request path was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path does not start with '/'")]
    NotAbsolute,
    /// The path contains `%2F`, which upstreams disagree about.
    #[error("the path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// The path contains `\` or `%5C`, which some upstreams treat as `/`.
    #[error("the path contains a backslash")]
    Backslash,
    /// The path contains a NUL byte, literally or as `%00`.
    #[error("the path contains a NUL byte")]
    Nul,
    /// A `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-encoding")]
    InvalidEncoding,
    /// An ASCII control character, literally or percent-encoded.
    #[error("the path contains a control character")]
    ControlCharacter,
    /// Longer than 8192 bytes.
    #[error("the path is longer than 8192 bytes")]
    TooLong,
    /// A `;` (literal or `%3B`): path parameters, which servlet containers strip before
    /// resolving the path (`/public/..;/admin` is `/admin` to Tomcat).
    #[error("the path contains ';' (path parameters are not accepted)")]
    Semicolon,
    /// `%25` followed by the encoding of a dot, slash or backslash: a double-decoding upstream
    /// would see `.`, `/` or `\` where the gateway saw none.
    #[error("the path contains a double-encoded dot, slash or backslash")]
    DoubleEncoded,
    /// The percent-decoded path is not UTF-8 (overlong encodings like `%C0%AE` among them).
    #[error("the decoded path is not valid UTF-8")]
    NotUtf8,
}

/// Normalises the path part of a request target (without the query string).
///
/// Steps, in order: reject what is ambiguous; decode percent-encoded unreserved characters and
/// uppercase the hex of the rest (characters that may not appear literally in a path are
/// encoded); merge repeated slashes; remove dot segments as in RFC 3986 §5.2.4, clamping `..`
/// at the root and keeping a trailing slash.
pub fn normalize_path(raw: &str) -> Result<NormalizedPath, PathError> {
    if is_normal(raw) {
        return Ok(NormalizedPath(raw.to_owned()));
    }
    normalize_in_full(raw)
}

/// Whether `raw` is its own normal form: literal characters only (no `%`, `;`, controls or
/// bytes that get encoded) and no empty, `.` or `..` segment but a trailing slash. Nearly every
/// path is; deciding it takes one pass and no allocation.
fn is_normal(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.len() > MAX_PATH_LEN {
        return false;
    }
    let mut segment = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if b == b'/' {
            if !normal_segment(&bytes[segment..i]) {
                return false;
            }
            segment = i + 1;
        } else if !LITERAL[usize::from(b)] {
            return false;
        }
    }
    // The last segment may be empty: a trailing slash is kept.
    let last = &bytes[segment..];
    last.is_empty() || normal_segment(last)
}

fn normal_segment(segment: &[u8]) -> bool {
    !matches!(segment, b"" | b"." | b"..")
}

/// Bytes that stand for themselves in a normal path ([`is_literal_path_char`] but `;`).
static LITERAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = is_literal_path_char(b as u8) && b as u8 != b';';
        b += 1;
    }
    t
};

/// [`normalize_path`] step by step: canonical encoding, the decoded checks, dot segments.
fn normalize_in_full(raw: &str) -> Result<NormalizedPath, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let decoded = canonical_encoding(raw.as_bytes())?;
    check_decoded(&decoded)?;
    let out = remove_dot_segments(&decoded);
    if out.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    Ok(NormalizedPath(out))
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters that may appear literally in a path (pchar minus `%`, plus `/`).
const fn is_literal_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
        || b == b'/'
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0f)]));
}

/// Rejects the forbidden characters and brings percent-encoding to its one canonical form.
fn canonical_encoding(raw: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            0 => return Err(PathError::Nul),
            0x01..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex_value);
                let lo = raw.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::InvalidEncoding);
                };
                let value = (hi << 4) | lo;
                match value {
                    b'/' => return Err(PathError::EncodedSlash),
                    b';' => return Err(PathError::Semicolon),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    0x01..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => push_encoded(&mut out, v),
                }
                i += 3;
                continue;
            }
            b if is_literal_path_char(b) => out.push(char::from(b)),
            // Space, quotes, brackets, `?`, `#`, non-ASCII bytes...: one spelling only.
            b => push_encoded(&mut out, b),
        }
        i += 1;
    }
    Ok(out)
}

/// Refuses, in a path already in canonical encoding, what an upstream that decodes twice
/// would read differently, and a path whose bytes, once decoded, are not UTF-8.
fn check_decoded(canonical: &str) -> Result<(), PathError> {
    let bytes = canonical.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        // Canonical encoding guarantees two uppercase hex digits after every '%'.
        let escape = bytes.get(i + 1..i + 3).unwrap_or_default();
        let value = escape
            .iter()
            .try_fold(0u8, |acc, &b| hex_value(b).map(|v| (acc << 4) | v))
            .ok_or(PathError::InvalidEncoding)?;
        if value == b'%' {
            // `%25` then `2e`: decoded once more, a dot (likewise slash and backslash).
            let next = bytes
                .get(i + 3..i + 5)
                .unwrap_or_default()
                .to_ascii_lowercase();
            if matches!(next.as_slice(), b"2e" | b"2f" | b"5c") {
                return Err(PathError::DoubleEncoded);
            }
        }
        decoded.push(value);
        i += 3;
    }
    std::str::from_utf8(&decoded).map_err(|_| PathError::NotUtf8)?;
    Ok(())
}

/// Merges repeated slashes and removes `.` and `..` segments. `path` starts with '/'.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let mut last = "";
    for seg in path.split('/').skip(1) {
        match seg {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            s => stack.push(s),
        }
        last = seg;
    }
    // A path ending in `/`, `/.` or `/..` names a directory: keep that.
    let trailing_slash = matches!(last, "" | "." | "..");
    let mut out = String::with_capacity(path.len());
    for seg in &stack {
        out.push('/');
        out.push_str(seg);
    }
    if stack.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// Whether `path` lies under `prefix` on a segment boundary.
///
/// `prefix` is stored without a trailing slash, except for `/` itself which matches every path.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests;
