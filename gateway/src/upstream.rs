//! Upstream pools: static targets chosen round robin among the healthy ones, active HTTP
//! health checks, timeouts, and plain HTTP, TLS or mTLS to the upstream.

use std::sync::Arc;
use std::time::Duration;

use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};
use portcullis_policy::{UpstreamConfig, UpstreamName};

use crate::tls::{load_certs, load_key};
use crate::GatewayError;

/// How the gateway talks TLS to one upstream.
struct PeerTls {
    server_name: String,
    ca: Option<Arc<[WrappedX509]>>,
    client: Option<Arc<CertKey>>,
}

/// One upstream pool, built from config and replaced whole on reload.
pub(crate) struct Pool {
    pub name: UpstreamName,
    balancer: LoadBalancer<RoundRobin>,
    /// The pool's one target, when it has only one: there is nothing to choose, only its
    /// health to check (the balancer's selection costs more than the rest of the choice).
    single: Option<Backend>,
    tls: Option<PeerTls>,
    connect_timeout: Duration,
    read_timeout: Duration,
    health_interval: Option<Duration>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

impl Pool {
    pub(crate) fn from_config(config: &UpstreamConfig) -> Result<Self, GatewayError> {
        let mut balancer =
            LoadBalancer::<RoundRobin>::try_from_iter(config.targets.iter().copied())
                .map_err(|e| GatewayError::Upstream(format!("upstream {}: {e}", config.name)))?;
        let tls = match &config.tls {
            None => None,
            Some(tls) => Some(PeerTls {
                server_name: tls.server_name.clone(),
                ca: match &tls.ca {
                    None => None,
                    Some(path) => {
                        // `load_certs` has parsed each certificate, so pingora's parser, which
                        // panics on bad input, only ever sees well-formed DER.
                        let certs = load_certs(path)?;
                        Some(
                            certs
                                .into_iter()
                                .map(|c| WrappedX509::new(c.as_ref().to_vec(), parse_x509))
                                .collect::<Vec<_>>()
                                .into(),
                        )
                    }
                },
                client: match &tls.client_cert {
                    None => None,
                    Some((cert, key)) => {
                        // Checked as a pair so that a mismatch is a config error, not a failed
                        // handshake on the first request.
                        crate::tls::load_certified_key(cert, key)?;
                        let chain = load_certs(cert)?.into_iter().map(|c| c.to_vec()).collect();
                        let key = load_key(key)?.secret_der().to_vec();
                        Some(Arc::new(CertKey::new(chain, key)))
                    }
                },
            }),
        };
        let health_interval = config.health_check.as_ref().map(|hc| hc.interval);
        if let Some(hc) = &config.health_check {
            let host = tls
                .as_ref()
                .map(|t| t.server_name.as_str())
                .unwrap_or("localhost");
            let mut check = HttpHealthCheck::new(host, tls.is_some());
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
                check.peer_template.options.ca = tls.ca.clone();
                check.peer_template.client_cert_key = tls.client.clone();
            }
            balancer.set_health_check(Box::new(check));
        }
        let backends = balancer.backends().get_backend();
        let single = match backends.len() {
            1 => backends.iter().next().cloned(),
            _ => None,
        };
        Ok(Self {
            name: config.name.clone(),
            balancer,
            single,
            tls,
            connect_timeout: config.connect_timeout,
            read_timeout: config.read_timeout,
            health_interval,
        })
    }

    /// The next healthy target, as a peer ready to connect to; `None` when all are down.
    pub(crate) fn peer(&self) -> Option<HttpPeer> {
        let backend = match &self.single {
            Some(one) => self.balancer.backends().ready(one).then(|| one.clone())?,
            None => self.balancer.select(b"", 256)?,
        };
        let addr = *backend.addr.as_inet()?;
        let mut peer = match &self.tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(tls) => {
                let mut peer = HttpPeer::new(addr, true, tls.server_name.clone());
                peer.options.ca = tls.ca.clone();
                peer.client_cert_key = tls.client.clone();
                peer
            }
        };
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
        Pool::from_config(&config.upstreams[0]).unwrap()
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
}
