//! Downstream TLS of the gateway, on the shared pieces of `portcullis-identity` (restricted
//! provider, PEM loading, swappable certificate and verifier): the listener's client verifier
//! built from its config (refusals counted by reason, CRL re-read when its file changes), and
//! the post-handshake hook that turns the verified leaf into the connection's [`Identity`].
//!
//! [`Identity`]: portcullis_policy::Identity

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use portcullis_identity::{
    load_crls, root_store, webpki_client_verifier, ClientAuthMode, RefusalObserver, RefusalReason,
    SwappableVerifier, UnknownRevocation,
};
use portcullis_policy::{ClientAuth, TlsListenerConfig};
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub(crate) use portcullis_identity::ServerCertificate;

use crate::identity::{peer_identity, ConnectionIdentity};
use crate::metrics::Metrics;
use crate::GatewayError;

/// Reads every certificate of a PEM file (each one checked to parse).
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    Ok(portcullis_identity::load_certs(path)?)
}

/// Reads the private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, GatewayError> {
    Ok(portcullis_identity::load_private_key(path)?)
}

/// Loads a certificate chain and its key, and checks that they belong together.
pub(crate) fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, GatewayError> {
    Ok(portcullis_identity::load_certified_key(cert, key)?)
}

/// Counts and logs a listener's refused client certificates.
struct ListenerRefusals {
    listener: String,
    metrics: Arc<Metrics>,
}

impl RefusalObserver for ListenerRefusals {
    fn refused(&self, reason: RefusalReason) {
        self.metrics.tls_failure(&self.listener, reason.as_str());
        tracing::info!(listener = %self.listener, tls.refusal = reason.as_str(), "client certificate refused");
    }
}

/// A listener's client verifier: the listener's trust bundle and revocation list (both
/// swappable: on reload, and whenever the CRL file changes), every refusal counted by reason.
pub(crate) struct ClientVerifier {
    verifier: Arc<SwappableVerifier>,
    listener: String,
    metrics: Arc<Metrics>,
    /// The settings the current verifier was built from, and the CRL file's fingerprint then.
    source: Mutex<(TlsListenerConfig, Option<FileStamp>)>,
}

/// What tells us a file changed: modification time and length.
type FileStamp = (Option<SystemTime>, u64);

fn stamp(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("listener", &self.listener)
            .field("verifier", &self.verifier)
            .finish()
    }
}

impl ClientVerifier {
    pub(crate) fn new(
        listener: &str,
        config: &TlsListenerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, GatewayError> {
        let crl_stamp = config.crl.as_deref().and_then(stamp);
        let (Some(inner), Some(mode)) = (build_webpki_verifier(config)?, client_auth_mode(config))
        else {
            return Ok(None);
        };
        let observer = ListenerRefusals {
            listener: listener.to_owned(),
            metrics: Arc::clone(&metrics),
        };
        let verifier = SwappableVerifier::new(inner, mode).with_observer(Arc::new(observer));
        Ok(Some(Self {
            verifier: Arc::new(verifier),
            listener: listener.to_owned(),
            metrics,
            source: Mutex::new((config.clone(), crl_stamp)),
        }))
    }

    /// The verifier rustls calls.
    pub(crate) fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.verifier) as Arc<dyn ClientCertVerifier>
    }

    /// Swaps in a new trust bundle and CRL. The mode (required/optional) is fixed at start-up.
    pub(crate) fn reload(&self, config: &TlsListenerConfig) -> Result<(), GatewayError> {
        let crl_stamp = config.crl.as_deref().and_then(stamp);
        if let Some(inner) = build_webpki_verifier(config)? {
            self.verifier.replace(inner);
            *self.source.lock().unwrap_or_else(PoisonError::into_inner) =
                (config.clone(), crl_stamp);
        }
        Ok(())
    }

    /// Re-reads the CRL if its file changed since it was last read. A CRL that cannot be used
    /// is refused, and the previous one stays in force.
    pub(crate) fn refresh_crl(&self) {
        let mut source = self.source.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(path) = source.0.crl.clone() else {
            return;
        };
        let now = stamp(&path);
        if now.is_none() || now == source.1 {
            return;
        }
        source.1 = now;
        match build_webpki_verifier(&source.0) {
            Ok(Some(inner)) => {
                self.verifier.replace(inner);
                self.metrics.crl_load(&self.listener, true);
                tracing::info!(listener = %self.listener, crl = %path.display(), "revocation list reloaded");
            }
            Ok(None) => {}
            Err(e) => {
                self.metrics.crl_load(&self.listener, false);
                tracing::error!(listener = %self.listener, error = %e, "revocation list refused; the previous one stays in force");
            }
        }
    }
}

/// Whether a listener asks for client certificates, and how; `None` when they are off.
fn client_auth_mode(config: &TlsListenerConfig) -> Option<ClientAuthMode> {
    match config.client_auth {
        ClientAuth::Off => None,
        ClientAuth::Optional => Some(ClientAuthMode::Optional),
        ClientAuth::Required => Some(ClientAuthMode::Required),
    }
}

/// The webpki verifier of a listener's settings; `None` when client certificates are off.
fn build_webpki_verifier(
    config: &TlsListenerConfig,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, GatewayError> {
    let Some(ca_path) = config.client_ca.as_deref() else {
        return Ok(None);
    };
    let Some(mode) = client_auth_mode(config) else {
        return Ok(None);
    };
    let roots = root_store(load_certs(ca_path)?, &ca_path.display().to_string())?;
    // The CA's CRL covers the leaves it issued. A leaf from an issuer without a CRL here has
    // unknown status and is accepted; a stale CRL still applies (the CA republishes it well
    // before nextUpdate, and refusing everyone because of it would be an outage).
    let crls = match &config.crl {
        Some(path) => load_crls(path)?,
        None => Vec::new(),
    };
    let verifier = webpki_client_verifier(Arc::new(roots), crls, UnknownRevocation::Allow, mode)
        .map_err(|e| {
            let what = config.crl.as_deref().unwrap_or(ca_path);
            GatewayError::Tls(format!("{}: {e}", what.display()))
        })?;
    Ok(Some(verifier))
}

/// Runs after a completed handshake: parses the verified leaf once into the connection's
/// identity, which pingora then carries in the session digest for every request.
#[derive(Debug)]
pub(crate) struct IdentityHook;

#[async_trait]
impl TlsAccept for IdentityHook {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let connection = ConnectionIdentity {
            identity: tls
                .peer_certificate_der()
                .and_then(peer_identity)
                .map(Arc::new),
            tls_version: tls.version().unwrap_or("unknown"),
        };
        Some(Arc::new(connection))
    }
}
