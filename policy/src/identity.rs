//! Who the caller is: the [`Identity`] a request is judged on.
//!
//! An identity is established once, at the edge: today from the client's verified X.509
//! certificate, read by `portcullis-identity` ([`PeerIdentity::from_der`]) with the rules both
//! planes share. The access rules only ever see these checked types.

use std::collections::BTreeMap;

pub use portcullis_identity::{PeerIdentity, SpiffeId, SpiffeIdError};

/// Who the caller is, as far as the gateway could establish.
///
/// Today this comes from a verified X.509 client certificate; OIDC tokens will later fill
/// `claims`.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    /// The SPIFFE ID from the certificate's URI SAN, if it had exactly one valid one.
    pub spiffe_id: Option<SpiffeId>,
    /// DNS names from the certificate's SANs, lower-cased.
    pub dns_sans: Vec<String>,
    /// The certificate subject as an RFC 4514-style string, e.g. `CN=frontend, O=Acme`.
    pub subject: Option<String>,
    /// Token claims (empty for certificates).
    pub claims: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// An identity established by an X.509 client certificate.
    pub fn from_x509(
        spiffe_id: Option<SpiffeId>,
        dns_sans: Vec<String>,
        subject: Option<String>,
    ) -> Identity {
        Identity {
            spiffe_id,
            dns_sans,
            subject,
            claims: BTreeMap::new(),
        }
    }
}

impl From<&PeerIdentity> for Identity {
    /// The facts access rules use from a verified client certificate.
    fn from(peer: &PeerIdentity) -> Identity {
        Identity::from_x509(
            peer.spiffe_id.clone(),
            peer.dns_names.clone(),
            peer.subject.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_x509_has_no_claims() {
        let id = Identity::from_x509(None, vec!["a.example".into()], Some("CN=a".into()));
        assert!(id.claims.is_empty());
        assert_eq!(id.dns_sans, ["a.example"]);
    }

    #[test]
    fn spiffe_ids_are_the_shared_type() {
        let id: SpiffeId = "spiffe://example.org/ns/prod/sa/web".parse().unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(
            "spiffe://example.org".parse::<SpiffeId>(),
            Err(SpiffeIdError::NoPath)
        );
    }
}
