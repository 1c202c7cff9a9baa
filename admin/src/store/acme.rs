//! The ACME server's state in PostgreSQL: the [`AcmeBackend`] every admin server on the
//! database shares, so that behind a balancer the nodes act as one ACME server.
//!
//! Every change two nodes may race on is one conditional statement: a nonce is taken by a
//! `DELETE … RETURNING` (once, fleet-wide); an EAB key binds the account whose
//! `UPDATE … WHERE account IS NULL` marks it; a challenge starts for the one
//! `UPDATE … WHERE status = 'pending'` and ends only on `status = 'processing'`; an order is
//! finalized by the one node whose `UPDATE … WHERE status = 'pending'` (all authorizations
//! valid) claimed it, so it is signed at most once. New orders of an account are added under
//! the account's advisory lock (the per-account bound and `replaces` checked with no race).

use std::time::SystemTime;

use portcullis_ca::Serial;
use postgres::types::ToSql;
use serde_json::Value;

use super::pool::{has_nul, pg_error, PgConn, PgStore};
use crate::acme::order::{
    challenge_kind, order_status, Authz, CertId, Finalized, Order, OrderRefused, Status,
};
use crate::acme::store::{
    from_unix, unix, Account, AcmeBackend, NewEab, MAX_NONCES, MAX_ORDERS, MAX_ORDERS_PER_ACCOUNT,
    NONCE_TTL,
};
use crate::error::AdminError;

/// Expired nonces and orders are deleted by one node's call in this many.
const PRUNE_EVERY: u64 = 64;

/// The ACME state in the admin plane's PostgreSQL database.
#[derive(Debug)]
pub(crate) struct PgAcmeStore {
    store: PgStore,
    calls: std::sync::atomic::AtomicU64,
}

fn error(detail: impl std::fmt::Display) -> AdminError {
    AdminError::Store(format!("acme in postgres: {detail}"))
}

fn db_error(e: postgres::Error) -> AdminError {
    error(pg_error(&e))
}

fn status(text: &str) -> Result<Status, AdminError> {
    Status::parse(text).ok_or_else(|| error(format!("stored status {text:?}")))
}

fn json_opt(text: Option<String>) -> Result<Option<Value>, AdminError> {
    text.map(|t| serde_json::from_str(&t).map_err(error))
        .transpose()
}

const ACCOUNT_COLUMNS: &str = "id, jwk, tenant, profile, eab_kid, contact";

fn account_row(r: &postgres::Row) -> Result<Account, AdminError> {
    let tenant: String = r.try_get(2).map_err(db_error)?;
    let contact: String = r.try_get(5).map_err(db_error)?;
    Ok(Account {
        id: r.try_get(0).map_err(db_error)?,
        jwk: r.try_get(1).map_err(db_error)?,
        tenant: tenant.parse().map_err(error)?,
        profile: r.try_get(3).map_err(db_error)?,
        eab_kid: r.try_get(4).map_err(db_error)?,
        contact: serde_json::from_str(&contact).map_err(error)?,
    })
}

const AUTHZ_COLUMNS: &str = "account, name, expires_at, token, status, chosen, validated, error";

fn authz_row(r: &postgres::Row) -> Result<Authz, AdminError> {
    let chosen: Option<String> = r.try_get(5).map_err(db_error)?;
    let validated: Option<i64> = r.try_get(6).map_err(db_error)?;
    Ok(Authz {
        account: r.try_get(0).map_err(db_error)?,
        name: r.try_get(1).map_err(db_error)?,
        expires: from_unix(r.try_get(2).map_err(db_error)?),
        token: r.try_get(3).map_err(db_error)?,
        status: status(r.try_get(4).map_err(db_error)?)?,
        chosen: chosen.as_deref().and_then(challenge_kind),
        validated: validated.map(from_unix),
        error: json_opt(r.try_get(7).map_err(db_error)?)?,
    })
}

impl PgAcmeStore {
    fn conn(&self) -> Result<PgConn, AdminError> {
        self.store.conn().map_err(error)
    }

    /// True once in [`PRUNE_EVERY`] calls.
    fn prune_now(&self) -> bool {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(PRUNE_EVERY)
    }

    /// The order row `id` (unexpired) with its authorizations' ids and statuses.
    fn order_in(
        conn: &mut postgres::Client,
        id: &str,
        now: SystemTime,
    ) -> Result<Option<Order>, AdminError> {
        let Some(r) = conn
            .query_opt(
                "SELECT account, status, expires_at, names, certificate, error, replaces
                 FROM acme_orders WHERE id = $1 AND expires_at > $2",
                &[&id, &unix(now)],
            )
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let authz = conn
            .query(
                "SELECT id, status FROM acme_authz WHERE order_id = $1 ORDER BY position",
                &[&id],
            )
            .map_err(db_error)?;
        let mut ids = Vec::with_capacity(authz.len());
        let mut states = Vec::with_capacity(authz.len());
        for a in &authz {
            ids.push(a.try_get::<_, String>(0).map_err(db_error)?);
            states.push(status(a.try_get(1).map_err(db_error)?)?);
        }
        let names: String = r.try_get(3).map_err(db_error)?;
        let certificate: Option<String> = r.try_get(4).map_err(db_error)?;
        let replaces: Option<String> = r.try_get(6).map_err(db_error)?;
        Ok(Some(Order {
            account: r.try_get(0).map_err(db_error)?,
            status: order_status(status(r.try_get(1).map_err(db_error)?)?, states),
            expires: from_unix(r.try_get(2).map_err(db_error)?),
            names: serde_json::from_str(&names).map_err(error)?,
            authz: ids,
            certificate: certificate
                .map(|s| {
                    s.parse::<Serial>()
                        .map_err(|e| error(format!("serial {s}: {e}")))
                })
                .transpose()?,
            error: json_opt(r.try_get(5).map_err(db_error)?)?,
            replaces: replaces
                .map(|t| CertId::parse(&t).map_err(|_| error(format!("stored certID {t:?}"))))
                .transpose()?,
        }))
    }
}

impl PgStore {
    /// The ACME server's state in this database.
    pub(crate) fn acme(&self) -> PgAcmeStore {
        PgAcmeStore {
            store: self.clone(),
            calls: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl AcmeBackend for PgAcmeStore {
    fn agree_on_seal_key(
        &self,
        key_id: &str,
        now: SystemTime,
    ) -> Result<Result<(), String>, AdminError> {
        let mut conn = self.conn()?;
        conn.execute(
            "INSERT INTO acme_seal_key (key_id, stored_at) VALUES ($1, $2)
             ON CONFLICT (singleton) DO NOTHING",
            &[&key_id, &unix(now)],
        )
        .map_err(db_error)?;
        let stored: String = conn
            .query_one("SELECT key_id FROM acme_seal_key", &[])
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)?;
        Ok(if stored == key_id {
            Ok(())
        } else {
            Err(stored)
        })
    }

    fn insert_eab(&self, eab: &NewEab<'_>) -> Result<(), AdminError> {
        if has_nul(&[eab.profile]) {
            return Err(error("the profile holds a NUL character"));
        }
        self.conn()?
            .execute(
                "INSERT INTO acme_eab_keys (kid, tenant, profile, sealed, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &eab.kid,
                    &eab.tenant.as_str(),
                    &eab.profile,
                    &eab.sealed,
                    &unix(eab.created_at),
                    &unix(eab.expires_at),
                ],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn eab_sealed(&self, kid: &str, now: SystemTime) -> Result<Option<Vec<u8>>, AdminError> {
        if has_nul(&[kid]) {
            return Ok(None);
        }
        self.conn()?
            .query_opt(
                "SELECT sealed FROM acme_eab_keys
                 WHERE kid = $1 AND account IS NULL AND expires_at > $2",
                &[&kid, &unix(now)],
            )
            .map_err(db_error)?
            .map(|r| r.try_get(0).map_err(db_error))
            .transpose()
    }

    fn create_account(
        &self,
        kid: &str,
        thumbprint: &str,
        jwk: &str,
        contact: &[String],
        now: SystemTime,
    ) -> Result<Option<Account>, AdminError> {
        let contact_json = serde_json::to_string(contact).map_err(error)?;
        if has_nul(&[kid, thumbprint, jwk, &contact_json]) {
            return Ok(None);
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        let row = tx
            .query_opt(
                &format!(
                    "INSERT INTO acme_accounts
                       (thumbprint, jwk, tenant, profile, eab_kid, contact, created_at)
                     SELECT $2, $3, tenant, profile, kid, $4, $5 FROM acme_eab_keys
                     WHERE kid = $1 AND account IS NULL
                     RETURNING {ACCOUNT_COLUMNS}"
                ),
                &[&kid, &thumbprint, &jwk, &contact_json, &unix(now)],
            )
            .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let account = account_row(&row)?;
        // The key binds the first account whose transaction marks it; a concurrent binding
        // waits for the row lock, then finds the key used and rolls its account back.
        let marked = tx
            .execute(
                "UPDATE acme_eab_keys SET account = $2 WHERE kid = $1 AND account IS NULL",
                &[&kid, &account.id],
            )
            .map_err(db_error)?;
        if marked != 1 {
            return Ok(None);
        }
        tx.commit().map_err(db_error)?;
        Ok(Some(account))
    }

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, AdminError> {
        if has_nul(&[thumbprint]) {
            return Ok(None);
        }
        self.conn()?
            .query_opt(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM acme_accounts WHERE thumbprint = $1"),
                &[&thumbprint],
            )
            .map_err(db_error)?
            .map(|r| account_row(&r))
            .transpose()
    }

    fn account(&self, id: i64) -> Result<Option<Account>, AdminError> {
        self.conn()?
            .query_opt(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM acme_accounts WHERE id = $1"),
                &[&id],
            )
            .map_err(db_error)?
            .map(|r| account_row(&r))
            .transpose()
    }

    fn add_certificate(
        &self,
        serial: &Serial,
        account: i64,
        chain_pem: &str,
    ) -> Result<(), AdminError> {
        self.conn()?
            .execute(
                "INSERT INTO acme_certificates (serial, account, chain_pem) VALUES ($1, $2, $3)",
                &[&serial.to_string(), &account, &chain_pem],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn certificate(&self, serial: &Serial) -> Result<Option<(i64, String)>, AdminError> {
        self.conn()?
            .query_opt(
                "SELECT account, chain_pem FROM acme_certificates WHERE serial = $1",
                &[&serial.to_string()],
            )
            .map_err(db_error)?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
            .map_err(db_error)
    }

    fn issue_nonce(&self, nonce: &str, now: SystemTime) -> Result<(), AdminError> {
        let mut conn = self.conn()?;
        if self.prune_now() {
            // The expired ones, then the oldest beyond the bound.
            conn.execute(
                "DELETE FROM acme_nonces WHERE expires_at <= $1",
                &[&unix(now)],
            )
            .map_err(db_error)?;
            conn.execute(
                "DELETE FROM acme_nonces WHERE nonce IN (SELECT nonce FROM acme_nonces
                   ORDER BY expires_at DESC OFFSET $1)",
                &[&i64::try_from(MAX_NONCES).unwrap_or(i64::MAX)],
            )
            .map_err(db_error)?;
        }
        conn.execute(
            "INSERT INTO acme_nonces (nonce, expires_at) VALUES ($1, $2)",
            &[&nonce, &unix(now + NONCE_TTL)],
        )
        .map_err(db_error)?;
        Ok(())
    }

    fn take_nonce(&self, nonce: &str, now: SystemTime) -> Result<bool, AdminError> {
        if has_nul(&[nonce]) {
            return Ok(false);
        }
        let taken = self
            .conn()?
            .query_opt(
                "DELETE FROM acme_nonces WHERE nonce = $1 RETURNING expires_at",
                &[&nonce],
            )
            .map_err(db_error)?;
        Ok(match taken {
            Some(r) => r.try_get::<_, i64>(0).map_err(db_error)? > unix(now),
            None => false,
        })
    }

    fn add_order(
        &self,
        id: &str,
        order: &Order,
        authz: &[(String, Authz)],
        now: SystemTime,
    ) -> Result<Result<(), OrderRefused>, AdminError> {
        let names = serde_json::to_string(&order.names).map_err(error)?;
        let mut conn = self.conn()?;
        if self.prune_now() {
            conn.execute(
                "DELETE FROM acme_orders WHERE expires_at <= $1",
                &[&unix(now)],
            )
            .map_err(db_error)?;
        }
        let mut tx = conn.transaction().map_err(db_error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('portcullis.acme.orders/' || $1, 0))",
            &[&order.account.to_string()],
        )
        .map_err(db_error)?;
        let counts = tx
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE account = $2)
                 FROM acme_orders WHERE expires_at > $1",
                &[&unix(now), &order.account],
            )
            .map_err(db_error)?;
        let (all, own): (i64, i64) = (
            counts.try_get(0).map_err(db_error)?,
            counts.try_get(1).map_err(db_error)?,
        );
        let bound = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        if all >= bound(MAX_ORDERS) || own >= bound(MAX_ORDERS_PER_ACCOUNT) {
            return Ok(Err(OrderRefused::TooMany));
        }
        let replaced = order.replaces.as_ref().map(|r| r.serial.to_string());
        if let Some(serial) = &replaced {
            // A live order that is not invalid (nor made invalid by an authorization).
            let taken = tx
                .query_opt(
                    "SELECT 1 FROM acme_orders o
                     WHERE o.replaces_serial = $1 AND o.expires_at > $2 AND o.status <> 'invalid'
                       AND NOT (o.status = 'pending' AND EXISTS (SELECT 1 FROM acme_authz a
                         WHERE a.order_id = o.id AND a.status = 'invalid'))
                     LIMIT 1",
                    &[serial, &unix(now)],
                )
                .map_err(db_error)?;
            if taken.is_some() {
                return Ok(Err(OrderRefused::AlreadyReplaced));
            }
        }
        let replaces = order.replaces.as_ref().map(CertId::text);
        tx.execute(
            "INSERT INTO acme_orders
               (id, account, status, expires_at, names, replaces, replaces_serial)
             VALUES ($1, $2, 'pending', $3, $4, $5, $6)",
            &[
                &id,
                &order.account,
                &unix(order.expires),
                &names,
                &replaces,
                &replaced,
            ],
        )
        .map_err(db_error)?;
        for (position, (authz_id, a)) in authz.iter().enumerate() {
            let position = i32::try_from(position).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO acme_authz
                   (id, order_id, position, account, name, expires_at, token, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
                &[
                    authz_id as &(dyn ToSql + Sync),
                    &id,
                    &position,
                    &a.account,
                    &a.name,
                    &unix(a.expires),
                    &a.token,
                ],
            )
            .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)?;
        Ok(Ok(()))
    }

    fn order(&self, id: &str, now: SystemTime) -> Result<Option<Order>, AdminError> {
        if has_nul(&[id]) {
            return Ok(None);
        }
        let mut conn = self.conn()?;
        Self::order_in(&mut conn, id, now)
    }

    fn authz(&self, id: &str, now: SystemTime) -> Result<Option<Authz>, AdminError> {
        if has_nul(&[id]) {
            return Ok(None);
        }
        self.conn()?
            .query_opt(
                &format!(
                    "SELECT {AUTHZ_COLUMNS} FROM acme_authz WHERE id = $1 AND expires_at > $2"
                ),
                &[&id, &unix(now)],
            )
            .map_err(db_error)?
            .map(|r| authz_row(&r))
            .transpose()
    }

    fn start_challenge(
        &self,
        id: &str,
        account: i64,
        kind: &'static str,
        now: SystemTime,
    ) -> Result<bool, AdminError> {
        let changed = self
            .conn()?
            .execute(
                "UPDATE acme_authz SET status = 'processing', chosen = $3
                 WHERE id = $1 AND account = $2 AND status = 'pending' AND expires_at > $4",
                &[&id, &account, &kind, &unix(now)],
            )
            .map_err(db_error)?;
        Ok(changed == 1)
    }

    fn end_challenge(
        &self,
        id: &str,
        outcome: Result<SystemTime, Value>,
    ) -> Result<(), AdminError> {
        let (state, validated, problem) = match outcome {
            Ok(at) => ("valid", Some(unix(at)), None),
            Err(p) => ("invalid", None, Some(p.to_string())),
        };
        self.conn()?
            .execute(
                "UPDATE acme_authz SET status = $2, validated = $3, error = $4
                 WHERE id = $1 AND status = 'processing'",
                &[&id, &state, &validated, &problem],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn claim_order(
        &self,
        id: &str,
        account: i64,
        now: SystemTime,
    ) -> Result<Option<Order>, AdminError> {
        if has_nul(&[id]) {
            return Ok(None);
        }
        let mut conn = self.conn()?;
        // Concurrent claims wait for the first one's row lock, then find the order no longer
        // pending: exactly one proceeds to sign.
        let claimed = conn
            .execute(
                "UPDATE acme_orders o SET status = 'processing'
                 WHERE id = $1 AND account = $2 AND status = 'pending' AND expires_at > $3
                   AND NOT EXISTS (SELECT 1 FROM acme_authz a
                     WHERE a.order_id = o.id AND a.status <> 'valid')",
                &[&id, &account, &unix(now)],
            )
            .map_err(db_error)?;
        if claimed != 1 {
            return Ok(None);
        }
        Self::order_in(&mut conn, id, now)
    }

    fn order_finalized(&self, id: &str, outcome: &Finalized) -> Result<(), AdminError> {
        let mut conn = self.conn()?;
        match outcome {
            Finalized::Issued(serial) => conn.execute(
                "UPDATE acme_orders SET status = 'valid', certificate = $2
                 WHERE id = $1 AND status = 'processing'",
                &[&id, &serial.to_string()],
            ),
            Finalized::Refused(problem) => conn.execute(
                "UPDATE acme_orders SET status = 'invalid', error = $2
                 WHERE id = $1 AND status = 'processing'",
                &[&id, &problem.to_string()],
            ),
            Finalized::Retry => conn.execute(
                "UPDATE acme_orders SET status = 'pending' WHERE id = $1 AND status = 'processing'",
                &[&id],
            ),
        }
        .map_err(db_error)?;
        Ok(())
    }
}
