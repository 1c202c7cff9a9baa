//! The SVIDs the agent holds for its registered workloads: one slot per entry, each kept
//! current by its own task (a fresh P-256 key and CSR per rotation, asked of the admin API
//! with the node certificate; rotated at half its lifetime; retried with backoff while the
//! current one is kept). Keys live in memory only, never on disk. Every change bumps one
//! generation counter that the Workload API streams watch.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use portcullis_identity::{load_certs, parse_certs, IssuanceRequest};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::config::{AgentConfig, WorkloadEntry};
use crate::node::{backoff, csr_pem, Node};

/// One X.509-SVID with everything a workload receives.
pub(crate) struct Svid {
    pub(crate) spiffe_id: String,
    /// The certificate chain, leaf first, DER concatenated.
    pub(crate) chain_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub(crate) key_der: Zeroizing<Vec<u8>>,
    /// The trust bundle's certificates, DER concatenated.
    pub(crate) bundle_der: Vec<u8>,
    /// `spiffe://` plus the trust domain, the key of bundle maps.
    pub(crate) trust_domain: String,
    pub(crate) not_after: SystemTime,
}

/// The current SVID of every workload entry, and a counter bumped at each change.
pub(crate) struct SvidStore {
    slots: Vec<ArcSwapOption<Svid>>,
    generation: watch::Sender<u64>,
}

impl SvidStore {
    pub(crate) fn new(entries: usize) -> Self {
        Self {
            slots: (0..entries).map(|_| ArcSwapOption::empty()).collect(),
            generation: watch::Sender::new(0),
        }
    }

    /// The SVIDs of `entries`, once every one of them has been issued.
    pub(crate) fn current(&self, entries: &[usize]) -> Option<Vec<Arc<Svid>>> {
        entries
            .iter()
            .map(|&i| self.slots.get(i)?.load_full())
            .collect()
    }

    /// Told of every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Drops entry `entry`'s SVID once it has expired (its renewal failing): a workload is
    /// never handed an expired SVID; new calls wait for the next one.
    fn drop_expired(&self, entry: usize, now: SystemTime) {
        let Some(slot) = self.slots.get(entry) else {
            return;
        };
        if slot.load().as_ref().is_some_and(|s| s.not_after <= now) {
            slot.store(None);
            self.generation.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    fn publish(&self, entry: usize, svid: Svid) {
        if let Some(slot) = self.slots.get(entry) {
            slot.store(Some(Arc::new(svid)));
            self.generation.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// Keeps entry `index`'s SVID current until `stop`.
pub(crate) async fn keep_rotated(
    index: usize,
    config: Arc<AgentConfig>,
    node: Arc<Node>,
    store: Arc<SvidStore>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(entry) = config.workloads.get(index) else {
        return;
    };
    let mut failures = 0u32;
    loop {
        let wait = match issue(entry, &config, &node).await {
            Ok(svid) => {
                failures = 0;
                let now = SystemTime::now();
                let left = svid.not_after.duration_since(now).unwrap_or_default();
                tracing::info!(workload.spiffe_id = %entry.spiffe_id, cert.not_after = %humantime::format_rfc3339_seconds(svid.not_after), "SVID issued");
                store.publish(index, svid);
                // Rotate at half the lifetime left: a workload never holds an SVID near expiry.
                (left / 2).max(Duration::from_secs(1))
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(workload.spiffe_id = %entry.spiffe_id, error = %e, retry_in_s = backoff(failures).as_secs(), "SVID issuance failed; the current one is kept until it expires");
                store.drop_expired(index, SystemTime::now());
                backoff(failures)
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Asks the admin API for a new SVID for `entry`, with a fresh key.
async fn issue(entry: &WorkloadEntry, config: &AgentConfig, node: &Node) -> Result<Svid, String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("key generation: {e}"))?;
    let mut request = IssuanceRequest::new(csr_pem(&key, &entry.spiffe_id, &entry.dns_names)?);
    if let Some(tenant) = &entry.tenant {
        request = request.with_tenant(tenant.clone());
    }
    if let Some(profile) = &entry.profile {
        request = request.with_profile(profile.clone());
    }
    if let Some(lifetime) = config.svid_lifetime {
        request = request.with_lifetime(lifetime);
    }
    let answer = node
        .client()?
        .issue(&request, None)
        .await
        .map_err(|e| e.to_string())?;
    if answer.spiffe_id.as_deref() != Some(entry.spiffe_id.as_str()) {
        return Err(format!(
            "the CA issued SPIFFE ID {:?}, not the one asked for",
            answer.spiffe_id
        ));
    }
    let chain = parse_certs(answer.chain.as_bytes(), "issued chain").map_err(|e| e.to_string())?;
    let bundle = load_certs(&config.admin.ca).map_err(|e| e.to_string())?;
    Ok(Svid {
        spiffe_id: entry.spiffe_id.as_str().to_owned(),
        chain_der: chain
            .iter()
            .flat_map(|c| c.as_ref().iter().copied())
            .collect(),
        key_der: Zeroizing::new(key.serialize_der()),
        bundle_der: bundle
            .iter()
            .flat_map(|c| c.as_ref().iter().copied())
            .collect(),
        trust_domain: format!("spiffe://{}", entry.spiffe_id.trust_domain()),
        not_after: answer.not_after,
    })
}

/// `(not_before, not_after)` of a DER certificate.
pub(crate) fn validity_der(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    let at = |t: &x509_parser::time::ASN1Time| -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).ok()?))
    };
    Some((at(&v.not_before)?, at(&v.not_after)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svid(id: &str, not_after: SystemTime) -> Svid {
        Svid {
            spiffe_id: id.to_owned(),
            chain_der: vec![1],
            key_der: Zeroizing::new(vec![2]),
            bundle_der: vec![3],
            trust_domain: "spiffe://example.org".to_owned(),
            not_after,
        }
    }

    #[test]
    fn a_caller_sees_its_svids_once_all_are_issued_and_never_an_expired_one() {
        let store = SvidStore::new(2);
        let changes = store.subscribe();
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        store.publish(0, svid("spiffe://example.org/a", later));
        assert!(store.current(&[0, 1]).is_none(), "entry 1 not issued yet");
        assert_eq!(
            store.current(&[0]).unwrap()[0].spiffe_id,
            "spiffe://example.org/a"
        );
        store.publish(1, svid("spiffe://example.org/b", now));
        let both = store.current(&[1, 0]).unwrap();
        assert_eq!(
            both[0].spiffe_id, "spiffe://example.org/b",
            "in the order asked"
        );
        assert!(changes.has_changed().unwrap());
        // Entry 1's renewal failed past its expiry: it is withdrawn, entry 0's is kept.
        store.drop_expired(1, now + Duration::from_secs(1));
        store.drop_expired(0, now + Duration::from_secs(1));
        assert!(store.current(&[1]).is_none());
        assert!(store.current(&[0]).is_some());
        assert_eq!(*changes.borrow(), 3);
        assert!(store.current(&[7]).is_none());
    }
}
