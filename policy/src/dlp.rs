//! Data-loss prevention: find card numbers, national ids, bank accounts, keys and tokens in
//! request and response bodies as they stream, and block, redact or record them.
//!
//! A [`DlpSpec`] (from config) compiles once into a [`DlpPolicy`], shared cheaply between
//! requests. Each body gets its own [`Scanner`], fed chunk by chunk. The built-in detectors are
//! hand-written with validation (Luhn, SSN area rules, IBAN mod-97, JWT header), tried only
//! where a block prefilter that classifies each byte once says a match may start; tenant
//! patterns run on the linear-time `regex` engine, so no input is slow to scan.
//!
//! Streaming is exact: however a body is cut into chunks, the released bytes and the findings
//! are those of scanning it whole. A scanner holds back only the bytes a match could still
//! start in, never more than [`DlpPolicy::max_hold_back`]. Matched bytes are never stored.

mod builtin;
mod compile;
mod scanner;
mod spec;
mod window;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

pub use compile::DlpPolicy;
pub use scanner::{Redaction, Scanner};
pub use spec::{BuiltinDetector, CustomPatternSpec, DirectionSelector, DlpSpec, KeywordListSpec};

/// What a DLP detector found: one of the built-in kinds, or a tenant's pattern or word list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DetectorKind {
    /// A payment card number (13–19 digits, Luhn-valid, major-industry prefix 2–6).
    CardNumber,
    /// A US social security number `AAA-GG-SSSS` with a valid area, group and serial.
    UsSsn,
    /// An IBAN with valid mod-97 check digits and its country's length.
    Iban,
    /// A PEM private key block.
    PrivateKey,
    /// An AWS access key id (`AKIA…` or `ASIA…`).
    AwsAccessKeyId,
    /// An AWS secret access key near the word "secret".
    AwsSecretKey,
    /// A GitHub token (`ghp_…`, `github_pat_…` and kin).
    GithubToken,
    /// A Slack token (`xoxb-…` and kin).
    SlackToken,
    /// A token after the word `Bearer`.
    BearerToken,
    /// A JSON Web Token whose header names an `alg`.
    Jwt,
    /// A tenant-defined pattern.
    Custom(DetectorName),
    /// A tenant-defined keyword list.
    Keyword(DetectorName),
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetectorKind::Custom(name) => write!(f, "custom:{name}"),
            DetectorKind::Keyword(name) => write!(f, "keyword:{name}"),
            other => f.write_str(other.builtin().map_or("unknown", BuiltinDetector::as_str)),
        }
    }
}

impl DetectorKind {
    /// The built-in detector this is, if it is one.
    pub fn builtin(&self) -> Option<BuiltinDetector> {
        Some(match self {
            DetectorKind::CardNumber => BuiltinDetector::CardNumber,
            DetectorKind::UsSsn => BuiltinDetector::UsSsn,
            DetectorKind::Iban => BuiltinDetector::Iban,
            DetectorKind::PrivateKey => BuiltinDetector::PrivateKey,
            DetectorKind::AwsAccessKeyId => BuiltinDetector::AwsAccessKeyId,
            DetectorKind::AwsSecretKey => BuiltinDetector::AwsSecretKey,
            DetectorKind::GithubToken => BuiltinDetector::GithubToken,
            DetectorKind::SlackToken => BuiltinDetector::SlackToken,
            DetectorKind::BearerToken => BuiltinDetector::BearerToken,
            DetectorKind::Jwt => BuiltinDetector::Jwt,
            DetectorKind::Custom(_) | DetectorKind::Keyword(_) => return None,
        })
    }
}

/// The name of a tenant-defined pattern or keyword list: `[a-z0-9-]`, 1–64 bytes.
///
/// The restricted alphabet keeps redaction masks free of quotes and escapes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DetectorName(Arc<str>);

impl DetectorName {
    /// Checks and wraps a name.
    pub fn new(name: &str) -> Result<Self, DlpError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(DetectorName(name.into()))
        } else {
            Err(DlpError::InvalidName {
                name: name.chars().take(80).collect(),
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DetectorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to do with a body when a detector matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DlpAction {
    /// Count the match; pass the body unchanged.
    Record,
    /// Replace the match with `[REDACTED:<detector>]`.
    Redact,
    /// Refuse the body as soon as the match is found, before releasing it.
    Block,
}

impl fmt::Display for DlpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DlpAction::Record => "record",
            DlpAction::Redact => "redact",
            DlpAction::Block => "block",
        })
    }
}

/// Which body a scanner reads: the client's request or the upstream's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyDirection {
    /// Request bodies (data coming in).
    Request,
    /// Response bodies (data going out).
    Response,
}

/// The proof that a body must not be forwarded: the detector (with action `block`) that matched.
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq)]
#[error("body blocked by DLP detector {detector}")]
pub struct Blocked {
    /// The detector that matched.
    pub detector: DetectorKind,
}

/// One detector's tally for a body. Only counts are kept, never the matched bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The detector.
    pub detector: DetectorKind,
    /// The action configured for it (and so taken on each match).
    pub action: DlpAction,
    /// How many matches were found.
    pub count: u64,
}

/// Every detector's tally for one body, in detector order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Findings {
    entries: Vec<Finding>,
}

impl Findings {
    fn new(detectors: impl Iterator<Item = (DetectorKind, DlpAction)>) -> Self {
        let entries = detectors
            .map(|(detector, action)| Finding {
                detector,
                action,
                count: 0,
            })
            .collect();
        Findings { entries }
    }

    fn bump(&mut self, index: usize) {
        if let Some(e) = self.entries.get_mut(index) {
            e.count = e.count.saturating_add(1);
        }
    }

    /// Detectors that matched at least once.
    pub fn iter(&self) -> impl Iterator<Item = &Finding> {
        self.entries.iter().filter(|e| e.count > 0)
    }

    /// How many times `detector` matched.
    pub fn count(&self, detector: &DetectorKind) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.detector == *detector)
            .map(|e| e.count)
            .sum()
    }

    /// Matches over all detectors.
    pub fn total(&self) -> u64 {
        self.entries.iter().map(|e| e.count).sum()
    }

    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// Why a DLP spec was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DlpError {
    /// A pattern or keyword list name is not `[a-z0-9-]`, 1–64 bytes.
    #[error(
        "DLP name {name:?}: names may only contain lowercase letters, digits and '-' (1-64 bytes)"
    )]
    InvalidName {
        /// The refused name (cut to 80 characters).
        name: String,
    },
    /// Two patterns or keyword lists share a name.
    #[error("DLP name {name} is used twice; custom patterns and keyword lists need unique names")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// Too many patterns, lists or words.
    #[error("too many DLP {what}: at most {max} allowed")]
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A custom pattern does not compile or breaks a limit.
    #[error("DLP custom pattern {name}: {reason}")]
    Pattern {
        /// The pattern's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A keyword list is empty or has a word that cannot be used.
    #[error("DLP keyword list {name}: {reason}")]
    Keywords {
        /// The list's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}
