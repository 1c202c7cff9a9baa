//! ACME's state on one node: EAB keys, accounts and certificates in `STATE/acme.sqlite3`;
//! nonces, orders and authorizations in memory (bounded, expiring: a restart abandons them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use portcullis_ca::Serial;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::{
    unix, Account, AcmeBackend, NewEab, MAX_NONCES, MAX_ORDERS, MAX_ORDERS_PER_ACCOUNT, NONCE_TTL,
};
use crate::acme::order::{order_status, Authz, Finalized, Order, OrderRefused, Status};
use crate::error::AdminError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS eab_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    tenant TEXT NOT NULL,
    profile TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    account INTEGER
);
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    thumbprint TEXT UNIQUE NOT NULL,
    jwk TEXT NOT NULL,
    tenant TEXT NOT NULL,
    profile TEXT NOT NULL,
    eab_kid TEXT NOT NULL,
    contact TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY NOT NULL,
    account INTEGER NOT NULL,
    chain_pem TEXT NOT NULL
);
";

/// Orders and authorizations in progress on this node.
#[derive(Debug, Default)]
struct Pending {
    orders: HashMap<String, Order>,
    authz: HashMap<String, Authz>,
}

impl Pending {
    /// The order's status as a client sees it.
    fn status(&self, order: &Order) -> Status {
        order_status(
            order.status,
            order
                .authz
                .iter()
                .map(|id| self.authz.get(id).map_or(Status::Invalid, |a| a.status)),
        )
    }

    fn purge_expired(&mut self, now: SystemTime) {
        self.orders.retain(|_, o| o.expires > now);
        self.authz.retain(|_, a| a.expires > now);
    }
}

/// The SQLite file and this node's memory.
pub(crate) struct SqliteAcme {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Each nonce with the Unix second it expires at.
    nonces: moka::sync::Cache<String, i64>,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for SqliteAcme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAcme")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteAcme {
    /// Opens (creating if needed) `STATE/acme.sqlite3`.
    pub(crate) fn in_state_dir(dir: &Path) -> Result<Self, AdminError> {
        let path = dir.join(super::ACME_DB);
        let err = |e: rusqlite::Error| AdminError::TokenStore {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        // Two servers opening the same new file at once can get SQLITE_BUSY from the switch to
        // WAL without the busy handler being asked (seen in the tests, which share a state
        // folder): try the set-up again a few times before giving up.
        let mut tries = 0;
        loop {
            let setup = conn
                .pragma_update(None, "journal_mode", "WAL")
                .and_then(|()| conn.execute_batch(SCHEMA));
            match setup {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 10 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50 * tries));
                }
                other => {
                    other.map_err(err)?;
                    break;
                }
            }
        }
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            nonces: moka::sync::Cache::builder()
                .max_capacity(MAX_NONCES)
                .time_to_live(NONCE_TTL)
                .build(),
            pending: Mutex::new(Pending::default()),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> AdminError {
        AdminError::TokenStore {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // Every use is one statement or one transaction: a panic leaves nothing half done.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Every change under the lock is a few map updates: nothing is left half done.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn account_where(
        &self,
        clause: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<Option<Account>, AdminError> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT id, jwk, tenant, profile, eab_kid, contact FROM accounts WHERE {clause}"
                ),
                params![value],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.error(e))?;
        let Some((id, jwk, tenant, profile, eab_kid, contact)) = row else {
            return Ok(None);
        };
        Ok(Some(Account {
            id,
            jwk,
            tenant: tenant.parse().map_err(|e| self.error(e))?,
            profile,
            eab_kid,
            contact: serde_json::from_str(&contact).map_err(|e| self.error(e))?,
        }))
    }
}

impl AcmeBackend for SqliteAcme {
    fn agree_on_seal_key(
        &self,
        _key_id: &str,
        _now: SystemTime,
    ) -> Result<Result<(), String>, AdminError> {
        // One node, one key file beside the database.
        Ok(Ok(()))
    }

    fn insert_eab(&self, eab: &NewEab<'_>) -> Result<(), AdminError> {
        self.conn()
            .execute(
                "INSERT INTO eab_keys (kid, tenant, profile, sealed, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    eab.kid,
                    eab.tenant.as_str(),
                    eab.profile,
                    eab.sealed,
                    unix(eab.created_at),
                    unix(eab.expires_at)
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn eab_sealed(&self, kid: &str, now: SystemTime) -> Result<Option<Vec<u8>>, AdminError> {
        self.conn()
            .query_row(
                "SELECT sealed FROM eab_keys WHERE kid = ?1 AND account IS NULL AND expires_at > ?2",
                params![kid, unix(now)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    fn create_account(
        &self,
        kid: &str,
        thumbprint: &str,
        jwk: &str,
        contact: &[String],
        now: SystemTime,
    ) -> Result<Option<Account>, AdminError> {
        let mut conn = self.conn();
        // Immediate: the write lock is taken (waiting out other writers) before the read, so
        // the transaction never has to upgrade a read lock that another writer made stale.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.error(e))?;
        let grant: Option<(String, String)> = tx
            .query_row(
                "SELECT tenant, profile FROM eab_keys WHERE kid = ?1 AND account IS NULL",
                params![kid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.error(e))?;
        let Some((tenant, profile)) = grant else {
            return Ok(None);
        };
        let contact_json = serde_json::to_string(contact).map_err(|e| self.error(e))?;
        tx.execute(
            "INSERT INTO accounts (thumbprint, jwk, tenant, profile, eab_kid, contact, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                thumbprint,
                jwk,
                tenant,
                profile,
                kid,
                contact_json,
                unix(now)
            ],
        )
        .map_err(|e| self.error(e))?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE eab_keys SET account = ?2 WHERE kid = ?1",
            params![kid, id],
        )
        .map_err(|e| self.error(e))?;
        tx.commit().map_err(|e| self.error(e))?;
        Ok(Some(Account {
            id,
            jwk: jwk.to_owned(),
            tenant: tenant.parse().map_err(|e| self.error(e))?,
            profile,
            eab_kid: kid.to_owned(),
            contact: contact.to_vec(),
        }))
    }

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, AdminError> {
        self.account_where("thumbprint = ?1", thumbprint.to_owned())
    }

    fn account(&self, id: i64) -> Result<Option<Account>, AdminError> {
        self.account_where("id = ?1", id)
    }

    fn add_certificate(
        &self,
        serial: &Serial,
        account: i64,
        chain_pem: &str,
    ) -> Result<(), AdminError> {
        self.conn()
            .execute(
                "INSERT INTO certificates (serial, account, chain_pem) VALUES (?1, ?2, ?3)",
                params![serial.to_string(), account, chain_pem],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn certificate(&self, serial: &Serial) -> Result<Option<(i64, String)>, AdminError> {
        self.conn()
            .query_row(
                "SELECT account, chain_pem FROM certificates WHERE serial = ?1",
                params![serial.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    fn issue_nonce(&self, nonce: &str, now: SystemTime) -> Result<(), AdminError> {
        self.nonces.insert(nonce.to_owned(), unix(now + NONCE_TTL));
        Ok(())
    }

    fn take_nonce(&self, nonce: &str, now: SystemTime) -> Result<bool, AdminError> {
        Ok(self
            .nonces
            .remove(nonce)
            .is_some_and(|expires| expires > unix(now)))
    }

    fn add_order(
        &self,
        id: &str,
        order: &Order,
        authz: &[(String, Authz)],
        now: SystemTime,
    ) -> Result<Result<(), OrderRefused>, AdminError> {
        let mut p = self.pending();
        p.purge_expired(now);
        let own = p
            .orders
            .values()
            .filter(|o| o.account == order.account)
            .count();
        if p.orders.len() >= MAX_ORDERS || own >= MAX_ORDERS_PER_ACCOUNT {
            return Ok(Err(OrderRefused::TooMany));
        }
        if let Some(replaced) = &order.replaces {
            let taken = p.orders.values().any(|o| {
                o.replaces
                    .as_ref()
                    .is_some_and(|r| r.serial == replaced.serial)
                    && p.status(o) != Status::Invalid
            });
            if taken {
                return Ok(Err(OrderRefused::AlreadyReplaced));
            }
        }
        p.authz.extend(authz.iter().cloned());
        p.orders.insert(id.to_owned(), order.clone());
        Ok(Ok(()))
    }

    fn order(&self, id: &str, now: SystemTime) -> Result<Option<Order>, AdminError> {
        let p = self.pending();
        Ok(p.orders.get(id).filter(|o| o.expires > now).map(|o| {
            let mut shown = o.clone();
            shown.status = p.status(o);
            shown
        }))
    }

    fn authz(&self, id: &str, now: SystemTime) -> Result<Option<Authz>, AdminError> {
        Ok(self
            .pending()
            .authz
            .get(id)
            .filter(|a| a.expires > now)
            .cloned())
    }

    fn start_challenge(
        &self,
        id: &str,
        account: i64,
        kind: &'static str,
        now: SystemTime,
    ) -> Result<bool, AdminError> {
        let mut p = self.pending();
        let Some(a) = p
            .authz
            .get_mut(id)
            .filter(|a| a.account == account && a.status == Status::Pending && a.expires > now)
        else {
            return Ok(false);
        };
        a.status = Status::Processing;
        a.chosen = Some(kind);
        Ok(true)
    }

    fn end_challenge(
        &self,
        id: &str,
        outcome: Result<SystemTime, Value>,
    ) -> Result<(), AdminError> {
        let mut p = self.pending();
        let Some(a) = p
            .authz
            .get_mut(id)
            .filter(|a| a.status == Status::Processing)
        else {
            return Ok(());
        };
        match outcome {
            Ok(at) => {
                a.status = Status::Valid;
                a.validated = Some(at);
            }
            Err(problem) => {
                a.status = Status::Invalid;
                a.error = Some(problem);
            }
        }
        Ok(())
    }

    fn claim_order(
        &self,
        id: &str,
        account: i64,
        now: SystemTime,
    ) -> Result<Option<Order>, AdminError> {
        let mut p = self.pending();
        let Some(order) = p
            .orders
            .get(id)
            .filter(|o| o.account == account && o.expires > now)
        else {
            return Ok(None);
        };
        if p.status(order) != Status::Ready {
            return Ok(None);
        }
        let mut claimed = order.clone();
        claimed.status = Status::Processing;
        p.orders.insert(id.to_owned(), claimed.clone());
        Ok(Some(claimed))
    }

    fn order_finalized(&self, id: &str, outcome: &Finalized) -> Result<(), AdminError> {
        let mut p = self.pending();
        let Some(order) = p
            .orders
            .get_mut(id)
            .filter(|o| o.status == Status::Processing)
        else {
            return Ok(());
        };
        match outcome {
            Finalized::Issued(serial) => {
                order.status = Status::Valid;
                order.certificate = Some(serial.clone());
            }
            Finalized::Refused(problem) => {
                order.status = Status::Invalid;
                order.error = Some(problem.clone());
            }
            Finalized::Retry => order.status = Status::Pending,
        }
        Ok(())
    }
}
