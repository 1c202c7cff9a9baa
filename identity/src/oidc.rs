//! People as callers: an OpenID Connect provider's settings, the identity a verified bearer
//! token establishes ([`TokenIdentity`]), and why a token is refused ([`TokenError`]).
//!
//! These types are pure so that `policy` can judge claims without I/O. With the `io`
//! feature: [`KeySet`] (discovery and the provider's JSON Web Key Set, fetched with
//! `openidconnect` over the restricted rustls provider, refreshed on an unknown `kid` at a
//! bounded rate, served from cache while the provider is down) and [`verify`], which checks a
//! compact JWS against a key set and the provider's settings.

use std::time::Duration;

use serde_json::{Map, Value};

#[cfg(feature = "io")]
pub(crate) mod http;
#[cfg(feature = "io")]
mod keys;
#[cfg(feature = "io")]
mod login;
#[cfg(feature = "io")]
mod seal;
#[cfg(feature = "io")]
mod verify;

#[cfg(feature = "io")]
pub use keys::{KeySet, KeySetStatus};
#[cfg(feature = "io")]
pub use login::{
    end_session_url, finish_login, refresh_login, start_login, LoggedIn, LoginSettings, LoginStart,
    StepUp,
};
#[cfg(feature = "io")]
pub use seal::KeyRing;
#[cfg(feature = "io")]
pub use verify::{check_token_for_fuzzing, verify};

/// Largest bearer token read: anything longer is malformed, before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// The asymmetric JWS algorithms a provider may be allowed to sign with. Symmetric (`HS*`)
/// algorithms and `none` are not representable: a token naming them is refused before any
/// key is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl SigningAlgorithm {
    /// Every algorithm, the default allow-list.
    pub const ALL: [SigningAlgorithm; 9] = [
        SigningAlgorithm::RS256,
        SigningAlgorithm::RS384,
        SigningAlgorithm::RS512,
        SigningAlgorithm::PS256,
        SigningAlgorithm::PS384,
        SigningAlgorithm::PS512,
        SigningAlgorithm::ES256,
        SigningAlgorithm::ES384,
        SigningAlgorithm::EdDSA,
    ];

    /// The JOSE name (`RS256`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::RS384 => "RS384",
            SigningAlgorithm::RS512 => "RS512",
            SigningAlgorithm::PS256 => "PS256",
            SigningAlgorithm::PS384 => "PS384",
            SigningAlgorithm::PS512 => "PS512",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::ES384 => "ES384",
            SigningAlgorithm::EdDSA => "EdDSA",
        }
    }
}

impl std::str::FromStr for SigningAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SigningAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| match s {
                _ if s.starts_with("HS") => format!(
                    "`{s}` is a shared-secret algorithm: a gateway must not hold a key that can \
                     also sign tokens"
                ),
                "none" => "`none` is not a signature".to_owned(),
                _ => format!(
                    "`{s}` is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, \
                     EdDSA"
                ),
            })
    }
}

/// Which claims carry what, for providers that name them differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimNames {
    /// The claim holding the caller's groups (default `groups`): a string or list of strings.
    pub groups: String,
    /// The claim holding the caller's e-mail address (default `email`).
    pub email: String,
    /// A claim that must name the tenant, for providers shared by several tenants.
    pub tenant: Option<String>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            groups: "groups".to_owned(),
            email: "email".to_owned(),
            tenant: None,
        }
    }
}

/// What the gateway accepts from one provider of one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderSettings {
    /// The provider's name within its tenant (records and metrics).
    pub name: String,
    /// The tenant the provider belongs to (checked against [`ClaimNames::tenant`]).
    pub tenant: String,
    /// The issuer identifier, exactly as the tokens' `iss` must read (an `https` URL).
    pub issuer: String,
    /// A token's `aud` must name at least one of these.
    pub audiences: Vec<String>,
    /// Algorithms the provider's tokens may be signed with.
    pub algorithms: Vec<SigningAlgorithm>,
    /// Tolerance for `exp`, `nbf` and `iat` against the gateway's clock.
    pub clock_skew: Duration,
    pub claims: ClaimNames,
}

/// Who a verified token says its holder is. Claims are kept whole for rules on any claim;
/// the token itself is not kept.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenIdentity {
    /// The provider (of the route's tenant) that verified the token.
    pub provider: String,
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// `auth_time`, when the person last authenticated, if the token says.
    pub auth_time: Option<u64>,
    /// The e-mail claim, lower-cased.
    pub email: Option<String>,
    pub groups: Vec<String>,
    /// Authentication methods (`amr`), e.g. `pwd`, `mfa`, `hwk`, `otp`.
    pub amr: Vec<String>,
    /// Authentication context class (`acr`).
    pub acr: Option<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
}

/// A claim that is a string or a list of strings.
fn strings(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl TokenIdentity {
    /// The identity `claims` describe, read with `names`, as established by `provider`; `None`
    /// without a non-empty `sub`. Nothing is checked: [`verify`] checks first (`policy
    /// explain` uses this directly for claims given on the command line).
    pub fn from_claims(
        claims: Map<String, Value>,
        provider: &str,
        names: &ClaimNames,
    ) -> Option<TokenIdentity> {
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return None,
        };
        let date = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_f64)
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(|n| n as u64)
        };
        Some(TokenIdentity {
            provider: provider.to_owned(),
            issuer: claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            subject,
            expires_at: date("exp").unwrap_or_default(),
            auth_time: date("auth_time"),
            email: claims
                .get(&names.email)
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase),
            groups: strings(&claims, &names.groups),
            amr: strings(&claims, "amr"),
            acr: claims.get("acr").and_then(Value::as_str).map(str::to_owned),
            claims,
        })
    }

    /// The domain of the e-mail claim.
    pub fn email_domain(&self) -> Option<&str> {
        self.email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d)
    }

    /// The values of the claim at a dotted `path` (`realm_access.roles`): a string, number or
    /// boolean as its text, a list as each such element. Objects and `null` give nothing.
    pub fn claim_values(&self, path: &str) -> Vec<String> {
        let mut parts = path.split('.');
        let Some(first) = parts.next() else {
            return Vec::new();
        };
        let mut value = self.claims.get(first);
        for part in parts {
            value = value.and_then(|v| v.get(part));
        }
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        match value {
            Some(Value::Array(items)) => items.iter().filter_map(text).collect(),
            Some(v) => text(v).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Whether the person authenticated within `max_age` of `now` (seconds since the epoch).
    /// A token without `auth_time` has not.
    pub fn authenticated_within(&self, max_age: Duration, now: u64) -> bool {
        self.auth_time
            .is_some_and(|t| now.saturating_sub(t) <= max_age.as_secs())
    }
}

/// Why a bearer token was not accepted. The label goes to metrics, access log and audit;
/// the description to the caller in `WWW-Authenticate`; neither ever holds the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the token is not a well-formed signed JWT")]
    Malformed,
    #[error("the token's signing algorithm is not accepted")]
    Algorithm,
    #[error("the token is signed with a key the provider does not publish")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token is from another issuer")]
    Issuer,
    #[error("the token is not meant for this service")]
    Audience,
    #[error("the token lacks a required claim")]
    MissingClaim,
    #[error("the token is for another tenant")]
    Tenant,
    /// The provider's keys have never been fetched (the provider has been unreachable since
    /// start-up): not the caller's fault.
    #[error("the identity provider's keys are not available")]
    KeysUnavailable,
}

impl TokenError {
    /// A stable label for metrics and records (`token_expired`, …).
    pub fn label(self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::Algorithm => "token_algorithm",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::Signature => "token_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "token_issued_in_future",
            TokenError::Issuer => "token_issuer",
            TokenError::Audience => "token_audience",
            TokenError::MissingClaim => "token_missing_claim",
            TokenError::Tenant => "token_tenant",
            TokenError::KeysUnavailable => "token_keys_unavailable",
        }
    }
}

/// The bearer token of an `Authorization` header value, if it is one (scheme compared
/// without case, RFC 6750 §2.1). `Err` for a bearer credential that is empty or too long.
pub fn bearer_token(authorization: &str) -> Option<Result<&str, TokenError>> {
    let (scheme, rest) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Some(Err(TokenError::Malformed));
    }
    Some(Ok(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(claims: Value) -> TokenIdentity {
        TokenIdentity {
            provider: "p".into(),
            issuer: "https://idp".into(),
            subject: "s".into(),
            expires_at: 0,
            auth_time: Some(1_000),
            email: Some("a@example.com".into()),
            groups: Vec::new(),
            amr: Vec::new(),
            acr: None,
            claims: claims.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn claim_paths_read_strings_numbers_and_lists() {
        let id = identity(serde_json::json!({
            "realm": {"roles": ["a", "b", {"x": 1}]},
            "level": 3,
            "ok": true,
            "none": null,
        }));
        assert_eq!(id.claim_values("realm.roles"), ["a", "b"]);
        assert_eq!(id.claim_values("level"), ["3"]);
        assert_eq!(id.claim_values("ok"), ["true"]);
        assert!(id.claim_values("none").is_empty());
        assert!(id.claim_values("realm").is_empty());
        assert!(id.claim_values("missing.path").is_empty());
        assert_eq!(id.email_domain(), Some("example.com"));
    }

    #[test]
    fn max_age_needs_an_auth_time() {
        let mut id = identity(Value::Null);
        assert!(id.authenticated_within(Duration::from_secs(60), 1_050));
        assert!(!id.authenticated_within(Duration::from_secs(60), 1_061));
        id.auth_time = None;
        assert!(!id.authenticated_within(Duration::from_secs(60), 1_000));
    }

    #[test]
    fn algorithms_are_asymmetric_only() {
        assert_eq!("ES256".parse(), Ok(SigningAlgorithm::ES256));
        assert!("HS256"
            .parse::<SigningAlgorithm>()
            .unwrap_err()
            .contains("shared-secret"));
        assert!("none".parse::<SigningAlgorithm>().is_err());
        assert!("rs256".parse::<SigningAlgorithm>().is_err());
    }

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer_token("Bearer abc"), Some(Ok("abc")));
        assert_eq!(bearer_token("bearer  abc "), Some(Ok("abc")));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), Some(Err(TokenError::Malformed)));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer_token(&long), Some(Err(TokenError::Malformed)));
    }
}
