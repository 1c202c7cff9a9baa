//! Bounded connections: each listener runs its own accept loop instead of pingora's, because
//! pingora 0.9 fixes the TLS handshake timeout (60 s), has no connection caps, no total
//! request-head deadline and no HTTP/1 keep-alive idle limit after the first request. Here:
//!
//! - at accept, before any TLS: the listener's and the source address's connection caps
//!   (over either, the socket is closed at once — [`ConnectionCounts`]);
//! - behind an L4 balancer (`proxy_protocol`): only the balancers' connections accepted, each
//!   beginning with a PROXY header whose source becomes the connection's client address
//!   (`proxied`), the per-source cap then counted by that address;
//! - the TLS handshake under `handshake_timeout`, with the listener's own rustls config
//!   (`tls::server_config`: server cipher order); on a `required` listener a handshake that
//!   presented no certificate is counted as a TLS failure and closed before any HTTP;
//! - the stream wrapped in [`BoundedStream`]: the whole HTTP/1 request head must arrive
//!   within `request_head_timeout`, and a write that makes no progress for `write_timeout` cuts
//!   the connection (a client that stops reading);
//! - HTTP/1 driven request by request here (keep-alive idle timeout, requests per connection,
//!   body idle timeout); HTTP/2 handed to pingora with the listener's `H2Options` (streams,
//!   header list size, reset-flood bound) and idle timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ServerApp};
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::listener::Listener;
use pingora_core::protocols::tls::server::handshake_with_callback;
use pingora_core::protocols::{GetSocketDigest, Shutdown, Ssl, Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_proxy::HttpProxy;
use portcullis_policy::{ClientAuth, ConnectionLimits};
use tokio::io::AsyncReadExt;
use tokio::time::sleep;

use crate::abuse::AbusePolicy;
use crate::admission::caller_name;
use crate::audit::{AuditTrail, Escalated, Offender};
use crate::identity::ConnectionIdentity;
use crate::limits::ConnectionRates;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::snapshot::canonical;
use crate::tls::IdentityHook;

mod bounded;
mod counts;
mod proxied;
mod proxy_header;

pub(crate) use bounded::{BoundedStream, HeadPhase};
pub(crate) use counts::{ConnectionCounts, ConnectionSlot, Refused};
use proxied::{HeaderRefusal, LogGate};

/// The listen backlog: connections beyond it wait in the kernel, not in the gateway.
const BACKLOG: u32 = 1024;

/// pingora's options for a listener's connections: the HTTP/2 idle timeout.
pub(crate) fn server_options(limits: &ConnectionLimits) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(limits.h2_idle_timeout);
    options
}

/// The HTTP/2 settings a listener announces and enforces. h2 itself closes a connection
/// (GOAWAY) that resets too many streams before they are accepted (rapid reset) or sends an
/// endless header block (CONTINUATION flood, bounded by the header list size).
pub(crate) fn h2_options(limits: &ConnectionLimits) -> H2Options {
    let mut options = default_h2_options();
    options
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_size)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(256));
    options
}

/// One listener: its socket, its TLS, its bounds and the proxy its requests go to.
pub(crate) struct ListenerService {
    pub name: String,
    /// The listener's position in start-up order (its TLS material in each generation).
    pub index: usize,
    pub address: SocketAddr,
    pub client_auth: ClientAuth,
    pub limits: ConnectionLimits,
    /// `None` on an egress listener: plain HTTP/1.1 from the local workload.
    pub acceptor: Option<Arc<Acceptor>>,
    pub proxy: Arc<HttpProxy<Gateway>>,
    pub metrics: Arc<Metrics>,
    /// Where connections refused over a connection rate are summarised.
    pub audit: Option<Arc<AuditTrail>>,
}

#[async_trait]
impl BackgroundService for ListenerService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listener = match bind(self.address) {
            Ok(l) => Listener::from(l),
            Err(e) => {
                tracing::error!(listener = %self.name, address = %self.address, error = %e, "cannot listen");
                return;
            }
        };
        let counts = ConnectionCounts::new(&self.limits);
        let this = Arc::new(Connections {
            name: self.name.clone(),
            hook: IdentityHook {
                listener: self.index,
                abuse: Arc::new(AbusePolicy {
                    listener: self.name.clone(),
                    limits: self.limits.abuse.clone(),
                }),
            },
            rates: ConnectionRates::new(&self.limits.abuse),
            client_auth: self.client_auth,
            limits: self.limits.clone(),
            acceptor: self.acceptor.clone(),
            proxy: Arc::clone(&self.proxy),
            metrics: Arc::clone(&self.metrics),
            audit: self.audit.clone(),
            proxy_log: LogGate::new(),
            fresh: Arc::new(AtomicUsize::new(0)),
            close_idle: tokio::sync::watch::Sender::new(false),
        });
        loop {
            let accepted = tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(listener = %self.name, error = %e, "accept failed");
                    // Out of file descriptors: give closing connections a moment.
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(peer) = stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
            else {
                continue;
            };
            let admitted = match &self.limits.proxy_protocol {
                None if !this.source_allows(peer.ip()) => Err(Refused::SourceRate),
                None => counts.admit(peer.ip()),
                // The source is known, and counted, once the header is read.
                Some(pp)
                    if pp
                        .from
                        .iter()
                        .any(|net| net.contains(&canonical(peer.ip()))) =>
                {
                    counts.admit_unattributed()
                }
                Some(_) => Err(Refused::ProxySource),
            };
            let slot = match admitted {
                Ok(slot) => slot,
                Err(refused) => {
                    this.refused(peer, refused, None);
                    continue;
                }
            };
            // Counted here, not in the task: a drain that sees no connection must see none.
            this.metrics.connection_opened(&this.name);
            let fresh = Fresh::new(&this.fresh);
            let this = Arc::clone(&this);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                this.accept(stream, peer, slot, fresh, &shutdown).await;
                this.metrics.connection_closed(&this.name);
            });
        }
        // Connections accepted before the shutdown get their first request answered; then the
        // HTTP/1 connections parked between requests are woken and closed, as pingora's own
        // service does (pingora drops a woken connection whose request it has not read).
        let deadline = tokio::time::Instant::now()
            + self.limits.handshake_timeout
            + self.limits.request_head_timeout;
        while this.fresh.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        this.close_idle.send_replace(true);
        ServerApp::cleanup(&*self.proxy).await;
    }
}

/// The shutdown signal of one HTTP/2 connection: the server's, or the connection's own `close`
/// (set by the request path), whichever comes first. pingora answers either with GOAWAY and
/// lets the streams in flight finish.
fn ending(
    close: Arc<tokio::sync::watch::Sender<bool>>,
    mut server: ShutdownWatch,
) -> ShutdownWatch {
    let watch = close.subscribe();
    tokio::spawn(async move {
        tokio::select! {
            _ = server.changed() => {
                close.send_replace(true);
            }
            // The connection has ended: nothing left to tell it.
            _ = close.closed() => {}
        }
    });
    watch
}

/// The listener's socket: the one the gateway this one replaces handed over (`upgrade`), else
/// a new one; registered either way, so that a later upgrade can hand it on.
fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = match crate::upgrade::take_inherited(address) {
        Some(inherited) => {
            inherited.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(inherited)?
        }
        None => {
            let socket = match address {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.set_reuseaddr(true)?;
            socket.bind(address)?;
            socket.listen(BACKLOG)?
        }
    };
    crate::upgrade::register(address, &listener);
    Ok(listener)
}

/// What every connection of a listener shares.
struct Connections {
    name: String,
    hook: IdentityHook,
    client_auth: ClientAuth,
    limits: ConnectionLimits,
    acceptor: Option<Arc<Acceptor>>,
    proxy: Arc<HttpProxy<Gateway>>,
    metrics: Arc<Metrics>,
    audit: Option<Arc<AuditTrail>>,
    /// Bounds the log lines of PROXY protocol refusals (a forged or broken header is cheap to
    /// send again and again).
    proxy_log: LogGate,
    /// Connections that have not finished their first request.
    fresh: Arc<AtomicUsize>,
    /// Set when HTTP/1 connections waiting between requests are to close (the drain, once
    /// every fresh connection has had its first request answered).
    close_idle: tokio::sync::watch::Sender<bool>,
    rates: ConnectionRates,
}

impl Connections {
    /// A new connection from `source` within its rate (or exempt).
    fn source_allows(&self, source: IpAddr) -> bool {
        let source = canonical(source);
        self.limits.abuse.exempts(source) || self.rates.source_allows(source)
    }

    /// A connection closed at accept (or, behind a balancer, once its source is known; or,
    /// over its identity's rate, after the handshake: `identity`).
    fn refused(&self, peer: SocketAddr, refused: Refused, identity: Option<&str>) {
        self.metrics
            .connection_refused(&self.name, refused.as_str());
        let rate = match refused {
            Refused::SourceRate => Some(Escalated::SourceRate),
            Refused::IdentityRate => Some(Escalated::IdentityRate),
            _ => None,
        };
        if let (Some(what), Some(audit)) = (rate, &self.audit) {
            let offender = Offender {
                listener: &self.name,
                source: Some(canonical(peer.ip())),
                identity,
            };
            audit.escalated(offender, what);
        }
        if refused != Refused::ProxySource {
            tracing::info!(listener = %self.name, client.ip = %peer.ip(), reason = refused.as_str(), "connection refused at accept");
        } else if let Some(suppressed) = self.proxy_log.admit() {
            tracing::warn!(listener = %self.name, client.ip = %peer.ip(), reason = refused.as_str(), log.suppressed = suppressed, "connection refused at accept: not from a proxy_protocol balancer");
        }
    }

    /// Behind a balancer, reads the PROXY header and counts the connection against its
    /// carried source; then serves it. `slot` is held for the connection's life.
    async fn accept(
        &self,
        mut stream: pingora_core::protocols::l4::stream::Stream,
        peer: SocketAddr,
        mut slot: ConnectionSlot,
        fresh: Fresh,
        shutdown: &ShutdownWatch,
    ) {
        let mut client = peer;
        if let Some(pp) = &self.limits.proxy_protocol {
            match proxied::read_header(&mut stream, pp.timeout).await {
                Ok(Some(source)) => {
                    proxied::carry_source(&mut stream, source);
                    client = source;
                }
                // LOCAL / UNKNOWN (a health check): the balancer's own address.
                Ok(None) => {}
                Err(refusal) => {
                    self.header_refused(peer, refusal);
                    return;
                }
            }
            if !self.source_allows(client.ip()) {
                self.refused(client, Refused::SourceRate, None);
                return;
            }
            if let Err(refused) = slot.attribute(client.ip()) {
                self.refused(client, refused, None);
                return;
            }
        }
        self.serve(stream, client, fresh, shutdown).await;
        drop(slot);
    }

    fn header_refused(&self, balancer: SocketAddr, refusal: HeaderRefusal) {
        match refusal {
            HeaderRefusal::Closed { empty: true } => {
                tracing::debug!(listener = %self.name, balancer.ip = %balancer.ip(), "closed before a PROXY header");
                return;
            }
            HeaderRefusal::Timeout => self
                .metrics
                .connection_timeout(&self.name, refusal.as_str()),
            _ => self
                .metrics
                .connection_refused(&self.name, refusal.as_str()),
        }
        if let Some(suppressed) = self.proxy_log.admit() {
            let error = match refusal {
                HeaderRefusal::Malformed(e) | HeaderRefusal::Oversized(e) => e.to_string(),
                HeaderRefusal::Timeout => "not whole within proxy_protocol.timeout".to_owned(),
                HeaderRefusal::Closed { .. } => "closed before the header was whole".to_owned(),
            };
            tracing::info!(listener = %self.name, balancer.ip = %balancer.ip(), reason = refusal.as_str(), error, log.suppressed = suppressed, "PROXY header refused");
        }
    }

    async fn serve(
        &self,
        mut stream: pingora_core::protocols::l4::stream::Stream,
        peer: SocketAddr,
        fresh: Fresh,
        shutdown: &ShutdownWatch,
    ) {
        if let Err(e) = stream.set_nodelay() {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let Some(acceptor) = &self.acceptor else {
            // An egress listener: plain HTTP/1.1 from the local workload, with the same bounds.
            let head = Arc::new(HeadPhase::new());
            let stream: Stream = Box::new(BoundedStream::new(
                Box::new(stream),
                Arc::clone(&head),
                self.limits.request_head_timeout,
                self.limits.write_timeout,
                self.name.clone(),
                Arc::clone(&self.metrics),
            ));
            self.serve_http1(stream, &head, fresh, shutdown).await;
            return;
        };
        let handshake_began = std::time::Instant::now();
        // Boxed, as is the TLS stream it makes: a connection's task is as large as its largest
        // step, and it keeps that size for as long as the connection stays open, idle or not.
        let handshake = Box::pin(handshake_with_callback(acceptor, stream, &self.hook));
        let tls = match tokio::time::timeout(self.limits.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => {
                // For the first request's trace: the handshake up to the hook's moment.
                if let Some(digest) = tls.get_ssl_digest() {
                    if let Some(c) = digest.extension.get::<ConnectionIdentity>() {
                        let _ = c
                            .handshake
                            .set(c.established.saturating_duration_since(handshake_began));
                    }
                }
                Box::new(tls)
            }
            Ok(Err(e)) => {
                // Certificate refusals are counted by the verifier, with their reason.
                tracing::debug!(listener = %self.name, client.ip = %peer.ip(), error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.connection_timeout(&self.name, "handshake");
                tracing::info!(listener = %self.name, client.ip = %peer.ip(), "TLS handshake timed out");
                return;
            }
        };
        // rustls lets a handshake without a certificate through (the verifier does not make
        // it mandatory) so that it can be counted; it never reaches HTTP.
        let certified = tls
            .get_ssl()
            .is_some_and(|t| t.peer_certificate_der().is_some());
        if self.client_auth == ClientAuth::Required && !certified {
            self.metrics.tls_failure(&self.name, "no_certificate");
            tracing::info!(listener = %self.name, client.ip = %peer.ip(), tls.refusal = "no_certificate", "client certificate refused");
            let mut tls = tls;
            Shutdown::shutdown(&mut *tls).await;
            return;
        }
        if let Some(identity) = self.identity_over_rate(&*tls, peer) {
            self.refused(peer, Refused::IdentityRate, Some(&identity));
            let mut tls = tls;
            Shutdown::shutdown(&mut *tls).await;
            return;
        }
        let h2 = matches!(tls.selected_alpn_proto(), Some(ALPN::H2));
        // The request path can ask for this connection to end (revoked or expired
        // certificate, `max_connection_age`); HTTP/2 then sends GOAWAY as on shutdown.
        let (close, abort) = tls
            .get_ssl_digest()
            .and_then(|d| {
                d.extension
                    .get::<ConnectionIdentity>()
                    .map(|c| (c.close.clone(), c.abort.clone()))
            })
            .unzip();
        // HTTP/2 too: its connection preface (`PRI * HTTP/2.0\r\n\r\n…`) ends like a head,
        // so a client that never sends it is cut at the same deadline.
        let head = Arc::new(HeadPhase::new());
        let stream: Stream = Box::new(BoundedStream::new(
            tls,
            Arc::clone(&head),
            self.limits.request_head_timeout,
            self.limits.write_timeout,
            self.name.clone(),
            Arc::clone(&self.metrics),
        ));
        if h2 {
            // HTTP/2: a shutdown is a GOAWAY, which clients answer by retrying elsewhere.
            drop(fresh);
            let shutdown = match close {
                Some(close) => ending(close, shutdown.clone()),
                None => shutdown.clone(),
            };
            let abort = abort.unwrap_or_default();
            tokio::select! {
                _ = ServerApp::process_new(&self.proxy, stream, &shutdown) => {}
                // A request body stalled past `body_idle_timeout`: the connection is dropped,
                // which ends every stream on it.
                _ = abort.notified() => {
                    self.metrics.connection_timeout(&self.name, "body_idle");
                    tracing::info!(listener = %self.name, client.ip = %peer.ip(), timeout = "body_idle", "connection cut");
                }
            }
        } else {
            self.serve_http1(stream, &head, fresh, shutdown).await;
        }
    }

    /// The handshake's client identity, when this new connection of it is over its rate (and
    /// not exempt); none for a connection within it or without a certificate.
    fn identity_over_rate<S: Ssl>(&self, tls: &S, peer: SocketAddr) -> Option<String> {
        let digest = tls.get_ssl_digest();
        let name = digest
            .as_ref()
            .and_then(|d| d.extension.get::<ConnectionIdentity>())
            .and_then(|c| caller_name(c.identity.as_deref(), None))?;
        let allowed = self.limits.abuse.exempts(peer.ip()) || self.rates.identity_allows(name);
        (!allowed).then(|| name.to_owned())
    }

    /// pingora's HTTP/1 keep-alive loop, with this listener's bounds set on every request.
    /// `fresh` is held until the first request is answered (see the accept loop's shutdown).
    async fn serve_http1(
        &self,
        mut stream: Stream,
        head: &HeadPhase,
        fresh: Fresh,
        shutdown: &ShutdownWatch,
    ) {
        let limits = &self.limits;
        // pingora counts reuses: N requests are N - 1 reuses.
        let reuses = limits.max_requests_per_connection.saturating_sub(1);
        let mut fresh = Some(fresh);
        // The first request is waited for here too (its head timed from the handshake), so a
        // connection that has not sent one yet holds no pingora session either.
        let Some(first) = self.next_request(&mut stream).await else {
            return;
        };
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive_reuses_remaining(Some(reuses));
        session.set_pipelined_prefix(first);
        loop {
            let draining = *shutdown.borrow();
            let keepalive = (!draining).then(|| limits.idle_timeout.as_secs().max(1));
            session.set_keepalive(keepalive);
            session.set_read_timeout(Some(limits.body_idle_timeout));
            session.set_write_timeout(Some(limits.write_timeout));
            let reused = self.proxy.process_new_http(session, shutdown).await;
            drop(fresh.take());
            let Some(reused) = reused else {
                return;
            };
            let (mut stream, persistent) = reused.consume();
            if *shutdown.borrow() {
                // An idle keep-alive connection during a drain: closed, not waited on.
                return;
            }
            head.next_request();
            // Between requests the connection waits for the next one's first byte here rather
            // than in a pingora session, whose future, session and head buffer (~20 KiB) would
            // be held for all of the idle time.
            let Some(first) = self.next_request(&mut stream).await else {
                return;
            };
            session = ServerSession::new_http1(stream);
            if let Some(persistent) = persistent {
                // No pipelined prefix in it: pipelining is off, and pingora does not reuse a
                // connection whose request it read past.
                persistent.apply_to_session(&mut session);
            }
            session.set_pipelined_prefix(first);
        }
    }

    /// Waits for the first byte of an HTTP/1 connection's next request, for at most the idle
    /// timeout and until idle connections are to close (the drain); that byte, at the start
    /// of a buffer for the rest of the head.
    async fn next_request(&self, stream: &mut Stream) -> Option<BytesMut> {
        let mut closing = self.close_idle.subscribe();
        let mut byte = [0u8; 1];
        let idle = self.limits.idle_timeout.max(Duration::from_secs(1));
        tokio::select! {
            biased;
            read = tokio::time::timeout(idle, stream.read(&mut byte)) => match read {
                Ok(Ok(1)) => {
                    // pingora's own first head buffer size.
                    let mut head = BytesMut::with_capacity(4096);
                    head.put_u8(byte[0]);
                    Some(head)
                }
                // Closed by the client, failed, or idle past the timeout.
                _ => None,
            },
            _ = closing.wait_for(|close| *close) => None,
        }
    }
}

/// A connection that has not finished its first request, counted for the listener's shutdown.
struct Fresh(Arc<AtomicUsize>);

impl Fresh {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
