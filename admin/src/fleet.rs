//! The CA's revocations published to the fleet (etcd) for every gateway: each revocation is
//! written to the spool on the revoking thread (after the inventory holds it), and the spool's
//! publisher thread puts it into etcd, retrying while etcd is unreachable.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use portcullis_ca::{CertRecord, RevocationSink};
use portcullis_fleet::{EtcdStore, FleetStatus, RevocationSpool, RevokedEntry};

use crate::config::FleetConfig;
use crate::error::AdminError;

/// Hands every revocation to the spool.
#[derive(Debug)]
struct SpooledRevocations {
    spool: Arc<RevocationSpool>,
}

impl RevocationSink for SpooledRevocations {
    fn revoked(&self, records: &[CertRecord]) {
        let now = SystemTime::now();
        let entries: Vec<RevokedEntry> = records
            .iter()
            .map(|r| {
                RevokedEntry::new(
                    r.serial.clone(),
                    r.tenant.clone(),
                    r.not_after,
                    r.revoked_at.unwrap_or(now),
                )
            })
            .collect();
        // The revocation stands locally (inventory, CRL) whatever happens here.
        if let Err(e) = self.spool.add(&entries) {
            let serials: Vec<String> = records.iter().map(|r| r.serial.to_string()).collect();
            tracing::error!(error = %e, fleet.serials = ?serials, "fleet: revocation not spooled for etcd; it is on the CRL only");
        }
    }
}

/// Opens the spool (`fleet.spool`, else `STATE/fleet-spool`), starts its publisher, and
/// returns the status to report and the sink to give the CA.
pub(crate) fn start(
    config: &FleetConfig,
    state_dir: &Path,
) -> Result<(Arc<FleetStatus>, Arc<dyn RevocationSink>), AdminError> {
    let invalid = |detail: String| AdminError::Config {
        path: "(admin config) fleet".to_owned(),
        detail,
    };
    let settings = config.settings().map_err(invalid)?;
    let status = Arc::new(FleetStatus::default());
    let dir = config
        .spool
        .clone()
        .unwrap_or_else(|| state_dir.join("fleet-spool"));
    let spool =
        RevocationSpool::open(&dir, Arc::clone(&status)).map_err(|e| invalid(e.to_string()))?;
    let store = EtcdStore::new(settings.clone()).map_err(|e| invalid(e.to_string()))?;
    spool
        .spawn_publisher(Arc::new(store))
        .map_err(|e| invalid(e.to_string()))?;
    tracing::info!(
        fleet.endpoints = ?settings.endpoints,
        fleet.prefix = %settings.prefix,
        fleet.spool = %dir.display(),
        fleet.spooled = status.figures().spooled,
        "revocations are published to the fleet's etcd"
    );
    Ok((status, Arc::new(SpooledRevocations { spool })))
}

/// The sink of a CA opened by `portcullis ca` on the command line: when the CA's state folder
/// has the default spool (`STATE/fleet-spool`, made by an admin server with `fleet:`), its
/// revocations are spooled there, and that admin server's publisher puts them into etcd (it
/// reads the folder every second). `None` without the folder.
pub fn cli_revocation_sink(state_dir: &Path) -> Option<Arc<dyn RevocationSink>> {
    let dir = state_dir.join("fleet-spool");
    if !dir.is_dir() {
        return None;
    }
    match RevocationSpool::open(&dir, Arc::new(FleetStatus::default())) {
        Ok(spool) => Some(Arc::new(SpooledRevocations { spool })),
        Err(e) => {
            tracing::error!(error = %e, "fleet: spool unusable; this revocation is on the CRL only");
            None
        }
    }
}
