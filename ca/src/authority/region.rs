//! A region's own issuing intermediate under the fleet's shared root: the region's key is
//! generated in the region's token (`backend`), the certificate signed once by the root key
//! (`root_backend`, which can be a token brought online for this step only). Gateways trust
//! the root, so certificates from every region verify everywhere; each region issues, renews
//! and revokes (its own CRL, signed by its intermediate) without the others.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rcgen::Issuer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{
    intermediate_params, open_backends, prepare_state_dir, state_error, write_hierarchy, Ca,
};
use crate::config::CaConfig;
use crate::crl::write_atomic;
use crate::key::RcgenSigner;
use crate::CaError;

/// The file in the state directory that names the region.
pub(crate) const REGION_FILE: &str = "region";

/// Whether `name` can name a region: 1 to 32 of `a-z`, `0-9` and `-`, not starting or ending
/// with `-` (it goes into certificate names and file names).
pub(crate) fn valid_region_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Ca {
    /// Initialises a region's CA under an existing root: `root_pem` is the fleet's root
    /// certificate (its `root.pem`), whose key is found in `root_backend` (or `backend`) under
    /// `keys.root_label`. Generates the region's issuing key in `backend`, signs its
    /// intermediate with the root key, and writes the state directory as [`Ca::init`] does, plus
    /// `region`. Refuses a root certificate that is not a CA or whose key is not the one found.
    pub fn init_region(
        config: &CaConfig,
        region: &str,
        root_pem: &Path,
        now: SystemTime,
    ) -> Result<Ca, CaError> {
        config.check()?;
        if !valid_region_name(region) {
            return Err(CaError::Config(format!(
                "region {region:?}: 1 to 32 of a-z, 0-9 and '-', not starting or ending with '-'"
            )));
        }
        let root_text = std::fs::read_to_string(root_pem).map_err(super::io_error(root_pem))?;
        let root = root_certificate(&root_text, root_pem)?;
        let dir = &config.state_dir;
        prepare_state_dir(dir)?;
        let (backend, root_backend) = open_backends(config)?;
        let root_key = root_backend.find_key(&config.keys.root_label)?;
        if root.spki != root_key.public_key_der() {
            return Err(state_error(
                root_pem,
                format!(
                    "this root certificate is not the key labelled {:?} in the root token: \
                     give the root.pem of the hierarchy that key signs",
                    config.keys.root_label
                ),
            ));
        }
        if root.not_after <= now {
            return Err(state_error(root_pem, "the root certificate has expired"));
        }
        let issuing_key =
            backend.generate_key(&config.keys.issuing_label, config.keys.algorithm)?;
        let root_signer = RcgenSigner::new(root_key)?;
        let root_issuer = Issuer::from_ca_cert_der(&root.der.as_slice().into(), &root_signer)
            .map_err(|e| state_error(root_pem, format!("root certificate: {e}")))?;
        let inter = intermediate_params(
            config,
            &format!("Portcullis Issuing CA {region}"),
            now,
            root.not_after,
        )?;
        let inter_signer = RcgenSigner::new(Arc::clone(&issuing_key))?;
        let inter_cert = inter
            .signed_by(&inter_signer, &root_issuer)
            .map_err(RcgenSigner::error)?;
        write_hierarchy(dir, &root_text, &inter_cert.pem())?;
        write_atomic(
            &dir.join(REGION_FILE),
            format!("{region}\n").as_bytes(),
            0o644,
        )?;
        tracing::info!(
            ca.state_dir = %dir.display(),
            ca.region = region,
            "regional CA initialised: issuing intermediate signed by the shared root"
        );
        Self::open_initialised(config, issuing_key, backend, now)
    }

    /// The region this CA issues for (`ca init --region`), if it has one. Its certificates'
    /// inventory rows carry it.
    pub fn region(&self) -> Option<&str> {
        self.core.region.as_deref()
    }
}

/// The region named in the state directory, if any; a file that does not name one is an error
/// (rather than certificates recorded without their region).
pub(super) fn read(dir: &Path) -> Result<Option<String>, CaError> {
    let path = dir.join(REGION_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(super::io_error(&path)(e)),
    };
    let name = text.trim();
    if !valid_region_name(name) {
        return Err(state_error(
            &path,
            "does not name a region (1 to 32 of a-z, 0-9 and '-')",
        ));
    }
    Ok(Some(name.to_owned()))
}

/// The fleet's root certificate, as a region's init needs it.
struct Root {
    der: Vec<u8>,
    /// Its SubjectPublicKeyInfo, DER (compared with the root token's key).
    spki: Vec<u8>,
    not_after: SystemTime,
}

/// The one self-issued CA certificate of a PEM file.
fn root_certificate(text: &str, path: &Path) -> Result<Root, CaError> {
    let blocks: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| state_error(path, format!("not PEM: {e}")))?;
    let [block] = blocks.as_slice() else {
        return Err(state_error(
            path,
            format!(
                "expected exactly one certificate (the root), found {} PEM blocks",
                blocks.len()
            ),
        ));
    };
    let der = &block.contents;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| state_error(path, format!("not a certificate: {e}")))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca || cert.subject() != cert.issuer() {
        return Err(state_error(
            path,
            "not a root CA certificate (self-issued, CA: true)",
        ));
    }
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(Root {
        der: der.to_vec(),
        spki: cert.public_key().raw.to_vec(),
        not_after: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(not_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `region` file someone edited into something that names no region stops the CA from
    /// opening (its certificates would be recorded under a wrong or no region otherwise).
    #[test]
    fn a_region_file_that_names_no_region_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None, "no file: no region");
        for good in ["eu", "eu-west-1\n", "  us \n"] {
            std::fs::write(dir.path().join(REGION_FILE), good).unwrap();
            assert_eq!(read(dir.path()).unwrap().as_deref(), Some(good.trim()));
        }
        let long = "a".repeat(33);
        for bad in [
            "",
            "EU",
            "eu west",
            "../eu",
            "-eu",
            "eu-",
            "eu\0",
            long.as_str(),
        ] {
            std::fs::write(dir.path().join(REGION_FILE), bad).unwrap();
            let err = read(dir.path()).unwrap_err().to_string();
            assert!(err.contains("does not name a region"), "{bad:?}: {err}");
        }
        std::fs::write(dir.path().join(REGION_FILE), [0xff, 0xfe]).unwrap();
        assert!(read(dir.path()).is_err(), "not UTF-8");
    }
}
