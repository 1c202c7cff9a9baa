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

/// A client verifier whose state is replaced whole (new trust bundle, new CRL); a handshake
/// uses the state current when each of its checks runs. The mode (required/optional) is fixed.
pub struct SwappableVerifier<S: VerifierState = Arc<dyn ClientCertVerifier>> {
    current: ArcSwap<S>,
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    observer: Option<Arc<dyn RefusalObserver>>,
}

impl<S: VerifierState> fmt::Debug for SwappableVerifier<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwappableVerifier")
            .field("mandatory", &self.mandatory)
            .field("hints", &self.hints.len())
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: VerifierState> SwappableVerifier<S> {
    /// Starts with `state`. No root hints are sent (they are advisory, and sending none keeps
    /// the bundle swappable) unless [`SwappableVerifier::with_root_hints`] sets them.
    pub fn new(state: S, mode: ClientAuthMode) -> Self {
        Self {
            current: ArcSwap::from_pointee(state),
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

    /// Uses `state` from the next check on.
    pub fn replace(&self, state: S) {
        self.current.store(Arc::new(state));
    }

    /// The current state.
    pub fn current(&self) -> Arc<S> {
        self.current.load_full()
    }
}

impl<S: VerifierState> ClientCertVerifier for SwappableVerifier<S> {
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
        let result =
            self.current
                .load()
                .verifier()
                .verify_client_cert(end_entity, intermediates, now);
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
        self.current
            .load()
            .verifier()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.current.load().verifier().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Pki {
        roots: Arc<RootCertStore>,
        leaf: CertificateDer<'static>,
        stranger: CertificateDer<'static>,
    }

    fn pki(name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let stranger = rcgen::CertificateParams::new(vec!["b.example".to_owned()])
            .unwrap()
            .self_signed(&other_key)
            .unwrap();
        let roots = crate::root_store([ca.der().clone()], "ca").unwrap();
        Pki {
            roots: Arc::new(roots),
            leaf: leaf.der().clone(),
            stranger: stranger.der().clone(),
        }
    }

    #[derive(Default)]
    struct Seen(Mutex<Vec<RefusalReason>>);

    impl RefusalObserver for Seen {
        fn refused(&self, reason: RefusalReason) {
            self.0.lock().unwrap().push(reason);
        }
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn verifies_swaps_and_reports_refusals() {
        let a = pki("a");
        let b = pki("b");
        let seen = Arc::new(Seen::default());
        let verifier = SwappableVerifier::new(
            webpki_client_verifier(
                Arc::clone(&a.roots),
                Vec::new(),
                UnknownRevocation::Allow,
                ClientAuthMode::Required,
            )
            .unwrap(),
            ClientAuthMode::Required,
        )
        .with_observer(Arc::clone(&seen) as Arc<dyn RefusalObserver>);
        assert!(verifier.client_auth_mandatory());
        assert!(verifier.root_hint_subjects().is_empty());
        assert!(verifier.verify_client_cert(&a.leaf, &[], now()).is_ok());
        assert!(verifier
            .verify_client_cert(&a.stranger, &[], now())
            .is_err());
        assert!(verifier.verify_client_cert(&b.leaf, &[], now()).is_err());

        verifier.replace(
            webpki_client_verifier(
                Arc::clone(&b.roots),
                Vec::new(),
                UnknownRevocation::Allow,
                ClientAuthMode::Required,
            )
            .unwrap(),
        );
        assert!(verifier.verify_client_cert(&b.leaf, &[], now()).is_ok());
        assert!(verifier.verify_client_cert(&a.leaf, &[], now()).is_err());
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(seen, [RefusalReason::UnknownCa; 3]);

        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(verifier.verify_client_cert(&garbage, &[], now()).is_err());
    }

    #[test]
    fn optional_mode_and_hints() {
        let a = pki("a");
        let hints = a.roots.subjects();
        let verifier = SwappableVerifier::new(
            webpki_client_verifier(
                Arc::clone(&a.roots),
                Vec::new(),
                UnknownRevocation::Refuse,
                ClientAuthMode::Optional,
            )
            .unwrap(),
            ClientAuthMode::Optional,
        )
        .with_root_hints(hints.clone());
        assert!(!verifier.client_auth_mandatory());
        assert_eq!(verifier.root_hint_subjects().len(), hints.len());
        assert_eq!(hints.len(), 1);
    }

    #[test]
    fn reasons_have_stable_labels() {
        let e = |c| rustls::Error::InvalidCertificate(c);
        assert_eq!(
            RefusalReason::of(&e(CertificateError::Expired)).as_str(),
            "expired"
        );
        assert_eq!(
            RefusalReason::of(&e(CertificateError::Revoked)).as_str(),
            "revoked"
        );
        assert_eq!(
            RefusalReason::of(&e(CertificateError::UnknownIssuer)).to_string(),
            "unknown_ca"
        );
        assert_eq!(
            RefusalReason::of(&rustls::Error::DecryptError).as_str(),
            "other"
        );
    }

    #[test]
    fn a_crl_that_is_not_one_is_refused_at_build() {
        let a = pki("a");
        let bad = vec![CertificateRevocationListDer::from(vec![0x30, 0x00])];
        assert!(webpki_client_verifier(
            a.roots,
            bad,
            UnknownRevocation::Allow,
            ClientAuthMode::Required
        )
        .is_err());
    }
}
