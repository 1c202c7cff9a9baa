//! Patterns that access rules match identities against: SPIFFE ID patterns and DNS names.

use std::fmt;
use std::str::FromStr;

use crate::identity::{check_segment, check_trust_domain, split_spiffe, SpiffeId, SpiffeIdError};

/// Why a SPIFFE ID or DNS pattern in the config was refused.
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
    /// Not a valid DNS name or `*.domain` wildcard.
    #[error("not a valid DNS name or `*.domain` wildcard")]
    InvalidDnsName,
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
pub(crate) struct SpiffePattern {
    text: String,
    trust_domain: String,
    segments: Vec<Segment>,
}

impl FromStr for SpiffePattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (td, path) = split_spiffe(s)?;
        if td.contains('*') {
            return Err(PatternError::WildcardTrustDomain);
        }
        check_trust_domain(td)?;
        let mut segments = Vec::new();
        if !path.is_empty() {
            let parts: Vec<&str> = path[1..].split('/').collect();
            let last = parts.len() - 1;
            for (i, part) in parts.iter().enumerate() {
                segments.push(match *part {
                    "*" => Segment::One,
                    "**" if i == last => Segment::Rest,
                    "**" => return Err(PatternError::DoubleStarNotLast),
                    p if p.contains('*') => return Err(PatternError::PartialWildcard),
                    p => {
                        check_segment(p)?;
                        Segment::Literal(p.to_owned())
                    }
                });
            }
        }
        Ok(SpiffePattern {
            text: s.to_owned(),
            trust_domain: td.to_owned(),
            segments,
        })
    }
}

impl SpiffePattern {
    pub(crate) fn matches(&self, id: &SpiffeId) -> bool {
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
}

impl fmt::Display for SpiffePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A DNS SAN pattern: an exact name, or `*.example.com` matching exactly one extra label.
/// Stored lowercase, without a trailing dot; matching ignores case and one trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DnsPattern {
    Exact(String),
    /// The part after `*.`.
    Wildcard(String),
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

impl FromStr for DnsPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        if let Some(suffix) = lower.strip_prefix("*.") {
            if is_dns_name(suffix) {
                return Ok(DnsPattern::Wildcard(suffix.to_owned()));
            }
        } else if is_dns_name(lower) {
            return Ok(DnsPattern::Exact(lower.to_owned()));
        }
        Err(PatternError::InvalidDnsName)
    }
}

impl DnsPattern {
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        match self {
            DnsPattern::Exact(want) => want.eq_ignore_ascii_case(name),
            DnsPattern::Wildcard(suffix) => match name.split_once('.') {
                Some((label, rest)) => {
                    !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)
                }
                None => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn pat(s: &str) -> SpiffePattern {
        s.parse().unwrap()
    }

    #[test]
    fn exact_spiffe_patterns() {
        let p = pat("spiffe://example.org/ns/prod/sa/web");
        assert!(p.matches(&id("spiffe://example.org/ns/prod/sa/web")));
        assert!(!p.matches(&id("spiffe://example.org/ns/prod/sa/web/x")));
        assert!(!p.matches(&id("spiffe://example.org/ns/prod/sa")));
        assert!(!p.matches(&id("spiffe://other.org/ns/prod/sa/web")));
        assert!(!p.matches(&id("spiffe://example.org/ns/prod/sa/Web")));
        let bare = pat("spiffe://example.org");
        assert!(bare.matches(&id("spiffe://example.org")));
        assert!(!bare.matches(&id("spiffe://example.org/a")));
    }

    #[test]
    fn single_star_matches_exactly_one_segment() {
        let p = pat("spiffe://example.org/ns/*/sa/frontend");
        assert!(p.matches(&id("spiffe://example.org/ns/prod/sa/frontend")));
        assert!(p.matches(&id("spiffe://example.org/ns/dev/sa/frontend")));
        assert!(!p.matches(&id("spiffe://example.org/ns/sa/frontend")));
        assert!(!p.matches(&id("spiffe://example.org/ns/a/b/sa/frontend")));
        assert!(!p.matches(&id("spiffe://example.org/ns/prod/sa/backend")));
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
        assert!(!all.matches(&id("spiffe://example.org")));
        assert!(!all.matches(&id("spiffe://example.com/x")));
    }

    #[test]
    fn invalid_spiffe_patterns() {
        let bad = [
            (
                "spiffe://*.example.org/a",
                PatternError::WildcardTrustDomain,
            ),
            ("spiffe://example.org/fo*", PatternError::PartialWildcard),
            ("spiffe://example.org/**/a", PatternError::DoubleStarNotLast),
            ("spiffe://example.org/***", PatternError::PartialWildcard),
            (
                "https://example.org/a",
                PatternError::Spiffe(SpiffeIdError::WrongScheme),
            ),
            (
                "spiffe://example.org/a//b",
                PatternError::Spiffe(SpiffeIdError::EmptySegment),
            ),
            (
                "spiffe://example.org/../a",
                PatternError::Spiffe(SpiffeIdError::DotSegment),
            ),
        ];
        for (input, want) in bad {
            assert_eq!(input.parse::<SpiffePattern>(), Err(want), "{input}");
        }
    }

    #[test]
    fn dns_patterns() {
        let exact: DnsPattern = "Frontend.Example.org".parse().unwrap();
        assert!(exact.matches("frontend.example.org"));
        assert!(exact.matches("FRONTEND.example.org."));
        assert!(!exact.matches("x.frontend.example.org"));

        let wild: DnsPattern = "*.example.com".parse().unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("A.Example.COM"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("a.b.example.com"));
        assert!(!wild.matches(".example.com"));
        assert!(!wild.matches("aexample.com"));

        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "a..b",
            "exa mple.com",
            "*example.com",
            "a/b",
        ] {
            assert_eq!(
                bad.parse::<DnsPattern>(),
                Err(PatternError::InvalidDnsName),
                "{bad}"
            );
        }
    }
}
