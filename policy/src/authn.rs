//! What a route asks callers to prove before its access rules are read: a client
//! certificate, a bearer token from one of the tenant's OpenID Connect providers, or both;
//! and, for people, how recently and how strongly they authenticated (MFA step-up).

use std::path::PathBuf;
use std::time::Duration;

pub use portcullis_identity::oidc::{
    bearer_token, ClaimNames, ProviderSettings, SigningAlgorithm, TokenError, TokenIdentity,
};

/// How callers of a route authenticate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Authentication {
    /// The connection's client certificate, if any (the access rules decide what an absent
    /// one means). A bearer token is not read.
    #[default]
    Mtls,
    /// A valid bearer token is required; a client certificate, if presented, is known too.
    Oidc,
    /// Both: a client certificate on the connection and a valid bearer token (a person on a
    /// managed device).
    MtlsAndOidc,
}

impl Authentication {
    /// Whether the route reads bearer tokens.
    pub fn wants_token(self) -> bool {
        matches!(self, Authentication::Oidc | Authentication::MtlsAndOidc)
    }

    /// Whether the route needs a client certificate.
    pub fn wants_certificate(self) -> bool {
        self == Authentication::MtlsAndOidc
    }
}

/// One OpenID Connect provider of a tenant, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityProvider {
    /// What tokens must satisfy.
    pub settings: ProviderSettings,
    /// Trust anchors for the provider's HTTPS; `None`: the public web roots.
    pub ca: Option<PathBuf>,
    /// How often the key set is fetched again in the background.
    pub keys_refresh: Duration,
    /// At most one fetch per this interval for tokens naming a key not yet known.
    pub unknown_key_refetch: Duration,
    /// The browser login with this provider, if configured.
    pub login: Option<ProviderLogin>,
}

/// The gateway as a confidential client of a provider, for the browser login.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderLogin {
    pub client_id: String,
    /// Never in the file itself.
    pub client_secret: crate::config::SecretSource,
    /// The gateway's callback, `https://HOST/.portcullis/oidc/callback`.
    pub redirect_uri: String,
    pub scopes: Vec<String>,
}

/// Where the provider sends the browser back after a login.
pub const CALLBACK_PATH: &str = "/.portcullis/oidc/callback";
/// Where a person signs out.
pub const LOGOUT_PATH: &str = "/.portcullis/oidc/logout";

/// The session cookies of the browser login (`sessions`).
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSettings {
    /// The key ring file: one `ID BASE64-KEY` a line, the first seals.
    pub key_ring: PathBuf,
    /// A session ends this long after the login, whatever happens.
    pub absolute_lifetime: Duration,
    /// A session ends after this long without a request.
    pub idle_lifetime: Duration,
}

/// A route's demand on how a person authenticated. Every part given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MfaRequirement {
    /// At least one of these methods in the token's `amr`.
    pub amr: Vec<String>,
    /// The token's `acr` is one of these.
    pub acr: Vec<String>,
    /// The person authenticated (`auth_time`) at most this long ago.
    pub max_age: Option<Duration>,
}

impl MfaRequirement {
    /// Whether `token` meets the requirement at `now` (seconds since the epoch).
    pub fn met_by(&self, token: &TokenIdentity, now: u64) -> bool {
        (self.amr.is_empty() || token.amr.iter().any(|m| self.amr.contains(m)))
            && (self.acr.is_empty() || token.acr.as_ref().is_some_and(|a| self.acr.contains(a)))
            && self
                .max_age
                .is_none_or(|age| token.authenticated_within(age, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(amr: &[&str], acr: Option<&str>, auth_time: Option<u64>) -> TokenIdentity {
        TokenIdentity {
            provider: "p".into(),
            issuer: "https://idp".into(),
            subject: "s".into(),
            expires_at: 0,
            auth_time,
            email: None,
            groups: Vec::new(),
            amr: amr.iter().map(|s| s.to_string()).collect(),
            acr: acr.map(str::to_owned),
            claims: Default::default(),
        }
    }

    #[test]
    fn mfa_needs_every_part_given() {
        let need = MfaRequirement {
            amr: vec!["mfa".into(), "hwk".into()],
            acr: Vec::new(),
            max_age: Some(Duration::from_secs(600)),
        };
        assert!(need.met_by(&token(&["pwd", "mfa"], None, Some(1_000)), 1_500));
        assert!(!need.met_by(&token(&["pwd"], None, Some(1_000)), 1_500));
        assert!(!need.met_by(&token(&["mfa"], None, Some(1_000)), 1_601));
        assert!(!need.met_by(&token(&["mfa"], None, None), 1_000));
        let acr = MfaRequirement {
            acr: vec!["urn:mfa".into()],
            ..MfaRequirement::default()
        };
        assert!(acr.met_by(&token(&[], Some("urn:mfa"), None), 0));
        assert!(!acr.met_by(&token(&[], Some("urn:pwd"), None), 0));
        assert!(!acr.met_by(&token(&[], None, None), 0));
    }
}
