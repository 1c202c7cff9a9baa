//! Names of the things an operator configures: tenants, routes, upstreams and access rules.
//!
//! Each is a checked newtype so a tenant name can never be passed where a rule id is expected,
//! and so logs and metrics labels only ever carry characters we allowed. [`TenantId`] is
//! shared with the CA (which writes it into certificates), so it comes from
//! `portcullis-identity` with the CA's rule: 1-63 of `a-z 0-9 -`, not starting with `-`.

use std::fmt;
use std::str::FromStr;

pub use portcullis_identity::TenantId;

/// Why a configured name was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than 128 bytes.
    #[error("the name is longer than 128 bytes")]
    TooLong,
    /// The name has a character outside the allowed set.
    #[error("the name may only contain {allowed}")]
    InvalidCharacter {
        /// A human description of the allowed characters.
        allowed: &'static str,
    },
}

const MAX_NAME_LEN: usize = 128;
const LOWER_DASH: &str = "lowercase letters, digits and '-'";
const WORDISH: &str = "letters, digits, '.', '_' and '-'";

fn is_lower_dash(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

fn is_wordish(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn check_name(s: &str, ok: fn(u8) -> bool, allowed: &'static str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !s.bytes().all(ok) {
        return Err(NameError::InvalidCharacter { allowed });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $ok:expr, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                check_name(s, $ok, $allowed)?;
                Ok($name(s.to_owned()))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;

            fn try_from(s: &str) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// An upstream's name: `[A-Za-z0-9._-]`, unique in the config.
    UpstreamName,
    is_wordish,
    WORDISH
);
name_type!(
    /// An access rule's id: `[A-Za-z0-9._-]`, unique within its tenant.
    RuleId,
    is_wordish,
    WORDISH
);

/// A route's identity: its tenant and its name (`[a-z0-9-]`), shown as `tenant/route`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(String);

impl RouteId {
    /// The id of route `name` in `tenant`.
    pub fn new(tenant: &TenantId, name: &str) -> Result<RouteId, NameError> {
        check_name(name, is_lower_dash, LOWER_DASH)?;
        Ok(RouteId(format!("{tenant}/{name}")))
    }

    /// `tenant/route`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The route's own name, without the tenant.
    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or(self.0.as_str(), |(_, n)| n)
    }
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_names_keep_their_own_rules() {
        assert_eq!("".parse::<UpstreamName>(), Err(NameError::Empty));
        assert!(matches!(
            "a b".parse::<UpstreamName>(),
            Err(NameError::InvalidCharacter { .. })
        ));
        assert_eq!("a".repeat(129).parse::<RuleId>(), Err(NameError::TooLong));
        assert!("a".repeat(128).parse::<RuleId>().is_ok());
    }

    #[test]
    fn route_id_displays_with_tenant() {
        let t: TenantId = "acme".parse().unwrap();
        let r = RouteId::new(&t, "api").unwrap();
        assert_eq!(r.to_string(), "acme/api");
        assert_eq!(r.as_str(), "acme/api");
        assert_eq!(r.name(), "api");
        assert!(RouteId::new(&t, "a/b").is_err());
    }

    #[test]
    fn rule_ids_allow_dots_and_underscores() {
        assert_eq!(
            RuleId::try_from("Front_end.read-1").unwrap().to_string(),
            "Front_end.read-1"
        );
        assert!("a b".parse::<RuleId>().is_err());
        assert!("echo.v2".parse::<UpstreamName>().is_ok());
    }
}
