//! Where webhook subscriptions and their deliveries are kept: SQLite
//! (`STATE/webhooks.sqlite3`, beside the CA's inventory), so a delivery queued before a restart
//! is still tried after it, and the dead letters stay listable.
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
    fn as_str(self) -> &'static str {
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

/// Subscriptions and deliveries in one SQLite file.
#[derive(Debug)]
pub(crate) struct WebhookStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl WebhookStore {
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

    pub(crate) fn subscribe(
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

    pub(crate) fn subscriptions(&self, tenant: &TenantId) -> Result<Vec<Subscription>, StoreError> {
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
    pub(crate) fn unsubscribe(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
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
    pub(crate) fn enqueue(
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

    /// Deliveries due at `now`, oldest first, at most `limit`.
    pub(crate) fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<Due>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
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
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// The earliest pending attempt, if any.
    pub(crate) fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
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
    pub(crate) fn attempted(
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
    pub(crate) fn deliveries(
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
    pub(crate) fn requeue(
        &self,
        tenant: &TenantId,
        id: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
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
    pub(crate) fn tenants_subscribed(&self, event_type: &str) -> Result<Vec<String>, StoreError> {
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

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl StoreError {
    /// A blocking task that did not finish.
    pub(crate) fn from_join(e: tokio::task::JoinError) -> Self {
        Self {
            path: "(task)".to_owned(),
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant admin who learns another tenant's subscription id (a log, a screenshot) and
    /// asks to delete it: nothing of the other tenant's goes, its pending deliveries included.
    #[test]
    fn another_tenants_subscription_id_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = WebhookStore::open(&dir.path().join("webhooks.sqlite3")).unwrap();
        let (acme, globex): (TenantId, TenantId) =
            ("acme".parse().unwrap(), "globex".parse().unwrap());
        let sub = Subscription {
            id: "wh_acme".to_owned(),
            url: "https://hooks.acme.test/in".to_owned(),
            events: vec!["certificate.revoked".to_owned()],
            description: None,
            created_by: "alice".to_owned(),
            created_at: SystemTime::now(),
        };
        store.subscribe(&acme, &sub, "whsec_x").unwrap();
        let mut n = 0;
        let mut new_id = || {
            n += 1;
            format!("d{n}")
        };
        let queued = store
            .enqueue(
                &acme,
                "certificate.revoked",
                "e1",
                "{}",
                SystemTime::now(),
                &mut new_id,
            )
            .unwrap();
        assert_eq!(queued, 1);
        let pending = |t: &TenantId| {
            store
                .deliveries(t, Some(DeliveryStatus::Pending), 10)
                .unwrap()
                .len()
        };

        assert!(!store.unsubscribe(&globex, "wh_acme").unwrap());
        assert_eq!(store.subscriptions(&acme).unwrap().len(), 1);
        assert_eq!(
            pending(&acme),
            1,
            "another tenant's delete dropped acme's deliveries"
        );

        assert!(store.unsubscribe(&acme, "wh_acme").unwrap());
        assert_eq!(pending(&acme), 0);
    }
}
