//! The built-in detectors: one hand-written decision per detector and position, with
//! validation, behind a first-byte table so that most bytes cost one lookup.
//!
//! Each detector answers "does a match start at `p`, and where does it end?" reading at most
//! [`MAX_READ`] bytes ahead and [`LOOK_BEHIND`](super::window::LOOK_BEHIND) bytes back.

mod numbers;
mod secrets;

#[cfg(test)]
mod tests;

use super::spec::BuiltinDetector;
use super::window::{is_word, Scan, Window};

/// The longest span a built-in reports; longer keys and tokens are cut here (redacting the
/// first 8 KiB of a key or token is enough to make it useless).
pub(crate) const MAX_SPAN: usize = 8 * 1024;

/// How far past a position any built-in reads before deciding (span, end marker, boundary).
pub(crate) const MAX_READ: usize = MAX_SPAN + 64;

const CARD: u16 = 1 << BuiltinDetector::CardNumber as u16;
const SSN: u16 = 1 << BuiltinDetector::UsSsn as u16;
const IBAN: u16 = 1 << BuiltinDetector::Iban as u16;
const PEM: u16 = 1 << BuiltinDetector::PrivateKey as u16;
const AWS_ID: u16 = 1 << BuiltinDetector::AwsAccessKeyId as u16;
const AWS_SECRET: u16 = 1 << BuiltinDetector::AwsSecretKey as u16;
const GITHUB: u16 = 1 << BuiltinDetector::GithubToken as u16;
const SLACK: u16 = 1 << BuiltinDetector::SlackToken as u16;
const BEARER: u16 = 1 << BuiltinDetector::BearerToken as u16;
const JWT: u16 = 1 << BuiltinDetector::Jwt as u16;

/// Detectors that only match shortly after a context word ("secret", "bearer"); the hot loop
/// looks for their starts only in those zones (see [`Zones`]).
pub(crate) const GATED: u16 = AWS_SECRET | BEARER;

/// Detectors whose match must start a word.
const WORD_START: u16 = CARD | SSN | IBAN | AWS_ID | AWS_SECRET | GITHUB | SLACK | JWT;

/// For each byte, the detectors a match may start with it.
static START: [u16; 256] = start_table();

const fn start_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let mut m = 0;
        if c.is_ascii_digit() {
            m |= CARD | SSN;
        }
        if c.is_ascii_uppercase() {
            m |= IBAN;
        }
        if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' {
            m |= AWS_SECRET | BEARER;
        }
        if matches!(c, b'-' | b'.' | b'_' | b'~') {
            m |= BEARER;
        }
        m |= match c {
            b'A' => AWS_ID,
            b'g' => GITHUB,
            b'x' => SLACK,
            b'e' => JWT,
            b'-' => PEM,
            _ => 0,
        };
        t[b] = m;
        b += 1;
    }
    t
}

/// The hot loop: finds the next position where an enabled built-in may start.
///
/// Inside a word nothing can start (every detector that starts with a word character needs a
/// word start, or a space before it), so what decides a byte is the byte itself and whether a
/// word may start there: a small automaton whose state is where the previous bytes left off
/// (in a word, at a word start, after a backslash: a JSON escape such as `\\n` ends a word for
/// what follows it). Blocks of eight bytes none of which can start anything in any state (most
/// of a body) are passed over with one table lookup a byte and no dependency between them.
#[derive(Debug)]
pub(crate) struct SkipTable {
    /// Per state and byte: the next state, with [`CANDIDATE`] set where an enabled built-in may
    /// start (a fourth row, never reached, keeps indexing by `state & 3` in bounds).
    step: [[u8; 256]; 4],
    /// Per byte: whether an enabled built-in may start with it in some state.
    may_start: [u8; 256],
}

/// Inside a word: no word starts at the next byte.
const IN_WORD: u8 = 0;
/// A word may start at the next byte.
const WORD_START_NEXT: u8 = 1;
/// After a backslash: a word may start at the next byte, and after `n`, `r` or `t` too.
const AFTER_BACKSLASH: u8 = 2;
/// In [`SkipTable::step`]: an enabled built-in may start at this byte.
const CANDIDATE: u8 = 0x80;

impl SkipTable {
    pub(crate) fn new(enabled: u16) -> Self {
        let mut step = [[0u8; 256]; 4];
        let mut may_start = [0u8; 256];
        for b in 0..=255u8 {
            let starts = START[usize::from(b)] & enabled != 0;
            for state in [IN_WORD, WORD_START_NEXT, AFTER_BACKSLASH] {
                let next = if b == b'\\' {
                    AFTER_BACKSLASH
                } else if !is_word(b)
                    || (state == AFTER_BACKSLASH && matches!(b, b'n' | b'r' | b't'))
                {
                    WORD_START_NEXT
                } else {
                    IN_WORD
                };
                // A word character needs a word start; any other byte starts where it is.
                let candidate = starts && (!is_word(b) || state != IN_WORD);
                step[usize::from(state)][usize::from(b)] =
                    next | if candidate { CANDIDATE } else { 0 };
            }
            may_start[usize::from(b)] = u8::from(starts);
        }
        step[3] = step[usize::from(AFTER_BACKSLASH)];
        SkipTable { step, may_start }
    }

    /// One automaton per combination of open [`Zones`], indexed by their bits.
    pub(crate) fn per_zone(enabled: u16) -> Box<[SkipTable; 4]> {
        let plain = enabled & !GATED;
        Box::new(
            [0, AWS_SECRET, BEARER, AWS_SECRET | BEARER]
                .map(|gate| SkipTable::new(plain | (enabled & gate))),
        )
    }

    /// The step from `state` (its [`CANDIDATE`] bit ignored) over byte `b`.
    #[inline]
    fn next(&self, state: u8, b: u8) -> u8 {
        self.step[usize::from(state & 3)][usize::from(b)]
    }

    /// The first index in `from..end` where an enabled built-in may start a match, or `end`.
    #[inline]
    pub(crate) fn next_candidate(&self, w: &Window<'_>, from: usize, end: usize) -> usize {
        let Some(bytes) = w.buf.get(from..end) else {
            return end;
        };
        // The state at `from` follows from the two bytes before it (or the body's start).
        let mut state = match (w.before(from, 2), w.before(from, 1)) {
            (_, None) => WORD_START_NEXT,
            (None, Some(b1)) => self.next(WORD_START_NEXT, b1),
            (Some(b2), Some(b1)) => self.next(self.next(IN_WORD, b2), b1),
        };
        let mut at = from;
        let mut blocks = bytes.chunks_exact(8);
        for block in &mut blocks {
            let quiet = block
                .iter()
                .fold(0, |any, &b| any | self.may_start[usize::from(b)])
                == 0;
            if quiet {
                // Where the block leaves the automaton depends on its last two bytes only.
                if let [.., b6, b7] = *block {
                    state = self.next(self.next(IN_WORD, b6), b7);
                }
                at += 8;
                continue;
            }
            for &b in block {
                let next = self.next(state, b);
                if next & CANDIDATE != 0 {
                    return at;
                }
                state = next;
                at += 1;
            }
        }
        for &b in blocks.remainder() {
            let next = self.next(state, b);
            if next & CANDIDATE != 0 {
                return at;
            }
            state = next;
            at += 1;
        }
        end
    }
}

/// The enabled built-ins that may match at `p`, after the cheap first-byte and context tests.
#[inline]
pub(crate) fn candidates(w: &Window<'_>, p: usize, enabled: u16) -> u16 {
    let Some(&b) = w.buf.get(p) else { return 0 };
    let mut m = START[b as usize] & enabled;
    if m == 0 {
        return 0;
    }
    if m & WORD_START != 0 && !w.word_start(p) {
        m &= !WORD_START;
    }
    if m & BEARER != 0 && !secrets::may_follow_bearer(w, p) {
        m &= !BEARER;
    }
    if m & AWS_SECRET != 0 && !secrets::may_be_aws_secret(w, p) {
        m &= !AWS_SECRET;
    }
    m
}

/// Where the match of `detector` starting at `p` ends, if there is one.
pub(crate) fn detect(detector: BuiltinDetector, w: &Window<'_>, p: usize) -> Scan<Option<usize>> {
    match detector {
        BuiltinDetector::CardNumber => numbers::card(w, p),
        BuiltinDetector::UsSsn => numbers::ssn(w, p),
        BuiltinDetector::Iban => numbers::iban(w, p),
        BuiltinDetector::PrivateKey => secrets::private_key(w, p),
        BuiltinDetector::AwsAccessKeyId => secrets::aws_access_key_id(w, p),
        BuiltinDetector::AwsSecretKey => secrets::aws_secret_key(w, p),
        BuiltinDetector::GithubToken => secrets::github_token(w, p),
        BuiltinDetector::SlackToken => secrets::slack_token(w, p),
        BuiltinDetector::BearerToken => secrets::bearer_token(w, p),
        BuiltinDetector::Jwt => secrets::jwt(w, p),
    }
}

/// Where the keyword-gated detectors may start: an AWS secret key within 64 bytes after
/// "secret", a bearer token one to four spaces after "bearer". The keywords are found once per
/// pass by a fast literal search; the zones are a superset of where those detectors can match.
pub(crate) struct Zones<'a> {
    /// Keyword starts (window indices), ascending, and whether each is "secret".
    keywords: &'a [(usize, bool)],
    first: usize,
}

impl<'a> Zones<'a> {
    pub(crate) fn new(keywords: &'a [(usize, bool)]) -> Self {
        Zones { keywords, first: 0 }
    }

    /// The zone bits at `p` (an index into [`SkipTable::per_zone`]) and the first index after
    /// `p` where they may change. `p` never decreases between calls.
    pub(crate) fn at(&mut self, p: usize) -> (usize, usize) {
        while self
            .keywords
            .get(self.first)
            .is_some_and(|&(k, _)| k + secrets::SECRET_KEYWORD_REACH < p)
        {
            self.first += 1;
        }
        let mut bits = 0;
        let mut next = usize::MAX;
        for &(k, secret) in self.keywords.get(self.first..).unwrap_or_default() {
            if k > p {
                next = next.min(k + 6);
                break;
            }
            let (lo, hi, bit) = if secret {
                (k + 6, k + secrets::SECRET_KEYWORD_REACH, 1)
            } else {
                (k + 7, k + 10, 2)
            };
            if p < lo {
                next = next.min(lo);
            } else if p <= hi {
                bits |= bit;
                next = next.min(hi + 1);
            }
        }
        (bits, next)
    }
}
