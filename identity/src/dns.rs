//! DNS names in certificates and the patterns that allow them.
//!
//! One rule for a name: lower-cased on parsing; at most 253 bytes; labels of 1-63 bytes of
//! `a-z 0-9 -`, neither starting nor ending with `-` (so no `_`, no empty label, no trailing
//! dot); the last label not all digits (an IP address is not a DNS name). A wildcard name is
//! `*.BASE` — the whole leftmost label, once — with at least two labels in BASE (`*.com` is
//! too broad to be a certificate's name).
//!
//! A pattern is an exact name, or `*.BASE` for exactly one label under BASE (any valid BASE,
//! `*.test` included). Profiles of the CA additionally refuse patterns too broad to issue.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const MAX_DNS_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// A valid DNS name, lower-cased: a host name, or a wildcard name `*.BASE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

/// Why a string is not a valid DNS name or pattern.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsNameError {
    /// The name is empty.
    #[error("not a valid DNS name: empty")]
    Empty,
    /// Longer than 253 bytes.
    #[error("not a valid DNS name: longer than 253 bytes")]
    TooLong,
    /// An empty label (`a..b`, a leading or trailing dot) or one over 63 bytes.
    #[error("not a valid DNS name: labels must be 1-63 bytes (no empty label, no trailing dot)")]
    LabelLength,
    /// A label character outside `a-z 0-9 -`.
    #[error("not a valid DNS name: labels may hold only a-z 0-9 -")]
    InvalidCharacter,
    /// A label starting or ending with `-`.
    #[error("not a valid DNS name: labels may not start or end with -")]
    HyphenAtEdge,
    /// The last label is all digits.
    #[error("not a valid DNS name: an all-numeric last label (an IP address is not a DNS name)")]
    NumericLastLabel,
    /// A `*` that is not the whole leftmost label.
    #[error("not a valid wildcard DNS name: * must be the whole leftmost label")]
    WildcardNotLeftmost,
    /// More than one `*`.
    #[error("not a valid wildcard DNS name: only one wildcard label, leftmost")]
    WildcardRepeated,
    /// A wildcard name with fewer than two labels under the `*`.
    #[error("not a valid wildcard DNS name: a wildcard needs at least two labels under it")]
    WildcardTooBroad,
}

impl DnsNameError {
    /// Whether the problem is with a wildcard (rather than with the name's syntax).
    pub fn is_wildcard(&self) -> bool {
        matches!(
            self,
            DnsNameError::WildcardNotLeftmost
                | DnsNameError::WildcardRepeated
                | DnsNameError::WildcardTooBroad
        )
    }

    /// The reason alone, without the "not a valid DNS name" lead.
    pub fn reason(&self) -> String {
        let text = self.to_string();
        match text.split_once(": ") {
            Some((_, why)) => why.to_owned(),
            None => text,
        }
    }
}

/// Checks a host name (no wildcard), already lower-cased.
fn check_host(name: &str) -> Result<(), DnsNameError> {
    if name.is_empty() {
        return Err(DnsNameError::Empty);
    }
    if name.len() > MAX_DNS_NAME {
        return Err(DnsNameError::TooLong);
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err(DnsNameError::LabelLength);
        }
        if label.contains('*') {
            return Err(DnsNameError::WildcardNotLeftmost);
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(DnsNameError::InvalidCharacter);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(DnsNameError::HyphenAtEdge);
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DnsNameError::NumericLastLabel);
    }
    Ok(())
}

/// Splits off a leading `*.`, checking that any `*` is exactly that.
fn split_wildcard(name: &str) -> Result<Option<&str>, DnsNameError> {
    if !name.contains('*') {
        return Ok(None);
    }
    let Some(base) = name.strip_prefix("*.") else {
        return Err(DnsNameError::WildcardNotLeftmost);
    };
    if base.contains('*') {
        return Err(DnsNameError::WildcardRepeated);
    }
    Ok(Some(base))
}

impl DnsName {
    /// The name as text (lower case).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a wildcard name `*.BASE`.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
}

impl FromStr for DnsName {
    type Err = DnsNameError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.len() > MAX_DNS_NAME {
            return Err(DnsNameError::TooLong);
        }
        let name = raw.to_ascii_lowercase();
        match split_wildcard(&name)? {
            Some(base) => {
                check_host(base)?;
                if !base.contains('.') {
                    return Err(DnsNameError::WildcardTooBroad);
                }
            }
            None => check_host(&name)?,
        }
        Ok(Self(name))
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An allowed DNS name: exact, or `*.BASE` for one label under BASE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DnsPattern {
    /// This name only (lower case).
    Exact(String),
    /// `*.BASE` (holds BASE, lower case): one label under BASE.
    Wildcard(String),
}

impl FromStr for DnsPattern {
    type Err = DnsNameError;

    /// `name.example.com` or `*.example.com`, in any case.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.len() > MAX_DNS_NAME {
            return Err(DnsNameError::TooLong);
        }
        let lower = raw.to_ascii_lowercase();
        match split_wildcard(&lower)? {
            Some(base) => {
                check_host(base)?;
                Ok(DnsPattern::Wildcard(base.to_owned()))
            }
            None => {
                check_host(&lower)?;
                Ok(DnsPattern::Exact(lower))
            }
        }
    }
}

impl DnsPattern {
    /// Whether a host name read from a certificate (any case, one trailing dot ignored:
    /// `a.example.` is `a.example`) is allowed. A name that is not a valid host name never
    /// matches, and neither does a wildcard name: it names a set of hosts, not a caller.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        name.parse::<DnsName>()
            .is_ok_and(|n| !n.is_wildcard() && self.covers(&n))
    }

    /// Whether `name` lies within the pattern: the exact name; for `*.BASE`, one label under
    /// BASE, or the wildcard name `*.BASE` itself (whether a wildcard name may be issued at all
    /// is for the caller to decide).
    pub fn covers(&self, name: &DnsName) -> bool {
        match self {
            DnsPattern::Exact(exact) => name.0 == *exact,
            DnsPattern::Wildcard(base) => {
                if let Some(asked) = name.0.strip_prefix("*.") {
                    return asked == base;
                }
                name.0
                    .strip_suffix(base.as_str())
                    .and_then(|front| front.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            }
        }
    }

    /// Whether this is a `*.BASE` pattern.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, DnsPattern::Wildcard(_))
    }

    /// For `*.BASE`, the wildcard name `*.BASE` as a certificate could carry it: an error when
    /// BASE is too broad for that (a single label, as in `*.com`). `None` for an exact pattern.
    pub fn wildcard_name(&self) -> Option<Result<DnsName, DnsNameError>> {
        match self {
            DnsPattern::Exact(_) => None,
            DnsPattern::Wildcard(_) => Some(self.to_string().parse()),
        }
    }
}

impl fmt::Display for DnsPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsPattern::Exact(name) => f.write_str(name),
            DnsPattern::Wildcard(base) => write!(f, "*.{base}"),
        }
    }
}

impl Serialize for DnsPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DnsPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            serde::de::Error::custom(format_args!("DNS pattern {:?}: {e}", crate::shown(&s)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    fn pat(s: &str) -> DnsPattern {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_lower_cased_and_checked() {
        assert_eq!(name("API.Example.com").as_str(), "api.example.com");
        assert_eq!(name("localhost").as_str(), "localhost");
        assert_eq!(name("a-1.b2").as_str(), "a-1.b2");
        assert!(name("*.acme.internal").is_wildcard());
        assert!(!name("acme.internal").is_wildcard());
        use DnsNameError::*;
        for (bad, want) in [
            ("", Empty),
            ("a..b", LabelLength),
            (".a", LabelLength),
            ("x.acme.internal.", LabelLength),
            ("exa mple.com", InvalidCharacter),
            ("under_score.acme.internal", InvalidCharacter),
            ("a/b", InvalidCharacter),
            ("-x.acme.internal", HyphenAtEdge),
            ("x-.acme", HyphenAtEdge),
            ("10.0.0.1", NumericLastLabel),
            ("*", WildcardNotLeftmost),
            ("w*.acme.internal", WildcardNotLeftmost),
            ("a.*.com", WildcardNotLeftmost),
            ("*.*.acme.internal", WildcardRepeated),
            ("*.com", WildcardTooBroad),
        ] {
            assert_eq!(bad.parse::<DnsName>(), Err(want.clone()), "{bad}");
            assert_eq!(want.is_wildcard(), bad.contains('*'), "{bad}");
        }
        assert_eq!(
            format!("{}.com", "a".repeat(64)).parse::<DnsName>(),
            Err(LabelLength)
        );
        assert_eq!("a.".repeat(127).parse::<DnsName>(), Err(TooLong));
        assert_eq!(InvalidCharacter.reason(), "labels may hold only a-z 0-9 -");
    }

    #[test]
    fn exact_patterns() {
        let exact = pat("Frontend.Example.org");
        assert_eq!(exact.to_string(), "frontend.example.org");
        assert!(exact.matches("frontend.example.org"));
        assert!(exact.matches("FRONTEND.example.org"));
        assert!(!exact.matches("x.frontend.example.org"));
        assert!(exact.wildcard_name().is_none());
    }

    #[test]
    fn wildcard_patterns_match_one_label() {
        let wild = pat("*.example.com");
        assert!(wild.is_wildcard());
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("A.Example.COM"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("a.b.example.com"));
        assert!(!wild.matches(".example.com"));
        assert!(!wild.matches("aexample.com"));
        // A wildcard name is a set of hosts, not a caller.
        assert!(!wild.matches("*.example.com"));
        // ... but lies within the pattern, for issuance.
        assert!(wild.covers(&name("*.example.com")));
        assert!(!wild.covers(&name("*.other.com")));
        assert!(wild.covers(&name("x.example.com")));
        assert!(!wild.covers(&name("a.b.example.com")));
    }

    #[test]
    fn invalid_patterns() {
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "a..b",
            "exa mple.com",
            "*example.com",
            "a/b",
            "*.*.a.b",
            "a*.b.c",
        ] {
            assert!(bad.parse::<DnsPattern>().is_err(), "{bad}");
        }
        let err = "front end.example.org".parse::<DnsPattern>().unwrap_err();
        assert!(err.to_string().contains("not a valid DNS name"), "{err}");
        let err = "*".parse::<DnsPattern>().unwrap_err();
        assert!(err.to_string().contains("wildcard"), "{err}");
    }

    /// Where the policy's old rule and the CA's disagreed. Policy accepted `_`, a trailing dot,
    /// edge hyphens and numeric last labels in patterns; the CA refused all of them. (A
    /// certificate name with one trailing dot is the same name and matches: see
    /// `a_trailing_dot_does_not_make_another_name`.) The CA refused `*.test` as a pattern (its
    /// wildcard-name rule); policy allowed it, and configs rely on it.
    #[test]
    fn the_old_rules_disagreed_here() {
        for bad in [
            "a_b.example",
            "frontend.example.org.",
            "-a.example",
            "10.0.0.1",
        ] {
            assert!(bad.parse::<DnsPattern>().is_err(), "{bad}");
        }
        let exact = pat("frontend.example.org");
        assert!(exact.matches("frontend.example.org."));
        assert!(!pat("*.example.org").matches("under_score.example.org"));

        let test = pat("*.test");
        assert!(test.matches("frontend.test"));
        // As a certificate name `*.test` is too broad: the CA keeps refusing such profiles.
        assert_eq!(
            test.wildcard_name(),
            Some(Err(DnsNameError::WildcardTooBroad))
        );
        assert_eq!(
            pat("*.acme.internal").wildcard_name(),
            Some(Ok(name("*.acme.internal")))
        );
    }

    #[test]
    fn serde() {
        let p: DnsPattern = serde_json::from_str("\"*.Acme.internal\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"*.acme.internal\"");
        let err = serde_json::from_str::<DnsPattern>("\"*\"").unwrap_err();
        assert!(err.to_string().contains("DNS pattern \"*\""), "{err}");
    }

    /// Found by the access-rules fuzz target: a SAN written as an absolute name (trailing dot)
    /// escaped a deny rule on the same name.
    #[test]
    fn a_trailing_dot_does_not_make_another_name() {
        let wildcard: DnsPattern = "*.svc.example.org".parse().unwrap();
        let exact: DnsPattern = "monitor.example.org".parse().unwrap();
        assert!(wildcard.matches("A.SVC.example.org."));
        assert!(exact.matches("monitor.example.org."));
        assert!(!exact.matches("monitor.example.org.."));
        assert!(!wildcard.matches("."));
    }
}
