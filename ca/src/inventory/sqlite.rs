//! The embedded inventory: one SQLite file in the CA state directory.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    format_time, from_unix_seconds, unix_seconds, CertRecord, CertStatus, InventoryFilter,
    InventoryStore, NewCertRecord,
};
use crate::crl::RevocationReason;
use crate::ids::{Serial, TenantId};
use crate::CaError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS certificates (
    serial            TEXT PRIMARY KEY,
    subject           TEXT NOT NULL,
    sans              TEXT NOT NULL,
    tenant            TEXT NOT NULL,
    profile           TEXT NOT NULL,
    requester         TEXT NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    cert_der          BLOB NOT NULL,
    revoked_at        INTEGER,
    revocation_reason INTEGER
);
CREATE INDEX IF NOT EXISTS certificates_tenant ON certificates (tenant, not_after);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('crl_number', 0);
";

const COLUMNS: &str = "serial, subject, sans, tenant, profile, requester, not_before, not_after, \
                       revoked_at, revocation_reason";

/// The inventory in a SQLite file (WAL, synchronous FULL: a recorded issuance survives a crash).
pub struct SqliteInventory {
    conn: Mutex<Connection>,
    path: String,
}

impl std::fmt::Debug for SqliteInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteInventory")
            .field("path", &self.path)
            .finish()
    }
}

fn db_error(e: rusqlite::Error) -> CaError {
    CaError::Inventory(e.to_string())
}

impl SqliteInventory {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, CaError> {
        let shown = path.display().to_string();
        let err = |e: rusqlite::Error| CaError::Inventory(format!("{shown}: {e}"));
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: shown,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Row {
    serial: String,
    subject: String,
    sans: String,
    tenant: String,
    profile: String,
    requester: String,
    not_before: i64,
    not_after: i64,
    revoked_at: Option<i64>,
    revocation_reason: Option<u8>,
}

impl Row {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            serial: row.get(0)?,
            subject: row.get(1)?,
            sans: row.get(2)?,
            tenant: row.get(3)?,
            profile: row.get(4)?,
            requester: row.get(5)?,
            not_before: row.get(6)?,
            not_after: row.get(7)?,
            revoked_at: row.get(8)?,
            revocation_reason: row.get(9)?,
        })
    }

    fn into_record(self, now: i64) -> Result<CertRecord, CaError> {
        let corrupt = |what: &str| CaError::Inventory(format!("row {}: bad {what}", self.serial));
        let status = if self.revoked_at.is_some() {
            CertStatus::Revoked
        } else if self.not_after <= now {
            CertStatus::Expired
        } else {
            CertStatus::Valid
        };
        Ok(CertRecord {
            serial: self.serial.parse().map_err(|_| corrupt("serial"))?,
            subject: self.subject.clone(),
            sans: serde_json::from_str(&self.sans).map_err(|_| corrupt("sans"))?,
            tenant: self
                .tenant
                .parse::<TenantId>()
                .map_err(|_| corrupt("tenant"))?,
            profile: self.profile.clone(),
            requester: self.requester.clone(),
            not_before: from_unix_seconds(self.not_before),
            not_after: from_unix_seconds(self.not_after),
            status,
            revoked_at: self.revoked_at.map(from_unix_seconds),
            revocation_reason: match self.revocation_reason {
                Some(code) => {
                    Some(RevocationReason::from_code(code).ok_or_else(|| corrupt("reason"))?)
                }
                None => None,
            },
        })
    }
}

fn query(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    now: i64,
) -> Result<Vec<CertRecord>, CaError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_error)?;
    let rows = stmt
        .query_map(params, Row::read)
        .map_err(db_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    rows.into_iter().map(|r| r.into_record(now)).collect()
}

impl InventoryStore for SqliteInventory {
    fn record_issued(&self, r: &NewCertRecord) -> Result<(), CaError> {
        let sans = serde_json::to_string(&r.sans)
            .map_err(|e| CaError::Inventory(format!("encode SANs: {e}")))?;
        self.conn()
            .prepare_cached(
                "INSERT INTO certificates (serial, subject, sans, tenant, profile, requester, \
                 not_before, not_after, cert_der) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    r.serial.to_string(),
                    r.subject,
                    sans,
                    r.tenant.as_str(),
                    r.profile,
                    r.requester,
                    unix_seconds(r.not_before),
                    unix_seconds(r.not_after),
                    r.cert_der,
                ])
            })
            .map_err(db_error)?;
        Ok(())
    }

    fn get(&self, serial: &Serial, now: SystemTime) -> Result<Option<CertRecord>, CaError> {
        let sql = format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1");
        let serial = serial.to_string();
        Ok(query(&self.conn(), &sql, &[&serial], unix_seconds(now))?
            .into_iter()
            .next())
    }

    fn list(&self, filter: &InventoryFilter, now: SystemTime) -> Result<Vec<CertRecord>, CaError> {
        let now_s = unix_seconds(now);
        let mut sql = format!("SELECT {COLUMNS} FROM certificates WHERE 1 = 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(tenant) = &filter.tenant {
            args.push(Box::new(tenant.as_str().to_owned()));
            sql.push_str(&format!(" AND tenant = ?{}", args.len()));
        }
        match filter.status {
            None => {}
            Some(CertStatus::Revoked) => sql.push_str(" AND revoked_at IS NOT NULL"),
            Some(CertStatus::Valid) => {
                args.push(Box::new(now_s));
                sql.push_str(&format!(
                    " AND revoked_at IS NULL AND not_after > ?{}",
                    args.len()
                ));
            }
            Some(CertStatus::Expired) => {
                args.push(Box::new(now_s));
                sql.push_str(&format!(
                    " AND revoked_at IS NULL AND not_after <= ?{}",
                    args.len()
                ));
            }
        }
        if let Some(within) = filter.expires_within {
            let until = now_s.saturating_add(i64::try_from(within.as_secs()).unwrap_or(i64::MAX));
            args.push(Box::new(now_s));
            let lo = args.len();
            args.push(Box::new(until));
            sql.push_str(&format!(
                " AND not_after > ?{lo} AND not_after <= ?{}",
                args.len()
            ));
        }
        let limit = i64::try_from(filter.limit.unwrap_or(1000)).unwrap_or(i64::MAX);
        args.push(Box::new(limit));
        sql.push_str(&format!(
            " ORDER BY not_before DESC, serial LIMIT ?{}",
            args.len()
        ));
        let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.as_ref()).collect();
        query(&self.conn(), &sql, &refs, now_s)
    }

    fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: SystemTime,
    ) -> Result<CertRecord, CaError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        let key = serial.to_string();
        let current: Option<(Option<i64>, Option<u8>)> = tx
            .query_row(
                "SELECT revoked_at, revocation_reason FROM certificates WHERE serial = ?1",
                [&key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(db_error)?;
        match current {
            None => return Err(CaError::UnknownSerial(serial.clone())),
            Some((Some(revoked_at), code)) => {
                return Err(CaError::AlreadyRevoked {
                    serial: serial.clone(),
                    at: format_time(from_unix_seconds(revoked_at)),
                    reason: code
                        .and_then(RevocationReason::from_code)
                        .unwrap_or(RevocationReason::Unspecified),
                })
            }
            Some((None, _)) => {}
        }
        tx.execute(
            "UPDATE certificates SET revoked_at = ?1, revocation_reason = ?2 WHERE serial = ?3",
            params![unix_seconds(at), reason.code(), key],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        drop(conn);
        self.get(serial, at)?
            .ok_or_else(|| CaError::UnknownSerial(serial.clone()))
    }

    fn list_revoked(&self, now: SystemTime) -> Result<Vec<CertRecord>, CaError> {
        let now_s = unix_seconds(now);
        let sql = format!(
            "SELECT {COLUMNS} FROM certificates WHERE revoked_at IS NOT NULL AND not_after > ?1 \
             ORDER BY revoked_at, serial"
        );
        query(&self.conn(), &sql, &[&now_s], now_s)
    }

    fn next_crl_number(&self) -> Result<u64, CaError> {
        let n: i64 = self
            .conn()
            .query_row(
                "UPDATE counters SET value = value + 1 WHERE name = 'crl_number' RETURNING value",
                [],
                |row| row.get(0),
            )
            .map_err(db_error)?;
        u64::try_from(n).map_err(|_| CaError::Inventory("negative CRL number".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(serial: &str, tenant: &str, not_after: SystemTime) -> NewCertRecord {
        NewCertRecord {
            serial: serial.parse().unwrap(),
            subject: "O=t".to_owned(),
            sans: vec!["URI:spiffe://t/x".to_owned()],
            tenant: tenant.parse().unwrap(),
            profile: "p".to_owned(),
            requester: "operator:test".to_owned(),
            not_before: not_after - Duration::from_secs(3600),
            not_after,
            cert_der: vec![1, 2, 3],
        }
    }

    #[test]
    fn filters_revokes_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let inv = SqliteInventory::open(&dir.path().join("inv.sqlite3")).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let h = Duration::from_secs(3600);
        inv.record_issued(&record("01", "a", now + h)).unwrap();
        inv.record_issued(&record("02", "a", now + 10 * h)).unwrap();
        inv.record_issued(&record("03", "b", now - h)).unwrap();
        assert!(
            inv.record_issued(&record("03", "b", now)).is_err(),
            "duplicate serial"
        );

        let list = |f: InventoryFilter| -> Vec<String> {
            inv.list(&f, now)
                .unwrap()
                .into_iter()
                .map(|r| r.serial.to_string())
                .collect()
        };
        assert_eq!(list(InventoryFilter::default()).len(), 3);
        let tenant_a = InventoryFilter {
            tenant: Some("a".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(list(tenant_a), vec!["02", "01"]);
        let expired = InventoryFilter {
            status: Some(CertStatus::Expired),
            ..Default::default()
        };
        assert_eq!(list(expired), vec!["03"]);
        let soon = InventoryFilter {
            expires_within: Some(2 * h),
            ..Default::default()
        };
        assert_eq!(list(soon), vec!["01"]);

        let serial: Serial = "02".parse().unwrap();
        let rec = inv
            .revoke(&serial, RevocationReason::KeyCompromise, now)
            .unwrap();
        assert_eq!(rec.status, CertStatus::Revoked);
        assert!(matches!(
            inv.revoke(&serial, RevocationReason::Superseded, now),
            Err(CaError::AlreadyRevoked { .. })
        ));
        assert!(matches!(
            inv.revoke(&"ff".parse().unwrap(), RevocationReason::Superseded, now),
            Err(CaError::UnknownSerial(_))
        ));
        let revoked = InventoryFilter {
            status: Some(CertStatus::Revoked),
            ..Default::default()
        };
        assert_eq!(list(revoked), vec!["02"]);
        assert_eq!(inv.list_revoked(now).unwrap().len(), 1);
        assert_eq!(inv.list_revoked(now + 11 * h).unwrap().len(), 0);
        let a = inv.next_crl_number().unwrap();
        assert_eq!(inv.next_crl_number().unwrap(), a + 1);
    }
}
