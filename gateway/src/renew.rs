//! The gateway's own certificates from the Portcullis CA — a listener's serving certificate and
//! an upstream's client certificate: obtained at start when missing or expired (with the
//! one-time bootstrap token), renewed at two thirds of their lifetime (by mTLS with the current
//! certificate), kept in the configured files, and swapped in without touching established
//! connections (the reloader builds the next generation from the renewed files). When
//! the CA cannot be reached the current certificate keeps serving and renewal retries with
//! backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use portcullis_identity::{
    root_store, write_atomic, ClientCredentials, IssuanceClient, IssuanceRequest, PRIVATE_FILE_MODE,
};
use portcullis_policy::{Config, IssuerConfig};

use crate::metrics::Metrics;
use crate::tls::{load_certified_key, load_certs, load_key};
use crate::GatewayError;

/// Time allowed for one issuance exchange (connect, TLS, request, answer).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between failed renewal attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A certificate the gateway obtains from the CA itself, and where it is kept.
pub(crate) struct Issued {
    /// `listener/NAME` or `upstream/NAME`, in logs and metrics.
    pub name: String,
    /// The listener it serves on; `None` for an upstream client certificate.
    pub listener: Option<String>,
    pub issuer: IssuerConfig,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// One certificate the gateway renews itself.
pub(crate) struct Renewal {
    pub issued: Issued,
    /// Told of each renewal: it builds the next generation from the renewed files.
    pub reloader: std::sync::mpsc::Sender<Renewed>,
}

/// A renewal announced to the reloader, which answers once the generation using it is in
/// service (or could not be built).
#[derive(Debug)]
pub(crate) struct Renewed {
    /// An upstream client certificate (the pools are rebuilt), else a listener's.
    pub upstream: bool,
    pub applied: tokio::sync::oneshot::Sender<bool>,
}

/// The certificates of a config that the gateway obtains itself.
pub(crate) fn issued(config: &Config) -> Vec<Issued> {
    let listeners = config.listeners.iter().filter_map(|l| {
        Some(Issued {
            name: format!("listener/{}", l.name),
            listener: Some(l.name.clone()),
            issuer: l.tls.issuer.clone()?,
            certificate: l.tls.certificate.clone(),
            private_key: l.tls.private_key.clone(),
        })
    });
    let upstreams = config.upstreams.iter().filter_map(|u| {
        let tls = u.tls.as_ref()?;
        let (certificate, private_key) = tls.client_cert.clone()?;
        Some(Issued {
            name: format!("upstream/{}", u.name),
            listener: None,
            issuer: tls.issuer.clone()?,
            certificate,
            private_key,
        })
    });
    listeners.chain(upstreams).collect()
}

/// Makes sure a certificate the gateway obtains itself is in its files before the server
/// starts: obtains one when the files are missing or the certificate has expired.
pub(crate) fn prepare(issued: &Issued) -> Result<(), GatewayError> {
    let Issued {
        name,
        issuer,
        certificate,
        private_key,
        ..
    } = issued;
    if validity(certificate).is_some_and(|(_, not_after)| not_after > SystemTime::now()) {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| GatewayError::Tls(format!("certificate issuance runtime: {e}")))?;
    runtime
        .block_on(obtain(issuer, None, certificate, private_key))
        .map_err(|e| {
            GatewayError::Tls(format!(
                "{name}: no certificate from the CA at {}: {e}",
                issuer.url
            ))
        })?;
    tracing::info!(certificate = %name, issuer = %issuer.url, "certificate obtained from the CA");
    Ok(())
}

/// Renews every certificate as it reaches two thirds of its lifetime.
pub(crate) struct Renewals {
    pub renewals: Vec<Renewal>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for Renewals {
    async fn start(&self, shutdown: ShutdownWatch) {
        let tasks = self
            .renewals
            .iter()
            .map(|r| keep_renewed(r, &self.metrics, shutdown.clone()));
        futures::future::join_all(tasks).await;
    }
}

async fn keep_renewed(r: &Renewal, metrics: &Metrics, mut shutdown: ShutdownWatch) {
    let mut failures = 0u32;
    loop {
        let wait = match validity(&r.issued.certificate) {
            Some((not_before, not_after)) => {
                metrics.certificate_expiry(&r.issued.name, not_after);
                // CAs back-date not_before for clock skew: count the lifetime from when we
                // got the certificate (the file's time) when that is later.
                let got = std::fs::metadata(&r.issued.certificate)
                    .and_then(|m| m.modified())
                    .map_or(not_before, |t| t.max(not_before));
                let lifetime = not_after.duration_since(got).unwrap_or_default();
                let renew_at = got + lifetime * 2 / 3;
                let due = renew_at
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
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew(r).await {
            Ok(not_after) => {
                failures = 0;
                metrics.certificate_renewal(&r.issued.name, true);
                metrics.certificate_expiry(&r.issued.name, not_after);
                tracing::info!(certificate = %r.issued.name, not_after = %humantime::format_rfc3339_seconds(not_after), "certificate renewed");
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics.certificate_renewal(&r.issued.name, false);
                tracing::warn!(certificate = %r.issued.name, issuer = %r.issued.issuer.url, error = %e, retry_in_s = backoff(failures).as_secs(), "certificate renewal failed; the current certificate keeps serving");
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF)
}

/// Renews with the current certificate as the client certificate, then hands it over.
async fn renew(r: &Renewal) -> Result<SystemTime, String> {
    let current = load_certs(&r.issued.certificate)
        .and_then(|chain| {
            Ok(ClientCredentials {
                chain,
                key: load_key(&r.issued.private_key)?,
            })
        })
        .ok();
    let not_after = obtain(
        &r.issued.issuer,
        current,
        &r.issued.certificate,
        &r.issued.private_key,
    )
    .await?;
    // What was written must load before the reloader is told (it would refuse it anyway).
    load_certified_key(&r.issued.certificate, &r.issued.private_key).map_err(|e| e.to_string())?;
    let (applied, in_service) = tokio::sync::oneshot::channel();
    let renewed = Renewed {
        upstream: r.issued.listener.is_none(),
        applied,
    };
    r.reloader
        .send(renewed)
        .map_err(|_| "the reloader has stopped".to_owned())?;
    match tokio::time::timeout(EXCHANGE_TIMEOUT, in_service).await {
        Ok(Ok(true)) => Ok(not_after),
        Ok(Ok(false)) => Err("the renewed certificate was refused by the reloader".to_owned()),
        _ => Err("the reloader did not take the renewed certificate in time".to_owned()),
    }
}

/// Generates a key, asks the CA for a certificate (with `current` as the client certificate,
/// else with the bootstrap token), and writes both (key 0600) atomically.
async fn obtain(
    issuer: &IssuerConfig,
    current: Option<ClientCredentials>,
    certificate: &Path,
    private_key: &Path,
) -> Result<SystemTime, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key generation: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(issuer.dns_names.clone()).map_err(|e| format!("CSR: {e}"))?;
    if let Some(id) = &issuer.spiffe_id {
        let uri = rcgen::string::Ia5String::try_from(id.as_str())
            .map_err(|e| format!("spiffe_id: {e}"))?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
    }
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| format!("CSR: {e}"))?;
    let token = match (&current, &issuer.bootstrap_token_file) {
        (Some(_), _) => None,
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => {
            return Err("no current certificate and no bootstrap_token_file".to_owned());
        }
    };
    let mut request = IssuanceRequest::new(csr);
    if let Some(profile) = &issuer.profile {
        request = request.with_profile(profile.clone());
    }
    if let Some(lifetime) = issuer.lifetime {
        request = request.with_lifetime(lifetime);
    }
    let roots = root_store(
        load_certs(&issuer.ca).map_err(|e| e.to_string())?,
        "issuer ca",
    )
    .map_err(|e| e.to_string())?;
    let answer = IssuanceClient::new(&issuer.host, issuer.port, roots, current)
        .map_err(|e| e.to_string())?
        .with_timeout(EXCHANGE_TIMEOUT)
        .issue(&request, token.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    // Readable by the gateway only, replaced atomically.
    for (path, contents) in [
        (private_key, key.serialize_pem()),
        (certificate, answer.chain),
    ] {
        write_atomic(path, contents.as_bytes(), PRIVATE_FILE_MODE).map_err(|e| e.to_string())?;
    }
    validity(certificate)
        .map(|(_, not_after)| not_after)
        .ok_or_else(|| "the CA's chain is not a certificate".to_owned())
}

/// `(not_before, not_after)` of the first certificate in a PEM file.
fn validity(path: &Path) -> Option<(SystemTime, SystemTime)> {
    let leaf = load_certs(path).ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let v = cert.validity();
    let at = |t: &x509_parser::time::ASN1Time| -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).ok()?))
    };
    Some((at(&v.not_before)?, at(&v.not_after)?))
}
