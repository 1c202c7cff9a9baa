//! The budget of detailed audit records for requests refused before admission: per source
//! (the client address as the gateway resolved it), `per_source` records per interval. Beyond
//! it a refusal is only counted, and the interval's counts go into one `refusals_suppressed`
//! record, so that a client looping refused requests can neither fill the log nor go
//! unrecorded. A fixed window per interval: memory is bounded by [`MAX_SOURCES`] whatever the
//! number of addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use portcullis_audit::{SuppressedRefusals, SuppressedSource};

/// Sources tracked per interval; further sources share one budget and one count.
const MAX_SOURCES: usize = 10_000;
/// Sources named in a summary record, most suppressed first; the rest are counted as
/// `unlisted`.
const MAX_LISTED: usize = 100;

/// Detailed refusal records left per source in the current interval.
pub(crate) struct RefusalBudget {
    per_source: u32,
    window: Mutex<Window>,
    /// Refusal records suppressed since start (for the metric).
    suppressed: AtomicU64,
}

/// One interval's tallies.
#[derive(Debug)]
pub(crate) struct Window {
    since: SystemTime,
    sources: HashMap<Option<IpAddr>, Tally>,
    /// The sources beyond [`MAX_SOURCES`], together.
    others: Tally,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    detailed: u32,
    suppressed: u64,
}

fn lock(m: &Mutex<Window>) -> MutexGuard<'_, Window> {
    // Plain counters: a panic elsewhere while holding the lock leaves nothing half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RefusalBudget {
    pub(crate) fn new(per_source: u32, now: SystemTime) -> Self {
        Self {
            per_source,
            window: Mutex::new(Window::new(now)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a refusal from `source` may be recorded in detail; if not, it is counted for
    /// the interval's summary.
    pub(crate) fn detail(&self, source: Option<IpAddr>) -> bool {
        let mut window = lock(&self.window);
        let tally = window.tally(source);
        if tally.detailed < self.per_source {
            tally.detailed += 1;
            return true;
        }
        tally.suppressed += 1;
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Ends the interval: returns its tallies and starts the next one at `now`.
    pub(crate) fn roll(&self, now: SystemTime) -> Window {
        std::mem::replace(&mut *lock(&self.window), Window::new(now))
    }

    /// Puts back the suppressed counts of an interval whose summary could not be written, so
    /// that they go out with the next one.
    pub(crate) fn restore(&self, old: Window) {
        let mut window = lock(&self.window);
        window.since = window.since.min(old.since);
        for (source, t) in old.sources {
            if t.suppressed > 0 {
                window.tally(source).suppressed += t.suppressed;
            }
        }
        window.others.suppressed += old.others.suppressed;
    }

    /// Refusal records suppressed since start.
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

impl Window {
    fn new(since: SystemTime) -> Self {
        Self {
            since,
            sources: HashMap::new(),
            others: Tally::default(),
        }
    }

    fn tally(&mut self, source: Option<IpAddr>) -> &mut Tally {
        if self.sources.len() < MAX_SOURCES || self.sources.contains_key(&source) {
            self.sources.entry(source).or_default()
        } else {
            &mut self.others
        }
    }

    /// The interval's summary record, if anything was suppressed.
    pub(crate) fn summary(&self) -> Option<SuppressedRefusals> {
        let mut counted: Vec<(Option<IpAddr>, u64)> = self
            .sources
            .iter()
            .filter(|(_, t)| t.suppressed > 0)
            .map(|(source, t)| (*source, t.suppressed))
            .collect();
        let suppressed = counted.iter().map(|(_, n)| n).sum::<u64>() + self.others.suppressed;
        if suppressed == 0 {
            return None;
        }
        counted.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counted.truncate(MAX_LISTED);
        let listed: u64 = counted.iter().map(|(_, n)| n).sum();
        Some(SuppressedRefusals {
            since: humantime::format_rfc3339_micros(self.since).to_string(),
            sources: counted
                .into_iter()
                .map(|(source, suppressed)| SuppressedSource {
                    // As a request record names it.
                    source: source.map(|ip| ip.to_string()).unwrap_or_default(),
                    suppressed,
                })
                .collect(),
            unlisted: suppressed - listed,
            suppressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[test]
    fn each_source_gets_its_budget_and_the_rest_is_counted() {
        let budget = RefusalBudget::new(3, SystemTime::UNIX_EPOCH);
        let detailed = (0..10).filter(|_| budget.detail(ip(1))).count();
        assert_eq!(detailed, 3);
        assert!(budget.detail(ip(2)), "another source has its own budget");
        assert_eq!(budget.suppressed(), 7);
        let window = budget.roll(SystemTime::UNIX_EPOCH);
        let s = window.summary().unwrap();
        assert_eq!(s.since, "1970-01-01T00:00:00.000000Z");
        assert_eq!(s.suppressed, 7);
        assert_eq!(s.unlisted, 0);
        assert_eq!(s.sources.len(), 1);
        assert_eq!(
            (s.sources[0].source.as_str(), s.sources[0].suppressed),
            ("10.0.0.1", 7)
        );
        // A new interval, a new budget; nothing suppressed, no summary.
        assert!(budget.detail(ip(1)));
        assert!(budget.roll(SystemTime::UNIX_EPOCH).summary().is_none());
    }

    #[test]
    fn sources_are_bounded_and_no_count_is_lost() {
        let budget = RefusalBudget::new(1, SystemTime::UNIX_EPOCH);
        // Two refusals from each of more sources than are tracked.
        let sources = (MAX_SOURCES + 500) as u32;
        for n in 0..sources {
            budget.detail(ip(n));
            budget.detail(ip(n));
        }
        let window = budget.roll(SystemTime::UNIX_EPOCH);
        assert!(window.sources.len() <= MAX_SOURCES);
        let s = window.summary().unwrap();
        // The untracked sources shared one budget: one detailed record among them.
        assert_eq!(s.suppressed, u64::from(sources) + 500 - 1);
        assert_eq!(s.sources.len(), MAX_LISTED);
        let listed: u64 = s.sources.iter().map(|x| x.suppressed).sum();
        assert_eq!(listed + s.unlisted, s.suppressed);
        assert!(s
            .sources
            .windows(2)
            .all(|w| w[0].suppressed >= w[1].suppressed));
        // A summary that could not be written is put back whole.
        budget.restore(window);
        let again = budget.roll(SystemTime::UNIX_EPOCH).summary().unwrap();
        assert_eq!(again.suppressed, s.suppressed);
    }
}
