//! Where a built-in detector may start, found without deciding every position.
//!
//! A block test over [`BLOCK`] positions at a time flags the few positions worth the exact
//! per-position test ([`candidates`]): three digits then two of `[0-9 -]` (cards, SSNs), two
//! capitals (IBANs, AWS key ids), `--` (PEM), `x` (Slack), `J` two ahead (JWT), `_` three or
//! six ahead (GitHub). It is written as plain loops over byte arrays so that the compiler
//! turns it into SIMD (16 bytes an instruction on baseline x86-64; no `unsafe`), and each byte
//! of clean text is classified once. The same pass flags `?e?re?` (any case): where that is
//! "secret" or "bearer", the one or two positions the word makes possible for the AWS secret
//! key and bearer token detectors are added, so those never need a scan of their own.
//!
//! The flags are a superset of where a match can start, so the scanner decides exactly as if
//! it tried every position. Near the end of what has arrived, where the block test would read
//! bytes that are not here yet, positions are tested one by one.

use super::secrets::SECRET_KEYWORD_REACH;
use super::{candidates, AWS_ID, AWS_SECRET, BEARER, CARD, GITHUB, IBAN, JWT, PEM, SLACK, SSN};
use crate::dlp::window::{is_b64, Window};

/// Positions one block test decides.
const BLOCK: usize = 256;
/// Bytes past a position the block test reads.
const AHEAD: usize = 8;

/// Flag: some built-in may start here.
const START: u8 = 1;
/// Flag: "secret" or "bearer" may start here.
const WORD: u8 = 2;

/// The AWS secret key length.
const AWS_SECRET_LEN: usize = 40;

/// The positions of one scanning pass over a window, in increasing order.
pub(crate) struct Positions<'a> {
    w: Window<'a>,
    enabled: u16,
    /// Which terms of the block test apply, as all-ones or zero bytes.
    terms: Terms,
    /// From here on every position is tested one by one.
    exact_from: usize,
    /// The block whose flags are in `flags`: `block_start..block_end`.
    block_start: usize,
    block_end: usize,
    flags: [u8; BLOCK],
    /// Positions a context word opened for a gated detector, ascending.
    gated: &'a mut Vec<usize>,
}

#[derive(Clone, Copy)]
struct Terms {
    digits: u8,
    capitals: u8,
    dashes: u8,
    x: u8,
    jwt: u8,
    underscore: u8,
    words: u8,
}

impl Terms {
    fn new(enabled: u16) -> Self {
        let on = |bits: u16| if enabled & bits != 0 { 0xFF } else { 0 };
        Terms {
            digits: on(CARD | SSN),
            capitals: on(IBAN | AWS_ID),
            dashes: on(PEM),
            x: on(SLACK),
            jwt: on(JWT),
            underscore: on(GITHUB),
            words: on(AWS_SECRET | BEARER),
        }
    }
}

impl<'a> Positions<'a> {
    /// A pass over `w` whose first undecided position is `pos`. `gated` is scratch space.
    pub(crate) fn new(w: Window<'a>, pos: usize, enabled: u16, gated: &'a mut Vec<usize>) -> Self {
        gated.clear();
        // Context words up to this far back open zones that reach `pos`.
        let start = pos.saturating_sub(SECRET_KEYWORD_REACH);
        Positions {
            w,
            enabled,
            terms: Terms::new(enabled),
            exact_from: w.buf.len().saturating_sub(AHEAD),
            block_start: start,
            block_end: start,
            flags: [0; BLOCK],
            gated,
        }
    }

    /// The first position in `from..end` where an enabled built-in may start, or `end`.
    /// `from` never decreases between calls.
    pub(crate) fn next(&mut self, mut from: usize, end: usize) -> usize {
        while from < end {
            if from >= self.exact_from {
                return (from..end)
                    .find(|&p| candidates(&self.w, p, self.enabled) != 0)
                    .unwrap_or(end);
            }
            if from >= self.block_end {
                // Blocks are tested in order, none skipped, so that no context word is missed.
                self.test_block(self.block_end);
                continue;
            }
            let stop = self.block_end.min(end);
            let flagged = first_flag(
                &self.flags,
                from - self.block_start,
                stop - self.block_start,
            )
            .map_or(stop, |i| self.block_start + i);
            let next = self.first_gated(from).map_or(flagged, |g| g.min(flagged));
            if next < stop {
                return next;
            }
            from = stop;
        }
        end
    }

    /// The first gated position at or after `from` (dropping those before it).
    fn first_gated(&mut self, from: usize) -> Option<usize> {
        let stale = self.gated.partition_point(|&g| g < from);
        self.gated.drain(..stale);
        self.gated.first().copied()
    }

    /// Flags the block from `start` and handles the context words in it.
    fn test_block(&mut self, start: usize) {
        let mut bytes = [0u8; BLOCK + AHEAD];
        let have = self.w.buf.get(start..).unwrap_or_default();
        let n = have.len().min(bytes.len());
        bytes[..n].copy_from_slice(&have[..n]);
        self.block_start = start;
        self.block_end = (start + BLOCK).min(self.exact_from);
        if flag_block(&bytes, self.terms, &mut self.flags) & WORD == 0 {
            return;
        }
        let mut i = 0;
        while self.block_start + i < self.block_end {
            if self.flags[i] & WORD != 0 {
                self.context_word(self.block_start + i);
            }
            i += 1;
        }
    }

    /// If "secret" or "bearer" (any case) starts at `k`, adds the positions it opens.
    fn context_word(&mut self, k: usize) {
        let Some(word) = self.w.buf.get(k..k + 6) else {
            return;
        };
        if self.enabled & AWS_SECRET != 0 && word.eq_ignore_ascii_case(b"secret") {
            self.after_secret(k);
        } else if self.enabled & BEARER != 0 && word.eq_ignore_ascii_case(b"bearer") {
            self.after_bearer(k);
        }
    }

    /// An AWS secret key is a maximal run of exactly 40 base64 bytes starting 6 to 64 bytes
    /// after "secret". Every such run contains `k + 45` or `k + 64`, so only the runs through
    /// those two bytes need looking at.
    fn after_secret(&mut self, k: usize) {
        let first = k + 6;
        let last = k + SECRET_KEYWORD_REACH;
        if !self.w.eof && last + AWS_SECRET_LEN >= self.w.buf.len() {
            // The runs may go on past what has arrived: decide that stretch one by one.
            self.test_exactly_from(first);
            return;
        }
        for probe in [first + AWS_SECRET_LEN - 1, last] {
            if let Some(s) = self.b64_run_of_len(probe, AWS_SECRET_LEN) {
                if (first..=last).contains(&s) {
                    self.add_gated(s);
                }
            }
        }
    }

    /// The start of the maximal base64 run through `at`, if it is `len` bytes long.
    fn b64_run_of_len(&self, at: usize, len: usize) -> Option<usize> {
        let b64 = |i: usize| self.w.buf.get(i).copied().is_some_and(is_b64);
        if !b64(at) {
            return None;
        }
        let mut start = at;
        while start > 0 && at - start < len && b64(start - 1) {
            start -= 1;
        }
        let mut end = at + 1;
        while end - start <= len && b64(end) {
            end += 1;
        }
        (end - start == len).then_some(start)
    }

    /// A bearer token starts after "bearer" and one to four spaces or tabs.
    fn after_bearer(&mut self, k: usize) {
        let first = k + 6;
        if !self.w.eof && first + 5 >= self.w.buf.len() {
            self.test_exactly_from(first);
            return;
        }
        let spaces = (first..first + 5)
            .take_while(|&i| matches!(self.w.buf.get(i), Some(b' ' | b'\t')))
            .count();
        if (1..=4).contains(&spaces) {
            self.add_gated(first + spaces);
        }
    }

    fn add_gated(&mut self, p: usize) {
        let at = self.gated.partition_point(|&g| g < p);
        if self.gated.get(at) != Some(&p) {
            self.gated.insert(at, p);
        }
    }

    fn test_exactly_from(&mut self, p: usize) {
        self.exact_from = self.exact_from.min(p);
        self.block_end = self.block_end.min(self.exact_from);
    }
}

/// The index of the first byte of `flags[from..to]` with [`START`] set.
fn first_flag(flags: &[u8; BLOCK], from: usize, to: usize) -> Option<usize> {
    let mut i = from;
    while i < to {
        // Eight flags at a time: clean text has few.
        if let Some(eight) = flags.get(i..i + 8).filter(|_| i + 8 <= to) {
            let word = u64::from_le_bytes(eight.try_into().unwrap_or_default());
            let starts = word & u64::from_le_bytes([START; 8]);
            if starts == 0 {
                i += 8;
                continue;
            }
            return Some(i + starts.trailing_zeros() as usize / 8);
        }
        if flags[i] & START != 0 {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The block test: flags for `bytes[..BLOCK]`, reading up to [`AHEAD`] bytes further.
/// Returns the union of all flags. Every loop here runs over whole arrays of fixed length
/// with no early exit, so that each compiles to SIMD.
fn flag_block(bytes: &[u8; BLOCK + AHEAD], t: Terms, flags: &mut [u8; BLOCK]) -> u8 {
    let digit = class(bytes, |b| b.is_ascii_digit());
    let number = class(bytes, |b| b.is_ascii_digit() || b == b' ' || b == b'-');
    let capital = class(bytes, |b| b.is_ascii_uppercase());
    let e = class(bytes, |b| b | 0x20 == b'e');
    let r = class(bytes, |b| b | 0x20 == b'r');
    let is = |b: u8, want: u8| if b == want { 0xFF } else { 0 };
    let mut any = 0;
    for i in 0..BLOCK {
        let numbers = digit[i] & digit[i + 1] & digit[i + 2] & number[i + 3] & number[i + 4];
        let start = (numbers & t.digits)
            | (capital[i] & capital[i + 1] & t.capitals)
            | (is(bytes[i], b'-') & is(bytes[i + 1], b'-') & t.dashes)
            | (is(bytes[i], b'x') & t.x)
            | (is(bytes[i + 2], b'J') & t.jwt)
            | ((is(bytes[i + 3], b'_') | is(bytes[i + 6], b'_')) & t.underscore);
        let word = e[i + 1] & r[i + 3] & e[i + 4] & t.words;
        let f = (start & START) | (word & WORD);
        flags[i] = f;
        any |= f;
    }
    any
}

/// All-ones where `f` holds, zero elsewhere.
#[inline(always)]
fn class(bytes: &[u8; BLOCK + AHEAD], f: impl Fn(u8) -> bool) -> [u8; BLOCK + AHEAD] {
    let mut c = [0u8; BLOCK + AHEAD];
    for (c, &b) in c.iter_mut().zip(bytes) {
        *c = if f(b) { 0xFF } else { 0 };
    }
    c
}
