//! The certificate authority: a root and an issuing intermediate whose keys live in a backend,
//! issuance from CSRs under per-tenant profiles, the inventory, revocation and CRLs.
//!
//! State directory layout: `root.pem`, `intermediate.pem`, `bundle.pem` (the trust bundle:
//! the root), `chain.pem` (intermediate then root), `crl.pem` (current CRL, replaced
//! atomically), `inventory.sqlite3`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use portcullis_audit::CaEvent;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::config::CaConfig;
use crate::crl::{sign_crl, write_atomic, Crl, RevocationReason, RevokedEntry};
use crate::csr::read_csr;
use crate::events::{self, CaEventSink};
use crate::ids::{Serial, TenantId};
use crate::inventory::{
    format_time, CertRecord, CertStatus, InventoryFilter, InventoryStore, NewCertRecord,
    Revocation, RevocationScope, SqliteInventory,
};
use crate::key::{RcgenSigner, SigningKey};
use crate::profile::{IssuanceProfile, IssueRefusal, ProfileRole};
use crate::CaError;

/// Leaves start this long before `now`, for clocks slightly behind.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How the requester of a certificate authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequesterKind {
    /// A workload authenticated by its current client certificate (renewing, or revoking it).
    ClientCert,
    /// A workload's first certificate, with a bootstrap token.
    BootstrapToken,
    /// An operator (CLI, admin API).
    Operator,
}

impl fmt::Display for RequesterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequesterKind::ClientCert => "client-cert",
            RequesterKind::BootstrapToken => "bootstrap-token",
            RequesterKind::Operator => "operator",
        })
    }
}

/// Who asked for a certificate (recorded in the inventory and the CA's events) or for its
/// revocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requester {
    pub kind: RequesterKind,
    /// The SPIFFE ID, token id or operator name.
    pub id: String,
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// A request for a certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest<'a> {
    /// The CSR, PEM or DER, as received.
    pub csr: &'a [u8],
    pub tenant: TenantId,
    /// The profile name; None: the tenant's only profile.
    pub profile: Option<&'a str>,
    /// Requested lifetime; None: the profile's default.
    pub lifetime: Option<Duration>,
    pub requester: Requester,
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub serial: Serial,
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// The leaf then the intermediate: what the workload presents.
    pub chain_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub spiffe_id: Option<String>,
    pub dns_names: Vec<String>,
    pub tenant: TenantId,
    pub profile: String,
    /// The certificate it renews, when it is a renewal.
    pub renewed_from: Option<Serial>,
}

/// The certificate authority. `Send + Sync`: issue from many threads through `&self`.
///
/// Issuances, refusals and revocations are recorded as [`CaEvent`]s in the [`CaEventSink`]
/// given with [`Ca::with_event_sink`] (none by default). A clone is the same CA (same keys,
/// inventory and CRL numbering), so front ends that share one CA can each record its events in
/// their own sink.
///
/// [`CaEvent`]: portcullis_audit::CaEvent
#[derive(Clone)]
pub struct Ca {
    core: Arc<CaCore>,
    events: Option<Arc<dyn CaEventSink>>,
}

/// What every clone of a [`Ca`] shares.
struct CaCore {
    state_dir: PathBuf,
    issuer: Issuer<'static, RcgenSigner>,
    issuer_ski: Vec<u8>,
    issuer_not_after: SystemTime,
    root_pem: String,
    intermediate_pem: String,
    profiles: Vec<IssuanceProfile>,
    inventory: Arc<dyn InventoryStore>,
    crl_next_update: Duration,
    /// Serialises CRL numbering, signing and writing, so files replace each other in order.
    crl_lock: Mutex<()>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("state_dir", &self.core.state_dir)
            .field("profiles", &self.core.profiles.len())
            .field("inventory", &self.core.inventory)
            .field("events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn state_error(path: &Path, detail: impl Into<String>) -> CaError {
    CaError::State {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

fn ca_name(organization: Option<&str>, common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        organization.unwrap_or("Portcullis"),
    );
    dn.push(DnType::CommonName, common_name);
    dn
}

impl Ca {
    /// Creates the hierarchy: generates the root key (in `root_backend`, or `backend`) and the
    /// issuing key (in `backend`), a self-signed root (CA, pathlen 1) and an intermediate (CA,
    /// pathlen 0), writes the certificates, an empty CRL and the inventory into the state
    /// directory, and returns the opened CA. Refuses an already initialised state directory.
    pub fn init(config: &CaConfig, now: SystemTime) -> Result<Ca, CaError> {
        config.check()?;
        let dir = &config.state_dir;
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        if dir.join("intermediate.pem").exists() {
            return Err(state_error(
                dir,
                "already initialised (intermediate.pem exists)",
            ));
        }
        let backend = config.backend.open()?;
        let root_backend = match &config.root_backend {
            Some(b) => b.open()?,
            None => Arc::clone(&backend),
        };
        let algorithm = config.keys.algorithm;
        let root_key = root_backend.generate_key(&config.keys.root_label, algorithm)?;
        let issuing_key = backend.generate_key(&config.keys.issuing_label, algorithm)?;

        let mut root = CertificateParams::default();
        root.distinguished_name = ca_name(
            config.root.organization.as_deref(),
            config
                .root
                .common_name
                .as_deref()
                .unwrap_or("Portcullis Root CA"),
        );
        root.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        root.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        root.serial_number = Some(SerialNumber::from_slice(Serial::random()?.as_bytes()));
        root.not_before = (now - CLOCK_SKEW).into();
        let root_not_after = now + config.root.validity.unwrap_or(ROOT_VALIDITY);
        root.not_after = root_not_after.into();
        let root_signer = RcgenSigner::new(root_key)?;
        let root_cert = root.self_signed(&root_signer).map_err(RcgenSigner::error)?;
        let root_issuer = Issuer::new(root, &root_signer);

        let mut inter = CertificateParams::default();
        inter.distinguished_name = ca_name(
            config.intermediate.organization.as_deref(),
            config
                .intermediate
                .common_name
                .as_deref()
                .unwrap_or("Portcullis Issuing CA"),
        );
        inter.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        inter.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        inter.serial_number = Some(SerialNumber::from_slice(Serial::random()?.as_bytes()));
        inter.use_authority_key_identifier_extension = true;
        inter.not_before = (now - CLOCK_SKEW).into();
        inter.not_after = (now
            + config
                .intermediate
                .validity
                .unwrap_or(INTERMEDIATE_VALIDITY))
        .min(root_not_after)
        .into();
        let inter_signer = RcgenSigner::new(Arc::clone(&issuing_key))?;
        let inter_cert = inter
            .signed_by(&inter_signer, &root_issuer)
            .map_err(RcgenSigner::error)?;

        let root_pem = root_cert.pem();
        let inter_pem = inter_cert.pem();
        for (name, text) in [
            ("root.pem", root_pem.clone()),
            ("bundle.pem", root_pem.clone()),
            ("chain.pem", format!("{inter_pem}{root_pem}")),
            ("intermediate.pem", inter_pem),
        ] {
            write_atomic(&dir.join(name), text.as_bytes(), 0o644)?;
        }
        tracing::info!(ca.state_dir = %dir.display(), "CA initialised: root and issuing intermediate created");
        let inventory = Arc::new(SqliteInventory::open(&dir.join("inventory.sqlite3"))?);
        let ca = Self::open_with(config, issuing_key, inventory)?;
        ca.publish_crl(now)?;
        Ok(ca)
    }

    /// Opens an initialised CA: finds the issuing key in the backend, reads the certificates
    /// and opens the SQLite inventory. The root key is not touched.
    pub fn open(config: &CaConfig) -> Result<Ca, CaError> {
        config.check()?;
        let backend = config.backend.open()?;
        let key = backend.find_key(&config.keys.issuing_label)?;
        let db = config.state_dir.join("inventory.sqlite3");
        if !db.exists() {
            return Err(state_error(
                &config.state_dir,
                "not initialised (no inventory.sqlite3)",
            ));
        }
        let inventory = Arc::new(SqliteInventory::open(&db)?);
        Self::open_with(config, key, inventory)
    }

    /// Opens with a given issuing key and inventory store (e.g. a shared PostgreSQL store).
    pub fn open_with(
        config: &CaConfig,
        issuing_key: Arc<dyn SigningKey>,
        inventory: Arc<dyn InventoryStore>,
    ) -> Result<Ca, CaError> {
        let dir = &config.state_dir;
        let read = |name: &str| -> Result<(String, Vec<u8>), CaError> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
            let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
                .map_err(|e| state_error(&path, format!("not a PEM certificate: {e}")))?;
            Ok((text, pem.contents))
        };
        let (root_pem, _) = read("root.pem")?;
        let (intermediate_pem, inter_der) = read("intermediate.pem")?;
        let inter_path = dir.join("intermediate.pem");
        let (_, cert) = X509Certificate::from_der(&inter_der)
            .map_err(|e| state_error(&inter_path, format!("unparsable: {e}")))?;
        if cert.public_key().raw != issuing_key.public_key_der() {
            return Err(state_error(
                &inter_path,
                format!(
                    "the issuing key {:?} does not match this certificate's public key",
                    config.keys.issuing_label
                ),
            ));
        }
        let issuer_ski = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0.to_vec()),
                _ => None,
            })
            .ok_or_else(|| state_error(&inter_path, "no subjectKeyIdentifier"))?;
        let issuer_not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0),
            );
        let signer = RcgenSigner::new(issuing_key)?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(inter_der.as_slice()), signer)?;
        Ok(Ca {
            core: Arc::new(CaCore {
                state_dir: dir.clone(),
                issuer,
                issuer_ski,
                issuer_not_after,
                root_pem,
                intermediate_pem,
                profiles: config.profiles()?,
                inventory,
                crl_next_update: config.crl.next_update,
                crl_lock: Mutex::new(()),
            }),
            events: None,
        })
    }

    /// This CA, recording its issuances, refusals and revocations in `sink` (in place of any
    /// sink it had).
    #[must_use]
    pub fn with_event_sink(self, sink: Arc<dyn CaEventSink>) -> Ca {
        Ca {
            events: Some(sink),
            ..self
        }
    }

    /// Hands an event to the sink, if there is one; built only then.
    fn record(&self, event: impl FnOnce() -> CaEvent) {
        if let Some(sink) = &self.events {
            sink.record(event());
        }
    }

    /// Records, as a refusal, an issuance that the caller refused before asking the CA (the
    /// issuance API's identity checks), so that it reads like the CA's own refusals: `reason`
    /// is `"<code>: <why>"`, `subject` the name the request asked for.
    pub fn record_refusal(
        &self,
        requester: &Requester,
        subject: Option<String>,
        code: &str,
        why: &str,
    ) {
        self.record(|| events::refused(requester, subject, None, code, &why));
    }

    /// The trust bundle (the root certificate), PEM.
    pub fn trust_bundle_pem(&self) -> &str {
        &self.core.root_pem
    }

    /// The issuing intermediate, PEM.
    pub fn intermediate_pem(&self) -> &str {
        &self.core.intermediate_pem
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.core.state_dir
    }

    /// The inventory store.
    pub fn inventory(&self) -> &dyn InventoryStore {
        self.core.inventory.as_ref()
    }

    /// The checked issuance profiles.
    pub fn profiles(&self) -> &[IssuanceProfile] {
        &self.core.profiles
    }

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
                profile: name.map_or_else(
                    || "(any)".to_owned(),
                    |n| format!("{:?}", crate::profile::shown(n)),
                ),
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
                requested: crate::profile::shown(asked),
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

    /// Lists inventory records.
    pub fn list(
        &self,
        filter: &InventoryFilter,
        now: SystemTime,
    ) -> Result<Vec<CertRecord>, CaError> {
        self.core.inventory.list(filter, now)
    }

    /// [`Ca::revoke_by`] for a caller with no one to name: the events' requester reads
    /// `operator:(unnamed)`. Front ends name who asked with [`Ca::revoke_by`].
    pub fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        scope: RevocationScope,
        now: SystemTime,
    ) -> Result<Revocation, CaError> {
        let unnamed = Requester {
            kind: RequesterKind::Operator,
            id: "(unnamed)".to_owned(),
        };
        self.revoke_by(serial, reason, scope, &unnamed, now)
    }

    /// Revokes a certificate at `requester`'s request (with its renewals, unless `scope` is
    /// [`RevocationScope::OnlyThis`]) and publishes a new CRL to `STATE/crl.pem`.
    /// [`CaError::UnknownSerial`], or [`CaError::AlreadyRevoked`] when nothing in scope was
    /// left to revoke. Records one event per certificate revoked once the inventory holds the
    /// revocation, even if the CRL then cannot be signed (the error says so; the certificates
    /// are revoked all the same).
    pub fn revoke_by(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        scope: RevocationScope,
        requester: &Requester,
        now: SystemTime,
    ) -> Result<Revocation, CaError> {
        let revocation = self.core.inventory.revoke(serial, reason, scope, now)?;
        for record in &revocation.revoked {
            tracing::info!(
                ca.serial = %record.serial,
                tenant.id = %record.tenant,
                ca.requester = %requester,
                revocation.reason = %reason,
                revocation.named = %serial,
                "certificate revoked"
            );
            self.record(|| events::revoked(requester, record, reason, serial));
        }
        self.publish_crl(now)?;
        Ok(revocation)
    }

    /// Signs a new CRL (next CRL number) listing the revoked, unexpired certificates.
    pub fn crl(&self, now: SystemTime) -> Result<Crl, CaError> {
        let _serial = self
            .core
            .crl_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.sign_crl_locked(now)
    }

    fn sign_crl_locked(&self, now: SystemTime) -> Result<Crl, CaError> {
        let revoked: Vec<RevokedEntry> = self
            .core
            .inventory
            .list_revoked(now)?
            .into_iter()
            .map(|r| RevokedEntry {
                serial: r.serial.as_bytes().to_vec(),
                at: r.revoked_at.unwrap_or(now),
                reason: r.revocation_reason.unwrap_or(RevocationReason::Unspecified),
            })
            .collect();
        let number = self.core.inventory.next_crl_number()?;
        sign_crl(
            &self.core.issuer,
            &self.core.issuer_ski,
            number,
            now,
            self.core.crl_next_update,
            &revoked,
        )
        .map_err(RcgenSigner::error)
    }

    /// Signs a new CRL and writes it to `STATE/crl.pem` atomically.
    pub fn publish_crl(&self, now: SystemTime) -> Result<Crl, CaError> {
        let _serial = self
            .core
            .crl_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let crl = self.sign_crl_locked(now)?;
        write_atomic(&self.crl_path(), crl.pem.as_bytes(), 0o644)?;
        tracing::info!(
            crl.number = crl.number,
            crl.revoked = crl.revoked,
            "CRL published"
        );
        Ok(crl)
    }

    /// Where the current CRL is written.
    pub fn crl_path(&self) -> PathBuf {
        self.core.state_dir.join("crl.pem")
    }
}
