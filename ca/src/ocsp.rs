//! The OCSP responder (RFC 6960, with RFC 5019's lightweight profile in mind): a DER
//! `OCSPRequest` in, a DER `OCSPResponse` out, always. Each certificate asked about is looked up
//! in the inventory (good, revoked with its time and reason, or unknown: a serial the CA never
//! issued, or another issuer); the response is signed by the delegated OCSP signing certificate
//! (`id-kp-OCSPSigning`, `id-pkix-ocsp-nocheck`), whose key lives in the CA's backend. A nonce
//! in the request is echoed. Bytes that are not a request, or ask about too many certificates,
//! get `malformedRequest`; a signature the backend cannot make gets `tryLater`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{BitString, OctetString};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::ext::pkix::CrlReason;
use x509_cert::ext::Extension;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use crate::crl::RevocationReason;
use crate::ids::Serial;
use crate::inventory::{CertStatus as InventoryStatus, InventoryStore};
use crate::key::{KeyAlgorithm, SigningKey};
use crate::CaError;

/// Most certificates one request may ask about.
pub const MAX_CERTS_PER_REQUEST: usize = 16;
/// Longest nonce accepted (RFC 8954 §2.1: longer ones are refused as malformed).
const MAX_NONCE: usize = 32;

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OCSP_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");

/// What one answer was, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OcspOutcome {
    /// A signed response (each certificate good, revoked or unknown).
    Signed,
    /// `malformedRequest`: the bytes were not a request this responder accepts.
    Malformed,
    /// `tryLater`: the signing key or the inventory could not be reached.
    TryLater,
    /// `internalError`: the response could not be encoded.
    InternalError,
}

/// One answer: the DER `OCSPResponse`, and until when a signed one may be cached.
#[derive(Debug, Clone)]
pub struct OcspAnswer {
    pub der: Vec<u8>,
    pub outcome: OcspOutcome,
    /// The responses' `nextUpdate` (signed answers only).
    pub next_update: Option<SystemTime>,
}

/// The issuer's name and key hashed under one algorithm, as a CertID carries them.
#[derive(Debug)]
struct IssuerHashes {
    algorithm: ObjectIdentifier,
    name: Vec<u8>,
    key: Vec<u8>,
}

/// Answers OCSP requests about the certificates of one issuing intermediate.
pub struct OcspResponder {
    inventory: Arc<dyn InventoryStore>,
    key: Arc<dyn SigningKey>,
    /// The delegated signing certificate, sent with every response.
    signer: Certificate,
    signer_not_after: SystemTime,
    responder_id: ResponderId,
    issuer: [IssuerHashes; 2],
    /// `nextUpdate - thisUpdate` (the CRL's).
    validity: Duration,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder")
            .field("signer_not_after", &self.signer_not_after)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

fn digest(algorithm: &'static ring::digest::Algorithm, data: &[u8]) -> Vec<u8> {
    ring::digest::digest(algorithm, data).as_ref().to_vec()
}

fn to_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn generalized(t: SystemTime) -> Result<OcspGeneralizedTime, der::Error> {
    OcspGeneralizedTime::try_from(to_seconds(t))
}

fn crl_reason(reason: RevocationReason) -> CrlReason {
    match reason {
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::CaCompromise => CrlReason::CaCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::CertificateHold => CrlReason::CertificateHold,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => CrlReason::AaCompromise,
        RevocationReason::Unspecified => CrlReason::Unspecified,
    }
}

/// Why a request is refused as malformed (logged at debug, never sent).
#[derive(Debug)]
struct Malformed(String);

impl OcspResponder {
    /// A responder for the intermediate `issuer_der`, signing with `key` under the delegated
    /// certificate `signer_der` (issued by that intermediate to `key`).
    pub(crate) fn new(
        inventory: Arc<dyn InventoryStore>,
        key: Arc<dyn SigningKey>,
        signer_der: &[u8],
        issuer_der: &[u8],
        validity: Duration,
    ) -> Result<Self, CaError> {
        let bad = |what: &str, e: der::Error| CaError::State {
            path: what.to_owned(),
            detail: format!("unparsable: {e}"),
        };
        let signer = Certificate::from_der(signer_der).map_err(|e| bad("ocsp.pem", e))?;
        let issuer = Certificate::from_der(issuer_der).map_err(|e| bad("intermediate.pem", e))?;
        let name = issuer
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|e| bad("intermediate.pem", e))?;
        let issuer_key = issuer
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        let spki = SubjectPublicKeyInfoRef::from_der(key.public_key_der())
            .map_err(|e| bad("OCSP signing key", e))?;
        let key_hash = digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            spki.subject_public_key.raw_bytes(),
        );
        let signer_not_after = signer.tbs_certificate.validity.not_after.to_system_time();
        Ok(Self {
            inventory,
            key,
            signer,
            signer_not_after,
            responder_id: ResponderId::ByKey(
                OctetString::new(key_hash).map_err(|e| bad("OCSP signing key", e))?,
            ),
            issuer: [
                IssuerHashes {
                    algorithm: SHA1,
                    name: digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &name),
                    key: digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, issuer_key),
                },
                IssuerHashes {
                    algorithm: SHA256,
                    name: digest(&ring::digest::SHA256, &name),
                    key: digest(&ring::digest::SHA256, issuer_key),
                },
            ],
            validity,
        })
    }

    /// When the delegated signing certificate expires.
    pub fn signer_not_after(&self) -> SystemTime {
        self.signer_not_after
    }

    /// Answers one DER `OCSPRequest` (whatever the bytes: never panics, always a response).
    pub fn respond(&self, request: &[u8], now: SystemTime) -> OcspAnswer {
        let request = match parse_request(request) {
            Ok(r) => r,
            Err(Malformed(why)) => {
                tracing::debug!(ocsp.refusal = %why, "OCSP request malformed");
                return unsigned(OcspOutcome::Malformed, &OcspResponse::malformed_request());
            }
        };
        match self.sign(&request, now) {
            Ok((der, next_update)) => OcspAnswer {
                der,
                outcome: OcspOutcome::Signed,
                next_update: Some(next_update),
            },
            Err(SignError::Unavailable(e)) => {
                tracing::warn!(error = %e, "OCSP response not signed: try later");
                Self::try_later()
            }
            Err(SignError::Encoding(e)) => {
                tracing::error!(error = %e, "OCSP response could not be encoded");
                Self::internal_error()
            }
        }
    }

    /// The `tryLater` answer (e.g. for a request shed under load).
    pub fn try_later() -> OcspAnswer {
        unsigned(OcspOutcome::TryLater, &OcspResponse::try_later())
    }

    /// The `internalError` answer.
    pub fn internal_error() -> OcspAnswer {
        unsigned(OcspOutcome::InternalError, &OcspResponse::internal_error())
    }

    fn status(&self, id: &CertId, now: SystemTime) -> Result<CertStatus, SignError> {
        let ours = self.issuer.iter().any(|h| {
            h.algorithm == id.hash_algorithm.oid
                && h.name == id.issuer_name_hash.as_bytes()
                && h.key == id.issuer_key_hash.as_bytes()
        });
        if !ours {
            return Ok(CertStatus::unknown());
        }
        let serial = Serial::from_be_bytes(id.serial_number.as_bytes());
        let Some(record) = self
            .inventory
            .get(&serial, now)
            .map_err(SignError::Unavailable)?
        else {
            return Ok(CertStatus::unknown());
        };
        Ok(match record.status {
            InventoryStatus::Revoked => CertStatus::revoked(RevokedInfo {
                revocation_time: generalized(record.revoked_at.unwrap_or(now))?,
                revocation_reason: Some(crl_reason(
                    record
                        .revocation_reason
                        .unwrap_or(RevocationReason::Unspecified),
                )),
            }),
            InventoryStatus::Valid | InventoryStatus::Expired => CertStatus::good(),
        })
    }

    fn sign(
        &self,
        request: &OcspRequest,
        now: SystemTime,
    ) -> Result<(Vec<u8>, SystemTime), SignError> {
        let this_update = to_seconds(now);
        let next_update = this_update + self.validity;
        let responses = request
            .tbs_request
            .request_list
            .iter()
            .map(|r| {
                Ok(SingleResponse {
                    cert_id: r.req_cert.clone(),
                    cert_status: self.status(&r.req_cert, now)?,
                    this_update: generalized(this_update)?,
                    next_update: Some(generalized(next_update)?),
                    single_extensions: None,
                })
            })
            .collect::<Result<Vec<_>, SignError>>()?;
        let nonce = request
            .tbs_request
            .request_extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == OCSP_NONCE)
            .map(|e| Extension {
                critical: false,
                ..e.clone()
            });
        let tbs = ResponseData {
            version: Version::V1,
            responder_id: self.responder_id.clone(),
            produced_at: generalized(now)?,
            responses,
            response_extensions: nonce.map(|n| vec![n]),
        };
        let signature = self
            .key
            .sign(&tbs.to_der()?)
            .map_err(SignError::Unavailable)?;
        let basic = BasicOcspResponse {
            tbs_response_data: tbs,
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: match self.key.algorithm() {
                    KeyAlgorithm::EcdsaP256Sha256 => ECDSA_WITH_SHA256,
                    KeyAlgorithm::EcdsaP384Sha384 => ECDSA_WITH_SHA384,
                },
                parameters: None,
            },
            signature: BitString::from_bytes(&signature)?,
            certs: Some(vec![self.signer.clone()]),
        };
        Ok((OcspResponse::successful(basic)?.to_der()?, next_update))
    }
}

/// An unsigned answer: a status alone (its encoding is a few fixed bytes).
fn unsigned(outcome: OcspOutcome, response: &OcspResponse) -> OcspAnswer {
    OcspAnswer {
        der: response.to_der().unwrap_or_default(),
        outcome,
        next_update: None,
    }
}

enum SignError {
    Unavailable(CaError),
    Encoding(der::Error),
}

impl From<der::Error> for SignError {
    fn from(e: der::Error) -> Self {
        SignError::Encoding(e)
    }
}

/// Reads a request and checks what this responder accepts: 1 to
/// [`MAX_CERTS_PER_REQUEST`] certificates, a nonce of at most 32 octets, no critical extension.
fn parse_request(bytes: &[u8]) -> Result<OcspRequest, Malformed> {
    let request = OcspRequest::from_der(bytes).map_err(|e| Malformed(format!("DER: {e}")))?;
    let count = request.tbs_request.request_list.len();
    if count == 0 || count > MAX_CERTS_PER_REQUEST {
        return Err(Malformed(format!(
            "{count} certificates asked about (1 to {MAX_CERTS_PER_REQUEST} accepted)"
        )));
    }
    let extensions = request.tbs_request.request_extensions.iter().flatten();
    for e in extensions.chain(
        request
            .tbs_request
            .request_list
            .iter()
            .flat_map(|r| r.single_request_extensions.iter().flatten()),
    ) {
        if e.extn_id == OCSP_NONCE {
            let nonce = OctetString::from_der(e.extn_value.as_bytes())
                .map_err(|e| Malformed(format!("nonce: {e}")))?;
            if nonce.as_bytes().is_empty() || nonce.as_bytes().len() > MAX_NONCE {
                return Err(Malformed(format!(
                    "nonce of {} octets (1 to {MAX_NONCE} accepted)",
                    nonce.as_bytes().len()
                )));
            }
        } else if e.critical {
            return Err(Malformed(format!("critical extension {}", e.extn_id)));
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x30],
            vec![0x30, 0x80],
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            vec![0x30, 0x03, 0x30, 0x01, 0x30],
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            vec![0x30, 0x02, 0x30, 0x00],
        ];
        // Deep nesting, then a simple xorshift over bytes.
        inputs.push([0x30, 0x80].repeat(500));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..300 {
            let mut v = vec![0x30, 0x82, 0x01, 0x00];
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x.to_le_bytes()[0]);
            }
            inputs.push(v);
        }
        for input in inputs {
            assert!(parse_request(&input).is_err(), "{input:02x?}");
        }
    }
}
