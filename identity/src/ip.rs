//! Client addresses as policy sees them.

use std::net::IpAddr;

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as dual-stack sockets report IPv4 peers) as
/// the IPv4 address it stands for; every other address unchanged. Compare and log addresses
/// only in this form, so `10.0.0.1` and `::ffff:10.0.0.1` are one client.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_become_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical_ip(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(canonical_ip(ip("10.0.0.1")), ip("10.0.0.1"));
        // IPv4-compatible (deprecated, `::a.b.c.d`) and ordinary IPv6 stay as they are.
        assert_eq!(canonical_ip(ip("::10.0.0.1")), ip("::10.0.0.1"));
        assert_eq!(canonical_ip(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(canonical_ip(ip("::1")), ip("::1"));
    }
}
