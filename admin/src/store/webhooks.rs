//! Webhook subscriptions and deliveries in PostgreSQL: the [`WebhookStore`] every admin server
//! on the database shares. Each node runs its delivery loop; a due delivery is claimed with
//! `FOR UPDATE SKIP LOCKED` and its next attempt pushed out by the claim lease in the same
//! statement, so two nodes never attempt the same delivery at once.

use std::time::SystemTime;

use portcullis_ca::TenantId;

use super::pool::{pg_error, PgConn, PgStore};
use crate::webhooks::store::{
    millis, time, Delivery, DeliveryStatus, Due, StoreError, Subscription, Target, WebhookStore,
    CLAIM_LEASE,
};

/// Webhook subscriptions and deliveries in the admin plane's PostgreSQL database.
#[derive(Debug)]
pub(crate) struct PgWebhookStore {
    store: PgStore,
}

fn error(detail: impl std::fmt::Display) -> StoreError {
    StoreError::backend("postgres", detail)
}

fn db_error(e: postgres::Error) -> StoreError {
    error(pg_error(&e))
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn attempts(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl PgWebhookStore {
    fn conn(&self) -> Result<PgConn, StoreError> {
        self.store.conn().map_err(error)
    }
}

impl PgStore {
    /// Webhook subscriptions and deliveries in this database.
    pub(crate) fn webhooks(&self) -> PgWebhookStore {
        PgWebhookStore {
            store: self.clone(),
        }
    }
}

impl WebhookStore for PgWebhookStore {
    fn subscribe(
        &self,
        tenant: &TenantId,
        sub: &Subscription,
        secret: &str,
    ) -> Result<(), StoreError> {
        let events = serde_json::to_string(&sub.events).map_err(error)?;
        self.conn()?
            .execute(
                "INSERT INTO webhook_subscriptions (id, tenant, url, events, secret, description,
                   created_by, created_at) VALUES ($1, $2, $3, $4::TEXT::JSONB, $5, $6, $7, $8)",
                &[
                    &sub.id,
                    &tenant.as_str(),
                    &sub.url,
                    &events,
                    &secret,
                    &sub.description,
                    &sub.created_by,
                    &millis(sub.created_at),
                ],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn subscriptions(&self, tenant: &TenantId) -> Result<Vec<Subscription>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT id, url, events::TEXT, description, created_by, created_at
                 FROM webhook_subscriptions WHERE tenant = $1 ORDER BY created_at, id",
                &[&tenant.as_str()],
            )
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let events: String = r.try_get(2).map_err(db_error)?;
                Ok(Subscription {
                    id: r.try_get(0).map_err(db_error)?,
                    url: r.try_get(1).map_err(db_error)?,
                    events: serde_json::from_str(&events).unwrap_or_default(),
                    description: r.try_get(3).map_err(db_error)?,
                    created_by: r.try_get(4).map_err(db_error)?,
                    created_at: time(r.try_get(5).map_err(db_error)?),
                })
            })
            .collect()
    }

    fn unsubscribe(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        if id.contains('\0') {
            // No stored id has a NUL (PostgreSQL text holds none): no such subscription.
            return Ok(false);
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        let n = tx
            .execute(
                "DELETE FROM webhook_subscriptions WHERE tenant = $1 AND id = $2",
                &[&tenant.as_str(), &id],
            )
            .map_err(db_error)?;
        if n > 0 {
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE subscription = $1 AND status = 'pending'",
                &[&id],
            )
            .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)?;
        Ok(n > 0)
    }

    fn enqueue(
        &self,
        tenant: &TenantId,
        event_type: &str,
        event_id: &str,
        payload: &str,
        now: SystemTime,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        let subscribers: Vec<String> = tx
            .query(
                "SELECT id FROM webhook_subscriptions WHERE tenant = $1 AND events ? $2",
                &[&tenant.as_str(), &event_type],
            )
            .map_err(db_error)?
            .iter()
            .map(|r| r.try_get(0).map_err(db_error))
            .collect::<Result<_, _>>()?;
        let mut queued = 0;
        for sub in subscribers {
            // Once per subscription and event, whichever node saw the event first.
            queued += tx
                .execute(
                    "INSERT INTO webhook_deliveries (id, subscription, tenant, event_id,
                       event_type, payload, status, next_attempt_ms, created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)
                     ON CONFLICT (subscription, event_id) DO NOTHING",
                    &[
                        &new_id(),
                        &sub,
                        &tenant.as_str(),
                        &event_id,
                        &event_type,
                        &payload,
                        &millis(now),
                    ],
                )
                .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)?;
        Ok(usize::try_from(queued).unwrap_or(usize::MAX))
    }

    fn claim_due(&self, now: SystemTime, n: usize) -> Result<Vec<Due>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "WITH claimed AS (
                   UPDATE webhook_deliveries SET next_attempt_ms = $3
                   WHERE id IN (
                     SELECT id FROM webhook_deliveries
                     WHERE status = 'pending' AND next_attempt_ms <= $1
                     ORDER BY next_attempt_ms, created_ms LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                   RETURNING id, payload, attempts, created_ms, subscription)
                 SELECT c.id, c.payload, c.attempts, c.created_ms, s.id, s.url, s.secret
                 FROM claimed c JOIN webhook_subscriptions s ON s.id = c.subscription
                 ORDER BY c.created_ms",
                &[&millis(now), &limit(n), &millis(now + CLAIM_LEASE)],
            )
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    id: r.try_get(0).map_err(db_error)?,
                    payload: r.try_get(1).map_err(db_error)?,
                    attempts: attempts(r.try_get(2).map_err(db_error)?),
                    created: time(r.try_get(3).map_err(db_error)?),
                    target: Target {
                        id: r.try_get(4).map_err(db_error)?,
                        url: r.try_get(5).map_err(db_error)?,
                        secret: r.try_get(6).map_err(db_error)?,
                    },
                })
            })
            .collect()
    }

    fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
        let row = self
            .conn()?
            .query_one(
                "SELECT MIN(next_attempt_ms) FROM webhook_deliveries WHERE status = 'pending'",
                &[],
            )
            .map_err(db_error)?;
        let next: Option<i64> = row.try_get(0).map_err(db_error)?;
        Ok(next.map(time))
    }

    fn attempted(
        &self,
        id: &str,
        outcome: Result<(), String>,
        retry_at: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<DeliveryStatus, StoreError> {
        let (status, error) = match (&outcome, retry_at) {
            (Ok(()), _) => (DeliveryStatus::Delivered, None),
            (Err(e), Some(_)) => (DeliveryStatus::Pending, Some(e.replace('\0', ""))),
            (Err(e), None) => (DeliveryStatus::Dead, Some(e.replace('\0', ""))),
        };
        let finished = (status != DeliveryStatus::Pending).then(|| millis(now));
        self.conn()?
            .execute(
                "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1,
                   last_error = $3, next_attempt_ms = $4, finished_ms = $5 WHERE id = $1",
                &[
                    &id,
                    &status.as_str(),
                    &error,
                    &millis(retry_at.unwrap_or(now)),
                    &finished,
                ],
            )
            .map_err(db_error)?;
        Ok(status)
    }

    fn deliveries(
        &self,
        tenant: &TenantId,
        status: Option<DeliveryStatus>,
        n: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let status = status.map(DeliveryStatus::as_str);
        let rows = self
            .conn()?
            .query(
                "SELECT id, subscription, event_type, status, attempts, last_error, created_ms,
                   payload FROM webhook_deliveries
                 WHERE tenant = $1 AND ($2::TEXT IS NULL OR status = $2)
                 ORDER BY created_ms DESC, id LIMIT $3",
                &[&tenant.as_str(), &status, &limit(n)],
            )
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get(3).map_err(db_error)?;
                Ok(Delivery {
                    id: r.try_get(0).map_err(db_error)?,
                    subscription: r.try_get(1).map_err(db_error)?,
                    event_type: r.try_get(2).map_err(db_error)?,
                    status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Dead),
                    attempts: attempts(r.try_get(4).map_err(db_error)?),
                    last_error: r.try_get(5).map_err(db_error)?,
                    created_at: time(r.try_get(6).map_err(db_error)?),
                    payload: r.try_get(7).map_err(db_error)?,
                })
            })
            .collect()
    }

    fn requeue(&self, tenant: &TenantId, id: &str, now: SystemTime) -> Result<bool, StoreError> {
        if id.contains('\0') {
            return Ok(false);
        }
        let n = self
            .conn()?
            .execute(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0,
                   next_attempt_ms = $3, finished_ms = NULL
                 WHERE tenant = $1 AND id = $2 AND status = 'dead'",
                &[&tenant.as_str(), &id, &millis(now)],
            )
            .map_err(db_error)?;
        Ok(n > 0)
    }

    fn tenants_subscribed(&self, event_type: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT DISTINCT tenant FROM webhook_subscriptions WHERE events ? $1
                 ORDER BY tenant",
                &[&event_type],
            )
            .map_err(db_error)?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(db_error))
            .collect()
    }
}
