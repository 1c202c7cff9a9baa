//! The gateway's own certificates from the Portcullis CA — a listener's serving certificate and
//! an upstream's client certificate: obtained at start when missing or expired (with the
//! one-time bootstrap token), renewed at two thirds of their lifetime (by mTLS with the current
//! certificate), kept in the configured files, and swapped in without touching established
//! connections (a listener's slot is replaced; upstream pools are rebuilt from the files). When
//! the CA cannot be reached the current certificate keeps serving and renewal retries with
//! backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use portcullis_policy::{Config, IssuerConfig};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::metrics::Metrics;
use crate::tls::{load_certified_key, load_certs, ServerCertificate};
use crate::GatewayError;

/// Time allowed for one issuance exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between failed renewal attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Largest answer accepted from the CA.
const MAX_ANSWER: usize = 256 << 10;

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

/// One certificate the gateway renews itself, and who uses it.
pub(crate) struct Renewal {
    pub issued: Issued,
    pub holder: Holder,
}

/// Who uses a renewed certificate.
pub(crate) enum Holder {
    /// A listener's serving certificate, swapped in place.
    Listener(Arc<ServerCertificate>),
    /// An upstream's client certificate: the renewal is announced to the reloader, which
    /// rebuilds the pools from the files.
    Upstream(std::sync::mpsc::Sender<String>),
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
        .and_then(|chain| Ok((chain, crate::tls::load_key(&r.issued.private_key)?)))
        .ok();
    let not_after = obtain(
        &r.issued.issuer,
        current,
        &r.issued.certificate,
        &r.issued.private_key,
    )
    .await?;
    match &r.holder {
        Holder::Listener(slot) => {
            let key = load_certified_key(&r.issued.certificate, &r.issued.private_key)
                .map_err(|e| e.to_string())?;
            slot.replace(key);
        }
        Holder::Upstream(reloader) => reloader
            .send(r.issued.name.clone())
            .map_err(|_| "the reloader has stopped".to_owned())?,
    }
    Ok(not_after)
}

/// The client identity a renewal presents: the current chain and key.
type ClientIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Generates a key, asks the CA for a certificate, and writes both (key 0600) atomically.
async fn obtain(
    issuer: &IssuerConfig,
    current: Option<ClientIdentity>,
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
    let mut body = serde_json::json!({ "csr": csr });
    if let Some(profile) = &issuer.profile {
        body["profile"] = profile.clone().into();
    }
    if let Some(lifetime) = issuer.lifetime {
        body["lifetime"] = humantime::format_duration(lifetime).to_string().into();
    }
    let answer = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        post_json(issuer, current, token.as_deref(), body.to_string()),
    )
    .await
    .map_err(|_| format!("no answer within {EXCHANGE_TIMEOUT:?}"))??;
    let chain = answer["chain"]
        .as_str()
        .ok_or("the CA's answer has no chain")?;
    // Readable by the gateway only, replaced atomically.
    for (path, contents) in [
        (private_key, key.serialize_pem()),
        (certificate, chain.to_owned()),
    ] {
        portcullis_ca::write_atomic(path, contents.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    }
    validity(certificate)
        .map(|(_, not_after)| not_after)
        .ok_or_else(|| "the CA's chain is not a certificate".to_owned())
}

/// `POST /v1/certificates` over HTTPS; the JSON answer, or the CA's error code and message.
async fn post_json(
    issuer: &IssuerConfig,
    client: Option<ClientIdentity>,
    token: Option<&str>,
    body: String,
) -> Result<serde_json::Value, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&issuer.ca).map_err(|e| e.to_string())? {
        roots.add(cert).map_err(|e| format!("issuer ca: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(issuer.host.clone()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect((issuer.host.as_str(), issuer.port))
        .await
        .map_err(|e| format!("connect {}: {e}", issuer.url))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {}: {e}", issuer.url))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = http::Request::post("/v1/certificates")
        .header("host", format!("{}:{}", issuer.host, issuer.port))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| format!("the CA answered {status} without JSON"))?;
    if status.is_success() {
        Ok(json)
    } else {
        Err(format!(
            "the CA refused ({status}, {}): {}",
            json["error"].as_str().unwrap_or("-"),
            json["message"].as_str().unwrap_or("-")
        ))
    }
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
