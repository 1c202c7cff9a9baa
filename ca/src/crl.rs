//! Revocation reasons and CRLs. A CRL is signed by the issuing key, numbered from a counter that
//! only grows, and written to `STATE/crl.pem` atomically (temp file, fsync, rename) so that
//! gateways watching the file never read half of one.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

pub use portcullis_identity::write_atomic;

use crate::CaError;

/// RFC 5280 §5.3.1 reason codes (removeFromCRL, for delta CRLs, is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
    AaCompromise,
}

const REASONS: [(RevocationReason, u8, &str); 9] = [
    (RevocationReason::Unspecified, 0, "unspecified"),
    (RevocationReason::KeyCompromise, 1, "keyCompromise"),
    (RevocationReason::CaCompromise, 2, "cACompromise"),
    (
        RevocationReason::AffiliationChanged,
        3,
        "affiliationChanged",
    ),
    (RevocationReason::Superseded, 4, "superseded"),
    (
        RevocationReason::CessationOfOperation,
        5,
        "cessationOfOperation",
    ),
    (RevocationReason::CertificateHold, 6, "certificateHold"),
    (
        RevocationReason::PrivilegeWithdrawn,
        9,
        "privilegeWithdrawn",
    ),
    (RevocationReason::AaCompromise, 10, "aACompromise"),
];

impl RevocationReason {
    /// The RFC 5280 code.
    pub fn code(self) -> u8 {
        REASONS
            .iter()
            .find(|(r, _, _)| *r == self)
            .map_or(0, |(_, c, _)| *c)
    }

    /// From an RFC 5280 code.
    pub fn from_code(code: u8) -> Option<Self> {
        REASONS
            .iter()
            .find(|(_, c, _)| *c == code)
            .map(|(r, _, _)| *r)
    }

    /// The RFC 5280 name, e.g. `keyCompromise`.
    pub fn name(self) -> &'static str {
        REASONS
            .iter()
            .find(|(r, _, _)| *r == self)
            .map_or("unspecified", |(_, _, n)| n)
    }

    fn rcgen(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            RevocationReason::Unspecified => R::Unspecified,
            RevocationReason::KeyCompromise => R::KeyCompromise,
            RevocationReason::CaCompromise => R::CaCompromise,
            RevocationReason::AffiliationChanged => R::AffiliationChanged,
            RevocationReason::Superseded => R::Superseded,
            RevocationReason::CessationOfOperation => R::CessationOfOperation,
            RevocationReason::CertificateHold => R::CertificateHold,
            RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
            RevocationReason::AaCompromise => R::AaCompromise,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RevocationReason {
    type Err = CaError;

    /// The RFC name in any case, with or without `-`/`_` (`key-compromise`, `keyCompromise`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = |x: &str| {
            x.chars()
                .filter(|c| *c != '-' && *c != '_')
                .collect::<String>()
                .to_ascii_lowercase()
        };
        let wanted = norm(s);
        REASONS
            .iter()
            .find(|(_, _, n)| norm(n) == wanted)
            .map(|(r, _, _)| *r)
            .ok_or_else(|| {
                CaError::Config(format!(
                    "revocation reason {s:?}: expected one of {}",
                    REASONS
                        .iter()
                        .map(|(_, _, n)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

impl Serialize for RevocationReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A signed CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    /// The CRL number (strictly increasing).
    pub number: u64,
    pub this_update: SystemTime,
    pub next_update: SystemTime,
    /// How many certificates it lists.
    pub revoked: usize,
    pub der: Vec<u8>,
    pub pem: String,
}

/// One revoked certificate, for [`sign_crl`].
pub(crate) struct RevokedEntry {
    pub(crate) serial: Vec<u8>,
    pub(crate) at: SystemTime,
    pub(crate) reason: RevocationReason,
}

/// Builds and signs a CRL with `issuer`.
pub(crate) fn sign_crl(
    issuer: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
    authority_key_id: &[u8],
    number: u64,
    now: SystemTime,
    next_update: Duration,
    revoked: &[RevokedEntry],
) -> Result<Crl, rcgen::Error> {
    let params = rcgen::CertificateRevocationListParams {
        this_update: now.into(),
        next_update: (now + next_update).into(),
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&r.serial),
                revocation_time: r.at.into(),
                reason_code: Some(r.reason.rcgen()),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::PreSpecified(authority_key_id.to_vec()),
    };
    let crl = params.signed_by(issuer)?;
    Ok(Crl {
        number,
        this_update: now,
        next_update: now + next_update,
        revoked: revoked.len(),
        der: crl.der().to_vec(),
        pem: crl.pem()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for (r, code, name) in REASONS {
            assert_eq!(r.code(), code);
            assert_eq!(RevocationReason::from_code(code), Some(r));
            assert_eq!(name.parse::<RevocationReason>().unwrap(), r);
        }
        assert_eq!(
            "key-compromise".parse::<RevocationReason>().unwrap(),
            RevocationReason::KeyCompromise
        );
        assert!("stolen".parse::<RevocationReason>().is_err());
        assert_eq!(RevocationReason::from_code(7), None);
    }
}
