//! The immutable runtime view of one configuration: admission, upstream pools, per-listener
//! settings and TLS material. Requests pin one snapshot for their whole life and handshakes
//! read the current one; a reload swaps in a new one whole.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use portcullis_policy::{Config, UpstreamName};

use crate::admission::Admission;
use crate::assertion::AssertionSigner;
use crate::authn::{Authenticator, KeyRegistry};
use crate::forwarding::RouteHeaders;
use crate::metrics::RouteSeries;
use crate::tls::ListenerTls;
use crate::upstream::{DiscoveryRegistry, Pool};
use crate::GatewayError;

#[derive(Debug, Clone)]
pub(crate) struct ListenerView {
    pub address: SocketAddr,
    pub trusted_proxies: Vec<IpNet>,
    pub max_connection_age: std::time::Duration,
    /// Requests one connection may carry (HTTP/2 is held to it here; HTTP/1 by pingora).
    pub max_requests_per_connection: u32,
    /// How long a request body may stall (HTTP/2 is held to it here; HTTP/1 by pingora).
    pub body_idle_timeout: std::time::Duration,
}

impl ListenerView {
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (from dual-stack sockets) compare as the IPv4 address.
pub(crate) use portcullis_identity::canonical_ip as canonical;

/// One generation of the running configuration: what decides requests, where they go, and
/// every listener's certificate and client verifier. Built completely, then stored once: a
/// handshake or request sees one whole generation, and a reload that fails anywhere changes
/// nothing.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// The checked configuration this generation was built from.
    pub config: Arc<Config>,
    /// Routes and limits: what decides each request.
    pub admission: Arc<Admission>,
    pub pools: Arc<HashMap<UpstreamName, Arc<Pool>>>,
    /// Per route, in the route table's order (see [`RouteState`]).
    pub routes: Arc<[RouteState]>,
    pub listeners: Vec<ListenerView>,
    /// TLS material of each listener bound at start-up, in start-up order (the handshake
    /// side finds its listener by position).
    pub tls: Vec<Arc<ListenerTls>>,
    /// The `audit` section in effect (applied only at start-up).
    pub audit: Option<portcullis_policy::AuditSettings>,
    /// Bearer-token verification for the tenants' identity providers.
    pub authenticator: Arc<Authenticator>,
    /// Every identity provider's key set, shared by all generations.
    pub key_sets: Arc<KeyRegistry>,
    /// The signer of upstream identity assertions, if configured.
    pub assertion: Option<Arc<AssertionSigner>>,
    /// Upstream targets found in DNS, shared by all generations (a reload keeps them).
    pub discovery: Arc<DiscoveryRegistry>,
    /// The fleet's revocation set (etcd), enforced with every listener's CRL; shared by all
    /// generations (set at start, kept by reloads).
    pub fleet: Option<Arc<portcullis_fleet::RevokedSet>>,
}

impl Snapshot {
    /// Builds a generation from a checked config: admission, upstream pools (reading their
    /// TLS files) and every listener's certificate and verifier. Anything unreadable or
    /// malformed is an error and nothing is built. With `previous` (a reload), limit state of
    /// unchanged tenants and routes carries over, the listeners stay those bound at start-up
    /// (matched by name), and the audit section stays the one the log was opened with.
    pub(crate) fn build(config: Config, previous: Option<&Snapshot>) -> Result<Self, GatewayError> {
        let admission = Admission::build(&config, previous.map(|p| &*p.admission));
        let key_sets = previous.map_or_else(Default::default, |p| Arc::clone(&p.key_sets));
        let authenticator = Arc::new(Authenticator::build(&config, &key_sets)?);
        // The assertion's key is opened at start-up (it may be in a token): a reload keeps it.
        let assertion = previous.and_then(|p| {
            if p.config.identity_assertion != config.identity_assertion {
                tracing::warn!("identity_assertion changed: takes effect at restart");
            }
            p.assertion.clone()
        });
        let discovery = previous.map_or_else(Default::default, |p| Arc::clone(&p.discovery));
        // Sets already in use carry over; new ones are asked once before the pools are made.
        let discovered = discovery.sets_for(&config, true);
        // The fleet's set and its watch are started once: a reload keeps them.
        let fleet = previous.and_then(|p| {
            if p.config.fleet != config.fleet {
                tracing::warn!("fleet changed: takes effect at restart");
            }
            p.fleet.clone()
        });
        let mut pools = HashMap::new();
        for upstream in &config.upstreams {
            pools.insert(
                upstream.name.clone(),
                Arc::new(Pool::from_config(upstream, discovered.get(&upstream.name))?),
            );
        }
        let tls = match previous {
            None => config
                .listeners
                .iter()
                .map(|l| ListenerTls::load(l).map(Arc::new))
                .collect::<Result<_, _>>()?,
            Some(previous) => previous.reload_tls(&config)?,
        };
        let audit = match previous {
            Some(previous) => previous.audit.clone(),
            None => config.audit.clone(),
        };
        let weights: HashMap<&str, u32> = config
            .tenants
            .iter()
            .map(|t| (t.id.as_str(), t.limits.weight.map_or(1, |w| w.get())))
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|route| RouteState {
                weight: weights.get(route.tenant.as_str()).copied().unwrap_or(1),
                pool: pools.get(&route.upstream).cloned(),
                fallbacks: fallbacks(&config, &pools, &route.upstream),
                headers: RouteHeaders::of(route),
                series: RouteSeries::default(),
            })
            .collect();
        Ok(Self {
            listeners: views(&config),
            admission: Arc::new(admission),
            pools: Arc::new(pools),
            routes,
            tls,
            audit,
            authenticator,
            key_sets,
            assertion,
            discovery,
            fleet,
            config: Arc::new(config),
        })
    }

    /// This generation with every listener's certificate and verifier read again from its
    /// files (after a renewal or a CRL change); admission and pools are shared.
    pub(crate) fn with_fresh_tls(&self) -> Result<Self, GatewayError> {
        Ok(Self {
            tls: self.reload_tls(&self.config)?,
            ..self.clone()
        })
    }

    /// The TLS material of the running listeners from `config`. A listener's client-auth mode
    /// is fixed at start-up (rustls asks for client certificates by it), so a config that
    /// changes it is refused; one that drops a listener keeps its current material, since the
    /// socket stays bound until restart.
    fn reload_tls(&self, config: &Config) -> Result<Vec<Arc<ListenerTls>>, GatewayError> {
        let mut tls = Vec::with_capacity(self.tls.len());
        for running in &self.tls {
            let Some(new) = config.listeners.iter().find(|l| l.name == running.name) else {
                tracing::warn!(listener = %running.name, "listener removed from config: takes effect at restart");
                tls.push(Arc::clone(running));
                continue;
            };
            if new.tls.client_auth != running.client_auth {
                return Err(GatewayError::Tls(format!(
                    "listener {}: client_auth changes from {:?} to {:?} only at restart; restart to apply it",
                    new.name, running.client_auth, new.tls.client_auth
                )));
            }
            tls.push(Arc::new(ListenerTls::load(new)?));
        }
        for new in &config.listeners {
            if !self.tls.iter().any(|l| l.name == new.name) {
                tracing::warn!(listener = %new.name, "new listener: takes effect at restart");
            }
        }
        Ok(tls)
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

/// What a generation keeps for one route, found by the route's position (admission's
/// `route_index`) rather than by hashing its names on every request: its upstream pool, its
/// headers to the upstream and its metric series.
pub(crate) struct RouteState {
    /// The route's tenant's `weight` (`fairness`).
    pub weight: u32,
    pub pool: Option<Arc<Pool>>,
    /// The pools that take the route's requests, in order, while `pool` has no healthy
    /// target (its upstream's `failover`).
    pub fallbacks: Box<[Fallback]>,
    pub headers: Option<RouteHeaders>,
    pub series: RouteSeries,
}

impl std::fmt::Debug for RouteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteState")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// A pool a route's requests fail over to, with the counter of those it took (resolved on
/// first use, like [`RouteSeries`]).
pub(crate) struct Fallback {
    pub pool: Arc<Pool>,
    pub taken: std::sync::OnceLock<prometheus::IntCounter>,
}

/// The fallback pools of `upstream`, in its `failover` order.
fn fallbacks(
    config: &Config,
    pools: &HashMap<UpstreamName, Arc<Pool>>,
    upstream: &UpstreamName,
) -> Box<[Fallback]> {
    config
        .upstreams
        .iter()
        .find(|u| &u.name == upstream)
        .map(|u| {
            u.failover
                .iter()
                .filter_map(|name| pools.get(name))
                .map(|pool| Fallback {
                    pool: Arc::clone(pool),
                    taken: std::sync::OnceLock::new(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The per-listener settings requests consult.
fn views(config: &Config) -> Vec<ListenerView> {
    config
        .listeners
        .iter()
        .map(|l| ListenerView {
            address: l.address,
            trusted_proxies: l.trusted_proxies.clone(),
            max_connection_age: l.connections.max_connection_age,
            max_requests_per_connection: l.connections.max_requests_per_connection,
            body_idle_timeout: l.connections.body_idle_timeout,
        })
        .collect()
}
