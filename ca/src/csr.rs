//! Reading an untrusted PKCS#10 CSR (PEM or DER) into the facts the profile decides on.
//! Everything here is a refusal, never a panic: the bytes come from the requester.

use std::collections::HashSet;

use x509_parser::asn1_rs::{Header, Length};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::{ExtensionRequest, ParsedCriAttribute};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use crate::profile::{shown, IssueRefusal, KeyType};

/// Largest CSR accepted, PEM or DER.
pub(crate) const MAX_CSR_BYTES: usize = 16 * 1024;

/// Microsoft's extension request attribute (szOID_CERT_EXTENSIONS).
const OID_MS_EXTENSION_REQUEST: &str = "1.3.6.1.4.1.311.2.1.14";

/// The extended key usages a CSR asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestedEku {
    pub(crate) client_auth: bool,
    pub(crate) server_auth: bool,
    /// Anything else, named.
    pub(crate) other: Vec<String>,
}

/// What a verified CSR asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CsrFacts {
    pub(crate) key_type: KeyType,
    /// The subject key, DER SubjectPublicKeyInfo as found in the CSR.
    pub(crate) spki_der: Vec<u8>,
    pub(crate) uris: Vec<String>,
    pub(crate) dns_names: Vec<String>,
    /// SANs of other types, described.
    pub(crate) other_sans: Vec<String>,
    pub(crate) eku: Option<RequestedEku>,
}

/// Parses, verifies the self-signature, and reads the request. Refuses CA requests and
/// extensions the CA does not grant.
pub(crate) fn read_csr(input: &[u8]) -> Result<CsrFacts, IssueRefusal> {
    if input.len() > MAX_CSR_BYTES {
        return Err(IssueRefusal::CsrTooLarge {
            size: input.len(),
            limit: MAX_CSR_BYTES,
        });
    }
    let der = to_der(input)?;
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| IssueRefusal::CsrMalformed(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(IssueRefusal::CsrMalformed(format!(
            "{} trailing bytes after the request",
            rest.len()
        )));
    }
    let info = &csr.certification_request_info;
    let key_type = key_type(&info.subject_pki)?;
    csr.verify_signature()
        .map_err(|_| IssueRefusal::CsrSignatureInvalid)?;

    let mut facts = CsrFacts {
        key_type,
        spki_der: info.subject_pki.raw.to_vec(),
        uris: Vec::new(),
        dns_names: Vec::new(),
        other_sans: Vec::new(),
        eku: None,
    };
    if let Some(request) = extension_request(&csr)? {
        for ext in &request.extensions {
            read_extension(&mut facts, ext.oid.to_id_string(), ext.parsed_extension())?;
        }
    }
    Ok(facts)
}

/// The CSR's one extension request, if any. Refuses every way of asking for extensions that
/// readers could see differently: a second extensionRequest attribute, a second value in one
/// (x509-parser reads the first value only), an extension requested twice, and Microsoft's
/// extension request attribute (which OpenSSL reads and x509-parser does not).
fn extension_request<'a>(
    csr: &'a X509CertificationRequest<'a>,
) -> Result<Option<&'a ExtensionRequest<'a>>, IssueRefusal> {
    let ambiguous = |why: String| Err(IssueRefusal::CsrAmbiguousExtensions(why));
    let mut found = None;
    for attr in csr.certification_request_info.iter_attributes() {
        if attr.oid.to_id_string() == OID_MS_EXTENSION_REQUEST {
            return ambiguous(format!(
                "a Microsoft extension request attribute ({OID_MS_EXTENSION_REQUEST}): ask for \
                 every extension in one PKCS#9 extensionRequest"
            ));
        }
        let ParsedCriAttribute::ExtensionRequest(request) = attr.parsed_attribute() else {
            continue;
        };
        if found.is_some() {
            return ambiguous("more than one extensionRequest attribute".to_owned());
        }
        if !single_value(attr.value) {
            return ambiguous("an extensionRequest attribute with more than one value".to_owned());
        }
        let mut seen = HashSet::with_capacity(request.extensions.len());
        for ext in &request.extensions {
            if !seen.insert(&ext.oid) {
                return ambiguous(format!(
                    "extension {} requested twice",
                    ext.oid.to_id_string()
                ));
            }
        }
        found = Some(request);
    }
    Ok(found)
}

/// Whether an attribute's value set (`SET OF`, as x509-parser hands it: the header and the
/// value it read) holds nothing beyond that one value.
fn single_value(set: &[u8]) -> bool {
    match Header::from_der(set) {
        Ok((content, header)) => header.length() == Length::Definite(content.len()),
        Err(_) => false,
    }
}

/// Runs the CSR parser on untrusted bytes (PEM or DER) and keeps only the verdict: for the
/// fuzz targets in `fuzz/`, which need the parser without a CA around it. Not a stable API.
#[doc(hidden)]
pub fn parse_csr_for_fuzzing(input: &[u8]) -> Result<(), IssueRefusal> {
    read_csr(input).map(|_| ())
}

/// The SANs a CSR asks for, from every extensionRequest attribute (as issuance merges them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedNames {
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
}

/// Reads the names a CSR asks for, leniently (no signature check, trailing bytes ignored):
/// for checks made before the CA is asked, and for the records of refused requests, which
/// are often the broken ones. `None` when nothing can be read.
pub fn requested_names(csr: &[u8]) -> Option<RequestedNames> {
    let trimmed = csr.trim_ascii_start();
    let pem;
    let der = if trimmed.starts_with(b"-----BEGIN") {
        pem = x509_parser::pem::parse_x509_pem(trimmed).ok()?.1;
        &pem.contents[..]
    } else {
        csr
    };
    let (_, req) = X509CertificationRequest::from_der(der).ok()?;
    let mut names = RequestedNames::default();
    for attr in req.certification_request_info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(request) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &request.extensions {
            let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() else {
                continue;
            };
            for name in &san.general_names {
                match name {
                    GeneralName::URI(u) => names.uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => names.dns_names.push((*d).to_owned()),
                    _ => {}
                }
            }
        }
    }
    Some(names)
}

fn to_der(input: &[u8]) -> Result<Vec<u8>, IssueRefusal> {
    let trimmed = input.trim_ascii_start();
    if !trimmed.starts_with(b"-----BEGIN") {
        return Ok(input.to_vec());
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(trimmed)
        .map_err(|e| IssueRefusal::CsrMalformed(format!("bad PEM: {e}")))?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(IssueRefusal::CsrMalformed(format!(
            "PEM block is {:?}, expected CERTIFICATE REQUEST",
            shown(&pem.label)
        )));
    }
    Ok(pem.contents)
}

fn key_type(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyType, IssueRefusal> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_SIG_ED25519 {
        return Ok(KeyType::Ed25519);
    }
    let unsupported = |what: String| IssueRefusal::KeyTypeNotAllowed {
        key: what,
        allowed: "ECDSA P-256, ECDSA P-384, Ed25519".to_owned(),
    };
    if *alg != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(unsupported(format!(
            "with algorithm OID {}",
            alg.to_id_string()
        )));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    match curve {
        Some(c) if c == OID_EC_P256 => Ok(KeyType::P256),
        Some(c) if c == OID_NIST_EC_P384 => Ok(KeyType::P384),
        Some(c) => Err(unsupported(format!("EC on curve {}", c.to_id_string()))),
        None => Err(unsupported("EC without a named curve".to_owned())),
    }
}

fn read_extension(
    facts: &mut CsrFacts,
    oid: String,
    ext: &ParsedExtension<'_>,
) -> Result<(), IssueRefusal> {
    match ext {
        ParsedExtension::BasicConstraints(bc) => {
            if bc.ca {
                return Err(IssueRefusal::CaRequested(
                    "basicConstraints CA:TRUE".to_owned(),
                ));
            }
        }
        ParsedExtension::KeyUsage(ku) => {
            if ku.key_cert_sign() {
                return Err(IssueRefusal::CaRequested("keyUsage keyCertSign".to_owned()));
            }
            if ku.crl_sign() {
                return Err(IssueRefusal::CaRequested("keyUsage cRLSign".to_owned()));
            }
        }
        ParsedExtension::NameConstraints(_) => {
            return Err(IssueRefusal::CaRequested("nameConstraints".to_owned()));
        }
        ParsedExtension::ExtendedKeyUsage(eku) => {
            let mut req = RequestedEku {
                client_auth: eku.client_auth,
                server_auth: eku.server_auth,
                other: eku.other.iter().map(|o| o.to_id_string()).collect(),
            };
            for (set, name) in [
                (eku.any, "anyExtendedKeyUsage"),
                (eku.code_signing, "codeSigning"),
                (eku.email_protection, "emailProtection"),
                (eku.time_stamping, "timeStamping"),
                (eku.ocsp_signing, "OCSPSigning"),
            ] {
                if set {
                    req.other.push(name.to_owned());
                }
            }
            facts.eku = Some(req);
        }
        ParsedExtension::SubjectAlternativeName(san) => {
            for name in &san.general_names {
                match name {
                    GeneralName::URI(uri) => facts.uris.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => facts.dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(_) => {
                        facts.other_sans.push("of type IP address".to_owned())
                    }
                    GeneralName::RFC822Name(_) => {
                        facts.other_sans.push("of type e-mail".to_owned())
                    }
                    GeneralName::OtherName(oid, _) => facts
                        .other_sans
                        .push(format!("of type otherName {}", oid.to_id_string())),
                    _ => facts.other_sans.push("of an unsupported type".to_owned()),
                }
            }
        }
        // The CA sets its own key identifiers; a requested one is harmless and ignored.
        ParsedExtension::SubjectKeyIdentifier(_) => {}
        ParsedExtension::ParseError { error } => {
            return Err(IssueRefusal::CsrMalformed(format!(
                "requested extension {oid}: {error}"
            )))
        }
        _ => return Err(IssueRefusal::ExtensionNotAllowed(oid)),
    }
    Ok(())
}
