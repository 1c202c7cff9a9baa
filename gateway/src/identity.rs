//! The caller's identity as established by the TLS handshake: the verified client leaf read
//! once per connection ([`PeerIdentity::from_der`], the rules shared with the admin API) into a
//! policy [`Identity`].

use std::sync::Arc;

use portcullis_identity::PeerIdentity;
use portcullis_policy::Identity;

/// What a connection's handshake established, attached to the connection by pingora.
#[derive(Debug)]
pub(crate) struct ConnectionIdentity {
    /// `None` when no client certificate was presented (client auth optional or off).
    pub identity: Option<Arc<Identity>>,
    pub tls_version: &'static str,
}

/// Reads a verified client leaf. `None` only if the certificate cannot be read (malformed DER
/// or SAN extension, which the verifier has already ruled out): the connection then counts as
/// unauthenticated. A certificate without a usable SPIFFE ID still yields an identity with its
/// DNS names and subject.
pub(crate) fn peer_identity(der: &[u8]) -> Option<Identity> {
    match PeerIdentity::from_der(der) {
        Ok(peer) => Some(Identity::from(&peer)),
        Err(e) => {
            tracing::warn!(error = %e, "verified client certificate unreadable; treated as anonymous");
            None
        }
    }
}
