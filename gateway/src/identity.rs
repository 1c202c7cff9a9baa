//! The caller's identity as established by the TLS handshake: the verified client leaf read
//! once per connection ([`PeerIdentity::from_der`], the rules shared with the admin API) into a
//! policy [`Identity`], with what every later request re-checks (serial and expiry).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use portcullis_identity::{PeerIdentity, Serial};
use portcullis_policy::Identity;

use crate::abuse::{AbusePolicy, RefusalWindow};
use crate::forwarding::IdentityHeaders;

/// What a connection's handshake established, attached to the connection by pingora.
#[derive(Debug)]
pub(crate) struct ConnectionIdentity {
    /// `None` when no client certificate was presented (client auth optional or off).
    pub identity: Option<Arc<Identity>>,
    /// The identity's headers to the upstream, made once for all the connection's requests.
    pub headers: Option<Arc<IdentityHeaders>>,
    /// The certificate behind `identity`, re-checked on every request.
    pub credential: Option<Credential>,
    pub tls_version: &'static str,
    /// The listener's position in start-up order (its TLS material in each generation).
    pub listener: usize,
    /// When the handshake completed.
    pub established: Instant,
    /// Set to end the connection after the requests in flight: HTTP/2 sends GOAWAY (HTTP/1.1
    /// closes through keep-alive instead).
    pub close: Arc<tokio::sync::watch::Sender<bool>>,
    /// Requests served on the connection so far (HTTP/2's cap; HTTP/1 counts in pingora).
    pub requests: std::sync::atomic::AtomicU32,
    /// Notified to drop an HTTP/2 connection at once: a request body stalled past its idle
    /// timeout (pingora 0.9 has no HTTP/2 read timeout, and a stream cannot be reset from
    /// outside its task).
    pub abort: Arc<tokio::sync::Notify>,
    /// The listener's abuse settings, and this connection's refusals under them.
    pub abuse: Arc<AbusePolicy>,
    pub refusals: RefusalWindow,
    /// How long the TLS handshake took (set by the accept loop once it is done).
    pub handshake: std::sync::OnceLock<std::time::Duration>,
    /// Whether a request's trace has taken the handshake as a child span already.
    pub handshake_traced: std::sync::atomic::AtomicBool,
}

impl ConnectionIdentity {
    /// Asks the connection to end once its requests in flight are done.
    pub(crate) fn end(&self) {
        self.close.send_replace(true);
    }

    /// The handshake's duration for the connection's first traced request; `None` after.
    pub(crate) fn untraced_handshake(&self) -> Option<std::time::Duration> {
        let took = *self.handshake.get()?;
        let first = !self
            .handshake_traced
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        first.then_some(took)
    }

    /// Counts a request; whether it is the connection's last allowed one (`max`).
    pub(crate) fn count_request(&self, max: u32) -> bool {
        let n = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1);
        n >= max
    }
}

/// What a request re-checks of the client certificate its connection was made with:
/// connections outlive revocations and expiries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credential {
    pub serial: Serial,
    pub not_after: SystemTime,
}

/// Reads a verified client leaf. `None` only if the certificate cannot be read (malformed DER
/// or SAN extension, which the verifier has already ruled out): the connection then counts as
/// unauthenticated. A certificate without a usable SPIFFE ID still yields an identity with its
/// DNS names and subject.
pub(crate) fn peer_identity(der: &[u8]) -> Option<(Identity, Credential)> {
    match PeerIdentity::from_der(der) {
        Ok(peer) => {
            let credential = Credential {
                serial: peer.serial.clone(),
                not_after: peer.not_after,
            };
            Some((Identity::from(&peer), credential))
        }
        Err(e) => {
            tracing::warn!(error = %e, "verified client certificate unreadable; treated as anonymous");
            None
        }
    }
}
