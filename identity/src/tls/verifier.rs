//! The client-certificate verifier both planes use: webpki underneath, swappable whole (new
//! trust bundle, new CRL) while handshakes run, with refusals reported by reason to whoever
//! counts them.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};

use crate::IdentityError;

/// Whether a client certificate is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuthMode {
    /// A handshake without a valid client certificate fails.
    Required,
    /// A client may present no certificate; one it presents must be valid.
    Optional,
}

/// What to do with a leaf whose issuer has no CRL among those given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownRevocation {
    /// Accept it (its status is unknown, not revoked).
    Allow,
    /// Refuse it.
    Refuse,
}

/// Builds a webpki client verifier over `roots`. With `crls`, the end-entity certificate is
/// checked against them (intermediates are not: the CRLs are those of the issuing CAs).
pub fn webpki_client_verifier(
    roots: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    unknown: UnknownRevocation,
    mode: ClientAuthMode,
) -> Result<Arc<dyn ClientCertVerifier>, IdentityError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, crate::provider());
    if mode == ClientAuthMode::Optional {
        builder = builder.allow_unauthenticated();
    }
    if !crls.is_empty() {
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
        if unknown == UnknownRevocation::Allow {
            builder = builder.allow_unknown_revocation_status();
        }
    }
    builder
        .build()
        .map_err(|e| IdentityError::Tls(format!("client verifier: {e}")))
}

/// Why a client certificate was refused: a short, stable label for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Past its `notAfter`.
    Expired,
    /// Before its `notBefore`.
    NotYetValid,
    /// No chain to a trust anchor.
    UnknownCa,
    /// On a CRL.
    Revoked,
    /// A signature in the chain does not verify.
    BadSignature,
    /// Not well-formed.
    BadEncoding,
    /// Not valid for client authentication.
    InvalidPurpose,
    /// Any other certificate problem.
    InvalidCertificate,
    /// Anything else.
    Other,
}

impl RefusalReason {
    /// Classifies a rustls verification error.
    pub fn of(error: &rustls::Error) -> Self {
        match error {
            rustls::Error::InvalidCertificate(e) => match e {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Self::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotYetValid
                }
                CertificateError::UnknownIssuer => Self::UnknownCa,
                CertificateError::Revoked => Self::Revoked,
                CertificateError::BadSignature => Self::BadSignature,
                CertificateError::BadEncoding => Self::BadEncoding,
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => Self::InvalidPurpose,
                _ => Self::InvalidCertificate,
            },
            _ => Self::Other,
        }
    }

    /// The label: `expired`, `not_yet_valid`, `unknown_ca`, `revoked`, `bad_signature`,
    /// `bad_encoding`, `invalid_purpose`, `invalid_certificate` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::UnknownCa => "unknown_ca",
            Self::Revoked => "revoked",
            Self::BadSignature => "bad_signature",
            Self::BadEncoding => "bad_encoding",
            Self::InvalidPurpose => "invalid_purpose",
            Self::InvalidCertificate => "invalid_certificate",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Told about every refused client certificate (the gateway counts them per listener).
pub trait RefusalObserver: Send + Sync + 'static {
    /// A client certificate was refused for `reason`.
    fn refused(&self, reason: RefusalReason);
}

/// What a [`SwappableVerifier`] swaps: something holding the verifier to delegate to, and
/// whatever must change together with it (the admin API keeps the CRL it was built from).
pub trait VerifierState: Send + Sync + 'static {
    /// The verifier handshakes use.
    fn verifier(&self) -> &dyn ClientCertVerifier;
}

impl VerifierState for Arc<dyn ClientCertVerifier> {
    fn verifier(&self) -> &dyn ClientCertVerifier {
        self.as_ref()
    }
}

/// Where a [`ClientVerifier`] finds the verifier to delegate to, at each check: its own
/// swappable slot ([`Swappable`]), or something larger swapped whole (the gateway reads the
/// current listener generation, so certificate, verifier and policy change in one store).
pub trait VerifierSource: Send + Sync + 'static {
    /// Runs `check` with the verifier current now; `None` when there is none.
    fn with_verifier<R>(&self, check: impl FnOnce(&dyn ClientCertVerifier) -> R) -> Option<R>;
}

/// A slot holding verifier state, replaced whole (new trust bundle, new CRL).
pub struct Swappable<S>(ArcSwap<S>);

impl<S: VerifierState> VerifierSource for Swappable<S> {
    fn with_verifier<R>(&self, check: impl FnOnce(&dyn ClientCertVerifier) -> R) -> Option<R> {
        Some(check(self.0.load().verifier()))
    }
}

/// A client-certificate verifier that delegates each check to its [`VerifierSource`] and
/// reports refusals to an observer. The mode (required/optional) is fixed.
pub struct ClientVerifier<Src: VerifierSource> {
    source: Src,
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    observer: Option<Arc<dyn RefusalObserver>>,
}

/// A client verifier with its own swappable state: a handshake uses the state current when
/// each of its checks runs.
pub type SwappableVerifier<S = Arc<dyn ClientCertVerifier>> = ClientVerifier<Swappable<S>>;

impl<Src: VerifierSource> fmt::Debug for ClientVerifier<Src> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("mandatory", &self.mandatory)
            .field("hints", &self.hints.len())
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl<Src: VerifierSource> ClientVerifier<Src> {
    /// Checks through `source`. No root hints are sent (they are advisory, and sending none
    /// keeps the bundle swappable) unless [`ClientVerifier::with_root_hints`] sets them.
    pub fn from_source(source: Src, mode: ClientAuthMode) -> Self {
        Self {
            source,
            mandatory: mode == ClientAuthMode::Required,
            hints: Vec::new(),
            observer: None,
        }
    }

    /// Sends these subjects as acceptable CA names in the CertificateRequest.
    pub fn with_root_hints(mut self, hints: Vec<DistinguishedName>) -> Self {
        self.hints = hints;
        self
    }

    /// Reports every refusal to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn RefusalObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
}

impl<S: VerifierState> ClientVerifier<Swappable<S>> {
    /// Starts with `state`.
    pub fn new(state: S, mode: ClientAuthMode) -> Self {
        Self::from_source(Swappable(ArcSwap::from_pointee(state)), mode)
    }

    /// Uses `state` from the next check on.
    pub fn replace(&self, state: S) {
        self.source.0.store(Arc::new(state));
    }

    /// The current state.
    pub fn current(&self) -> Arc<S> {
        self.source.0.load_full()
    }
}

/// The error of a check made while no verifier is in place.
fn no_verifier() -> rustls::Error {
    rustls::Error::General("no client verifier in place".into())
}

impl<Src: VerifierSource> ClientCertVerifier for ClientVerifier<Src> {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self
            .source
            .with_verifier(|v| v.verify_client_cert(end_entity, intermediates, now))
            .unwrap_or_else(|| Err(no_verifier()));
        if let (Err(e), Some(observer)) = (&result, &self.observer) {
            observer.refused(RefusalReason::of(e));
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.source
            .with_verifier(|v| v.verify_tls12_signature(message, cert, dss))
            .unwrap_or_else(|| Err(no_verifier()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.source
            .with_verifier(|v| v.verify_tls13_signature(message, cert, dss))
            .unwrap_or_else(|| Err(no_verifier()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.source
            .with_verifier(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}
