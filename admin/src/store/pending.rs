//! First issuances waiting for approval in PostgreSQL: the [`PendingStore`] every admin server
//! on the database shares, so a request made through one node is listed, decided and picked
//! up through any. A decision is one `UPDATE … WHERE state = 'pending' AND expires_at > now …
//! RETURNING`: concurrent decisions on any nodes wait for the first one's row lock, then find
//! the row no longer pending, so exactly one decides. Pickup secrets are kept as their SHA-256
//! only, as in SQLite.

use std::time::SystemTime;

use portcullis_ca::TenantId;

use super::pool::{pg_error, PgConn, PgStore};
use crate::error::AdminError;
use crate::pending::{
    abandoned_before, read_record, ClaimRow, Decision, NewPending, PendingId, PendingRecord,
    PendingStore, COLUMNS, KEEP_DONE,
};
use crate::token::{secs, unix};

/// Pending first issuances in the admin plane's PostgreSQL database.
#[derive(Debug)]
pub(crate) struct PgPendingStore {
    store: PgStore,
}

fn error(detail: impl std::fmt::Display) -> AdminError {
    AdminError::Store(format!("pending requests in postgres: {detail}"))
}

fn db_error(e: postgres::Error) -> AdminError {
    error(pg_error(&e))
}

fn pg_record(row: &postgres::Row, now: SystemTime) -> Result<PendingRecord, AdminError> {
    read_record(|i| row.try_get(i), |i| row.try_get(i), now).map_err(db_error)
}

impl PgPendingStore {
    fn conn(&self) -> Result<PgConn, AdminError> {
        self.store.conn().map_err(error)
    }

    /// The request the query selects (at most one), if any.
    fn one(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError> {
        self.conn()?
            .query_opt(sql, params)
            .map_err(db_error)?
            .map(|row| pg_record(&row, now))
            .transpose()
    }
}

impl PgStore {
    /// Pending first issuances in this database.
    pub(crate) fn pending(&self) -> PgPendingStore {
        PgPendingStore {
            store: self.clone(),
        }
    }
}

impl PendingStore for PgPendingStore {
    fn keep(
        &self,
        id: &PendingId,
        secret_hash: &[u8; 32],
        req: &NewPending,
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Result<(), AdminError> {
        let dns = serde_json::to_string(&req.dns_names).map_err(error)?;
        let mut conn = self.conn()?;
        conn.execute(
            "DELETE FROM pending_issuances WHERE expires_at < $1",
            &[&unix(now).saturating_sub(secs(KEEP_DONE))],
        )
        .map_err(db_error)?;
        conn.execute(
            "INSERT INTO pending_issuances (id, tenant, profile, csr, lifetime_secs,
               requester_kind, requester_id, requested_by, spiffe_id, dns_names, secret_hash,
               created_at, expires_at, token_created_by, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'pending')",
            &[
                &id.as_str(),
                &req.tenant.as_str(),
                &req.profile,
                &req.csr,
                &req.lifetime.map(secs),
                &req.requester.kind.to_string(),
                &req.requester.id,
                &req.requested_by,
                &req.spiffe_id,
                &dns,
                &&secret_hash[..],
                &unix(now),
                &unix(expires_at),
                &req.token_created_by,
            ],
        )
        .map_err(db_error)?;
        Ok(())
    }

    fn by_secret(
        &self,
        id: &PendingId,
        secret_hash: &[u8; 32],
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError> {
        self.one(
            &format!("SELECT {COLUMNS} FROM pending_issuances WHERE id = $1 AND secret_hash = $2"),
            &[&id.as_str(), &&secret_hash[..]],
            now,
        )
    }

    fn list(&self, tenant: &TenantId, now: SystemTime) -> Result<Vec<PendingRecord>, AdminError> {
        self.conn()?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM pending_issuances WHERE tenant = $1
                     ORDER BY created_at DESC, id LIMIT 500"
                ),
                &[&tenant.as_str()],
            )
            .map_err(db_error)?
            .iter()
            .map(|row| pg_record(row, now))
            .collect()
    }

    fn get(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError> {
        self.one(
            &format!("SELECT {COLUMNS} FROM pending_issuances WHERE id = $1 AND tenant = $2"),
            &[&id.as_str(), &tenant.as_str()],
            now,
        )
    }

    fn try_claim(&self, d: Decision<'_>) -> Result<Option<ClaimRow>, AdminError> {
        let row = self
            .conn()?
            .query_opt(
                "UPDATE pending_issuances SET state = 'approving', decided_by = $3,
                   decided_at = $4
                 WHERE id = $1 AND tenant = $2 AND expires_at > $4
                   AND (state = 'pending' OR (state = 'approving' AND decided_at <= $5))
                 RETURNING tenant, profile, csr, lifetime_secs, requester_kind, requester_id",
                &[
                    &d.id.as_str(),
                    &d.tenant.as_str(),
                    &d.by,
                    &unix(d.now),
                    &abandoned_before(d.now),
                ],
            )
            .map_err(db_error)?;
        row.map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
            ))
        })
        .transpose()
        .map_err(db_error)
    }

    fn approved(&self, d: Decision<'_>, serial: &str, response: &str) -> Result<bool, AdminError> {
        let changed = self
            .conn()?
            .execute(
                "UPDATE pending_issuances SET state = 'approved', serial = $4, response = $5,
                   csr = ''::BYTEA
                 WHERE id = $1 AND state = 'approving' AND decided_by = $2 AND decided_at = $3",
                &[&d.id.as_str(), &d.by, &unix(d.now), &serial, &response],
            )
            .map_err(db_error)?;
        Ok(changed == 1)
    }

    fn release(&self, d: Decision<'_>) -> Result<(), AdminError> {
        self.conn()?
            .execute(
                "UPDATE pending_issuances SET state = 'pending', decided_by = NULL,
                   decided_at = NULL
                 WHERE id = $1 AND state = 'approving' AND decided_by = $2 AND decided_at = $3",
                &[&d.id.as_str(), &d.by, &unix(d.now)],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn try_reject(&self, d: Decision<'_>, reason: &str, from: &str) -> Result<bool, AdminError> {
        let changed = self
            .conn()?
            .execute(
                "UPDATE pending_issuances SET state = 'rejected', decided_by = $3,
                   decided_at = $4, reason = $5, csr = ''::BYTEA
                 WHERE id = $1 AND tenant = $2 AND CASE WHEN $6 = 'approving'
                   THEN state = 'approving'
                   ELSE expires_at > $4
                     AND (state = 'pending' OR (state = 'approving' AND decided_at <= $7)) END",
                &[
                    &d.id.as_str(),
                    &d.tenant.as_str(),
                    &d.by,
                    &unix(d.now),
                    &reason,
                    &from,
                    &abandoned_before(d.now),
                ],
            )
            .map_err(db_error)?;
        Ok(changed == 1)
    }
}
