//! Upstreams found in DNS and failover between upstreams: what parses, and every refusal
//! with its line.

use super::*;

/// `FULL`'s `plain` upstream (lines 33-34) replaced by `with`.
fn with_plain(with: &str) -> String {
    edit("  - name: plain\n    targets: [127.0.0.1:9100]\n", with)
}

#[test]
fn dns_discovery_and_failover_parse() {
    let c = parse(&with_plain(
        "  - name: plain\n    dns: { name: Plain.Example.Internal, port: 8080, resolver: 127.0.0.1:5353 }\n    \
         failover: [echo]\n    health_check: { path: /healthz }\n  - name: srv\n    dns: { srv: _api._tcp.example.internal. }\n",
    ))
    .unwrap();
    let plain = c
        .upstreams
        .iter()
        .find(|u| u.name.as_str() == "plain")
        .unwrap();
    assert!(plain.targets.is_empty());
    assert_eq!(
        plain.dns,
        Some(DnsDiscovery {
            query: DnsQuery::Address {
                name: "plain.example.internal.".into(),
                port: 8080
            },
            resolver: Some("127.0.0.1:5353".parse().unwrap()),
        })
    );
    assert_eq!(plain.failover.len(), 1);
    assert_eq!(plain.failover[0].as_str(), "echo");
    let srv = c
        .upstreams
        .iter()
        .find(|u| u.name.as_str() == "srv")
        .unwrap();
    assert_eq!(
        srv.dns,
        Some(DnsDiscovery {
            query: DnsQuery::Srv {
                name: "_api._tcp.example.internal.".into()
            },
            resolver: None,
        })
    );
    assert!(srv.failover.is_empty());
    // Two regions may name each other: fallbacks' own lists are not followed.
    let mutual = edit(
        "    health_check:\n      path: /healthz\n      interval: 3s\n",
        "    health_check:\n      path: /healthz\n      interval: 3s\n    failover: [plain]\n",
    )
    .replacen(
        "  - name: plain\n    targets: [127.0.0.1:9100]\n",
        "  - name: plain\n    targets: [127.0.0.1:9100]\n    failover: [echo]\n    health_check: { path: / }\n",
        1,
    );
    parse(&mutual).unwrap();
    // An IP alone is a resolver on port 53.
    let c = parse(&with_plain(
        "  - name: plain\n    dns: { name: a.b, port: 1, resolver: '::1' }\n",
    ))
    .unwrap();
    let plain = c
        .upstreams
        .iter()
        .find(|u| u.name.as_str() == "plain")
        .unwrap();
    assert_eq!(
        plain.dns.as_ref().unwrap().resolver,
        Some("[::1]:53".parse().unwrap())
    );
}

#[test]
fn bad_dns_and_failover_are_refused_with_their_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "  - name: plain\n    targets: [127.0.0.1:9100]\n    dns: { name: a.b, port: 80 }\n",
            "35:5:",
            "`targets` and `dns` both given",
        ),
        (
            "  - name: plain\n    read_timeout: 1s\n",
            "33:5:",
            "needs `targets` (IP:port addresses) or `dns`",
        ),
        (
            "  - name: plain\n    dns: { name: a.b }\n",
            "34:12:",
            "dns `name` needs `port`",
        ),
        (
            "  - name: plain\n    dns: { srv: _a._tcp.b, port: 80 }\n",
            "34:28:",
            "carry their own ports",
        ),
        (
            "  - name: plain\n    dns: { name: a.b, port: 80, srv: _a._tcp.b }\n",
            "34:33:",
            "both `name` and `srv`",
        ),
        (
            "  - name: plain\n    dns: { resolver: 127.0.0.1 }\n",
            "34:5:",
            "dns needs `name` and `port`",
        ),
        (
            "  - name: plain\n    dns: { name: 'bad name', port: 80 }\n",
            "34:18:",
            "holds a character other than",
        ),
        (
            "  - name: plain\n    dns: { name: a..b, port: 80 }\n",
            "34:18:",
            "empty label",
        ),
        (
            "  - name: plain\n    dns: { srv: api.tcp.example, }\n",
            "34:17:",
            "is not `_service._proto.domain`",
        ),
        (
            "  - name: plain\n    dns: { name: a.b, port: 80, resolver: dns.example:53 }\n",
            "34:43:",
            "dns resolver `dns.example:53`: is not an IP:port address",
        ),
        (
            "  - name: plain\n    dns: { name: a.b, port: 80, resolver: 0.0.0.0:53 }\n",
            "34:43:",
            "is not an address a name server can be asked at",
        ),
        (
            "  - name: plain\n    dns: { name: a.b, port: 80, ttl: 5 }\n",
            "34:33:",
            "unknown field `ttl`",
        ),
        (
            "  - name: plain\n    targets: [127.0.0.1:9100]\n    failover: [nowhere]\n    health_check: { path: / }\n",
            "35:16:",
            "failover to unknown upstream `nowhere`",
        ),
        (
            "  - name: plain\n    targets: [127.0.0.1:9100]\n    failover: [plain]\n    health_check: { path: / }\n",
            "35:16:",
            "fails over to itself (a failover cycle)",
        ),
        (
            "  - name: plain\n    targets: [127.0.0.1:9100]\n    failover: [echo, echo]\n    health_check: { path: / }\n",
            "35:22:",
            "failover names `echo` twice (line 35)",
        ),
        (
            "  - name: plain\n    targets: [127.0.0.1:9100]\n    failover: [echo]\n",
            "35:5:",
            "`failover` needs `health_check`",
        ),
        (
            "  - name: plain\n    targets: [127.0.0.1:9100]\n    failover: []\n    health_check: { path: / }\n",
            "35:5:",
            "`failover` is empty",
        ),
    ];
    let mut wrong = Vec::new();
    for (with, location, needle) in cases {
        let err = error(&with_plain(with));
        let want = format!("/srv/gw/config.yaml:{location}");
        if !err
            .lines()
            .any(|l| l.starts_with(&want) && l.contains(needle))
        {
            wrong.push(format!("wanted `{want}` with `{needle}` in: {err}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
