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
use portcullis_identity::oidc::{verify, KeySet};
use portcullis_policy::{
    bearer_token, Config, IdentityProvider, ProviderSettings, Route, TenantId, TokenError,
    TokenIdentity,
};

use crate::admission::Bearer;
use crate::metrics::Metrics;
use crate::GatewayError;

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

/// One provider of one tenant, ready to verify.
struct Provider {
    settings: ProviderSettings,
    keys: Arc<KeySet>,
}

/// Verified and refused tokens, by tenant and token text. An entry lives until the token
/// expires (a refusal for [`REFUSAL_TTL`]).
type TokenCache = Cache<(TenantId, Arc<str>), Result<Arc<TokenIdentity>, TokenError>>;

/// One generation's bearer-token verification.
pub(crate) struct Authenticator {
    tenants: HashMap<TenantId, Vec<Provider>>,
    cache: TokenCache,
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

impl moka::Expiry<(TenantId, Arc<str>), Result<Arc<TokenIdentity>, TokenError>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &(TenantId, Arc<str>),
        value: &Result<Arc<TokenIdentity>, TokenError>,
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

fn unix_now() -> u64 {
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
            tenants.entry(tenant.clone()).or_default().push(Provider {
                settings: provider.settings.clone(),
                keys: registry.key_set(provider)?,
            });
        }
        registry.retain(config);
        let cache = Cache::builder()
            .max_capacity(CACHE_BYTES)
            .weigher(|key: &(TenantId, Arc<str>), _| {
                u32::try_from(key.1.len() + 1024).unwrap_or(u32::MAX)
            })
            .expire_after(UntilExpiry)
            .build();
        Ok(Self { tenants, cache })
    }

    /// The request's bearer token, verified for `route`'s tenant: absent on a route that
    /// reads none or when none was sent (or the `Authorization` header is another scheme).
    pub(crate) async fn bearer(
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
        let key = (route.tenant.clone(), Arc::<str>::from(token));
        let outcome = match self.cache.get(&key) {
            // An entry can outlive its token by up to a second.
            Some(Ok(t)) if t.expires_at < unix_now() => {
                self.verify(&route.tenant, token, metrics).await
            }
            Some(cached) => cached,
            None => self.verify(&route.tenant, token, metrics).await,
        };
        match &outcome {
            Ok(t) => metrics.oidc_token(tenant, &t.provider, "valid"),
            Err(e) => metrics.oidc_token(tenant, "-", e.label()),
        }
        let remember = !matches!(
            outcome,
            Err(TokenError::UnknownKey | TokenError::KeysUnavailable)
        );
        if remember {
            self.cache.insert(key, outcome.clone());
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
