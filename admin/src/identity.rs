//! Who is calling, and which names a CSR asks for: the verified client certificate read once
//! per connection into a [`PeerIdentity`] (`portcullis-identity`, the rules the gateway uses
//! too), whether it acts as an operator (a role: see [`is_operator`]), and the SANs of an
//! untrusted CSR (for the bootstrap token's binding, checked before the CA is asked; the CA
//! verifies the CSR itself, and decides renewals against the renewed certificate).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use portcullis_ca::{CertRecord, IssuanceProfile, ProfileRole};
pub use portcullis_identity::PeerIdentity;
/// Facts about one accepted connection, attached to each of its requests.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) peer: Option<Arc<PeerIdentity>>,
    pub(crate) remote: SocketAddr,
    /// The person a verified bearer token names, on this request (`people.rs`).
    pub(crate) person: Option<Arc<crate::people::Person>>,
}

/// The SANs a CSR asks for, from every extensionRequest attribute (for the bootstrap token's
/// SPIFFE ID binding; the CA refuses a CSR with more than one).
pub(crate) use portcullis_ca::requested_names;

/// Whether the caller acts as an operator. Operators are a role, not a name: the caller's
/// SPIFFE ID must be one of `operators`, and its certificate (`record`, as the inventory knows
/// it) must have been issued under a profile with `role: operator`, which no tenant can obtain
/// (a tenant profile may not issue an operator's ID: checked at startup and at issuance).
pub(crate) fn is_operator(
    operators: &HashSet<String>,
    profiles: &[IssuanceProfile],
    peer: &PeerIdentity,
    record: &CertRecord,
) -> bool {
    let listed = peer
        .spiffe_id
        .as_ref()
        .is_some_and(|id| operators.contains(id.as_str()));
    listed
        && record.serial == peer.serial
        && profiles
            .iter()
            .any(|p| p.name == record.profile && p.role == ProfileRole::Operator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_csr_is_none_not_a_panic() {
        assert!(requested_names(b"").is_none());
        assert!(requested_names(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n").is_none());
        assert!(requested_names(&[0x30, 0x82, 0xff, 0xff, 0]).is_none());
    }
}
