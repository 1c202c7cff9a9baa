//! Request rate limits (GCRA, governor), checked before routing: every request is charged to
//! its source address, then to its client certificate's identity (operators: their own, higher
//! limit) or to the bootstrap token it presents. Over a limit: 429 `rate_limited` with
//! `Retry-After`. Per-key buckets live in moka caches with a capacity and an idle expiry, so a
//! flood of distinct keys cannot grow memory without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use portcullis_identity::canonical_ip;

use crate::api::ApiError;
use crate::config::{RateLimit, RateLimitsConfig};
use crate::identity::ConnInfo;
use crate::stats::{IssuanceStats, LimitKey};
use crate::token::{TokenHash, TokenId};

/// Distinct keys remembered per limit; beyond it the least recently used are dropped.
const KEYED_CAPACITY: u64 = 100_000;
/// A bucket idle this long (or its refill time, if longer) is dropped: it would be full again.
const KEYED_IDLE: Duration = Duration::from_secs(600);

fn quota(limit: &RateLimit) -> Quota {
    // `with_period` is `None` only for a zero period, which `replenish_interval` excludes.
    Quota::with_period(limit.replenish_interval())
        .unwrap_or_else(|| Quota::per_second(limit.requests))
        .allow_burst(limit.burst)
}

/// One bucket per key, bounded in number.
struct KeyedBuckets<K> {
    quota: Quota,
    buckets: moka::sync::Cache<K, Arc<DefaultDirectRateLimiter>>,
}

impl<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> KeyedBuckets<K> {
    fn new(limit: &RateLimit) -> Self {
        let refill = limit.replenish_interval() * limit.burst.get();
        Self {
            quota: quota(limit),
            buckets: moka::sync::Cache::builder()
                .max_capacity(KEYED_CAPACITY)
                .time_to_idle(KEYED_IDLE.max(refill))
                .build(),
        }
    }

    /// Ok, or how long until the key's next request would be allowed.
    fn check(&self, key: &K) -> Result<(), Duration> {
        self.buckets
            .get_with_by_ref(key, || Arc::new(RateLimiter::direct(self.quota)))
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// A request over one of its limits: what the 429 says.
#[derive(Debug)]
pub(crate) struct Limited {
    key: LimitKey,
    retry_after: Duration,
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let message = match self.key {
            LimitKey::Identity => "too many requests with this client certificate's identity",
            LimitKey::Token => "too many requests with this bootstrap token",
            LimitKey::Source => "too many requests from this address",
        };
        let mut response =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response();
        // Whole seconds, rounded up: a client that waits that long is served.
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        response
    }
}

/// The API's rate limits and their state.
pub(crate) struct RequestLimits {
    identity: KeyedBuckets<String>,
    operator: KeyedBuckets<String>,
    token: KeyedBuckets<TokenId>,
    source: KeyedBuckets<IpAddr>,
    stats: Arc<IssuanceStats>,
    log: LogBudget,
}

impl RequestLimits {
    pub(crate) fn new(config: &RateLimitsConfig, stats: Arc<IssuanceStats>) -> Self {
        Self {
            identity: KeyedBuckets::new(&config.per_identity),
            operator: KeyedBuckets::new(&config.per_operator),
            token: KeyedBuckets::new(&config.per_token),
            source: KeyedBuckets::new(&config.per_source),
            stats,
            log: LogBudget::new(),
        }
    }

    /// Charges one request: to its source address, then to its certificate's identity
    /// (`operator`: the operators' limit) or to the bootstrap token it presents.
    pub(crate) fn check(
        &self,
        conn: &ConnInfo,
        headers: &HeaderMap,
        operator: bool,
        people: bool,
    ) -> Result<(), Limited> {
        let source = canonical_ip(conn.remote.ip());
        let (key, caller, outcome) = match self.source.check(&source) {
            Err(wait) => (LimitKey::Source, String::new(), Err(wait)),
            Ok(()) => match (&conn.peer, presented_token(headers)) {
                (Some(peer), _) => {
                    let id = peer.actor();
                    let buckets = if operator {
                        &self.operator
                    } else {
                        &self.identity
                    };
                    let outcome = buckets.check(&id);
                    (LimitKey::Identity, id, outcome)
                }
                // A person's bearer token (not a bootstrap token): charged like an identity.
                (None, Some(token)) if people => {
                    let id = format!("token:{token}");
                    let outcome = self.identity.check(&id);
                    (LimitKey::Identity, id, outcome)
                }
                (None, Some(token)) => {
                    let outcome = self.token.check(&token);
                    (LimitKey::Token, format!("token:{token}"), outcome)
                }
                (None, None) => return Ok(()),
            },
        };
        let Err(retry_after) = outcome else {
            return Ok(());
        };
        self.stats.rate_limited(key);
        if let Some(suppressed) = self.log.allow() {
            tracing::info!(
                client.addr = %conn.remote,
                client.id = %caller,
                limit = key.as_str(),
                retry_after = ?retry_after,
                log.suppressed = suppressed,
                "admin API: rate limited"
            );
        }
        Err(Limited { key, retry_after })
    }
}

/// The public id of a bootstrap token in `Authorization: Bearer …`, when the value can be one
/// (what the issuance endpoint looks up).
fn presented_token(headers: &HeaderMap) -> Option<TokenId> {
    let (scheme, token) = headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim()
        .split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| TokenHash::of_presented(token.trim()))?
        .map(|hash| hash.id())
}

/// A budget for log lines about refusals an attacker can cause at will: at most 10 a second
/// (bursts of 20); the lines left out are counted and reported with the next one.
pub(crate) struct LogBudget {
    limiter: DefaultDirectRateLimiter,
    suppressed: AtomicU64,
}

impl LogBudget {
    pub(crate) fn new() -> Self {
        let quota = Quota::per_second(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: RateLimiter::direct(quota),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when a line may be written now.
    pub(crate) fn allow(&self) -> Option<u64> {
        if self.limiter.check().is_ok() {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_id_only_for_plausible_tokens() {
        let token = "A".repeat(43);
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("bearer  {token} ")).unwrap(),
        );
        assert_eq!(presented_token(&headers), Some(TokenHash::of(&token).id()));
        for bad in ["Basic abc", "Bearer short", "Bearer", ""] {
            headers.insert(AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(presented_token(&headers), None, "{bad:?}");
        }
    }

    #[test]
    fn a_key_over_its_burst_waits_while_another_is_served() {
        let limit = RateLimit {
            requests: NonZeroU32::new(1).unwrap(),
            per: Duration::from_secs(60),
            burst: NonZeroU32::new(2).unwrap(),
        };
        let buckets = KeyedBuckets::<String>::new(&limit);
        let a = "a".to_owned();
        assert!(buckets.check(&a).is_ok());
        assert!(buckets.check(&a).is_ok());
        let wait = buckets.check(&a).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert!(buckets.check(&"b".to_owned()).is_ok());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let r = Limited {
            key: LimitKey::Source,
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn log_budget_counts_what_it_leaves_out() {
        let budget = LogBudget::new();
        let allowed = (0..100).filter_map(|_| budget.allow()).count();
        assert!((20..=22).contains(&allowed), "{allowed}");
    }
}
