//! Issuance and renewal: the profile a request is decided under (for a renewal, the renewed
//! certificate's), the CSR read once by the CA's own parser, the permit, the signed leaf and
//! its inventory record, and one event for the outcome.

use std::time::SystemTime;

use der::asn1::Ia5String;
use der::Encode;
use rcgen::{
    CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SerialNumber,
};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};

use super::{Ca, IssueRequest, IssuedCertificate, RequesterKind, CLOCK_SKEW};
use crate::csr::read_csr;
use crate::events;
use crate::ids::{Serial, TenantId};
use crate::inventory::{format_time, CertRecord, CertStatus, NewCertRecord};
use crate::key::RcgenSigner;
use crate::profile::{shown, IssuanceProfile, IssueRefusal, ProfileRole};
use crate::CaError;

/// id-pe-authorityInfoAccess (RFC 5280 §4.2.2.1).
const AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
/// id-ad-ocsp.
const AD_OCSP: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");

/// Where a certificate's revocation status is published: the CRL distribution points and the
/// OCSP responder (as an authority information access extension), built once at open.
#[derive(Debug, Clone, Default)]
pub(crate) struct RevocationUrls {
    crl_distribution_points: Vec<String>,
    /// The DER of the authority information access extension's value, when there is an OCSP URL.
    authority_info_access: Option<Vec<u8>>,
}

impl RevocationUrls {
    pub(crate) fn new(
        crl_distribution_points: &[String],
        ocsp_url: Option<&str>,
    ) -> Result<Self, CaError> {
        let authority_info_access = ocsp_url
            .map(|url| {
                let bad = |e: der::Error| CaError::Config(format!("ocsp_url {url:?}: {e}"));
                AuthorityInfoAccessSyntax(vec![AccessDescription {
                    access_method: AD_OCSP,
                    access_location: GeneralName::UniformResourceIdentifier(
                        Ia5String::new(url).map_err(bad)?,
                    ),
                }])
                .to_der()
                .map_err(bad)
            })
            .transpose()?;
        Ok(Self {
            crl_distribution_points: crl_distribution_points.to_vec(),
            authority_info_access,
        })
    }

    /// Writes the extensions into a certificate's parameters.
    pub(crate) fn apply(&self, params: &mut CertificateParams) {
        if !self.crl_distribution_points.is_empty() {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: self.crl_distribution_points.clone(),
            }];
        }
        if let Some(aia) = &self.authority_info_access {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    AUTHORITY_INFO_ACCESS,
                    aia.clone(),
                ));
        }
    }
}

impl Ca {
    fn profile(
        &self,
        tenant: &TenantId,
        name: Option<&str>,
    ) -> Result<&IssuanceProfile, IssueRefusal> {
        let mut candidates = self
            .core
            .profiles
            .iter()
            .filter(|p| p.tenant == *tenant && name.is_none_or(|n| p.name == n));
        match (candidates.next(), candidates.next()) {
            (Some(p), None) => Ok(p),
            (None, _) => Err(IssueRefusal::ProfileNotFound {
                tenant: tenant.to_string(),
                profile: name.map_or_else(|| "(any)".to_owned(), |n| format!("{:?}", shown(n))),
            }),
            (Some(_), Some(_)) => Err(IssueRefusal::ProfileNotFound {
                tenant: tenant.to_string(),
                profile: "(unnamed: the tenant has several; name one)".to_owned(),
            }),
        }
    }

    /// Issues a certificate for a CSR: verifies it, checks it against the tenant's profile,
    /// signs with the issuing key and records it in the inventory (an unrecorded certificate is
    /// never returned). The CSR's subject is ignored: the certificate says `O=<tenant>` and
    /// `CN=<first DNS name>` (when there is one), and carries only the SANs the profile allowed.
    /// Valid from `now - 60s` to `now + lifetime` (cut to the intermediate's expiry).
    /// Refusals are [`CaError::Refused`]; an unreachable HSM is [`CaError::BackendUnavailable`].
    ///
    /// A profile with `role: operator` issues only when the requester is an operator.
    ///
    /// Records one event: the issuance, or the refusal (with the profile asked for and the
    /// name the CSR asked for). Other failures record nothing: nothing was decided.
    pub fn issue(
        &self,
        req: &IssueRequest<'_>,
        now: SystemTime,
    ) -> Result<IssuedCertificate, CaError> {
        self.issue_recorded(req, None, now)
    }

    /// Renews `current` for its holder, as [`Ca::issue`] does a first certificate, and records
    /// the new certificate as its renewal (revoking `current` revokes it too). The renewal keeps
    /// `current`'s tenant and profile (a request naming another profile is refused with
    /// `renewal_profile_changed`) and may carry only its names: the same SPIFFE ID and a subset
    /// of its DNS names, compared on what would be issued (`identity_mismatch`). `current`
    /// must be valid (`not_renewable`).
    pub fn renew(
        &self,
        req: &IssueRequest<'_>,
        current: &Serial,
        now: SystemTime,
    ) -> Result<IssuedCertificate, CaError> {
        self.issue_recorded(req, Some(current), now)
    }

    /// Decides a first issuance without signing it: the profile, the CSR and the permit, as
    /// [`Ca::issue`] would, so that a request that waits (for approval) is one the CA would
    /// grant. Returns the profile it would be issued under. A refusal is recorded as
    /// [`Ca::issue`] records one; a granted check records nothing (nothing was issued).
    pub fn check_issue(
        &self,
        req: &IssueRequest<'_>,
        now: SystemTime,
    ) -> Result<&IssuanceProfile, CaError> {
        let result = self.basis(req, None, now).and_then(|(profile, _)| {
            let csr = read_csr(req.csr)?;
            profile.permit(&csr, req.lifetime)?;
            Ok(profile)
        });
        if let Err(CaError::Refused(refusal)) = &result {
            tracing::info!(
                tenant.id = %req.tenant,
                ca.requester = %req.requester,
                refusal.code = refusal.code(),
                refusal.reason = %refusal,
                "issuance refused"
            );
            self.record(|| {
                events::refused(
                    &req.requester,
                    Some(&req.tenant),
                    events::csr_subject(req.csr),
                    req.profile,
                    refusal.code(),
                    refusal,
                )
            });
        }
        result
    }

    /// Issues or renews, and records the outcome (one event).
    fn issue_recorded(
        &self,
        req: &IssueRequest<'_>,
        renews: Option<&Serial>,
        now: SystemTime,
    ) -> Result<IssuedCertificate, CaError> {
        let result = self.issue_inner(req, renews, now);
        match &result {
            Ok(issued) => {
                tracing::info!(
                    ca.serial = %issued.serial,
                    tenant.id = %req.tenant,
                    ca.profile = %issued.profile,
                    ca.requester = %req.requester,
                    ca.renewed_from = issued.renewed_from.as_ref().map(ToString::to_string).unwrap_or_default(),
                    cert.spiffe_id = issued.spiffe_id.as_deref().unwrap_or(""),
                    cert.not_after = %format_time(issued.not_after),
                    "certificate issued"
                );
                self.record(|| events::issued(&req.requester, issued));
            }
            Err(CaError::Refused(refusal)) => {
                tracing::info!(
                    tenant.id = %req.tenant,
                    ca.requester = %req.requester,
                    refusal.code = refusal.code(),
                    refusal.reason = %refusal,
                    "issuance refused"
                );
                self.record(|| {
                    events::refused(
                        &req.requester,
                        Some(&req.tenant),
                        events::csr_subject(req.csr),
                        req.profile,
                        refusal.code(),
                        refusal,
                    )
                });
            }
            Err(e) => tracing::warn!(tenant.id = %req.tenant, error = %e, "issuance failed"),
        }
        result
    }

    /// The profile a request is decided under, and for a renewal the certificate renewed.
    fn basis(
        &self,
        req: &IssueRequest<'_>,
        renews: Option<&Serial>,
        now: SystemTime,
    ) -> Result<(&IssuanceProfile, Option<CertRecord>), CaError> {
        let Some(serial) = renews else {
            let profile = self.profile(&req.tenant, req.profile)?;
            if profile.role == ProfileRole::Operator
                && req.requester.kind != RequesterKind::Operator
            {
                return Err(IssueRefusal::OperatorProfile(profile.name.clone()).into());
            }
            return Ok((profile, None));
        };
        let not_renewable = |why: String| IssueRefusal::NotRenewable {
            serial: serial.to_string(),
            why,
        };
        let current = self
            .core
            .inventory
            .get(serial, now)?
            .ok_or_else(|| not_renewable("it is not in the inventory".to_owned()))?;
        if current.status != CertStatus::Valid {
            return Err(not_renewable(format!("it is {}", current.status)).into());
        }
        if current.tenant != req.tenant {
            return Err(not_renewable(format!("it belongs to tenant {}", current.tenant)).into());
        }
        if let Some(asked) = req.profile.filter(|asked| *asked != current.profile) {
            return Err(IssueRefusal::RenewalProfileChanged {
                current: current.profile.clone(),
                requested: shown(asked),
            }
            .into());
        }
        let profile = self.profile(&current.tenant, Some(&current.profile))?;
        Ok((profile, Some(current)))
    }

    fn issue_inner(
        &self,
        req: &IssueRequest<'_>,
        renews: Option<&Serial>,
        now: SystemTime,
    ) -> Result<IssuedCertificate, CaError> {
        let (profile, current) = self.basis(req, renews, now)?;
        let csr = read_csr(req.csr)?;
        let permit = profile.permit(&csr, req.lifetime)?;
        if let Some(current) = &current {
            permit.within(&current.sans)?;
        }
        let renewed_from = current.map(|c| c.serial);

        let serial = Serial::random()?;
        let not_before = now - CLOCK_SKEW;
        let mut not_after = now + permit.lifetime;
        if not_after > self.core.issuer_not_after {
            tracing::warn!(tenant.id = %req.tenant, "lifetime cut to the intermediate's expiry");
            not_after = self.core.issuer_not_after;
        }

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, req.tenant.as_str());
        let mut subject = format!("O={}", req.tenant);
        if let Some(first) = permit.dns_names.iter().find(|n| n.as_str().len() <= 64) {
            dn.push(DnType::CommonName, first.as_str());
            subject.push_str(&format!(", CN={}", first.as_str()));
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if permit.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if permit.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        let mut sans = Vec::new();
        if let Some(id) = &permit.spiffe_id {
            params
                .subject_alt_names
                .push(SanType::URI(id.as_str().to_owned().try_into()?));
            sans.push(format!("URI:{}", id.as_str()));
        }
        for name in &permit.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.as_str().to_owned().try_into()?));
            sans.push(format!("DNS:{}", name.as_str()));
        }
        self.core.revocation_urls.apply(&mut params);

        let subject_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)
            .map_err(|e| IssueRefusal::CsrMalformed(format!("subject key: {e}")))?;
        let cert = params
            .signed_by(&subject_key, &self.core.issuer)
            .map_err(RcgenSigner::error)?;
        let cert_der = cert.der().to_vec();
        let cert_pem = cert.pem();

        self.core.inventory.record_issued(&NewCertRecord {
            serial: serial.clone(),
            subject,
            sans,
            tenant: req.tenant.clone(),
            profile: profile.name.clone(),
            requester: req.requester.to_string(),
            not_before,
            not_after,
            cert_der: cert_der.clone(),
            renewed_from: renewed_from.clone(),
            region: self.core.region.clone(),
        })?;

        Ok(IssuedCertificate {
            serial,
            chain_pem: format!("{cert_pem}{}", self.core.intermediate_pem),
            cert_der,
            cert_pem,
            not_before,
            not_after,
            spiffe_id: permit.spiffe_id.map(|id| id.as_str().to_owned()),
            dns_names: permit
                .dns_names
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect(),
            tenant: req.tenant.clone(),
            profile: profile.name.clone(),
            renewed_from,
        })
    }
}
