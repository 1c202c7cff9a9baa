//! What the CA records about itself: one [`CaEvent`] per issuance, refusal and revocation,
//! handed to the [`CaEventSink`] it was given ([`Ca::with_event_sink`]). The events are built
//! here and nowhere else, so every front end (the CLI, the admin API) records the same facts.
//!
//! [`Ca::with_event_sink`]: crate::Ca::with_event_sink

use std::fmt;

use portcullis_audit::{AuditHandle, CaAction, CaEvent};

use crate::authority::{IssuedCertificate, Requester};
use crate::crl::RevocationReason;
use crate::ids::{Serial, TenantId};
use crate::inventory::CertRecord;

/// Where a [`Ca`](crate::Ca) records what it did. The CA calls [`record`](Self::record) on the
/// thread that issued or revoked, after the fact: it must not block for long, and a sink that
/// cannot record drops the event (and says so); the certificate operation stands.
pub trait CaEventSink: Send + Sync {
    /// Records one event.
    fn record(&self, event: CaEvent);
}

/// Where a [`Ca`](crate::Ca) hands every certificate it revoked, after the inventory holds the
/// revocation (and before the CRL is signed): the fleet's revocation set. Called on the
/// revoking thread; it must make the records durable somewhere quickly (a spool) and never
/// fail the revocation, which stands whatever the sink does.
pub trait RevocationSink: Send + Sync {
    /// The certificates one revocation revoked (the one named and its renewals).
    fn revoked(&self, records: &[CertRecord]);
}

/// The audit log, appended to without waiting: a full queue drops the event (the log counts
/// it), never blocking the CA.
impl CaEventSink for AuditHandle {
    fn record(&self, event: CaEvent) {
        if let Err(e) = self.try_append(event) {
            tracing::warn!(error = %e, "CA event not recorded in the audit log");
        }
    }
}

/// A certificate was issued; a renewal says which certificate it renews.
pub(crate) fn issued(requester: &Requester, cert: &IssuedCertificate) -> CaEvent {
    CaEvent {
        action: CaAction::Issue,
        requester: requester.to_string(),
        subject: cert
            .spiffe_id
            .clone()
            .or_else(|| cert.dns_names.first().cloned()),
        serial: Some(cert.serial.to_string()),
        profile: Some(cert.profile.clone()),
        reason: cert
            .renewed_from
            .as_ref()
            .map(|from| format!("renewal of {from}")),
        tenant: Some(cert.tenant.to_string()),
    }
}

/// An issuance was refused; `reason` reads `"<code>: <why>"`.
pub(crate) fn refused(
    requester: &Requester,
    tenant: Option<&TenantId>,
    subject: Option<String>,
    profile: Option<&str>,
    code: &str,
    why: &dyn fmt::Display,
) -> CaEvent {
    CaEvent {
        action: CaAction::Refuse,
        requester: requester.to_string(),
        subject,
        serial: None,
        profile: profile.map(str::to_owned),
        reason: Some(format!("{code}: {why}")),
        tenant: tenant.map(ToString::to_string),
    }
}

/// A certificate was revoked, as `named` or as one of its renewals. The subject is its SPIFFE
/// ID, else its subject name.
pub(crate) fn revoked(
    requester: &Requester,
    record: &CertRecord,
    reason: RevocationReason,
    named: &Serial,
) -> CaEvent {
    CaEvent {
        action: CaAction::Revoke,
        requester: requester.to_string(),
        subject: record
            .sans
            .iter()
            .find_map(|s| s.strip_prefix("URI:").map(str::to_owned))
            .or_else(|| Some(record.subject.clone())),
        serial: Some(record.serial.to_string()),
        profile: Some(record.profile.clone()),
        reason: Some(if record.serial == *named {
            reason.to_string()
        } else {
            format!("{reason} (a renewal of {named}, revoked with it)")
        }),
        tenant: Some(record.tenant.to_string()),
    }
}

/// The name a refused CSR asked for, for the record: its first URI SAN, else its first DNS
/// SAN; None when nothing can be read.
pub(crate) fn csr_subject(csr: &[u8]) -> Option<String> {
    let names = crate::csr::requested_names(csr)?;
    names.uris.into_iter().chain(names.dns_names).next()
}
