//! The immutable runtime view of one configuration: routes, upstream pools and per-listener
//! settings. Requests pin one snapshot for their whole life; a reload swaps in a new one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use portcullis_policy::{Config, UpstreamName};

use crate::admission::Admission;
use crate::upstream::Pool;
use crate::GatewayError;

#[derive(Debug)]
pub(crate) struct ListenerView {
    pub address: SocketAddr,
    pub trusted_proxies: Vec<IpNet>,
}

impl ListenerView {
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (from dual-stack sockets) compare as the IPv4 address.
pub(crate) use portcullis_identity::canonical_ip as canonical;

#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Routes and limits: what decides each request.
    pub admission: Admission,
    pub pools: HashMap<UpstreamName, Arc<Pool>>,
    pub listeners: Vec<ListenerView>,
    /// The `audit` section this snapshot was built from (applied only at start-up).
    pub audit: Option<portcullis_policy::AuditSettings>,
}

impl Snapshot {
    /// Builds the runtime view of a checked config. Reads the upstream TLS files; anything
    /// unreadable or malformed is an error and the snapshot is not built. Limit state of
    /// unchanged tenants and routes carries over from `previous`.
    pub(crate) fn build(config: Config, previous: Option<&Snapshot>) -> Result<Self, GatewayError> {
        let admission = Admission::build(&config, previous.map(|p| &p.admission));
        let mut pools = HashMap::new();
        for upstream in &config.upstreams {
            pools.insert(
                upstream.name.clone(),
                Arc::new(Pool::from_config(upstream)?),
            );
        }
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerView {
                address: l.address,
                trusted_proxies: l.trusted_proxies.clone(),
            })
            .collect();
        Ok(Self {
            admission,
            pools,
            listeners,
            audit: config.audit,
        })
    }

    /// The listener a connection arrived on, from the connection's local address.
    pub(crate) fn listener(&self, local: Option<SocketAddr>) -> Option<&ListenerView> {
        let local = local?;
        self.listeners
            .iter()
            .find(|l| l.address == local)
            .or_else(|| {
                self.listeners
                    .iter()
                    .find(|l| l.address.ip().is_unspecified() && l.address.port() == local.port())
            })
    }
}
