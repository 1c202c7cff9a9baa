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

/// The hot loop's byte classes: finds the next position where an enabled built-in may start.
///
/// Inside a word nothing can start (every detector that starts with a word character needs a
/// word start, or a space before it), so most bytes cost one table lookup and no dependency
/// on the bytes before them. A JSON escape such as `\\n` ends a word for what follows it.
#[derive(Debug)]
pub(crate) struct SkipTable([u8; 256]);

/// A word character some enabled detector may start with, at a word start.
const AT_WORD_START: u8 = 1;
/// A non-word character some enabled detector may start with.
const ANYWHERE: u8 = 2;
/// Not a word character: what follows starts a word.
const NON_WORD: u8 = 4;
/// `n`, `r` or `t`: after a backslash, what follows starts a word.
const ESCAPE_LETTER: u8 = 8;
const BACKSLASH: u8 = 16;

impl SkipTable {
    pub(crate) fn new(enabled: u16) -> Self {
        let mut t = [0u8; 256];
        for (b, class) in t.iter_mut().enumerate() {
            let c = b as u8;
            let starts = START[b] & enabled != 0;
            *class = match (is_word(c), starts) {
                (true, true) => AT_WORD_START,
                (true, false) => 0,
                (false, true) => ANYWHERE | NON_WORD,
                (false, false) => NON_WORD,
            };
            if matches!(c, b'n' | b'r' | b't') {
                *class |= ESCAPE_LETTER;
            }
            if c == b'\\' {
                *class |= BACKSLASH;
            }
        }
        SkipTable(t)
    }

    /// One automaton per combination of open [`Zones`], indexed by their bits.
    pub(crate) fn per_zone(enabled: u16) -> Box<[SkipTable; 4]> {
        let plain = enabled & !GATED;
        Box::new(
            [0, AWS_SECRET, BEARER, AWS_SECRET | BEARER]
                .map(|gate| SkipTable::new(plain | (enabled & gate))),
        )
    }

    /// The first index in `from..end` where an enabled built-in may start a match, or `end`.
    #[inline]
    pub(crate) fn next_candidate(&self, w: &Window<'_>, from: usize, end: usize) -> usize {
        let Some(bytes) = w.buf.get(from..end) else {
            return end;
        };
        let class = |b: Option<u8>| b.map_or(NON_WORD, |b| self.0[usize::from(b)]);
        let mut prev2 = class(w.before(from, 2));
        let mut prev = class(w.before(from, 1));
        for (k, &b) in bytes.iter().enumerate() {
            let c = self.0[usize::from(b)];
            if c & (AT_WORD_START | ANYWHERE) != 0 {
                let word_start =
                    prev & NON_WORD != 0 || (prev & ESCAPE_LETTER != 0 && prev2 & BACKSLASH != 0);
                if c & ANYWHERE != 0 || word_start {
                    return from + k;
                }
            }
            prev2 = prev;
            prev = c;
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
