//! The embedded inventory: one SQLite file in the CA state directory. Files made before
//! lineage was recorded are given the `renewed_from` column when opened.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::group_commit::GroupCommit;
use super::{
    format_time, from_unix_seconds, unix_seconds, CertRecord, CertStatus, InventoryFilter,
    InventoryStore, NewCertRecord, Revocation, RevocationScope,
};
use crate::crl::RevocationReason;
use crate::ids::{Serial, TenantId};
use crate::profile::IssueRefusal;
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
    revocation_reason INTEGER,
    renewed_from      TEXT,
    region            TEXT
);
CREATE INDEX IF NOT EXISTS certificates_tenant ON certificates (tenant, not_after);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('crl_number', 0);
";

/// Run after [`SCHEMA`], once `renewed_from` exists.
const LINEAGE_INDEX: &str = "CREATE INDEX IF NOT EXISTS certificates_renewed_from \
                             ON certificates (renewed_from) WHERE renewed_from IS NOT NULL";

/// A certificate and every renewal descending from it, each after the one it renewed (the
/// recursive query's queue is first in, first out; UNION visits each serial once).
const LINEAGE: &str = "WITH RECURSIVE lineage(serial) AS (
    SELECT ?1
    UNION
    SELECT c.serial FROM certificates c JOIN lineage l ON c.renewed_from = l.serial
) SELECT serial FROM lineage";

/// [`LINEAGE`] with each certificate's distance from the one named, for ordering.
const LINEAGE_ROWS: &str = "WITH RECURSIVE lineage(serial, depth) AS (
    SELECT ?1, 0
    UNION
    SELECT c.serial, l.depth + 1 FROM certificates c JOIN lineage l ON c.renewed_from = l.serial
)";

const COLUMNS: &str = "serial, subject, sans, tenant, profile, requester, not_before, not_after, \
                       revoked_at, revocation_reason, renewed_from, region";

/// The inventory in a SQLite file (WAL, synchronous FULL: a recorded issuance survives a crash).
///
/// Issuances are group-committed ([`GroupCommit`]): one transaction, so one WAL fsync, a batch.
///
/// Reads go through a connection of their own: under WAL they see every committed write and
/// never wait for a commit's fsync.
pub struct SqliteInventory {
    conn: Mutex<Connection>,
    reader: Mutex<Connection>,
    commits: GroupCommit,
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
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        add_lineage(&mut conn).map_err(err)?;
        let reader = Connection::open(path).map_err(err)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        Ok(Self {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            commits: GroupCommit::default(),
            path: shown,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Gives an inventory made before lineage was recorded its `renewed_from` column (NULL for the
/// certificates already there: their lineage is unknown). In a write transaction, so two
/// processes opening one old file at once add it once.
fn add_lineage(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let present = tx
        .prepare("SELECT 1 FROM pragma_table_info('certificates') WHERE name = 'renewed_from'")?
        .exists([])?;
    if !present {
        tx.execute_batch("ALTER TABLE certificates ADD COLUMN renewed_from TEXT")?;
    }
    // And its `region` column, for inventories made before regions (NULL: no region).
    let region = tx
        .prepare("SELECT 1 FROM pragma_table_info('certificates') WHERE name = 'region'")?
        .exists([])?;
    if !region {
        tx.execute_batch("ALTER TABLE certificates ADD COLUMN region TEXT")?;
    }
    tx.execute_batch(LINEAGE_INDEX)?;
    tx.commit()
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
    renewed_from: Option<String>,
    region: Option<String>,
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
            renewed_from: row.get(10)?,
            region: row.get(11)?,
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
            renewed_from: self
                .renewed_from
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| corrupt("renewed_from"))?,
            region: self.region.clone(),
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

/// Writes a batch in one transaction, each record under its own savepoint (a refused renewal
/// or a duplicate serial fails alone).
fn write_batch(
    conn: &mut Connection,
    batch: &[&NewCertRecord],
) -> Result<Vec<Result<(), CaError>>, CaError> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let mut results = Vec::with_capacity(batch.len());
    for record in batch {
        let mut sp = tx.savepoint().map_err(db_error)?;
        let result = insert(&sp, record);
        if result.is_ok() {
            sp.commit().map_err(db_error)?;
        } else {
            sp.rollback().map_err(db_error)?;
        }
        results.push(result);
    }
    tx.commit().map_err(db_error)?;
    Ok(results)
}

/// Inserts one issued certificate; a renewal only while the certificate it renews is there and
/// not revoked.
fn insert(tx: &Connection, r: &NewCertRecord) -> Result<(), CaError> {
    let sans = serde_json::to_string(&r.sans)
        .map_err(|e| CaError::Inventory(format!("encode SANs: {e}")))?;
    if let Some(parent) = &r.renewed_from {
        let revoked_at: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM certificates WHERE serial = ?1",
                [parent.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_error)?;
        let why = match revoked_at {
            None => Some("it is not in the inventory"),
            Some(Some(_)) => Some("it has been revoked"),
            Some(None) => None,
        };
        if let Some(why) = why {
            return Err(CaError::Refused(IssueRefusal::NotRenewable {
                serial: parent.to_string(),
                why: why.to_owned(),
            }));
        }
    }
    tx.execute(
        "INSERT INTO certificates (serial, subject, sans, tenant, profile, requester, \
         not_before, not_after, cert_der, renewed_from, region) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            r.serial.to_string(),
            r.subject,
            sans,
            r.tenant.as_str(),
            r.profile,
            r.requester,
            unix_seconds(r.not_before),
            unix_seconds(r.not_after),
            r.cert_der,
            r.renewed_from.as_ref().map(ToString::to_string),
            r.region,
        ],
    )
    .map_err(db_error)
    .map(|_| ())
}

impl InventoryStore for SqliteInventory {
    fn record_issued(&self, r: &NewCertRecord) -> Result<(), CaError> {
        self.commits
            .record(r, |batch| write_batch(&mut self.conn(), batch))
    }

    fn get(&self, serial: &Serial, now: SystemTime) -> Result<Option<CertRecord>, CaError> {
        let sql = format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1");
        let serial = serial.to_string();
        Ok(query(&self.reader(), &sql, &[&serial], unix_seconds(now))?
            .into_iter()
            .next())
    }

    fn lineage(&self, serial: &Serial, now: SystemTime) -> Result<Vec<CertRecord>, CaError> {
        let Some(named) = self.get(serial, now)? else {
            return Ok(Vec::new());
        };
        // Up through `renewed_from` (bounded: a loop in a corrupt file ends it), then down.
        let mut ancestors = Vec::new();
        let mut from = named.renewed_from.clone();
        while let Some(parent) = from {
            if ancestors.len() >= 10_000 {
                break;
            }
            match self.get(&parent, now)? {
                Some(record) => {
                    from = record.renewed_from.clone();
                    ancestors.push(record);
                }
                None => break,
            }
        }
        ancestors.reverse();
        let sql = format!(
            "{LINEAGE_ROWS} SELECT {COLUMNS} FROM certificates JOIN lineage USING (serial) \
             ORDER BY lineage.depth, not_before"
        );
        let serial = serial.to_string();
        ancestors.extend(query(&self.reader(), &sql, &[&serial], unix_seconds(now))?);
        Ok(ancestors)
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
        if let Some(identity) = &filter.identity {
            // SANs are stored as a JSON array of `URI:…`, `DNS:…`, `IP:…` strings.
            for prefix in ["URI:", "DNS:", "IP:"] {
                args.push(Box::new(format!("{prefix}{identity}")));
            }
            let n = args.len();
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM json_each(sans) WHERE value IN (?{}, ?{}, ?{n}))",
                n - 2,
                n - 1
            ));
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
        query(&self.reader(), &sql, &refs, now_s)
    }

    fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        scope: RevocationScope,
        at: SystemTime,
    ) -> Result<Revocation, CaError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        let key = serial.to_string();
        let named: Option<(Option<i64>, Option<u8>)> = tx
            .query_row(
                "SELECT revoked_at, revocation_reason FROM certificates WHERE serial = ?1",
                [&key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(db_error)?;
        let Some((revoked_at, code)) = named else {
            return Err(CaError::UnknownSerial(serial.clone()));
        };
        let in_scope: Vec<String> = match scope {
            RevocationScope::OnlyThis => vec![key],
            RevocationScope::Lineage => tx
                .prepare(LINEAGE)
                .and_then(|mut stmt| {
                    stmt.query_map([&key], |row| row.get(0))?
                        .collect::<Result<_, _>>()
                })
                .map_err(db_error)?,
        };
        let mut now_revoked = Vec::new();
        for s in in_scope {
            let changed = tx
                .execute(
                    "UPDATE certificates SET revoked_at = ?1, revocation_reason = ?2 \
                     WHERE serial = ?3 AND revoked_at IS NULL",
                    params![unix_seconds(at), reason.code(), s],
                )
                .map_err(db_error)?;
            if changed == 1 {
                now_revoked.push(s);
            }
        }
        if now_revoked.is_empty() {
            return Err(CaError::AlreadyRevoked {
                serial: serial.clone(),
                at: format_time(from_unix_seconds(revoked_at.unwrap_or(0))),
                reason: code
                    .and_then(RevocationReason::from_code)
                    .unwrap_or(RevocationReason::Unspecified),
            });
        }
        let now_s = unix_seconds(at);
        let one = |s: &String| -> Result<CertRecord, CaError> {
            let sql = format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1");
            query(&tx, &sql, &[s], now_s)?
                .into_iter()
                .next()
                .ok_or_else(|| CaError::Inventory(format!("serial {s} vanished")))
        };
        let certificate = one(&serial.to_string())?;
        let revoked = now_revoked.iter().map(one).collect::<Result<Vec<_>, _>>()?;
        tx.commit().map_err(db_error)?;
        Ok(Revocation {
            certificate,
            revoked,
        })
    }

    fn list_revoked(&self, now: SystemTime) -> Result<Vec<CertRecord>, CaError> {
        let now_s = unix_seconds(now);
        let sql = format!(
            "SELECT {COLUMNS} FROM certificates WHERE revoked_at IS NOT NULL AND not_after > ?1 \
             ORDER BY revoked_at, serial"
        );
        query(&self.reader(), &sql, &[&now_s], now_s)
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
mod tests;
