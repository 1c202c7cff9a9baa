//! SPIFFE bundle endpoints (SPIFFE Trust Domain and Bundle, `https_web` profile): a trust
//! domain's X.509 authorities published as a JWK set, each `x509-svid` key carrying its CA
//! certificate in `x5c`, fetched over HTTPS against web PKI (or given) anchors.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use crate::oidc::http::ProviderHttp;
use crate::IdentityError;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most authorities accepted in one bundle.
const MAX_AUTHORITIES: usize = 64;

/// A trust domain's bundle as its endpoint served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeBundle {
    /// The X.509 authorities (CA certificates, DER).
    pub authorities: Vec<CertificateDer<'static>>,
    /// `spiffe_refresh_hint`: how often the publisher suggests fetching again.
    pub refresh_hint: Option<Duration>,
    /// `spiffe_sequence`, if given.
    pub sequence: Option<u64>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<Key>,
    #[serde(default)]
    spiffe_refresh_hint: Option<u64>,
    #[serde(default)]
    spiffe_sequence: Option<u64>,
}

#[derive(Deserialize)]
struct Key {
    #[serde(rename = "use", default)]
    usage: Option<String>,
    #[serde(default)]
    x5c: Vec<String>,
}

/// Reads a bundle document: every `x509-svid` key must carry exactly one certificate in `x5c`
/// that parses as a CA certificate; keys of other uses (`jwt-svid`) are ignored; a bundle
/// without any X.509 authority is refused (it would trust nobody, or hide a broken publisher).
pub fn parse_spiffe_bundle(json: &[u8]) -> Result<SpiffeBundle, String> {
    let doc: Document =
        serde_json::from_slice(json).map_err(|e| format!("not a SPIFFE bundle: {e}"))?;
    let mut authorities = Vec::new();
    for (i, key) in doc.keys.iter().enumerate() {
        if key.usage.as_deref() != Some("x509-svid") {
            continue;
        }
        let [cert] = key.x5c.as_slice() else {
            return Err(format!(
                "key {i}: an x509-svid key carries exactly one certificate in x5c, not {}",
                key.x5c.len()
            ));
        };
        let der = STANDARD
            .decode(cert)
            .map_err(|e| format!("key {i}: x5c is not base64: {e}"))?;
        let (rest, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("key {i}: x5c is not a certificate: {e}"))?;
        if !rest.is_empty() || !parsed.is_ca() {
            return Err(format!("key {i}: x5c is not a CA certificate"));
        }
        authorities.push(CertificateDer::from(der));
    }
    if authorities.is_empty() {
        return Err("the bundle has no x509-svid authority".to_owned());
    }
    if authorities.len() > MAX_AUTHORITIES {
        return Err(format!("more than {MAX_AUTHORITIES} authorities"));
    }
    Ok(SpiffeBundle {
        authorities,
        refresh_hint: doc.spiffe_refresh_hint.map(Duration::from_secs),
        sequence: doc.spiffe_sequence,
    })
}

/// One trust domain's bundle endpoint.
#[derive(Debug, Clone)]
pub struct BundleEndpoint {
    url: String,
    http: ProviderHttp,
}

impl BundleEndpoint {
    /// `url` must be `https`; the endpoint's server certificate is verified against `roots`.
    pub fn new(url: &str, roots: RootCertStore) -> Result<Self, IdentityError> {
        if !url.starts_with("https://") {
            return Err(IdentityError::Tls(format!(
                "{url}: a bundle endpoint is fetched over https only"
            )));
        }
        Ok(Self {
            url: url.to_owned(),
            http: ProviderHttp::new(roots, FETCH_TIMEOUT).map_err(IdentityError::Tls)?,
        })
    }

    /// Fetches and reads the bundle; any failure is a message naming the endpoint.
    pub async fn fetch(&self) -> Result<SpiffeBundle, String> {
        let (status, body) = self.http.get(&self.url).await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{}: HTTP {status}", self.url));
        }
        parse_spiffe_bundle(&body).map_err(|e| format!("{}: {e}", self.url))
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_der() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn bundles_are_read_strictly() {
        let ca = STANDARD.encode(ca_der());
        let doc = format!(
            r#"{{"keys":[{{"use":"x509-svid","kty":"EC","x5c":["{ca}"]}},{{"use":"jwt-svid","kty":"EC","kid":"k"}}],"spiffe_refresh_hint":300,"spiffe_sequence":7}}"#
        );
        let bundle = parse_spiffe_bundle(doc.as_bytes()).unwrap();
        assert_eq!(bundle.authorities.len(), 1);
        assert_eq!(bundle.refresh_hint, Some(Duration::from_secs(300)));
        assert_eq!(bundle.sequence, Some(7));

        let leaf = {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
            STANDARD.encode(params.self_signed(&key).unwrap().der())
        };
        for (bad, why) in [
            ("{}".to_owned(), "not a SPIFFE bundle"),
            (r#"{"keys":[]}"#.to_owned(), "no x509-svid authority"),
            (
                r#"{"keys":[{"use":"jwt-svid"}]}"#.to_owned(),
                "no x509-svid authority",
            ),
            (
                r#"{"keys":[{"use":"x509-svid","x5c":[]}]}"#.to_owned(),
                "exactly one",
            ),
            (
                r#"{"keys":[{"use":"x509-svid","x5c":["%%"]}]}"#.to_owned(),
                "not base64",
            ),
            (
                r#"{"keys":[{"use":"x509-svid","x5c":["AAAA"]}]}"#.to_owned(),
                "not a certificate",
            ),
            (
                format!(r#"{{"keys":[{{"use":"x509-svid","x5c":["{leaf}"]}}]}}"#),
                "not a CA",
            ),
        ] {
            let e = parse_spiffe_bundle(bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(BundleEndpoint::new("http://x.example/b", RootCertStore::empty()).is_err());
    }
}
