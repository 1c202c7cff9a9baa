//! Checks the `upstreams` section: each upstream's targets (listed, or found in DNS), its
//! timeouts, TLS and health check, and the upstreams it fails over to.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::Checker;
use crate::config::raw::{RawDns, RawHealthCheck, RawUpstream, RawUpstreamTls};
use crate::config::{DnsDiscovery, DnsQuery, HealthCheckConfig, UpstreamConfig, UpstreamTls};
use crate::names::UpstreamName;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Upstreams one upstream may fail over to.
const MAX_FAILOVER: usize = 8;

impl Checker<'_> {
    pub(super) fn upstreams(&mut self, raw: &[RawUpstream]) -> Vec<UpstreamConfig> {
        let mut names = HashMap::new();
        let mut out = Vec::new();
        for (i, u) in raw.iter().enumerate() {
            let p = format!("upstreams[{i}]");
            let what = format!("upstream `{}`", u.name);
            let name = match u.name.parse::<UpstreamName>() {
                Ok(name) => Some(name),
                Err(e) => {
                    self.at_value(&format!("{p}.name"), format!("{what}: invalid name: {e}"));
                    None
                }
            };
            self.unique(&mut names, u.name.as_str(), format!("{p}.name"), || {
                format!("upstream name `{}` is already used", u.name)
            });
            let (targets, dns) = self.upstream_source(&p, &what, u);
            let connect_timeout = self.nonzero(
                &format!("{p}.connect_timeout"),
                &format!("{what}: connect_timeout"),
                u.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            );
            let read_timeout = self.nonzero(
                &format!("{p}.read_timeout"),
                &format!("{what}: read_timeout"),
                u.read_timeout,
                DEFAULT_READ_TIMEOUT,
            );
            let tls = u
                .tls
                .as_ref()
                .map(|t| self.upstream_tls(&format!("{p}.tls"), &what, t));
            let health_check = u
                .health_check
                .as_ref()
                .map(|h| self.health_check(&format!("{p}.health_check"), &what, h));
            if let Some(name) = name {
                out.push(UpstreamConfig {
                    name,
                    targets,
                    dns,
                    failover: Vec::new(),
                    connect_timeout,
                    read_timeout,
                    tls,
                    protocol: u.protocol,
                    health_check,
                });
            }
        }
        self.failover(raw, &mut out);
        out
    }

    fn upstream_tls(&mut self, p: &str, what: &str, t: &RawUpstreamTls) -> UpstreamTls {
        if let Some(sn) = &t.server_name {
            if sn.is_empty()
                || sn
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                self.at_value(
                    &format!("{p}.server_name"),
                    format!("{what}: server_name `{sn}` is not a valid host name"),
                );
            }
        }
        let spiffe_id = self
            .condition(p, what, "spiffe_id", &t.spiffe_id, |s| {
                s.parse::<portcullis_identity::SpiffeIdPattern>()
                    .map_err(|e| format!("`{s}`: {e}"))
            })
            .flatten()
            .unwrap_or_default();
        if t.server_name.is_none() && t.spiffe_id.is_none() {
            self.at_key(
                p,
                format!("{what}: tls needs `server_name`, `spiffe_id` or both: who the upstream must be"),
            );
        }
        if t.spiffe_id.is_some() && t.ca.is_none() {
            self.at_key(
                &format!("{p}.spiffe_id"),
                format!("{what}: `spiffe_id` needs `ca`, the trust bundle of the upstream's trust domain (public roots vouch for no SPIFFE ID)"),
            );
        }
        let ca =
            t.ca.as_ref()
                .map(|ca| self.file_path(&format!("{p}.ca"), what, ca));
        let client_cert = match (&t.client_certificate, &t.client_key) {
            (Some(cert), Some(key)) => Some((
                self.file_path(&format!("{p}.client_certificate"), what, cert),
                self.file_path(&format!("{p}.client_key"), what, key),
            )),
            (Some(_), None) => {
                self.at_key(
                    &format!("{p}.client_certificate"),
                    format!("{what}: `client_certificate` needs `client_key` too"),
                );
                None
            }
            (None, Some(_)) => {
                self.at_key(
                    &format!("{p}.client_key"),
                    format!("{what}: `client_key` needs `client_certificate` too"),
                );
                None
            }
            (None, None) => None,
        };
        let issuer = t
            .issuer
            .as_ref()
            .and_then(|i| self.issuer(&format!("{p}.issuer"), what, i));
        if issuer.is_some() && client_cert.is_none() {
            self.at_key(
                &format!("{p}.issuer"),
                format!("{what}: `issuer` needs `client_certificate` and `client_key` (where the certificate is kept)"),
            );
        }
        UpstreamTls {
            server_name: t.server_name.clone(),
            spiffe_id,
            ca,
            client_cert,
            issuer,
        }
    }

    /// The listed targets, or where DNS finds them: one of `targets` and `dns`, not both.
    fn upstream_source(
        &mut self,
        p: &str,
        what: &str,
        u: &RawUpstream,
    ) -> (Vec<SocketAddr>, Option<DnsDiscovery>) {
        match (&u.targets, &u.dns) {
            (Some(_), Some(_)) => {
                self.at_key(
                    &format!("{p}.dns"),
                    format!("{what}: `targets` and `dns` both given; list the targets or find them in DNS, not both"),
                );
                (Vec::new(), None)
            }
            (None, None) => {
                self.at_key(
                    &format!("{p}.name"),
                    format!(
                        "{what}: needs `targets` (IP:port addresses) or `dns` (where to find them)"
                    ),
                );
                (Vec::new(), None)
            }
            (Some(targets), None) => {
                if targets.is_empty() {
                    self.at_key(
                        &format!("{p}.targets"),
                        format!("{what}: `targets` is empty"),
                    );
                }
                let targets = targets
                    .iter()
                    .enumerate()
                    .filter_map(|(j, t)| self.socket_addr(&format!("{p}.targets[{j}]"), what, t))
                    .collect();
                (targets, None)
            }
            (None, Some(dns)) => (Vec::new(), self.dns(&format!("{p}.dns"), what, dns)),
        }
    }

    /// `dns:`: `name` with `port` (A/AAAA), or `srv`; and the resolver, if not the system's.
    fn dns(&mut self, p: &str, what: &str, raw: &RawDns) -> Option<DnsDiscovery> {
        let query = match (&raw.name, raw.port, &raw.srv) {
            (Some(name), Some(port), None) => {
                if port == 0 {
                    self.at_value(
                        &format!("{p}.port"),
                        format!("{what}: dns port 0 is not a port"),
                    );
                }
                match absolute_name(name) {
                    Ok(name) => Some(DnsQuery::Address { name, port }),
                    Err(e) => {
                        self.at_value(
                            &format!("{p}.name"),
                            format!("{what}: dns name `{name}`: {e}"),
                        );
                        None
                    }
                }
            }
            (Some(_), None, None) => {
                self.at_key(
                    &format!("{p}.name"),
                    format!("{what}: dns `name` needs `port` (A/AAAA records carry none)"),
                );
                None
            }
            (None, _, Some(srv)) => {
                if raw.port.is_some() {
                    self.at_key(
                        &format!("{p}.port"),
                        format!("{what}: dns `srv` records carry their own ports; remove `port`"),
                    );
                }
                match absolute_name(srv).and_then(|name| srv_name(&name).map(|()| name)) {
                    Ok(name) => Some(DnsQuery::Srv { name }),
                    Err(e) => {
                        self.at_value(&format!("{p}.srv"), format!("{what}: dns srv `{srv}`: {e}"));
                        None
                    }
                }
            }
            (Some(_), _, Some(_)) => {
                self.at_key(
                    &format!("{p}.srv"),
                    format!("{what}: dns has both `name` and `srv`; give one"),
                );
                None
            }
            (None, _, None) => {
                self.at_key(
                    p,
                    format!("{what}: dns needs `name` and `port` (A/AAAA records) or `srv` (SRV records)"),
                );
                None
            }
        };
        let resolver = match &raw.resolver {
            None => Ok(None),
            Some(text) => match resolver_addr(text) {
                Ok(addr) => Ok(Some(addr)),
                Err(e) => {
                    self.at_value(
                        &format!("{p}.resolver"),
                        format!("{what}: dns resolver `{text}`: {e}"),
                    );
                    Err(())
                }
            },
        };
        Some(DnsDiscovery {
            query: query?,
            resolver: resolver.ok()?,
        })
    }

    /// Each upstream's `failover` list: known upstreams, not itself, each once, and only on an
    /// upstream whose health is checked (a pool is left only when no target is healthy).
    fn failover(&mut self, raw: &[RawUpstream], out: &mut [UpstreamConfig]) {
        let known: HashSet<&str> = raw.iter().map(|u| u.name.as_str()).collect();
        for (i, u) in raw.iter().enumerate() {
            let Some(list) = &u.failover else {
                continue;
            };
            let p = format!("upstreams[{i}].failover");
            let what = format!("upstream `{}`", u.name);
            if list.is_empty() {
                self.at_key(&p, format!("{what}: `failover` is empty"));
            }
            if list.len() > MAX_FAILOVER {
                self.at_key(
                    &p,
                    format!("{what}: `failover` names more than {MAX_FAILOVER} upstreams"),
                );
            }
            if u.health_check.is_none() {
                self.at_key(
                    &p,
                    format!("{what}: `failover` needs `health_check`: requests leave the pool only while none of its targets is healthy"),
                );
            }
            let mut seen = HashMap::new();
            let mut names = Vec::with_capacity(list.len());
            for (j, fallback) in list.iter().enumerate() {
                let at = format!("{p}[{j}]");
                if fallback == &u.name {
                    self.at_value(
                        &at,
                        format!("{what}: fails over to itself (a failover cycle)"),
                    );
                    continue;
                }
                if !known.contains(fallback.as_str()) {
                    self.at_value(
                        &at,
                        format!("{what}: failover to unknown upstream `{fallback}`"),
                    );
                    continue;
                }
                self.unique(&mut seen, fallback.as_str(), at.clone(), || {
                    format!("{what}: failover names `{fallback}` twice")
                });
                if let Ok(name) = fallback.parse::<UpstreamName>() {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            if let Some(config) = out.iter_mut().find(|c| c.name.as_str() == u.name) {
                config.failover = names;
            }
        }
    }

    fn health_check(&mut self, p: &str, what: &str, h: &RawHealthCheck) -> HealthCheckConfig {
        if !h.path.starts_with('/')
            || h.path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            self.at_value(
                &format!("{p}.path"),
                format!(
                    "{what}: health_check path `{}` must start with '/' and contain no spaces",
                    h.path
                ),
            );
        }
        let interval = self.nonzero(
            &format!("{p}.interval"),
            &format!("{what}: health_check interval"),
            h.interval,
            DEFAULT_HEALTH_INTERVAL,
        );
        HealthCheckConfig {
            path: h.path.clone(),
            interval,
        }
    }
}

/// `name` as an absolute DNS name (lower case, ending with `.`): labels of 1-63 letters,
/// digits, `-` and `_`, 253 characters at most. Search domains never apply.
fn absolute_name(name: &str) -> Result<String, String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("is empty".to_owned());
    }
    if bare.len() > 253 {
        return Err("is longer than 253 characters".to_owned());
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty label or one longer than 63 characters".to_owned());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "label `{label}` holds a character other than a-z, 0-9, `-`, `_`"
            ));
        }
    }
    Ok(format!("{}.", bare.to_ascii_lowercase()))
}

/// An SRV owner name: `_service._proto.domain.`.
fn srv_name(name: &str) -> Result<(), String> {
    let mut labels = name.split('.');
    let service = labels.next().unwrap_or_default();
    let proto = labels.next().unwrap_or_default();
    let domain = labels.next().unwrap_or_default();
    if service.len() < 2
        || !service.starts_with('_')
        || proto.len() < 2
        || !proto.starts_with('_')
        || domain.is_empty()
    {
        return Err(
            "is not `_service._proto.domain` (e.g. `_api._tcp.example.internal`)".to_owned(),
        );
    }
    Ok(())
}

/// A name server's address: `IP:port`, or `IP` for port 53; a unicast address to ask.
fn resolver_addr(text: &str) -> Result<SocketAddr, String> {
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 53),
            Err(_) => return Err("is not an IP:port address (e.g. 127.0.0.1:5353)".to_owned()),
        },
    };
    if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err("is not an address a name server can be asked at".to_owned());
    }
    Ok(addr)
}
