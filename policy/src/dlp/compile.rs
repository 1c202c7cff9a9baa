//! Compiling a [`DlpSpec`] once per config load into the immutable rule sets scanners share.

use std::collections::BTreeSet;
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use super::builtin::{PositionFilter, MAX_READ};
use super::scanner::Scanner;
use super::spec::{BuiltinDetector, DlpSpec};
use super::{BodyDirection, DetectorKind, DetectorName, DlpAction, DlpError};

/// The most custom patterns a spec may have.
const MAX_PATTERNS: usize = 64;
/// The most keyword lists a spec may have.
const MAX_KEYWORD_LISTS: usize = 64;
/// The most words in one keyword list.
const MAX_WORDS: usize = 1024;
/// The longest keyword, in bytes.
const MAX_WORD_LEN: usize = 128;
/// The longest custom pattern source, and the longest text it may match, in bytes.
const MAX_PATTERN_LEN: usize = 1024;
/// The most heap one compiled pattern (and its lazy DFA cache) may use.
const MAX_PATTERN_HEAP: usize = 1 << 20;
/// The most heap one compiled keyword list may use.
const MAX_KEYWORDS_HEAP: usize = 8 << 20;
/// Bytes after a custom match that its word-boundary assertions may look at (one UTF-8 char).
pub(crate) const CUSTOM_LOOK_AHEAD: usize = 4;

/// A compiled DLP policy: which detectors run on request and response bodies, and what each
/// does on a match. Built once per config load; cloning shares it.
#[derive(Clone, Debug)]
pub struct DlpPolicy {
    request: Arc<RuleSet>,
    response: Arc<RuleSet>,
}

impl DlpPolicy {
    /// Checks and compiles `spec`.
    pub fn new(spec: &DlpSpec) -> Result<Self, DlpError> {
        let tenant = compile_tenant_rules(spec)?;
        Ok(DlpPolicy {
            request: Arc::new(RuleSet::new(spec, &tenant, BodyDirection::Request)),
            response: Arc::new(RuleSet::new(spec, &tenant, BodyDirection::Response)),
        })
    }

    /// A scanner for one body travelling in `direction`.
    pub fn scanner(&self, direction: BodyDirection) -> Scanner {
        Scanner::new(
            Arc::clone(self.rules(direction)),
            PositionFilter::prefilter(),
        )
    }

    /// A scanner that finds the positions to decide as scanners did before the block
    /// prefilter: the same findings, redactions and released bytes, slower. For benchmarks and
    /// tests that compare the two.
    #[cfg(any(test, feature = "reference-scanner"))]
    #[doc(hidden)]
    pub fn reference_scanner(&self, direction: BodyDirection) -> Scanner {
        let rules = Arc::clone(self.rules(direction));
        let filter = PositionFilter::reference(rules.builtin_enabled);
        Scanner::new(rules, filter)
    }

    /// Whether any detector applies to bodies in `direction` (if not, skip scanning them).
    pub fn scans(&self, direction: BodyDirection) -> bool {
        !self.rules(direction).detectors.is_empty()
    }

    /// The most bytes a scanner of this policy ever holds back from release.
    pub fn max_hold_back(&self) -> usize {
        self.request.hold_limit.max(self.response.hold_limit)
    }

    /// A scanner that tries every position (tests only).
    #[cfg(test)]
    pub(crate) fn exhaustive_scanner(&self, direction: BodyDirection) -> Scanner {
        Scanner::new(
            Arc::clone(self.rules(direction)),
            PositionFilter::exhaustive(),
        )
    }

    fn rules(&self, direction: BodyDirection) -> &Arc<RuleSet> {
        match direction {
            BodyDirection::Request => &self.request,
            BodyDirection::Response => &self.response,
        }
    }
}

/// A tenant pattern or word list, compiled.
#[derive(Clone, Debug)]
pub(crate) struct CustomMatcher {
    pub(crate) regex: Regex,
    /// The longest text the pattern can match.
    pub(crate) max_len: usize,
    /// Index of its detector in [`RuleSet::detectors`].
    pub(crate) finding: usize,
}

/// Everything a scanner for one direction needs.
#[derive(Debug)]
pub(crate) struct RuleSet {
    /// Detectors in finding order: enabled built-ins, then patterns, then word lists.
    pub(crate) detectors: Vec<(DetectorKind, DlpAction)>,
    /// Redaction mask per detector, e.g. `[REDACTED:card_number]`.
    pub(crate) masks: Vec<Box<[u8]>>,
    /// Bit set of enabled built-ins.
    pub(crate) builtin_enabled: u16,
    /// Index in `detectors` of each built-in, by [`BuiltinDetector`] discriminant.
    pub(crate) builtin_finding: [usize; BuiltinDetector::ALL.len()],
    pub(crate) custom: Vec<CustomMatcher>,
    /// Bytes a scanner may need past a position before deciding it.
    pub(crate) hold_limit: usize,
}

struct TenantRule {
    kind: DetectorKind,
    action: DlpAction,
    selector: super::DirectionSelector,
    regex: Regex,
    max_len: usize,
}

impl RuleSet {
    fn new(spec: &DlpSpec, tenant: &[TenantRule], direction: BodyDirection) -> Self {
        let builtins = match direction {
            BodyDirection::Request => &spec.request,
            BodyDirection::Response => &spec.response,
        };
        let mut detectors = Vec::new();
        let mut builtin_enabled = 0;
        let mut builtin_finding = [usize::MAX; BuiltinDetector::ALL.len()];
        for b in BuiltinDetector::ALL {
            if let Some(&action) = builtins.get(&b) {
                builtin_finding[b as usize] = detectors.len();
                builtin_enabled |= b.bit();
                detectors.push((DetectorKind::from(b), action));
            }
        }
        let mut custom = Vec::new();
        for rule in tenant.iter().filter(|r| r.selector.includes(direction)) {
            custom.push(CustomMatcher {
                regex: rule.regex.clone(),
                max_len: rule.max_len,
                finding: detectors.len(),
            });
            detectors.push((rule.kind.clone(), rule.action));
        }
        let masks = detectors
            .iter()
            .map(|(kind, _)| format!("[REDACTED:{kind}]").into_bytes().into_boxed_slice())
            .collect();
        let hold_limit = custom
            .iter()
            .map(|c| c.max_len + CUSTOM_LOOK_AHEAD)
            .fold(MAX_READ, usize::max);
        RuleSet {
            detectors,
            masks,
            builtin_enabled,
            builtin_finding,
            custom,
            hold_limit,
        }
    }
}

fn compile_tenant_rules(spec: &DlpSpec) -> Result<Vec<TenantRule>, DlpError> {
    if spec.custom.len() > MAX_PATTERNS {
        return Err(DlpError::TooMany {
            what: "custom patterns",
            max: MAX_PATTERNS,
        });
    }
    if spec.keywords.len() > MAX_KEYWORD_LISTS {
        return Err(DlpError::TooMany {
            what: "keyword lists",
            max: MAX_KEYWORD_LISTS,
        });
    }
    let mut names = BTreeSet::new();
    let mut unique = |name: &str| -> Result<DetectorName, DlpError> {
        let checked = DetectorName::new(name)?;
        if !names.insert(checked.clone()) {
            return Err(DlpError::DuplicateName {
                name: name.to_owned(),
            });
        }
        Ok(checked)
    };
    let mut rules = Vec::new();
    for c in &spec.custom {
        let name = unique(&c.name)?;
        let fail = |reason: String| DlpError::Pattern {
            name: c.name.clone(),
            reason,
        };
        if c.pattern.len() > MAX_PATTERN_LEN {
            return Err(fail(format!(
                "the pattern is longer than {MAX_PATTERN_LEN} bytes"
            )));
        }
        let (regex, max_len) = compile_bounded(&c.pattern, MAX_PATTERN_HEAP).map_err(fail)?;
        rules.push(TenantRule {
            kind: DetectorKind::Custom(name),
            action: c.action,
            selector: c.direction,
            regex,
            max_len,
        });
    }
    for k in &spec.keywords {
        let name = unique(&k.name)?;
        let fail = |reason: String| DlpError::Keywords {
            name: k.name.clone(),
            reason,
        };
        let pattern = keyword_pattern(&k.words).map_err(fail)?;
        let (regex, max_len) = compile_bounded(&pattern, MAX_KEYWORDS_HEAP).map_err(fail)?;
        rules.push(TenantRule {
            kind: DetectorKind::Keyword(name),
            action: k.action,
            selector: k.direction,
            regex,
            max_len,
        });
    }
    Ok(rules)
}

/// One case-insensitive alternation; a word boundary is asserted at each end of a word that
/// is an ASCII word character there.
fn keyword_pattern(words: &[String]) -> Result<String, String> {
    if words.is_empty() {
        return Err("the list has no words".into());
    }
    if words.len() > MAX_WORDS {
        return Err(format!("more than {MAX_WORDS} words"));
    }
    let mut alternatives = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        if word.is_empty() || word.len() > MAX_WORD_LEN {
            return Err(format!(
                "word {} must be 1-{MAX_WORD_LEN} bytes long",
                i + 1
            ));
        }
        if word.chars().any(char::is_control) {
            return Err(format!("word {} has a control character", i + 1));
        }
        let edge = |c: Option<char>| {
            if c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                r"(?-u:\b)"
            } else {
                ""
            }
        };
        alternatives.push(format!(
            "{}{}{}",
            edge(word.chars().next()),
            regex::escape(word),
            edge(word.chars().last())
        ));
    }
    Ok(format!("(?i:{})", alternatives.join("|")))
}

/// Compiles a pattern that can be found in a stream with a bounded hold-back: non-empty
/// matches of at most [`MAX_PATTERN_LEN`] bytes, and no assertions but word boundaries.
/// `heap` caps the compiled program and its lazy DFA cache.
fn compile_bounded(pattern: &str, heap: usize) -> Result<(Regex, usize), String> {
    let regex = RegexBuilder::new(pattern)
        .size_limit(heap)
        .dfa_size_limit(heap)
        .nest_limit(64)
        .build()
        .map_err(|e| e.to_string())?;
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .nest_limit(64)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    let props = hir.properties();
    if props.minimum_len() == Some(0) {
        return Err("the pattern can match empty text".into());
    }
    let max_len = match props.maximum_len() {
        Some(n) if n <= MAX_PATTERN_LEN => n,
        _ => {
            return Err(format!(
                "the pattern can match more than {MAX_PATTERN_LEN} bytes; bound every \
                 repetition (write [0-9]{{6,12}}, not [0-9]+)"
            ))
        }
    };
    if props.look_set().contains_anchor() {
        return Err(
            "the pattern uses ^, $, \\A or \\z; body patterns may only use word \
                    boundaries (\\b)"
                .into(),
        );
    }
    Ok((regex, max_len))
}
