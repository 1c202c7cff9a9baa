//! The delegated OCSP signing certificate: issued by the intermediate to a key of its own in the
//! same backend (the HSM in production), with `id-kp-OCSPSigning` and `id-pkix-ocsp-nocheck`,
//! short-lived and kept in `STATE/ocsp.pem`, reissued when it nears its end.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Ca, CLOCK_SKEW};
use crate::crl::write_atomic;
use crate::ids::Serial;
use crate::key::{RcgenSigner, SigningKey};
use crate::ocsp::OcspResponder;
use crate::CaError;

/// How long a signing certificate is valid (id-pkix-ocsp-nocheck: RFC 6960 §4.2.2.2.1 asks
/// for a short one, since it cannot itself be revoked).
const SIGNER_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// A signing certificate with less left than this is reissued.
const SIGNER_RENEW_BEFORE: Duration = Duration::from_secs(2 * 24 * 3600);
/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1), whose value is NULL.
const OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];
const DER_NULL: [u8; 2] = [0x05, 0x00];

impl Ca {
    /// The OCSP responder: finds (or generates) the OCSP signing key in the issuing key's
    /// backend, reuses `STATE/ocsp.pem` while it certifies that key for more than two days, else
    /// issues a new signing certificate (seven days) and writes it there.
    pub fn ocsp_responder(&self, now: SystemTime) -> Result<OcspResponder, CaError> {
        let backend = self.core.backend.as_ref().ok_or_else(|| {
            CaError::Config(
                "this CA was opened without its key backend: no OCSP signing key".into(),
            )
        })?;
        let label = &self.core.ocsp_label;
        let key = match backend.find_key(label) {
            Ok(key) => key,
            Err(CaError::KeyNotFound { .. }) => {
                tracing::info!(key.label = %label, "generating the OCSP signing key");
                match backend.generate_key(label, self.core.algorithm) {
                    Err(CaError::KeyExists { .. }) => backend.find_key(label)?,
                    other => other?,
                }
            }
            Err(e) => return Err(e),
        };
        let path = self.core.state_dir.join("ocsp.pem");
        let current = std::fs::read(&path)
            .ok()
            .and_then(|pem| {
                x509_parser::pem::parse_x509_pem(&pem)
                    .ok()
                    .map(|(_, p)| p.contents)
            })
            .filter(|der| self.signer_usable(der, key.as_ref(), now));
        let signer_der = match current {
            Some(der) => der,
            None => {
                let (der, pem) = self.issue_ocsp_signer(key.as_ref(), now)?;
                write_atomic(&path, pem.as_bytes(), 0o644)?;
                tracing::info!(path = %path.display(), "OCSP signing certificate issued");
                der
            }
        };
        OcspResponder::new(
            Arc::clone(&self.core.inventory),
            key,
            &signer_der,
            &self.core.intermediate_der,
            self.core.crl_next_update,
        )
    }

    /// The certificate certifies `key`, was issued by this intermediate and has more than
    /// [`SIGNER_RENEW_BEFORE`] left.
    fn signer_usable(&self, der: &[u8], key: &dyn SigningKey, now: SystemTime) -> bool {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return false;
        };
        let Ok((_, issuer)) = X509Certificate::from_der(&self.core.intermediate_der) else {
            return false;
        };
        let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
        let left = (SystemTime::UNIX_EPOCH + Duration::from_secs(not_after))
            .duration_since(now)
            .unwrap_or_default();
        cert.public_key().raw == key.public_key_der()
            && cert.issuer().as_raw() == issuer.subject().as_raw()
            && cert.verify_signature(Some(issuer.public_key())).is_ok()
            && left > SIGNER_RENEW_BEFORE
    }

    fn issue_ocsp_signer(
        &self,
        key: &dyn SigningKey,
        now: SystemTime,
    ) -> Result<(Vec<u8>, String), CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Portcullis");
        dn.push(DnType::CommonName, "Portcullis OCSP Responder");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.serial_number = Some(SerialNumber::from_slice(Serial::random()?.as_bytes()));
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + SIGNER_VALIDITY)
            .min(self.core.issuer_not_after)
            .into();
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                OCSP_NOCHECK,
                DER_NULL.to_vec(),
            ));
        let subject_key = rcgen::SubjectPublicKeyInfo::from_der(key.public_key_der())
            .map_err(|e| CaError::Config(format!("OCSP signing key: {e}")))?;
        let cert = params
            .signed_by(&subject_key, &self.core.issuer)
            .map_err(RcgenSigner::error)?;
        Ok((cert.der().to_vec(), cert.pem()))
    }
}
