//! The streaming scanner: one per body, fed chunk by chunk.
//!
//! Positions are decided left to right. At each position every enabled detector says "match
//! ending at e", "no match", or "need more bytes" (see [`Window`]). All matches starting at
//! the same position are counted; the longest sets where scanning resumes, a `block` among
//! them stops the body, and a `redact` replaces the span with its mask. Decided bytes are
//! released; the scanner keeps only the undecided tail plus [`LOOK_BEHIND`] released bytes.
//! Because every decision reads the window only through [`Window::at`], the result is the same
//! for every chunking of the body.

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use super::builtin::{self, PositionFilter};
use super::compile::{CustomMatcher, RuleSet, CUSTOM_LOOK_AHEAD};
use super::spec::BuiltinDetector;
use super::window::{NeedMore, Scan, Window, LOOK_BEHIND};
use super::{Blocked, DlpAction, Findings};

/// What is known about a custom matcher's next match, in body offsets.
#[derive(Clone, Copy, Debug)]
enum Known {
    /// Nothing yet: search at the next position.
    Unknown,
    /// No match starts before this offset (from where it was last searched).
    NoneBefore(usize),
    /// The leftmost match from where it was last searched: start and end.
    At(usize, usize),
}

impl Known {
    /// The first offset at which this matcher has something to say.
    fn due(self) -> usize {
        match self {
            Known::Unknown => 0,
            Known::NoneBefore(u) => u,
            Known::At(s, _) => s,
        }
    }
}

/// DLP state for one body. Feed it with [`Scanner::push`], end with [`Scanner::finish`].
pub struct Scanner {
    rules: Arc<RuleSet>,
    /// Up to [`LOOK_BEHIND`] released bytes, then the held-back, undecided tail.
    buf: Vec<u8>,
    /// Body offset of `buf[0]`.
    base: usize,
    /// Index in `buf` of the first undecided position.
    pos: usize,
    /// Per custom matcher, in `rules.custom` order.
    known: Vec<Known>,
    /// The first body offset at which any custom matcher must be consulted.
    custom_due: usize,
    /// Where the last pass stopped undecided: (offset, body length then). Retrying before the
    /// tail has doubled (or reached the hold limit) is skipped, so that feeding tiny chunks
    /// cannot make a long undecided candidate cost quadratic time.
    stall: Option<(usize, usize)>,
    /// Scratch list of the matches at one position: (detector index, end offset).
    hits: Vec<(usize, usize)>,
    /// How the positions to decide are found (with its scratch space).
    filter: PositionFilter,
    findings: Findings,
    blocked: Option<Blocked>,
    /// Spans replaced by a mask since the last [`Scanner::take_redactions`].
    redactions: Vec<Redaction>,
}

/// One span of the body (offsets into everything pushed) that the scanner replaced with a
/// mask. A caller that forwards something other than the scanned bytes (say, the original of
/// a decoded view) uses these to redact its own bytes, or to refuse where it cannot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redaction {
    /// Offset of the first replaced byte.
    pub start: usize,
    /// Offset just past the last replaced byte.
    pub end: usize,
    /// What replaced it, e.g. `[REDACTED:us_ssn]`.
    pub mask: Box<[u8]>,
}

impl fmt::Debug for Scanner {
    // Never prints buffered body bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("offset", &(self.base + self.pos))
            .field("held_back", &self.held_back())
            .field("findings", &self.findings)
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

impl Scanner {
    pub(crate) fn new(rules: Arc<RuleSet>, filter: PositionFilter) -> Self {
        let findings = Findings::new(rules.detectors.iter().cloned());
        Scanner {
            known: vec![Known::Unknown; rules.custom.len()],
            rules,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            custom_due: 0,
            stall: None,
            hits: Vec::new(),
            filter,
            findings,
            blocked: None,
            redactions: Vec::new(),
        }
    }

    /// Feeds the next chunk. Returns the bytes that may go downstream now, with redactions
    /// applied; bytes a match could still start in are held back (see
    /// [`DlpPolicy::max_hold_back`](super::DlpPolicy::max_hold_back)).
    ///
    /// Returns [`Blocked`] when a `block` detector matches, before releasing any byte of the
    /// match or of this chunk; every later call returns it again.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Blocked> {
        if let Some(b) = &self.blocked {
            return Err(b.clone());
        }
        if chunk.is_empty() {
            // Nothing new to decide on: what was undecided needs more bytes still.
            return Ok(Vec::new());
        }
        self.buf.extend_from_slice(chunk);
        if let Some((at, then)) = self.stall {
            let now = self.base + self.buf.len();
            let wanted = (2 * (then - at)).min(self.rules.hold_limit);
            if now - at < wanted {
                return Ok(Vec::new());
            }
        }
        self.advance(false)
    }

    /// Ends the body: decides and releases the held-back tail.
    pub fn finish(&mut self) -> Result<Vec<u8>, Blocked> {
        if let Some(b) = &self.blocked {
            return Err(b.clone());
        }
        let out = self.advance(true);
        // Bytes pushed after this are scanned as a new stretch of the same body.
        self.known.fill(Known::Unknown);
        self.custom_due = 0;
        out
    }

    /// The body's last chunk: [`push`](Self::push) then [`finish`](Self::finish) in one pass
    /// (the same result: the scanner decides alike whatever the chunking).
    pub fn push_last(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Blocked> {
        if let Some(b) = &self.blocked {
            return Err(b.clone());
        }
        self.buf.extend_from_slice(chunk);
        self.finish()
    }

    /// What has been found so far: per detector, the count and the action taken.
    pub fn findings(&self) -> &Findings {
        &self.findings
    }

    /// Bytes received but not yet released.
    pub fn held_back(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many bytes of the body have been decided and released (masks count as the bytes
    /// they replaced).
    pub fn released(&self) -> usize {
        self.base + self.pos
    }

    /// The redactions made since the last call, in body order.
    pub fn take_redactions(&mut self) -> Vec<Redaction> {
        std::mem::take(&mut self.redactions)
    }

    fn advance(&mut self, eof: bool) -> Result<Vec<u8>, Blocked> {
        let rules = Arc::clone(&self.rules);
        let w = Window {
            buf: &self.buf,
            eof,
        };
        let len = self.buf.len();
        let mut out = Vec::with_capacity(len - self.pos);
        let mut emitted = self.pos;
        let mut p = self.pos;
        let mut stalled = false;
        let has_custom = !rules.custom.is_empty();
        let mut positions = self.filter.pass(w, p, rules.builtin_enabled);
        while p < len {
            let custom_due = has_custom && self.base + p >= self.custom_due;
            if !custom_due {
                let until = if has_custom {
                    len.min(self.custom_due - self.base)
                } else {
                    len
                };
                p = positions.next(p, until);
                if p == until {
                    continue;
                }
            }
            let cand = builtin::candidates(&w, p, rules.builtin_enabled);
            if cand == 0 && !custom_due {
                p += 1;
                continue;
            }
            self.hits.clear();
            let decided = builtin_hits(&w, p, cand, &rules, &mut self.hits).and_then(|()| {
                if custom_due {
                    custom_hits(&w, self.base, p, &rules, &mut self.known, &mut self.hits)?;
                    self.custom_due = self.known.iter().map(|k| k.due()).min().unwrap_or(0);
                }
                Ok(())
            });
            if decided.is_err() {
                stalled = true;
                break;
            }
            if self.hits.is_empty() {
                p += 1;
                continue;
            }
            let mut end = p + 1;
            let mut redact = None;
            for &(index, hit_end) in &self.hits {
                self.findings.bump(index);
                end = end.max(hit_end);
                match rules.detectors.get(index).map(|d| d.1) {
                    Some(DlpAction::Block) if self.blocked.is_none() => {
                        self.blocked = rules.detectors.get(index).map(|d| Blocked {
                            detector: d.0.clone(),
                        });
                    }
                    Some(DlpAction::Redact) if redact.is_none() => redact = Some(index),
                    _ => {}
                }
            }
            if let Some(b) = &self.blocked {
                return Err(b.clone());
            }
            if let Some(index) = redact {
                let mask = rules.masks.get(index).map_or(&[][..], |m| &m[..]);
                out.extend_from_slice(&self.buf[emitted..p]);
                out.extend_from_slice(mask);
                self.redactions.push(Redaction {
                    start: self.base + p,
                    end: self.base + end,
                    mask: mask.into(),
                });
                emitted = end;
            }
            p = end;
        }
        // A match may end past the window only at the end of the body.
        let p = p.min(len);
        out.extend_from_slice(&self.buf[emitted.min(p)..p]);
        self.pos = p;
        self.stall = stalled.then_some((self.base + p, self.base + len));
        let keep_from = p.saturating_sub(LOOK_BEHIND);
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.base += keep_from;
            self.pos -= keep_from;
        }
        Ok(out)
    }
}

/// Adds the built-in matches at window index `p` to `hits`: (detector index, end index).
fn builtin_hits(
    w: &Window<'_>,
    p: usize,
    mut cand: u16,
    rules: &RuleSet,
    hits: &mut Vec<(usize, usize)>,
) -> Scan<()> {
    while cand != 0 {
        let bit = cand.trailing_zeros() as usize;
        cand &= cand - 1;
        let Some(&detector) = BuiltinDetector::ALL.get(bit) else {
            continue;
        };
        if let Some(end) = builtin::detect(detector, w, p)? {
            hits.push((rules.builtin_finding[bit], end));
        }
    }
    Ok(())
}

/// Adds the custom matches at window index `p` to `hits`: (detector index, end index).
fn custom_hits(
    w: &Window<'_>,
    base: usize,
    p: usize,
    rules: &RuleSet,
    known: &mut [Known],
    hits: &mut Vec<(usize, usize)>,
) -> Scan<()> {
    for (matcher, known) in rules.custom.iter().zip(known.iter_mut()) {
        if let Some(end) = custom_at(w, base, p, matcher, known)? {
            hits.push((matcher.finding, end - base));
        }
    }
    Ok(())
}

/// Whether `matcher` has a match starting at window index `p`, and its end (body offset).
///
/// A leftmost-first search from `p` finds the smallest start with a match and that start's
/// preferred end, so its result answers every position up to that start. A result is trusted
/// only where the window holds the whole longest possible match plus its look-ahead.
fn custom_at(
    w: &Window<'_>,
    base: usize,
    p: usize,
    matcher: &CustomMatcher,
    known: &mut Known,
) -> Scan<Option<usize>> {
    let at = base + p;
    loop {
        match *known {
            Known::At(s, e) if s == at => return Ok(Some(e)),
            Known::At(s, _) if s > at => return Ok(None),
            Known::NoneBefore(u) if at < u => return Ok(None),
            _ => {}
        }
        let safe_end = if w.eof {
            usize::MAX
        } else {
            (base + w.buf.len() + 1).saturating_sub(matcher.max_len + CUSTOM_LOOK_AHEAD)
        };
        *known = match matcher.regex.find_at(w.buf, p) {
            Some(m) if base + m.start() < safe_end => Known::At(base + m.start(), base + m.end()),
            _ if at < safe_end => Known::NoneBefore(safe_end),
            _ => return Err(NeedMore),
        };
    }
}
