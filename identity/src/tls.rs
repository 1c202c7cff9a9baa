//! The TLS both planes speak: one restricted crypto provider, PEM loading, the swappable server
//! certificate, the swappable client verifier, and a server verifier by name or SPIFFE ID.

mod bundle;
mod pem;
mod resolver;
mod server_identity;
#[cfg(test)]
mod test_pki;
mod trust_domains;
mod verifier;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use bundle::{parse_spiffe_bundle, BundleEndpoint, SpiffeBundle};
pub use pem::{
    certified_key, load_certified_key, load_certs, load_crls, load_private_key, parse_certs,
    parse_crls, parse_private_key, root_store,
};
pub use resolver::ServerCertificate;
pub use server_identity::{
    is_identity_mismatch, IdentityMismatch, ServerIdentity, ServerIdentityVerifier,
};
pub use trust_domains::TrustDomainVerifier;
pub use verifier::{
    webpki_client_verifier, ClientAuthMode, ClientVerifier, RefusalObserver, RefusalReason,
    Swappable, SwappableVerifier, UnknownRevocation, VerifierSource, VerifierState,
};

/// The ring provider with exactly these suites: TLS 1.3 AES-GCM and ChaCha20-Poly1305, and
/// TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305 (AEAD only: no CBC, no static RSA).
fn restricted() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    provider
}

/// The restricted provider (see the module's suites). Every rustls config of ours is built
/// with it, whatever is installed as the process default.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(restricted())))
}

/// Installs the restricted provider as the process default, so that configs built by others
/// (pingora's own builders) use it too. Call once at start-up, before any rustls config is
/// built; if a provider is already installed (tests, a second call), that one stays.
pub fn install_crypto_provider() {
    let _ = CryptoProvider::install_default(restricted());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aead_suites() {
        let suites = &provider().cipher_suites;
        assert_eq!(suites.len(), 9);
        for suite in suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
            assert!(
                !name.contains("CBC") && !name.contains("TLS_RSA_"),
                "{name}"
            );
        }
    }

    #[test]
    fn install_is_idempotent_and_restricted() {
        install_crypto_provider();
        install_crypto_provider();
        let installed = CryptoProvider::get_default().map(|p| p.cipher_suites.len());
        assert_eq!(installed, Some(9));
    }
}
