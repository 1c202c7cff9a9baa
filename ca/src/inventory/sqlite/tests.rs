use std::time::Duration;

use super::*;
use crate::inventory::conformance::{self, renewal};

fn store() -> (tempfile::TempDir, SqliteInventory) {
    let dir = tempfile::tempdir().unwrap();
    let inv = SqliteInventory::open(&dir.path().join("inv.sqlite3")).unwrap();
    (dir, inv)
}

fn serials(records: &[CertRecord]) -> Vec<String> {
    records.iter().map(|r| r.serial.to_string()).collect()
}

#[test]
fn filters_revokes_and_counts() {
    conformance::filters_revokes_and_counts(&store().1);
}

#[test]
fn revoking_a_certificate_revokes_its_renewals_unless_only_this() {
    conformance::revoking_a_certificate_revokes_its_renewals_unless_only_this(&store().1);
}

#[test]
fn hostile_values_are_kept_intact_or_refused() {
    conformance::hostile_values_are_kept_intact_or_refused(&store().1);
}

#[test]
fn an_inventory_from_before_lineage_and_regions_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    {
        let conn = Connection::open(&path).unwrap();
        let old_schema = SCHEMA.replace(
            ",\n    renewed_from      TEXT,\n    region            TEXT",
            "",
        );
        assert_ne!(old_schema, SCHEMA);
        conn.execute_batch(&old_schema).unwrap();
        conn.execute(
            "INSERT INTO certificates (serial, subject, sans, tenant, profile, requester, \
             not_before, not_after, cert_der) VALUES ('0a', 'O=a', '[]', 'a', 'p', 'x', \
             1, 2000000000, x'00')",
            [],
        )
        .unwrap();
    }
    // Opened twice: the columns are added once.
    for _ in 0..2 {
        let inv = SqliteInventory::open(&path).unwrap();
        let old = inv.get(&"0a".parse().unwrap(), now).unwrap().unwrap();
        assert_eq!(
            (old.status, old.renewed_from, old.region),
            (CertStatus::Valid, None, None)
        );
    }
    let inv = SqliteInventory::open(&path).unwrap();
    let later = now + Duration::from_secs(3600);
    let regional = NewCertRecord {
        region: Some("eu".to_owned()),
        ..renewal("0b", "0a", later)
    };
    inv.record_issued(&regional).unwrap();
    let got = inv.get(&"0b".parse().unwrap(), now).unwrap().unwrap();
    assert_eq!(got.region.as_deref(), Some("eu"));
    let all = inv
        .revoke(
            &"0a".parse().unwrap(),
            RevocationReason::KeyCompromise,
            RevocationScope::Lineage,
            now,
        )
        .unwrap();
    assert_eq!(serials(&all.revoked), vec!["0a", "0b"]);
}

#[test]
fn concurrent_issuances_are_group_committed_each_with_its_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inv.sqlite3");
    let inv = SqliteInventory::open(&path).unwrap();
    conformance::concurrent_issuances_each_with_its_own_outcome(&inv);
    // Durable: a fresh connection reads every row.
    drop(inv);
    let reopened = SqliteInventory::open(&path).unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let all = reopened
        .list(
            &InventoryFilter {
                limit: Some(10_000),
                ..InventoryFilter::default()
            },
            now,
        )
        .unwrap();
    assert_eq!(all.len(), 8 * 48 + 1);
}
