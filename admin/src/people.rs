//! People as admin API callers: an OpenID Connect bearer token from a configured provider,
//! verified with `portcullis-identity`'s `oidc::verify` (the gateway's own rules: issuer,
//! audience, times, asymmetric signature, keys fetched and refreshed for an unknown `kid`).
//! Roles are bound to people by provider, subject or group (`roles[].people`); with
//! `mfa_for_writes`, what changes anything needs a token whose `amr` says a second factor.
//!
//! ```yaml
//! identity_providers:
//!   - name: corp
//!     issuer: https://login.example.com
//!     audiences: [portcullis-admin]
//!     ca: corp-ca.pem               # else the web PKI roots
//! mfa_for_writes: true
//! roles:
//!   - role: tenant_admin
//!     tenant: acme
//!     people: { provider: corp, groups: [acme-admins], subjects: [alice] }
//! ```
//!
//! Tokens are read on the role endpoints (`/v1/tenants/…`, `/v1/policies/…`, the inventory:
//! listing, lineage, revocation); `POST /v1/certificates` keeps `Authorization: Bearer` for
//! bootstrap tokens, and the policy bundle is for gateways' certificates only (403).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header::AUTHORIZATION, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use portcullis_identity::oidc::{
    bearer_token, verify, ClaimNames, KeySet, ProviderSettings, SigningAlgorithm, TokenIdentity,
};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, AppState};
use crate::identity::ConnInfo;

/// One provider whose tokens identify people, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// Named in role bindings and in the audit log.
    pub name: String,
    /// The issuer identifier (`https://…`), exactly as tokens' `iss` reads.
    pub issuer: String,
    /// A token's `aud` must name one of these.
    pub audiences: Vec<String>,
    /// Trust anchors for the provider's TLS (PEM); the web PKI roots when absent.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The claim holding groups (default `groups`).
    #[serde(default)]
    pub groups_claim: Option<String>,
}

/// People a role is bound to: a provider's subjects or groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PeopleBinding {
    pub provider: String,
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl PeopleBinding {
    pub(crate) fn matches(&self, person: &Person) -> bool {
        self.provider == person.provider
            && (self.subjects.contains(&person.token.subject)
                || person.token.groups.iter().any(|g| self.groups.contains(g)))
    }
}

/// How the audit log names the subject `subject` of provider `provider`.
pub(crate) fn oidc_actor(provider: &str, subject: &str) -> String {
    format!("oidc:{provider}:{subject}")
}

/// A verified person on one request.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub(crate) provider: String,
    pub(crate) token: TokenIdentity,
}

impl Person {
    /// How the audit log names the person.
    pub(crate) fn actor(&self) -> String {
        oidc_actor(&self.provider, &self.token.subject)
    }

    /// Whether the token says a second factor was used (RFC 8176 `amr` values).
    pub(crate) fn has_mfa(&self) -> bool {
        self.token
            .amr
            .iter()
            .any(|m| matches!(m.as_str(), "mfa" | "otp" | "hwk" | "swk" | "sms" | "fido"))
    }
}

/// The configured providers, each with its key set.
pub(crate) struct Providers {
    providers: Vec<(ProviderSettings, Arc<KeySet>)>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|(s, _)| &s.name))
            .finish()
    }
}

/// A key set fetches again for an unknown `kid` at most this often.
const UNKNOWN_KEY_REFETCH: Duration = Duration::from_secs(30);

impl Providers {
    /// Checks the section and makes a key set per provider (keys are fetched when a token
    /// first asks).
    pub(crate) fn new(configs: &[IdentityProviderConfig]) -> Result<Self, String> {
        let mut providers = Vec::new();
        let mut names = HashMap::new();
        for c in configs {
            if names.insert(c.name.clone(), ()).is_some() {
                return Err(format!("identity_providers: {} is listed twice", c.name));
            }
            if c.audiences.is_empty() {
                return Err(format!(
                    "identity_providers: {}: give at least one audience",
                    c.name
                ));
            }
            let roots = match &c.ca {
                Some(path) => portcullis_identity::load_certs(path)
                    .and_then(|certs| {
                        portcullis_identity::root_store(certs, "identity provider ca")
                    })
                    .map_err(|e| format!("identity_providers: {}: {e}", c.name))?,
                None => rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            let keys = KeySet::new(&c.issuer, roots, UNKNOWN_KEY_REFETCH)
                .map_err(|e| format!("identity_providers: {}: {e}", c.name))?;
            let settings = ProviderSettings {
                name: c.name.clone(),
                tenant: String::new(),
                issuer: c.issuer.clone(),
                audiences: c.audiences.clone(),
                algorithms: SigningAlgorithm::ALL.to_vec(),
                clock_skew: Duration::from_secs(60),
                claims: ClaimNames {
                    groups: c
                        .groups_claim
                        .clone()
                        .unwrap_or_else(|| "groups".to_owned()),
                    ..ClaimNames::default()
                },
            };
            providers.push((settings, Arc::new(keys)));
        }
        Ok(Self { providers })
    }

    fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// The person `token` names, from the first provider that verifies it (the issuer picks
    /// it: a token is tried only with the provider whose `iss` it carries).
    async fn verify(&self, token: &str) -> Result<Person, &'static str> {
        let iss = unverified_issuer(token).ok_or("token_malformed")?;
        let Some((settings, keys)) = self.providers.iter().find(|(s, _)| s.issuer == iss) else {
            return Err("token_issuer");
        };
        verify(token, keys, settings, SystemTime::now(), |_| {})
            .await
            .map(|token| Person {
                provider: settings.name.clone(),
                token,
            })
            .map_err(|e| e.label())
    }
}

/// The `iss` of a JWT's payload, read without trusting it (it only picks the provider whose
/// keys then verify the token).
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Whether a request's bearer credential is a person's token (and not a bootstrap token for
/// issuance, or an ACME request).
pub(crate) fn reads_people(req: &Request) -> bool {
    let path = req.uri().path();
    // The bearer of a pending request's poll is its pickup secret, not a person's token.
    !(path.starts_with("/acme/")
        || path.starts_with("/v1/certificates/pending/")
        || (path == portcullis_identity::ISSUANCE_PATH && req.method() == Method::POST))
}

/// Verifies a person's bearer token before the request is routed: the person goes with the
/// request (in its `ConnInfo`); a token that does not verify is 401 with the reason.
pub(crate) async fn authenticate(
    State(st): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(providers) = st.people.as_ref().filter(|p| !p.is_empty()) else {
        return next.run(req).await;
    };
    if !reads_people(&req) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get_all(AUTHORIZATION)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Vec<_>>();
    let token = match header.as_slice() {
        [] => return next.run(req).await,
        [Some(value)] => match bearer_token(value) {
            Some(Ok(token)) => token.to_owned(),
            None => return next.run(req).await,
            Some(Err(_)) => return invalid(req, "token_malformed").await,
        },
        _ => return invalid(req, "token_malformed").await,
    };
    match providers.verify(&token).await {
        Ok(person) => {
            if let Some(conn) = req.extensions_mut().get_mut::<ConnInfo>() {
                conn.person = Some(Arc::new(person));
            }
            next.run(req).await
        }
        Err(reason) => {
            tracing::info!(reason, "admin API: bearer token refused");
            invalid(req, reason).await
        }
    }
}

/// 401 with the reason, after reading what the client is still sending (bounded), so that it
/// reads the answer rather than a reset stream.
async fn invalid(req: Request, reason: &'static str) -> Response {
    let _ = crate::api::read_body(req.into_body()).await;
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        format!("the bearer token was refused ({reason})"),
    )
    .into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!(
        "Bearer realm=\"portcullis-admin\", error=\"invalid_token\", error_description=\"{reason}\""
    )) {
        response
            .headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, value);
    }
    response
}
