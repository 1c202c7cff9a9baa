//! Where a built-in detector may start, found without deciding every position.
//!
//! A block test over [`BLOCK`] positions at a time flags the few positions worth the exact
//! per-position test ([`candidates`]), from one byte of class bits per input byte:
//! - three digits then two of `[0-9 -]`, not after a digit (cards, SSNs);
//! - two capitals then two digits or two capitals, not after a capital (IBANs, AWS key ids);
//! - the last five dashes of a run (PEM `-----BEGIN`);
//! - `x` or `J` two ahead of `x`, `J` or `e`, not after one of those (Slack `xox`, JWT `eyJ`);
//! - the first `_` three or six ahead, none just before (GitHub `ghp_`, `github_pat_`);
//! - `?e?re?` in any case, perhaps "secret" or "bearer": where it is, the one or two positions
//!   the word makes possible for the AWS secret key and bearer token detectors are added.
//!
//! The test is plain loops over fixed-size byte arrays, which the compiler turns into SIMD
//! (16 bytes an instruction on baseline x86-64, no `unsafe`): each byte of clean text is
//! classified once, and validation (Luhn, mod-97, JWT header…) runs only where a flag is.
//! The flags are a superset of where a match can start, so the scanner decides exactly as if
//! it tried every position. Near the end of what has arrived, where the block test would read
//! bytes that are not here yet, positions are tested one by one.

use std::ops::Range;

use super::secrets::{is_bearer_char, BEARER_TOKEN_MIN, SECRET_KEYWORD_REACH};
use super::{candidates, AWS_ID, AWS_SECRET, BEARER, CARD, GITHUB, IBAN, JWT, PEM, SLACK, SSN};
use crate::dlp::window::{is_b64, Window};

#[cfg(test)]
mod tests;

/// Positions one block test decides.
const BLOCK: usize = 256;
/// Positions per bit of the summary the block test returns.
const GROUP: usize = BLOCK / 8;
/// Bytes past a position the block test may read: it reads seven; fifteen make [`WINDOW`] a
/// whole number of 16-byte vectors, so that classifying it has no scalar remainder.
const AHEAD: usize = 15;
/// Bytes one block test reads: one before the block, the block, and [`AHEAD`].
const WINDOW: usize = 1 + BLOCK + AHEAD;

/// Flags (any of these bits): some built-in may start here.
const START: u8 = DIGIT | CAPITAL | DASH | X_OR_J | UNDERSCORE;
/// Flag: "secret" or "bearer" may start here (the bit of `e`, where the term leaves it).
const WORD: u8 = E;

/// The AWS secret key length.
const AWS_SECRET_LEN: usize = 40;

/// The positions of one scanning pass over a window, in increasing order.
pub(crate) struct Positions<'a> {
    w: Window<'a>,
    enabled: u16,
    /// The byte classes the block test computes.
    classes: u8,
    /// From here on every position is tested one by one.
    exact_from: usize,
    /// The block whose flags are in `flags`: `block_start..block_end`.
    block_start: usize,
    block_end: usize,
    flags: [u8; BLOCK],
    /// Offsets in the block of the positions flagged [`START`], ascending, and how many.
    starts: [u8; BLOCK],
    start_count: usize,
    /// The first entry of `starts` not yet passed.
    start_next: usize,
    /// Positions a context word opened for a gated detector, ascending.
    gated: &'a mut Vec<usize>,
    /// Bytes known to be inside one base64 run longer than an AWS secret key.
    long_run: Range<usize>,
}

/// The byte classes of the block test, one bit each.
const DIGIT: u8 = 1;
/// `[0-9 -]`
const NUMBER: u8 = 2;
const CAPITAL: u8 = 4;
const DASH: u8 = 8;
/// `x` or `J`: the third byte of `xox` (Slack) and of `eyJ` (JWT).
const X_OR_J: u8 = 16;
const UNDERSCORE: u8 = 32;
/// `e` or `E` (two places left of it in a class byte: `X_OR_J`)
const E: u8 = 64;
/// `r` or `R`
const R: u8 = 128;

/// The classes some enabled detector needs: the terms of the others never fire.
fn classes(enabled: u16) -> u8 {
    let bit = |bits: u16, class: u8| if enabled & bits != 0 { class } else { 0 };
    bit(CARD | SSN | IBAN, DIGIT)
        | bit(CARD | SSN, NUMBER)
        | bit(IBAN | AWS_ID, CAPITAL)
        | bit(PEM, DASH)
        | bit(SLACK | JWT, X_OR_J)
        | bit(GITHUB, UNDERSCORE)
        | bit(AWS_SECRET | BEARER | JWT, E)
        | bit(AWS_SECRET | BEARER, R)
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
            classes: classes(enabled),
            exact_from: w.buf.len().saturating_sub(AHEAD),
            block_start: start,
            block_end: start,
            flags: [0; BLOCK],
            starts: [0; BLOCK],
            start_count: 0,
            start_next: 0,
            gated,
            long_run: 0..0,
        }
    }

    /// A pass that tests every position one by one (tests only).
    #[cfg(test)]
    pub(crate) fn exhaustive(
        w: Window<'a>,
        pos: usize,
        enabled: u16,
        gated: &'a mut Vec<usize>,
    ) -> Self {
        let mut p = Positions::new(w, pos, enabled, gated);
        p.exact_from = 0;
        p
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
            let flagged = self.first_start(from).unwrap_or(stop);
            let next = self.first_gated(from).map_or(flagged, |g| g.min(flagged));
            if next < stop {
                return next;
            }
            from = stop;
        }
        end
    }

    /// The first position flagged [`START`] in this block at or after `from`.
    fn first_start(&mut self, from: usize) -> Option<usize> {
        while self.start_next < self.start_count {
            let p = self.block_start + usize::from(self.starts[self.start_next]);
            if p >= from {
                return Some(p);
            }
            self.start_next += 1;
        }
        None
    }

    /// The first gated position at or after `from` (dropping those before it).
    fn first_gated(&mut self, from: usize) -> Option<usize> {
        let stale = self.gated.partition_point(|&g| g < from);
        self.gated.drain(..stale);
        self.gated.first().copied()
    }

    /// Flags the block from `start`, lists its [`START`] positions and handles the context
    /// words in it.
    fn test_block(&mut self, start: usize) {
        self.block_start = start;
        self.block_end = (start + BLOCK).min(self.exact_from);
        self.start_count = 0;
        self.start_next = 0;
        let window = start
            .checked_sub(1)
            .and_then(|s| self.w.buf.get(s..s + WINDOW));
        let groups = match window {
            Some(bytes) => flag_block(bytes, self.classes, &mut self.flags),
            None => {
                // The first block of the body or the last of what has arrived: padded with
                // zero bytes, which are in no class (as if nothing were there).
                let mut bytes = [0u8; WINDOW];
                let (lead, from) = start.checked_sub(1).map_or((1, 0), |f| (0, f));
                let have = self.w.buf.get(from..).unwrap_or_default();
                let n = have.len().min(WINDOW - lead);
                bytes[lead..lead + n].copy_from_slice(&have[..n]);
                flag_block(&bytes, self.classes, &mut self.flags)
            }
        };
        // Only the groups with a flag, eight flags at a time: clean text has few.
        let mut groups = groups;
        while groups != 0 {
            let g = groups.trailing_zeros() as usize;
            groups &= groups - 1;
            for i in (g * GROUP..(g + 1) * GROUP).step_by(8) {
                let mut set = eight(&self.flags, i);
                while set != 0 {
                    let at = i + set.trailing_zeros() as usize / 8;
                    set &= !(0xFF << ((at - i) * 8));
                    if start + at >= self.block_end {
                        return;
                    }
                    let f = self.flags[at];
                    if f & START != 0 {
                        self.starts[self.start_count] = at as u8;
                        self.start_count += 1;
                    }
                    if f & WORD != 0 {
                        self.context_word(start + at);
                    }
                }
            }
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
    fn b64_run_of_len(&mut self, at: usize, len: usize) -> Option<usize> {
        if self.long_run.contains(&at) {
            return None;
        }
        let buf = self.w.buf;
        if !buf.get(at).copied().is_some_and(is_b64) {
            return None;
        }
        let before = buf.get(at.saturating_sub(len)..at).unwrap_or_default();
        let back = before.iter().rev().take_while(|&&b| is_b64(b)).count();
        let from_at = buf.get(at..).unwrap_or_default();
        let ahead = from_at
            .iter()
            .take(len + 1)
            .take_while(|&&b| is_b64(b))
            .count();
        if back + ahead > len {
            // All of this is in one run that is too long: later probes there need no scan
            // (a body of "secretsecret…" would otherwise rescan it for every word).
            self.long_run = at - back..at + ahead;
        }
        (back + ahead == len).then_some(at - back)
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
        if !(1..=4).contains(&spaces) {
            return;
        }
        // Not worth a position where a word shorter than a token follows.
        let token = self.w.buf.get(first + spaces..).unwrap_or_default();
        if token
            .iter()
            .take(BEARER_TOKEN_MIN)
            .all(|&b| is_bearer_char(b))
        {
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

/// The eight flags from `i` as one number (zero past the end).
fn eight(flags: &[u8; BLOCK], i: usize) -> u64 {
    let bytes = flags
        .get(i..i + 8)
        .and_then(|e| <[u8; 8]>::try_from(e).ok());
    u64::from_le_bytes(bytes.unwrap_or_default())
}

/// The block test: flags for the [`BLOCK`] positions after the first of `bytes` (of
/// [`WINDOW`] bytes). Returns which groups of [`GROUP`] positions have a flag, one bit each. Each byte's classes are computed once
/// into one byte of bits; the flags are then ANDs of those bytes at fixed offsets. Every loop
/// runs over whole arrays of fixed length with no early exit, so that each compiles to SIMD
/// loads, compares and logic.
fn flag_block(bytes: &[u8], classes: u8, flags: &mut [u8; BLOCK]) -> u8 {
    let Ok(bytes) = <&[u8; WINDOW]>::try_from(bytes) else {
        return 0;
    };
    let k: [u8; WINDOW] = std::array::from_fn(|i| {
        let b = bytes[i];
        let is = |yes: bool, class: u8| u8::from(yes).wrapping_neg() & class;
        let digit = b.is_ascii_digit();
        (is(digit, DIGIT)
            | is(digit || b == b' ' || b == b'-', NUMBER)
            | is(b.is_ascii_uppercase(), CAPITAL)
            | is(b == b'-', DASH)
            | is(b == b'x' || b == b'J', X_OR_J)
            | is(b == b'_', UNDERSCORE)
            | is(b | 0x20 == b'e', E)
            | is(b | 0x20 == b'r', R))
            & classes
    });
    let mut groups = 0;
    for (g, group) in flags.chunks_exact_mut(GROUP).enumerate() {
        let mut any = 0;
        for (j, f) in group.iter_mut().enumerate() {
            let i = g * GROUP + j;
            // `k[i]` is the byte before the position, `k[i + 1]` the byte at it.
            let pair = k[i + 1] & k[i + 2];
            // Cards, SSNs, IBANs and AWS key ids start a word: not after a digit or a capital.
            let fresh = !k[i];
            // Three digits, then two of `[0-9 -]` (cards, SSNs).
            let numbers = pair & k[i + 3] & ((k[i + 4] & k[i + 5]) >> 1) & fresh & DIGIT;
            // Two capitals, then two digits (IBANs) or two capitals (AWS key ids).
            let then = k[i + 3] & k[i + 4];
            let capitals = pair & (((then & DIGIT) << 2) | then) & fresh & CAPITAL;
            // `--`, a dash four ahead and none five ahead: where `-----BEGIN` could be (PEM).
            let dashes = pair & k[i + 5] & !k[i + 6] & DASH;
            // `x` or `J` two ahead of `x`, `J` or `e`/`E`, not after any of those (Slack `xox`,
            // JWT `eyJ`, both at a word start).
            let x_or_j = |b: u8| b | (b >> 2);
            let slack_jwt = k[i + 3] & x_or_j(k[i + 1]) & !x_or_j(k[i]) & X_OR_J;
            // The first `_` three or six ahead, none before it nor just before the position
            // (GitHub `ghp_`, `github_pat_`).
            let no_underscore = !(k[i] | k[i + 1] | k[i + 2] | k[i + 3]);
            let github = no_underscore
                & (k[i + 4] | (k[i + 7] & !(k[i + 4] | k[i + 5] | k[i + 6])))
                & UNDERSCORE;
            // `?e?re?`, any case: perhaps "secret" or "bearer".
            let word = k[i + 2] & k[i + 5] & (k[i + 4] >> 1) & E;
            *f = numbers | capitals | dashes | slack_jwt | github | (word & WORD);
            any |= *f;
        }
        groups |= u8::from(any != 0) << g;
    }
    groups
}
