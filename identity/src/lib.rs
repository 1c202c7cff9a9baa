//! Who a peer is, and the TLS both planes speak: the one place each identity rule is written.
//!
//! - Checked names: [`TenantId`], [`SpiffeId`] and [`SpiffeIdPattern`], [`DnsName`] and
//!   [`DnsPattern`], certificate [`Serial`]s, and [`canonical_ip`] for dual-stack addresses.
//! - [`PeerIdentity::from_der`]: a verified client certificate read once, with one set of rules,
//!   by the data plane and the control plane alike.
//! - With the `io` feature (on by default): the restricted rustls [`provider`], PEM loading, the
//!   swappable [`ServerCertificate`] and [`SwappableVerifier`], [`write_atomic`], and the typed
//!   [`IssuanceClient`] for the CA's `POST /v1/certificates` (whose wire types,
//!   [`IssuanceRequest`] and [`IssuanceResponse`], the admin API serves).
//!
//! This crate depends on no other crate of Portcullis. `policy` uses it without `io`, so the
//! decision core still reads no file, socket or clock.

mod dns;
mod error;
#[cfg(feature = "io")]
mod files;
mod fleet;
mod ip;
mod issuance;
pub mod oidc;
mod peer;
mod policy_bundle;
#[cfg(feature = "schema")]
pub mod schema;
mod serial;
mod spiffe;
mod tenant;
#[cfg(feature = "io")]
mod tls;

pub use dns::{DnsName, DnsNameError, DnsPattern};
pub use error::IdentityError;
#[cfg(feature = "io")]
pub use files::{write_atomic, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
pub use fleet::{
    check_fleet_endpoint, check_fleet_prefix, FleetSettings, FleetTls, DEFAULT_FLEET_PREFIX,
};
pub use ip::canonical_ip;
#[cfg(feature = "io")]
pub use issuance::{ClientCredentials, IssuanceClient, IssuanceConnection};
pub use issuance::{ErrorBody, IssuanceRequest, IssuanceResponse, ISSUANCE_PATH};
pub use peer::PeerIdentity;
pub use policy_bundle::{
    PolicyBundle, SignedPolicyBundle, TenantPolicy, POLICY_BUNDLE_FORMAT, POLICY_BUNDLE_PATH,
};
pub use serial::{Serial, SerialError};
pub use spiffe::{PatternError, SpiffeId, SpiffeIdError, SpiffeIdPattern};
pub use tenant::{TenantId, TenantIdError};
#[cfg(feature = "io")]
pub use tls::{
    certified_key, install_crypto_provider, is_identity_mismatch, load_certified_key, load_certs,
    load_crls, load_private_key, parse_certs, parse_crls, parse_private_key, parse_spiffe_bundle,
    provider, root_store, webpki_client_verifier, BundleEndpoint, ClientAuthMode, ClientVerifier,
    IdentityMismatch, RefusalObserver, RefusalReason, ServerCertificate, ServerIdentity,
    ServerIdentityVerifier, SpiffeBundle, Swappable, SwappableVerifier, TrustDomainVerifier,
    UnknownRevocation, VerifierSource, VerifierState,
};

/// Shows a peer- or operator-supplied string safely in a message: at most 80 characters.
pub(crate) fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}
