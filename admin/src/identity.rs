//! Who is calling, and which names a CSR asks for: the verified client certificate read once
//! per connection into a [`PeerIdentity`] (`portcullis-identity`, the rules the gateway uses
//! too), and the SANs of an untrusted CSR (for the identity checks made before the CA is
//! asked; the CA verifies the CSR itself).

use std::net::SocketAddr;
use std::sync::Arc;

pub use portcullis_identity::PeerIdentity;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

fn collect_names(names: &[GeneralName<'_>], uris: &mut Vec<String>, dns: &mut Vec<String>) {
    for name in names {
        match name {
            GeneralName::URI(u) => uris.push((*u).to_owned()),
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            _ => {}
        }
    }
}

/// Facts about one accepted connection, attached to each of its requests.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) peer: Option<Arc<PeerIdentity>>,
    pub(crate) remote: SocketAddr,
}

/// The SANs a CSR asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestedNames {
    pub(crate) uris: Vec<String>,
    pub(crate) dns_names: Vec<String>,
}

/// Reads the SANs of a CSR (PEM or DER). None when it cannot be parsed.
pub(crate) fn requested_names(csr: &[u8]) -> Option<RequestedNames> {
    let der;
    let bytes = if csr.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(csr.trim_ascii_start()).ok()?;
        der = pem.contents;
        &der[..]
    } else {
        csr
    };
    let (_, req) = X509CertificationRequest::from_der(bytes).ok()?;
    let mut names = RequestedNames::default();
    if let Some(exts) = req.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                collect_names(&san.general_names, &mut names.uris, &mut names.dns_names);
            }
        }
    }
    Some(names)
}

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
