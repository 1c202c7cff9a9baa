//! Upstream targets found in DNS (`dns:`): A/AAAA records of a name with a configured port, or
//! SRV records (targets and ports) with their targets' addresses, asked of the configured name
//! server or the system's.
//!
//! Each discovered upstream has one [`DiscoveredSet`], shared by every generation whose config
//! asks the same question (so a reload keeps the targets found so far): the last good answer,
//! re-asked in the background when its shortest TTL runs out (within [`MIN_REFRESH`] and
//! [`MAX_REFRESH`]), never on a request's path. A failed lookup or an empty answer keeps the
//! last good targets, is counted and logged, and is retried sooner. Pools read the set through
//! pingora's [`ServiceDiscovery`] ([`DnsTargets`]), so membership changes go through the load
//! balancer's own `update`, which keeps the health of targets that stay.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{Name, Record};
use hickory_resolver::TokioResolver;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use portcullis_policy::{Config, DnsDiscovery, DnsQuery, UpstreamName};

/// Shortest time between two lookups of one set, whatever the TTL (0 included).
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest time a set goes without being asked again, whatever the TTL.
pub(crate) const MAX_REFRESH: Duration = Duration::from_secs(300);
/// Longest wait between retries after failures (doubling from `MIN_REFRESH`).
const MAX_RETRY: Duration = Duration::from_secs(30);
/// One whole discovery (an SRV lookup and its targets' lookups included).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Targets kept from one answer (the lowest in address order); the rest are ignored.
pub(crate) const MAX_TARGETS: usize = 64;
/// SRV targets whose addresses are looked up, from one answer.
const MAX_SRV_TARGETS: usize = 16;

/// What went wrong with one discovery; the last good targets stay.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiscoveryError {
    #[error("resolver: {0}")]
    Resolver(String),
    #[error("lookup of {query}: {error}")]
    Lookup { query: String, error: String },
    #[error("lookup of {0}: no usable address in the answer")]
    Empty(String),
    #[error("lookup of {0}: no answer within {LOOKUP_TIMEOUT:?}")]
    Timeout(String),
}

/// One answer: its targets and how long it may be kept.
#[derive(Debug)]
struct Answer {
    targets: BTreeSet<Backend>,
    ttl: Duration,
}

/// The targets of one discovered upstream: the last good answer and when to ask again.
pub(crate) struct DiscoveredSet {
    pub(crate) upstream: UpstreamName,
    spec: DnsDiscovery,
    targets: ArcSwap<BTreeSet<Backend>>,
    /// Advanced on every change of `targets`: pools re-read the set only when it moved.
    version: AtomicU64,
    /// When the set is asked again; `None` until a first attempt.
    next: Mutex<Option<Instant>>,
    /// Failed attempts in a row (for the retry delay).
    failures: AtomicU32,
    /// Failed attempts not yet counted in the metrics (the first lookup runs before them).
    unreported_errors: AtomicU64,
    /// The background's resolver, made on first use inside its runtime.
    resolver: Mutex<Option<TokioResolver>>,
}

impl std::fmt::Debug for DiscoveredSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveredSet")
            .field("upstream", &self.upstream)
            .field("query", &self.spec.query)
            .finish_non_exhaustive()
    }
}

impl DiscoveredSet {
    fn new(upstream: UpstreamName, spec: DnsDiscovery) -> Self {
        Self {
            upstream,
            spec,
            targets: ArcSwap::from_pointee(BTreeSet::new()),
            version: AtomicU64::new(0),
            next: Mutex::new(None),
            failures: AtomicU32::new(0),
            unreported_errors: AtomicU64::new(0),
            resolver: Mutex::new(None),
        }
    }

    /// The last good targets.
    pub(crate) fn targets(&self) -> Arc<BTreeSet<Backend>> {
        self.targets.load_full()
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Failed attempts since the last call (for the error counter).
    pub(crate) fn take_errors(&self) -> u64 {
        self.unreported_errors.swap(0, Ordering::Relaxed)
    }

    /// Whether the set is due to be asked again.
    pub(crate) fn due(&self, now: Instant) -> bool {
        lock(&self.next).is_none_or(|next| next <= now)
    }

    /// Asks once with `resolver` and keeps the answer, or keeps the last good targets.
    async fn refresh_with(&self, resolver: &TokioResolver) -> Result<usize, DiscoveryError> {
        let query = self.spec.query.to_string();
        let answer = tokio::time::timeout(LOOKUP_TIMEOUT, lookup(resolver, &self.spec.query))
            .await
            .unwrap_or_else(|_| Err(DiscoveryError::Timeout(query)));
        let now = Instant::now();
        match answer {
            Ok(answer) => {
                let count = answer.targets.len();
                if *self.targets.load_full() != answer.targets {
                    tracing::info!(
                        upstream = %self.upstream,
                        query = %self.spec.query,
                        targets = ?answer.targets.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
                        "upstream targets discovered"
                    );
                    self.targets.store(Arc::new(answer.targets));
                    self.version.fetch_add(1, Ordering::AcqRel);
                }
                self.failures.store(0, Ordering::Relaxed);
                *lock(&self.next) = Some(now + answer.ttl.clamp(MIN_REFRESH, MAX_REFRESH));
                Ok(count)
            }
            Err(e) => {
                let failures = self
                    .failures
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                self.unreported_errors.fetch_add(1, Ordering::Relaxed);
                let retry = retry_after(failures);
                *lock(&self.next) = Some(now + retry);
                tracing::warn!(
                    upstream = %self.upstream,
                    error = %e,
                    kept = self.targets.load().len(),
                    retry_s = retry.as_secs(),
                    "upstream discovery failed; keeping the last good targets"
                );
                Err(e)
            }
        }
    }

    /// Asks again (from the background task, inside its runtime).
    pub(crate) async fn refresh(&self) -> Result<usize, DiscoveryError> {
        let resolver = {
            let mut slot = lock(&self.resolver);
            match &*slot {
                Some(r) => r.clone(),
                None => match resolver(self.spec.resolver) {
                    Ok(r) => {
                        *slot = Some(r.clone());
                        r
                    }
                    Err(e) => {
                        drop(slot);
                        self.failures.fetch_add(1, Ordering::Relaxed);
                        self.unreported_errors.fetch_add(1, Ordering::Relaxed);
                        *lock(&self.next) = Some(Instant::now() + MAX_RETRY);
                        tracing::warn!(upstream = %self.upstream, error = %e, "upstream discovery has no resolver");
                        return Err(e);
                    }
                },
            }
        };
        self.refresh_with(&resolver).await
    }
}

/// The wait before asking again after `failures` failed attempts in a row: 1, 2, 4, 8, 16,
/// then 30 s.
fn retry_after(failures: u32) -> Duration {
    MIN_REFRESH
        .saturating_mul(1 << failures.clamp(1, 6).saturating_sub(1))
        .min(MAX_RETRY)
}

/// A std mutex guard, poison or not: the values behind these locks stay valid either way.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every discovered set in use, by upstream and question, shared by all generations. Holds
/// them weakly: a set lives while a generation's pool uses it.
#[derive(Default)]
pub(crate) struct DiscoveryRegistry {
    sets: Mutex<HashMap<(UpstreamName, DnsDiscovery), Weak<DiscoveredSet>>>,
}

impl std::fmt::Debug for DiscoveryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiscoveryRegistry")
    }
}

impl DiscoveryRegistry {
    /// The set of every discovered upstream in `config`: the one in use when the same
    /// question is asked already (its targets carry over), else a new one. With `resolve`,
    /// new sets are asked once before this returns (bounded by the lookup timeout), so a
    /// new generation does not start with an empty pool.
    pub(crate) fn sets_for(
        &self,
        config: &Config,
        resolve: bool,
    ) -> HashMap<UpstreamName, Arc<DiscoveredSet>> {
        let mut fresh = Vec::new();
        let mut out = HashMap::new();
        {
            let mut sets = lock(&self.sets);
            sets.retain(|_, weak| weak.strong_count() > 0);
            for upstream in &config.upstreams {
                let Some(spec) = &upstream.dns else {
                    continue;
                };
                let key = (upstream.name.clone(), spec.clone());
                let set = match sets.get(&key).and_then(Weak::upgrade) {
                    Some(set) => set,
                    None => {
                        let set = Arc::new(DiscoveredSet::new(upstream.name.clone(), spec.clone()));
                        sets.insert(key, Arc::downgrade(&set));
                        fresh.push(Arc::clone(&set));
                        set
                    }
                };
                out.insert(upstream.name.clone(), set);
            }
        }
        if resolve && !fresh.is_empty() {
            first_lookups(fresh);
        }
        out
    }
}

/// Asks each new set once, on a thread of its own with its own runtime (the caller may be
/// the start-up path or the reload thread; neither is inside a runtime it may block).
fn first_lookups(sets: Vec<Arc<DiscoveredSet>>) {
    let thread = std::thread::Builder::new()
        .name("dns-first-lookup".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "no runtime for the first upstream lookups; the background will ask");
                    return;
                }
            };
            runtime.block_on(async {
                let lookups = sets.iter().map(|set| async move {
                    // A resolver of this runtime only: the background makes its own.
                    match resolver(set.spec.resolver) {
                        Ok(r) => {
                            let _ = set.refresh_with(&r).await;
                        }
                        Err(e) => {
                            set.unreported_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(upstream = %set.upstream, error = %e, "upstream discovery has no resolver");
                        }
                    }
                });
                futures::future::join_all(lookups).await;
            });
        });
    match thread {
        Ok(handle) => {
            let _ = handle.join();
        }
        Err(e) => tracing::warn!(error = %e, "no thread for the first upstream lookups"),
    }
}

/// A resolver asking `server`, or the system's name servers. No cache: the set is the cache,
/// asked again when its TTL runs out; `/etc/hosts` is not read.
fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, DiscoveryError> {
    let mut builder = match server {
        Some(server) => TokioResolver::builder_with_config(
            ResolverConfig::from_parts(
                None,
                vec![],
                NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true),
            ),
            TokioConnectionProvider::default(),
        ),
        None => TokioResolver::builder_tokio()
            .map_err(|e| DiscoveryError::Resolver(format!("system configuration: {e}")))?,
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.use_hosts_file = ResolveHosts::Never;
    // Names are absolute (the config adds the final dot): no search list.
    opts.ndots = 0;
    Ok(builder.build())
}

/// One discovery: the targets and the shortest TTL among the records that gave them.
async fn lookup(resolver: &TokioResolver, query: &DnsQuery) -> Result<Answer, DiscoveryError> {
    match query {
        DnsQuery::Address { name, port } => {
            let (ips, ttl) = addresses(resolver, name.as_str()).await?;
            let targets = backends(ips.into_iter().map(|ip| SocketAddr::new(ip, *port)));
            if targets.is_empty() {
                return Err(DiscoveryError::Empty(query.to_string()));
            }
            Ok(Answer { targets, ttl })
        }
        DnsQuery::Srv { name } => {
            let srv =
                resolver
                    .srv_lookup(name.as_str())
                    .await
                    .map_err(|e| DiscoveryError::Lookup {
                        query: query.to_string(),
                        error: e.to_string(),
                    })?;
            let mut ttl = shortest_ttl(srv.as_lookup().records());
            // The records of the lowest priority are the targets; the others are the
            // service's own fallbacks (weights are not used: round robin).
            let records: Vec<_> = srv
                .iter()
                .filter(|r| !r.target().is_root() && r.port() != 0)
                .collect();
            let Some(best) = records.iter().map(|r| r.priority()).min() else {
                return Err(DiscoveryError::Empty(query.to_string()));
            };
            let mut wanted: Vec<(Name, u16)> = Vec::new();
            for r in records.iter().filter(|r| r.priority() == best) {
                let entry = (r.target().clone(), r.port());
                if !wanted.contains(&entry) && wanted.len() < MAX_SRV_TARGETS {
                    wanted.push(entry);
                }
            }
            let found = futures::future::join_all(wanted.iter().map(|(target, port)| async move {
                let target = target.to_ascii();
                (addresses(resolver, &target).await, *port, target)
            }))
            .await;
            let mut addrs = Vec::new();
            for (result, port, target) in found {
                match result {
                    Ok((ips, target_ttl)) => {
                        ttl = ttl.min(target_ttl);
                        addrs.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
                    }
                    Err(e) => {
                        tracing::debug!(target = %target, error = %e, "SRV target has no address")
                    }
                }
            }
            let targets = backends(addrs.into_iter());
            if targets.is_empty() {
                return Err(DiscoveryError::Empty(query.to_string()));
            }
            Ok(Answer { targets, ttl })
        }
        other => Err(DiscoveryError::Lookup {
            query: other.to_string(),
            error: "not supported by this gateway".into(),
        }),
    }
}

/// The addresses `name` has, and the shortest TTL of the records that gave them.
async fn addresses(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<IpAddr>, Duration), DiscoveryError> {
    let found = resolver
        .lookup_ip(name)
        .await
        .map_err(|e| DiscoveryError::Lookup {
            query: format!("A/AAAA {name}"),
            error: e.to_string(),
        })?;
    let ttl = shortest_ttl(found.as_lookup().records());
    Ok((found.iter().filter(|ip| usable(*ip)).collect(), ttl))
}

fn shortest_ttl(records: &[Record]) -> Duration {
    let ttl = records.iter().map(Record::ttl).min().unwrap_or(0);
    Duration::from_secs(u64::from(ttl))
}

/// An address a request can be sent to: not unspecified, multicast or broadcast.
fn usable(ip: IpAddr) -> bool {
    !ip.is_unspecified() && !ip.is_multicast() && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The targets, at most [`MAX_TARGETS`] (the lowest in address order).
fn backends(addrs: impl Iterator<Item = SocketAddr>) -> BTreeSet<Backend> {
    let all: BTreeSet<SocketAddr> = addrs.collect();
    if all.len() > MAX_TARGETS {
        tracing::warn!(
            answered = all.len(),
            kept = MAX_TARGETS,
            "DNS answer has more targets than a pool keeps"
        );
    }
    all.into_iter()
        .take(MAX_TARGETS)
        .map(|addr| Backend {
            addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr),
            weight: 1,
            ext: http::Extensions::new(),
        })
        .collect()
}

/// A pool's view of its discovered set, as pingora's load balancer asks for it: no lookup
/// here, only the last good targets.
pub(crate) struct DnsTargets(pub(crate) Arc<DiscoveredSet>);

#[async_trait]
impl ServiceDiscovery for DnsTargets {
    async fn discover(&self) -> pingora_core::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((BTreeSet::clone(&self.0.targets()), HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_addresses_are_dropped_and_answers_are_bounded() {
        assert!(usable("127.0.0.2".parse().unwrap()));
        assert!(usable("::1".parse().unwrap()));
        for bad in ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "ff02::1"] {
            assert!(!usable(bad.parse().unwrap()), "{bad}");
        }
        let many = (0..200u16).map(|p| SocketAddr::from(([127, 0, 0, 1], 1000 + p)));
        let kept = backends(many);
        assert_eq!(kept.len(), MAX_TARGETS);
        assert_eq!(
            kept.iter().next().unwrap().addr.to_string(),
            "127.0.0.1:1000"
        );
    }

    #[test]
    fn retries_back_off_to_thirty_seconds() {
        let waits: Vec<u64> = (0..9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn a_new_set_is_due_and_the_registry_shares_sets_between_generations() {
        let config = Config::from_yaml(
            "listeners:\n  - name: l\n    address: 127.0.0.1:8443\n    tls: { certificate: s.pem, private_key: s.key, client_ca: ca.pem }\n\
             upstreams:\n  - name: u\n    dns: { name: u.test, port: 80, resolver: 127.0.0.1:9 }\n\
             tenants:\n  - name: t\n    routes:\n      - name: r\n        upstream: u\n        access: [ { id: anyone } ]\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        let registry = DiscoveryRegistry::default();
        let first = registry.sets_for(&config, false);
        let set = first.get(&config.upstreams[0].name).unwrap();
        assert!(set.due(Instant::now()));
        assert!(set.targets().is_empty());
        let second = registry.sets_for(&config, false);
        assert!(Arc::ptr_eq(
            set,
            second.get(&config.upstreams[0].name).unwrap()
        ));
        drop((first, second));
        // Nobody uses it any more: the next config gets a new one.
        let third = registry.sets_for(&config, false);
        assert_eq!(third.len(), 1);
        assert_eq!(lock(&registry.sets).len(), 1);
    }
}
