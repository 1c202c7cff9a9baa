//! Bootstrap tokens in PostgreSQL: the [`TokenStore`] shared by every admin server on the
//! database. A token is consumed by one `UPDATE … WHERE used_at IS NULL … RETURNING`: of
//! concurrent uses on any nodes, exactly one gets the grant (the others' updates wait for its
//! commit, then find the row used).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_ca::TenantId;

use super::pool::{pg_error, PgConn, PgStore};
use crate::error::AdminError;
use crate::token::{
    secs, unix, TokenGrant, TokenHash, TokenId, TokenInfo, TokenStore, KEEP_EXPIRED,
};

/// Bootstrap tokens (hashed) in the admin plane's PostgreSQL database.
#[derive(Debug)]
pub struct PgTokenStore {
    store: PgStore,
}

fn error(detail: impl std::fmt::Display) -> AdminError {
    AdminError::TokenStore {
        path: "postgres".to_owned(),
        detail: detail.to_string(),
    }
}

fn db_error(e: postgres::Error) -> AdminError {
    error(pg_error(&e))
}

fn time(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

impl PgTokenStore {
    pub(crate) fn new(store: PgStore) -> Self {
        Self { store }
    }

    fn conn(&self) -> Result<PgConn, AdminError> {
        self.store.conn().map_err(error)
    }
}

impl TokenStore for PgTokenStore {
    fn insert(
        &self,
        hash: &TokenHash,
        grant: &TokenGrant,
        now: SystemTime,
    ) -> Result<(), AdminError> {
        let mut conn = self.conn()?;
        conn.execute(
            "DELETE FROM bootstrap_tokens WHERE expires_at < $1",
            &[&unix(now).saturating_sub(secs(KEEP_EXPIRED))],
        )
        .map_err(db_error)?;
        conn.execute(
            "INSERT INTO bootstrap_tokens (hash, id, tenant, spiffe_id, created_at, expires_at,
             created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &hash.as_bytes(),
                &grant.id.as_str(),
                &grant.tenant.as_str(),
                &grant.spiffe_id,
                &unix(now),
                &unix(grant.expires_at),
                &grant.created_by,
            ],
        )
        .map_err(db_error)?;
        Ok(())
    }

    fn consume(&self, hash: &TokenHash, now: SystemTime) -> Result<Option<TokenGrant>, AdminError> {
        let row = self
            .conn()?
            .query_opt(
                "UPDATE bootstrap_tokens SET used_at = $2
                 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2
                 RETURNING id, tenant, spiffe_id, expires_at, created_by",
                &[&hash.as_bytes(), &unix(now)],
            )
            .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get(0).map_err(db_error)?;
        let tenant: String = row.try_get(1).map_err(db_error)?;
        let tenant: TenantId = tenant
            .parse()
            .map_err(|e| error(format!("token {id}: stored tenant: {e}")))?;
        Ok(Some(TokenGrant {
            tenant,
            spiffe_id: row.try_get(2).map_err(db_error)?,
            expires_at: time(row.try_get(3).map_err(db_error)?),
            created_by: row.try_get(4).map_err(db_error)?,
            id: TokenId::stored(id),
        }))
    }

    fn release(&self, hash: &TokenHash) -> Result<(), AdminError> {
        self.conn()?
            .execute(
                "UPDATE bootstrap_tokens SET used_at = NULL WHERE hash = $1",
                &[&hash.as_bytes()],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn list(&self, tenant: &TenantId, now: SystemTime) -> Result<Vec<TokenInfo>, AdminError> {
        let rows = self
            .conn()?
            .query(
                "SELECT id, spiffe_id, created_at, expires_at, used_at FROM bootstrap_tokens
                 WHERE tenant = $1 ORDER BY created_at DESC LIMIT 1000",
                &[&tenant.as_str()],
            )
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let expires_at: i64 = r.try_get(3).map_err(db_error)?;
                let used: Option<i64> = r.try_get(4).map_err(db_error)?;
                Ok(TokenInfo {
                    id: r.try_get(0).map_err(db_error)?,
                    spiffe_id: r.try_get(1).map_err(db_error)?,
                    created_at: time(r.try_get(2).map_err(db_error)?),
                    expires_at: time(expires_at),
                    status: match used {
                        Some(_) => "used",
                        None if expires_at <= unix(now) => "expired",
                        None => "unused",
                    },
                })
            })
            .collect()
    }

    fn revoke(&self, tenant: &TenantId, id: &str) -> Result<bool, AdminError> {
        if id.contains('\0') {
            // No stored id has a NUL (PostgreSQL text holds none): no such token.
            return Ok(false);
        }
        let deleted = self
            .conn()?
            .execute(
                "DELETE FROM bootstrap_tokens WHERE tenant = $1 AND id = $2",
                &[&tenant.as_str(), &id],
            )
            .map_err(db_error)?;
        Ok(deleted > 0)
    }
}
