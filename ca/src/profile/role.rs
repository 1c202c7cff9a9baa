//! Operators are a role, not a name. SPIFFE IDs under `/portcullis/operator/` of any trust
//! domain are reserved for profiles with `role: operator`, which issue only at an operator's
//! request (`portcullis ca issue`) or by renewal; a tenant profile may neither issue such an ID
//! nor carry a pattern that could match one.

use serde::{Deserialize, Serialize};

use super::{SpiffeId, SpiffeIdPattern};

/// What a profile issues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProfileRole {
    /// Workload identities of its tenant (the default), never under the operator path.
    #[default]
    Tenant,
    /// Operator identities: issued only at an operator's request, or by renewal.
    Operator,
}

/// The reserved path, as shown in messages and documentation.
pub const OPERATOR_PATH: &str = "/portcullis/operator/";

/// The reserved path's first segments.
const RESERVED: [&str; 2] = ["portcullis", "operator"];

/// Whether `id` is under the reserved operator path (or is the path itself).
pub(crate) fn is_operator_id(id: &SpiffeId) -> bool {
    id.segments().take(RESERVED.len()).eq(RESERVED)
}

/// Whether `pattern` could match an ID under the reserved operator path. Decided by the
/// pattern's own matching on one probe: its wildcards filled with the reserved segments where
/// they fall in the first two, with any segment after; the pattern matches some reserved ID
/// exactly when it matches that probe and the probe is reserved.
pub(crate) fn reaches_operator_path(pattern: &SpiffeIdPattern) -> bool {
    let path = pattern
        .as_str()
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    let fill = |at: usize| RESERVED.get(at).copied().unwrap_or("x");
    let mut probe: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            // One or more segments: as many reserved ones as are still missing.
            "**" => loop {
                probe.push(fill(probe.len()));
                if probe.len() >= RESERVED.len() {
                    break;
                }
            },
            "*" => probe.push(fill(probe.len())),
            literal => probe.push(literal),
        }
    }
    let text = format!("spiffe://{}/{}", pattern.trust_domain(), probe.join("/"));
    match text.parse::<SpiffeId>() {
        Ok(id) => is_operator_id(&id) && pattern.matches(&id),
        // Only a pattern near the length limit gets here: refuse it rather than guess.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_ids_are_those_under_the_reserved_path() {
        for (id, reserved) in [
            ("spiffe://td/portcullis/operator/alice", true),
            ("spiffe://td/portcullis/operator", true),
            ("spiffe://other.td/portcullis/operator/a/b", true),
            ("spiffe://td/portcullis/operators/alice", false),
            ("spiffe://td/Portcullis/operator/alice", false),
            ("spiffe://td/ns/portcullis/operator/alice", false),
            ("spiffe://td/portcullis", false),
        ] {
            assert_eq!(is_operator_id(&id.parse().unwrap()), reserved, "{id}");
        }
    }

    #[test]
    fn patterns_that_could_reach_the_reserved_path() {
        for (pattern, reaches) in [
            ("spiffe://td/**", true),
            ("spiffe://td/*/**", true),
            ("spiffe://td/*/*/*", true),
            ("spiffe://td/*/operator/*", true),
            ("spiffe://td/portcullis/**", true),
            ("spiffe://td/portcullis/*", true),
            ("spiffe://td/portcullis/operator/alice", true),
            ("spiffe://td/*/*", true),
            ("spiffe://td/*", false),
            ("spiffe://td/ns/**", false),
            ("spiffe://td/*/sa/*", false),
            ("spiffe://td/portcullis/gateway/**", false),
            ("spiffe://td/portcullis", false),
            ("spiffe://td/ns/*/sa/*", false),
        ] {
            assert_eq!(
                reaches_operator_path(&pattern.parse().unwrap()),
                reaches,
                "{pattern}"
            );
        }
    }
}
