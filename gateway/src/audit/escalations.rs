//! The tally of escalations against abusive callers, for the audit log: per listener, the
//! connections slowed and closed for their refusals (`crate::abuse`) and the new connections
//! refused over a source's or an identity's connection rate (`crate::connections`), counted
//! over the refusal summaries' interval and written as one `abuse_summary` record. The
//! listeners' counts are exact; the callers are tracked up to [`MAX_CALLERS`] per interval and
//! at most [`MAX_LISTED`] of each kind are named per listener, so a flood from many addresses
//! costs bounded memory and a bounded record.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use portcullis_audit::{AbuseCaller, AbuseSummary, ListenerAbuse};

/// Sources and identities tracked per interval, all listeners together; events of further
/// callers are counted in their listener's totals only.
const MAX_CALLERS: usize = 10_000;
/// Sources, and identities, named per listener in a summary, most events first.
const MAX_LISTED: usize = 20;

/// What happened to an abusive caller's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escalated {
    /// A refusal answered late; `first` when it is the connection's first.
    Delayed { first: bool },
    /// The connection ended after a refusal.
    Closed,
    /// A new connection refused at accept over its source's rate.
    SourceRate,
    /// A new connection refused after the handshake over its identity's rate.
    IdentityRate,
}

/// Who an escalation was against: the connection's listener, client address and identity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offender<'a> {
    pub listener: &'a str,
    pub source: Option<IpAddr>,
    pub identity: Option<&'a str>,
}

/// The current interval's tallies.
#[derive(Debug)]
pub(crate) struct EscalationTally {
    window: Mutex<Window>,
}

/// One interval's tallies.
#[derive(Debug)]
pub(crate) struct Window {
    since: SystemTime,
    listeners: HashMap<String, Listener>,
    /// Callers tracked, all listeners together (bounded by [`MAX_CALLERS`]).
    tracked: usize,
}

#[derive(Debug, Default)]
struct Listener {
    slowed: u64,
    delayed: u64,
    closed: u64,
    source_rate: u64,
    identity_rate: u64,
    sources: HashMap<IpAddr, Share>,
    identities: HashMap<String, Share>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Share {
    slowed: u64,
    closed: u64,
    refused: u64,
}

impl Share {
    fn add(&mut self, other: Share) {
        self.slowed += other.slowed;
        self.closed += other.closed;
        self.refused += other.refused;
    }

    fn events(&self) -> u64 {
        self.slowed + self.closed + self.refused
    }
}

fn lock(m: &Mutex<Window>) -> MutexGuard<'_, Window> {
    // Plain counters: a panic elsewhere while holding the lock leaves nothing half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EscalationTally {
    pub(crate) fn new(now: SystemTime) -> Self {
        Self {
            window: Mutex::new(Window::new(now)),
        }
    }

    /// Counts one escalation against `offender`.
    pub(crate) fn note(&self, offender: Offender<'_>, what: Escalated) {
        let share = match what {
            Escalated::Delayed { first: false } => Share::default(),
            Escalated::Delayed { first: true } => Share {
                slowed: 1,
                ..Share::default()
            },
            Escalated::Closed => Share {
                closed: 1,
                ..Share::default()
            },
            Escalated::SourceRate | Escalated::IdentityRate => Share {
                refused: 1,
                ..Share::default()
            },
        };
        let mut window = lock(&self.window);
        let listener = window.listener(offender.listener);
        match what {
            Escalated::Delayed { first } => {
                listener.delayed += 1;
                listener.slowed += u64::from(first);
            }
            Escalated::Closed => listener.closed += 1,
            Escalated::SourceRate => listener.source_rate += 1,
            Escalated::IdentityRate => listener.identity_rate += 1,
        }
        if share.events() == 0 {
            return;
        }
        if let Some(source) = offender.source {
            window.share_of_source(offender.listener, source, share);
        }
        if let Some(identity) = offender.identity {
            window.share_of_identity(offender.listener, identity, share);
        }
    }

    /// Ends the interval: returns its tallies and starts the next one at `now`.
    pub(crate) fn roll(&self, now: SystemTime) -> Window {
        std::mem::replace(&mut *lock(&self.window), Window::new(now))
    }

    /// Puts back the tallies of an interval whose summary could not be written, so that they
    /// go out with the next one.
    pub(crate) fn restore(&self, old: Window) {
        let mut window = lock(&self.window);
        window.since = window.since.min(old.since);
        for (name, l) in old.listeners {
            let into = window.listener(&name);
            into.slowed += l.slowed;
            into.delayed += l.delayed;
            into.closed += l.closed;
            into.source_rate += l.source_rate;
            into.identity_rate += l.identity_rate;
            for (source, share) in l.sources {
                window.share_of_source(&name, source, share);
            }
            for (identity, share) in l.identities {
                window.share_of_identity(&name, &identity, share);
            }
        }
    }
}

impl Window {
    fn new(since: SystemTime) -> Self {
        Self {
            since,
            listeners: HashMap::new(),
            tracked: 0,
        }
    }

    fn listener(&mut self, name: &str) -> &mut Listener {
        // Listeners are few and fixed at start: no bound needed.
        self.listeners.entry(name.to_owned()).or_default()
    }

    fn share_of_source(&mut self, listener: &str, source: IpAddr, share: Share) {
        let room = self.tracked < MAX_CALLERS;
        let sources = &mut self.listener(listener).sources;
        let added = match sources.get_mut(&source) {
            Some(s) => {
                s.add(share);
                false
            }
            None if room => {
                sources.insert(source, share);
                true
            }
            None => false,
        };
        self.tracked += usize::from(added);
    }

    fn share_of_identity(&mut self, listener: &str, identity: &str, share: Share) {
        let room = self.tracked < MAX_CALLERS;
        let identities = &mut self.listener(listener).identities;
        let added = match identities.get_mut(identity) {
            Some(s) => {
                s.add(share);
                false
            }
            None if room => {
                identities.insert(identity.to_owned(), share);
                true
            }
            None => false,
        };
        self.tracked += usize::from(added);
    }

    /// The interval's summary record, if anything happened.
    pub(crate) fn summary(&self) -> Option<AbuseSummary> {
        let mut listeners: Vec<ListenerAbuse> = self
            .listeners
            .iter()
            .map(|(name, l)| ListenerAbuse {
                listener: name.clone(),
                slowed: l.slowed,
                delayed: l.delayed,
                closed: l.closed,
                source_rate: l.source_rate,
                identity_rate: l.identity_rate,
                // As a request record names the source.
                sources: top(l.sources.iter().map(|(ip, s)| (ip.to_string(), *s))),
                identities: top(l.identities.iter().map(|(id, s)| (id.clone(), *s))),
            })
            .collect();
        if listeners.is_empty() {
            return None;
        }
        listeners.sort_unstable_by(|a, b| a.listener.cmp(&b.listener));
        Some(AbuseSummary {
            since: humantime::format_rfc3339_micros(self.since).to_string(),
            listeners,
        })
    }
}

/// The callers with the most events, most first (then by name), at most [`MAX_LISTED`].
fn top(callers: impl Iterator<Item = (String, Share)>) -> Vec<AbuseCaller> {
    let mut all: Vec<(String, Share)> = callers.collect();
    all.sort_unstable_by(|a, b| b.1.events().cmp(&a.1.events()).then(a.0.cmp(&b.0)));
    all.truncate(MAX_LISTED);
    all.into_iter()
        .map(|(caller, s)| AbuseCaller {
            caller,
            slowed: s.slowed,
            closed: s.closed,
            refused: s.refused,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn from(listener: &str, n: u32, identity: Option<&'static str>) -> Offender<'static> {
        Offender {
            listener: if listener == "public" {
                "public"
            } else {
                "internal"
            },
            source: Some(ip(n)),
            identity,
        }
    }

    #[test]
    fn nothing_happened_no_summary() {
        let tally = EscalationTally::new(SystemTime::UNIX_EPOCH);
        assert!(tally.roll(SystemTime::UNIX_EPOCH).summary().is_none());
    }

    #[test]
    fn each_listener_is_counted_and_its_callers_named_most_first() {
        let tally = EscalationTally::new(SystemTime::UNIX_EPOCH);
        let abuser = from("public", 1, Some("spiffe://td/a"));
        tally.note(abuser, Escalated::Delayed { first: true });
        tally.note(abuser, Escalated::Delayed { first: false });
        tally.note(abuser, Escalated::Closed);
        for _ in 0..3 {
            tally.note(from("public", 2, None), Escalated::SourceRate);
        }
        tally.note(
            from("internal", 1, Some("spiffe://td/b")),
            Escalated::IdentityRate,
        );
        let s = tally.roll(SystemTime::UNIX_EPOCH).summary().unwrap();
        assert_eq!(s.since, "1970-01-01T00:00:00.000000Z");
        let names: Vec<&str> = s.listeners.iter().map(|l| l.listener.as_str()).collect();
        assert_eq!(names, ["internal", "public"]);
        let (internal, public) = (&s.listeners[0], &s.listeners[1]);
        assert_eq!(
            (
                public.slowed,
                public.delayed,
                public.closed,
                public.source_rate,
                public.identity_rate
            ),
            (1, 2, 1, 3, 0)
        );
        let sources: Vec<(&str, u64, u64, u64)> = public
            .sources
            .iter()
            .map(|c| (c.caller.as_str(), c.slowed, c.closed, c.refused))
            .collect();
        assert_eq!(sources, [("10.0.0.2", 0, 0, 3), ("10.0.0.1", 1, 1, 0)]);
        assert_eq!(public.identities.len(), 1);
        assert_eq!(public.identities[0].caller, "spiffe://td/a");
        assert_eq!(internal.identity_rate, 1);
        assert_eq!(internal.identities[0].refused, 1);
        assert_eq!(internal.sources[0].refused, 1);
    }

    #[test]
    fn callers_are_bounded_and_the_counts_stay_exact() {
        let tally = EscalationTally::new(SystemTime::UNIX_EPOCH);
        let sources = (MAX_CALLERS + 500) as u32;
        for n in 0..sources {
            tally.note(from("public", n, None), Escalated::SourceRate);
        }
        tally.note(from("public", 7, None), Escalated::SourceRate);
        let window = tally.roll(SystemTime::UNIX_EPOCH);
        assert_eq!(window.tracked, MAX_CALLERS);
        let s = window.summary().unwrap();
        let public = &s.listeners[0];
        assert_eq!(public.source_rate, u64::from(sources) + 1);
        assert_eq!(public.sources.len(), MAX_LISTED);
        assert_eq!(
            (public.sources[0].caller.as_str(), public.sources[0].refused),
            ("10.0.0.7", 2)
        );
        // A summary that could not be written is put back whole.
        tally.restore(window);
        tally.note(from("public", 7, None), Escalated::Closed);
        let again = tally.roll(SystemTime::UNIX_EPOCH).summary().unwrap();
        assert_eq!(again.listeners[0].source_rate, public.source_rate);
        assert_eq!(again.listeners[0].closed, 1);
        assert_eq!(again.listeners[0].sources[0].refused, 2);
    }
}
