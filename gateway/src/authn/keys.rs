//! Every issuer's signing keys for the life of the process, and the `oidc-keys` thread that
//! refreshes them on schedule.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_identity::oidc::KeySet;
use portcullis_policy::{Config, IdentityProvider, TenantId};

use crate::metrics::Metrics;
use crate::GatewayError;

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
    pub(super) fn key_set(&self, provider: &IdentityProvider) -> Result<Arc<KeySet>, GatewayError> {
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
    pub(super) fn retain(&self, config: &Config) {
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

pub(super) fn providers(config: &Config) -> impl Iterator<Item = (&TenantId, &IdentityProvider)> {
    config
        .tenants
        .iter()
        .flat_map(|t| t.identity_providers.iter().map(move |p| (&t.id, p)))
}
