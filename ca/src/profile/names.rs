//! SPIFFE IDs and DNS names, requested and allowed.
//!
//! SPIFFE patterns: `spiffe://TRUST.DOMAIN/literal/*/**` where `*` is exactly one path segment
//! and `**` (last only) one or more. The trust domain is always literal.
//! DNS patterns: an exact name, or `*.BASE` allowing exactly one more label in front of BASE;
//! BASE must have at least two labels (`*.com` is refused).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{shown, IssueRefusal};

const MAX_SPIFFE_ID: usize = 2048;

/// A well-formed SPIFFE ID with a non-empty path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpiffeId {
    uri: String,
    trust_domain: String,
    segments: Vec<String>,
}

impl SpiffeId {
    pub(crate) fn parse(uri: &str) -> Result<Self, IssueRefusal> {
        let invalid = |why: &str| IssueRefusal::SpiffeIdInvalid {
            id: shown(uri),
            why: why.to_owned(),
        };
        if uri.len() > MAX_SPIFFE_ID {
            return Err(invalid("longer than 2048 bytes"));
        }
        let rest = uri.strip_prefix("spiffe://").ok_or_else(|| {
            IssueRefusal::SanNotAllowed(format!("URI {:?} (not spiffe://)", shown(uri)))
        })?;
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        check_trust_domain(trust_domain).map_err(invalid)?;
        if path.is_empty() {
            return Err(invalid("no path: a workload ID needs one"));
        }
        let segments = path
            .split('/')
            .map(|s| check_segment(s).map(|()| s.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        Ok(Self {
            uri: uri.to_owned(),
            trust_domain: trust_domain.to_owned(),
            segments,
        })
    }

    pub(crate) fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.uri
    }
}

fn check_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("empty trust domain");
    }
    if td.len() > 255 {
        return Err("trust domain longer than 255 bytes");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("trust domain may hold only a-z 0-9 . - _");
    }
    Ok(())
}

fn check_segment(segment: &str) -> Result<(), &'static str> {
    if segment.is_empty() {
        return Err("empty path segment");
    }
    if segment == "." || segment == ".." {
        return Err("path segment . or ..");
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("path segments may hold only A-Z a-z 0-9 . - _");
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: one or more segments; last only.
    Rest,
}

/// An allowed SPIFFE ID pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeIdPattern {
    text: String,
    trust_domain: String,
    segments: Vec<Segment>,
}

impl SpiffeIdPattern {
    /// Parses `spiffe://td/a/*/**`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("SPIFFE ID pattern {pattern:?}: {why}");
        let rest = pattern
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("must start with spiffe://"))?;
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        check_trust_domain(trust_domain).map_err(bad)?;
        if path.is_empty() {
            return Err(bad("needs a path"));
        }
        let raw: Vec<&str> = path.split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            segments.push(match *s {
                "*" => Segment::One,
                "**" if i + 1 == raw.len() => Segment::Rest,
                "**" => return Err(bad("** is allowed only as the last segment")),
                literal => {
                    check_segment(literal).map_err(|why| {
                        bad(if literal.contains('*') {
                            "* must be a whole segment"
                        } else {
                            why
                        })
                    })?;
                    Segment::Literal(literal.to_owned())
                }
            });
        }
        Ok(Self {
            text: pattern.to_owned(),
            trust_domain: trust_domain.to_owned(),
            segments,
        })
    }

    /// The pattern's (literal) trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub(crate) fn matches(&self, id: &SpiffeId) -> bool {
        if id.trust_domain != self.trust_domain {
            return false;
        }
        let mut rest = id.segments.as_slice();
        for seg in &self.segments {
            match seg {
                Segment::Rest => return !rest.is_empty(),
                Segment::One => match rest.split_first() {
                    Some((_, tail)) => rest = tail,
                    None => return false,
                },
                Segment::Literal(lit) => match rest.split_first() {
                    Some((s, tail)) if s == lit => rest = tail,
                    _ => return false,
                },
            }
        }
        rest.is_empty()
    }
}

impl fmt::Display for SpiffeIdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for SpiffeIdPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for SpiffeIdPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A requested DNS name, lower-cased: a host name, or `*.BASE` with BASE of 2+ labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsName(String);

impl DnsName {
    pub(crate) fn parse(raw: &str) -> Result<Self, IssueRefusal> {
        let name = raw.to_ascii_lowercase();
        let invalid = |why: &str| IssueRefusal::DnsNameInvalid {
            name: shown(raw),
            why: why.to_owned(),
        };
        let wildcard = |why: &str| IssueRefusal::WildcardNotAllowed {
            name: shown(raw),
            why: why.to_owned(),
        };
        if name.len() > 253 {
            return Err(invalid("longer than 253 bytes"));
        }
        if name.contains('*') {
            let Some(base) = name.strip_prefix("*.") else {
                return Err(wildcard("* must be the whole leftmost label"));
            };
            if base.contains('*') {
                return Err(wildcard("only one wildcard label, leftmost"));
            }
            check_host(base).map_err(invalid)?;
            if base.split('.').count() < 2 {
                return Err(wildcard("a wildcard needs at least two labels under it"));
            }
            return Ok(Self(name));
        }
        check_host(&name).map_err(invalid)?;
        Ok(Self(name))
    }

    pub(crate) fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_host(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err("labels must be 1-63 bytes (no empty label, no trailing dot)");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("labels may hold only a-z 0-9 -");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels may not start or end with -");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("an all-numeric last label (an IP address is not a DNS name)");
    }
    Ok(())
}

/// An allowed DNS name pattern: exact, or `*.BASE` for one label under BASE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsPattern {
    /// This name only.
    Exact(String),
    /// `*.BASE` (holds BASE): one label under BASE, or the wildcard name itself when the
    /// profile issues wildcard names.
    Wildcard(String),
}

impl DnsPattern {
    /// Parses `name.example.com` or `*.example.com`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        match DnsName::parse(pattern) {
            Ok(name) => match name.0.strip_prefix("*.") {
                Some(base) => Ok(DnsPattern::Wildcard(base.to_owned())),
                None => Ok(DnsPattern::Exact(name.0)),
            },
            Err(e) => Err(format!("DNS pattern: {e}")),
        }
    }

    pub(crate) fn matches(&self, name: &DnsName) -> bool {
        match self {
            DnsPattern::Exact(exact) => name.0 == *exact,
            DnsPattern::Wildcard(base) => {
                if let Some(requested_base) = name.0.strip_prefix("*.") {
                    return requested_base == base;
                }
                name.0
                    .strip_suffix(base.as_str())
                    .and_then(|front| front.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            }
        }
    }
}

impl fmt::Display for DnsPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsPattern::Exact(name) => f.write_str(name),
            DnsPattern::Wildcard(base) => write!(f, "*.{base}"),
        }
    }
}

impl Serialize for DnsPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DnsPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
