//! Who the caller is: SPIFFE IDs and the [`Identity`] a request is judged on.
//!
//! An identity is parsed once, at the edge (today from the client's X.509 certificate), and the
//! access rules only ever see these checked types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Longest SPIFFE ID accepted, in bytes (SPIFFE spec §2.3).
const MAX_SPIFFE_ID_LEN: usize = 2048;
const SCHEME: &str = "spiffe://";

/// A parsed `spiffe://trust-domain/path` identifier.
///
/// Parsing follows the SPIFFE ID spec: the scheme is exactly `spiffe`, the trust domain is
/// lowercase `[a-z0-9.-_]` with no port or userinfo, and each path segment is non-empty,
/// neither `.` nor `..`, and uses only `[A-Za-z0-9.-_]`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SpiffeId {
    /// The whole ID, e.g. `spiffe://example.org/ns/prod/sa/web`.
    full: String,
    /// Byte offset in `full` where the path starts (== `full.len()` when there is no path).
    path_start: usize,
}

/// Why a string is not a valid SPIFFE ID.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("a SPIFFE ID must start with `spiffe://`")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain has a character outside `[a-z0-9.-_]` (this includes ports, userinfo and
    /// uppercase letters).
    #[error("the trust domain may only contain lowercase letters, digits, '.', '-' and '_'")]
    InvalidTrustDomain,
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

    /// The path including its leading `/`, or `""` when the ID names the trust domain itself.
    pub fn path(&self) -> &str {
        &self.full[self.path_start..]
    }

    /// The whole ID as text.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The path segments, without slashes.
    pub(crate) fn segments(&self) -> impl Iterator<Item = &str> {
        // "" yields no segment and "/a/b" yields a, b: the first piece is always empty.
        self.path().split('/').skip(1)
    }
}

pub(crate) fn is_trust_domain_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
}

pub(crate) fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// Checks a trust domain name (the part after `spiffe://`).
pub(crate) fn check_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if !td.bytes().all(is_trust_domain_char) {
        return Err(SpiffeIdError::InvalidTrustDomain);
    }
    Ok(())
}

/// Checks one literal path segment.
pub(crate) fn check_segment(seg: &str) -> Result<(), SpiffeIdError> {
    if seg.is_empty() {
        return Err(SpiffeIdError::EmptySegment);
    }
    if seg == "." || seg == ".." {
        return Err(SpiffeIdError::DotSegment);
    }
    if !seg.bytes().all(is_path_char) {
        return Err(SpiffeIdError::InvalidPathCharacter);
    }
    Ok(())
}

/// Splits `spiffe://td/path` into trust domain and path (path keeps its leading '/').
pub(crate) fn split_spiffe(s: &str) -> Result<(&str, &str), SpiffeIdError> {
    let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
    Ok(match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    })
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let (td, path) = split_spiffe(s)?;
        check_trust_domain(td)?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                check_segment(seg)?;
            }
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

/// Who the caller is, as far as the gateway could establish.
///
/// Today this comes from a verified X.509 client certificate; OIDC tokens will later fill
/// `claims`.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    /// The SPIFFE ID from the certificate's URI SAN, if it had exactly one valid one.
    pub spiffe_id: Option<SpiffeId>,
    /// DNS names from the certificate's SANs.
    pub dns_sans: Vec<String>,
    /// The certificate subject as an RFC 4514-style string, e.g. `CN=frontend,O=Acme`.
    pub subject: Option<String>,
    /// Token claims (empty for certificates).
    pub claims: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// An identity established by an X.509 client certificate.
    pub fn from_x509(
        spiffe_id: Option<SpiffeId>,
        dns_sans: Vec<String>,
        subject: Option<String>,
    ) -> Identity {
        Identity {
            spiffe_id,
            dns_sans,
            subject,
            claims: BTreeMap::new(),
        }
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

        let bare = SpiffeId::try_from("spiffe://td_1.example-x").unwrap();
        assert_eq!(bare.trust_domain(), "td_1.example-x");
        assert_eq!(bare.path(), "");
        assert_eq!(bare.segments().count(), 0);
    }

    #[test]
    fn rejects_invalid_ids() {
        use SpiffeIdError::*;
        let cases = [
            ("http://example.org/a", WrongScheme),
            ("SPIFFE://example.org/a", WrongScheme),
            ("spiffe:/example.org/a", WrongScheme),
            ("spiffe:///a", EmptyTrustDomain),
            ("spiffe://", EmptyTrustDomain),
            ("spiffe://Example.org/a", InvalidTrustDomain),
            ("spiffe://example.org:443/a", InvalidTrustDomain),
            ("spiffe://user@example.org/a", InvalidTrustDomain),
            ("spiffe://example.org/", EmptySegment),
            ("spiffe://example.org/a//b", EmptySegment),
            ("spiffe://example.org/a/", EmptySegment),
            ("spiffe://example.org/a/./b", DotSegment),
            ("spiffe://example.org/..", DotSegment),
            ("spiffe://example.org/a?x=1", InvalidPathCharacter),
            ("spiffe://example.org/a#f", InvalidPathCharacter),
            ("spiffe://example.org/a%20b", InvalidPathCharacter),
            ("spiffe://example.org/é", InvalidPathCharacter),
            ("spiffe://example.org?x", InvalidTrustDomain),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<SpiffeId>(), Err(want), "{input}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert_eq!(long.parse::<SpiffeId>(), Err(TooLong));
    }

    #[test]
    fn identity_from_x509_has_no_claims() {
        let id = Identity::from_x509(None, vec!["a.example".into()], Some("CN=a".into()));
        assert!(id.claims.is_empty());
        assert_eq!(id.dns_sans, ["a.example"]);
    }
}
