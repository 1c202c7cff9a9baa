//! Times in the API's JSON: RFC 3339, whole seconds, UTC.

use std::time::SystemTime;

/// `#[serde(serialize_with = "crate::serde_time::rfc3339")]`.
pub(crate) fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}
