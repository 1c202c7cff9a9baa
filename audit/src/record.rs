//! The audit record: a versioned JSON schema, one record per line, chained by SHA-256.
//!
//! # Line format (schema version 1)
//!
//! Each record is one line of compact JSON (UTF-8, no whitespace between tokens) ending in `\n`,
//! with the members in exactly this order:
//!
//! ```text
//! {"v":1,"seq":42,"time":"2025-01-01T00:00:00.000000Z","node":"gw-1","kind":"request","event":{...},"prev_hash":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! - `v`: schema version, `1`.
//! - `seq`: the record's sequence number on this node, from 0, without gaps.
//! - `time`: RFC 3339 UTC, stamped by the writer when it assigns `seq` (so `time` never goes
//!   backwards along the chain unless the wall clock does).
//! - `node`: the gateway node that wrote it (the central store's key is `(node, seq)`).
//! - `kind` + `event`: what happened, see [`RecordKind`].
//! - `prev_hash`: the `hash` of record `seq - 1`; for `seq` 0 it is [`GENESIS_HASH`]
//!   (32 zero bytes, hex).
//! - `hash`: lowercase hex SHA-256 of the line's bytes **without the hash member**: exactly the
//!   bytes of the line up to (not including) the final `,"hash":"` followed by the single byte `}`.
//!   No re-serialisation or canonicalisation is involved: a verifier hashes the bytes it read,
//!   so any byte changed anywhere in the record (including whitespace or member order) is seen.
//!   The `hash` member must be the last one and must be 64 lowercase hex digits.
//!
//! Signed records ([`Checkpoint`], [`Retention`]) sign a separate, documented message (see
//! [`Checkpoint::signed_message`] and [`Retention::signed_message`]) that commits to the chain.
//!
//! # Additions within version 1
//!
//! Readers ignore members and kinds they do not know, so version 1 grows compatibly: a new
//! member is optional and left out when empty, so records written before it still parse, and
//! still verify (verification hashes the bytes read, never a re-serialisation).
//!
//! - `request` events may carry `path_truncated` ([`TruncatedPath`]) after `path`, when the path
//!   was cut to a bound ([`RequestEvent::bound_path`]).
//! - `request` events leave out their optional members that are null (`trace_id`, `tenant`,
//!   `route`, `identity`, `rule`, `tls_version`, `upstream`, `reason`): a reader takes a missing
//!   one as null, as version 1 readers always have. Records written with the nulls still parse
//!   and verify.
//! - Kind `refusals_suppressed` ([`SuppressedRefusals`]): how many records of refused requests
//!   were not written in detail, per source, over an interval.
//! - Kind `abuse_summary` ([`AbuseSummary`]): per listener, the connections slowed or closed
//!   for their refusals and refused for their connection rate over an interval, with the
//!   callers that did most of it.

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

/// The schema version written in every record's `v` member.
pub const SCHEMA_VERSION: u32 = 1;

/// `prev_hash` of the first record of a node's log: 32 zero bytes, hex.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_MEMBER: &[u8] = b",\"hash\":\"";

/// One record of the audit log, as stored (see the module docs for the exact line format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// Sequence number on this node, from 0, without gaps.
    pub seq: u64,
    /// RFC 3339 UTC time stamped by the writer.
    pub time: String,
    /// The node that wrote the record.
    pub node: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: RecordKind,
    /// Hash of the previous record ([`GENESIS_HASH`] for seq 0).
    pub prev_hash: String,
    /// SHA-256 of this record's line without the `hash` member, hex.
    pub hash: String,
}

/// What a record says happened. Serialised as `"kind":"<name>","event":{...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "event", rename_all = "snake_case")]
#[non_exhaustive]
// Requests are nearly every record: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum RecordKind {
    /// A request decision at the data plane (`"kind":"request"`).
    Request(RequestEvent),
    /// A certificate authority event (`"kind":"ca"`).
    Ca(CaEvent),
    /// An admin API action (`"kind":"admin"`).
    Admin(AdminAction),
    /// A configuration reload (`"kind":"config_reload"`).
    ConfigReload(ConfigReload),
    /// Refusal records left out over budget, counted (`"kind":"refusals_suppressed"`).
    RefusalsSuppressed(SuppressedRefusals),
    /// Abusive callers escalated against over an interval, counted (`"kind":"abuse_summary"`).
    AbuseSummary(AbuseSummary),
    /// Written by the log itself after cutting a torn tail on open (`"kind":"truncation"`).
    Truncation(Truncation),
    /// Written by the log itself after deleting old segments; signed (`"kind":"retention"`).
    Retention(Retention),
    /// A signed checkpoint over the chain so far (`"kind":"checkpoint"`).
    Checkpoint(Checkpoint),
}

impl RecordKind {
    /// The `kind` member's value.
    pub fn name(&self) -> &'static str {
        match self {
            RecordKind::Request(_) => "request",
            RecordKind::Ca(_) => "ca",
            RecordKind::Admin(_) => "admin",
            RecordKind::ConfigReload(_) => "config_reload",
            RecordKind::RefusalsSuppressed(_) => "refusals_suppressed",
            RecordKind::AbuseSummary(_) => "abuse_summary",
            RecordKind::Truncation(_) => "truncation",
            RecordKind::Retention(_) => "retention",
            RecordKind::Checkpoint(_) => "checkpoint",
        }
    }
}

/// An event a producer hands to the log. The log's own records (truncation, retention,
/// checkpoint) are written only by the writer and cannot be appended from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // as for RecordKind
pub enum AuditEvent {
    /// A request decision.
    Request(RequestEvent),
    /// A certificate authority event.
    Ca(CaEvent),
    /// An admin API action.
    Admin(AdminAction),
    /// A configuration reload.
    ConfigReload(ConfigReload),
    /// Refusal records left out over budget, counted.
    RefusalsSuppressed(SuppressedRefusals),
    /// Abusive callers escalated against, counted.
    AbuseSummary(AbuseSummary),
}

impl From<AuditEvent> for RecordKind {
    fn from(e: AuditEvent) -> Self {
        match e {
            AuditEvent::Request(r) => RecordKind::Request(r),
            AuditEvent::Ca(c) => RecordKind::Ca(c),
            AuditEvent::Admin(a) => RecordKind::Admin(a),
            AuditEvent::ConfigReload(c) => RecordKind::ConfigReload(c),
            AuditEvent::RefusalsSuppressed(s) => RecordKind::RefusalsSuppressed(s),
            AuditEvent::AbuseSummary(s) => RecordKind::AbuseSummary(s),
        }
    }
}

impl From<RequestEvent> for AuditEvent {
    fn from(e: RequestEvent) -> Self {
        AuditEvent::Request(e)
    }
}
impl From<CaEvent> for AuditEvent {
    fn from(e: CaEvent) -> Self {
        AuditEvent::Ca(e)
    }
}
impl From<AdminAction> for AuditEvent {
    fn from(e: AdminAction) -> Self {
        AuditEvent::Admin(e)
    }
}
impl From<ConfigReload> for AuditEvent {
    fn from(e: ConfigReload) -> Self {
        AuditEvent::ConfigReload(e)
    }
}
impl From<SuppressedRefusals> for AuditEvent {
    fn from(e: SuppressedRefusals) -> Self {
        AuditEvent::RefusalsSuppressed(e)
    }
}
impl From<AbuseSummary> for AuditEvent {
    fn from(e: AbuseSummary) -> Self {
        AuditEvent::AbuseSummary(e)
    }
}

/// One request's decision at the data plane. Never carries bodies, headers' values or matched
/// DLP data: only who, what, where and the outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEvent {
    /// The gateway's request id.
    pub request_id: String,
    /// Which of a request's records this is: in fail-closed mode an allowed request has an
    /// `admitted` record, made durable before it is forwarded, and a `completed` one.
    #[serde(default)]
    pub stage: RequestStage,
    /// W3C trace id (32 hex), when the request carried or was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Tenant the route belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Route id that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Caller identity: SPIFFE ID, or the certificate/token subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The person, when the request carried a verified bearer token (a compatible addition
    /// within v1). Never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<PersonFacts>,
    /// Client address, `ip:port`.
    pub source: String,
    /// HTTP method.
    pub method: String,
    /// Host (authority) the request named.
    pub host: String,
    /// Normalised path; without the query string unless configured (see [`audit_path`]).
    pub path: String,
    /// Present when `path` was cut to a bound: the whole path's length and digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_truncated: Option<TruncatedPath>,
    /// Status sent to the client.
    pub status: u16,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Time from request head to end of response, milliseconds.
    pub duration_ms: u64,
    /// The authorisation decision.
    pub decision: Decision,
    /// The rule that decided (allowing or denying), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Rate limiting outcome.
    pub rate_limit: RateLimitOutcome,
    /// DLP tallies: detector, count and action; never the matched data.
    pub dlp: Vec<DlpFinding>,
    /// Negotiated TLS version (`"TLSv1.3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// Upstream the request was sent to (`host:port`), if it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Why a request was not served as allowed (`no_route`, `rate_limited`, `too_large`,
    /// `dlp_refused`, `invalid`, `audit_unavailable`, `upstream_error`…), when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `egress` for a request the local workload sent out through a sidecar's egress listener;
    /// absent for inbound requests (a compatible addition within v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The fallback upstream that took the request because the route's own had no healthy
    /// target; absent otherwise (a compatible addition within v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
}

impl RequestEvent {
    /// Cuts `path` to at most `max` bytes (on a character boundary), keeping the whole path's
    /// length and SHA-256 in `path_truncated`, so that the record stays small and still names
    /// exactly what was asked. Does nothing to a path that fits.
    pub fn bound_path(&mut self, max: usize) {
        if self.path.len() <= max {
            return;
        }
        let digest = ring::digest::digest(&SHA256, self.path.as_bytes());
        self.path_truncated = Some(TruncatedPath {
            bytes: self.path.len() as u64,
            sha256: hex::encode(digest),
        });
        let mut cut = max;
        while !self.path.is_char_boundary(cut) {
            cut -= 1;
        }
        self.path.truncate(cut);
    }
}

/// What a cut `path` member was before it was cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncatedPath {
    /// The whole path's length in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole path's bytes, lowercase hex.
    pub sha256: String,
}

/// Records of refused requests that were not written in detail because their source had used
/// its budget for the interval: counted, so that no refusal goes unrecorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressedRefusals {
    /// Start of the interval the counts cover (RFC 3339 UTC).
    pub since: String,
    /// Suppressed records by source, most first; at most a bounded number of sources.
    pub sources: Vec<SuppressedSource>,
    /// Suppressed records of sources not listed.
    pub unlisted: u64,
    /// All suppressed records of the interval (the listed ones plus `unlisted`).
    pub suppressed: u64,
}

/// One source's suppressed refusal records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressedSource {
    /// Client address, as in a request record's `source`.
    pub source: String,
    /// Records suppressed.
    pub suppressed: u64,
}

/// What the gateway did to abusive callers over an interval: connections slowed and closed
/// for the refusals they kept drawing, and new connections refused for coming too often.
/// Written once per interval in which anything happened. The counts are exact; the callers
/// named are bounded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbuseSummary {
    /// Start of the interval the counts cover (RFC 3339 UTC).
    pub since: String,
    /// Per listener with anything to report, in name order.
    pub listeners: Vec<ListenerAbuse>,
}

/// One listener's escalations over an interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerAbuse {
    /// The listener's name.
    pub listener: String,
    /// Connections whose refusals began to be answered late (each connection once).
    pub slowed: u64,
    /// Refusals answered late (`portcullis_abuse_escalations_total{action="slowed"}`).
    pub delayed: u64,
    /// Connections ended for their refusals.
    pub closed: u64,
    /// New connections refused at accept over their source's connection rate.
    pub source_rate: u64,
    /// New connections refused after the handshake over their identity's connection rate.
    pub identity_rate: u64,
    /// The sources (client addresses) with the most events, most first; bounded.
    pub sources: Vec<AbuseCaller>,
    /// The identities (SPIFFE ID, else certificate subject) with the most events, most
    /// first; bounded. Connections refused before the handshake have none.
    pub identities: Vec<AbuseCaller>,
}

/// One source's or identity's share of a listener's escalations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbuseCaller {
    /// The client address (as in a request record's `source`), or the identity.
    pub caller: String,
    /// Its connections slowed.
    pub slowed: u64,
    /// Its connections closed.
    pub closed: u64,
    /// Its new connections refused over a connection rate (a source's: either rate).
    pub refused: u64,
}

/// Which record of a request this is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RequestStage {
    /// Written before the request was forwarded: the decision, without the outcome (status,
    /// bytes and duration are zero).
    Admitted,
    /// Written when the request ended: the decision and the outcome.
    #[default]
    Completed,
}

impl RequestStage {
    /// The serialised name (`"admitted"`, `"completed"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestStage::Admitted => "admitted",
            RequestStage::Completed => "completed",
        }
    }
}

/// The authorisation decision recorded for a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Decision {
    /// Allowed by policy.
    #[default]
    Allow,
    /// Denied by policy (or by a DLP block, with the detector in `dlp`).
    Deny,
    /// Not decided: the request failed before a decision (bad TLS, malformed request).
    Error,
}

impl Decision {
    /// The serialised name (`"allow"`, `"deny"`, `"error"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Error => "error",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            "error" => Ok(Decision::Error),
            other => Err(format!(
                "unknown decision {other:?} (expected allow, deny or error)"
            )),
        }
    }
}

/// What rate limiting did to a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RateLimitOutcome {
    /// No limit applies to this request.
    #[default]
    None,
    /// A limit applies and the request was within it.
    Passed,
    /// The request was refused by a limit.
    Limited,
}

impl RateLimitOutcome {
    /// The serialised name (`"none"`, `"passed"`, `"limited"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            RateLimitOutcome::None => "none",
            RateLimitOutcome::Passed => "passed",
            RateLimitOutcome::Limited => "limited",
        }
    }
}

/// Who a verified bearer token named and how that person authenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonFacts {
    /// The tenant's identity provider that verified the token.
    pub provider: String,
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// Authentication methods (`amr`), e.g. `pwd`, `mfa`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Authentication context class (`acr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// When the person authenticated (Unix time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
}

/// One DLP detector's tally for a request: never the matched data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlpFinding {
    /// Detector name (`"credit_card"`).
    pub detector: String,
    /// Number of matches.
    pub count: u64,
    /// Action taken (`"record"`, `"redact"`, `"block"`).
    pub action: String,
}

/// A certificate authority event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaEvent {
    /// What the CA did.
    pub action: CaAction,
    /// Who asked (identity of the requester).
    pub requester: String,
    /// Subject (SPIFFE ID / CN) of the certificate concerned.
    pub subject: Option<String>,
    /// Serial number, hex, when a certificate exists.
    pub serial: Option<String>,
    /// Issuance profile used.
    pub profile: Option<String>,
    /// Why (refusal or revocation reason).
    pub reason: Option<String>,
    /// The tenant the certificate is (or would have been) for, when known. Absent in records
    /// written before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The kind of CA event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CaAction {
    /// A certificate was issued.
    Issue,
    /// An issuance request was refused.
    Refuse,
    /// A certificate was revoked.
    Revoke,
}

/// An admin API call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAction {
    /// Who called (identity).
    pub actor: String,
    /// What was asked (`"route.update"`).
    pub action: String,
    /// The object acted on.
    pub target: Option<String>,
    /// Tenant scope, if any.
    pub tenant: Option<String>,
    /// Outcome (`"ok"`, `"denied"`, `"error"`).
    pub outcome: String,
    /// The caller's role that allowed the call (`"tenant_admin"`), when a role did (a
    /// compatible addition within v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A configuration reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReload {
    /// Digest of the new configuration (`"sha256:<hex>"`).
    pub digest: String,
    /// Who or what triggered it (`"startup"`, `"signal"`, `"file change"`, `"admin:alice"`).
    pub trigger: Option<String>,
    /// True when the new configuration failed its checks and the running one was kept.
    #[serde(default)]
    pub refused: bool,
}

impl ConfigReload {
    /// The digest of a configuration file's bytes, as recorded (`"sha256:<hex>"`).
    pub fn digest_of(config: &[u8]) -> String {
        let digest = ring::digest::digest(&SHA256, config);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

/// Written on open after a torn tail was cut from the last segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// The segment file that was cut.
    pub segment: String,
    /// The first sequence number that was not kept (the cut bytes claimed this seq and after).
    pub from_seq: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// File the cut bytes were saved to, beside the segments, for forensics.
    pub saved_as: Option<String>,
}

/// Written after whole segments were deleted by retention; signed, so that verification can
/// start from the first remaining record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Segment file names deleted, oldest first.
    pub deleted_segments: Vec<String>,
    /// The last sequence number deleted.
    pub through_seq: u64,
    /// The hash of record `through_seq` (= `prev_hash` of record `through_seq + 1`).
    pub through_hash: String,
    /// Signature algorithm ([`crate::SignatureAlgorithm::name`]).
    pub algorithm: String,
    /// Key id: first 16 hex digits of SHA-256 over the signer's SubjectPublicKeyInfo DER.
    pub key_id: String,
    /// Signature over [`Retention::signed_message`], hex.
    pub signature: String,
}

impl Retention {
    /// The exact bytes signed: UTF-8 of
    /// `portcullis-audit-retention/v1\nnode=<node>\ntime=<time>\nthrough_seq=<n>\nthrough_hash=<hex>\ndeleted=<name>,<name>...\n`
    /// where node and time are the record's own.
    pub fn signed_message(
        node: &str,
        time: &str,
        through_seq: u64,
        through_hash: &str,
        deleted: &[String],
    ) -> Vec<u8> {
        format!(
            "portcullis-audit-retention/v1\nnode={node}\ntime={time}\nthrough_seq={through_seq}\nthrough_hash={through_hash}\ndeleted={}\n",
            deleted.join(",")
        )
        .into_bytes()
    }
}

/// A signed statement that the chain up to `through_seq` ends in `chain_hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The segment file holding the checkpoint.
    pub segment: String,
    /// The last record covered: the checkpoint's own `seq - 1`.
    pub through_seq: u64,
    /// The hash of record `through_seq` (= the checkpoint's own `prev_hash`).
    pub chain_hash: String,
    /// Signature algorithm ([`crate::SignatureAlgorithm::name`]).
    pub algorithm: String,
    /// Key id: first 16 hex digits of SHA-256 over the signer's SubjectPublicKeyInfo DER.
    pub key_id: String,
    /// Signature over [`Checkpoint::signed_message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes signed: UTF-8 of
    /// `portcullis-audit-checkpoint/v1\nnode=<node>\ntime=<time>\nsegment=<segment>\nthrough_seq=<n>\nchain_hash=<hex>\n`
    /// where node and time are the checkpoint record's own.
    pub fn signed_message(
        node: &str,
        time: &str,
        segment: &str,
        through_seq: u64,
        chain_hash: &str,
    ) -> Vec<u8> {
        format!(
            "portcullis-audit-checkpoint/v1\nnode={node}\ntime={time}\nsegment={segment}\nthrough_seq={through_seq}\nchain_hash={chain_hash}\n"
        )
        .into_bytes()
    }
}

/// The fields every record has, parsed without the event: enough to check the chain even for
/// kinds a newer writer added.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct RecordHeader {
    pub(crate) v: u32,
    pub(crate) seq: u64,
    pub(crate) kind: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

/// Why a line is not a valid record on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LineFault {
    /// Not JSON of the expected shape, or no well-formed trailing hash member.
    Malformed(String),
    /// Well-formed, but the hash does not match the bytes.
    HashMismatch,
}

/// Checks a line (without its `\n`) against its own hash and parses its header.
pub(crate) fn check_line(line: &[u8]) -> Result<RecordHeader, LineFault> {
    let claimed = claimed_hash(line)?;
    let cut = line.len() - (HASH_MEMBER.len() + 64 + 2);
    let mut ctx = Context::new(&SHA256);
    ctx.update(&line[..cut]);
    ctx.update(b"}");
    let actual = ctx.finish();
    let header: RecordHeader = serde_json::from_slice(line)
        .map_err(|e| LineFault::Malformed(format!("not a record: {e}")))?;
    if header.hash.as_bytes() != claimed || hex::encode(actual.as_ref()).as_bytes() != claimed {
        return Err(LineFault::HashMismatch);
    }
    Ok(header)
}

fn claimed_hash(line: &[u8]) -> Result<&[u8], LineFault> {
    let tail = HASH_MEMBER.len() + 64 + 2;
    if line.len() < tail + 1 || !line.ends_with(b"\"}") {
        return Err(LineFault::Malformed(
            "line does not end with a hash member".into(),
        ));
    }
    let start = line.len() - tail;
    if &line[start..start + HASH_MEMBER.len()] != HASH_MEMBER {
        return Err(LineFault::Malformed(
            "line does not end with a hash member".into(),
        ));
    }
    let hex_part = &line[start + HASH_MEMBER.len()..line.len() - 2];
    if !hex_part
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err(LineFault::Malformed(
            "hash is not 64 lowercase hex digits".into(),
        ));
    }
    Ok(hex_part)
}

/// Parses a full record from a line already checked by [`check_line`].
pub(crate) fn parse_record(line: &[u8]) -> Result<AuditRecord, serde_json::Error> {
    serde_json::from_slice(line)
}

/// The path to record for a request: the path of `path_and_query`, without the query string
/// unless `keep_query` is set (query strings often carry tokens and personal data).
pub fn audit_path(path_and_query: &str, keep_query: bool) -> &str {
    if keep_query {
        path_and_query
    } else {
        path_and_query
            .split_once('?')
            .map_or(path_and_query, |(p, _)| p)
    }
}

mod encode;

#[cfg(test)]
use encode::encode;
pub(crate) use encode::encode_into;

#[cfg(test)]
mod tests;
