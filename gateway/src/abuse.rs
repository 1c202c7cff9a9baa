//! Callers who keep being refused: a connection's refusals are counted in a window; past
//! `slow_after` each further refusal is answered late (the connection, not the gateway, waits),
//! and at `close_after` the connection is ended (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY).
//! New connections per source and per identity are bounded in `connections.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use portcullis_policy::AbuseLimits;

/// A listener's abuse settings, shared by its connections.
#[derive(Debug)]
pub(crate) struct AbusePolicy {
    pub listener: String,
    pub limits: AbuseLimits,
}

/// What a refusal does to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escalation {
    None,
    /// Answer after this delay.
    Slow(Duration),
    /// Answer, then end the connection.
    Close,
}

/// One connection's refusals in the current window, and whether it was ever slowed.
#[derive(Debug)]
pub(crate) struct RefusalWindow(Mutex<(Instant, u32)>, AtomicBool);

impl RefusalWindow {
    pub(crate) fn new() -> Self {
        Self(Mutex::new((Instant::now(), 0)), AtomicBool::new(false))
    }

    /// Marks the connection slowed; true the first time (the audit summary counts connections
    /// slowed, the metric each late answer).
    pub(crate) fn first_slowed(&self) -> bool {
        !self.1.swap(true, Ordering::Relaxed)
    }

    /// Counts a refusal made at `now` and says what it does to the connection.
    pub(crate) fn refused(&self, limits: &AbuseLimits, now: Instant) -> Escalation {
        let mut w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(w.0) >= limits.window {
            *w = (now, 0);
        }
        w.1 = w.1.saturating_add(1);
        if w.1 >= limits.close_after {
            Escalation::Close
        } else if w.1 > limits.slow_after {
            Escalation::Slow(limits.delay)
        } else {
            Escalation::None
        }
    }
}

/// `delay` spread over half to one and a half times itself (the clock's nanoseconds pick
/// where), so that a flood's connections, slowed alike, are not answered all at once and do
/// not come back in step.
pub(crate) fn spread(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    delay / 2 + delay.mul_f64(f64::from(nanos % 1024) / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AbuseLimits {
        AbuseLimits {
            slow_after: 2,
            close_after: 4,
            window: Duration::from_secs(10),
            delay: Duration::from_millis(100),
            ..AbuseLimits::DEFAULT
        }
    }

    #[test]
    fn late_answers_are_spread_around_the_delay() {
        let d = Duration::from_millis(250);
        let seen: Vec<Duration> = (0..1000).map(|_| spread(d)).collect();
        assert!(
            seen.iter().all(|s| *s >= d / 2 && *s < d * 3 / 2),
            "{seen:?}"
        );
        let (min, max) = (seen.iter().min().unwrap(), seen.iter().max().unwrap());
        assert!(*max - *min > d / 4, "not spread: {min:?}..{max:?}");
    }

    #[test]
    fn refusals_are_answered_then_slowed_then_closed_within_a_window() {
        let (w, l, t) = (RefusalWindow::new(), limits(), Instant::now());
        let seen: Vec<_> = (0..5).map(|_| w.refused(&l, t)).collect();
        let slow = Escalation::Slow(Duration::from_millis(100));
        assert_eq!(
            seen,
            [
                Escalation::None,
                Escalation::None,
                slow,
                Escalation::Close,
                Escalation::Close
            ]
        );
    }

    #[test]
    fn a_new_window_starts_the_count_again() {
        let (w, l, t) = (RefusalWindow::new(), limits(), Instant::now());
        for _ in 0..3 {
            w.refused(&l, t);
        }
        assert_eq!(w.refused(&l, t + Duration::from_secs(11)), Escalation::None);
    }

    #[test]
    fn a_connection_is_first_slowed_once() {
        let w = RefusalWindow::new();
        assert!(w.first_slowed());
        assert!(!w.first_slowed());
    }
}
