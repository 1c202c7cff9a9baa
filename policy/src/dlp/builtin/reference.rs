//! The position filter the scanner used before [`super::prefilter`], kept unchanged to test
//! and benchmark against: a byte-class table stepped one byte at a time, with the keyword-gated
//! detectors enabled only in zones after "secret" and "bearer" (found by a regex per pass).
//!
//! Compiled for tests and with the `reference-scanner` feature
//! ([`DlpPolicy::reference_scanner`](crate::dlp::DlpPolicy::reference_scanner)).

use regex::bytes::Regex;

use super::{secrets, AWS_SECRET, BEARER, START};
use crate::dlp::window::{is_word, Window, LOOK_BEHIND};

/// Detectors that only match shortly after a context word ("secret", "bearer"); the loop
/// looks for their starts only in those zones (see [`Zones`]).
const GATED: u16 = AWS_SECRET | BEARER;

/// The tables of the old filter for one set of enabled built-ins.
#[derive(Debug)]
pub(crate) struct Reference {
    skip: Box<[SkipTable; 4]>,
    context_words: Option<Regex>,
    keywords: Vec<(usize, bool)>,
}

impl Reference {
    pub(crate) fn new(enabled: u16) -> Self {
        Reference {
            skip: SkipTable::per_zone(enabled),
            context_words: (enabled & GATED != 0).then(|| {
                // A fixed, valid pattern: failing to compile it is a bug caught by every test.
                Regex::new("(?i-u)secret|bearer").expect("context word pattern compiles")
            }),
            keywords: Vec::new(),
        }
    }

    /// A pass over `w` whose first undecided position is `pos`.
    pub(crate) fn pass<'a>(&'a mut self, w: Window<'a>, pos: usize) -> Positions<'a> {
        self.keywords.clear();
        if let Some(words) = &self.context_words {
            let from = pos.saturating_sub(LOOK_BEHIND);
            let hay = w.buf.get(from..).unwrap_or_default();
            self.keywords.extend(words.find_iter(hay).map(|m| {
                (
                    from + m.start(),
                    m.as_bytes().first().is_some_and(|b| b | 0x20 == b's'),
                )
            }));
        }
        Positions {
            w,
            skip: &self.skip,
            zones: Zones::new(&self.keywords),
        }
    }
}

/// The positions of one pass, as the old scanner loop stepped through them.
pub(crate) struct Positions<'a> {
    w: Window<'a>,
    skip: &'a [SkipTable; 4],
    zones: Zones<'a>,
}

impl Positions<'_> {
    pub(crate) fn next(&mut self, mut from: usize, end: usize) -> usize {
        while from < end {
            let (zone, zone_until) = self.zones.at(from);
            let until = end.min(zone_until);
            let p = self
                .skip
                .get(zone)
                .map_or(until, |t| t.next_candidate(&self.w, from, until));
            if p < until {
                return p;
            }
            from = until;
        }
        end
    }
}

/// The hot loop's byte classes: finds the next position where an enabled built-in may start.
///
/// Inside a word nothing can start (every detector that starts with a word character needs a
/// word start, or a space before it), so most bytes cost one table lookup and no dependency
/// on the bytes before them. A JSON escape such as `\\n` ends a word for what follows it.
#[derive(Debug)]
struct SkipTable([u8; 256]);

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
    fn new(enabled: u16) -> Self {
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
    fn per_zone(enabled: u16) -> Box<[SkipTable; 4]> {
        let plain = enabled & !GATED;
        Box::new(
            [0, AWS_SECRET, BEARER, AWS_SECRET | BEARER]
                .map(|gate| SkipTable::new(plain | (enabled & gate))),
        )
    }

    /// The first index in `from..end` where an enabled built-in may start a match, or `end`.
    #[inline]
    fn next_candidate(&self, w: &Window<'_>, from: usize, end: usize) -> usize {
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

/// Where the keyword-gated detectors may start: an AWS secret key within 64 bytes after
/// "secret", a bearer token one to four spaces after "bearer". The keywords are found once per
/// pass by a fast literal search; the zones are a superset of where those detectors can match.
struct Zones<'a> {
    /// Keyword starts (window indices), ascending, and whether each is "secret".
    keywords: &'a [(usize, bool)],
    first: usize,
}

impl<'a> Zones<'a> {
    fn new(keywords: &'a [(usize, bool)]) -> Self {
        Zones { keywords, first: 0 }
    }

    /// The zone bits at `p` (an index into [`SkipTable::per_zone`]) and the first index after
    /// `p` where they may change. `p` never decreases between calls.
    fn at(&mut self, p: usize) -> (usize, usize) {
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
