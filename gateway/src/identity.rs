//! The caller's identity as established by the TLS handshake: the verified client leaf parsed
//! once per connection into a policy [`Identity`].

use std::sync::Arc;

use portcullis_policy::{Identity, SpiffeId};
use x509_parser::extensions::GeneralName;

/// What a connection's handshake established, attached to the connection by pingora.
#[derive(Debug)]
pub(crate) struct ConnectionIdentity {
    /// `None` when no client certificate was presented (client auth optional or off).
    pub identity: Option<Arc<Identity>>,
    pub tls_version: &'static str,
}

/// Parses a verified client leaf. Returns `None` only if the DER cannot be parsed, which the
/// verifier has already ruled out; a certificate without a usable SPIFFE ID still yields an
/// identity with its DNS names and subject.
pub(crate) fn peer_identity(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut spiffe_uris = Vec::new();
    let mut dns_sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => spiffe_uris.push(*uri),
                GeneralName::DNSName(dns) => dns_sans.push(dns.to_ascii_lowercase()),
                _ => {}
            }
        }
    }
    // An X.509-SVID carries exactly one SPIFFE URI SAN; with more it is no SVID at all.
    let spiffe_id = match spiffe_uris.as_slice() {
        [one] => one.parse::<SpiffeId>().ok(),
        _ => None,
    };
    let subject = cert.subject().to_string();
    let subject = (!subject.is_empty()).then_some(subject);
    Some(Identity::from_x509(spiffe_id, dns_sans, subject))
}
