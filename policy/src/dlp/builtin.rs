//! The built-in detectors: one hand-written decision per detector and position, with
//! validation, tried only where the [`prefilter`] says a match may start.
//!
//! Each detector answers "does a match start at `p`, and where does it end?" reading at most
//! [`MAX_READ`] bytes ahead and [`LOOK_BEHIND`](super::window::LOOK_BEHIND) bytes back.

mod numbers;
mod prefilter;
#[cfg(any(test, feature = "reference-scanner"))]
mod reference;
mod secrets;

#[cfg(test)]
mod tests;

use super::spec::BuiltinDetector;
use super::window::{Scan, Window};

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

/// How a scanner finds the positions it decides.
#[derive(Debug)]
pub(crate) enum PositionFilter {
    /// The [`prefilter`]; holds its scratch list of gated positions.
    Prefilter(Vec<usize>),
    /// The filter used before it, kept to compare against.
    #[cfg(any(test, feature = "reference-scanner"))]
    Reference(Box<reference::Reference>),
    #[cfg(test)]
    Exhaustive(Vec<usize>),
}

impl PositionFilter {
    pub(crate) fn prefilter() -> Self {
        PositionFilter::Prefilter(Vec::new())
    }

    #[cfg(any(test, feature = "reference-scanner"))]
    pub(crate) fn reference(enabled: u16) -> Self {
        PositionFilter::Reference(Box::new(reference::Reference::new(enabled)))
    }

    /// Every position tried: the definition both filters must agree with (tests only).
    #[cfg(test)]
    pub(crate) fn exhaustive() -> Self {
        PositionFilter::Exhaustive(Vec::new())
    }

    /// A pass over `w` whose first undecided position is `pos`.
    pub(crate) fn pass<'a>(&'a mut self, w: Window<'a>, pos: usize, enabled: u16) -> Pass<'a> {
        match self {
            PositionFilter::Prefilter(gated) => {
                Pass::Prefilter(prefilter::Positions::new(w, pos, enabled, gated))
            }
            #[cfg(any(test, feature = "reference-scanner"))]
            PositionFilter::Reference(r) => Pass::Reference(r.pass(w, pos)),
            #[cfg(test)]
            PositionFilter::Exhaustive(gated) => {
                Pass::Prefilter(prefilter::Positions::exhaustive(w, pos, enabled, gated))
            }
        }
    }
}

/// The positions of one scanning pass.
// One per pass, on the stack; boxing the prefilter's block would allocate on every pass.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Pass<'a> {
    Prefilter(prefilter::Positions<'a>),
    #[cfg(any(test, feature = "reference-scanner"))]
    Reference(reference::Positions<'a>),
}

impl Pass<'_> {
    /// The first position in `from..end` where an enabled built-in may start, or `end`.
    /// `from` never decreases between calls.
    #[inline]
    pub(crate) fn next(&mut self, from: usize, end: usize) -> usize {
        match self {
            Pass::Prefilter(p) => p.next(from, end),
            #[cfg(any(test, feature = "reference-scanner"))]
            Pass::Reference(r) => r.next(from, end),
        }
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
