//! Bounded connections of the admin listener, so that connections which send nothing cannot
//! crowd out issuance, renewal and revocation:
//!
//! - at accept, before any TLS: the total and per-source caps ([`ConnectionCounts`]; over
//!   either, the socket is closed at once);
//! - the TLS handshake within `handshake_timeout`;
//! - after it, the class: with a verified client certificate the connection is `certified`,
//!   else `unauthenticated`, of which at most `max_unauthenticated_connections` stay open — so
//!   the rest of `max_connections` is kept for certified clients (handshakes draw from the
//!   total only: who is certified is known only once they end);
//! - a first complete request head (HTTP/1 head, HTTP/2 HEADERS; protocol detection included)
//!   within `first_request_timeout` of the handshake, and then no longer than `idle_timeout`
//!   without a request in progress ([`Activity`]: hyper calls the service once a head is
//!   complete, so the deadlines hold for both protocols and however slowly bytes trickle).
//!
//! At shutdown, a connection accepted before it still gets its first request served: its
//! handshake finishes, and its first request head gets [`FIRST_REQUEST_AT_SHUTDOWN`] to arrive.
//! Under systemd (`portcullis-admin.socket`) that is what makes `systemctl restart` fail no
//! call: connections not yet accepted wait in systemd's socket for the next process, and those
//! accepted are answered by this one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portcullis_identity::canonical_ip;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::config::ConnectionsConfig;
use crate::identity::{ConnInfo, PeerIdentity};
use crate::limits::LogBudget;
use crate::stats::{CloseReason, ConnClass, IssuanceStats};

/// How long open connections get to finish after shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a connection accepted before shutdown waits for its first request head after it:
/// a client that has just connected sends it at once.
const FIRST_REQUEST_AT_SHUTDOWN: Duration = Duration::from_secs(1);
/// How long a connection closed for being idle gets to say goodbye (HTTP/2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Open connections of the listener: in all, without a certificate, and per source address.
#[derive(Debug)]
pub(crate) struct ConnectionCounts {
    max_total: u32,
    max_unauthenticated: u32,
    max_per_source: u32,
    open: Mutex<Open>,
    stats: Arc<IssuanceStats>,
}

#[derive(Debug, Default)]
struct Open {
    total: u32,
    unauthenticated: u32,
    per_source: HashMap<IpAddr, u32>,
}

impl ConnectionCounts {
    pub(crate) fn new(config: &ConnectionsConfig, stats: Arc<IssuanceStats>) -> Arc<Self> {
        Arc::new(Self {
            max_total: config.max_connections,
            max_unauthenticated: config.max_unauthenticated_connections,
            max_per_source: config.max_connections_per_source,
            open: Mutex::new(Open::default()),
            stats,
        })
    }

    /// A slot for a new connection from `source`, held for the connection's life; it starts as
    /// a handshake.
    pub(crate) fn admit(self: &Arc<Self>, source: IpAddr) -> Result<ConnectionSlot, CloseReason> {
        let source = canonical_ip(source);
        // A panic while holding the lock cannot leave the counts half-updated.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.max_total {
            return Err(CloseReason::TotalCap);
        }
        let from_source = open.per_source.entry(source).or_insert(0);
        if *from_source >= self.max_per_source {
            return Err(CloseReason::SourceCap);
        }
        *from_source += 1;
        open.total += 1;
        self.stats.opened(ConnClass::Handshaking);
        Ok(ConnectionSlot {
            counts: Arc::clone(self),
            source,
            class: ConnClass::Handshaking,
        })
    }
}

/// One open connection's place in the counts; freed on drop.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    source: IpAddr,
    class: ConnClass,
}

impl ConnectionSlot {
    /// After the handshake: certified, or unauthenticated if there is room for one more.
    pub(crate) fn classify(&mut self, certified: bool) -> Result<(), CloseReason> {
        let counts = &self.counts;
        let class = if certified {
            ConnClass::Certified
        } else {
            let mut open = counts.open.lock().unwrap_or_else(PoisonError::into_inner);
            if open.unauthenticated >= counts.max_unauthenticated {
                return Err(CloseReason::UnauthenticatedCap);
            }
            open.unauthenticated += 1;
            ConnClass::Unauthenticated
        };
        counts.stats.left(self.class);
        counts.stats.opened(class);
        self.class = class;
        Ok(())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let counts = &self.counts;
        let mut open = counts.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if self.class == ConnClass::Unauthenticated {
            open.unauthenticated = open.unauthenticated.saturating_sub(1);
        }
        if let Some(n) = open.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_source.remove(&self.source);
            }
        }
        counts.stats.left(self.class);
    }
}

/// Requests on one connection: whether one has begun, how many are in progress, when the last
/// ended — what its first-request and idle deadlines are timed from.
#[derive(Debug)]
struct Activity {
    since: Instant,
    begun: AtomicBool,
    /// Wakes the watchdog from the first-request deadline when the first request begins.
    first_begun: Notify,
    in_progress: AtomicU32,
    /// When the last request ended, in nanoseconds after `since`.
    last_end: AtomicU64,
}

/// A request in progress; its end is recorded on drop (response produced, or stream reset).
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            since: Instant::now(),
            begun: AtomicBool::new(false),
            first_begun: Notify::new(),
            in_progress: AtomicU32::new(0),
            last_end: AtomicU64::new(0),
        })
    }

    /// Resolves once the first request head is complete. Only waited on at shutdown: it looks
    /// every few milliseconds rather than take `first_begun`'s one wake-up from the watchdog.
    async fn first_request(&self) {
        while !self.begun.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn request(self: &Arc<Self>) -> Busy {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        if !self.begun.swap(true, Ordering::AcqRel) {
            self.first_begun.notify_one();
        }
        Busy(Arc::clone(self))
    }

    /// Resolves when the connection has gone `first` without a request head, or `idle`
    /// without a request in progress.
    async fn expired(&self, first: Duration, idle: Duration) -> CloseReason {
        loop {
            let begun = self.begun.load(Ordering::Acquire);
            let deadline = if !begun {
                self.since + first
            } else if self.in_progress.load(Ordering::Acquire) > 0 {
                // Not idle: look again later (request bodies have their own deadline).
                Instant::now() + idle
            } else {
                self.since + Duration::from_nanos(self.last_end.load(Ordering::Acquire)) + idle
            };
            if Instant::now() >= deadline {
                return if begun {
                    CloseReason::IdleTimeout
                } else {
                    CloseReason::FirstRequestTimeout
                };
            }
            if begun {
                // A request that ends meanwhile moves the deadline later: looked at on waking.
                sleep_until(deadline).await;
            } else {
                tokio::select! {
                    () = sleep_until(deadline) => {}
                    () = self.first_begun.notified() => {}
                }
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ended = u64::try_from(self.0.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.last_end.fetch_max(ended, Ordering::AcqRel);
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every connection of the listener shares.
pub(crate) struct Connections {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) router: Router,
    pub(crate) config: ConnectionsConfig,
    pub(crate) counts: Arc<ConnectionCounts>,
    pub(crate) stats: Arc<IssuanceStats>,
    /// Refusals at the caps and failed handshakes are logged at info within this budget.
    pub(crate) log: LogBudget,
}

impl Connections {
    /// A slot for a connection just accepted from `remote`, or None (counted and logged) when
    /// it is over a cap and must be closed.
    pub(crate) fn admit(&self, remote: SocketAddr) -> Option<ConnectionSlot> {
        self.counts
            .admit(remote.ip())
            .map_err(|reason| self.refused(remote, reason))
            .ok()
    }

    fn refused(&self, remote: SocketAddr, reason: CloseReason) {
        self.stats.closed(reason);
        if let Some(suppressed) = self.log.allow() {
            tracing::info!(client.addr = %remote, reason = reason.as_str(), log.suppressed = suppressed, "admin API: connection refused");
        }
    }

    fn timed_out(&self, remote: SocketAddr, reason: CloseReason) {
        self.stats.closed(reason);
        tracing::debug!(client.addr = %remote, reason = reason.as_str(), "admin API: connection closed");
    }

    /// Serves one accepted connection within its deadlines, until it ends or `shutdown`
    /// changes (then the requests in progress get [`SHUTDOWN_GRACE`] to finish).
    pub(crate) async fn serve(
        &self,
        mut slot: ConnectionSlot,
        tcp: tokio::net::TcpStream,
        remote: SocketAddr,
        mut shutdown: watch::Receiver<()>,
    ) {
        // Handshake flights and answers are small and complete: sent at once, not held back
        // by Nagle against the client's delayed ACK (40 ms per new connection otherwise).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(client.addr = %remote, error = %e, "admin API: TCP_NODELAY");
        }
        // Not cut short by shutdown: the client connected before it and is owed an answer
        // (the handshake has its own deadline, and `run` its own end).
        let tls = match timeout(self.config.handshake_timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // Refused certificates among them: at info, within the log budget.
                self.stats.closed(CloseReason::HandshakeFailed);
                if let Some(suppressed) = self.log.allow() {
                    tracing::info!(client.addr = %remote, error = %e, log.suppressed = suppressed, "admin API: TLS handshake failed");
                }
                return;
            }
            Err(_) => return self.timed_out(remote, CloseReason::HandshakeTimeout),
        };
        let peer = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            None => None,
            Some(leaf) => match PeerIdentity::from_der(leaf) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    // Verified by webpki but unreadable here: refuse rather than serve anonymously.
                    tracing::warn!(client.addr = %remote, error = %e, "admin API: client certificate unparsable");
                    return;
                }
            },
        };
        if let Err(reason) = slot.classify(peer.is_some()) {
            return self.refused(remote, reason);
        }

        let activity = Activity::new();
        let info = ConnInfo {
            peer,
            remote,
            person: None,
        };
        let (router, requests) = (self.router.clone(), Arc::clone(&activity));
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let busy = requests.request();
            req.extensions_mut().insert(info.clone());
            let mut router = router.clone();
            async move {
                let _busy = busy;
                router.call(req).await
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // One deadline for request heads, ours: hyper's would also cut idle keep-alive.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        builder.http2().timer(TokioTimer::new());
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        let expired = activity.expired(self.config.first_request_timeout, self.config.idle_timeout);
        let grace = tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(client.addr = %remote, error = %e, "admin API: connection ended with an error");
                }
                return;
            }
            reason = expired => {
                self.timed_out(remote, reason);
                if reason == CloseReason::FirstRequestTimeout {
                    return;
                }
                CLOSE_GRACE
            }
            _ = shutdown.changed() => {
                // Closing before the first request head is read would drop a request already
                // on its way (hyper closes a connection idle at `graceful_shutdown`).
                if !activity.begun.load(Ordering::Acquire) {
                    tokio::select! {
                        ended = conn.as_mut() => {
                            if let Err(e) = ended {
                                tracing::debug!(client.addr = %remote, error = %e, "admin API: connection ended with an error");
                            }
                            return;
                        }
                        _ = timeout(FIRST_REQUEST_AT_SHUTDOWN, activity.first_request()) => {}
                    }
                }
                SHUTDOWN_GRACE
            }
        };
        conn.as_mut().graceful_shutdown();
        if timeout(grace, conn).await.is_err() {
            tracing::debug!(client.addr = %remote, "admin API: connection cut after its grace period");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: u32, unauthenticated: u32, per_source: u32) -> Arc<ConnectionCounts> {
        let config = ConnectionsConfig {
            max_connections: total,
            max_unauthenticated_connections: unauthenticated,
            max_connections_per_source: per_source,
            ..ConnectionsConfig::default()
        };
        ConnectionCounts::new(&config, Arc::new(IssuanceStats::default()))
    }

    #[test]
    fn unauthenticated_connections_leave_the_rest_to_certified_ones() {
        let counts = counts(4, 2, 10);
        let a: IpAddr = [127, 0, 0, 2].into();
        let mut anon: Vec<_> = (0..3).map(|_| counts.admit(a).unwrap()).collect();
        anon[0].classify(false).unwrap();
        anon[1].classify(false).unwrap();
        assert_eq!(
            anon[2].classify(false).unwrap_err(),
            CloseReason::UnauthenticatedCap
        );
        anon.pop();
        let mut certified = counts.admit(a).unwrap();
        certified.classify(true).unwrap();
        let mut handshaking = counts.admit(a).unwrap();
        assert_eq!(counts.admit(a).unwrap_err(), CloseReason::TotalCap);
        handshaking.classify(true).unwrap();
        let s = counts.stats.snapshot().open;
        assert_eq!((s.handshaking, s.unauthenticated, s.certified), (0, 2, 2));
        drop(anon);
        let mut again = counts.admit(a).unwrap();
        again.classify(false).unwrap();
        drop((again, certified, handshaking));
        let s = counts.stats.snapshot().open;
        assert_eq!((s.handshaking, s.unauthenticated, s.certified), (0, 0, 0));
    }

    #[test]
    fn each_source_has_its_cap_and_mapped_addresses_count_as_ipv4() {
        let counts = counts(10, 5, 2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let first = counts.admit(a).unwrap();
        let _second = counts.admit(mapped).unwrap();
        assert_eq!(counts.admit(a).unwrap_err(), CloseReason::SourceCap);
        let _other = counts.admit([127, 0, 0, 2].into()).unwrap();
        drop(first);
        let _again = counts.admit(a).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn first_request_then_idle_deadlines() {
        let (first, idle) = (Duration::from_secs(5), Duration::from_secs(30));
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(
            activity.expired(first, idle).await,
            CloseReason::FirstRequestTimeout
        );
        assert_eq!(start.elapsed(), first);

        let activity = Activity::new();
        let busy = activity.request();
        let watch = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.expired(first, idle).await })
        };
        // A request in progress for longer than `idle` is not idle.
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!watch.is_finished());
        drop(busy);
        let ended = Instant::now();
        assert_eq!(watch.await.unwrap(), CloseReason::IdleTimeout);
        assert!(ended.elapsed() >= idle && ended.elapsed() < idle * 2);
    }
}
