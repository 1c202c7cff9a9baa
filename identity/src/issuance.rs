//! The issuance API's contract, `POST /v1/certificates`: the request and answer bodies the
//! admin API serves and every client (gateway renewal, bench) sends, and, with `io`, the typed
//! client.
//!
//! Wire format (JSON): the request is `{"csr": PEM, "profile"?: name, "lifetime"?: "30m",
//! "tenant"?: id}` (unknown fields refused; `tenant` is for node agents asking for a workload of
//! another tenant); a certificate is answered `201` with [`IssuanceResponse`]; a
//! refusal with a 4xx/5xx status and [`ErrorBody`] `{"error": code, "message": text}`.

#[cfg(feature = "io")]
mod client;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::{Serial, TenantId};

#[cfg(feature = "io")]
pub use client::{ClientCredentials, IssuanceClient, IssuanceConnection};

/// The path of the issuance endpoint.
pub const ISSUANCE_PATH: &str = "/v1/certificates";

/// The body of `POST /v1/certificates`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuanceRequest {
    /// The PKCS#10 CSR, PEM.
    pub csr: String,
    /// The issuance profile (default: the caller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The lifetime asked for, as a duration such as `"30m"` (default: the profile's). Kept as
    /// text on the wire: the server answers `invalid_lifetime` for text it cannot read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
    /// The tenant the certificate is for (default: the caller's). Only a node agent asking
    /// for a workload's SVID may name another tenant, within what the admin API grants it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

impl IssuanceRequest {
    /// A request for `csr_pem` with the profile's defaults.
    pub fn new(csr_pem: impl Into<String>) -> Self {
        Self {
            csr: csr_pem.into(),
            profile: None,
            lifetime: None,
            tenant: None,
        }
    }

    /// Asks for a certificate of `tenant` (node agents only).
    pub fn with_tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Asks for a profile by name.
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Asks for a lifetime.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(humantime::format_duration(lifetime).to_string());
        self
    }
}

/// The `201` answer of `POST /v1/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceResponse {
    /// The new certificate's serial (lower-case hex).
    pub serial: Serial,
    /// The certificate, PEM.
    pub certificate: String,
    /// The certificate followed by the issuing intermediate, PEM.
    pub chain: String,
    /// Start of validity (RFC 3339, whole seconds).
    #[serde(with = "rfc3339_seconds")]
    pub not_before: SystemTime,
    /// End of validity (RFC 3339, whole seconds).
    #[serde(with = "rfc3339_seconds")]
    pub not_after: SystemTime,
    /// The SPIFFE ID issued, if any.
    pub spiffe_id: Option<String>,
    /// The DNS names issued.
    pub dns_names: Vec<String>,
    /// The tenant the certificate belongs to.
    pub tenant: TenantId,
    /// The profile it was issued under.
    pub profile: String,
}

/// The body of every error answer of the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code.
    pub error: String,
    /// A message for humans (never internal detail).
    pub message: String,
}

/// `SystemTime` as RFC 3339 text in whole seconds (`2024-05-01T12:00:00Z`).
mod rfc3339_seconds {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let bare = IssuanceRequest::new("PEM");
        assert_eq!(serde_json::to_string(&bare).unwrap(), r#"{"csr":"PEM"}"#);
        let full = IssuanceRequest::new("PEM")
            .with_profile("edge")
            .with_lifetime(Duration::from_secs(1800));
        assert_eq!(
            serde_json::to_value(&full).unwrap(),
            serde_json::json!({"csr": "PEM", "profile": "edge", "lifetime": "30m"})
        );
        let back: IssuanceRequest =
            serde_json::from_str(r#"{"csr":"PEM","lifetime":"30m","profile":"edge"}"#).unwrap();
        assert_eq!(back, full);
        assert!(serde_json::from_str::<IssuanceRequest>(r#"{"csr":"x","extra":1}"#).is_err());
        assert!(serde_json::from_str::<IssuanceRequest>(r#"{"profile":"x"}"#).is_err());
        let agent = IssuanceRequest::new("PEM").with_tenant("acme".parse().unwrap());
        assert_eq!(
            serde_json::to_value(&agent).unwrap(),
            serde_json::json!({"csr": "PEM", "tenant": "acme"})
        );
        assert!(serde_json::from_str::<IssuanceRequest>(r#"{"csr":"x","tenant":"Acme"}"#).is_err());
    }

    #[test]
    fn response_wire_format() {
        let text = r#"{"serial":"0a1b","certificate":"C","chain":"CH","not_before":"2024-05-01T12:00:00Z","not_after":"2024-05-01T13:00:00Z","spiffe_id":null,"dns_names":["localhost"],"tenant":"acme","profile":"edge"}"#;
        let r: IssuanceResponse = serde_json::from_str(text).unwrap();
        assert_eq!(r.serial.to_string(), "0a1b");
        assert_eq!(
            r.not_after.duration_since(r.not_before).unwrap(),
            Duration::from_secs(3600)
        );
        let again = serde_json::to_value(&r).unwrap();
        assert_eq!(again["not_after"], "2024-05-01T13:00:00Z");
        assert_eq!(again["serial"], "0a1b");
        assert_eq!(again["spiffe_id"], serde_json::Value::Null);
        assert_eq!(again["tenant"], "acme");
        // Sub-second parts are not sent.
        let mut odd = r.clone();
        odd.not_before += Duration::from_millis(250);
        assert_eq!(
            serde_json::to_value(&odd).unwrap()["not_before"],
            "2024-05-01T12:00:00Z"
        );
        assert!(serde_json::from_str::<IssuanceResponse>(&text.replace("acme", "Acme")).is_err());
    }
}
