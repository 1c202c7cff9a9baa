//! What a route inspects in bodies: its compiled DLP policy, the limits of inspection (how much
//! of a body is scanned, how far a compressed body may expand) and what happens to what cannot
//! be scanned. Every default refuses: passing a body unscanned must be said in the config.

use crate::dlp::{BodyDirection, DlpAction, DlpPolicy, DlpSpec};

/// What happens to a body longer than `max_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OverLimit {
    /// Forward the rest unscanned; counted and recorded as unscanned (`over_limit`).
    Pass,
    /// Refuse the body (413), or cut a response off.
    #[default]
    Refuse,
}

/// What happens to a body in a `Content-Encoding` (or a multipart part in a
/// `Content-Transfer-Encoding`) the gateway cannot decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum UnknownEncoding {
    /// Forward it unscanned (a part: scanned as it is); counted and recorded as unscanned
    /// (`unknown_encoding`).
    Pass,
    /// Refuse it (415; 502 for a response).
    #[default]
    Refuse,
}

/// What happens to a body whose content type is neither text-like (text, JSON, XML, forms,
/// or none) nor `multipart/*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OtherContent {
    /// Scan it as bytes: the validated detectors stay precise on binary data.
    #[default]
    Scan,
    /// Refuse it (415; 502 for a response).
    Refuse,
}

/// Whether a route with request DLP lets a request upgrade to a WebSocket (or any other
/// protocol, or open a CONNECT tunnel), whose frames are not scanned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Upgrades {
    /// Allowed; counted and recorded as unscanned (`websocket`).
    Allow,
    /// Refused (403).
    #[default]
    Refuse,
}

/// Bounds on body inspection, and what happens to what falls outside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InspectionLimits {
    /// Bytes of (decoded) body scanned at most.
    pub max_bytes: u64,
    /// What to do past `max_bytes`.
    pub over_limit: OverLimit,
    /// A compressed body that decodes to more than this is refused.
    pub max_decompressed_bytes: u64,
    /// A compressed body that expands more than this many times is refused.
    pub max_ratio: u64,
    /// What to do with an encoding the gateway cannot decode.
    pub unknown_encoding: UnknownEncoding,
    /// What to do with a content type that is neither text-like nor multipart.
    pub other_content: OtherContent,
}

impl Default for InspectionLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            over_limit: OverLimit::Refuse,
            max_decompressed_bytes: 8 << 20,
            max_ratio: 100,
            unknown_encoding: UnknownEncoding::Refuse,
            other_content: OtherContent::Scan,
        }
    }
}

/// A route's body inspection: compiled once per config load.
#[derive(Clone, Debug)]
pub struct RouteInspection {
    spec: DlpSpec,
    pub policy: DlpPolicy,
    pub limits: InspectionLimits,
    /// The route's `websocket` setting.
    pub upgrades: Upgrades,
}

impl PartialEq for RouteInspection {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.limits == other.limits && self.upgrades == other.upgrades
    }
}

impl RouteInspection {
    pub(crate) fn new(spec: DlpSpec, policy: DlpPolicy, limits: InspectionLimits) -> Self {
        Self {
            spec,
            policy,
            limits,
            upgrades: Upgrades::default(),
        }
    }

    /// The same inspection with the route's own `websocket` setting.
    pub(crate) fn with_upgrades(&self, upgrades: Upgrades) -> Self {
        Self {
            upgrades,
            ..self.clone()
        }
    }

    /// Whether bodies in `direction` are scanned at all.
    pub fn scans(&self, direction: BodyDirection) -> bool {
        self.policy.scans(direction)
    }

    /// Whether scanning may change a body in `direction` (so its length is not known ahead).
    pub fn may_rewrite(&self, direction: BodyDirection) -> bool {
        let builtin = match direction {
            BodyDirection::Request => &self.spec.request,
            BodyDirection::Response => &self.spec.response,
        };
        let redact = |a: &DlpAction| *a == DlpAction::Redact;
        builtin.values().any(redact)
            || self
                .spec
                .custom
                .iter()
                .any(|c| c.direction.includes(direction) && redact(&c.action))
            || self
                .spec
                .keywords
                .iter()
                .any(|k| k.direction.includes(direction) && redact(&k.action))
    }
}
