//! The inventory store's behaviour, written once and run against every backend: the SQLite
//! store's unit tests and the admin plane's PostgreSQL store tests call these on a fresh, empty
//! store.
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::time::{Duration, SystemTime};

use super::{
    CertRecord, CertStatus, InventoryFilter, InventoryStore, NewCertRecord, RevocationScope,
};
use crate::crl::RevocationReason;
use crate::ids::Serial;
use crate::CaError;

pub fn record(serial: &str, tenant: &str, not_after: SystemTime) -> NewCertRecord {
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
        renewed_from: None,
        region: None,
    }
}

pub fn renewal(serial: &str, of: &str, not_after: SystemTime) -> NewCertRecord {
    NewCertRecord {
        renewed_from: Some(of.parse().unwrap()),
        ..record(serial, "a", not_after)
    }
}

fn serials(records: &[CertRecord]) -> Vec<String> {
    records.iter().map(|r| r.serial.to_string()).collect()
}

/// Filters, revocation, the revoked list and the CRL number.
pub fn filters_revokes_and_counts(inv: &dyn InventoryStore) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let h = Duration::from_secs(3600);
    inv.record_issued(&record("01", "a", now + h)).unwrap();
    let regional = NewCertRecord {
        region: Some("eu-west".to_owned()),
        ..record("02", "a", now + 10 * h)
    };
    inv.record_issued(&regional).unwrap();
    let region = |serial: &str| {
        let serial = serial.parse().unwrap();
        inv.get(&serial, now).unwrap().unwrap().region
    };
    assert_eq!(
        (region("01"), region("02").as_deref()),
        (None, Some("eu-west"))
    );
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
    let lineage = RevocationScope::Lineage;
    let rec = inv
        .revoke(&serial, RevocationReason::KeyCompromise, lineage, now)
        .unwrap();
    assert_eq!(rec.certificate.status, CertStatus::Revoked);
    assert_eq!(serials(&rec.revoked), vec!["02"]);
    assert!(matches!(
        inv.revoke(&serial, RevocationReason::Superseded, lineage, now),
        Err(CaError::AlreadyRevoked { .. })
    ));
    assert!(matches!(
        inv.revoke(
            &"ff".parse().unwrap(),
            RevocationReason::Superseded,
            lineage,
            now
        ),
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

/// Lineage: revoking a certificate revokes its renewals unless `OnlyThis`; renewals of a
/// revoked or unknown certificate are refused.
pub fn revoking_a_certificate_revokes_its_renewals_unless_only_this(inv: &dyn InventoryStore) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let later = now + Duration::from_secs(3600);
    // 01 -> 02 -> 04, 01 -> 03; 05 unrelated.
    inv.record_issued(&record("01", "a", later)).unwrap();
    inv.record_issued(&renewal("02", "01", later)).unwrap();
    inv.record_issued(&renewal("03", "01", later)).unwrap();
    inv.record_issued(&renewal("04", "02", later)).unwrap();
    inv.record_issued(&record("05", "a", later)).unwrap();
    let got = inv.get(&"04".parse().unwrap(), now).unwrap().unwrap();
    assert_eq!(got.renewed_from.unwrap().to_string(), "02");

    let reason = RevocationReason::KeyCompromise;
    let revoke = |serial: &str, scope| inv.revoke(&serial.parse().unwrap(), reason, scope, now);
    let only = revoke("02", RevocationScope::OnlyThis).unwrap();
    assert_eq!(serials(&only.revoked), vec!["02"]);
    // 02 is revoked already, its renewal 04 is not: revoking 02's lineage revokes 04.
    let rest = revoke("02", RevocationScope::Lineage).unwrap();
    assert_eq!(serials(&rest.revoked), vec!["04"]);
    assert_eq!(rest.certificate.serial.to_string(), "02");
    // Each after the certificate it renewed; those already revoked are not listed again.
    let all = revoke("01", RevocationScope::Lineage).unwrap();
    assert_eq!(serials(&all.revoked), vec!["01", "03"]);
    assert!(all.revoked.iter().all(|r| r.status == CertStatus::Revoked));
    assert_eq!(inv.list_revoked(now).unwrap().len(), 4, "05 stays valid");
    assert!(matches!(
        revoke("01", RevocationScope::Lineage),
        Err(CaError::AlreadyRevoked { .. })
    ));

    // A renewal of a revoked or unknown certificate is not recorded (a renewal racing a
    // revocation is decided inside the store's transaction).
    for parent in ["01", "ee"] {
        let err = inv
            .record_issued(&renewal("06", parent, later))
            .unwrap_err();
        assert!(
            matches!(&err, CaError::Refused(r) if r.code() == "not_renewable"),
            "{err}"
        );
    }
    assert!(inv.get(&"06".parse().unwrap(), now).unwrap().is_none());
}

/// 8 threads recording at once: each record gets its own outcome (a refused renewal or a
/// duplicate serial fails alone), every other record is written.
pub fn concurrent_issuances_each_with_its_own_outcome(inv: &dyn InventoryStore) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let later = now + Duration::from_secs(3600);
    inv.record_issued(&record("0a", "a", later)).unwrap();
    inv.revoke(
        &"0a".parse().unwrap(),
        RevocationReason::KeyCompromise,
        RevocationScope::OnlyThis,
        now,
    )
    .unwrap();
    // 8 threads x 50 records, and among them renewals of the revoked 0a and a duplicate serial:
    // those fail alone, every other record is written.
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                scope.spawn(move || {
                    (0..50u32)
                        .map(|i| {
                            let serial = format!("{:04x}", 0x1000 + t * 100 + i);
                            let r = match i {
                                7 => renewal(&serial, "0a", later),
                                9 => record("0a", "a", later),
                                _ => record(&serial, "a", later),
                            };
                            inv.record_issued(&r).is_ok()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut written = 0;
        for t in threads {
            let outcomes = t.join().unwrap();
            assert!(!outcomes[7] && !outcomes[9], "{outcomes:?}");
            written += outcomes.iter().filter(|ok| **ok).count();
        }
        assert_eq!(written, 8 * 48);
    });
    let all = inv
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

/// Hostile values (quotes, SQL and LIKE metacharacters, NUL bytes, very long identities) are
/// stored and read back intact or refused with an error, never a panic; the store goes on.
pub fn hostile_values_are_kept_intact_or_refused(inv: &dyn InventoryStore) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let later = now + Duration::from_secs(3600);
    let long = format!("spiffe://t/{}", "x".repeat(64 * 1024));
    let hostile = [
        "O=a'; DROP TABLE certificates; --".to_owned(),
        "O=\"quoted\" \\ back".to_owned(),
        "O=%_*?[]".to_owned(),
        "O=nul\0byte".to_owned(),
        "O=ünïcödé ✓".to_owned(),
        long,
    ];
    for (i, value) in hostile.iter().enumerate() {
        let serial = format!("7{i:03x}");
        let r = NewCertRecord {
            subject: value.clone(),
            requester: value.clone(),
            profile: value.clone(),
            sans: vec![format!("URI:{value}")],
            ..record(&serial, "a", later)
        };
        match inv.record_issued(&r) {
            Ok(()) => {
                let got = inv.get(&r.serial, now).unwrap().unwrap();
                assert_eq!(
                    (&got.subject, &got.requester, &got.profile, &got.sans),
                    (&r.subject, &r.requester, &r.profile, &r.sans),
                    "value {i} read back changed"
                );
                let found = inv
                    .list(
                        &InventoryFilter {
                            identity: Some(value.clone()),
                            ..Default::default()
                        },
                        now,
                    )
                    .unwrap();
                assert_eq!(serials(&found), vec![serial.clone()], "value {i}");
            }
            Err(e) => assert!(
                value.contains('\0'),
                "value {i} refused though storable: {e}"
            ),
        }
    }
    // Metacharacters match only themselves.
    for pattern in [
        "%",
        "_",
        "*",
        "'",
        "\0",
        "O=%_*?[]".trim_start_matches("O="),
    ] {
        let found = inv
            .list(
                &InventoryFilter {
                    identity: Some(pattern.to_owned()),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert!(
            found.is_empty(),
            "{pattern:?} matched {:?}",
            serials(&found)
        );
    }
    inv.record_issued(&record("7fff", "a", later)).unwrap();
    assert!(inv
        .get(&"7fff".parse::<Serial>().unwrap(), now)
        .unwrap()
        .is_some());
}
