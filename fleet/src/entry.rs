//! One revocation as etcd holds it: the key `PREFIX/revoked/TENANT/SERIAL` and a JSON value
//! naming the same tenant and serial, with the certificate's `not_after` (after which the entry
//! is of no use and is dropped). Read from etcd as outsider input: bounded, checked against
//! its key, and refused whole when anything is off.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_identity::{Serial, TenantId};
use serde::{Deserialize, Serialize};

/// 9999-12-31T23:59:59Z, the latest expiry an entry can name.
const LAST_SECOND: u64 = 253_402_300_799;

/// Largest value accepted from etcd.
pub const MAX_ENTRY_BYTES: usize = 4096;

/// A revoked certificate, fleet-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedEntry {
    pub serial: Serial,
    pub tenant: TenantId,
    /// The certificate's expiry, Unix seconds.
    pub not_after: u64,
    /// When it was revoked, Unix seconds.
    pub revoked_at: u64,
}

impl RevokedEntry {
    /// A revocation of `serial` (of `tenant`, valid until `not_after`) made at `revoked_at`.
    pub fn new(
        serial: Serial,
        tenant: TenantId,
        not_after: SystemTime,
        revoked_at: SystemTime,
    ) -> Self {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self {
            serial,
            tenant,
            not_after: secs(not_after),
            revoked_at: secs(revoked_at),
        }
    }

    /// The certificate's expiry.
    pub fn expires(&self) -> SystemTime {
        // The value comes from etcd: a `not_after` past what a clock holds is the year 9999.
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.not_after.min(LAST_SECOND)))
            .unwrap_or(UNIX_EPOCH)
    }

    /// Whether the certificate has expired at `now` (the entry is then of no use).
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires() < now
    }
}

/// Where every revocation lives: `PREFIX/revoked/`.
pub fn revoked_prefix(prefix: &str) -> String {
    format!("{prefix}/revoked/")
}

/// The key of one revocation.
pub fn revoked_key(prefix: &str, entry: &RevokedEntry) -> String {
    format!(
        "{}{}/{}",
        revoked_prefix(prefix),
        entry.tenant,
        entry.serial
    )
}

/// Reads one key and value from etcd under `prefix`; any problem is a message naming it (the
/// entry is then ignored and counted, never half-used).
pub fn parse_entry(prefix: &str, key: &[u8], value: &[u8]) -> Result<RevokedEntry, String> {
    let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
    let shown: String = key.chars().take(120).collect();
    let rest = key
        .strip_prefix(&revoked_prefix(prefix))
        .ok_or_else(|| format!("key {shown:?} is not under the revocation prefix"))?;
    let (tenant, serial) = rest
        .split_once('/')
        .ok_or_else(|| format!("key {shown:?} is not TENANT/SERIAL"))?;
    let tenant: TenantId = tenant
        .parse()
        .map_err(|e| format!("key {shown:?}: tenant: {e}"))?;
    let serial: Serial = serial
        .parse()
        .map_err(|e| format!("key {shown:?}: serial: {e}"))?;
    if value.len() > MAX_ENTRY_BYTES {
        return Err(format!("key {shown:?}: value of {} bytes", value.len()));
    }
    let entry: RevokedEntry =
        serde_json::from_slice(value).map_err(|e| format!("key {shown:?}: value: {e}"))?;
    if entry.serial != serial || entry.tenant != tenant {
        return Err(format!(
            "key {shown:?}: the value names {}/{}, not the key's",
            entry.tenant, entry.serial
        ));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> RevokedEntry {
        RevokedEntry {
            serial: "0a1b2c".parse().expect("serial"),
            tenant: "acme".parse().expect("tenant"),
            not_after: 4_000_000_000,
            revoked_at: 1_700_000_000,
        }
    }

    #[test]
    fn an_entry_reads_back_from_its_key_and_value() {
        let e = entry();
        let key = revoked_key("/p", &e);
        assert_eq!(key, "/p/revoked/acme/0a1b2c");
        let value = serde_json::to_vec(&e).expect("json");
        assert_eq!(parse_entry("/p", key.as_bytes(), &value), Ok(e));
    }

    #[test]
    fn any_expiry_reads_without_overflow() {
        let mut e = entry();
        e.not_after = u64::MAX;
        assert!(!e.expired(SystemTime::now()));
        e.not_after = 0;
        assert!(e.expired(SystemTime::now()));
    }

    #[test]
    fn malformed_entries_are_refused() {
        let e = entry();
        let value = serde_json::to_vec(&e).expect("json");
        let key = revoked_key("/p", &e);
        for (key, value) in [
            (key.as_bytes().to_vec(), b"garbage".to_vec()),
            (key.as_bytes().to_vec(), b"{}".to_vec()),
            (b"/p/revoked/acme/zz".to_vec(), value.clone()),
            (b"/p/revoked/acme".to_vec(), value.clone()),
            (b"/p/revoked/ACME!/0a1b2c".to_vec(), value.clone()),
            (b"/p/revoked/other/0a1b2c".to_vec(), value.clone()),
            (b"/p/revoked/acme/0a1b2d".to_vec(), value.clone()),
            (b"/q/revoked/acme/0a1b2c".to_vec(), value.clone()),
            (vec![0xff, 0xfe], value.clone()),
            (key.as_bytes().to_vec(), vec![b' '; MAX_ENTRY_BYTES + 1]),
        ] {
            assert!(parse_entry("/p", &key, &value).is_err(), "{key:?}");
        }
    }
}
