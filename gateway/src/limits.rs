//! Enforcement of per-tenant limits: GCRA rate limits (governor) per tenant, per identity, per
//! source address and per route; in-flight requests per tenant. Per-key buckets live in moka
//! caches with a capacity and an idle expiry, so a flood of distinct identities or addresses
//! cannot grow memory without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use portcullis_policy::{AbuseLimits, Config, RateLimit, RouteId, TenantId, TenantLimits};

/// Distinct keys remembered per keyed limit; beyond it the least recently used are dropped.
const KEYED_CAPACITY: u64 = 100_000;
/// A bucket idle this long is dropped (it would be full again anyway for any sane limit).
const KEYED_IDLE: Duration = Duration::from_secs(600);

/// The limit a request ran into, with what the 429 needs to say.
#[derive(Debug)]
pub struct LimitExceeded {
    /// `source`, `identity`, `route`, `tenant` or `in_flight`.
    pub limit: &'static str,
    pub retry_after: Duration,
    pub policy: Option<RateLimit>,
}

struct Bucket {
    limit: RateLimit,
    limiter: DefaultDirectRateLimiter,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            limiter: RateLimiter::direct(quota(&limit)),
        }
    }

    fn check(&self, name: &'static str) -> Result<(), LimitExceeded> {
        self.limiter.check().map_err(|not_until| LimitExceeded {
            limit: name,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            policy: Some(self.limit),
        })
    }
}

fn quota(limit: &RateLimit) -> Quota {
    let interval = limit.replenish_interval().max(Duration::from_nanos(1));
    // `with_period` is only `None` for a zero period, excluded just above.
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(limit.requests))
        .allow_burst(limit.burst)
}

/// One bucket per key (identity or address), bounded in number.
struct KeyedBuckets<K> {
    limit: RateLimit,
    buckets: moka::sync::Cache<K, Arc<Bucket>>,
}

impl<K: std::hash::Hash + Eq + Send + Sync + 'static> KeyedBuckets<K> {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: moka::sync::Cache::builder()
                .max_capacity(KEYED_CAPACITY)
                .time_to_idle(KEYED_IDLE)
                .build(),
        }
    }

    fn bucket(&self, key: &K) -> Arc<Bucket>
    where
        K: Clone,
    {
        self.buckets
            .get_with_by_ref(key, || Arc::new(Bucket::new(self.limit)))
    }
}

impl KeyedBuckets<String> {
    fn check(&self, key: &str, name: &'static str) -> Result<(), LimitExceeded> {
        self.buckets
            .get_with_by_ref(key, || Arc::new(Bucket::new(self.limit)))
            .check(name)
    }
}

/// A listener's new-connection rates (`connections.abuse`): per source address, checked at
/// accept before any TLS, and per client identity, checked after the handshake.
pub(crate) struct ConnectionRates {
    per_source: Option<KeyedBuckets<IpAddr>>,
    per_identity: Option<KeyedBuckets<String>>,
}

impl ConnectionRates {
    pub(crate) fn new(abuse: &AbuseLimits) -> Self {
        Self {
            per_source: abuse.connection_rate_per_source.map(KeyedBuckets::new),
            per_identity: abuse.connection_rate_per_identity.map(KeyedBuckets::new),
        }
    }

    /// Counts a new connection from `source` (canonical); whether it is within the rate.
    pub(crate) fn source_allows(&self, source: IpAddr) -> bool {
        self.per_source
            .as_ref()
            .is_none_or(|b| b.bucket(&source).limiter.check().is_ok())
    }

    /// Counts a new connection of `identity`; whether it is within the rate.
    pub(crate) fn identity_allows(&self, identity: &str) -> bool {
        self.per_identity
            .as_ref()
            .is_none_or(|b| b.check(identity, "identity").is_ok())
    }
}

/// One tenant's limits and the state enforcing them. Shared by every route of the tenant and
/// kept across reloads while the tenant's limits stay the same.
pub(crate) struct TenantGuard {
    limits: TenantLimits,
    rate: Option<Bucket>,
    per_identity: Option<KeyedBuckets<String>>,
    per_source: Option<KeyedBuckets<IpAddr>>,
    in_flight: AtomicU32,
}

impl TenantGuard {
    fn new(limits: &TenantLimits) -> Self {
        Self {
            limits: limits.clone(),
            rate: limits.rate.map(Bucket::new),
            per_identity: limits.per_identity.map(KeyedBuckets::new),
            per_source: limits.per_source.map(KeyedBuckets::new),
            in_flight: AtomicU32::new(0),
        }
    }

    pub(crate) fn max_request_body(&self) -> Option<u64> {
        self.limits.max_request_body
    }
}

/// A request counted against its tenant's in-flight limit; released when dropped.
pub(crate) struct InFlight(Arc<TenantGuard>);

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// All limits of one configuration.
#[derive(Default)]
pub(crate) struct Limits {
    tenants: HashMap<TenantId, Arc<TenantGuard>>,
    routes: HashMap<RouteId, Arc<Bucket>>,
    /// Each route's limits, in the route table's order: a request finds them by its route's
    /// position, hashing no name.
    by_route: Vec<RouteLimits>,
}

/// The limits one route's requests are charged to.
struct RouteLimits {
    tenant: Option<Arc<TenantGuard>>,
    route: Option<Arc<Bucket>>,
    /// Whether any rate or in-flight limit applies.
    applies: bool,
}

/// What charging a request to its route's limits gave it.
#[derive(Debug)]
pub(crate) struct Charged {
    /// The tenant's in-flight slot, if the tenant caps requests in flight.
    pub in_flight: Option<InFlight>,
    /// Whether any rate or in-flight limit applied (the request passed them all).
    pub limited: bool,
    /// The tenant's cap on request body bytes.
    pub max_request_body: Option<u64>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("tenants", &self.tenants.len())
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl Limits {
    /// Builds the limits of `config`, keeping the state (buckets, in-flight counts) of any
    /// tenant or route whose limits are unchanged from `previous`.
    pub(crate) fn build(config: &Config, previous: Option<&Limits>) -> Self {
        let mut tenants = HashMap::new();
        for tenant in &config.tenants {
            let kept = previous
                .and_then(|p| p.tenants.get(&tenant.id))
                .filter(|g| g.limits == tenant.limits)
                .cloned();
            let guard = kept.unwrap_or_else(|| Arc::new(TenantGuard::new(&tenant.limits)));
            tenants.insert(tenant.id.clone(), guard);
        }
        let mut routes = HashMap::new();
        for route in config.routes.iter() {
            let Some(limit) = route.rate_limit else {
                continue;
            };
            let kept = previous
                .and_then(|p| p.routes.get(&route.id))
                .filter(|b| b.limit == limit)
                .cloned();
            routes.insert(
                route.id.clone(),
                kept.unwrap_or_else(|| Arc::new(Bucket::new(limit))),
            );
        }
        let by_route = config
            .routes
            .iter()
            .map(|route| {
                let tenant = tenants.get(&route.tenant).cloned();
                let route = routes.get(&route.id).cloned();
                let applies = route.is_some()
                    || tenant.as_ref().is_some_and(|g| {
                        let l = &g.limits;
                        l.rate.is_some()
                            || l.per_identity.is_some()
                            || l.per_source.is_some()
                            || l.max_in_flight.is_some()
                    });
                RouteLimits {
                    tenant,
                    route,
                    applies,
                }
            })
            .collect();
        Self {
            tenants,
            routes,
            by_route,
        }
    }

    /// Charges one request on the route at `route` (its position in the route table) to every
    /// limit that applies, narrowest first (so that one noisy caller is stopped by its own limit
    /// before it spends the tenant's), then takes an in-flight slot.
    pub(crate) fn admit(
        &self,
        route: usize,
        identity: &str,
        source: IpAddr,
    ) -> Result<Charged, LimitExceeded> {
        let Some(limits) = self.by_route.get(route) else {
            return Ok(Charged {
                in_flight: None,
                limited: false,
                max_request_body: None,
            });
        };
        let guard = limits.tenant.as_ref();
        if let Some(g) = guard {
            if let Some(keyed) = &g.per_source {
                keyed.bucket(&source).check("source")?;
            }
            if let Some(keyed) = &g.per_identity {
                keyed.check(identity, "identity")?;
            }
        }
        if let Some(bucket) = &limits.route {
            bucket.check("route")?;
        }
        let mut charged = Charged {
            in_flight: None,
            limited: limits.applies,
            max_request_body: guard.and_then(|g| g.max_request_body()),
        };
        let Some(g) = guard else { return Ok(charged) };
        if let Some(bucket) = &g.rate {
            bucket.check("tenant")?;
        }
        let Some(max) = g.limits.max_in_flight else {
            return Ok(charged);
        };
        let taken = g
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max.get()).then_some(n + 1)
            });
        match taken {
            Ok(_) => {
                charged.in_flight = Some(InFlight(g.clone()));
                Ok(charged)
            }
            Err(_) => Err(LimitExceeded {
                limit: "in_flight",
                retry_after: Duration::from_secs(1),
                policy: None,
            }),
        }
    }
}
