//! The certificate authority: a root and an issuing intermediate whose keys live in a backend,
//! issuance and renewal from CSRs under per-tenant profiles (`issue.rs`), the inventory,
//! revocation and CRLs (`revocation.rs`).
//!
//! State directory layout: `root.pem`, `intermediate.pem`, `bundle.pem` (the trust bundle:
//! the root), `chain.pem` (intermediate then root), `crl.pem` (current CRL, replaced
//! atomically), `inventory.sqlite3`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use portcullis_audit::CaEvent;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::config::CaConfig;
use crate::crl::write_atomic;
use crate::events::{self, CaEventSink, RevocationSink};
use crate::ids::{Serial, TenantId};
use crate::inventory::{CertRecord, InventoryFilter, InventoryStore, SqliteInventory};
use crate::key::{KeyBackend, RcgenSigner, SigningKey};
use crate::profile::IssuanceProfile;
use crate::CaError;

mod issue;
mod ocsp_signer;
mod region;
mod revocation;

use issue::RevocationUrls;

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

/// The file in the CA state directory saying that the inventory (and the admin plane's
/// bootstrap tokens) live in the admin plane's PostgreSQL store: [`Ca::open`] refuses to use
/// the SQLite inventory beside it.
pub const STATE_IN_POSTGRES: &str = "state-in-postgres";

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
    /// Told every revocation once the inventory holds it (the fleet's revocation set).
    revocations: Option<Arc<dyn RevocationSink>>,
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
    /// What every issued certificate says about where its revocation status is published.
    revocation_urls: RevocationUrls,
    /// The backend holding the issuing key, where the OCSP signing key lives too (None when
    /// opened with [`Ca::open_with`]: no OCSP responder).
    backend: Option<Arc<dyn KeyBackend>>,
    ocsp_label: String,
    /// The issuing key's algorithm (the OCSP signing key is generated with it).
    algorithm: crate::key::KeyAlgorithm,
    /// The issuing intermediate, DER (the OCSP responder's CertID hashes are over it).
    intermediate_der: Vec<u8>,
    /// Serialises CRL numbering, signing and writing, so files replace each other in order.
    crl_lock: Mutex<()>,
    /// The region this CA issues for (`STATE/region`, written by `ca init --region`).
    region: Option<String>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("state_dir", &self.core.state_dir)
            .field("profiles", &self.core.profiles.len())
            .field("inventory", &self.core.inventory)
            .field("events", &self.events.is_some())
            .field("revocations", &self.revocations.is_some())
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

/// Creates the state directory (owner only) and refuses one that is already initialised.
fn prepare_state_dir(dir: &Path) -> Result<(), CaError> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
        .map_err(io_error(dir))?;
    if dir.join("intermediate.pem").exists() {
        return Err(state_error(
            dir,
            "already initialised (intermediate.pem exists)",
        ));
    }
    Ok(())
}

/// The issuing key's backend and the root key's (`root_backend`, else the same one).
type Backends = (Arc<dyn KeyBackend>, Arc<dyn KeyBackend>);

fn open_backends(config: &CaConfig) -> Result<Backends, CaError> {
    let backend = config.backend.open()?;
    let root_backend = match &config.root_backend {
        Some(b) => b.open()?,
        None => Arc::clone(&backend),
    };
    Ok((backend, root_backend))
}

/// An issuing intermediate's certificate parameters (CA, path length 0), valid from `now` for
/// the configured validity but never past the root.
fn intermediate_params(
    config: &CaConfig,
    default_name: &str,
    now: SystemTime,
    root_not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    let mut inter = CertificateParams::default();
    inter.distinguished_name = ca_name(
        config.intermediate.organization.as_deref(),
        config
            .intermediate
            .common_name
            .as_deref()
            .unwrap_or(default_name),
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
    Ok(inter)
}

/// Writes the root, the trust bundle (the root), the chain and the intermediate.
fn write_hierarchy(dir: &Path, root_pem: &str, inter_pem: &str) -> Result<(), CaError> {
    for (name, text) in [
        ("root.pem", root_pem.to_owned()),
        ("bundle.pem", root_pem.to_owned()),
        ("chain.pem", format!("{inter_pem}{root_pem}")),
        ("intermediate.pem", inter_pem.to_owned()),
    ] {
        write_atomic(&dir.join(name), text.as_bytes(), 0o644)?;
    }
    Ok(())
}

impl Ca {
    /// Creates the hierarchy: generates the root key (in `root_backend`, or `backend`) and the
    /// issuing key (in `backend`), a self-signed root (CA, pathlen 1) and an intermediate (CA,
    /// pathlen 0), writes the certificates, an empty CRL and the inventory into the state
    /// directory, and returns the opened CA. Refuses an already initialised state directory.
    pub fn init(config: &CaConfig, now: SystemTime) -> Result<Ca, CaError> {
        config.check()?;
        let dir = &config.state_dir;
        prepare_state_dir(dir)?;
        let (backend, root_backend) = open_backends(config)?;
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

        let inter = intermediate_params(config, "Portcullis Issuing CA", now, root_not_after)?;
        let inter_signer = RcgenSigner::new(Arc::clone(&issuing_key))?;
        let inter_cert = inter
            .signed_by(&inter_signer, &root_issuer)
            .map_err(RcgenSigner::error)?;
        write_hierarchy(dir, &root_cert.pem(), &inter_cert.pem())?;
        tracing::info!(ca.state_dir = %dir.display(), "CA initialised: root and issuing intermediate created");
        Self::open_initialised(config, issuing_key, backend, now)
    }

    /// The end of every init: the inventory opened, the CA opened on it and its first CRL.
    fn open_initialised(
        config: &CaConfig,
        issuing_key: Arc<dyn SigningKey>,
        backend: Arc<dyn KeyBackend>,
        now: SystemTime,
    ) -> Result<Ca, CaError> {
        let db = config.state_dir.join("inventory.sqlite3");
        let inventory = Arc::new(SqliteInventory::open(&db)?);
        let ca = Self::open_in(config, issuing_key, inventory, Some(backend))?;
        ca.publish_crl(now)?;
        Ok(ca)
    }

    /// Opens an initialised CA: finds the issuing key in the backend, reads the certificates
    /// and opens the SQLite inventory. The root key is not touched.
    ///
    /// Refused when `STATE/state-in-postgres` says the inventory has moved to the admin plane's
    /// PostgreSQL store: the SQLite file left behind is out of date.
    pub fn open(config: &CaConfig) -> Result<Ca, CaError> {
        config.check()?;
        let marker = config.state_dir.join(STATE_IN_POSTGRES);
        if marker.exists() {
            return Err(state_error(
                &marker,
                "the inventory and bootstrap tokens are kept in PostgreSQL (this file says so); \
                 configure store.postgres in the admin config: the SQLite files here are out of \
                 date",
            ));
        }
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
        Self::open_in(config, key, inventory, Some(backend))
    }

    /// Opens an initialised CA as [`Ca::open`] does, with a given inventory store (the admin
    /// plane's PostgreSQL one) in place of the SQLite file.
    pub fn open_with_inventory(
        config: &CaConfig,
        inventory: Arc<dyn InventoryStore>,
    ) -> Result<Ca, CaError> {
        config.check()?;
        let backend = config.backend.open()?;
        let key = backend.find_key(&config.keys.issuing_label)?;
        Self::open_in(config, key, inventory, Some(backend))
    }

    /// Opens with a given issuing key and inventory store (e.g. a shared PostgreSQL store).
    /// Without the key's backend there is no OCSP responder ([`Ca::ocsp_responder`] fails).
    pub fn open_with(
        config: &CaConfig,
        issuing_key: Arc<dyn SigningKey>,
        inventory: Arc<dyn InventoryStore>,
    ) -> Result<Ca, CaError> {
        Self::open_in(config, issuing_key, inventory, None)
    }

    fn open_in(
        config: &CaConfig,
        issuing_key: Arc<dyn SigningKey>,
        inventory: Arc<dyn InventoryStore>,
        backend: Option<Arc<dyn KeyBackend>>,
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
        let algorithm = issuing_key.algorithm();
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
                revocation_urls: RevocationUrls::new(
                    &config.crl_distribution_points,
                    config.ocsp_url.as_deref(),
                )?,
                backend,
                ocsp_label: config.keys.ocsp_label(),
                algorithm,
                intermediate_der: inter_der.clone(),
                crl_lock: Mutex::new(()),
                region: region::read(dir)?,
            }),
            events: None,
            revocations: None,
        })
    }

    /// This CA, telling `sink` of every certificate it revokes (in place of any sink it had).
    #[must_use]
    pub fn with_revocation_sink(self, sink: Arc<dyn RevocationSink>) -> Ca {
        Ca {
            revocations: Some(sink),
            ..self
        }
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
        tenant: Option<&TenantId>,
        subject: Option<String>,
        code: &str,
        why: &str,
    ) {
        self.record(|| events::refused(requester, tenant, subject, None, code, &why));
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

    /// Lists inventory records.
    pub fn list(
        &self,
        filter: &InventoryFilter,
        now: SystemTime,
    ) -> Result<Vec<CertRecord>, CaError> {
        self.core.inventory.list(filter, now)
    }
}
