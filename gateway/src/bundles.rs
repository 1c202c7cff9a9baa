//! SPIFFE bundle endpoints of the listeners' trust domains (`trust_domains[].endpoint`),
//! fetched on their own thread: a bundle that reads well is written over the trust domain's
//! `bundle` file (atomically, only when it changed), which the reloader watches like a CRL and
//! turns into the next generation's verifier. A failed fetch changes nothing: the last good
//! bundle stays in force, and on disk for the next start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_identity::{root_store, BundleEndpoint, SpiffeBundle};
use portcullis_policy::{ListenerConfig, MIN_BUNDLE_REFRESH};
use rustls::RootCertStore;

use crate::metrics::Metrics;
use crate::tls::load_certs;
use crate::GatewayError;

/// How soon a failed fetch is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// One trust domain's endpoint and where its bundle is kept.
struct Source {
    trust_domain: String,
    endpoint: BundleEndpoint,
    bundle: PathBuf,
    refresh: Duration,
}

/// Starts the fetching thread when any listener's trust domain has an endpoint.
pub(crate) fn spawn(
    listeners: &[ListenerConfig],
    metrics: Arc<Metrics>,
) -> Result<(), GatewayError> {
    let mut sources = Vec::new();
    for td in listeners.iter().flat_map(|l| &l.tls.trust_domains) {
        let Some(endpoint) = &td.endpoint else {
            continue;
        };
        let roots = match &endpoint.ca {
            Some(ca) => root_store(load_certs(ca)?, &ca.display().to_string())?,
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        sources.push(Source {
            trust_domain: td.name.clone(),
            endpoint: BundleEndpoint::new(&endpoint.url, roots)?,
            bundle: td.bundle.clone(),
            refresh: endpoint.refresh,
        });
    }
    if sources.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| GatewayError::Tls(format!("bundle endpoints: runtime: {e}")))?;
    std::thread::Builder::new()
        .name("spiffe-bundles".into())
        .spawn(move || runtime.block_on(fetch_loop(sources, metrics)))
        .map(drop)
        .map_err(|e| GatewayError::Tls(format!("bundle endpoints: thread: {e}")))
}

async fn fetch_loop(sources: Vec<Source>, metrics: Arc<Metrics>) {
    let mut due: HashMap<usize, Instant> = HashMap::new();
    loop {
        for (i, source) in sources.iter().enumerate() {
            if due.get(&i).is_some_and(|at| Instant::now() < *at) {
                continue;
            }
            let wait = match source.endpoint.fetch().await {
                Ok(bundle) => {
                    let result = keep(source, &bundle);
                    metrics.bundle_fetch(&source.trust_domain, result.is_ok());
                    match result {
                        Ok(changed) => {
                            if changed {
                                tracing::info!(trust_domain = %source.trust_domain, authorities = bundle.authorities.len(), sequence = ?bundle.sequence, "trust bundle updated from its endpoint");
                            }
                            bundle
                                .refresh_hint
                                .map_or(source.refresh, |hint| hint.min(source.refresh))
                                .max(MIN_BUNDLE_REFRESH)
                        }
                        Err(e) => {
                            tracing::error!(trust_domain = %source.trust_domain, file = %source.bundle.display(), error = %e, "trust bundle could not be written; the last one stays in force");
                            RETRY
                        }
                    }
                }
                Err(e) => {
                    metrics.bundle_fetch(&source.trust_domain, false);
                    tracing::warn!(trust_domain = %source.trust_domain, endpoint = %source.endpoint.url(), error = %e, "trust bundle not fetched; the last good one stays in force");
                    RETRY
                }
            };
            due.insert(i, Instant::now() + wait);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Writes the bundle as PEM over the trust domain's file when it differs; whether it did.
fn keep(source: &Source, bundle: &SpiffeBundle) -> Result<bool, String> {
    let mut pem = String::new();
    for cert in &bundle.authorities {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64_lines(cert.as_ref());
        pem.push_str(&b64);
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    if std::fs::read(&source.bundle).is_ok_and(|old| old == pem.as_bytes()) {
        return Ok(false);
    }
    portcullis_identity::write_atomic(
        &source.bundle,
        pem.as_bytes(),
        portcullis_identity::PUBLIC_FILE_MODE,
    )
    .map_err(|e| e.to_string())?;
    Ok(true)
}

/// Base64 in 64-character lines, as PEM writes it.
fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 1);
    for chunk in text.as_bytes().chunks(64) {
        // Base64 is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}
