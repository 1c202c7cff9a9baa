//! SPIFFE ID patterns: `spiffe://TRUST.DOMAIN/literal/*/**`, where `*` is exactly one path
//! segment and `**` (last only) one or more. The trust domain is always literal, and the
//! literal parts follow the SPIFFE ID rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{check_segment, check_trust_domain, split, SpiffeId, SpiffeIdError};

/// Why a SPIFFE ID pattern was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternError {
    /// The literal parts are not valid SPIFFE ID parts.
    #[error("{0}")]
    Spiffe(#[from] SpiffeIdError),
    /// A `*` inside the trust domain: trust domains must be literal.
    #[error("the trust domain must be literal (no wildcards)")]
    WildcardTrustDomain,
    /// A segment such as `fo*` that mixes text and wildcard.
    #[error("a wildcard must be a whole segment (`*` or a final `**`)")]
    PartialWildcard,
    /// `**` somewhere other than the last segment.
    #[error("`**` is only allowed as the last segment")]
    DoubleStarNotLast,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**` (last only): one or more segments.
    Rest,
}

/// A SPIFFE ID pattern such as `spiffe://example.org/ns/*/sa/web` or `spiffe://example.org/**`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiffeIdPattern {
    text: String,
    trust_domain: String,
    segments: Vec<Segment>,
}

impl FromStr for SpiffeIdPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (td, path) = split(s)?;
        if td.contains('*') {
            return Err(PatternError::WildcardTrustDomain);
        }
        check_trust_domain(td)?;
        let parts: Vec<&str> = path.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "*" => Segment::One,
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => return Err(PatternError::DoubleStarNotLast),
                p if p.contains('*') => return Err(PatternError::PartialWildcard),
                p => {
                    check_segment(p)?;
                    Segment::Literal(p.to_owned())
                }
            });
        }
        Ok(SpiffeIdPattern {
            text: s.to_owned(),
            trust_domain: td.to_owned(),
            segments,
        })
    }
}

impl SpiffeIdPattern {
    /// The pattern's (literal) trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Whether `id` matches: the same trust domain, and the path segment by segment.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        if id.trust_domain() != self.trust_domain {
            return false;
        }
        let mut have = id.segments();
        for want in &self.segments {
            match (want, have.next()) {
                (_, None) => return false,
                (Segment::Literal(lit), Some(seg)) if lit != seg => return false,
                (Segment::Rest, Some(_)) => return true,
                _ => {}
            }
        }
        have.next().is_none()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for SpiffeIdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for SpiffeIdPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for SpiffeIdPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            serde::de::Error::custom(format_args!(
                "SPIFFE ID pattern {:?}: {e}",
                crate::shown(&s)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn pat(s: &str) -> SpiffeIdPattern {
        s.parse().unwrap()
    }

    #[test]
    fn exact_patterns() {
        let p = pat("spiffe://example.org/ns/prod/sa/web");
        assert_eq!(p.trust_domain(), "example.org");
        assert_eq!(p.as_str(), "spiffe://example.org/ns/prod/sa/web");
        assert!(p.matches(&id("spiffe://example.org/ns/prod/sa/web")));
        assert!(!p.matches(&id("spiffe://example.org/ns/prod/sa/web/x")));
        assert!(!p.matches(&id("spiffe://example.org/ns/prod/sa")));
        assert!(!p.matches(&id("spiffe://other.org/ns/prod/sa/web")));
        assert!(!p.matches(&id("spiffe://example.org/ns/prod/sa/Web")));
    }

    #[test]
    fn single_star_matches_exactly_one_segment() {
        let p = pat("spiffe://example.org/ns/*/sa/frontend");
        assert!(p.matches(&id("spiffe://example.org/ns/prod/sa/frontend")));
        assert!(p.matches(&id("spiffe://example.org/ns/dev/sa/frontend")));
        assert!(!p.matches(&id("spiffe://example.org/ns/sa/frontend")));
        assert!(!p.matches(&id("spiffe://example.org/ns/a/b/sa/frontend")));
        assert!(!p.matches(&id("spiffe://example.org/ns/prod/sa/backend")));
        let two = pat("spiffe://example.org/ns/*/sa/*");
        assert!(two.matches(&id("spiffe://example.org/ns/a/sa/b")));
        assert!(!two.matches(&id("spiffe://example.org/ns/a/sa/b/c")));
    }

    #[test]
    fn double_star_matches_one_or_more_trailing_segments() {
        let p = pat("spiffe://example.org/ns/**");
        assert!(p.matches(&id("spiffe://example.org/ns/a")));
        assert!(p.matches(&id("spiffe://example.org/ns/a/b/c")));
        assert!(!p.matches(&id("spiffe://example.org/ns")));
        assert!(!p.matches(&id("spiffe://example.org/other/a")));
        let all = pat("spiffe://example.org/**");
        assert!(all.matches(&id("spiffe://example.org/x")));
        assert!(!all.matches(&id("spiffe://example.com/x")));
    }

    #[test]
    fn invalid_patterns() {
        use PatternError::*;
        let bad = [
            ("spiffe://*.example.org/a", WildcardTrustDomain),
            ("spiffe://*/a", WildcardTrustDomain),
            ("spiffe://example.org/fo*", PartialWildcard),
            ("spiffe://example.org/ns-*", PartialWildcard),
            ("spiffe://example.org/**/a", DoubleStarNotLast),
            ("spiffe://example.org/***", PartialWildcard),
            ("https://example.org/a", Spiffe(SpiffeIdError::WrongScheme)),
            ("spiffe://Acme/x", Spiffe(SpiffeIdError::InvalidTrustDomain)),
            (
                "spiffe://example.org/a//b",
                Spiffe(SpiffeIdError::EmptySegment),
            ),
            (
                "spiffe://example.org/../a",
                Spiffe(SpiffeIdError::DotSegment),
            ),
            (
                "spiffe://example.org/a?b",
                Spiffe(SpiffeIdError::InvalidPathCharacter),
            ),
        ];
        for (input, want) in bad {
            assert_eq!(input.parse::<SpiffeIdPattern>(), Err(want), "{input}");
        }
    }

    /// The policy accepted a bare `spiffe://example.org` pattern (matching only the trust
    /// domain's own ID); the CA refused it. A workload ID always has a path, so it is refused.
    #[test]
    fn the_old_rules_disagreed_here() {
        assert_eq!(
            "spiffe://example.org".parse::<SpiffeIdPattern>(),
            Err(PatternError::Spiffe(SpiffeIdError::NoPath))
        );
        assert_eq!(
            "spiffe://example.org/".parse::<SpiffeIdPattern>(),
            Err(PatternError::Spiffe(SpiffeIdError::EmptySegment))
        );
    }

    #[test]
    fn serde_shows_the_pattern_in_errors() {
        let p: SpiffeIdPattern = serde_json::from_str("\"spiffe://a.example/**\"").unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            "\"spiffe://a.example/**\""
        );
        let err = serde_json::from_str::<SpiffeIdPattern>("\"spiffe://a.example/**/x\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("last segment") && err.contains("SPIFFE ID pattern"),
            "{err}"
        );
    }
}
