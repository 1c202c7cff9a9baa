//! JWS as ACME uses it (RFC 8555 §6.2): flattened JSON serialisation, ES256 or RS256 account
//! keys (verified by ring), the `jwk` or `kid` form, `nonce` and `url` in the protected header;
//! the external account binding's HS256 MAC (§7.3.4); JWK thumbprints (RFC 7638).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;

use super::problem::Problem;

/// A request body: the JWS in flattened JSON serialisation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlattenedJws {
    pub(crate) protected: String,
    pub(crate) payload: String,
    pub(crate) signature: String,
}

/// The protected header of an account-key JWS.
#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    jwk: Option<Value>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

/// An account public key: only what the algorithms allowed for account keys use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Jwk {
    /// P-256 (`ES256`): the coordinates, 32 bytes each.
    P256 { x: Vec<u8>, y: Vec<u8> },
    /// RSA (`RS256`), modulus 2048 to 8192 bits.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// Who signed: a key given in the header (`newAccount`, revocation) or an account URL.
#[derive(Debug, Clone)]
pub(crate) enum Signer {
    Jwk(Jwk),
    Kid(String),
}

/// A JWS whose header was read, not yet verified.
#[derive(Debug)]
pub(crate) struct ParsedJws {
    pub(crate) alg: String,
    pub(crate) signer: Signer,
    pub(crate) nonce: String,
    pub(crate) url: String,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    payload: Vec<u8>,
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn unb64(text: &str, what: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Problem::malformed(format!("{what} is not unpadded base64url")))
}

/// Reads the body and the protected header. Refuses `alg: none`, HMAC and anything but ES256
/// and RS256, a header with both or neither of `jwk` and `kid`, and one without nonce or url.
pub(crate) fn parse(body: &[u8]) -> Result<ParsedJws, Problem> {
    let jws: FlattenedJws = serde_json::from_slice(body)
        .map_err(|_| Problem::malformed("the body is not a flattened JWS"))?;
    let header: Header = serde_json::from_slice(&unb64(&jws.protected, "protected")?)
        .map_err(|_| Problem::malformed("the protected header is not the expected JSON"))?;
    if !matches!(header.alg.as_str(), "ES256" | "RS256") {
        return Err(bad_alg());
    }
    let signer = match (header.jwk, header.kid) {
        (Some(jwk), None) => Signer::Jwk(Jwk::from_json(&jwk)?),
        (None, Some(kid)) => Signer::Kid(kid),
        _ => {
            return Err(Problem::malformed(
                "the protected header must hold exactly one of jwk and kid",
            ))
        }
    };
    let nonce = header.nonce.ok_or_else(Problem::bad_nonce)?;
    let url = header
        .url
        .ok_or_else(|| Problem::unauthorized("the protected header has no url"))?;
    Ok(ParsedJws {
        alg: header.alg,
        signer,
        nonce,
        url,
        signing_input: format!("{}.{}", jws.protected, jws.payload).into_bytes(),
        signature: unb64(&jws.signature, "signature")?,
        payload: unb64(&jws.payload, "payload")?,
    })
}

fn bad_alg() -> Problem {
    Problem::new(
        axum::http::StatusCode::BAD_REQUEST,
        "badSignatureAlgorithm",
        "account keys sign with ES256 or RS256",
    )
}

impl ParsedJws {
    /// The payload once the signature verifies with `key` (whose type must fit `alg`).
    pub(crate) fn verify(self, key: &Jwk) -> Result<Vec<u8>, Problem> {
        let ok = match (self.alg.as_str(), key) {
            ("ES256", Jwk::P256 { x, y }) => {
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(&self.signing_input, &self.signature)
                    .is_ok()
            }
            ("RS256", Jwk::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    &self.signing_input,
                    &self.signature,
                )
                .is_ok(),
            _ => return Err(bad_alg()),
        };
        if ok {
            Ok(self.payload)
        } else {
            Err(Problem::malformed("the JWS signature does not verify"))
        }
    }
}

impl Jwk {
    pub(crate) fn from_json(v: &Value) -> Result<Self, Problem> {
        let field = |name: &str| -> Result<Vec<u8>, Problem> {
            let text = v
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| Problem::malformed(format!("the jwk has no {name}")))?;
            unb64(text, "a jwk member")
        };
        match v.get("kty").and_then(Value::as_str) {
            Some("EC") if v.get("crv").and_then(Value::as_str) == Some("P-256") => {
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(Problem::malformed("a P-256 jwk has 32-byte coordinates"));
                }
                Ok(Jwk::P256 { x, y })
            }
            Some("RSA") => {
                let (n, e) = (field("n")?, field("e")?);
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if !(2048..=8192).contains(&bits) || e.is_empty() || e.len() > 4 {
                    return Err(Problem::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        "badPublicKey",
                        "RSA account keys are 2048 to 8192 bits",
                    ));
                }
                Ok(Jwk::Rsa { n, e })
            }
            _ => Err(Problem::new(
                axum::http::StatusCode::BAD_REQUEST,
                "badPublicKey",
                "account keys are P-256 or RSA",
            )),
        }
    }

    /// The canonical JSON of RFC 7638 (members in lexical order, no spaces), also what is stored.
    pub(crate) fn canonical(&self) -> String {
        match self {
            Jwk::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            ),
            Jwk::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n)),
        }
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url): the key's name in key authorizations.
    pub(crate) fn thumbprint(&self) -> String {
        b64(ring::digest::digest(&ring::digest::SHA256, self.canonical().as_bytes()).as_ref())
    }
}

/// The external account binding of a `newAccount` payload: an HS256 JWS by the EAB key over
/// the account key, for the same URL. Returns its key id once `mac_key(kid)` verifies it.
pub(crate) fn verify_eab(
    eab: &Value,
    account_key: &Jwk,
    url: &str,
    mac_key: impl FnOnce(&str) -> Result<Option<Vec<u8>>, Problem>,
) -> Result<String, Problem> {
    let refused = || Problem::unauthorized("the external account binding does not verify");
    let jws: FlattenedJws = serde_json::from_value(eab.clone())
        .map_err(|_| Problem::malformed("externalAccountBinding is not a flattened JWS"))?;
    let header: Value = serde_json::from_slice(&unb64(&jws.protected, "protected")?)
        .map_err(|_| Problem::malformed("the binding's protected header is not JSON"))?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256")
        || header.get("nonce").is_some()
        || header.get("url").and_then(Value::as_str) != Some(url)
    {
        return Err(refused());
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(refused)?
        .to_owned();
    let Some(key) = mac_key(&kid)? else {
        return Err(refused());
    };
    let mac = unb64(&jws.signature, "signature")?;
    let input = format!("{}.{}", jws.protected, jws.payload);
    ring::hmac::verify(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        input.as_bytes(),
        &mac,
    )
    .map_err(|_| refused())?;
    let bound: Value = serde_json::from_slice(&unb64(&jws.payload, "payload")?)
        .map_err(|_| Problem::malformed("the binding's payload is not a jwk"))?;
    if Jwk::from_json(&bound)? != *account_key {
        return Err(refused());
    }
    Ok(kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_none_and_hmac_and_garbage_without_panicking() {
        let header = |h: &str| {
            serde_json::json!({"protected": b64(h.as_bytes()), "payload": "", "signature": ""})
                .to_string()
        };
        for alg in ["none", "HS256", "ES384", "EdDSA"] {
            let body = header(&format!(
                r#"{{"alg":"{alg}","kid":"k","nonce":"n","url":"u"}}"#
            ));
            let e = parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.kind, "badSignatureAlgorithm", "{alg}");
        }
        let both = header(r#"{"alg":"ES256","kid":"k","jwk":{},"nonce":"n","url":"u"}"#);
        assert_eq!(parse(both.as_bytes()).unwrap_err().kind, "malformed");
        for junk in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"protected\":\"%%\",\"payload\":\"\",\"signature\":\"\"}",
        ] {
            assert!(parse(junk).is_err());
        }
    }
}
