//! A share of the gateway for every tenant when it is saturated (`fairness`). At most
//! `max_in_flight` requests are served at once, all tenants together. Beyond that a request
//! waits in its tenant's queue, and each slot that comes free goes to the waiting tenant with
//! the fewest requests in flight for its weight — so a tenant whose requests are slow or large
//! holds no more than its share of the slots while others wait, whatever its rate limits
//! allow. A request that waits longer than `queue_timeout` is refused 503 (`overloaded`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use portcullis_policy::Fairness;
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// The gateway-wide cap and the tenants' queues.
#[derive(Debug)]
pub(crate) struct FairGate {
    capacity: u32,
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    in_flight: u32,
    waiting: u32,
    next_ticket: u64,
    tenants: HashMap<Arc<str>, Tenant>,
}

#[derive(Debug)]
struct Tenant {
    active: u32,
    weight: u32,
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// A request's slot; given back (and handed to the next waiting tenant) when dropped.
#[derive(Debug)]
pub(crate) struct FairSlot {
    gate: Arc<FairGate>,
    tenant: Arc<str>,
}

impl Drop for FairSlot {
    fn drop(&mut self) {
        self.gate.release(&self.tenant);
    }
}

impl FairGate {
    pub(crate) fn new(settings: Fairness) -> Arc<Self> {
        Arc::new(Self {
            capacity: settings.max_in_flight,
            timeout: settings.queue_timeout,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one request of `tenant`: at once while the gateway is not full and nobody
    /// waits, else once the tenant's turn comes; `None` after `queue_timeout`.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        weight: u32,
        metrics: &Metrics,
    ) -> Option<FairSlot> {
        let (ticket, turn, key) = {
            let mut s = self.lock();
            let key = match s.tenants.get_key_value(tenant) {
                Some((k, _)) => Arc::clone(k),
                None => Arc::from(tenant),
            };
            let entry = s.tenants.entry(Arc::clone(&key)).or_insert(Tenant {
                active: 0,
                weight,
                queue: VecDeque::new(),
            });
            entry.weight = weight.max(1);
            if s.in_flight < self.capacity && s.waiting == 0 {
                s.in_flight += 1;
                if let Some(t) = s.tenants.get_mut(&key) {
                    t.active += 1;
                }
                return Some(self.slot(key));
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            let (tx, rx) = oneshot::channel();
            if let Some(t) = s.tenants.get_mut(&key) {
                t.queue.push_back((ticket, tx));
            }
            s.waiting += 1;
            (ticket, rx, key)
        };
        metrics.fairness_queued(tenant, 1);
        let started = Instant::now();
        let mut turn = turn;
        let outcome = tokio::time::timeout(self.timeout, &mut turn).await;
        metrics.fairness_queued(tenant, -1);
        if let Ok(Ok(())) = outcome {
            metrics.fairness_waited(tenant, started.elapsed());
            return Some(self.slot(key));
        }
        // Timed out: unless the turn came in the meantime, leave the queue.
        let mut s = self.lock();
        if turn.try_recv().is_ok() {
            drop(s);
            metrics.fairness_waited(tenant, started.elapsed());
            return Some(self.slot(key));
        }
        if let Some(t) = s.tenants.get_mut(&key) {
            if let Some(at) = t.queue.iter().position(|(n, _)| *n == ticket) {
                t.queue.remove(at);
                s.waiting -= 1;
            }
        }
        drop(s);
        metrics.fairness_timeout(tenant);
        None
    }

    fn slot(self: &Arc<Self>, tenant: Arc<str>) -> FairSlot {
        FairSlot {
            gate: Arc::clone(self),
            tenant,
        }
    }

    /// Gives a slot back and hands free slots to waiting tenants, fewest in flight for their
    /// weight first.
    fn release(&self, tenant: &str) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if let Some(t) = s.tenants.get_mut(tenant) {
            t.active = t.active.saturating_sub(1);
        }
        while s.in_flight < self.capacity && s.waiting > 0 {
            // a.active / a.weight < b.active / b.weight, without division.
            let Some(next) = s
                .tenants
                .iter()
                .filter(|(_, t)| !t.queue.is_empty())
                .min_by_key(|(_, t)| (u64::from(t.active) << 20) / u64::from(t.weight.max(1)))
                .map(|(k, _)| Arc::clone(k))
            else {
                break;
            };
            let Some(t) = s.tenants.get_mut(&next) else {
                break;
            };
            let Some((_, waiter)) = t.queue.pop_front() else {
                break;
            };
            // A waiter that just timed out has removed itself; one whose request was dropped
            // (the client went away) cannot take the slot.
            if waiter.send(()).is_ok() {
                t.active += 1;
                s.in_flight += 1;
            }
            s.waiting -= 1;
        }
        // Tenants with nothing in flight and nobody waiting are forgotten.
        if s.tenants.len() > 1024 {
            s.tenants.retain(|_, t| t.active > 0 || !t.queue.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(capacity: u32) -> Arc<FairGate> {
        FairGate::new(Fairness {
            max_in_flight: capacity,
            queue_timeout: Duration::from_millis(200),
        })
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_waiting_tenant_with_the_least_in_flight_for_its_weight() {
        let metrics = Metrics::default();
        let g = gate(2);
        // `slow` holds both slots and queues two more; then `quick` queues one.
        let held = [
            g.acquire("slow", 1, &metrics).await.unwrap(),
            g.acquire("slow", 1, &metrics).await.unwrap(),
        ];
        let g2 = Arc::clone(&g);
        let slow_waiter = tokio::spawn(async move {
            let m = Metrics::default();
            g2.acquire("slow", 1, &m).await.map(|_| "slow")
        });
        tokio::task::yield_now().await;
        let g3 = Arc::clone(&g);
        let quick_waiter = tokio::spawn(async move {
            let m = Metrics::default();
            g3.acquire("quick", 1, &m).await.map(|slot| {
                std::mem::forget(slot);
                "quick"
            })
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // One slot frees: `quick` (nothing in flight) gets it although `slow` queued first.
        drop(held);
        assert_eq!(quick_waiter.await.unwrap(), Some("quick"));
        assert_eq!(slow_waiter.await.unwrap(), Some("slow"));
    }

    #[tokio::test]
    async fn a_request_that_waits_past_the_timeout_is_refused_and_leaves_no_trace() {
        let metrics = Metrics::default();
        let g = gate(1);
        let held = g.acquire("a", 1, &metrics).await.unwrap();
        assert!(g.acquire("b", 1, &metrics).await.is_none());
        drop(held);
        // Nobody waits any more, and the slot is free again at once.
        {
            let s = g.lock();
            assert_eq!((s.in_flight, s.waiting), (0, 0));
        }
        assert!(g.acquire("b", 1, &metrics).await.is_some());
    }
}
