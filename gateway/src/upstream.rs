//! Upstream pools: targets (listed, or found in DNS by [`discovery`]) chosen round robin among
//! the healthy ones, active HTTP health checks, timeouts, and plain HTTP, TLS or mTLS to the
//! upstream (TLS made by [`connect`], which checks the upstream's name, SPIFFE ID or both).

mod connect;
mod discovery;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use portcullis_policy::{UpstreamConfig, UpstreamName, UpstreamProtocol};

use connect::TlsConnect;
pub(crate) use connect::IDENTITY_MISMATCH;
use discovery::DnsTargets;
pub(crate) use discovery::{DiscoveredSet, DiscoveryRegistry};

use crate::GatewayError;

/// Requests sent at once on one HTTP/2 upstream connection before another is opened.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// One upstream pool, built from config and replaced whole on reload.
pub(crate) struct Pool {
    pub name: UpstreamName,
    balancer: LoadBalancer<RoundRobin>,
    /// The pool's one target, when it has only one: there is nothing to choose, only its
    /// health to check (the balancer's selection costs more than the rest of the choice).
    single: Option<Backend>,
    tls: Option<Arc<TlsConnect>>,
    protocol: UpstreamProtocol,
    connect_timeout: Duration,
    read_timeout: Duration,
    health_interval: Option<Duration>,
    /// The DNS-discovered targets this pool balances over, and the set's version it last
    /// took (`None`: the targets are listed in the config).
    discovered: Option<(Arc<DiscoveredSet>, AtomicU64)>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

impl Pool {
    /// A pool of `config`'s targets; for a discovered upstream, of `discovered`'s (the set
    /// the generation shares with the previous ones; see [`DiscoveryRegistry`]).
    pub(crate) fn from_config(
        config: &UpstreamConfig,
        discovered: Option<&Arc<DiscoveredSet>>,
    ) -> Result<Self, GatewayError> {
        let discovered = match (&config.dns, discovered) {
            (Some(_), Some(set)) => Some(Arc::clone(set)),
            (Some(_), None) => {
                return Err(GatewayError::Upstream(format!(
                    "upstream {}: no discovered set for its dns section",
                    config.name
                )))
            }
            (None, _) => None,
        };
        let mut balancer = match &discovered {
            None => LoadBalancer::<RoundRobin>::try_from_iter(config.targets.iter().copied())
                .map_err(|e| GatewayError::Upstream(format!("upstream {}: {e}", config.name)))?,
            Some(set) => {
                let balancer = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(
                    DnsTargets(Arc::clone(set)),
                )));
                // `DnsTargets` only reads the last good set: the update is ready at once.
                if let Some(Err(e)) = balancer.update().now_or_never() {
                    return Err(GatewayError::Upstream(format!(
                        "upstream {}: {e}",
                        config.name
                    )));
                }
                balancer
            }
        };
        let tls = match &config.tls {
            None => None,
            Some(tls) => Some(Arc::new(TlsConnect::new(
                config.name.as_str(),
                tls,
                config.protocol,
                config.connect_timeout,
            )?)),
        };
        let health_interval = config.health_check.as_ref().map(|hc| hc.interval);
        if let Some(hc) = &config.health_check {
            let host = config
                .tls
                .as_ref()
                .and_then(|t| t.server_name.as_deref())
                .unwrap_or("localhost");
            let mut check = HttpHealthCheck::new(host, false);
            let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None)
                .map_err(|e| GatewayError::Upstream(format!("upstream {}: {e}", config.name)))?;
            req.insert_header("Host", host)
                .map_err(|e| GatewayError::Upstream(format!("upstream {}: {e}", config.name)))?;
            req.insert_header("User-Agent", "portcullis-health-check")
                .map_err(|e| GatewayError::Upstream(format!("upstream {}: {e}", config.name)))?;
            check.req = req;
            check.peer_template.options.connection_timeout = Some(config.connect_timeout);
            check.peer_template.options.read_timeout = Some(config.read_timeout.min(hc.interval));
            if let Some(tls) = &tls {
                check.peer_template.options.custom_l4 = Some(tls.clone());
                check.peer_template.group_key = tls.group;
            }
            if config.protocol == UpstreamProtocol::Http2 {
                check.peer_template.options.alpn = ALPN::H2;
            }
            balancer.set_health_check(Box::new(check));
        }
        let backends = balancer.backends().get_backend();
        let single = match backends.len() {
            1 if discovered.is_none() => backends.iter().next().cloned(),
            _ => None,
        };
        let discovered = discovered.map(|set| {
            let version = AtomicU64::new(set.version());
            (set, version)
        });
        Ok(Self {
            name: config.name.clone(),
            balancer,
            single,
            tls,
            protocol: config.protocol,
            connect_timeout: config.connect_timeout,
            read_timeout: config.read_timeout,
            health_interval,
            discovered,
        })
    }

    /// The next healthy target, as a peer ready to connect to; `None` when all are down.
    pub(crate) fn peer(&self) -> Option<HttpPeer> {
        self.peer_avoiding(None)
    }

    /// The next healthy target other than `avoid` (a target that just refused a connection,
    /// before its health check has noticed).
    pub(crate) fn peer_avoiding(
        &self,
        avoid: Option<&pingora_core::protocols::l4::socket::SocketAddr>,
    ) -> Option<HttpPeer> {
        let backend = match (&self.single, avoid) {
            (Some(one), _) if avoid == Some(&one.addr) => return None,
            (Some(one), _) => self.balancer.backends().ready(one).then(|| one.clone())?,
            (None, None) => self.balancer.select(b"", 256)?,
            (None, Some(avoid)) => self
                .balancer
                .select_with(b"", 256, |b, healthy| healthy && &b.addr != avoid)?,
        };
        let addr = *backend.addr.as_inet()?;
        // Over TLS too pingora sees plain HTTP: the TLS stream is made by `TlsConnect`.
        let mut peer = HttpPeer::new(addr, false, String::new());
        if let Some(tls) = &self.tls {
            peer.options.custom_l4 = Some(tls.clone());
            peer.group_key = tls.group;
        }
        if self.protocol == UpstreamProtocol::Http2 {
            // HTTP/2 only (over TLS the ALPN offered is `h2` alone; in plaintext, h2c with
            // prior knowledge), with requests multiplexed on each connection.
            peer.options.alpn = ALPN::H2;
            peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        }
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        Some(peer)
    }

    pub(crate) fn health_interval(&self) -> Option<Duration> {
        self.health_interval
    }

    /// Probes every target once (in parallel) and updates their health.
    pub(crate) async fn check_health(&self) {
        self.balancer.backends().run_health_check(true).await;
    }

    /// The pool's discovered set, if its targets come from DNS.
    pub(crate) fn discovered(&self) -> Option<&Arc<DiscoveredSet>> {
        self.discovered.as_ref().map(|(set, _)| set)
    }

    /// Takes the discovered set's latest targets, if they changed since last taken (targets
    /// that stay keep their health). Called by the background task only, never concurrently.
    pub(crate) async fn take_discovered(&self) {
        let Some((set, taken)) = &self.discovered else {
            return;
        };
        let version = set.version();
        if taken.load(Ordering::Acquire) == version {
            return;
        }
        match self.balancer.update().await {
            Ok(()) => taken.store(version, Ordering::Release),
            Err(e) => tracing::warn!(upstream = %self.name, error = %e, "pool kept its targets"),
        }
    }

    /// How many targets the pool balances over now.
    pub(crate) fn target_count(&self) -> usize {
        self.balancer.backends().get_backend().len()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use portcullis_policy::Config;

    use super::*;

    fn pool(targets: &str) -> Pool {
        let config = Config::from_yaml(
            &format!(
                "listeners:\n  - name: l\n    address: 127.0.0.1:8443\n    tls: {{ certificate: s.pem, private_key: s.key, client_ca: ca.pem }}\n\
                 upstreams:\n  - name: u\n    targets: [{targets}]\n\
                 tenants:\n  - name: t\n    routes:\n      - name: r\n        upstream: u\n        access: [ {{ id: anyone }} ]\n"
            ),
            Path::new("t.yaml"),
        )
        .unwrap();
        Pool::from_config(&config.upstreams[0], None).unwrap()
    }

    #[test]
    fn a_single_target_is_taken_without_selection_and_several_in_turn() {
        let one = pool("127.0.0.1:9000");
        assert!(one.single.is_some());
        for _ in 0..3 {
            assert_eq!(one.peer().unwrap()._address.to_string(), "127.0.0.1:9000");
        }
        let two = pool("127.0.0.1:9000, 127.0.0.1:9001");
        assert!(two.single.is_none());
        let mut seen: Vec<String> = (0..4)
            .map(|_| two.peer().unwrap()._address.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["127.0.0.1:9000", "127.0.0.1:9001"]);
    }

    #[test]
    fn a_retry_avoids_the_target_that_refused() {
        let two = pool("127.0.0.1:9000, 127.0.0.1:9001");
        let refused = two.peer().unwrap()._address;
        for _ in 0..4 {
            let other = two.peer_avoiding(Some(&refused)).unwrap()._address;
            assert_ne!(other, refused);
        }
        let one = pool("127.0.0.1:9000");
        let only = one.peer().unwrap()._address;
        assert!(one.peer_avoiding(Some(&only)).is_none());
    }
}
