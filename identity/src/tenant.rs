//! Tenant ids. The CA writes a tenant into the `O=` of every certificate it issues, and both
//! planes key limits, profiles, tokens and audit records by it, so there is one rule for all.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const MAX_TENANT_ID: usize = 63;

/// A tenant's id: 1-63 characters of lower-case letters, digits and `-`, not starting with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

/// Why a string is not a tenant id.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantIdError {
    /// The string is empty.
    #[error("a tenant id may not be empty")]
    Empty,
    /// Longer than 63 bytes.
    #[error("a tenant id is at most 63 characters")]
    TooLong,
    /// A character outside `a-z 0-9 -`.
    #[error("a tenant id may only contain a-z, 0-9 and '-'")]
    InvalidCharacter,
    /// Starts with `-`.
    #[error("a tenant id may not start with '-'")]
    LeadingDash,
}

impl TenantId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = TenantIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(TenantIdError::Empty);
        }
        if s.len() > MAX_TENANT_ID {
            return Err(TenantIdError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(TenantIdError::InvalidCharacter);
        }
        if s.starts_with('-') {
            return Err(TenantIdError::LeadingDash);
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<&str> for TenantId {
    type Error = TenantIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            serde::de::Error::custom(format_args!("tenant id {:?}: {e}", crate::shown(&s)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for ok in ["acme", "acme-1", "1acme", "a", "a-", &"a".repeat(63)] {
            assert_eq!(ok.parse::<TenantId>().unwrap().as_str(), ok);
        }
        assert_eq!(TenantId::try_from("acme").unwrap().to_string(), "acme");
    }

    #[test]
    fn invalid_ids() {
        use TenantIdError::*;
        for (bad, want) in [
            ("", Empty),
            ("Acme", InvalidCharacter),
            ("a_b", InvalidCharacter),
            ("a/b", InvalidCharacter),
            ("a.b", InvalidCharacter),
            ("é", InvalidCharacter),
            ("-a", LeadingDash),
        ] {
            assert_eq!(bad.parse::<TenantId>(), Err(want), "{bad}");
        }
        assert_eq!("a".repeat(64).parse::<TenantId>(), Err(TooLong));
    }

    /// Where the policy's old rule (≤128, leading '-' allowed) and the CA's disagreed, the CA's
    /// wins: the tenant is written into certificates.
    #[test]
    fn the_old_rules_disagreed_here() {
        assert_eq!("-edge".parse::<TenantId>(), Err(TenantIdError::LeadingDash));
        assert_eq!(
            "a".repeat(100).parse::<TenantId>(),
            Err(TenantIdError::TooLong)
        );
    }

    #[test]
    fn serde_round_trip_and_refusal() {
        let t: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"acme\"");
        let err = serde_json::from_str::<TenantId>("\"Acme\"").unwrap_err();
        assert!(err.to_string().contains("tenant id \"Acme\""), "{err}");
    }
}
