//! JSON Schema for the newtypes config files name (feature `schema`), so that
//! `portcullis config schema` describes them as the strings serde reads, with the same rules
//! where a regular expression can say them. The parsers stay the authority: a schema pattern
//! only lets an editor flag the obvious mistakes early.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use crate::{DnsPattern, SpiffeIdPattern, TenantId};

/// A duration as `humantime_serde` reads it: `250ms`, `10s`, `5m`, `1h 30m`, `90d`. Config
/// fields read with `#[serde(with = "humantime_serde")]` take their schema from here.
#[derive(Debug)]
pub struct HumanDuration;

/// humantime's units (`humantime::parse_duration`), longest first within each unit so the
/// alternation reads like the parser's table.
const DURATION_PATTERN: &str = concat!(
    r"^\s*([0-9]+(\.[0-9]+)?\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s",
    r"|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w",
    r"|months|month|M|years|year|yrs|yr|y)\s*)+$"
);

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit, repeated (`250ms`, `10s`, `5m`, `1h 30m`, `90d`).",
            "pattern": DURATION_PATTERN,
            "examples": ["10s", "5m", "1h 30m"],
        })
    }
}

impl JsonSchema for TenantId {
    fn schema_name() -> Cow<'static, str> {
        "TenantId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A tenant id: 1-63 of a-z, 0-9 and '-', not starting with '-'.",
            "pattern": "^[a-z0-9][a-z0-9-]{0,62}$",
        })
    }
}

impl JsonSchema for SpiffeIdPattern {
    fn schema_name() -> Cow<'static, str> {
        "SpiffeIdPattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A SPIFFE ID pattern: spiffe://TRUST.DOMAIN/path, where a `*` segment is one segment and a final `**` one or more.",
            "pattern": "^spiffe://[a-z0-9._-]+/.+$",
        })
    }
}

impl JsonSchema for DnsPattern {
    fn schema_name() -> Cow<'static, str> {
        "DnsPattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A DNS name, or `*.BASE` for exactly one label under BASE.",
            "minLength": 1,
            "maxLength": 253,
        })
    }
}
