//! Bearer tokens on routes that read them: each tenant's OpenID Connect providers, their
//! signing keys (one [`KeySet`] per issuer and trust anchors, kept across reloads and fetched
//! on a schedule by one background thread), and verified tokens cached for their remaining
//! life so that a token's signature is checked once, not on every request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use moka::sync::Cache;
use portcullis_identity::oidc::{
    end_session_url, finish_login, start_login, verify, KeyRing, KeySet, LoginSettings, StepUp,
};
use portcullis_policy::{
    bearer_token, Config, IdentityProvider, ProviderSettings, Route, TenantId, TokenError,
    TokenIdentity,
};

use crate::admission::{Bearer, Refusal};
use crate::metrics::Metrics;
use crate::GatewayError;

mod login;

use login::{
    clear_cookie, open, safe_return, same_secret, seal, set_cookie, PendingLogin, Session,
    LOGIN_COOKIE, SESSION_COOKIE,
};

/// The `Set-Cookie` that ends a login in progress (after a failed callback).
pub(crate) fn clear_login_cookie() -> String {
    clear_cookie(LOGIN_COOKIE)
}

/// Bytes of verified (and refused) tokens kept, token text included.
const CACHE_BYTES: u64 = 32 << 20;
/// How long a refused token is remembered (so that a replayed bad token costs no signature
/// check). Refusals that a key fetch could change are not remembered.
const REFUSAL_TTL: Duration = Duration::from_secs(30);

/// What identifies a key set: the issuer, the trust anchors it is fetched with, and how often
/// an unknown key may make it fetch.
type KeySetKey = (String, Option<PathBuf>, Duration);

/// Every issuer's key set, for the life of the process: a reload reuses the sets its new
/// configuration still names (no fetch storm, no cold cache) and drops the others.
#[derive(Default, Debug)]
pub(crate) struct KeyRegistry {
    sets: Mutex<HashMap<KeySetKey, Registered>>,
}

#[derive(Clone, Debug)]
struct Registered {
    keys: Arc<KeySet>,
    /// The shortest `keys_refresh` among the providers that use the set.
    refresh: Duration,
}

impl KeyRegistry {
    /// The set for `provider`, made if new.
    fn key_set(&self, provider: &IdentityProvider) -> Result<Arc<KeySet>, GatewayError> {
        let key = (
            provider.settings.issuer.clone(),
            provider.ca.clone(),
            provider.unknown_key_refetch,
        );
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = sets.get_mut(&key) {
            found.refresh = found.refresh.min(provider.keys_refresh);
            return Ok(Arc::clone(&found.keys));
        }
        let roots = match &provider.ca {
            Some(ca) => portcullis_identity::load_certs(ca)
                .and_then(|certs| portcullis_identity::root_store(certs, &ca.display().to_string()))
                .map_err(|e| GatewayError::IdentityProvider(e.to_string()))?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let keys = Arc::new(
            KeySet::new(
                &provider.settings.issuer,
                roots,
                provider.unknown_key_refetch,
            )
            .map_err(GatewayError::IdentityProvider)?,
        );
        sets.insert(
            key,
            Registered {
                keys: Arc::clone(&keys),
                refresh: provider.keys_refresh,
            },
        );
        Ok(keys)
    }

    /// Keeps only the sets `config` names.
    fn retain(&self, config: &Config) {
        let named: Vec<KeySetKey> = providers(config)
            .map(|(_, p)| {
                (
                    p.settings.issuer.clone(),
                    p.ca.clone(),
                    p.unknown_key_refetch,
                )
            })
            .collect();
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.retain(|key, _| named.contains(key));
    }

    fn snapshot(&self) -> Vec<Registered> {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.values().cloned().collect()
    }

    /// Starts the thread that fetches every key set: at once, then every `keys_refresh`;
    /// while a set has never been fetched, again every few seconds (backing off to a
    /// minute). A failed fetch keeps the keys in use.
    pub(crate) fn spawn_refresher(
        self: &Arc<Self>,
        metrics: Arc<Metrics>,
    ) -> Result<(), GatewayError> {
        let registry = Arc::clone(self);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| GatewayError::IdentityProvider(format!("runtime: {e}")))?;
        std::thread::Builder::new()
            .name("oidc-keys".into())
            .spawn(move || runtime.block_on(registry.refresh_loop(metrics)))
            .map(drop)
            .map_err(|e| GatewayError::IdentityProvider(format!("thread: {e}")))
    }

    async fn refresh_loop(&self, metrics: Arc<Metrics>) {
        // Per issuer: when to fetch next, and the current retry delay while never fetched.
        let mut next: HashMap<String, (Instant, Duration)> = HashMap::new();
        loop {
            for set in self.snapshot() {
                let issuer = set.keys.issuer().to_owned();
                let (due, retry) = next
                    .get(&issuer)
                    .copied()
                    .unwrap_or((Instant::now(), Duration::from_secs(2)));
                if Instant::now() < due {
                    continue;
                }
                let outcome = set.keys.refresh().await;
                let status = set.keys.status();
                metrics.oidc_key_fetch(&issuer, "schedule", status.fetched_at, outcome.is_ok());
                let (wait, retry) = match (&outcome, status.fetched_at) {
                    (Ok(_), _) => (set.refresh, Duration::from_secs(2)),
                    (Err(e), fetched) => {
                        tracing::warn!(
                            issuer = %issuer,
                            error = %e,
                            serving_cached_keys = fetched.is_some(),
                            "identity provider keys could not be fetched"
                        );
                        // Never fetched: retry soon, backing off; else keep to the schedule
                        // but try again within a minute.
                        match fetched {
                            None => (retry, (retry * 2).min(Duration::from_secs(60))),
                            Some(_) => (set.refresh.min(Duration::from_secs(60)), retry),
                        }
                    }
                };
                next.insert(issuer, (Instant::now() + wait, retry));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn providers(config: &Config) -> impl Iterator<Item = (&TenantId, &IdentityProvider)> {
    config
        .tenants
        .iter()
        .flat_map(|t| t.identity_providers.iter().map(move |p| (&t.id, p)))
}

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

impl Authenticator {
    fn provider(&self, tenant: &str, name: &str) -> Option<&Provider> {
        self.tenants
            .iter()
            .find(|(t, _)| t.as_str() == tenant)
            .and_then(|(_, providers)| providers.iter().find(|p| p.settings.name == name))
    }

    /// The browser's session on `route`, if it has a live one of the route's tenant: ended
    /// past its absolute or idle lifetime; its ID token refreshed when expired (with the
    /// refresh token it holds), else ended.
    async fn session(
        &self,
        route: &Route,
        keys: &SessionKeys,
        cookies: &[&str],
        metrics: &Metrics,
    ) -> Authenticated {
        let absent = |set_cookie| Authenticated {
            bearer: Bearer::Absent,
            set_cookie,
        };
        let Some(mut session) = open::<Session>(&keys.ring, SESSION_COOKIE, cookies) else {
            return absent(None);
        };
        let tenant = route.tenant.as_str();
        let Some(provider) = (session.t == tenant)
            .then(|| self.provider(tenant, &session.p))
            .flatten()
        else {
            return absent(None);
        };
        let now = unix_now();
        let ended = Some(clear_cookie(SESSION_COOKIE));
        if now >= session.iat.saturating_add(keys.absolute)
            || now >= session.seen.saturating_add(keys.idle)
        {
            return absent(ended);
        }
        let mut renewed = false;
        if session.token_expiry() <= now {
            let (Some(login), Some(refresh)) = (&provider.login, session.r.as_deref()) else {
                return absent(ended);
            };
            match portcullis_identity::oidc::refresh_login(
                &provider.keys,
                login,
                &provider.settings,
                refresh,
            )
            .await
            {
                Ok(fresh) => {
                    metrics.oidc_token(tenant, &provider.settings.name, "session_refreshed");
                    tracing::info!(tenant, provider = %provider.settings.name, subject = %fresh.identity.subject, "session refreshed with its refresh token");
                    session.c = Session::new(
                        tenant,
                        &provider.settings.name,
                        fresh.identity.claims,
                        None,
                        now,
                    )
                    .c;
                    session.r = fresh.refresh_token;
                    renewed = true;
                }
                Err(e) => {
                    tracing::info!(tenant, provider = %provider.settings.name, error = %e, "session refresh failed; the person logs in again");
                    metrics.oidc_token(tenant, &provider.settings.name, "session_refresh_failed");
                    return absent(ended);
                }
            }
        }
        if renewed || now >= session.seen + login::SEEN_RESOLUTION {
            session.seen = now;
            renewed = true;
        }
        let Some(identity) = TokenIdentity::from_claims(
            session.c.clone(),
            &provider.settings.name,
            &provider.settings.claims,
        ) else {
            return absent(ended);
        };
        let set_cookie = renewed
            .then(|| seal(&keys.ring, SESSION_COOKIE, &session))
            .flatten()
            .map(|v| {
                set_cookie(
                    SESSION_COOKIE,
                    &v,
                    session
                        .iat
                        .saturating_add(keys.absolute)
                        .saturating_sub(now),
                )
            });
        Authenticated {
            bearer: Bearer::Valid(Arc::new(identity)),
            set_cookie,
        }
    }

    /// The answer to a browser refused for want of a login (`TokenRequired`) or of a strong
    /// or recent enough one (`StepUpRequired`) on `route`: a redirect to the provider, with
    /// the login's secrets in a sealed cookie. `None` for any other refusal, a route without a
    /// login, or a provider not discovered yet.
    pub(crate) fn login_redirect(
        &self,
        route: &Route,
        refusal: &Refusal,
        return_to: &str,
    ) -> Option<Refusal> {
        let step_up = match refusal {
            Refusal::TokenRequired => None,
            Refusal::StepUpRequired { .. } => route.mfa.as_ref().map(|m| StepUp {
                acr_values: m.acr.clone(),
                max_age: m.max_age,
            }),
            _ => return None,
        };
        let keys = self.sessions.as_ref()?;
        let provider = self.provider(route.tenant.as_str(), route.login.as_deref()?)?;
        let login = provider.login.as_ref()?;
        let start = match start_login(&provider.keys, login, step_up.as_ref()) {
            Ok(start) => start,
            Err(e) => {
                tracing::warn!(provider = %provider.settings.name, error = %e, "cannot start a login");
                return None;
            }
        };
        let pending = PendingLogin::new(
            route.tenant.as_str(),
            &provider.settings.name,
            &start,
            safe_return(return_to),
            unix_now(),
        );
        let sealed = seal(&keys.ring, LOGIN_COOKIE, &pending)?;
        Some(Refusal::LoginRedirect {
            location: start.url,
            cookie: set_cookie(LOGIN_COOKIE, &sealed, login::LOGIN_TTL),
        })
    }

    /// The provider's redirect back to the gateway: the code exchanged, the ID token checked,
    /// a session made, and the browser sent where it was going.
    pub(crate) async fn callback(
        &self,
        query: &str,
        cookies: &[&str],
        metrics: &Metrics,
    ) -> Refusal {
        let Some(keys) = &self.sessions else {
            return Refusal::LoginFailed("no login is configured");
        };
        let Some(pending) = open::<PendingLogin>(&keys.ring, LOGIN_COOKIE, cookies) else {
            return Refusal::LoginFailed("no login in progress (or it was started elsewhere)");
        };
        let now = unix_now();
        if now >= pending.iat + login::LOGIN_TTL {
            return Refusal::LoginFailed("the login took too long");
        }
        let param = |name: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if !param("state").is_some_and(|s| same_secret(&s, &pending.state)) {
            return Refusal::LoginFailed("the login's state does not match");
        }
        if param("error").is_some() {
            return Refusal::LoginFailed("the identity provider refused the login");
        }
        let Some(code) = param("code") else {
            return Refusal::LoginFailed("the callback carries no code");
        };
        let Some(provider) = self.provider(&pending.t, &pending.p) else {
            return Refusal::LoginFailed("the identity provider is no longer configured");
        };
        let Some(login) = &provider.login else {
            return Refusal::LoginFailed("the identity provider is no longer configured");
        };
        let logged_in = match finish_login(
            &provider.keys,
            login,
            &provider.settings,
            code,
            &pending.as_start(),
        )
        .await
        {
            Ok(logged_in) => logged_in,
            Err(e) => {
                tracing::info!(tenant = %pending.t, provider = %pending.p, error = %e, "login failed");
                metrics.oidc_token(&pending.t, &pending.p, "login_failed");
                return Refusal::LoginFailed("the login could not be completed");
            }
        };
        let session = Session::new(
            &pending.t,
            &pending.p,
            logged_in.identity.claims,
            logged_in.refresh_token,
            now,
        );
        let Some(sealed) = seal(&keys.ring, SESSION_COOKIE, &session) else {
            return Refusal::LoginFailed("the identity is too large for a session cookie");
        };
        metrics.oidc_token(&pending.t, &pending.p, "login");
        Refusal::LoggedIn {
            location: pending.ret,
            cookies: [
                set_cookie(SESSION_COOKIE, &sealed, keys.absolute),
                clear_cookie(LOGIN_COOKIE),
            ],
        }
    }

    /// Signing out: the session cookie removed, and the browser sent to the provider's
    /// end-session endpoint when it has one.
    pub(crate) fn logout(&self, cookies: &[&str]) -> Refusal {
        let location = self.sessions.as_ref().and_then(|keys| {
            let session = open::<Session>(&keys.ring, SESSION_COOKIE, cookies)?;
            let provider = self.provider(&session.t, &session.p)?;
            end_session_url(&provider.keys, provider.login.as_ref()?)
        });
        Refusal::LoggedOut {
            location,
            cookie: clear_cookie(SESSION_COOKIE),
        }
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
