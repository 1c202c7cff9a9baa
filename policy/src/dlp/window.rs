//! The view of a body a detector decides on: the bytes received so far and whether more may come.
//!
//! Detectors read ahead only through [`Window::at`], which answers [`NeedMore`] when the byte is
//! not here yet and the body has not ended. A detector that never peeks past the window except
//! through it decides the same way for any chunking of the body: this is what makes streaming
//! exact.

/// The decision at this position depends on bytes that have not arrived yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NeedMore;

/// A decision that may have to wait for more bytes.
pub(crate) type Scan<T> = Result<T, NeedMore>;

/// Bytes kept before the first undecided position, for look-behind (keywords before a secret,
/// `Bearer` before a token, word boundaries). Every detector looks back at most this far.
pub(crate) const LOOK_BEHIND: usize = 128;

/// The buffered part of a body.
#[derive(Clone, Copy)]
pub(crate) struct Window<'a> {
    /// Bytes from some point of the body on; index 0 is either the body's first byte or at
    /// least [`LOOK_BEHIND`] bytes before any position a detector is asked about.
    pub(crate) buf: &'a [u8],
    /// Whether the body ends with `buf`.
    pub(crate) eof: bool,
}

impl Window<'_> {
    /// The byte at `i`; `None` past the end of the body.
    #[inline]
    pub(crate) fn at(&self, i: usize) -> Scan<Option<u8>> {
        match self.buf.get(i) {
            Some(&b) => Ok(Some(b)),
            None if self.eof => Ok(None),
            None => Err(NeedMore),
        }
    }

    /// The byte `back` places before `i`; `None` before the start of what is kept, which is
    /// the start of the body for any position a detector is asked about.
    #[inline]
    pub(crate) fn before(&self, i: usize, back: usize) -> Option<u8> {
        i.checked_sub(back).and_then(|j| self.buf.get(j)).copied()
    }

    /// Whether the bytes from `i` on are `lit` (`false` at the end of the body).
    pub(crate) fn starts_with(&self, i: usize, lit: &[u8]) -> Scan<bool> {
        for (k, &want) in lit.iter().enumerate() {
            if self.at(i + k)? != Some(want) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Length of the run of bytes with `class` from `i`, reading at most `cap + 1` bytes.
    /// Returns `cap + 1` when the run is longer than `cap`.
    pub(crate) fn run(&self, i: usize, cap: usize, class: fn(u8) -> bool) -> Scan<usize> {
        let mut n = 0;
        while n <= cap {
            match self.at(i + n)? {
                Some(b) if class(b) => n += 1,
                _ => return Ok(n),
            }
        }
        Ok(n)
    }

    /// Whether a word may start at `i`: the byte before is not a word character, or is the
    /// letter of a JSON escape such as `\n`.
    pub(crate) fn word_start(&self, i: usize) -> bool {
        match self.before(i, 1) {
            None => true,
            Some(b) if !is_word(b) => true,
            Some(b'n' | b'r' | b't') => self.before(i, 2) == Some(b'\\'),
            Some(_) => false,
        }
    }

    /// Whether a word may end just before `i`: the next byte is not a word character.
    pub(crate) fn word_end(&self, i: usize) -> Scan<bool> {
        Ok(!self.at(i)?.is_some_and(is_word))
    }
}

/// `[A-Za-z0-9_]`
#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `[A-Za-z0-9_-]`, the base64url alphabet.
#[inline]
pub(crate) fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `[A-Za-z0-9+/]`, the standard base64 alphabet without padding.
#[inline]
pub(crate) fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_wait_unless_the_body_ended() {
        let open = Window {
            buf: b"ab",
            eof: false,
        };
        assert_eq!(open.at(1), Ok(Some(b'b')));
        assert_eq!(open.at(2), Err(NeedMore));
        let closed = Window {
            buf: b"ab",
            eof: true,
        };
        assert_eq!(closed.at(2), Ok(None));
        assert_eq!(closed.run(0, 5, |b| b.is_ascii_lowercase()), Ok(2));
        assert_eq!(open.run(0, 5, |b| b.is_ascii_lowercase()), Err(NeedMore));
        assert_eq!(open.run(0, 1, |b| b.is_ascii_lowercase()), Ok(2));
    }

    #[test]
    fn json_escapes_start_words() {
        let w = Window {
            buf: b"a\\n4 xn4",
            eof: true,
        };
        assert!(w.word_start(0));
        assert!(w.word_start(3));
        assert!(!w.word_start(7));
    }
}
