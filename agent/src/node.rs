//! The agent's own (node) certificate: obtained at start with the one-time bootstrap token when
//! missing or expired, renewed at two thirds of its lifetime by mTLS with the current one (as
//! the gateway renews its certificates), and presented on every SVID request so the admin API
//! can check the agent's grants.

use std::path::Path;
use std::time::{Duration, SystemTime};

use portcullis_identity::{
    load_certs, load_private_key, root_store, write_atomic, ClientCredentials, DnsName,
    IssuanceClient, IssuanceRequest, SpiffeId, PRIVATE_FILE_MODE,
};
use tokio::sync::watch;

use crate::config::{AdminEndpoint, NodeIdentity};
use crate::AgentError;

/// Time allowed for one issuance exchange (connect, TLS, request, answer).
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between failed attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The agent's own identity towards the admin API.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) admin: AdminEndpoint,
    pub(crate) identity: NodeIdentity,
}

impl Node {
    /// Makes sure a valid node certificate is in its files: obtains one with the bootstrap
    /// token when they are missing or the certificate has expired.
    pub(crate) async fn prepare(&self) -> Result<(), AgentError> {
        if validity(&self.identity.certificate).is_some_and(|(_, end)| end > SystemTime::now()) {
            return Ok(());
        }
        self.obtain(None)
            .await
            .map_err(|detail| AgentError::NodeCertificate {
                issuer: self.admin.url.clone(),
                detail,
            })?;
        tracing::info!(agent.spiffe_id = %self.identity.spiffe_id, issuer = %self.admin.url, "node certificate obtained with the bootstrap token");
        Ok(())
    }

    /// A client of the admin API presenting the current node certificate.
    pub(crate) fn client(&self) -> Result<IssuanceClient, String> {
        let credentials = ClientCredentials {
            chain: load_certs(&self.identity.certificate).map_err(|e| e.to_string())?,
            key: load_private_key(&self.identity.private_key).map_err(|e| e.to_string())?,
        };
        Ok(IssuanceClient::new(
            &self.admin.host,
            self.admin.port,
            self.roots()?,
            Some(credentials),
        )
        .map_err(|e| e.to_string())?
        .with_timeout(EXCHANGE_TIMEOUT))
    }

    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        root_store(
            load_certs(&self.admin.ca).map_err(|e| e.to_string())?,
            "admin.ca",
        )
        .map_err(|e| e.to_string())
    }

    /// Renews the node certificate at two thirds of its lifetime until `stop`; a failure is
    /// retried with backoff while the current certificate stays in use.
    pub(crate) async fn keep_renewed(&self, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            let wait = match validity(&self.identity.certificate) {
                Some((not_before, not_after)) => {
                    let got = std::fs::metadata(&self.identity.certificate)
                        .and_then(|m| m.modified())
                        .map_or(not_before, |t| t.max(not_before));
                    let lifetime = not_after.duration_since(got).unwrap_or_default();
                    let due = (got + lifetime * 2 / 3)
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    if failures > 0 {
                        due.max(backoff(failures))
                    } else {
                        due
                    }
                }
                None => backoff(failures),
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let current = load_certs(&self.identity.certificate)
                .and_then(|chain| {
                    Ok(ClientCredentials {
                        chain,
                        key: load_private_key(&self.identity.private_key)?,
                    })
                })
                .ok();
            // Without a readable current certificate, the bootstrap token is the only way.
            match self.obtain(current).await {
                Ok(not_after) => {
                    failures = 0;
                    tracing::info!(agent.spiffe_id = %self.identity.spiffe_id, not_after = %humantime::format_rfc3339_seconds(not_after), "node certificate renewed");
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(agent.spiffe_id = %self.identity.spiffe_id, issuer = %self.admin.url, error = %e, retry_in_s = backoff(failures).as_secs(), "node certificate renewal failed; the current one stays in use");
                }
            }
        }
    }

    /// Generates a key, asks for a certificate (with `current` as the client certificate,
    /// else with the bootstrap token), and writes both atomically (0600).
    async fn obtain(&self, current: Option<ClientCredentials>) -> Result<SystemTime, String> {
        let id = &self.identity;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("key generation: {e}"))?;
        let token = match (&current, &id.bootstrap_token_file) {
            (Some(_), _) => None,
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| format!("{}: {e}", file.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => {
                return Err(format!(
                    "no valid certificate in {} and no node.bootstrap_token_file",
                    id.certificate.display()
                ))
            }
        };
        let mut request = IssuanceRequest::new(csr_pem(&key, &id.spiffe_id, &[])?);
        if let Some(profile) = &id.profile {
            request = request.with_profile(profile.clone());
        }
        if let Some(lifetime) = id.lifetime {
            request = request.with_lifetime(lifetime);
        }
        let answer = IssuanceClient::new(&self.admin.host, self.admin.port, self.roots()?, current)
            .map_err(|e| e.to_string())?
            .with_timeout(EXCHANGE_TIMEOUT)
            .issue(&request, token.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        for (path, contents) in [
            (&id.private_key, key.serialize_pem()),
            (&id.certificate, answer.chain),
        ] {
            write_atomic(path, contents.as_bytes(), PRIVATE_FILE_MODE)
                .map_err(|e| e.to_string())?;
        }
        Ok(answer.not_after)
    }
}

/// A PEM CSR for `spiffe_id` (URI SAN) and `dns_names`, signed with `key`.
pub(crate) fn csr_pem(
    key: &rcgen::KeyPair,
    spiffe_id: &SpiffeId,
    dns_names: &[DnsName],
) -> Result<String, String> {
    let names = dns_names
        .iter()
        .map(|d| d.as_str().to_owned())
        .collect::<Vec<_>>();
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| format!("CSR: {e}"))?;
    let uri = rcgen::string::Ia5String::try_from(spiffe_id.as_str())
        .map_err(|e| format!("CSR: SPIFFE ID: {e}"))?;
    params.subject_alt_names.push(rcgen::SanType::URI(uri));
    params
        .serialize_request(key)
        .and_then(|c| c.pem())
        .map_err(|e| format!("CSR: {e}"))
}

pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(MAX_BACKOFF)
}

/// `(not_before, not_after)` of the first certificate in a PEM file.
fn validity(path: &Path) -> Option<(SystemTime, SystemTime)> {
    let leaf = load_certs(path).ok()?.into_iter().next()?;
    crate::svid::validity_der(leaf.as_ref())
}
