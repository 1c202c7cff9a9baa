use std::net::SocketAddr;
use std::path::Path;

use portcullis_policy::{normalize_path, Config, Identity, SpiffeId, TokenIdentity};

use super::*;

fn request(headers: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/api/./x?q=1", None).unwrap();
    for (name, value) in headers {
        req.append_header(name.to_string(), *value).unwrap();
    }
    req
}

fn listener(trusted: &[&str]) -> ListenerView {
    ListenerView {
        address: "127.0.0.1:8443".parse::<SocketAddr>().unwrap(),
        trusted_proxies: trusted.iter().map(|n| n.parse().unwrap()).collect(),
        max_connection_age: std::time::Duration::from_secs(600),
        max_requests_per_connection: 1000,
        body_idle_timeout: std::time::Duration::from_secs(30),
    }
}

#[test]
fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let req = request(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "http"),
    ]);
    let client = resolve_client(&req, "10.0.0.9".parse().unwrap(), Some(&listener(&[])));
    assert_eq!(client.ip, "10.0.0.9".parse::<IpAddr>().unwrap());
    assert_eq!(client.forwarded_for, "10.0.0.9");
    assert_eq!(client.forwarded_proto, None);
}

#[test]
fn the_client_is_the_rightmost_untrusted_hop_behind_trusted_proxies() {
    let req = request(&[
        ("x-forwarded-for", "6.6.6.6, 1.2.3.4"),
        ("x-forwarded-for", "10.0.0.2"),
        ("x-forwarded-proto", "http"),
    ]);
    // The peer arrives as an IPv4-mapped IPv6 address on a dual-stack socket.
    let peer = "::ffff:10.0.0.1".parse().unwrap();
    let client = resolve_client(&req, peer, Some(&listener(&["10.0.0.0/8"])));
    assert_eq!(client.ip, "1.2.3.4".parse::<IpAddr>().unwrap());
    assert_eq!(client.forwarded_for, "6.6.6.6, 1.2.3.4, 10.0.0.2, 10.0.0.1");
    assert_eq!(client.forwarded_proto.as_deref(), Some("http"));

    // An unparsable hop ends what can be believed.
    let req = request(&[("x-forwarded-for", "1.2.3.4, junk, 10.0.0.2")]);
    let client = resolve_client(&req, peer, Some(&listener(&["10.0.0.0/8"])));
    assert_eq!(client.ip, "10.0.0.2".parse::<IpAddr>().unwrap());
}

#[test]
fn spoofed_identity_and_origin_headers_never_reach_the_upstream() {
    let config = Config::from_yaml(
        "listeners:\n  - name: l\n    address: 127.0.0.1:8443\n    tls: { certificate: s.pem, private_key: s.key, client_ca: ca.pem }\n\
         upstreams:\n  - name: u\n    targets: [127.0.0.1:9000]\n\
         tenants:\n  - name: t\n    routes:\n      - name: r\n        upstream: u\n        access: [ { id: anyone } ]\n",
        Path::new("t.yaml"),
    )
    .unwrap();
    let route = config.routes.iter().next().unwrap();
    let mut req = request(&[
        ("X-Portcullis-SPIFFE-ID", "spiffe://evil/admin"),
        ("x-portcullis-tenant", "other"),
        ("x-forwarded-client-cert", "Hash=abc"),
        ("Forwarded", "for=1.1.1.1"),
        ("x-real-ip", "1.1.1.1"),
        ("x-forwarded-for", "1.1.1.1"),
        ("X-Forwarded-Host", "admin.internal"),
        ("x-original-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("client-cert", ":MIIB:"),
        ("x-ssl-client-s-dn", "CN=admin"),
        ("accept", "*/*"),
    ]);
    let id: SpiffeId = "spiffe://t.example/ns/a/sa/b".parse().unwrap();
    let identity = Identity::from_x509(Some(id), vec!["b.svc".into()], None);
    let client = resolve_client(&req, "10.0.0.9".parse().unwrap(), None);
    let target = Target {
        host: Some("gw.example".into()),
        path: normalize_path("/api/./x").unwrap(),
    };
    rewrite_upstream_request(
        &mut req,
        &Forwarded {
            request_id: "rid",
            route: &RouteHeaders::of(route).unwrap(),
            target: &target,
            identity: Some(&IdentityHeaders::of(&identity)),
            token: None,
            client: Some(&client),
            strip: &config.http.strip,
        },
    )
    .unwrap();
    let values = |name: &str| -> Vec<String> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        values("x-portcullis-spiffe-id"),
        ["spiffe://t.example/ns/a/sa/b"]
    );
    assert_eq!(values("x-portcullis-tenant"), ["t"]);
    assert_eq!(values("x-portcullis-route"), ["t/r"]);
    assert_eq!(values("x-portcullis-dns-sans"), ["b.svc"]);
    assert_eq!(values("x-forwarded-for"), ["10.0.0.9"]);
    assert_eq!(values("x-forwarded-proto"), ["https"]);
    assert!(values("x-forwarded-client-cert").is_empty());
    assert!(values("forwarded").is_empty());
    for stripped in [
        "x-real-ip",
        "x-forwarded-host",
        "x-original-url",
        "x-http-method-override",
        "client-cert",
        "x-ssl-client-s-dn",
    ] {
        assert!(values(stripped).is_empty(), "{stripped}");
    }
    assert_eq!(values("accept"), ["*/*"]);
    // The upstream gets the normalised path, the query as sent, and a Host.
    assert_eq!(req.uri.to_string(), "/api/x?q=1");
    assert_eq!(values("host"), ["gw.example"]);
}

#[test]
fn a_persons_token_becomes_identity_headers_and_stays_at_the_gateway() {
    let mut req = request(&[("authorization", "Bearer eyJ.secret.token")]);
    let token = TokenIdentity {
        provider: "corp".into(),
        issuer: "https://idp.example".into(),
        subject: "alice".into(),
        expires_at: 0,
        auth_time: None,
        email: Some("alice@example.com".into()),
        groups: vec!["eng".into(), "a,b".into(), "ops".into()],
        amr: vec!["pwd".into(), "mfa".into()],
        acr: None,
        claims: Default::default(),
    };
    forward_token_identity(&mut req, &token).unwrap();
    let value = |name: &str| {
        req.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(value("authorization"), None);
    assert_eq!(value("x-portcullis-user-subject").as_deref(), Some("alice"));
    assert_eq!(
        value("x-portcullis-user-issuer").as_deref(),
        Some("https://idp.example")
    );
    assert_eq!(
        value("x-portcullis-user-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        value("x-portcullis-user-groups").as_deref(),
        Some("eng,ops")
    );
    assert_eq!(value("x-portcullis-user-amr").as_deref(), Some("pwd,mfa"));
    // A subject that cannot be a header value is left out.
    let mut odd = token.clone();
    odd.subject = "a\nb".into();
    odd.email = None;
    let mut req = request(&[]);
    forward_token_identity(&mut req, &odd).unwrap();
    assert!(req.headers.get("x-portcullis-user-subject").is_none());
    assert!(req.headers.get("x-portcullis-user-email").is_none());
}

#[test]
fn the_gateways_own_cookies_never_reach_the_upstream() {
    let mut req = request(&[
        (
            "cookie",
            "theme=dark; __Host-portcullis-session=abc; lang=en",
        ),
        ("cookie", "__Host-portcullis-login=xyz"),
        ("cookie", "other=1"),
    ]);
    strip_gateway_cookies(&mut req).unwrap();
    let values: Vec<&str> = req
        .headers
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(values, ["theme=dark; lang=en", "other=1"]);
    let mut only = request(&[("cookie", "__Host-portcullis-session=abc")]);
    strip_gateway_cookies(&mut only).unwrap();
    assert!(only.headers.get("cookie").is_none());
}

#[test]
fn addresses_are_written_as_display_writes_them() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "255.255.255.255",
        "10.20.30.4",
        "::",
        "::1",
        "2001:db8::8a2e:370:7334",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::ffff:255.255.255.255",
        "0:0:0:0:0:ffff:10.0.0.1",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(IpText::new(ip).as_str(), ip.to_string());
    }
}
