//! Tests for host normalisation and route precedence.

use super::*;
use crate::path::normalize_path;

fn route(name: &str, host: Option<&str>, prefix: &str) -> Route {
    let tenant: TenantId = "t".parse().unwrap();
    Route {
        id: RouteId::new(&tenant, name).unwrap(),
        tenant,
        upstream: "up".parse().unwrap(),
        host: host.map(str::to_owned),
        path_prefix: prefix.to_owned(),
        rate_limit: None,
        inspection: None,
        authentication: Default::default(),
        mfa: None,
        login: None,
        access: vec![],
    }
}

fn lookup<'a>(table: &'a RouteTable, host: Option<&str>, path: &str) -> Option<&'a str> {
    let path = normalize_path(path).unwrap();
    table.route(host, &path).map(|r| r.id.name())
}

#[test]
fn exact_host_beats_wildcard_beats_any() {
    let table = RouteTable::new(vec![
        route("any", None, "/"),
        route("wild", Some("*.example.com"), "/"),
        route("exact", Some("api.example.com"), "/"),
    ]);
    assert_eq!(lookup(&table, Some("api.example.com"), "/x"), Some("exact"));
    assert_eq!(lookup(&table, Some("www.example.com"), "/x"), Some("wild"));
    // The wildcard covers exactly one extra label.
    assert_eq!(lookup(&table, Some("a.b.example.com"), "/x"), Some("any"));
    assert_eq!(lookup(&table, Some("example.com"), "/x"), Some("any"));
    assert_eq!(lookup(&table, Some("other.org"), "/x"), Some("any"));
    assert_eq!(lookup(&table, None, "/x"), Some("any"));
    assert_eq!(table.len(), 3);
    assert!(!table.is_empty());
    assert_eq!(table.iter().count(), 3);
}

#[test]
fn longest_prefix_wins_within_a_host_class() {
    let table = RouteTable::new(vec![
        route("root", Some("h"), "/"),
        route("api", Some("h"), "/api"),
        route("api-v1", Some("h"), "/api/v1"),
    ]);
    assert_eq!(lookup(&table, Some("h"), "/api/v1/users"), Some("api-v1"));
    assert_eq!(lookup(&table, Some("h"), "/api/v1"), Some("api-v1"));
    assert_eq!(lookup(&table, Some("h"), "/api/v2"), Some("api"));
    assert_eq!(lookup(&table, Some("h"), "/api"), Some("api"));
    assert_eq!(lookup(&table, Some("h"), "/api/"), Some("api"));
    assert_eq!(lookup(&table, Some("h"), "/apix"), Some("root"));
    assert_eq!(lookup(&table, Some("h"), "/"), Some("root"));
}

#[test]
fn prefixes_match_on_segment_boundaries_only() {
    let table = RouteTable::new(vec![route("api", None, "/api")]);
    assert_eq!(lookup(&table, None, "/api"), Some("api"));
    assert_eq!(lookup(&table, None, "/api/"), Some("api"));
    assert_eq!(lookup(&table, None, "/api/x"), Some("api"));
    assert_eq!(lookup(&table, None, "/apix"), None);
    assert_eq!(lookup(&table, None, "/"), None);
}

#[test]
fn falls_through_to_less_specific_class_when_path_does_not_match() {
    let table = RouteTable::new(vec![
        route("exact-admin", Some("api.example.com"), "/admin"),
        route("wild-api", Some("*.example.com"), "/api"),
        route("any", None, "/"),
    ]);
    assert_eq!(
        lookup(&table, Some("api.example.com"), "/admin/x"),
        Some("exact-admin")
    );
    assert_eq!(
        lookup(&table, Some("api.example.com"), "/api/x"),
        Some("wild-api")
    );
    assert_eq!(
        lookup(&table, Some("api.example.com"), "/other"),
        Some("any")
    );
}

#[test]
fn empty_table_routes_nothing() {
    let table = RouteTable::default();
    assert!(table.is_empty());
    assert_eq!(lookup(&table, Some("h"), "/"), None);
}

#[test]
fn host_normalisation() {
    let cases = [
        ("Example.COM", Some("example.com")),
        ("example.com:8443", Some("example.com")),
        ("example.com.", Some("example.com")),
        ("example.com.:443", Some("example.com")),
        ("example.com:", Some("example.com")),
        ("[::1]:443", Some("::1")),
        ("[::1]", Some("::1")),
        ("[2001:DB8::1]", Some("2001:db8::1")),
        ("::1", Some("::1")),
        ("127.0.0.1:80", Some("127.0.0.1")),
        ("", None),
        (".", None),
        (":443", None),
        ("exa mple.com", None),
        ("example.com:abc", None),
        ("a:b:c", None),
        ("[::1", None),
        ("[::1]x", None),
        ("[nothex]", None),
        ("user@example.com", None),
        ("ex_ample.com", None),
        ("exämple.com", None),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_host(raw).as_deref(), want, "{raw:?}");
    }
}

/// `normalize_host` as first written (lower-case, then check), kept to hold the one-allocation
/// version to it.
fn normalize_host_reference(raw: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        inner.parse::<Ipv6Addr>().ok()?;
        return Some(inner.to_owned());
    }
    let host = match lower.matches(':').count() {
        0 => lower.as_str(),
        1 => {
            let (host, port) = lower.split_once(':')?;
            if !is_port(port) {
                return None;
            }
            host
        }
        _ => {
            lower.parse::<Ipv6Addr>().ok()?;
            return Some(lower);
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return None;
    }
    Some(host.to_owned())
}

proptest::proptest! {
    #[test]
    fn hosts_normalise_as_they_always_did(
        raw in "[a-zA-Z0-9.:\\[\\]-]{0,24}|[[:^cntrl:]]{0,12}",
    ) {
        proptest::prop_assert_eq!(normalize_host(&raw), normalize_host_reference(&raw));
    }
}
