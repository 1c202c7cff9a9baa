//! The DLP section of the config, exactly as serde reads it. Unknown keys and unknown detector
//! names are errors: a typo in a data-loss rule must never silently switch it off.
//!
//! ```yaml
//! request:  { card_number: block, us_ssn: redact, jwt: record }
//! response: { card_number: redact, private_key: block }
//! custom:   [ { name: employee-id, pattern: "EMP-[0-9]{6}", action: redact } ]
//! keywords: [ { name: codename, words: [bluebird, nightjar], action: record } ]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{BodyDirection, DetectorKind, DlpAction};

/// A DLP configuration: built-in detectors per direction, plus tenant patterns and word lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DlpSpec {
    /// Built-in detectors applied to request bodies, with their action.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "detector_actions"))]
    pub request: BTreeMap<BuiltinDetector, DlpAction>,
    /// Built-in detectors applied to response bodies, with their action.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "detector_actions"))]
    pub response: BTreeMap<BuiltinDetector, DlpAction>,
    /// Tenant-defined regular expressions.
    #[serde(default)]
    pub custom: Vec<CustomPatternSpec>,
    /// Tenant-defined keyword lists.
    #[serde(default)]
    pub keywords: Vec<KeywordListSpec>,
}

/// The schema of a detector -> action map: serde reads the keys as [`BuiltinDetector`]s, so an
/// unknown detector name is an error, and the schema says so too.
#[cfg(feature = "schema")]
fn detector_actions(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let detectors = generator.subschema_for::<BuiltinDetector>();
    let actions = generator.subschema_for::<DlpAction>();
    schemars::json_schema!({
        "type": "object",
        "propertyNames": detectors,
        "additionalProperties": actions,
    })
}

/// A tenant-defined pattern.
///
/// The pattern uses the `regex` crate's syntax and must have a bounded match length (at most
/// 1,024 bytes: write `[0-9]{6,12}`, not `[0-9]+`) and no `^`/`$` anchors, so it can be found
/// in a stream with a bounded hold-back. Add `(?i)` for case-insensitivity. It should not match
/// quotes or backslashes, so a redacted JSON body stays well-formed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CustomPatternSpec {
    /// Name, `[a-z0-9-]`; shown as `custom:<name>` in findings and masks.
    pub name: String,
    /// The regular expression.
    pub pattern: String,
    /// What to do on a match.
    pub action: DlpAction,
    /// Which bodies to scan (default both).
    #[serde(default)]
    pub direction: DirectionSelector,
}

/// A tenant-defined list of words, matched case-insensitively as whole words.
///
/// Word edges are judged by ASCII word characters (`[A-Za-z0-9_]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct KeywordListSpec {
    /// Name, `[a-z0-9-]`; shown as `keyword:<name>` in findings and masks.
    pub name: String,
    /// The words (each 1–128 bytes, no control characters).
    pub words: Vec<String>,
    /// What to do on a match.
    pub action: DlpAction,
    /// Which bodies to scan (default both).
    #[serde(default)]
    pub direction: DirectionSelector,
}

/// Which bodies a tenant pattern or word list applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DirectionSelector {
    /// Request and response bodies.
    #[default]
    Both,
    /// Request bodies only.
    Request,
    /// Response bodies only.
    Response,
}

impl DirectionSelector {
    pub(crate) fn includes(self, direction: BodyDirection) -> bool {
        match self {
            DirectionSelector::Both => true,
            DirectionSelector::Request => direction == BodyDirection::Request,
            DirectionSelector::Response => direction == BodyDirection::Response,
        }
    }
}

/// The built-in detectors, as named in config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BuiltinDetector {
    /// `card_number`
    CardNumber,
    /// `us_ssn`
    UsSsn,
    /// `iban`
    Iban,
    /// `private_key`
    PrivateKey,
    /// `aws_access_key_id`
    AwsAccessKeyId,
    /// `aws_secret_key`
    AwsSecretKey,
    /// `github_token`
    GithubToken,
    /// `slack_token`
    SlackToken,
    /// `bearer_token`
    BearerToken,
    /// `jwt`
    Jwt,
}

impl BuiltinDetector {
    /// Every built-in detector, in scanning order.
    pub const ALL: [BuiltinDetector; 10] = [
        BuiltinDetector::CardNumber,
        BuiltinDetector::UsSsn,
        BuiltinDetector::Iban,
        BuiltinDetector::PrivateKey,
        BuiltinDetector::AwsAccessKeyId,
        BuiltinDetector::AwsSecretKey,
        BuiltinDetector::GithubToken,
        BuiltinDetector::SlackToken,
        BuiltinDetector::BearerToken,
        BuiltinDetector::Jwt,
    ];

    /// The config name, also used in findings and redaction masks.
    pub fn as_str(self) -> &'static str {
        match self {
            BuiltinDetector::CardNumber => "card_number",
            BuiltinDetector::UsSsn => "us_ssn",
            BuiltinDetector::Iban => "iban",
            BuiltinDetector::PrivateKey => "private_key",
            BuiltinDetector::AwsAccessKeyId => "aws_access_key_id",
            BuiltinDetector::AwsSecretKey => "aws_secret_key",
            BuiltinDetector::GithubToken => "github_token",
            BuiltinDetector::SlackToken => "slack_token",
            BuiltinDetector::BearerToken => "bearer_token",
            BuiltinDetector::Jwt => "jwt",
        }
    }

    /// This detector's bit in a set of built-ins.
    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl From<BuiltinDetector> for DetectorKind {
    fn from(b: BuiltinDetector) -> Self {
        match b {
            BuiltinDetector::CardNumber => DetectorKind::CardNumber,
            BuiltinDetector::UsSsn => DetectorKind::UsSsn,
            BuiltinDetector::Iban => DetectorKind::Iban,
            BuiltinDetector::PrivateKey => DetectorKind::PrivateKey,
            BuiltinDetector::AwsAccessKeyId => DetectorKind::AwsAccessKeyId,
            BuiltinDetector::AwsSecretKey => DetectorKind::AwsSecretKey,
            BuiltinDetector::GithubToken => DetectorKind::GithubToken,
            BuiltinDetector::SlackToken => DetectorKind::SlackToken,
            BuiltinDetector::BearerToken => DetectorKind::BearerToken,
            BuiltinDetector::Jwt => DetectorKind::Jwt,
        }
    }
}
