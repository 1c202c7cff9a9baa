//! The identity in a client certificate, read once per connection with one set of rules, by the
//! gateway (access rules, headers, audit) and the admin API (renewal, operators) alike.

use std::time::{Duration, SystemTime};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{IdentityError, Serial, SpiffeId};

/// Who a verified client certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The certificate's serial number.
    pub serial: Serial,
    /// The SPIFFE ID, when the certificate has exactly one `spiffe://` URI SAN and it is a
    /// valid workload ID (an X.509-SVID carries exactly one). Other URI schemes are ignored.
    pub spiffe_id: Option<SpiffeId>,
    /// The DNS SANs, lower-cased, in certificate order (as written: not checked as host names).
    pub dns_names: Vec<String>,
    /// The subject as an RFC 4514-style string, e.g. `CN=frontend,O=Acme`; `None` when empty.
    pub subject: Option<String>,
    /// The subject's first `O=` (the Portcullis CA writes the tenant there).
    pub organization: Option<String>,
    /// The end of the certificate's validity. Connections outlive certificates: callers check
    /// this again per request with [`PeerIdentity::is_expired`].
    pub not_after: SystemTime,
}

impl PeerIdentity {
    /// Reads a DER certificate (the leaf that the TLS layer verified). Malformed DER,
    /// including a malformed or duplicated SAN extension, is an error, never a panic.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let bad = |e: &dyn std::fmt::Display| IdentityError::Certificate(e.to_string());
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(&e))?;
        let mut spiffe_uris = Vec::new();
        let mut dns_names = Vec::new();
        if let Some(san) = cert.subject_alternative_name().map_err(|e| bad(&e))? {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                        spiffe_uris.push(*uri);
                    }
                    GeneralName::DNSName(dns) => dns_names.push(dns.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        // With two SPIFFE IDs the certificate is no SVID at all: it names nobody.
        let spiffe_id = match spiffe_uris.as_slice() {
            [one] => one.parse::<SpiffeId>().ok(),
            _ => None,
        };
        let subject = cert.subject().to_string();
        let organization = cert
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .map(str::to_owned);
        // A not_after before 1970 is simply long past.
        let not_after = u64::try_from(cert.validity().not_after.timestamp())
            .map_or(SystemTime::UNIX_EPOCH, |s| {
                SystemTime::UNIX_EPOCH + Duration::from_secs(s)
            });
        Ok(Self {
            serial: Serial::from_be_bytes(cert.raw_serial()),
            spiffe_id,
            dns_names,
            subject: (!subject.is_empty()).then_some(subject),
            organization,
            not_after,
        })
    }

    /// Whether the certificate has expired at `now` (`not_after` itself is still valid,
    /// RFC 5280 §4.1.2.5).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now > self.not_after
    }

    /// How this caller is named in logs and audit records: the SPIFFE ID, else `cert:SERIAL`.
    pub fn actor(&self) -> String {
        match &self.spiffe_id {
            Some(id) => id.to_string(),
            None => format!("cert:{}", self.serial),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(uris: &[&str], dns: &[&str], org: Option<&str>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>())
                .unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "frontend");
        if let Some(o) = org {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, o);
        }
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x8a, 0x01]));
        params.not_after = rcgen::date_time_ymd(2040, 1, 2);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    const ID: &str = "spiffe://acme.example/ns/prod/sa/web";

    #[test]
    fn reads_every_fact() {
        let der = cert(&[ID], &["Web.Acme.Internal", "b.acme"], Some("acme"));
        let p = PeerIdentity::from_der(&der).unwrap();
        assert_eq!(p.spiffe_id.as_ref().map(SpiffeId::as_str), Some(ID));
        assert_eq!(p.dns_names, ["web.acme.internal", "b.acme"]);
        assert_eq!(p.subject.as_deref(), Some("CN=frontend, O=acme"));
        assert_eq!(p.organization.as_deref(), Some("acme"));
        assert_eq!(p.serial.to_string(), "8a01");
        assert_eq!(p.actor(), ID);
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(2_209_075_200);
        assert_eq!(p.not_after, end);
        assert!(!p.is_expired(end));
        assert!(p.is_expired(end + Duration::from_secs(1)));
    }

    /// The gateway took exactly one SPIFFE URI and lower-cased DNS names; the admin API took
    /// the first URI and did not lower-case. One rule now: the gateway's.
    #[test]
    fn the_old_rules_disagreed_here() {
        let two = cert(&[ID, "spiffe://acme.example/ns/prod/sa/other"], &[], None);
        let p = PeerIdentity::from_der(&two).unwrap();
        assert_eq!(p.spiffe_id, None);
        assert_eq!(p.actor(), "cert:8a01");

        let mixed = cert(&["https://acme.example/x", ID], &["UP.acme"], None);
        let p = PeerIdentity::from_der(&mixed).unwrap();
        assert_eq!(p.spiffe_id.as_ref().map(SpiffeId::as_str), Some(ID));
        assert_eq!(p.dns_names, ["up.acme"]);
        assert_eq!(p.organization, None);

        let invalid = cert(&["spiffe://Acme.example/x"], &[], None);
        assert_eq!(PeerIdentity::from_der(&invalid).unwrap().spiffe_id, None);
        let bare = cert(&["spiffe://acme.example"], &[], None);
        assert_eq!(PeerIdentity::from_der(&bare).unwrap().spiffe_id, None);
    }

    #[test]
    fn no_sans_is_fine() {
        let p = PeerIdentity::from_der(&cert(&[], &[], Some("acme"))).unwrap();
        assert_eq!(p.spiffe_id, None);
        assert!(p.dns_names.is_empty());
        assert_eq!(p.actor(), "cert:8a01");
    }

    #[test]
    fn malformed_der_is_an_error_not_a_panic() {
        let good = cert(&[ID], &["a.acme"], None);
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x82, 0xff, 0xff, 0x00],
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &good[..good.len() / 2],
        ] {
            assert!(PeerIdentity::from_der(bad).is_err());
        }
        // Every truncation and every single-byte corruption: an error or an identity, no panic.
        for cut in 0..good.len() {
            let _ = PeerIdentity::from_der(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut flipped = good.clone();
            flipped[i] ^= 0xff;
            let _ = PeerIdentity::from_der(&flipped);
        }
    }
}
