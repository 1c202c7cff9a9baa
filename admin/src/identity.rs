//! Who is calling, and which names a CSR asks for: the verified client certificate read once
//! per connection into a [`PeerIdentity`] (`portcullis-identity`, the rules the gateway uses
//! too), and the SANs of an untrusted CSR (for the identity checks made before the CA is
//! asked; the CA verifies the CSR itself).

use std::net::SocketAddr;
use std::sync::Arc;

pub use portcullis_identity::PeerIdentity;
/// Facts about one accepted connection, attached to each of its requests.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) peer: Option<Arc<PeerIdentity>>,
    pub(crate) remote: SocketAddr,
}

/// The SANs a CSR asks for, from every extensionRequest attribute (the CA merges them all,
/// so the renewal check must see them all).
pub(crate) use portcullis_ca::{requested_names, RequestedNames};

/// Whether a renewal keeps the identity of the current certificate: the same SPIFFE ID (or
/// none if it had none), no other URI, and DNS names a subset of the current ones.
pub(crate) fn same_identity(
    current_spiffe_id: Option<&str>,
    current_dns: &[String],
    asked: &RequestedNames,
) -> bool {
    let uri_ok = match (current_spiffe_id, asked.uris.as_slice()) {
        (None, []) => true,
        (Some(cur), [one]) => cur == one,
        _ => false,
    };
    uri_ok
        && asked
            .dns_names
            .iter()
            .all(|n| current_dns.iter().any(|c| c.eq_ignore_ascii_case(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(uris: &[&str], dns: &[&str]) -> RequestedNames {
        RequestedNames {
            uris: uris.iter().map(|s| (*s).to_owned()).collect(),
            dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn renewal_identity_rules() {
        let id = "spiffe://a.example/ns/x/sa/y";
        let dns = vec!["a.svc".to_owned(), "b.svc".to_owned()];
        assert!(same_identity(Some(id), &dns, &asked(&[id], &["a.svc"])));
        assert!(same_identity(
            Some(id),
            &dns,
            &asked(&[id], &["B.SVC", "a.svc"])
        ));
        assert!(same_identity(Some(id), &dns, &asked(&[id], &[])));
        assert!(!same_identity(Some(id), &dns, &asked(&[], &["a.svc"])));
        assert!(!same_identity(Some(id), &dns, &asked(&[id, id], &[])));
        assert!(!same_identity(
            Some(id),
            &dns,
            &asked(&["spiffe://a.example/ns/x/sa/z"], &[])
        ));
        assert!(!same_identity(Some(id), &dns, &asked(&[id], &["c.svc"])));
        assert!(same_identity(None, &dns, &asked(&[], &["a.svc"])));
        assert!(!same_identity(None, &dns, &asked(&[id], &["a.svc"])));
    }

    #[test]
    fn garbage_csr_is_none_not_a_panic() {
        assert!(requested_names(b"").is_none());
        assert!(requested_names(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n").is_none());
        assert!(requested_names(&[0x30, 0x82, 0xff, 0xff, 0]).is_none());
    }
}
