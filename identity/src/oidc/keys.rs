//! A provider's signing keys: discovered once (`/.well-known/openid-configuration`, checked
//! by `openidconnect` to name the configured issuer), then its JSON Web Key Set fetched again
//! on a schedule the caller runs and when a token names a key not yet known — at most once per
//! `min_interval`, so a flood of made-up `kid`s cannot make the gateway hammer the provider.
//! Keys already fetched keep serving while the provider is down.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use openidconnect::core::CoreJsonWebKeySet;
use openidconnect::{IssuerUrl, JsonWebKeySetUrl, ProviderMetadataWithLogout};
use rustls::RootCertStore;

use super::http::ProviderHttp;

/// Time allowed for one discovery or key-set fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One usable public key.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    /// The algorithm the key is published for, if the key set says.
    pub(crate) alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

/// The keys in effect, and where they came from.
#[derive(Default)]
pub(crate) struct Keys {
    pub(crate) list: Vec<Key>,
    pub(crate) jwks_uri: Option<JsonWebKeySetUrl>,
    pub(crate) fetched_at: Option<SystemTime>,
    /// The discovery document (endpoints for the browser login).
    pub(crate) metadata: Option<Arc<ProviderMetadataWithLogout>>,
}

/// What a key set knows of its provider, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySetStatus {
    /// Keys in use.
    pub keys: usize,
    /// When the keys in use were fetched; `None` if never.
    pub fetched_at: Option<SystemTime>,
}

/// The signing keys of one issuer, shared by every tenant's provider entry that names it
/// (with the same trust anchors).
pub struct KeySet {
    issuer: IssuerUrl,
    http: ProviderHttp,
    keys: ArcSwap<Keys>,
    /// Held while fetching, so concurrent misses make one fetch; the time of the last fetch
    /// made for an unknown key.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("issuer", &self.issuer.as_str())
            .field("keys", &self.keys.load().list.len())
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// A key set for `issuer` (an `https` URL), fetched over TLS verified against `roots`; a
    /// token with an unknown key makes a fetch at most once per `min_interval`. Nothing is
    /// fetched until [`refresh`](Self::refresh) or a token asks.
    pub fn new(issuer: &str, roots: RootCertStore, min_interval: Duration) -> Result<Self, String> {
        let url = IssuerUrl::new(issuer.to_owned()).map_err(|e| format!("`{issuer}`: {e}"))?;
        if url.url().scheme() != "https" {
            return Err(format!("`{issuer}`: the issuer must be an https URL"));
        }
        Ok(Self {
            issuer: url,
            http: ProviderHttp::new(roots, FETCH_TIMEOUT)?,
            keys: ArcSwap::from_pointee(Keys::default()),
            refresh: tokio::sync::Mutex::new(None),
            min_interval,
        })
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Keys>> {
        self.keys.load()
    }

    /// The provider's discovery document, once fetched.
    pub(crate) fn metadata(&self) -> Option<Arc<ProviderMetadataWithLogout>> {
        self.keys.load().metadata.clone()
    }

    pub(crate) fn http(&self) -> &ProviderHttp {
        &self.http
    }

    /// How many keys are in use and since when.
    pub fn status(&self) -> KeySetStatus {
        let keys = self.keys.load();
        KeySetStatus {
            keys: keys.list.len(),
            fetched_at: keys.fetched_at,
        }
    }

    /// Fetches the key set now (discovering the provider first if that has not succeeded
    /// yet). On failure the keys in use stay. Returns how many usable keys the set has.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _fetching = self.refresh.lock().await;
        self.fetch().await
    }

    /// After a token named a key not in the set: fetches again unless a fetch for that reason
    /// happened within `min_interval`. Returns `Some(outcome)` when it fetched.
    pub(crate) async fn refresh_for_unknown_key(
        &self,
        kid: Option<&str>,
    ) -> Option<Result<usize, String>> {
        let mut last = self.refresh.lock().await;
        // Another request's fetch may have brought the key while this one waited.
        if kid.is_some() && self.current().list.iter().any(|k| k.kid.as_deref() == kid) {
            return None;
        }
        if last.is_some_and(|at| at.elapsed() < self.min_interval) {
            return None;
        }
        *last = Some(Instant::now());
        Some(self.fetch().await)
    }

    async fn fetch(&self) -> Result<usize, String> {
        let current = self.keys.load_full();
        let (jwks_uri, set, metadata) = match (&current.jwks_uri, &current.metadata) {
            (Some(uri), Some(metadata)) => {
                let set = CoreJsonWebKeySet::fetch_async(uri, &self.http)
                    .await
                    .map_err(|e| format!("key set {}: {}", uri.as_str(), error_chain(&e)))?;
                (uri.clone(), set, Arc::clone(metadata))
            }
            _ => {
                let metadata =
                    ProviderMetadataWithLogout::discover_async(self.issuer.clone(), &self.http)
                        .await
                        .map_err(|e| {
                            format!("discovery of {}: {}", self.issuer(), error_chain(&e))
                        })?;
                let set = metadata.jwks().clone();
                (metadata.jwks_uri().clone(), set, Arc::new(metadata))
            }
        };
        let list = usable_keys(&set);
        if list.is_empty() {
            return Err(format!(
                "key set {}: no usable signing key",
                jwks_uri.as_str()
            ));
        }
        let count = list.len();
        self.keys.store(Arc::new(Keys {
            list,
            jwks_uri: Some(jwks_uri),
            fetched_at: Some(SystemTime::now()),
            metadata: Some(metadata),
        }));
        Ok(count)
    }
}

/// The signature keys of a key set that `jsonwebtoken` can use; encryption keys and keys of
/// unknown types are skipped.
pub(crate) fn usable_keys(set: &CoreJsonWebKeySet) -> Vec<Key> {
    set.keys()
        .iter()
        .filter_map(|key| {
            let jwk: Jwk = serde_json::to_value(key)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())?;
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                return None;
            }
            let alg = match jwk.common.key_algorithm {
                Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
                None => None,
            };
            Some(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key: DecodingKey::from_jwk(&jwk).ok()?,
            })
        })
        .collect()
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
