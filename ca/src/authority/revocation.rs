//! Revocation (a certificate and, unless only it, the renewals descending from it) and the
//! CRL: signed in CRL-number order and written atomically to `STATE/crl.pem`.

use std::path::PathBuf;
use std::sync::PoisonError;
use std::time::SystemTime;

use super::{Ca, Requester, RequesterKind};
use crate::crl::{sign_crl, write_atomic, Crl, RevocationReason, RevokedEntry};
use crate::events;
use crate::ids::Serial;
use crate::inventory::{Revocation, RevocationScope};
use crate::key::RcgenSigner;
use crate::CaError;

impl Ca {
    /// [`Ca::revoke_by`] for a caller with no one to name: the events' requester reads
    /// `operator:(unnamed)`. Front ends name who asked with [`Ca::revoke_by`].
    pub fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        scope: RevocationScope,
        now: SystemTime,
    ) -> Result<Revocation, CaError> {
        let unnamed = Requester {
            kind: RequesterKind::Operator,
            id: "(unnamed)".to_owned(),
        };
        self.revoke_by(serial, reason, scope, &unnamed, now)
    }

    /// Revokes a certificate at `requester`'s request (with its renewals, unless `scope` is
    /// [`RevocationScope::OnlyThis`]) and publishes a new CRL to `STATE/crl.pem`.
    /// [`CaError::UnknownSerial`], or [`CaError::AlreadyRevoked`] when nothing in scope was
    /// left to revoke. Records one event per certificate revoked once the inventory holds the
    /// revocation, even if the CRL then cannot be signed (the error says so; the certificates
    /// are revoked all the same).
    pub fn revoke_by(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        scope: RevocationScope,
        requester: &Requester,
        now: SystemTime,
    ) -> Result<Revocation, CaError> {
        let revocation = self.core.inventory.revoke(serial, reason, scope, now)?;
        for record in &revocation.revoked {
            tracing::info!(
                ca.serial = %record.serial,
                tenant.id = %record.tenant,
                ca.requester = %requester,
                revocation.reason = %reason,
                revocation.named = %serial,
                "certificate revoked"
            );
            self.record(|| events::revoked(requester, record, reason, serial));
        }
        if let Some(sink) = &self.revocations {
            sink.revoked(&revocation.revoked);
        }
        self.publish_crl(now)?;
        Ok(revocation)
    }

    /// Signs a new CRL (next CRL number) listing the revoked, unexpired certificates.
    pub fn crl(&self, now: SystemTime) -> Result<Crl, CaError> {
        let _serial = self
            .core
            .crl_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.sign_crl_locked(now)
    }

    fn sign_crl_locked(&self, now: SystemTime) -> Result<Crl, CaError> {
        let revoked: Vec<RevokedEntry> = self
            .core
            .inventory
            .list_revoked(now)?
            .into_iter()
            .map(|r| RevokedEntry {
                serial: r.serial.as_bytes().to_vec(),
                at: r.revoked_at.unwrap_or(now),
                reason: r.revocation_reason.unwrap_or(RevocationReason::Unspecified),
            })
            .collect();
        let number = self.core.inventory.next_crl_number()?;
        sign_crl(
            &self.core.issuer,
            &self.core.issuer_ski,
            number,
            now,
            self.core.crl_next_update,
            &revoked,
        )
        .map_err(RcgenSigner::error)
    }

    /// Signs a new CRL and writes it to `STATE/crl.pem` atomically.
    pub fn publish_crl(&self, now: SystemTime) -> Result<Crl, CaError> {
        let _serial = self
            .core
            .crl_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let crl = self.sign_crl_locked(now)?;
        write_atomic(&self.crl_path(), crl.pem.as_bytes(), 0o644)?;
        tracing::info!(
            crl.number = crl.number,
            crl.revoked = crl.revoked,
            "CRL published"
        );
        Ok(crl)
    }

    /// Where the current CRL is written.
    pub fn crl_path(&self) -> PathBuf {
        self.core.state_dir.join("crl.pem")
    }
}
