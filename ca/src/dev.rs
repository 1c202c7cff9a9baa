//! A development PKI with software keys: a self-signed root that issues server and client
//! certificates (SPIFFE X.509-SVID shaped: URI SAN, no CA flag, key usage, AKI/SKI, 128-bit
//! random serials). For demos and tests only; production issuance is the HSM-backed CA.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

use crate::CaError;

/// What a leaf certificate should say.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub spiffe_id: Option<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub server_auth: bool,
    pub client_auth: bool,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl LeafSpec {
    /// A client certificate valid from a minute ago for `lifetime`.
    pub fn client(common_name: &str, spiffe_id: Option<&str>, lifetime: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            common_name: common_name.to_owned(),
            spiffe_id: spiffe_id.map(str::to_owned),
            dns_names: Vec::new(),
            ips: Vec::new(),
            server_auth: false,
            client_auth: true,
            not_before: now - Duration::from_secs(60),
            not_after: now + lifetime,
        }
    }

    /// A server certificate for `localhost`, 127.0.0.1 and ::1 plus `dns_names`.
    pub fn localhost_server(dns_names: &[&str], lifetime: Duration) -> Self {
        let now = SystemTime::now();
        let mut names = vec!["localhost".to_owned()];
        names.extend(dns_names.iter().map(|s| (*s).to_owned()));
        Self {
            common_name: "localhost".to_owned(),
            spiffe_id: None,
            dns_names: names,
            ips: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
            server_auth: true,
            client_auth: false,
            not_before: now - Duration::from_secs(60),
            not_after: now + lifetime,
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `NAME.pem` and `NAME.key` (the key created with mode 0600) into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(), CaError> {
        write_file(
            &dir.join(format!("{name}.pem")),
            self.cert_pem.as_bytes(),
            0o644,
        )?;
        write_file(
            &dir.join(format!("{name}.key")),
            self.key_pem.as_bytes(),
            0o600,
        )
    }
}

/// A self-signed development root that signs leaves directly.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa")
    }
}

impl DevCa {
    pub fn new(common_name: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(365 * 24 * 3600)).into();
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the root as `NAME.pem` and its key as `NAME.key` (mode 0600).
    pub fn write(&self, dir: &Path, name: &str) -> Result<(), CaError> {
        Issued {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
        .write(dir, name)
    }

    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spec.common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.serial_number = Some(random_serial()?);
        params.not_before = spec.not_before.into();
        params.not_after = spec.not_after.into();
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if let Some(id) = &spec.spiffe_id {
            params
                .subject_alt_names
                .push(SanType::URI(id.clone().try_into()?));
        }
        for dns in &spec.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.clone().try_into()?));
        }
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Portcullis Development");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// 128 random bits, with the top bit cleared so the DER INTEGER stays positive.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(data).map_err(io)
}
