//! Where webhook subscriptions and their deliveries are kept: the [`WebhookStore`] trait and
//! its SQLite implementation (`STATE/webhooks.sqlite3`, beside the CA's inventory; the
//! PostgreSQL one is in `store/webhooks.rs`), so a delivery queued before a restart is still
//! tried after it, and the dead letters stay listable.
//!
//! The delivery loop claims what is due ([`WebhookStore::claim_due`]): a claimed delivery is
//! not due again for [`CLAIM_LEASE`] unless its attempt is recorded first, so two delivery loops
//! on one store never attempt the same delivery at once (a node that dies mid-attempt leaves it
//! to be tried again when the lease ends).
//!
//! A delivery is queued once per subscription and event (`UNIQUE(subscription, event_id)`): the
//! expiry scan may see the same certificate many times, its subscribers hear of it once.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_ca::TenantId;
use rusqlite::{params, Connection};
use serde::Serialize;

/// The store's file name in the CA's state directory.
pub const WEBHOOK_DB: &str = "webhooks.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    description TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS subscriptions_tenant ON subscriptions (tenant);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    subscription TEXT NOT NULL,
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    UNIQUE (subscription, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_ms);
CREATE INDEX IF NOT EXISTS deliveries_tenant ON deliveries (tenant, created_ms);
";

/// How long a claimed delivery is kept from other delivery loops: longer than an attempt takes.
pub(crate) const CLAIM_LEASE: Duration = Duration::from_secs(300);

/// The store failed; the detail goes to the log, never to a caller.
#[derive(Debug, thiserror::Error)]
#[error("webhook store {path}: {detail}")]
pub(crate) struct StoreError {
    path: String,
    detail: String,
}

/// One subscription, as listed (never its secret).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Subscription {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) events: Vec<String>,
    pub(crate) description: Option<String>,
    pub(crate) created_by: String,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) created_at: SystemTime,
}

/// A subscription with what delivering to it needs.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) secret: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeliveryStatus {
    /// Queued or waiting for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed: a dead letter, until someone retries it.
    Dead,
}

impl DeliveryStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "dead" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }
}

/// One delivery, as listed (its payload included: it holds nothing the tenant may not see).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Delivery {
    pub(crate) id: String,
    pub(crate) subscription: String,
    pub(crate) event_type: String,
    pub(crate) status: DeliveryStatus,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) created_at: SystemTime,
    #[serde(skip)]
    pub(crate) payload: String,
}

/// A delivery due now, with where it goes.
#[derive(Debug, Clone)]
pub(crate) struct Due {
    pub(crate) id: String,
    pub(crate) payload: String,
    pub(crate) attempts: u32,
    pub(crate) created: SystemTime,
    pub(crate) target: Target,
}

/// Webhook subscriptions and deliveries, per tenant.
pub(crate) trait WebhookStore: Send + Sync + std::fmt::Debug {
    /// Stores a subscription with its signing secret.
    fn subscribe(
        &self,
        tenant: &TenantId,
        sub: &Subscription,
        secret: &str,
    ) -> Result<(), StoreError>;
    /// The tenant's subscriptions, oldest first.
    fn subscriptions(&self, tenant: &TenantId) -> Result<Vec<Subscription>, StoreError>;
    /// Removes a subscription and what is still pending for it; false when the tenant has none
    /// by that id.
    fn unsubscribe(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError>;
    /// Queues `payload` for every subscription of `tenant` to `event_type`, once per event id;
    /// returns how many deliveries were queued.
    fn enqueue(
        &self,
        tenant: &TenantId,
        event_type: &str,
        event_id: &str,
        payload: &str,
        now: SystemTime,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<usize, StoreError>;
    /// Claims the deliveries due at `now`, oldest first, at most `limit`: none of them is due
    /// again (to any caller) before `now + CLAIM_LEASE` unless its attempt is recorded.
    fn claim_due(&self, now: SystemTime, limit: usize) -> Result<Vec<Due>, StoreError>;
    /// The earliest pending attempt, if any.
    fn next_due(&self) -> Result<Option<SystemTime>, StoreError>;
    /// Records an attempt's outcome: delivered, failed with a next attempt, or dead.
    fn attempted(
        &self,
        id: &str,
        outcome: Result<(), String>,
        retry_at: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<DeliveryStatus, StoreError>;
    /// A tenant's deliveries, newest first, optionally of one status.
    fn deliveries(
        &self,
        tenant: &TenantId,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Puts a dead letter back in the queue, due now; false when the tenant has no dead
    /// delivery by that id.
    fn requeue(&self, tenant: &TenantId, id: &str, now: SystemTime) -> Result<bool, StoreError>;
    /// Tenants with at least one subscription to `event_type`.
    fn tenants_subscribed(&self, event_type: &str) -> Result<Vec<String>, StoreError>;
}

/// Subscriptions and deliveries in one SQLite file.
#[derive(Debug)]
pub(crate) struct SqliteWebhookStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteWebhookStore {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e: rusqlite::Error| StoreError {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Every use is one statement or one transaction: a panic leaves nothing half done.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl WebhookStore for SqliteWebhookStore {
    fn subscribe(
        &self,
        tenant: &TenantId,
        sub: &Subscription,
        secret: &str,
    ) -> Result<(), StoreError> {
        let events = serde_json::to_string(&sub.events).unwrap_or_else(|_| "[]".to_owned());
        self.conn()
            .execute(
                "INSERT INTO subscriptions (id, tenant, url, events, secret, description, \
                 created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    sub.id,
                    tenant.as_str(),
                    sub.url,
                    events,
                    secret,
                    sub.description,
                    sub.created_by,
                    millis(sub.created_at),
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn subscriptions(&self, tenant: &TenantId) -> Result<Vec<Subscription>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, url, events, description, created_by, created_at FROM subscriptions \
                 WHERE tenant = ?1 ORDER BY created_at, id",
            )
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(params![tenant.as_str()], |r| {
                let events: String = r.get(2)?;
                Ok(Subscription {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    events: serde_json::from_str(&events).unwrap_or_default(),
                    description: r.get(3)?,
                    created_by: r.get(4)?,
                    created_at: time(r.get(5)?),
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// Removes a subscription and what is still pending for it; false when the tenant has none
    /// by that id.
    fn unsubscribe(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let n = tx
            .execute(
                "DELETE FROM subscriptions WHERE tenant = ?1 AND id = ?2",
                params![tenant.as_str(), id],
            )
            .map_err(|e| self.error(e))?;
        if n > 0 {
            // Only the tenant's own subscription's: another tenant's id deletes nothing.
            tx.execute(
                "DELETE FROM deliveries WHERE subscription = ?1 AND status = 'pending'",
                params![id],
            )
            .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        Ok(n > 0)
    }

    /// Queues `payload` for every subscription of `tenant` to `event_type`, once per event id;
    /// returns how many deliveries were queued.
    fn enqueue(
        &self,
        tenant: &TenantId,
        event_type: &str,
        event_id: &str,
        payload: &str,
        now: SystemTime,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let subscribers: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT id, events FROM subscriptions WHERE tenant = ?1")
                .map_err(|e| self.error(e))?;
            let rows = stmt
                .query_map(params![tenant.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(|e| self.error(e))?;
            let mut ids = Vec::new();
            for row in rows {
                let (id, events) = row.map_err(|e| self.error(e))?;
                let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
                if events.iter().any(|e| e == event_type) {
                    ids.push(id);
                }
            }
            ids
        };
        let mut queued = 0;
        for sub in subscribers {
            queued += tx
                .execute(
                    "INSERT OR IGNORE INTO deliveries (id, subscription, tenant, event_id, \
                     event_type, payload, status, next_attempt_ms, created_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)",
                    params![
                        new_id(),
                        sub,
                        tenant.as_str(),
                        event_id,
                        event_type,
                        payload,
                        millis(now)
                    ],
                )
                .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        Ok(queued)
    }

    fn claim_due(&self, now: SystemTime, limit: usize) -> Result<Vec<Due>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let due: Vec<Due> = {
            let mut stmt = tx
                .prepare(
                    "SELECT d.id, d.payload, d.attempts, d.created_ms, s.id, s.url, s.secret \
                     FROM deliveries d JOIN subscriptions s ON s.id = d.subscription \
                     WHERE d.status = 'pending' AND d.next_attempt_ms <= ?1 \
                     ORDER BY d.next_attempt_ms, d.created_ms LIMIT ?2",
                )
                .map_err(|e| self.error(e))?;
            let rows = stmt
                .query_map(
                    params![millis(now), i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| {
                        Ok(Due {
                            id: r.get(0)?,
                            payload: r.get(1)?,
                            attempts: r.get(2)?,
                            created: time(r.get(3)?),
                            target: Target {
                                id: r.get(4)?,
                                url: r.get(5)?,
                                secret: r.get(6)?,
                            },
                        })
                    },
                )
                .map_err(|e| self.error(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.error(e))?
        };
        for d in &due {
            tx.execute(
                "UPDATE deliveries SET next_attempt_ms = ?2 WHERE id = ?1",
                params![d.id, millis(now + CLAIM_LEASE)],
            )
            .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        Ok(due)
    }

    /// The earliest pending attempt, if any.
    fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
        self.conn()
            .query_row(
                "SELECT MIN(next_attempt_ms) FROM deliveries WHERE status = 'pending'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|t| t.map(time))
            .map_err(|e| self.error(e))
    }

    /// Records an attempt's outcome: delivered, failed with a next attempt, or dead.
    fn attempted(
        &self,
        id: &str,
        outcome: Result<(), String>,
        retry_at: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<DeliveryStatus, StoreError> {
        let (status, error) = match (&outcome, retry_at) {
            (Ok(()), _) => (DeliveryStatus::Delivered, None),
            (Err(e), Some(_)) => (DeliveryStatus::Pending, Some(e.as_str())),
            (Err(e), None) => (DeliveryStatus::Dead, Some(e.as_str())),
        };
        let finished = (status != DeliveryStatus::Pending).then(|| millis(now));
        self.conn()
            .execute(
                "UPDATE deliveries SET status = ?2, attempts = attempts + 1, last_error = ?3, \
                 next_attempt_ms = ?4, finished_ms = ?5 WHERE id = ?1",
                params![
                    id,
                    status.as_str(),
                    error,
                    millis(retry_at.unwrap_or(now)),
                    finished
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(status)
    }

    /// A tenant's deliveries, newest first, optionally of one status.
    fn deliveries(
        &self,
        tenant: &TenantId,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, subscription, event_type, status, attempts, last_error, created_ms, \
                 payload FROM deliveries WHERE tenant = ?1 AND (?2 IS NULL OR status = ?2) \
                 ORDER BY created_ms DESC, id LIMIT ?3",
            )
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(
                params![
                    tenant.as_str(),
                    status.map(DeliveryStatus::as_str),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    let status: String = r.get(3)?;
                    Ok(Delivery {
                        id: r.get(0)?,
                        subscription: r.get(1)?,
                        event_type: r.get(2)?,
                        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Dead),
                        attempts: r.get(4)?,
                        last_error: r.get(5)?,
                        created_at: time(r.get(6)?),
                        payload: r.get(7)?,
                    })
                },
            )
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// Puts a dead letter back in the queue, due now; false when the tenant has no dead
    /// delivery by that id.
    fn requeue(&self, tenant: &TenantId, id: &str, now: SystemTime) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_ms = ?3, \
                 finished_ms = NULL WHERE tenant = ?1 AND id = ?2 AND status = 'dead'",
                params![tenant.as_str(), id, millis(now)],
            )
            .map_err(|e| self.error(e))?;
        Ok(n > 0)
    }

    /// Tenants with at least one subscription to `event_type`.
    fn tenants_subscribed(&self, event_type: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT DISTINCT tenant, events FROM subscriptions")
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.error(e))?;
        let mut tenants = Vec::new();
        for row in rows {
            let (tenant, events) = row.map_err(|e| self.error(e))?;
            let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
            if events.iter().any(|e| e == event_type) && !tenants.contains(&tenant) {
                tenants.push(tenant);
            }
        }
        Ok(tenants)
    }
}

pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl StoreError {
    /// The backend at `path` failed with `detail`.
    pub(crate) fn backend(path: &str, detail: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_owned(),
            detail: detail.to_string(),
        }
    }

    /// A blocking task that did not finish.
    pub(crate) fn from_join(e: tokio::task::JoinError) -> Self {
        Self {
            path: "(task)".to_owned(),
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The webhook store's behaviour, written once: run here on SQLite and in `store`'s tests
    //! on PostgreSQL.
    use super::*;
    use std::collections::HashSet;

    fn store() -> (tempfile::TempDir, SqliteWebhookStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteWebhookStore::open(&dir.path().join(WEBHOOK_DB)).unwrap();
        (dir, s)
    }

    #[test]
    fn sqlite_subscriptions_queue_retries_and_dead_letters() {
        subscriptions_queue_retries_and_dead_letters(&store().1);
    }

    #[test]
    fn sqlite_a_claimed_delivery_goes_to_one_claimant() {
        // One handle: SQLite serves one node, its callers serialised on its connection.
        let (_dir, s) = store();
        a_claimed_delivery_goes_to_one_claimant(&s, &s);
    }

    fn subscription(id: &str, events: &[&str], at: SystemTime) -> Subscription {
        Subscription {
            id: id.to_owned(),
            url: format!("https://hooks.example/{id}"),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            description: Some("d".to_owned()),
            created_by: "alice".to_owned(),
            created_at: at,
        }
    }

    fn counter(prefix: &'static str) -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("{prefix}{n}")
        }
    }

    /// Subscriptions per tenant, one delivery per subscription and event, claims, retries with
    /// a next attempt, dead letters listed and queued again, unsubscribing.
    pub(crate) fn subscriptions_queue_retries_and_dead_letters(s: &dyn WebhookStore) {
        let acme: TenantId = "acme".parse().unwrap();
        let globex: TenantId = "globex".parse().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        s.subscribe(
            &acme,
            &subscription("sub_a", &["certificate.revoked"], now),
            "whsec_a",
        )
        .unwrap();
        s.subscribe(
            &acme,
            &subscription("sub_b", &["policy.activated"], now + Duration::from_secs(1)),
            "whsec_b",
        )
        .unwrap();
        s.subscribe(
            &globex,
            &subscription("sub_g", &["certificate.revoked"], now),
            "whsec_g",
        )
        .unwrap();
        let listed = s.subscriptions(&acme).unwrap();
        assert_eq!(
            listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["sub_a", "sub_b"]
        );
        assert_eq!(listed[0].events, ["certificate.revoked"]);
        assert_eq!(listed[0].created_at, now);
        let mut tenants = s.tenants_subscribed("certificate.revoked").unwrap();
        tenants.sort();
        assert_eq!(tenants, ["acme", "globex"]);

        let mut ids = counter("msg_");
        let queued = s
            .enqueue(&acme, "certificate.revoked", "evt_1", "{}", now, &mut ids)
            .unwrap();
        assert_eq!(queued, 1, "only the subscriber to the event");
        let again = s
            .enqueue(&acme, "certificate.revoked", "evt_1", "{}", now, &mut ids)
            .unwrap();
        assert_eq!(again, 0, "once per subscription and event");
        assert_eq!(s.next_due().unwrap(), Some(now));

        let due = s.claim_due(now, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].target.id.as_str(), due[0].target.secret.as_str()),
            ("sub_a", "whsec_a")
        );
        assert_eq!(due[0].attempts, 0);
        assert!(s.claim_due(now, 10).unwrap().is_empty(), "claimed");
        let id = due[0].id.clone();
        let retry = now + Duration::from_secs(5);
        let st = s
            .attempted(&id, Err("503".to_owned()), Some(retry), now)
            .unwrap();
        assert_eq!(st, DeliveryStatus::Pending);
        assert!(
            s.claim_due(now, 10).unwrap().is_empty(),
            "not due before its retry"
        );
        let due = s.claim_due(retry, 10).unwrap();
        assert_eq!((due.len(), due[0].attempts), (1, 1));
        let st = s
            .attempted(&id, Err("503".to_owned()), None, retry)
            .unwrap();
        assert_eq!(st, DeliveryStatus::Dead);
        let dead = s.deliveries(&acme, Some(DeliveryStatus::Dead), 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].attempts, dead[0].last_error.as_deref()),
            (2, Some("503"))
        );
        assert!(s.deliveries(&globex, None, 10).unwrap().is_empty());
        assert!(!s.requeue(&globex, &id, retry).unwrap(), "another tenant's");
        assert!(s.requeue(&acme, &id, retry).unwrap());
        assert!(!s.requeue(&acme, &id, retry).unwrap(), "no longer dead");
        let due = s.claim_due(retry, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            s.attempted(&id, Ok(()), None, retry).unwrap(),
            DeliveryStatus::Delivered
        );
        assert_eq!(s.next_due().unwrap(), None);
        assert_eq!(
            s.deliveries(&acme, Some(DeliveryStatus::Delivered), 10)
                .unwrap()
                .len(),
            1
        );

        // Unsubscribing drops what is still pending for it, not another tenant's by that id.
        s.enqueue(&acme, "certificate.revoked", "evt_2", "{}", now, &mut ids)
            .unwrap();
        assert!(!s.unsubscribe(&globex, "sub_a").unwrap());
        assert_eq!(
            s.deliveries(&acme, Some(DeliveryStatus::Pending), 10)
                .unwrap()
                .len(),
            1,
            "another tenant's delete by that id dropped acme's pending delivery"
        );
        assert!(s.unsubscribe(&acme, "sub_a").unwrap());
        assert!(s.claim_due(retry, 10).unwrap().is_empty());
        assert_eq!(s.subscriptions(&acme).unwrap().len(), 1);
    }

    /// Two claimants (two nodes' delivery loops) taking small batches at once: every due
    /// delivery is claimed exactly once.
    pub(crate) fn a_claimed_delivery_goes_to_one_claimant(
        a: &dyn WebhookStore,
        b: &dyn WebhookStore,
    ) {
        let t: TenantId = "acme".parse().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        a.subscribe(
            &t,
            &subscription("sub_c", &["certificate.revoked"], now),
            "whsec",
        )
        .unwrap();
        let mut ids = counter("msg_c");
        for n in 0..60 {
            a.enqueue(
                &t,
                "certificate.revoked",
                &format!("evt_{n}"),
                "{}",
                now,
                &mut ids,
            )
            .unwrap();
        }
        let claim_all = |s: &dyn WebhookStore| {
            let mut mine = Vec::new();
            loop {
                let batch = s.claim_due(now, 4).unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|d| d.id));
            }
        };
        let (from_a, from_b) = std::thread::scope(|scope| {
            let ha = scope.spawn(|| claim_all(a));
            let hb = scope.spawn(|| claim_all(b));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        let total = from_a.len() + from_b.len();
        let unique: HashSet<_> = from_a.iter().chain(&from_b).collect();
        assert_eq!((total, unique.len()), (60, 60));
    }
}
