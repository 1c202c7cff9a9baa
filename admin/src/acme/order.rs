//! Orders and authorizations as the store keeps them (in memory on one node, in PostgreSQL
//! for a fleet), and the status a client sees of each.

use std::time::SystemTime;

use portcullis_ca::Serial;
use serde_json::Value;

pub(crate) use super::renewal::CertId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    Processing,
    Ready,
    Valid,
    Invalid,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Ready => "ready",
            Status::Valid => "valid",
            Status::Invalid => "invalid",
        }
    }

    /// A stored status; None for text no release writes.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        [
            Status::Pending,
            Status::Processing,
            Status::Ready,
            Status::Valid,
            Status::Invalid,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// The challenge kinds this server knows, as stored.
pub(crate) const CHALLENGES: [&str; 3] = ["http-01", "tls-alpn-01", "dns-01"];

/// A stored challenge kind as the static name; None for one this release does not offer.
pub(crate) fn challenge_kind(text: &str) -> Option<&'static str> {
    CHALLENGES.into_iter().find(|k| *k == text)
}

#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) account: i64,
    /// As a client sees it when read from the store (`ready` and `invalid` worked out from the
    /// authorizations while pending); `pending` when handed to the store.
    pub(crate) status: Status,
    pub(crate) expires: SystemTime,
    pub(crate) names: Vec<String>,
    pub(crate) authz: Vec<String>,
    pub(crate) certificate: Option<Serial>,
    pub(crate) error: Option<Value>,
    /// The certificate this order replaces (RFC 9773), checked to be the account's.
    pub(crate) replaces: Option<CertId>,
}

#[derive(Debug, Clone)]
pub(crate) struct Authz {
    pub(crate) account: i64,
    pub(crate) name: String,
    pub(crate) expires: SystemTime,
    pub(crate) token: String,
    /// The challenge's status (the authorization's follows it).
    pub(crate) status: Status,
    /// The challenge the client chose (`http-01`, `tls-alpn-01`, `dns-01`), once it chose.
    pub(crate) chosen: Option<&'static str>,
    pub(crate) validated: Option<SystemTime>,
    pub(crate) error: Option<Value>,
}

/// The status a client sees of an order stored as `stored` whose authorizations are `authz`:
/// while pending, invalid if any authorization is, ready once all are valid.
pub(crate) fn order_status(stored: Status, authz: impl IntoIterator<Item = Status>) -> Status {
    if stored != Status::Pending {
        return stored;
    }
    let mut all_valid = true;
    for status in authz {
        match status {
            Status::Invalid => return Status::Invalid,
            Status::Valid => {}
            _ => all_valid = false,
        }
    }
    if all_valid {
        Status::Ready
    } else {
        Status::Pending
    }
}

/// What became of a finalization that claimed its order.
#[derive(Debug)]
pub(crate) enum Finalized {
    /// Issued: the order is valid with this certificate.
    Issued(Serial),
    /// The CA refused the CSR: the order is invalid, with this problem.
    Refused(Value),
    /// The CA could not issue now: the order is ready again for a retry.
    Retry,
}

/// Why a new order is not kept.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OrderRefused {
    /// Too many orders in progress, for the account or in all.
    TooMany,
    /// Another live order already replaces the same certificate.
    AlreadyReplaced,
}
