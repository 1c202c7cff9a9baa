//! Keys and tokens: PEM private keys, AWS, GitHub and Slack credentials, bearer tokens, JWTs.

use super::MAX_SPAN;
use crate::dlp::window::{is_b64, is_b64url, is_word, Scan, Window};

const PEM_LABELS: [&[u8]; 6] = [b"RSA ", b"EC ", b"DSA ", b"ENCRYPTED ", b"OPENSSH ", b""];

/// `PRIVATE KEY-----` after one of the labels, from `i`; the end of the marker.
fn pem_label_end(w: &Window<'_>, i: usize) -> Scan<Option<usize>> {
    for label in PEM_LABELS {
        if w.starts_with(i, label)? && w.starts_with(i + label.len(), b"PRIVATE KEY-----")? {
            return Ok(Some(i + label.len() + 16));
        }
    }
    Ok(None)
}

/// Bytes that occur inside a PEM block, also when it sits in a JSON string (`\n` escapes) or
/// carries `Proc-Type`/`DEK-Info` headers.
fn is_pem_body(b: u8) -> bool {
    is_b64(b)
        || matches!(
            b,
            b'=' | b' ' | b'\t' | b'\r' | b'\n' | b'\\' | b':' | b',' | b'-'
        )
}

/// A PEM private key, from `-----BEGIN … PRIVATE KEY-----` through the matching END line. If
/// the END line is missing the match runs to the end of the base64 body; either way it is cut
/// at [`MAX_SPAN`]. It never ends inside a backslash escape, so JSON around it stays valid.
pub(super) fn private_key(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    if !w.starts_with(p, b"-----BEGIN ")? {
        return Ok(None);
    }
    let Some(header_end) = pem_label_end(w, p + 11)? else {
        return Ok(None);
    };
    let limit = p + MAX_SPAN;
    let mut i = header_end;
    let end = loop {
        if i >= limit {
            break limit;
        }
        match w.at(i)? {
            Some(b'-') if w.starts_with(i, b"-----END ")? => match pem_label_end(w, i + 9)? {
                Some(e) => break e.min(limit),
                None => i += 1,
            },
            Some(b) if is_pem_body(b) => i += 1,
            _ => break i,
        }
    };
    let trailing = w
        .buf
        .get(header_end.min(end)..end)
        .unwrap_or_default()
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    Ok(Some(end - trailing % 2))
}

/// AWS access key id: `AKIA` or `ASIA` and 16 of `[A-Z0-9]`, as a whole word.
pub(super) fn aws_access_key_id(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    if !(w.starts_with(p, b"AKIA")? || w.starts_with(p, b"ASIA")?) {
        return Ok(None);
    }
    let n = w.run(p + 4, 16, |b| b.is_ascii_uppercase() || b.is_ascii_digit())?;
    Ok((n == 16 && w.word_end(p + 20)?).then_some(p + 20))
}

/// Cheap test before [`aws_secret_key`]: a run of exactly 40 base64 characters from `p` has
/// one at `p + 39` and none at `p + 40` (when those bytes have arrived).
#[inline]
pub(super) fn may_be_aws_secret(w: &Window<'_>, p: usize) -> bool {
    w.buf.get(p + 39).is_none_or(|&b| is_b64(b)) && !w.buf.get(p + 40).copied().is_some_and(is_b64)
}

/// Cheap test before [`bearer_token`]: a space or tab before `p`, and an `r` before the spaces.
#[inline]
pub(super) fn may_follow_bearer(w: &Window<'_>, p: usize) -> bool {
    let mut back = 1;
    while matches!(w.before(p, back), Some(b' ' | b'\t')) {
        if back > 4 {
            return false;
        }
        back += 1;
    }
    back > 1 && matches!(w.before(p, back), Some(b'r' | b'R'))
}

/// How far back the word "secret" is looked for before an AWS secret key.
pub(super) const SECRET_KEYWORD_REACH: usize = 64;

/// AWS secret access key: exactly 40 of `[A-Za-z0-9+/]` mixing cases and digits, with
/// "secret" (any case, as in `aws_secret_access_key` or `SecretAccessKey`) in the 64 bytes
/// before it. Without the keyword a 40-character base64 word is too common to report.
pub(super) fn aws_secret_key(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    if w.before(p, 1).is_some_and(is_b64) {
        return Ok(None);
    }
    let n = w.run(p, 40, is_b64)?;
    if n != 40 || w.at(p + 40)? == Some(b'=') {
        return Ok(None);
    }
    let Some(key) = w.buf.get(p..p + 40) else {
        return Ok(None);
    };
    let mixed = key.iter().any(u8::is_ascii_uppercase)
        && key.iter().any(u8::is_ascii_lowercase)
        && key.iter().any(u8::is_ascii_digit);
    if !mixed {
        return Ok(None);
    }
    let before = w
        .buf
        .get(p.saturating_sub(SECRET_KEYWORD_REACH)..p)
        .unwrap_or_default();
    let keyword = before
        .windows(6)
        .any(|win| win.eq_ignore_ascii_case(b"secret"));
    Ok(keyword.then_some(p + 40))
}

/// GitHub token: `ghp_`, `gho_`, `ghu_`, `ghs_` or `ghr_` and 36 alphanumerics, or
/// `github_pat_` and 82 of `[A-Za-z0-9_]`, as a whole word.
pub(super) fn github_token(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    let classic = w.starts_with(p, b"gh")?
        && w.at(p + 2)?.is_some_and(|b| b"pousr".contains(&b))
        && w.at(p + 3)? == Some(b'_');
    if classic {
        let n = w.run(p + 4, 36, |b| b.is_ascii_alphanumeric())?;
        return Ok((n == 36 && w.word_end(p + 40)?).then_some(p + 40));
    }
    if w.starts_with(p, b"github_pat_")? {
        let n = w.run(p + 11, 82, is_word)?;
        return Ok((n == 82).then_some(p + 93));
    }
    Ok(None)
}

/// Slack token: `xox[baprs]-` and at least 10 of `[A-Za-z0-9-]`.
pub(super) fn slack_token(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    let head = w.starts_with(p, b"xox")?
        && w.at(p + 3)?.is_some_and(|b| b"baprs".contains(&b))
        && w.at(p + 4)? == Some(b'-');
    if !head {
        return Ok(None);
    }
    let cap = 256;
    let n = w.run(p + 5, cap, |b| b.is_ascii_alphanumeric() || b == b'-')?;
    Ok((n >= 10).then_some(p + 5 + n.min(cap)))
}

pub(super) fn is_bearer_char(b: u8) -> bool {
    is_b64url(b) || matches!(b, b'.' | b'~' | b'+' | b'/' | b'=')
}

/// The fewest token characters a bearer token has.
pub(super) const BEARER_TOKEN_MIN: usize = 20;

/// Bearer token: at least 20 token characters after the word `bearer` (any case) and one to
/// four spaces, as in `Authorization: Bearer …`. Only the token is matched.
pub(super) fn bearer_token(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    let mut spaces = 0;
    while spaces < 5 && matches!(w.before(p, spaces + 1), Some(b' ' | b'\t')) {
        spaces += 1;
    }
    if !(1..=4).contains(&spaces) {
        return Ok(None);
    }
    let word_at = p.checked_sub(spaces + 6);
    let said_bearer = word_at
        .and_then(|i| w.buf.get(i..i + 6))
        .is_some_and(|word| word.eq_ignore_ascii_case(b"bearer"))
        && word_at.is_some_and(|i| !w.before(i, 1).is_some_and(is_word));
    if !said_bearer {
        return Ok(None);
    }
    let n = w.run(p, MAX_SPAN, is_bearer_char)?;
    Ok((n >= BEARER_TOKEN_MIN).then_some(p + n.min(MAX_SPAN)))
}

/// JWT: `eyJ…` header, payload and (possibly empty) signature in base64url, where the header
/// decodes to JSON naming an `"alg"`. Cut at [`MAX_SPAN`].
pub(super) fn jwt(w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    if w.before(p, 1).is_some_and(|b| b == b'-' || b == b'.') || !w.starts_with(p, b"eyJ")? {
        return Ok(None);
    }
    const HEADER_MAX: usize = 1024;
    let header = w.run(p, HEADER_MAX, is_b64url)?;
    if header > HEADER_MAX || w.at(p + header)? != Some(b'.') {
        return Ok(None);
    }
    let limit = p + MAX_SPAN;
    let payload_at = p + header + 1;
    let payload = w.run(payload_at, limit.saturating_sub(payload_at), is_b64url)?;
    if payload == 0 {
        return Ok(None);
    }
    let mut end = payload_at + payload;
    if end < limit {
        if w.at(end)? != Some(b'.') {
            return Ok(None);
        }
        let sig_at = end + 1;
        let sig = w.run(sig_at, limit.saturating_sub(sig_at), is_b64url)?;
        end = sig_at + sig;
    }
    let names_alg = decode_b64url(w.buf.get(p..p + header).unwrap_or_default())
        .is_some_and(|json| json.windows(5).any(|win| win == b"\"alg\""));
    Ok(names_alg.then_some(end.min(limit)))
}

/// Decodes unpadded base64url; `None` if malformed.
fn decode_b64url(text: &[u8]) -> Option<Vec<u8>> {
    fn val(b: u8) -> Option<u32> {
        Some(u32::from(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        }))
    }
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.chunks(4) {
        let mut acc = 0u32;
        for &b in chunk {
            acc = (acc << 6) | val(b)?;
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
            2 => out.push((acc >> 4) as u8),
            _ => return None,
        }
    }
    Some(out)
}
