//! The three ways of driving load — keep-alive at fixed concurrency, one new connection per
//! request, open-loop at a constant rate — and holding idle connections for memory figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::report::Tally;
use crate::target::{Connector, Failure, Sender};

/// How requests are issued.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Each worker keeps one connection (or one HTTP/2 stream slot) and sends back to back.
    KeepAlive,
    /// Each request opens a new connection: TCP, full TLS handshake, one request, close.
    NewConnection,
    /// Requests are scheduled on a clock at this many per second, regardless of responses.
    Rate(f64),
}

impl Mode {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::KeepAlive => "keep-alive",
            Self::NewConnection => "new connection per request",
            Self::Rate(_) => "open-loop",
        }
    }
}

/// The run's bounds and shape.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) mode: Mode,
    /// Connections (keep-alive, open-loop) or concurrent connects (new connection per request).
    pub(crate) connections: usize,
    /// HTTP/2 only: workers sharing each keep-alive connection.
    pub(crate) streams: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    /// Stop after this many requests (counted from the start, warm-up included).
    pub(crate) requests: Option<u64>,
    pub(crate) timeout: Duration,
}

/// Hands out request tickets; the only state the workers share.
struct Clock {
    start: Instant,
    measure_from: Instant,
    deadline: Instant,
    next: AtomicU64,
    limit: Option<u64>,
    interval_ns: Option<f64>,
}

impl Clock {
    fn new(plan: &Plan) -> Self {
        let start = Instant::now();
        let measure_from = start + plan.warmup;
        Self {
            start,
            measure_from,
            deadline: measure_from + plan.duration,
            next: AtomicU64::new(0),
            limit: plan.requests,
            interval_ns: match plan.mode {
                Mode::Rate(r) => Some(1e9 / r),
                _ => None,
            },
        }
    }

    /// The next request to send: `Some(scheduled time)` in open-loop mode, `Some(None)` for
    /// "now" otherwise, `None` when the run is over.
    fn claim(&self) -> Option<Option<Instant>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.limit.is_some_and(|limit| i >= limit) {
            return None;
        }
        match self.interval_ns {
            Some(ns) => {
                let at = self.start + Duration::from_nanos((i as f64 * ns) as u64);
                (at < self.deadline).then_some(Some(at))
            }
            None => (Instant::now() < self.deadline).then_some(None),
        }
    }

    /// Whether a request belongs to the measured window (started after warm-up, done in time).
    fn counts(&self, started: Instant, done: Instant) -> bool {
        started >= self.measure_from && done <= self.deadline
    }

    fn counts_failure(&self, started: Instant) -> bool {
        started >= self.measure_from && started < self.deadline
    }

    /// The measured window actually covered (shorter when a request bound ended the run).
    /// An open-loop run without a request bound covers its whole window even though its last
    /// response may arrive before the deadline.
    fn measured(&self, end: Instant) -> Duration {
        let end = if self.interval_ns.is_some() && self.limit.is_none() {
            self.deadline
        } else {
            end.min(self.deadline)
        };
        end.saturating_duration_since(self.measure_from)
    }
}

/// Runs the plan and returns the merged tally and the measured duration.
pub(crate) async fn run(connector: Arc<Connector>, plan: &Plan) -> (Tally, Duration) {
    let mut workers = JoinSet::new();
    // Keep-alive connections are opened before the clock starts, so set-up is not measured.
    let mut senders: Vec<Option<Sender>> = Vec::new();
    if !matches!(plan.mode, Mode::NewConnection) {
        let mut opening = JoinSet::new();
        let gate = Arc::new(Semaphore::new(64));
        for _ in 0..plan.connections {
            let c = Arc::clone(&connector);
            let gate = Arc::clone(&gate);
            opening.spawn(async move {
                let _permit = gate.acquire_owned().await;
                c.connect().await.ok()
            });
        }
        while let Some(res) = opening.join_next().await {
            senders.push(res.ok().flatten());
        }
    }
    let clock = Arc::new(Clock::new(plan));
    match plan.mode {
        Mode::NewConnection => {
            for _ in 0..plan.connections {
                workers.spawn(new_connection_worker(
                    Arc::clone(&connector),
                    Arc::clone(&clock),
                    plan.timeout,
                ));
            }
        }
        Mode::KeepAlive | Mode::Rate(_) => {
            for sender in senders {
                for _ in 1..plan.streams {
                    let shared = sender.as_ref().and_then(Sender::share);
                    workers.spawn(keep_alive_worker(
                        Arc::clone(&connector),
                        Arc::clone(&clock),
                        shared,
                        plan.timeout,
                    ));
                }
                workers.spawn(keep_alive_worker(
                    Arc::clone(&connector),
                    Arc::clone(&clock),
                    sender,
                    plan.timeout,
                ));
            }
        }
    }
    let mut total = Tally::new();
    while let Some(res) = workers.join_next().await {
        if let Ok(tally) = res {
            total.merge(&tally);
        }
    }
    (total, clock.measured(Instant::now()))
}

async fn keep_alive_worker(
    connector: Arc<Connector>,
    clock: Arc<Clock>,
    mut sender: Option<Sender>,
    timeout: Duration,
) -> Tally {
    let mut tally = Tally::new();
    while let Some(scheduled) = clock.claim() {
        if let Some(at) = scheduled {
            wait_until(at).await;
        }
        let started = scheduled.unwrap_or_else(Instant::now);
        let attempt = async {
            let mut s = match sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => connector.connect().await?,
            };
            let result = exchange(&connector, &mut s).await;
            // A status error leaves the connection usable; anything else drops it.
            if matches!(result, Ok(_) | Err(Failure::Status(_))) {
                sender = Some(s);
            }
            result
        };
        let result = tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(Failure::Timeout));
        let done = Instant::now();
        match result {
            Ok(bytes) if clock.counts(started, done) => tally.success(done - started, bytes),
            Ok(_) => {}
            Err(failure) => {
                if clock.counts_failure(started) {
                    tally.failure(failure);
                }
                if matches!(failure, Failure::Connect | Failure::Tls) {
                    // Do not spin on a target that refuses connections.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    tally
}

async fn new_connection_worker(
    connector: Arc<Connector>,
    clock: Arc<Clock>,
    timeout: Duration,
) -> Tally {
    let mut tally = Tally::new();
    while clock.claim().is_some() {
        let started = Instant::now();
        let attempt = async {
            let mut s = connector.connect().await?;
            exchange(&connector, &mut s).await
            // `s` drops here: the connection's driver sees no more senders and closes it.
        };
        let result = tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(Failure::Timeout));
        let done = Instant::now();
        match result {
            Ok(bytes) if clock.counts(started, done) => tally.success(done - started, bytes),
            Ok(_) => {}
            Err(failure) => {
                if clock.counts_failure(started) {
                    tally.failure(failure);
                }
                if matches!(failure, Failure::Connect | Failure::Tls) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    tally
}

/// One request and its whole response body; returns the body's size.
async fn exchange(connector: &Connector, sender: &mut Sender) -> Result<u64, Failure> {
    let response = sender.send(connector.request()).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::Body)?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
        }
    }
    if status.is_success() || connector.expect_status == Some(status.as_u16()) {
        Ok(bytes)
    } else {
        Err(Failure::Status(status.as_u16()))
    }
}

/// Sleeps until shortly before `at` on tokio's millisecond timer, then yields until `at`, so
/// the send time is accurate to microseconds rather than to the timer's tick.
async fn wait_until(at: Instant) {
    const SPIN: Duration = Duration::from_millis(3);
    if let Some(early) = at.checked_sub(SPIN) {
        if early > Instant::now() {
            tokio::time::sleep_until(early.into()).await;
        }
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// What holding idle connections achieved.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Held {
    pub(crate) held: usize,
    pub(crate) failed: usize,
    pub(crate) errors: BTreeMap<String, u64>,
}

/// Opens `count` connections (at most `parallel` handshakes at a time), sends one request on
/// each, and returns them open and idle.
pub(crate) async fn open_idle(
    connector: Arc<Connector>,
    count: usize,
    parallel: usize,
    timeout: Duration,
) -> (Vec<Sender>, Held) {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut opening = JoinSet::new();
    for _ in 0..count {
        let c = Arc::clone(&connector);
        let gate = Arc::clone(&gate);
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let attempt = async {
                let mut s = c.connect().await?;
                exchange(&c, &mut s).await?;
                Ok(s)
            };
            tokio::time::timeout(timeout, attempt)
                .await
                .unwrap_or(Err(Failure::Timeout))
        });
    }
    let mut senders = Vec::with_capacity(count);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(res) = opening.join_next().await {
        match res {
            Ok(Ok(s)) => senders.push(s),
            Ok(Err(f)) => *errors.entry(f.to_string()).or_default() += 1,
            Err(_) => *errors.entry("task".to_owned()).or_default() += 1,
        }
    }
    let held = Held {
        held: senders.len(),
        failed: count - senders.len(),
        errors,
    };
    (senders, held)
}
