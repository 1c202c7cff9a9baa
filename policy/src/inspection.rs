//! What a route inspects in bodies: its compiled DLP policy and the limits of inspection
//! (how much of a body is scanned, and how far a compressed body may expand).

use crate::dlp::{BodyDirection, DlpAction, DlpPolicy, DlpSpec};

/// What happens to a body longer than `max_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverLimit {
    /// Forward the rest unscanned and mark the request as not fully inspected.
    #[default]
    Pass,
    /// Refuse the body.
    Refuse,
}

/// Bounds on body inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InspectionLimits {
    /// Bytes of (decoded) body scanned at most.
    pub max_bytes: u64,
    /// What to do past `max_bytes`.
    pub over_limit: OverLimit,
    /// A gzip/deflate body that decodes to more than this is refused.
    pub max_decompressed_bytes: u64,
    /// A gzip/deflate body that expands more than this many times is refused.
    pub max_ratio: u64,
}

impl Default for InspectionLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            over_limit: OverLimit::Pass,
            max_decompressed_bytes: 8 << 20,
            max_ratio: 100,
        }
    }
}

/// A route's body inspection: compiled once per config load.
#[derive(Clone, Debug)]
pub struct RouteInspection {
    spec: DlpSpec,
    pub policy: DlpPolicy,
    pub limits: InspectionLimits,
}

impl PartialEq for RouteInspection {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.limits == other.limits
    }
}

impl RouteInspection {
    pub(crate) fn new(spec: DlpSpec, policy: DlpPolicy, limits: InspectionLimits) -> Self {
        Self {
            spec,
            policy,
            limits,
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
