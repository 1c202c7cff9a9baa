//! SPIFFE IDs of workloads, and the patterns that access rules and issuance profiles match them
//! against.
//!
//! One rule, from the SPIFFE ID and X.509-SVID specifications: the scheme is exactly
//! `spiffe`; the trust domain is 1-255 bytes of `a-z 0-9 . - _` (so no port, userinfo or upper
//! case); the path is non-empty (an SVID's ID "MUST have a non-root path component", X509-SVID
//! §5.2), and each segment is non-empty, not `.` or `..`, and `A-Z a-z 0-9 . - _` only (so no
//! query, fragment or percent-encoding); the whole ID is at most 2048 bytes.

mod pattern;

use std::fmt;
use std::str::FromStr;

pub use pattern::{PatternError, SpiffeIdPattern};

/// Longest SPIFFE ID accepted, in bytes (SPIFFE ID spec §2.3).
const MAX_SPIFFE_ID: usize = 2048;
/// Longest trust domain accepted, in bytes (SPIFFE ID spec §2.1).
const MAX_TRUST_DOMAIN: usize = 255;
const SCHEME: &str = "spiffe://";

/// A workload's SPIFFE ID, `spiffe://trust-domain/path`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SpiffeId {
    /// The whole ID, e.g. `spiffe://example.org/ns/prod/sa/web`.
    full: String,
    /// Byte offset in `full` where the path (with its leading `/`) starts.
    path_start: usize,
}

/// Why a string is not a workload SPIFFE ID.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("a SPIFFE ID must start with `spiffe://`")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    /// A trust domain longer than 255 bytes.
    #[error("the trust domain is longer than 255 bytes")]
    TrustDomainTooLong,
    /// The trust domain has a character outside `[a-z0-9.-_]` (this includes ports, userinfo and
    /// uppercase letters).
    #[error("the trust domain may only contain lowercase letters, digits, '.', '-' and '_'")]
    InvalidTrustDomain,
    /// No path: `spiffe://example.org` names a trust domain, not a workload.
    #[error("a workload's SPIFFE ID needs a path (`spiffe://trust-domain/path`)")]
    NoPath,
    /// An empty path segment (`//`) or a trailing `/`.
    #[error("the path has an empty segment or a trailing '/'")]
    EmptySegment,
    /// A `.` or `..` path segment.
    #[error("the path may not contain '.' or '..' segments")]
    DotSegment,
    /// A path character outside `[A-Za-z0-9.-_]` (this includes query and fragment).
    #[error("the path may only contain letters, digits, '.', '-' and '_'")]
    InvalidPathCharacter,
    /// Longer than 2048 bytes.
    #[error("a SPIFFE ID may be at most 2048 bytes long")]
    TooLong,
}

impl SpiffeId {
    /// The trust domain, e.g. `example.org`.
    pub fn trust_domain(&self) -> &str {
        &self.full[SCHEME.len()..self.path_start]
    }

    /// The path with its leading `/`, e.g. `/ns/prod/sa/web` (never empty).
    pub fn path(&self) -> &str {
        &self.full[self.path_start..]
    }

    /// The whole ID as text.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The path segments, without slashes.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        // The path starts with '/': the first piece is always empty.
        self.path().split('/').skip(1)
    }
}

fn check_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(SpiffeIdError::InvalidTrustDomain);
    }
    Ok(())
}

/// Checks one literal path segment.
fn check_segment(seg: &str) -> Result<(), SpiffeIdError> {
    if seg.is_empty() {
        return Err(SpiffeIdError::EmptySegment);
    }
    if seg == "." || seg == ".." {
        return Err(SpiffeIdError::DotSegment);
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(SpiffeIdError::InvalidPathCharacter);
    }
    Ok(())
}

/// Splits `spiffe://td/a/b` into the trust domain and the path's segments (`a/b`). The path is
/// required.
fn split(s: &str) -> Result<(&str, &str), SpiffeIdError> {
    if s.len() > MAX_SPIFFE_ID {
        return Err(SpiffeIdError::TooLong);
    }
    let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
    match rest.split_once('/') {
        Some((td, path)) => Ok((td, path)),
        None => Err(if rest.is_empty() {
            SpiffeIdError::EmptyTrustDomain
        } else {
            SpiffeIdError::NoPath
        }),
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (td, path) = split(s)?;
        check_trust_domain(td)?;
        for seg in path.split('/') {
            check_segment(seg)?;
        }
        Ok(SpiffeId {
            full: s.to_owned(),
            path_start: SCHEME.len() + td.len(),
        })
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id: SpiffeId = "spiffe://example.org/ns/prod/sa/web".parse().unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/ns/prod/sa/web");
        assert_eq!(id.as_str(), "spiffe://example.org/ns/prod/sa/web");
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(
            id.segments().collect::<Vec<_>>(),
            ["ns", "prod", "sa", "web"]
        );
        let odd = SpiffeId::try_from("spiffe://td_1.example-x/A.b-C_9").unwrap();
        assert_eq!(odd.trust_domain(), "td_1.example-x");
        assert_eq!(odd.segments().collect::<Vec<_>>(), ["A.b-C_9"]);
    }

    #[test]
    fn rejects_invalid_ids() {
        use SpiffeIdError::*;
        let cases = [
            ("http://example.org/a", WrongScheme),
            ("SPIFFE://example.org/a", WrongScheme),
            ("spiffe:/example.org/a", WrongScheme),
            ("", WrongScheme),
            ("spiffe:///a", EmptyTrustDomain),
            ("spiffe://", EmptyTrustDomain),
            ("spiffe://Example.org/a", InvalidTrustDomain),
            ("spiffe://example.org:443/a", InvalidTrustDomain),
            ("spiffe://user@example.org/a", InvalidTrustDomain),
            ("spiffe://example.org?x/a", InvalidTrustDomain),
            ("spiffe://example.org/", EmptySegment),
            ("spiffe://example.org/a//b", EmptySegment),
            ("spiffe://example.org/a/", EmptySegment),
            ("spiffe://example.org/a/./b", DotSegment),
            ("spiffe://example.org/..", DotSegment),
            ("spiffe://example.org/a?x=1", InvalidPathCharacter),
            ("spiffe://example.org/a#f", InvalidPathCharacter),
            ("spiffe://example.org/a%20b", InvalidPathCharacter),
            ("spiffe://example.org/é", InvalidPathCharacter),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<SpiffeId>(), Err(want), "{input}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert_eq!(long.parse::<SpiffeId>(), Err(TooLong));
    }

    /// Where the policy's old rule and the CA's disagreed: a bare trust domain was a valid ID
    /// for policy and "no path" for the CA; a trust domain over 255 bytes was fine for policy.
    /// Both are refused now (X509-SVID §5.2; SPIFFE ID §2.1).
    #[test]
    fn the_old_rules_disagreed_here() {
        assert_eq!(
            "spiffe://example.org".parse::<SpiffeId>(),
            Err(SpiffeIdError::NoPath)
        );
        assert_eq!(
            "spiffe://example.org?x".parse::<SpiffeId>(),
            Err(SpiffeIdError::NoPath)
        );
        let td = "a".repeat(256);
        assert_eq!(
            format!("spiffe://{td}/x").parse::<SpiffeId>(),
            Err(SpiffeIdError::TrustDomainTooLong)
        );
        assert!(format!("spiffe://{}/x", "a".repeat(255))
            .parse::<SpiffeId>()
            .is_ok());
    }
}
