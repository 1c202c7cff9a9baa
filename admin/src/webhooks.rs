//! Webhooks: tenants subscribe URLs to events of theirs (a certificate revoked, an issuance
//! refused, a certificate about to expire without a renewal, a policy version made active, a
//! spike of requests blocked by DLP in the gateways' audit logs);
//! each event becomes a delivery per subscription, kept in SQLite, POSTed signed the Standard
//! Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`: HMAC-SHA256 under the
//! subscription's `whsec_` secret, shown once at creation), retried with exponential backoff,
//! and after the last attempt kept as a dead letter the tenant can list and send again.
//!
//! ```yaml
//! webhooks:
//!   allow_destinations: [10.20.0.0/16]  # besides public addresses (default: none)
//!   allow_plain_http: false             # http:// URLs (default: https only)
//!   ca_bundle: receivers-ca.pem         # besides the public web PKI
//!   max_attempts: 8                     # then the delivery is a dead letter
//!   first_retry: 5s                     # doubling up to max_retry (1h)
//!   expiring_within: 24h                # certificate.expiring: this close to not_after
//!   dlp_spike:                          # dlp.block_spike (off unless set)
//!     logs: [/var/lib/portcullis/audit] # the gateways' audit logs
//!     threshold: 20                     # blocked requests of a tenant within the window
//!     window: 5m
//! ```
//!
//! The CA's events reach the store through a bounded queue and its own thread, so neither an
//! issuance nor a revocation waits for a webhook; a full queue drops the event and counts it.

mod deliver;
pub(crate) mod store;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use portcullis_audit::{CaAction, CaEvent};
use portcullis_ca::{Ca, CaEventSink, CertStatus, InventoryFilter, TenantId};
#[cfg(feature = "schema")]
use portcullis_identity::schema::HumanDuration;
use serde::{Deserialize, Serialize};

pub(crate) use deliver::{new_id, new_secret, Endpoint};
pub use store::WEBHOOK_DB;
pub(crate) use store::{
    DeliveryStatus, SqliteWebhookStore, StoreError, Subscription, WebhookStore,
};

use crate::stats::{IssuanceStats, WebhookOutcome};

/// The events a subscription may name.
pub(crate) const EVENT_TYPES: [&str; 5] = [
    "certificate.revoked",
    "certificate.issuance_refused",
    "certificate.expiring",
    "policy.activated",
    "dlp.block_spike",
];

/// Events waiting for the store thread at most; more are dropped (and counted).
const QUEUE: usize = 1024;
/// Deliveries attempted at once.
const BATCH: usize = 16;
/// The delivery loop looks at the store at least this often.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// The `webhooks:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Networks deliveries may go to besides public addresses (loopback, private and
    /// link-local addresses are refused unless listed here).
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub allow_destinations: Vec<IpNet>,
    /// Accept `http://` URLs (default: https only).
    pub allow_plain_http: bool,
    /// CA certificates (PEM) that receivers' certificates may chain to, besides the public web
    /// PKI (relative: against the admin config's folder).
    pub ca_bundle: Option<PathBuf>,
    /// Attempts per delivery before it is a dead letter (default 8).
    pub max_attempts: u32,
    /// Wait before the second attempt, doubling after each failure (default 5s).
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub first_retry: Duration,
    /// Longest wait between two attempts (default 1h).
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub max_retry: Duration,
    /// `certificate.expiring` is sent for a valid certificate this close to its end that no
    /// valid renewal replaces (default 24h).
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub expiring_within: Duration,
    /// How often the inventory is scanned for expiring certificates (default 1m).
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub expiry_scan_interval: Duration,
    /// The SQLite file of subscriptions and deliveries (default `STATE/webhooks.sqlite3`).
    pub database: Option<PathBuf>,
    /// `dlp.block_spike`: where to count DLP blocks, and how many make a spike (off unless
    /// set).
    pub dlp_spike: Option<DlpSpikeConfig>,
}

/// `webhooks.dlp_spike`: a tenant's requests blocked by DLP, counted in the gateways' audit
/// logs; `threshold` of them within `window` is a spike, told once per window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DlpSpikeConfig {
    /// The gateways' audit log folders (as `policies.traffic`; relative: against the admin
    /// config's folder).
    pub logs: Vec<PathBuf>,
    /// Blocked requests within `window` that make a spike (default 20).
    #[serde(default = "default_spike_threshold")]
    pub threshold: u64,
    /// The period counted (default 5m).
    #[serde(default = "default_spike_window", with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub window: Duration,
    /// How often the logs are counted (default 1m).
    #[serde(default = "default_spike_scan", with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub scan_interval: Duration,
}

fn default_spike_threshold() -> u64 {
    20
}

fn default_spike_window() -> Duration {
    Duration::from_secs(300)
}

fn default_spike_scan() -> Duration {
    Duration::from_secs(60)
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_destinations: Vec::new(),
            allow_plain_http: false,
            ca_bundle: None,
            max_attempts: 8,
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(3600),
            expiring_within: Duration::from_secs(24 * 3600),
            expiry_scan_interval: Duration::from_secs(60),
            database: None,
            dlp_spike: None,
        }
    }
}

impl WebhooksConfig {
    pub(crate) fn resolve(&mut self, base: &Path) {
        let spike_logs = self.dlp_spike.iter_mut().flat_map(|s| s.logs.iter_mut());
        for p in [&mut self.ca_bundle, &mut self.database]
            .into_iter()
            .flatten()
            .chain(spike_logs)
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.max_attempts) {
            return Err("max_attempts: between 1 and 100".to_owned());
        }
        if self.first_retry.is_zero() || self.first_retry > self.max_retry {
            return Err("first_retry: more than 0 and at most max_retry".to_owned());
        }
        if self.expiry_scan_interval < Duration::from_millis(100) {
            return Err("expiry_scan_interval: at least 100ms".to_owned());
        }
        if let Some(s) = &self.dlp_spike {
            if s.logs.is_empty() {
                return Err("dlp_spike.logs: at least one audit log folder".to_owned());
            }
            if s.threshold == 0 {
                return Err("dlp_spike.threshold: at least 1".to_owned());
            }
            if s.window < Duration::from_secs(1) || s.scan_interval < Duration::from_millis(100) {
                return Err("dlp_spike: window at least 1s, scan_interval at least 100ms".into());
            }
        }
        Ok(())
    }

    /// The wait after the `attempts`-th failed attempt: `first_retry` doubled each time, at
    /// most `max_retry`.
    fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.first_retry
            .saturating_mul(1 << doublings)
            .min(self.max_retry)
    }
}

/// The webhook service: the store, the queue in front of it, the delivery loop's sender.
pub(crate) struct Webhooks {
    store: Arc<dyn WebhookStore>,
    config: WebhooksConfig,
    sender: deliver::Sender,
    queue: SyncSender<Event>,
    wake: Arc<tokio::sync::Notify>,
    stats: Arc<IssuanceStats>,
}

/// One event for a tenant's subscribers.
struct Event {
    tenant: TenantId,
    event_type: &'static str,
    /// Stable for the same fact (the expiry scan sees a certificate many times).
    event_id: String,
    data: serde_json::Value,
    at: SystemTime,
}

impl Webhooks {
    /// Opens the store (SQLite in the state directory, or the shared PostgreSQL database with
    /// `store.postgres`) and starts the thread that queues events into it.
    pub(crate) fn open(
        config: &WebhooksConfig,
        state_dir: &Path,
        postgres: Option<&crate::store::PgStore>,
        stats: Arc<IssuanceStats>,
    ) -> Result<Arc<Self>, String> {
        config.check()?;
        let store: Arc<dyn WebhookStore> = match postgres {
            Some(pg) => Arc::new(pg.webhooks()),
            None => {
                let path = config
                    .database
                    .clone()
                    .unwrap_or_else(|| state_dir.join(WEBHOOK_DB));
                Arc::new(SqliteWebhookStore::open(&path).map_err(|e| e.to_string())?)
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(bundle) = &config.ca_bundle {
            let certs = portcullis_identity::load_certs(bundle)
                .map_err(|e| format!("ca_bundle {}: {e}", bundle.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_bundle {}: {e}", bundle.display()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(portcullis_identity::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (queue, events) = sync_channel::<Event>(QUEUE);
        let wake = Arc::new(tokio::sync::Notify::new());
        let webhooks = Arc::new(Self {
            store: Arc::clone(&store),
            config: config.clone(),
            sender: deliver::Sender {
                destinations: deliver::Destinations {
                    allow: config.allow_destinations.clone(),
                },
                plain_http: config.allow_plain_http,
                tls: Arc::new(tls),
            },
            queue,
            wake: Arc::clone(&wake),
            stats,
        });
        std::thread::Builder::new()
            .name("webhook-queue".into())
            .spawn(move || {
                for event in events {
                    if let Err(e) = enqueue(&*store, &event) {
                        tracing::error!(error = %e, "webhook event not queued");
                    }
                    wake.notify_one();
                }
            })
            .map_err(|e| format!("starting the webhook queue: {e}"))?;
        Ok(webhooks)
    }

    pub(crate) fn store(&self) -> &Arc<dyn WebhookStore> {
        &self.store
    }

    /// Makes the delivery loop look at the store now (a dead letter was queued again).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether `url` may be subscribed: its form, and a literal address's range (a name is
    /// checked at each delivery, against the addresses it resolves to then).
    pub(crate) fn check_url(&self, url: &str) -> Result<(), String> {
        let endpoint = Endpoint::parse(url, self.config.allow_plain_http)?;
        if let Ok(ip) = endpoint.host.parse::<std::net::IpAddr>() {
            if !self.sender.destinations.permits(ip) {
                return Err(format!(
                    "url: {ip} is not a public address and not in webhooks.allow_destinations"
                ));
            }
        }
        Ok(())
    }

    /// Sends `event_type` with `data` to the tenant's subscribers (queued, never waiting).
    pub(crate) fn emit(
        &self,
        tenant: &TenantId,
        event_type: &'static str,
        event_id: Option<String>,
        data: serde_json::Value,
    ) {
        let Some(event_id) = event_id.or_else(|| new_id("evt_")) else {
            tracing::error!("webhook event dropped: no random id");
            return;
        };
        let event = Event {
            tenant: tenant.clone(),
            event_type,
            event_id,
            data,
            at: SystemTime::now(),
        };
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.webhook(WebhookOutcome::Dropped);
                tracing::warn!(event_type, "webhook event dropped: the queue is full");
            }
        }
    }

    /// Attempts what is due, then waits for the next due time or a new event; forever.
    pub(crate) async fn deliver(self: Arc<Self>) {
        loop {
            let store = Arc::clone(&self.store);
            let due =
                tokio::task::spawn_blocking(move || store.claim_due(SystemTime::now(), BATCH))
                    .await
                    .unwrap_or_else(|e| Err(StoreError::from_join(e)));
            let due = match due {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "webhook deliveries not read");
                    Vec::new()
                }
            };
            let full = due.len() == BATCH;
            let mut attempts = tokio::task::JoinSet::new();
            for d in due {
                let this = Arc::clone(&self);
                attempts.spawn(async move {
                    let outcome = this
                        .sender
                        .send(&d.target.url, &d.target.secret, &d.id, &d.payload)
                        .await;
                    this.settle(d, outcome).await;
                });
            }
            while attempts.join_next().await.is_some() {}
            if full {
                continue;
            }
            let store = Arc::clone(&self.store);
            let next = tokio::task::spawn_blocking(move || store.next_due())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            let wait = next
                .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(IDLE_POLL)
                .min(IDLE_POLL);
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    async fn settle(&self, d: store::Due, outcome: Result<(), String>) {
        let now = SystemTime::now();
        let retry_at = match &outcome {
            Err(_) if d.attempts + 1 < self.config.max_attempts => {
                Some(now + self.config.backoff(d.attempts + 1))
            }
            _ => None,
        };
        if let Err(e) = &outcome {
            tracing::info!(delivery = %d.id, subscription = %d.target.id, error = %e,
                attempts = d.attempts + 1, "webhook delivery failed");
        }
        let store = Arc::clone(&self.store);
        let id = d.id.clone();
        let written =
            tokio::task::spawn_blocking(move || store.attempted(&id, outcome, retry_at, now))
                .await
                .unwrap_or_else(|e| Err(StoreError::from_join(e)));
        match written {
            Ok(DeliveryStatus::Delivered) => self.stats.webhook(WebhookOutcome::Delivered),
            Ok(DeliveryStatus::Pending) => self.stats.webhook(WebhookOutcome::Retrying),
            Ok(DeliveryStatus::Dead) => {
                self.stats.webhook(WebhookOutcome::Dead);
                tracing::warn!(delivery = %d.id, subscription = %d.target.id,
                    queued_at = %humantime::format_rfc3339_seconds(d.created),
                    "webhook delivery is a dead letter");
            }
            Err(e) => tracing::error!(error = %e, "webhook delivery outcome not recorded"),
        }
    }

    /// Every `expiry_scan_interval`: a `certificate.expiring` event per valid certificate of a
    /// subscribed tenant within `expiring_within` of its end that no valid renewal replaces;
    /// once per certificate (its serial is the event id).
    pub(crate) async fn scan_expiring(self: Arc<Self>, ca: Arc<Ca>) {
        let mut tick = tokio::time::interval(self.config.expiry_scan_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = Arc::clone(&self);
            let ca = Arc::clone(&ca);
            let scanned = tokio::task::spawn_blocking(move || this.expiring(&ca)).await;
            if let Ok(Err(e)) = scanned {
                tracing::error!(error = %e, "webhook expiry scan failed");
            }
        }
    }

    fn expiring(&self, ca: &Ca) -> Result<(), String> {
        let now = SystemTime::now();
        let tenants = self
            .store
            .tenants_subscribed("certificate.expiring")
            .map_err(|e| e.to_string())?;
        for tenant in tenants {
            let Ok(tenant) = tenant.parse::<TenantId>() else {
                continue;
            };
            let valid = ca
                .inventory()
                .list(
                    &InventoryFilter {
                        tenant: Some(tenant.clone()),
                        status: Some(CertStatus::Valid),
                        expires_within: None,
                        identity: None,
                        limit: Some(100_000),
                    },
                    now,
                )
                .map_err(|e| e.to_string())?;
            let renewed: HashSet<_> = valid
                .iter()
                .filter_map(|c| c.renewed_from.clone())
                .collect();
            for cert in &valid {
                let left = cert.not_after.duration_since(now).unwrap_or_default();
                if left.is_zero()
                    || left > self.config.expiring_within
                    || renewed.contains(&cert.serial)
                {
                    continue;
                }
                self.emit(
                    &tenant,
                    "certificate.expiring",
                    Some(format!("expiring:{}", cert.serial)),
                    serde_json::json!({
                        "serial": cert.serial.to_string(),
                        "subject": subject_of(&cert.sans, &cert.subject),
                        "profile": cert.profile,
                        "not_after": humantime::format_rfc3339_seconds(cert.not_after).to_string(),
                    }),
                );
            }
        }
        Ok(())
    }
}

impl Webhooks {
    /// Every `dlp_spike.scan_interval`: a `dlp.block_spike` event for each subscribed tenant
    /// with `threshold` or more requests blocked by DLP in the last `window`; once per
    /// tenant and window (its start is the event id). Nothing without `dlp_spike`.
    pub(crate) async fn scan_dlp_spikes(self: Arc<Self>) {
        let Some(every) = self.config.dlp_spike.as_ref().map(|s| s.scan_interval) else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = Arc::clone(&self);
            let scanned =
                tokio::task::spawn_blocking(move || this.dlp_spikes(SystemTime::now())).await;
            if let Ok(Err(e)) = scanned {
                tracing::error!(error = %e, "webhook DLP spike scan failed");
            }
        }
    }

    fn dlp_spikes(&self, now: SystemTime) -> Result<(), String> {
        /// Records read per tenant and scan at most.
        const MAX_RECORDS: u64 = 5_000_000;
        let Some(spike) = &self.config.dlp_spike else {
            return Ok(());
        };
        let since = now
            .checked_sub(spike.window)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let tenants = self
            .store
            .tenants_subscribed("dlp.block_spike")
            .map_err(|e| e.to_string())?;
        for tenant in tenants {
            let Ok(tenant) = tenant.parse::<TenantId>() else {
                continue;
            };
            let filter = portcullis_audit::QueryFilter {
                tenant: Some(tenant.to_string()),
                since: Some(since),
                until: Some(now),
                ..portcullis_audit::QueryFilter::default()
            };
            let mut blocked = 0u64;
            let mut detectors = std::collections::BTreeMap::<String, u64>::new();
            crate::policies::traffic::each_request(&spike.logs, &filter, MAX_RECORDS, |_, e| {
                let mut counted = false;
                for finding in e.dlp.iter().filter(|f| f.action == "block") {
                    *detectors.entry(finding.detector.clone()).or_default() += finding.count;
                    counted = true;
                }
                blocked += u64::from(counted);
            })?;
            if blocked < spike.threshold {
                continue;
            }
            let window = spike.window.as_secs().max(1);
            let bucket = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / window);
            self.emit(
                &tenant,
                "dlp.block_spike",
                Some(format!("dlp-spike:{bucket}")),
                serde_json::json!({
                    "blocked_requests": blocked,
                    "threshold": spike.threshold,
                    "since": humantime::format_rfc3339_seconds(since).to_string(),
                    "until": humantime::format_rfc3339_seconds(now).to_string(),
                    "detectors": detectors,
                }),
            );
        }
        Ok(())
    }
}

/// The CA's revocations and refusals, for the tenant whose profile they concern.
impl CaEventSink for Webhooks {
    fn record(&self, event: CaEvent) {
        let event_type = match event.action {
            CaAction::Revoke => "certificate.revoked",
            CaAction::Refuse => "certificate.issuance_refused",
            _ => return,
        };
        let Some(tenant) = event.tenant.as_deref().and_then(|t| t.parse().ok()) else {
            // A refusal before the tenant was known concerns no tenant's objects.
            return;
        };
        self.emit(
            &tenant,
            event_type,
            None,
            serde_json::json!({
                "serial": event.serial,
                "subject": event.subject,
                "profile": event.profile,
                "reason": event.reason,
                "requester": event.requester,
            }),
        );
    }
}

/// Every sink the CA reports to (the audit log, the webhooks).
pub(crate) struct Fanout(pub(crate) Vec<Arc<dyn CaEventSink>>);

impl CaEventSink for Fanout {
    fn record(&self, event: CaEvent) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.record(event.clone());
            }
            last.record(event);
        }
    }
}

fn subject_of(sans: &[String], subject: &str) -> String {
    sans.iter()
        .find_map(|s| s.strip_prefix("URI:"))
        .unwrap_or(subject)
        .to_owned()
}

/// The payload (`type`, `timestamp`, `tenant`, `data`) queued for each subscriber.
fn enqueue(store: &dyn WebhookStore, event: &Event) -> Result<usize, StoreError> {
    let payload = serde_json::json!({
        "type": event.event_type,
        "timestamp": humantime::format_rfc3339_millis(event.at).to_string(),
        "tenant": event.tenant.as_str(),
        "data": event.data,
    })
    .to_string();
    let mut ids = || new_id("msg_").unwrap_or_default();
    store.enqueue(
        &event.tenant,
        event.event_type,
        &event.event_id,
        &payload,
        event.at,
        &mut ids,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = WebhooksConfig {
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(60),
            ..WebhooksConfig::default()
        };
        let waits: Vec<u64> = (1..=6).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(c.backoff(u32::MAX).as_secs(), 60);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = [
            WebhooksConfig {
                max_attempts: 0,
                ..WebhooksConfig::default()
            },
            WebhooksConfig {
                first_retry: Duration::ZERO,
                ..WebhooksConfig::default()
            },
            WebhooksConfig {
                first_retry: Duration::from_secs(7200),
                ..WebhooksConfig::default()
            },
        ];
        for c in bad {
            assert!(c.check().is_err(), "{c:?}");
        }
        assert!(WebhooksConfig::default().check().is_ok());
    }
}
