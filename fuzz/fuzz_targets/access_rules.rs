//! Access rules on fuzzed requests: a fixed route whose rules use every condition (SPIFFE
//! patterns, DNS names, subjects, methods, path prefixes and exact paths, sources, headers) and
//! deny rules, loaded through `Config::from_yaml`, judged by `Route::authorize`.
//!
//! The expected decision comes from a small model written here from the documented semantics,
//! not from the policy crate: an explicit deny rule that matches always denies (the first one
//! written is named), otherwise the first matching allow rule permits, otherwise the request is
//! denied by default. The YAML the gateway loads is generated from the same rule table, so the
//! two cannot drift apart.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use portcullis_policy::{
    normalize_path, Config, DenyReason, Identity, RequestFacts, Route, SpiffeId,
};

/// One access rule as data: `None` conditions match anything; a condition matches when any
/// entry does; a rule matches when all its conditions do.
struct Rule {
    id: &'static str,
    deny: bool,
    spiffe_id: Option<&'static [&'static str]>,
    dns_san: Option<&'static [&'static str]>,
    subject: Option<&'static [&'static str]>,
    methods: Option<&'static [&'static str]>,
    path_prefix: Option<&'static [&'static str]>,
    path: Option<&'static [&'static str]>,
    /// CIDRs as (address, prefix length).
    source: Option<&'static [(&'static str, u8)]>,
    /// (lowercase name, values); `None` values: the header must be present.
    headers: &'static [(&'static str, Option<&'static [&'static str]>)],
}

const ANY: Rule = Rule {
    id: "",
    deny: false,
    spiffe_id: None,
    dns_san: None,
    subject: None,
    methods: None,
    path_prefix: None,
    path: None,
    source: None,
    headers: &[],
};

/// In written order; the config checker moves deny rules first, the model does not need to.
const RULES: &[Rule] = &[
    Rule {
        id: "frontend-api",
        spiffe_id: Some(&["spiffe://example.org/ns/*/sa/frontend"]),
        methods: Some(&["GET", "POST"]),
        path_prefix: Some(&["/api"]),
        ..ANY
    },
    Rule {
        id: "no-admin",
        deny: true,
        path_prefix: Some(&["/admin", "/api/internal"]),
        ..ANY
    },
    Rule {
        id: "ops-everything",
        spiffe_id: Some(&["spiffe://example.org/ops/**", "spiffe://example.org/root"]),
        ..ANY
    },
    Rule {
        id: "no-debug-header",
        deny: true,
        headers: &[("x-debug", None)],
        ..ANY
    },
    Rule {
        id: "no-delete-outside",
        deny: true,
        methods: Some(&["DELETE"]),
        source: Some(&[("0.0.0.0", 1), ("128.0.0.0", 1)]),
        spiffe_id: Some(&["spiffe://example.org/**"]),
        ..ANY
    },
    Rule {
        id: "public-prod",
        path_prefix: Some(&["/public"]),
        headers: &[("x-env", Some(&["prod", "staging"])), ("x-team", None)],
        source: Some(&[("10.0.0.0", 8), ("fd00::", 8)]),
        ..ANY
    },
    Rule {
        id: "health-by-dns",
        dns_san: Some(&["*.svc.example.org", "monitor.example.org"]),
        path: Some(&["/health", "/api/health/"]),
        ..ANY
    },
    Rule {
        id: "batch-subject",
        subject: Some(&["CN=batch,O=Acme"]),
        methods: Some(&["PUT", "PATCH"]),
        ..ANY
    },
    Rule {
        id: "no-blocked-subject",
        deny: true,
        subject: Some(&["CN=blocked"]),
        ..ANY
    },
];

fn yaml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

fn config_yaml() -> String {
    let mut y = String::from(
        "listeners:\n  - name: l\n    address: 0.0.0.0:443\n    tls: {certificate: c, private_key: k, client_ca: ca}\n\
         upstreams:\n  - name: app\n    targets: [127.0.0.1:8080]\n\
         tenants:\n  - name: acme\n    routes:\n      - name: all\n        path_prefix: /\n        upstream: app\n        access:\n",
    );
    for r in RULES {
        y += &format!("          - id: {}\n", r.id);
        if r.deny {
            y += "            effect: deny\n";
        }
        let mut list = |key: &str, v: Option<&[&str]>| {
            if let Some(v) = v {
                y += &format!("            {key}: {}\n", yaml_list(v));
            }
        };
        list("spiffe_id", r.spiffe_id);
        list("dns_san", r.dns_san);
        list("subject", r.subject);
        list("methods", r.methods);
        list("path_prefix", r.path_prefix);
        list("path", r.path);
        if let Some(nets) = r.source {
            let nets: Vec<String> = nets.iter().map(|(a, l)| format!("{a}/{l}")).collect();
            let nets: Vec<&str> = nets.iter().map(String::as_str).collect();
            y += &format!("            source: {}\n", yaml_list(&nets));
        }
        if !r.headers.is_empty() {
            y += "            headers:\n";
            for (name, values) in r.headers {
                let values = values.unwrap_or(&["*"]);
                y += &format!("              {name}: {}\n", yaml_list(values));
            }
        }
    }
    y
}

fn route() -> &'static Route {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let yaml = config_yaml();
        Config::from_yaml(&yaml, Path::new("/fuzz/config.yaml"))
            .unwrap_or_else(|e| panic!("the fixed config loads: {e}\n{yaml}"))
    });
    config.routes.iter().next().expect("one route")
}

// ---- The model: the documented matching rules, written independently. ----

struct Request {
    method: String,
    path: String,
    source: IpAddr,
    headers: Vec<(String, String)>,
    spiffe_id: Option<String>,
    dns_sans: Vec<String>,
    subject: Option<String>,
    authenticated: bool,
}

/// `*` is exactly one segment, a final `**` one or more; everything else is literal.
fn spiffe_matches(pattern: &str, id: &str) -> bool {
    let split = |s: &str| -> (String, Vec<String>) {
        let rest = s.strip_prefix("spiffe://").unwrap_or("");
        let mut parts = rest.split('/');
        let td = parts.next().unwrap_or("").to_owned();
        (td, parts.map(str::to_owned).collect())
    };
    let (ptd, pseg) = split(pattern);
    let (itd, iseg) = split(id);
    if ptd != itd {
        return false;
    }
    if pseg.last().map(String::as_str) == Some("**") {
        let fixed = &pseg[..pseg.len() - 1];
        return iseg.len() > fixed.len()
            && fixed.iter().zip(&iseg).all(|(p, s)| p == "*" || p == s);
    }
    pseg.len() == iseg.len() && pseg.iter().zip(&iseg).all(|(p, s)| p == "*" || p == s)
}

/// Case-insensitive, one trailing dot ignored; `*.d` is exactly one more (non-`*`) label.
fn dns_matches(pattern: &str, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => match name.split_once('.') {
            Some((label, rest)) => !label.is_empty() && label != "*" && rest == suffix,
            None => false,
        },
        None => name == pattern,
    }
}

/// Segment-boundary prefix; `/` matches everything.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/')
}

/// IPv4-mapped IPv6 sources count as their IPv4 address.
fn net_contains(addr: &str, len: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (addr.parse::<IpAddr>().expect("model CIDR"), ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

fn any<T: Copy>(cond: Option<&[T]>, pred: impl FnMut(T) -> bool) -> bool {
    cond.is_none_or(|v| v.iter().copied().any(pred))
}

fn rule_matches(r: &Rule, q: &Request) -> bool {
    let needs_identity = r.spiffe_id.is_some() || r.dns_san.is_some() || r.subject.is_some();
    if needs_identity && !q.authenticated {
        return false;
    }
    // Headers: every value sent under the name counts. A deny condition holds if any value
    // matches; an allow condition only if there is a value and all of them match.
    let values = |name: &str| -> Vec<&str> {
        q.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    any(r.spiffe_id, |p| {
        q.spiffe_id.as_deref().is_some_and(|id| spiffe_matches(p, id))
    }) && any(r.dns_san, |p| q.dns_sans.iter().any(|n| dns_matches(p, n)))
        && any(r.subject, |s| q.subject.as_deref() == Some(s))
        // Methods match without regard to case.
        && any(r.methods, |m| m.eq_ignore_ascii_case(&q.method))
        && any(r.path_prefix, |p| prefix_matches(p, &q.path))
        && any(r.path, |p| p == q.path)
        && any(r.source, |(a, l)| net_contains(a, l, q.source))
        && r.headers.iter().all(|(name, wanted)| {
            let sent = values(name);
            let ok = |v: &&str| wanted.is_none_or(|vals| vals.contains(v));
            if r.deny {
                sent.iter().any(ok)
            } else {
                !sent.is_empty() && sent.iter().all(ok)
            }
        })
}

/// What the model expects: `Ok(rule)` for a permit, `Err(Some(rule))` for an explicit deny,
/// `Err(None)` for the default deny.
fn expected(q: &Request) -> std::result::Result<&'static str, Option<&'static str>> {
    if let Some(r) = RULES.iter().find(|r| r.deny && rule_matches(r, q)) {
        return Err(Some(r.id));
    }
    match RULES.iter().find(|r| !r.deny && rule_matches(r, q)) {
        Some(r) => Ok(r.id),
        None => Err(None),
    }
}

// ---- Request generation: mostly from dictionaries near the rules, sometimes anything. ----

fn pick(u: &mut Unstructured<'_>, dict: &[&str]) -> Result<String> {
    if u.ratio(7, 8)? {
        Ok((*u.choose(dict)?).to_owned())
    } else {
        u.arbitrary()
    }
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "get", "Delete", "HEAD",
];
const SEGMENTS: &[&str] = &[
    "api", "admin", "public", "health", "internal", "x", "", ".", "..", "%2e%2e", "%2E", "Admin",
    "%61dmin", "api;", "..;", "%41PI",
];
const HEADER_NAMES: &[&str] = &["x-env", "x-team", "x-debug", "X-Env", "x-other"];
const HEADER_VALUES: &[&str] = &["prod", "staging", "dev", "", "Prod", "*", "prod "];
const SPIFFE_IDS: &[&str] = &[
    "spiffe://example.org/ns/prod/sa/frontend",
    "spiffe://example.org/ns/dev/sa/frontend",
    "spiffe://example.org/ns/a/b/sa/frontend",
    "spiffe://example.org/ns/prod/sa/backend",
    "spiffe://example.org/ops",
    "spiffe://example.org/ops/a",
    "spiffe://example.org/ops/a/b",
    "spiffe://example.org/root",
    "spiffe://example.org",
    "spiffe://other.org/ns/prod/sa/frontend",
    "spiffe://example.org/ns/prod/sa/frontend/x",
];
const DNS_NAMES: &[&str] = &[
    "a.svc.example.org",
    "A.SVC.example.org.",
    "svc.example.org",
    "a.b.svc.example.org",
    "*.svc.example.org",
    "monitor.example.org",
    "MONITOR.example.org",
    ".svc.example.org",
];
const SUBJECTS: &[&str] = &[
    "CN=batch,O=Acme",
    "CN=batch",
    "CN=blocked",
    "cn=batch,O=Acme",
];
const SOURCES: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
    IpAddr::V4(Ipv4Addr::new(11, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

fn request(u: &mut Unstructured<'_>) -> Result<(Request, String)> {
    let method = pick(u, METHODS)?;
    let mut raw_path = String::new();
    for _ in 0..u.int_in_range(0..=5)? {
        raw_path.push('/');
        raw_path += &pick(u, SEGMENTS)?;
    }
    if raw_path.is_empty() || u.ratio(1, 8)? {
        raw_path.push('/');
    }
    let source = if u.ratio(7, 8)? {
        *u.choose(SOURCES)?
    } else {
        u.arbitrary()?
    };
    let mut headers = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        headers.push((pick(u, HEADER_NAMES)?, pick(u, HEADER_VALUES)?));
    }
    let authenticated = u.ratio(3, 4)?;
    let spiffe_id = if u.ratio(3, 4)? {
        // Only valid IDs reach the rules: the gateway parses the URI SAN into a SpiffeId.
        Some(pick(u, SPIFFE_IDS)?).filter(|s| s.parse::<SpiffeId>().is_ok())
    } else {
        None
    };
    let mut dns_sans = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        dns_sans.push(pick(u, DNS_NAMES)?);
    }
    let subject = if u.arbitrary()? {
        Some(pick(u, SUBJECTS)?)
    } else {
        None
    };
    let q = Request {
        method,
        path: String::new(),
        source,
        headers,
        spiffe_id,
        dns_sans,
        subject,
        authenticated,
    };
    Ok((q, raw_path))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((mut q, raw_path)) = request(&mut u) else {
        return;
    };
    // A path the normaliser refuses never reaches the rules (the gateway answers 400).
    let Ok(path) = normalize_path(&raw_path) else {
        return;
    };
    q.path = path.as_str().to_owned();
    let identity = q.authenticated.then(|| {
        Identity::from_x509(
            q.spiffe_id.as_deref().map(|s| s.parse().expect("filtered")),
            q.dns_sans.clone(),
            q.subject.clone(),
        )
    });
    let facts = RequestFacts {
        identity: identity.as_ref(),
        token: None,
        method: &q.method,
        path: &path,
        source: q.source,
        headers: &q.headers,
    };
    let got = route().authorize(&facts);
    match (expected(&q), &got) {
        (Ok(rule), Ok(permit)) => assert_eq!(permit.rule.as_str(), rule),
        (Err(Some(rule)), Err(denied)) => {
            assert_eq!(denied.reason, DenyReason::ExplicitDeny);
            assert_eq!(denied.rule.as_ref().map(|r| r.as_str()), Some(rule));
        }
        (Err(None), Err(denied)) => {
            assert_eq!(denied.reason, DenyReason::NoMatchingRule);
            assert_eq!(denied.rule, None);
        }
        (want, got) => panic!(
            "model says {want:?}, authorize says {got:?}\nmethod {:?} path {:?} source {} headers {:?}\n\
             identity {identity:?}",
            q.method, q.path, q.source, q.headers
        ),
    }
});
