//! JSON string escapes decoded for the scanner: `\u0031` is read as `1`, `\/` as `/`, so a
//! card number or an SSN cannot hide behind escapes. Streaming: an escape cut by a chunk
//! boundary is held (at most five bytes) until it is whole.
//!
//! Escapes are decoded wherever they appear, not only inside strings: in valid JSON a
//! backslash only occurs inside strings, and a body that is not JSON (the gateway cannot know
//! how the upstream reads it) is safer read this way too. Surrogate escapes (`\uD83D`) become
//! U+FFFD: no detector reads characters outside the BMP. An invalid escape is read as it is.

use memchr::memchr;

use super::view::ViewOut;

/// The JSON escape decoder of one body (or part).
#[derive(Debug, Default)]
pub(super) struct JsonEscapes {
    /// The start of an escape cut by the chunk boundary.
    held: Vec<u8>,
}

/// What the bytes at a backslash are.
enum Escape {
    /// More bytes are needed to tell.
    Incomplete,
    /// Not an escape: the backslash is read as it is.
    Invalid,
    /// An escape of `len` bytes decoding to `bytes[..n]`.
    Decoded {
        len: usize,
        bytes: [u8; 4],
        n: usize,
    },
}

impl JsonEscapes {
    pub(super) fn feed(&mut self, input: &[u8], out: &mut ViewOut) {
        let joined;
        let data: &[u8] = if self.held.is_empty() {
            input
        } else {
            let mut held = std::mem::take(&mut self.held);
            held.extend_from_slice(input);
            joined = held;
            &joined
        };
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            let Some(k) = memchr(b'\\', rest) else {
                out.same(rest);
                break;
            };
            out.same(&rest[..k]);
            let at = i + k;
            match escape(&data[at..]) {
                Escape::Incomplete => {
                    self.held = data[at..].to_vec();
                    break;
                }
                Escape::Invalid => {
                    out.same(b"\\");
                    i = at + 1;
                }
                Escape::Decoded { len, bytes, n } => {
                    out.decoded(len, &bytes[..n]);
                    i = at + len;
                }
            }
        }
    }

    /// Ends the body: a cut escape is read as it is.
    pub(super) fn finish(&mut self, out: &mut ViewOut) {
        out.same(&std::mem::take(&mut self.held));
    }
}

/// Reads the escape at `s[0] == b'\\'`.
fn escape(s: &[u8]) -> Escape {
    let one = |b: u8| Escape::Decoded {
        len: 2,
        bytes: [b, 0, 0, 0],
        n: 1,
    };
    let Some(&c) = s.get(1) else {
        return Escape::Incomplete;
    };
    match c {
        b'"' | b'\\' | b'/' => one(c),
        b'b' => one(0x08),
        b'f' => one(0x0c),
        b'n' => one(b'\n'),
        b'r' => one(b'\r'),
        b't' => one(b'\t'),
        b'u' => {
            let digits = s.get(2..).unwrap_or_default();
            let digits = &digits[..digits.len().min(4)];
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return Escape::Invalid;
            }
            if digits.len() < 4 {
                return Escape::Incomplete;
            }
            let unit = digits.iter().fold(0u32, |acc, d| acc * 16 + hex_value(*d));
            let ch = char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER);
            let mut bytes = [0u8; 4];
            let n = ch.encode_utf8(&mut bytes).len();
            Escape::Decoded { len: 6, bytes, n }
        }
        _ => Escape::Invalid,
    }
}

fn hex_value(d: u8) -> u32 {
    match d {
        b'0'..=b'9' => u32::from(d - b'0'),
        b'a'..=b'f' => u32::from(d - b'a' + 10),
        b'A'..=b'F' => u32::from(d - b'A' + 10),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut json = JsonEscapes::default();
        let mut out = ViewOut::default();
        for c in chunks {
            json.feed(c, &mut out);
        }
        json.finish(&mut out);
        let accounted = out.source_len();
        (out.view, accounted)
    }

    #[test]
    fn escapes_are_decoded_across_chunk_boundaries() {
        let body: &[u8] = br#"{"ssn":"\u0031\u00323-45-6789","u":"a\/b","q":"\"","e":"\u00e9"}"#;
        let want = "{\"ssn\":\"123-45-6789\",\"u\":\"a/b\",\"q\":\"\"\",\"e\":\"\u{e9}\"}";
        for cut in 0..body.len() {
            let (v, accounted) = view(&[&body[..cut], &body[cut..]]);
            assert_eq!(String::from_utf8(v).unwrap(), want, "cut at {cut}");
            assert_eq!(accounted, body.len());
        }
    }

    #[test]
    fn invalid_and_cut_escapes_are_read_as_they_are() {
        assert_eq!(view(&[br"a\x\u12G4"]).0, br"a\x\u12G4");
        assert_eq!(view(&[br"a\u00"]).0, br"a\u00");
        assert_eq!(view(&[br"\\u0031"]).0, br"\u0031");
        assert_eq!(view(&[br"\ud83d"]).0, "\u{fffd}".as_bytes());
    }
}
