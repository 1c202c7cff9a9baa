//! Issuance profiles and the pure decision they make: given the facts of a verified CSR and a
//! requested lifetime, either a [`Permit`] naming exactly what the certificate will say, or an
//! [`IssueRefusal`] with a stable code. No clock, no I/O.

mod names;
mod role;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::csr::CsrFacts;
use crate::ids::TenantId;

use names::{requested_dns_name, requested_spiffe_id};
pub(crate) use names::{DnsName, SpiffeId};
pub use portcullis_identity::{DnsPattern, SpiffeIdPattern};
pub(crate) use role::{is_operator_id, reaches_operator_path};
pub use role::{ProfileRole, OPERATOR_PATH};

/// A subject key type a CSR may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum KeyType {
    #[serde(rename = "p256")]
    P256,
    #[serde(rename = "p384")]
    P384,
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::P256 => "ECDSA P-256",
            KeyType::P384 => "ECDSA P-384",
            KeyType::Ed25519 => "Ed25519",
        })
    }
}

/// Why a CSR was refused. [`IssueRefusal::code`] is stable for clients and metrics; the message
/// is for humans. Names taken from the CSR are shown escaped and truncated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueRefusal {
    /// The CSR is larger than the size cap.
    #[error("CSR of {size} bytes exceeds the {limit}-byte limit")]
    CsrTooLarge { size: usize, limit: usize },
    /// The bytes are not a PKCS#10 CSR (PEM or DER).
    #[error("CSR malformed: {0}")]
    CsrMalformed(String),
    /// The CSR's extensions could be read more than one way: more than one extension request
    /// attribute, one with several values, or an extension requested twice.
    #[error("CSR extensions ambiguous: {0}")]
    CsrAmbiguousExtensions(String),
    /// The CSR's self-signature does not verify with its own public key.
    #[error("CSR signature does not verify")]
    CsrSignatureInvalid,
    /// The subject key type is unsupported or not allowed by the profile.
    #[error("key type {key} not allowed (allowed: {allowed})")]
    KeyTypeNotAllowed { key: String, allowed: String },
    /// The CSR asks for a CA certificate (basicConstraints CA:true, keyCertSign or cRLSign).
    #[error("CSR requests CA powers: {0}")]
    CaRequested(String),
    /// The CSR asks for an extension the CA does not grant.
    #[error("CSR requests extension {0}, which this CA does not grant")]
    ExtensionNotAllowed(String),
    /// The CSR names no identity at all.
    #[error("CSR has no subject alternative name")]
    SanMissing,
    /// The profile requires a SPIFFE ID and the CSR has none.
    #[error("profile requires a SPIFFE ID (URI SAN) and the CSR has none")]
    SpiffeIdMissing,
    /// A SAN of a type this CA does not issue (IP, e-mail, non-SPIFFE URI, a second URI…).
    #[error("SAN {0} not allowed")]
    SanNotAllowed(String),
    /// A URI SAN that is not a well-formed SPIFFE ID.
    #[error("SPIFFE ID {id:?} invalid: {why}")]
    SpiffeIdInvalid { id: String, why: String },
    /// A SPIFFE ID in a trust domain the profile does not cover.
    #[error("SPIFFE ID {id:?} is outside trust domain(s) {allowed}")]
    TrustDomainNotAllowed { id: String, allowed: String },
    /// A SPIFFE ID in the right trust domain that no pattern of the profile allows.
    #[error("SPIFFE ID {0:?} not allowed by the profile")]
    SpiffeIdNotAllowed(String),
    /// A SPIFFE ID under the operator path, asked of a tenant profile.
    #[error("SPIFFE ID {0:?} is under {OPERATOR_PATH}, which only operator profiles issue")]
    SpiffeIdReserved(String),
    /// A DNS name that is not a valid host name.
    #[error("DNS name {name:?} invalid: {why}")]
    DnsNameInvalid { name: String, why: String },
    /// A wildcard DNS name that is malformed, too broad, or not allowed by the profile.
    #[error("wildcard DNS name {name:?} not allowed: {why}")]
    WildcardNotAllowed { name: String, why: String },
    /// A DNS name that no pattern of the profile allows.
    #[error("DNS name {0:?} not allowed by the profile")]
    DnsNameNotAllowed(String),
    /// An extended key usage the profile does not grant.
    #[error("extended key usage {0} not allowed by the profile")]
    EkuNotAllowed(String),
    /// The requested lifetime is over the profile's maximum.
    #[error("lifetime {requested} over the cap of {max}")]
    LifetimeOverCap { requested: String, max: String },
    /// The requested lifetime is zero.
    #[error("lifetime must be positive")]
    LifetimeInvalid,
    /// No profile for this tenant (and profile name).
    #[error("no issuance profile {profile} for tenant {tenant}")]
    ProfileNotFound { tenant: String, profile: String },
    /// A profile with `role: operator` asked for by a requester that is not an operator.
    #[error("profile {0:?} issues operator identities: only an operator may ask for it")]
    OperatorProfile(String),
    /// A renewal naming another profile than the one of the certificate it renews.
    #[error(
        "a renewal keeps the profile of the certificate it renews ({current:?}), not {requested:?}"
    )]
    RenewalProfileChanged { current: String, requested: String },
    /// A renewal asking for a name the certificate it renews does not carry.
    #[error("a renewal may carry only the names of the certificate it renews: {0}")]
    RenewalIdentityMismatch(String),
    /// The certificate to renew is revoked, expired or of another tenant.
    #[error("certificate {serial} cannot be renewed: {why}")]
    NotRenewable { serial: String, why: String },
}

impl IssueRefusal {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IssueRefusal::CsrTooLarge { .. } => "csr_too_large",
            IssueRefusal::CsrMalformed(_) => "csr_malformed",
            IssueRefusal::CsrAmbiguousExtensions(_) => "csr_ambiguous_extensions",
            IssueRefusal::CsrSignatureInvalid => "csr_signature_invalid",
            IssueRefusal::KeyTypeNotAllowed { .. } => "key_type_not_allowed",
            IssueRefusal::CaRequested(_) => "ca_requested",
            IssueRefusal::ExtensionNotAllowed(_) => "extension_not_allowed",
            IssueRefusal::SanMissing => "san_missing",
            IssueRefusal::SpiffeIdMissing => "spiffe_id_missing",
            IssueRefusal::SanNotAllowed(_) => "san_not_allowed",
            IssueRefusal::SpiffeIdInvalid { .. } => "spiffe_id_invalid",
            IssueRefusal::TrustDomainNotAllowed { .. } => "trust_domain_not_allowed",
            IssueRefusal::SpiffeIdNotAllowed(_) => "spiffe_id_not_allowed",
            IssueRefusal::SpiffeIdReserved(_) => "spiffe_id_reserved",
            IssueRefusal::DnsNameInvalid { .. } => "dns_name_invalid",
            IssueRefusal::WildcardNotAllowed { .. } => "wildcard_not_allowed",
            IssueRefusal::DnsNameNotAllowed(_) => "dns_name_not_allowed",
            IssueRefusal::EkuNotAllowed(_) => "eku_not_allowed",
            IssueRefusal::LifetimeOverCap { .. } => "lifetime_over_cap",
            IssueRefusal::LifetimeInvalid => "lifetime_invalid",
            IssueRefusal::ProfileNotFound { .. } => "profile_not_found",
            IssueRefusal::OperatorProfile(_) => "operator_profile",
            IssueRefusal::RenewalProfileChanged { .. } => "renewal_profile_changed",
            // The admin API's code for a renewal that would change the identity.
            IssueRefusal::RenewalIdentityMismatch(_) => "identity_mismatch",
            IssueRefusal::NotRenewable { .. } => "not_renewable",
        }
    }
}

/// Shows a peer-supplied string safely in a message: at most 256 characters.
pub(crate) fn shown(s: &str) -> String {
    s.chars().take(256).collect()
}

/// What a tenant may be issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceProfile {
    /// The profile's name, unique within the CA.
    pub name: String,
    /// The tenant the profile belongs to.
    pub tenant: TenantId,
    /// Whether it issues workload identities of its tenant or operator identities.
    pub role: ProfileRole,
    /// SPIFFE IDs the CSR's URI SAN may match.
    pub spiffe_ids: Vec<SpiffeIdPattern>,
    /// Whether the CSR must carry a SPIFFE ID.
    pub require_spiffe_id: bool,
    /// DNS names the CSR's DNS SANs may match.
    pub dns_names: Vec<DnsPattern>,
    /// Whether a wildcard name (`*.x.y`) may itself be issued when a pattern `*.x.y` allows it.
    pub allow_wildcard_names: bool,
    /// Subject key types allowed.
    pub key_types: Vec<KeyType>,
    /// Longest lifetime the profile grants.
    pub max_lifetime: Duration,
    /// Lifetime when the request names none.
    pub default_lifetime: Duration,
    /// Whether `clientAuth` may be issued.
    pub client_auth: bool,
    /// Whether `serverAuth` may be issued.
    pub server_auth: bool,
    /// When set, a first issuance under this profile through the admin API waits for a
    /// person's approval (the CA itself decides and signs as ever; the waiting is the admin
    /// plane's).
    pub approval: Option<ApprovalRule>,
}

/// A profile's approval requirement: first issuances wait for a second person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalRule {
    /// How long a request may wait before it expires unapproved.
    pub expires_after: Duration,
}

/// What the profile allows this CSR: exactly what the certificate will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Permit {
    pub(crate) spiffe_id: Option<SpiffeId>,
    pub(crate) dns_names: Vec<DnsName>,
    pub(crate) client_auth: bool,
    pub(crate) server_auth: bool,
    pub(crate) lifetime: Duration,
}

impl IssuanceProfile {
    /// Decides on a verified CSR. `lifetime` is the requested lifetime (None: the default).
    pub(crate) fn permit(
        &self,
        csr: &CsrFacts,
        lifetime: Option<Duration>,
    ) -> Result<Permit, IssueRefusal> {
        if !self.key_types.contains(&csr.key_type) {
            return Err(IssueRefusal::KeyTypeNotAllowed {
                key: csr.key_type.to_string(),
                allowed: join(&self.key_types),
            });
        }
        if let Some(other) = csr.other_sans.first() {
            return Err(IssueRefusal::SanNotAllowed(other.clone()));
        }
        if csr.uris.is_empty() && csr.dns_names.is_empty() {
            return Err(IssueRefusal::SanMissing);
        }
        let spiffe_id = self.permit_spiffe_id(&csr.uris)?;
        let dns_names = csr
            .dns_names
            .iter()
            .map(|name| self.permit_dns_name(name))
            .collect::<Result<Vec<_>, _>>()?;
        let (client_auth, server_auth) = self.permit_eku(csr)?;
        let lifetime = lifetime.unwrap_or(self.default_lifetime);
        if lifetime.is_zero() {
            return Err(IssueRefusal::LifetimeInvalid);
        }
        if lifetime > self.max_lifetime {
            return Err(IssueRefusal::LifetimeOverCap {
                requested: humantime::format_duration(lifetime).to_string(),
                max: humantime::format_duration(self.max_lifetime).to_string(),
            });
        }
        Ok(Permit {
            spiffe_id,
            dns_names,
            client_auth,
            server_auth,
            lifetime,
        })
    }

    fn permit_spiffe_id(&self, uris: &[String]) -> Result<Option<SpiffeId>, IssueRefusal> {
        let uri = match uris {
            [] if self.require_spiffe_id => return Err(IssueRefusal::SpiffeIdMissing),
            [] => return Ok(None),
            [uri] => uri,
            [_, second, ..] => {
                return Err(IssueRefusal::SanNotAllowed(format!(
                    "URI {:?} (an X.509-SVID carries exactly one URI SAN)",
                    shown(second)
                )))
            }
        };
        let id = requested_spiffe_id(uri)?;
        if self.role == ProfileRole::Tenant && is_operator_id(&id) {
            return Err(IssueRefusal::SpiffeIdReserved(shown(uri)));
        }
        if !self
            .spiffe_ids
            .iter()
            .any(|p| p.trust_domain() == id.trust_domain())
        {
            let mut domains: Vec<&str> = self.spiffe_ids.iter().map(|p| p.trust_domain()).collect();
            domains.dedup();
            return Err(IssueRefusal::TrustDomainNotAllowed {
                id: shown(uri),
                allowed: if domains.is_empty() {
                    "(none)".to_owned()
                } else {
                    domains.join(", ")
                },
            });
        }
        if self.spiffe_ids.iter().any(|p| p.matches(&id)) {
            Ok(Some(id))
        } else {
            Err(IssueRefusal::SpiffeIdNotAllowed(shown(uri)))
        }
    }

    fn permit_dns_name(&self, raw: &str) -> Result<DnsName, IssueRefusal> {
        let name = requested_dns_name(raw)?;
        if name.is_wildcard() && !self.allow_wildcard_names {
            return Err(IssueRefusal::WildcardNotAllowed {
                name: shown(raw),
                why: "the profile does not issue wildcard names".to_owned(),
            });
        }
        if self.dns_names.iter().any(|p| p.covers(&name)) {
            Ok(name)
        } else {
            Err(IssueRefusal::DnsNameNotAllowed(shown(raw)))
        }
    }

    /// Requested EKUs must be a subset of the profile's; with none requested, the profile's.
    fn permit_eku(&self, csr: &CsrFacts) -> Result<(bool, bool), IssueRefusal> {
        let Some(eku) = &csr.eku else {
            return Ok((self.client_auth, self.server_auth));
        };
        if let Some(other) = eku.other.first() {
            return Err(IssueRefusal::EkuNotAllowed(other.clone()));
        }
        if eku.client_auth && !self.client_auth {
            return Err(IssueRefusal::EkuNotAllowed("clientAuth".to_owned()));
        }
        if eku.server_auth && !self.server_auth {
            return Err(IssueRefusal::EkuNotAllowed("serverAuth".to_owned()));
        }
        if !eku.client_auth && !eku.server_auth {
            return Err(IssueRefusal::EkuNotAllowed(
                "(empty: request clientAuth and/or serverAuth)".to_owned(),
            ));
        }
        Ok((eku.client_auth, eku.server_auth))
    }
}

impl Permit {
    /// Whether a renewal stays within the certificate it renews, whose SANs are `sans` as the
    /// inventory records them (`URI:…`, `DNS:…`, written from that certificate's permit): the
    /// same SPIFFE ID (none if it had none) and DNS names among its own.
    pub(crate) fn within(&self, sans: &[String]) -> Result<(), IssueRefusal> {
        let current = sans.iter().find_map(|s| s.strip_prefix("URI:"));
        let asked = self.spiffe_id.as_ref().map(SpiffeId::as_str);
        if asked != current {
            return Err(IssueRefusal::RenewalIdentityMismatch(format!(
                "SPIFFE ID {} where the certificate has {}",
                asked.map_or_else(|| "(none)".to_owned(), |a| format!("{a:?}")),
                current.map_or_else(|| "(none)".to_owned(), |c| format!("{c:?}")),
            )));
        }
        let carried = |name: &DnsName| {
            sans.iter()
                .any(|s| s.strip_prefix("DNS:") == Some(name.as_str()))
        };
        if let Some(extra) = self.dns_names.iter().find(|n| !carried(n)) {
            return Err(IssueRefusal::RenewalIdentityMismatch(format!(
                "DNS name {:?} is not on the certificate",
                extra.as_str()
            )));
        }
        Ok(())
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
