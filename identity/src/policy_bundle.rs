//! The signed set of tenants' active policies that the admin plane serves at
//! [`POLICY_BUNDLE_PATH`] and gateways follow: what each side reads and writes, so both agree.
//!
//! The envelope carries the payload as the exact JSON text that was signed (verified before
//! it is parsed) and a `serial` that only grows: a gateway refuses a bundle older than the one
//! it runs, so a replayed old bundle cannot roll a policy back.

use serde::{Deserialize, Serialize};

/// Where the admin API serves the bundle.
pub const POLICY_BUNDLE_PATH: &str = "/v1/policies/bundle";
/// The envelope's `format`.
pub const POLICY_BUNDLE_FORMAT: &str = "portcullis-policy-bundle/1";

/// A bundle as sent and cached: the signed payload text and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPolicyBundle {
    /// [`POLICY_BUNDLE_FORMAT`].
    pub format: String,
    /// The [`PolicyBundle`] as JSON text, exactly as signed.
    pub payload: String,
    /// The signature's algorithm (`ed25519`, `ecdsa-p256-sha256-fixed`, …).
    pub algorithm: String,
    /// Which key signed (the first 8 bytes of its SPKI's SHA-256, hex).
    pub key_id: String,
    /// The signature over `payload`'s bytes, base64 (standard alphabet).
    pub signature: String,
}

/// What the payload says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBundle {
    /// Grows with every activation or rollback anywhere in the fleet.
    pub serial: u64,
    /// When the admin plane made it (RFC 3339).
    pub issued_at: String,
    /// Each tenant with an activated version; tenants not listed run the gateway file's entry.
    pub tenants: Vec<TenantPolicy>,
}

/// One tenant's active version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    pub tenant: String,
    pub version: u64,
    /// The policy document: the gateway config's `tenants:` with this one tenant.
    pub document: String,
}
