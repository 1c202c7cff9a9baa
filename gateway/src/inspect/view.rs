//! The scanner reads a *view* of a body — JSON escapes decoded, multipart parts decoded from
//! base64 or quoted-printable — while what is forwarded is the body itself. A view is built
//! from spans: each says how many body ("source") bytes gave how many view bytes, and whether
//! the two are the same bytes. The [`SourceMap`] releases source bytes only once the scanner
//! has released every view byte they gave, so a block still stops the body before any byte of
//! the match leaves, and it maps each redaction back onto the source — which it can do exactly
//! only where the redacted view bytes are the source bytes; elsewhere it refuses.

use std::collections::VecDeque;

use portcullis_policy::Redaction;

/// `source` body bytes gave `view` view bytes; `same`: they are the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    source: usize,
    view: usize,
    same: bool,
}

/// What a view stage produced from some input: the view bytes and the spans that account
/// for every input byte it consumed (bytes it holds back are accounted later).
#[derive(Debug, Default)]
pub(super) struct ViewOut {
    pub(super) view: Vec<u8>,
    spans: Vec<Span>,
    /// A part in an encoding the tenant lets pass was scanned as it is.
    pub(super) unknown_encoding: bool,
}

impl ViewOut {
    /// Source bytes that are their own view.
    pub(super) fn same(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.view.extend_from_slice(bytes);
        match self.spans.last_mut() {
            Some(last) if last.same => {
                last.source += bytes.len();
                last.view += bytes.len();
            }
            _ => self.spans.push(Span {
                source: bytes.len(),
                view: bytes.len(),
                same: true,
            }),
        }
    }

    /// `source` bytes that decode to `view`.
    pub(super) fn decoded(&mut self, source: usize, view: &[u8]) {
        if source == 0 && view.is_empty() {
            return;
        }
        self.view.extend_from_slice(view);
        match self.spans.last_mut() {
            Some(last) if !last.same => {
                last.source += source;
                last.view += view.len();
            }
            _ => self.spans.push(Span {
                source,
                view: view.len(),
                same: false,
            }),
        }
    }

    /// Source bytes accounted for so far.
    #[cfg(test)]
    pub(super) fn source_len(&self) -> usize {
        self.spans.iter().map(|s| s.source).sum()
    }
}

/// A redaction fell on view bytes that are not the source's own (inside an escape or an
/// encoded part): the source cannot be redacted exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Unredactable;

/// Source bytes not yet released, and the spans that map them to the view.
#[derive(Debug, Default)]
pub(super) struct SourceMap {
    pending: VecDeque<u8>,
    spans: VecDeque<Span>,
    /// View offset where the first span starts.
    view_at: usize,
}

impl SourceMap {
    /// Adds source bytes and the spans a stage made of them (and of bytes held before).
    pub(super) fn push(&mut self, source: &[u8], out: &ViewOut) {
        self.pending.extend(source);
        self.spans.extend(out.spans.iter().copied());
    }

    /// Releases the source of the first `released` view bytes into `out`, with `redactions`
    /// (view offsets, in order) applied.
    pub(super) fn release(
        &mut self,
        released: usize,
        redactions: Vec<Redaction>,
        out: &mut Vec<u8>,
    ) -> Result<(), Unredactable> {
        for r in redactions {
            self.advance(r.start, out);
            if self.view_at != r.start {
                return Err(Unredactable);
            }
            let mut left = r.end - r.start;
            while left > 0 {
                let Some(front) = self.spans.front_mut() else {
                    return Err(Unredactable);
                };
                if !front.same {
                    return Err(Unredactable);
                }
                let k = left.min(front.view);
                self.pending.drain(..k);
                front.view -= k;
                front.source -= k;
                self.view_at += k;
                left -= k;
                if front.view == 0 {
                    self.spans.pop_front();
                }
            }
            out.extend_from_slice(&r.mask);
        }
        self.advance(released, out);
        Ok(())
    }

    /// Releases whole spans up to view offset `to`, splitting a same-bytes span at it.
    fn advance(&mut self, to: usize, out: &mut Vec<u8>) {
        while let Some(front) = self.spans.front_mut() {
            if self.view_at + front.view <= to {
                let n = front.source.min(self.pending.len());
                move_front(&mut self.pending, n, out);
                self.view_at += front.view;
                self.spans.pop_front();
                continue;
            }
            if front.same && self.view_at < to {
                let k = to - self.view_at;
                move_front(&mut self.pending, k, out);
                front.view -= k;
                front.source -= k;
                self.view_at = to;
            }
            break;
        }
    }

    /// Whether every source byte has been released (after the stage and scanner finished).
    pub(super) fn is_drained(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Moves the first `n` pending bytes to `out` as (at most two) slice copies: draining a
/// `VecDeque` through an iterator pushes byte by byte, which cost a fifth of a request.
fn move_front(pending: &mut VecDeque<u8>, n: usize, out: &mut Vec<u8>) {
    let n = n.min(pending.len());
    let (front, back) = pending.as_slices();
    let first = n.min(front.len());
    out.extend_from_slice(&front[..first]);
    out.extend_from_slice(&back[..n - first]);
    pending.drain(..n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redaction(start: usize, end: usize) -> Redaction {
        Redaction {
            start,
            end,
            mask: b"[X]".to_vec().into_boxed_slice(),
        }
    }

    #[test]
    fn source_is_released_only_as_far_as_the_view_and_redacted_where_it_is_the_same() {
        // Source `ab\u0031cd` -> view `ab1cd`.
        let mut out = ViewOut::default();
        out.same(b"ab");
        out.decoded(6, b"1");
        out.same(b"cd");
        let mut map = SourceMap::default();
        map.push(br"ab\u0031cd", &out);
        let mut sent = Vec::new();
        map.release(2, vec![], &mut sent).unwrap();
        assert_eq!(sent, b"ab");
        // The escape is released only with its view byte.
        map.release(2, vec![], &mut sent).unwrap();
        assert_eq!(sent, b"ab");
        map.release(4, vec![redaction(3, 4)], &mut sent).unwrap();
        assert_eq!(sent, br"ab\u0031[X]");
        map.release(5, vec![], &mut sent).unwrap();
        assert_eq!(sent, br"ab\u0031[X]d");
        assert!(map.is_drained());
    }

    #[test]
    fn a_redaction_touching_an_escape_is_refused() {
        let mut out = ViewOut::default();
        out.same(b"ab");
        out.decoded(6, b"1");
        out.same(b"cd");
        let mut map = SourceMap::default();
        map.push(br"ab\u0031cd", &out);
        let mut sent = Vec::new();
        assert_eq!(
            map.release(5, vec![redaction(1, 4)], &mut sent),
            Err(Unredactable)
        );
        assert_eq!(sent, b"a", "nothing of the match left");
    }
}
