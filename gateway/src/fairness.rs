//! A share of the gateway for every tenant when it is saturated (`fairness`). At most
//! `max_in_flight` requests are served at once, all tenants together, and while more than one
//! tenant is active each holds at most its weight's share of them (rounded up): a tenant is
//! active while it has requests in flight or waiting and for [`ACTIVE_FOR`] after its last
//! one was admitted. So a tenant whose requests are slow or large cannot fill the gateway
//! while another is using it, even when that other's requests come one at a time: the slots
//! beyond its share stay free for the others. Beyond its share or the cap a request waits in
//! its tenant's queue, and each slot that comes free goes to the waiting tenant with the
//! fewest requests in flight for its weight. A request that waits longer than `queue_timeout`
//! is refused 503 (`overloaded`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use portcullis_policy::Fairness;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// The gateway-wide cap and the tenants' queues.
#[derive(Debug)]
pub(crate) struct FairGate {
    capacity: u32,
    timeout: Duration,
    /// More than one tenant is active (as of the last time their weights were summed).
    contended: AtomicBool,
    state: Mutex<State>,
}

/// How long a tenant counts as active after its last request was admitted: its share stays
/// reserved that long, so a tenant sending one request at a time is not queued behind
/// another's backlog.
pub(crate) const ACTIVE_FOR: Duration = Duration::from_secs(1);

/// How often a waiting request looks again whether its share has grown (another tenant
/// stopped being active) when no slot was given back meanwhile.
const RECHECK: Duration = Duration::from_millis(100);

/// How long the active tenants' weight is reused before it is summed again (a tenant that
/// becomes active is added at once).
const REWEIGH: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct State {
    in_flight: u32,
    waiting: u32,
    next_ticket: u64,
    tenants: HashMap<Arc<str>, Tenant>,
    /// The active tenants' weights together and how many they are, counted at `weighed_at`.
    active_weight: u64,
    active_tenants: usize,
    weighed_at: Option<Instant>,
}

#[derive(Debug)]
struct Tenant {
    active: u32,
    weight: u32,
    /// When its last request was admitted.
    last: Instant,
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Tenant {
    fn is_active(&self, now: Instant) -> bool {
        self.active > 0 || !self.queue.is_empty() || now.duration_since(self.last) < ACTIVE_FOR
    }

    /// Whether it may take one more slot of a gateway with `in_flight` of `capacity` taken:
    /// below the cap, and below its share of it (`capacity × weight / active weight`, rounded
    /// up, at least one).
    fn may_take(&self, in_flight: u32, capacity: u32, active_weight: u64) -> bool {
        let weight = u64::from(self.weight);
        let share = (u64::from(capacity) * weight).div_ceil(active_weight.max(weight));
        in_flight < capacity && u64::from(self.active) < share.max(1)
    }
}

impl State {
    /// The weights of the active tenants together (at most `REWEIGH` old).
    fn active_weight(&mut self, now: Instant) -> u64 {
        if self
            .weighed_at
            .is_none_or(|at| now.duration_since(at) >= REWEIGH)
        {
            let active = self.tenants.values().filter(|t| t.is_active(now));
            (self.active_weight, self.active_tenants) =
                active.fold((0, 0), |(w, n), t| (w + u64::from(t.weight), n + 1));
            self.weighed_at = Some(now);
        }
        self.active_weight
    }

    /// Hands free slots to waiting tenants within their share, fewest in flight for their
    /// weight first.
    fn dispatch(&mut self, capacity: u32, active_weight: u64, now: Instant) {
        while self.in_flight < capacity && self.waiting > 0 {
            let in_flight = self.in_flight;
            // a.active / a.weight < b.active / b.weight, without division.
            let Some(t) = self
                .tenants
                .values_mut()
                .filter(|t| !t.queue.is_empty() && t.may_take(in_flight, capacity, active_weight))
                .min_by_key(|t| (u64::from(t.active) << 20) / u64::from(t.weight.max(1)))
            else {
                break;
            };
            let Some((_, waiter)) = t.queue.pop_front() else {
                break;
            };
            // A waiter that just timed out has removed itself; one whose request was dropped
            // (the client went away) cannot take the slot.
            let taken = waiter.send(()).is_ok();
            if taken {
                t.active += 1;
                t.last = now;
            }
            self.waiting -= 1;
            self.in_flight += u32::from(taken);
        }
    }
}

/// A request's slot; given back (and handed to the next waiting tenant) when dropped.
#[derive(Debug)]
pub(crate) struct FairSlot {
    gate: Arc<FairGate>,
    tenant: Arc<str>,
}

impl FairSlot {
    /// Whether more than one tenant is using the gateway: then a request's body work gives
    /// the core to other requests between chunks.
    pub(crate) fn contended(&self) -> bool {
        self.gate.contended.load(Ordering::Relaxed)
    }
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
            contended: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The active tenants' weight (`State::active_weight`), publishing whether more than one
    /// is active for `FairSlot::contended`.
    fn weigh(&self, s: &mut State, now: Instant) -> u64 {
        let weight = s.active_weight(now);
        self.contended
            .store(s.active_tenants > 1, Ordering::Relaxed);
        weight
    }

    /// Hands free slots to the waiters that may take them.
    fn dispatch(&self, s: &mut State, now: Instant) {
        let active_weight = self.weigh(s, now);
        s.dispatch(self.capacity, active_weight, now);
    }

    /// A slot for one request of `tenant`: at once while the gateway is not full, the tenant
    /// is within its share and has nobody waiting, else once its turn comes; `None` after
    /// `queue_timeout`.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        weight: u32,
        metrics: &Metrics,
    ) -> Option<FairSlot> {
        let (ticket, mut turn, key) = {
            let now = Instant::now();
            let mut guard = self.lock();
            let s = &mut *guard;
            let key = match s.tenants.get_key_value(tenant) {
                Some((k, _)) => Arc::clone(k),
                None => Arc::from(tenant),
            };
            let weight = weight.max(1);
            let t = s.tenants.entry(Arc::clone(&key)).or_insert(Tenant {
                active: 0,
                weight,
                last: now.checked_sub(ACTIVE_FOR).unwrap_or(now),
                queue: VecDeque::new(),
            });
            if !t.is_active(now) && s.weighed_at.is_some() {
                s.active_weight += u64::from(weight);
                s.active_tenants += 1;
            }
            t.weight = weight;
            t.last = now;
            let active_weight = self.weigh(s, now);
            let t = s.tenants.get_mut(&key)?;
            // Waiters of other tenants cannot take a free slot (each release and recheck
            // hands out every one a waiter may take); the tenant's own go first.
            if t.queue.is_empty() && t.may_take(s.in_flight, self.capacity, active_weight) {
                t.active += 1;
                s.in_flight += 1;
                return Some(self.slot(key));
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            let (tx, rx) = oneshot::channel();
            t.queue.push_back((ticket, tx));
            s.waiting += 1;
            (ticket, rx, key)
        };
        metrics.fairness_queued(tenant, 1);
        let started = Instant::now();
        let deadline = started + self.timeout;
        let turned = loop {
            let recheck = deadline.min(Instant::now() + RECHECK);
            match tokio::time::timeout_at(recheck, &mut turn).await {
                Ok(outcome) => break outcome.is_ok(),
                Err(_) if recheck >= deadline => break false,
                Err(_) => self.dispatch(&mut self.lock(), Instant::now()),
            }
        };
        metrics.fairness_queued(tenant, -1);
        if turned {
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

    /// Gives a slot back and hands free slots to waiting tenants.
    fn release(&self, tenant: &str) {
        let now = Instant::now();
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if let Some(t) = s.tenants.get_mut(tenant) {
            t.active = t.active.saturating_sub(1);
        }
        self.dispatch(&mut s, now);
        // Tenants neither active nor waiting are forgotten.
        if s.tenants.len() > 1024 {
            s.tenants.retain(|_, t| t.is_active(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(capacity: u32) -> Arc<FairGate> {
        gate_waiting(capacity, Duration::from_millis(200))
    }

    fn gate_waiting(capacity: u32, queue_timeout: Duration) -> Arc<FairGate> {
        FairGate::new(Fairness {
            max_in_flight: capacity,
            queue_timeout,
        })
    }

    /// A request of `tenant` waiting for its slot in a task of its own.
    fn waiter(
        g: &Arc<FairGate>,
        tenant: &'static str,
        weight: u32,
    ) -> tokio::task::JoinHandle<Option<FairSlot>> {
        let g = Arc::clone(g);
        tokio::spawn(async move { g.acquire(tenant, weight, &Metrics::default()).await })
    }

    async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_expensive_tenant_is_held_to_its_share_while_another_is_active() {
        let metrics = Metrics::default();
        let g = gate_waiting(4, Duration::from_secs(5));
        // `quiet` sends one request at a time; between them it holds no slot.
        drop(g.acquire("quiet", 1, &metrics).await.unwrap());
        // `heavy` gets half of the four slots, then waits although two are free.
        let heavy = [
            g.acquire("heavy", 1, &metrics).await.unwrap(),
            g.acquire("heavy", 1, &metrics).await.unwrap(),
        ];
        let third = waiter(&g, "heavy", 1);
        settle().await;
        assert!(!third.is_finished(), "heavy took a third slot of four");
        // The free slots are quiet's, at once.
        let quiet = g.acquire("quiet", 1, &metrics).await.unwrap();
        drop(quiet);
        settle().await;
        assert!(!third.is_finished(), "heavy took quiet's slot");
        // A second after quiet's last request heavy may take the whole gateway again, with no
        // slot given back meanwhile.
        tokio::time::advance(ACTIVE_FOR + RECHECK).await;
        let third = third
            .await
            .unwrap()
            .expect("heavy's third request is served");
        assert_eq!(g.lock().in_flight, 3);
        drop((heavy, third));
        assert_eq!(g.lock().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shares_follow_the_weights() {
        let metrics = Metrics::default();
        let g = gate_waiting(8, Duration::from_secs(5));
        drop(g.acquire("light", 1, &metrics).await.unwrap());
        // Weight 3 of 4: six of the eight slots.
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(g.acquire("big", 3, &metrics).await.unwrap());
        }
        let seventh = waiter(&g, "big", 3);
        settle().await;
        assert!(!seventh.is_finished());
        let light = [
            g.acquire("light", 1, &metrics).await.unwrap(),
            g.acquire("light", 1, &metrics).await.unwrap(),
        ];
        // light's share is two: a third waits, and the slot freed by `big` goes to big's
        // waiter, the only one within its share.
        let light_third = waiter(&g, "light", 1);
        settle().await;
        assert!(!light_third.is_finished());
        held.pop();
        assert!(seventh.await.unwrap().is_some());
        drop(light);
        assert!(light_third.await.unwrap().is_some());
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
