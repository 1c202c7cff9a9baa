//! Bearer tokens on routes that read them: each tenant's OpenID Connect providers, their
//! signing keys (one [`KeySet`] per issuer and trust anchors, kept across reloads and fetched
//! on a schedule by one background thread), and verified tokens cached for their remaining
//! life so that a token's signature is checked once, not on every request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use moka::sync::Cache;
use portcullis_identity::oidc::{verify, KeyRing, KeySet, LoginSettings};
use portcullis_policy::{
    bearer_token, Config, ProviderSettings, Route, TenantId, TokenError, TokenIdentity,
};

use crate::admission::Bearer;
use crate::metrics::Metrics;
use crate::GatewayError;

mod browser;
mod keys;
mod login;

use keys::providers;
pub(crate) use keys::KeyRegistry;
use login::{clear_cookie, LOGIN_COOKIE};

/// The `Set-Cookie` that ends a login in progress (after a failed callback).
pub(crate) fn clear_login_cookie() -> String {
    clear_cookie(LOGIN_COOKIE)
}

/// Bytes of verified (and refused) tokens kept, token text included.
const CACHE_BYTES: u64 = 32 << 20;
/// How long a refused token is remembered (so that a replayed bad token costs no signature
/// check). Refusals that a key fetch could change are not remembered.
const REFUSAL_TTL: Duration = Duration::from_secs(30);

/// One provider of one tenant, ready to verify (and to log people in, with a client).
struct Provider {
    settings: ProviderSettings,
    keys: Arc<KeySet>,
    login: Option<LoginSettings>,
}

/// The session cookies' keys and lifetimes.
struct SessionKeys {
    ring: KeyRing,
    absolute: u64,
    idle: u64,
}

/// A request's caller as the route's authentication found it, and the session cookie to
/// send back when the session was renewed (last seen, or a refreshed ID token).
pub(crate) struct Authenticated {
    pub bearer: Bearer,
    pub set_cookie: Option<String>,
}

/// A token's verdict for the tenant that asked.
type Verdict = (Arc<TenantId>, Result<Arc<TokenIdentity>, TokenError>);

/// Verified and refused tokens, by token text. An entry lives until the token expires (a
/// refusal for [`REFUSAL_TTL`]).
type TokenCache = Cache<Arc<str>, Verdict>;

/// One generation's bearer-token verification.
pub(crate) struct Authenticator {
    tenants: HashMap<TenantId, Vec<Provider>>,
    cache: TokenCache,
    sessions: Option<SessionKeys>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tenants", &self.tenants.len())
            .finish_non_exhaustive()
    }
}

/// Expiry of cache entries: a verified token at its `exp`, a refusal after a while.
struct UntilExpiry;

impl moka::Expiry<Arc<str>, Verdict> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        (_, value): &Verdict,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Ok(token) => {
                let now = unix_now();
                Duration::from_secs(token.expires_at.saturating_sub(now))
            }
            Err(_) => REFUSAL_TTL,
        })
    }
}

/// Seconds since the Unix epoch (token and session times, MFA `max_age`).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authenticator {
    /// The providers of every tenant of `config`, their key sets from `registry` (which then
    /// forgets the sets `config` no longer names).
    pub(crate) fn build(config: &Config, registry: &KeyRegistry) -> Result<Self, GatewayError> {
        let mut tenants: HashMap<TenantId, Vec<Provider>> = HashMap::new();
        for (tenant, provider) in providers(config) {
            let login = match &provider.login {
                None => None,
                Some(l) => Some(LoginSettings {
                    client_id: l.client_id.clone(),
                    client_secret: crate::audit::read_secret(
                        &l.client_secret,
                        &format!(
                            "identity provider {}: client secret",
                            provider.settings.name
                        ),
                    )
                    .map_err(GatewayError::IdentityProvider)?,
                    redirect_uri: l.redirect_uri.clone(),
                    scopes: l.scopes.clone(),
                }),
            };
            tenants.entry(tenant.clone()).or_default().push(Provider {
                settings: provider.settings.clone(),
                keys: registry.key_set(provider)?,
                login,
            });
        }
        let sessions = match &config.sessions {
            None => None,
            Some(s) => Some(SessionKeys {
                ring: KeyRing::load(&s.key_ring).map_err(|e| {
                    GatewayError::IdentityProvider(format!("sessions.key_ring {e}"))
                })?,
                absolute: s.absolute_lifetime.as_secs(),
                idle: s.idle_lifetime.as_secs(),
            }),
        };
        registry.retain(config);
        let cache = Cache::builder()
            .max_capacity(CACHE_BYTES)
            .weigher(|key: &Arc<str>, _| u32::try_from(key.len() + 1024).unwrap_or(u32::MAX))
            .expire_after(UntilExpiry)
            .build();
        Ok(Self {
            tenants,
            cache,
            sessions,
        })
    }

    /// The caller of a route that reads tokens: the bearer token, else (on a route with
    /// `login`) the browser's session.
    pub(crate) async fn authenticate(
        &self,
        route: &Route,
        authorization: Result<Option<&str>, TokenError>,
        cookies: &[&str],
        metrics: &Metrics,
    ) -> Authenticated {
        let bearer = self.bearer(route, authorization, metrics).await;
        match (&bearer, &route.login, &self.sessions) {
            (Bearer::Absent, Some(_), Some(keys)) => {
                self.session(route, keys, cookies, metrics).await
            }
            _ => Authenticated {
                bearer,
                set_cookie: None,
            },
        }
    }

    /// The request's bearer token, verified for `route`'s tenant: absent on a route that
    /// reads none or when none was sent (or the `Authorization` header is another scheme).
    async fn bearer(
        &self,
        route: &Route,
        authorization: Result<Option<&str>, TokenError>,
        metrics: &Metrics,
    ) -> Bearer {
        if !route.authentication.wants_token() {
            return Bearer::Absent;
        }
        let tenant = route.tenant.as_str();
        let token = match authorization.map(|a| a.and_then(bearer_token)) {
            Err(e) => Some(Err(e)),
            Ok(token) => token,
        };
        let token = match token {
            None => return Bearer::Absent,
            Some(Err(e)) => {
                metrics.oidc_token(tenant, "-", e.label());
                return Bearer::Invalid(e);
            }
            Some(Ok(token)) => token,
        };
        // Looked up by the token's text, without a copy; an entry is the tenant's verdict.
        let cached = self.cache.get(token).filter(|(t, outcome)| {
            // An entry can outlive its token by up to a second.
            **t == route.tenant && !matches!(outcome, Ok(id) if id.expires_at < unix_now())
        });
        let outcome = match cached {
            Some((_, outcome)) => outcome,
            None => {
                let outcome = self.verify(&route.tenant, token, metrics).await;
                // Refusals a key fetch could change are not remembered.
                let remember = !matches!(
                    outcome,
                    Err(TokenError::UnknownKey | TokenError::KeysUnavailable)
                );
                if remember {
                    let entry = (Arc::new(route.tenant.clone()), outcome.clone());
                    self.cache.insert(Arc::from(token), entry);
                }
                outcome
            }
        };
        match &outcome {
            Ok(t) => metrics.oidc_token(tenant, &t.provider, "valid"),
            Err(e) => metrics.oidc_token(tenant, "-", e.label()),
        }
        match outcome {
            Ok(t) => Bearer::Valid(t),
            Err(e) => Bearer::Invalid(e),
        }
    }

    /// Verifies `token` with the tenant's providers whose issuer the token names.
    async fn verify(
        &self,
        tenant: &TenantId,
        token: &str,
        metrics: &Metrics,
    ) -> Result<Arc<TokenIdentity>, TokenError> {
        let issuer = claimed_issuer(token).ok_or(TokenError::Malformed)?;
        let mut outcome = Err(TokenError::Issuer);
        for provider in self
            .tenants
            .get(tenant)
            .into_iter()
            .flatten()
            .filter(|p| p.settings.issuer == issuer)
        {
            outcome = verify(
                token,
                &provider.keys,
                &provider.settings,
                SystemTime::now(),
                |fetched| {
                    let status = provider.keys.status();
                    metrics.oidc_key_fetch(
                        &issuer,
                        "unknown_key",
                        status.fetched_at,
                        fetched.is_ok(),
                    );
                },
            )
            .await
            .map(Arc::new);
            // Several providers of one issuer differ in audience (or claims): try the next.
            if !matches!(outcome, Err(TokenError::Audience | TokenError::Tenant)) {
                break;
            }
        }
        outcome
    }
}

/// The `iss` a token claims, read before any check only to pick the provider to check it
/// with (the provider's verification then requires it to be exactly its issuer).
fn claimed_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}
