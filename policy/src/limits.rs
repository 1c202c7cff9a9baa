//! Per-tenant limits as configured: request rates (GCRA rate and burst) per tenant, per
//! identity, per source address and per route; in-flight requests; request body size. The
//! gateway enforces them; this module only says what they are.

use std::num::NonZeroU32;
use std::time::Duration;

/// A GCRA limit: on average `requests` per `per`, with bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub requests: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `n` per second, bursts of `n` (`n` of 0 is taken as 1).
    pub const fn per_second(n: u32) -> Self {
        let n = match NonZeroU32::new(n) {
            Some(n) => n,
            None => NonZeroU32::MIN,
        };
        Self {
            requests: n,
            per: Duration::from_secs(1),
            burst: n,
        }
    }

    /// The time one request's allowance takes to replenish.
    pub fn replenish_interval(&self) -> Duration {
        self.per / self.requests.get()
    }
}

/// What one tenant may use, whoever calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantLimits {
    /// All of the tenant's requests together.
    pub rate: Option<RateLimit>,
    /// Each caller identity (SPIFFE ID, else subject, else anonymous) separately.
    pub per_identity: Option<RateLimit>,
    /// Each client address separately.
    pub per_source: Option<RateLimit>,
    /// Requests of this tenant being served at once.
    pub max_in_flight: Option<NonZeroU32>,
    /// Largest request body accepted, in bytes.
    pub max_request_body: Option<u64>,
    /// The tenant's share of the gateway when it is saturated (`fairness`), against the
    /// other tenants' weights; `None` is 1.
    pub weight: Option<NonZeroU32>,
}
