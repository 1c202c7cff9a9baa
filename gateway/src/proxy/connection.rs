//! What the connection says about each request on it: the caller's certificate re-checked
//! against the current generation, the listener's `max_connection_age` and request cap, and
//! an upgraded exchange held to that age frame by frame.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pingora_core::{Error, ErrorType, Result};
use pingora_proxy::Session;
use tokio::sync::Notify;

use super::RequestCtx;
use crate::admission::{recheck_connection, Refusal};
use crate::identity::ConnectionIdentity;
use crate::snapshot::{ListenerView, Snapshot};

/// The local workload behind an egress listener: plain HTTP from loopback, so no certificate;
/// each request is judged as coming from the workload the listener names.
#[derive(Debug)]
pub(crate) struct Workload {
    identity: Arc<portcullis_policy::Identity>,
    headers: Arc<crate::forwarding::IdentityHeaders>,
}

impl Workload {
    pub(crate) fn new(workload: &portcullis_policy::SpiffeId) -> Self {
        let mut identity = portcullis_policy::Identity::default();
        identity.spiffe_id = Some(workload.clone());
        Self {
            headers: Arc::new(crate::forwarding::IdentityHeaders::of(&identity)),
            identity: Arc::new(identity),
        }
    }

    /// The request's identity is the workload's; there is no certificate to re-check.
    pub(super) fn enter(&self, ctx: &mut RequestCtx) -> ConnectionCheck {
        ctx.identity = Some(Arc::clone(&self.identity));
        ctx.identity_headers = Some(Arc::clone(&self.headers));
        ctx.egress = true;
        ConnectionCheck {
            recheck: Ok(()),
            aged: false,
            abort: None,
        }
    }
}

/// The connection's verdict on one request.
pub(super) struct ConnectionCheck {
    /// The caller's certificate, re-checked (revoked or expired since the handshake: refused).
    pub recheck: Result<(), Refusal>,
    /// Past `max_connection_age`: this response is the connection's last.
    pub aged: bool,
    /// Drops an HTTP/2 connection at once (a stalled request body).
    pub abort: Option<Arc<Notify>>,
}

/// Reads the connection's identity into the request and checks the connection; on a refusal,
/// past its age or at its request cap, an HTTP/2 connection is sent GOAWAY once the streams
/// in flight are done.
pub(super) fn check_connection(
    session: &Session,
    ctx: &mut RequestCtx,
    snapshot: &Snapshot,
    listener: Option<&ListenerView>,
) -> ConnectionCheck {
    let mut check = ConnectionCheck {
        recheck: Ok(()),
        aged: false,
        abort: None,
    };
    let Some(connection) = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|ssl| ssl.extension.get::<ConnectionIdentity>())
    else {
        return check;
    };
    ctx.identity = connection.identity.clone();
    ctx.identity_headers = connection.headers.clone();
    ctx.tls_version = Some(connection.tls_version);
    check.abort = Some(connection.abort.clone());
    check.recheck = recheck_connection(connection, snapshot, SystemTime::now());
    let max_age = listener.map_or(Duration::MAX, |l| l.max_connection_age);
    check.aged = connection.established.elapsed() > max_age;
    ctx.connection_deadline = connection.established.checked_add(max_age);
    let max_requests = listener.map_or(u32::MAX, |l| l.max_requests_per_connection);
    // HTTP/2: the cap on requests per connection (HTTP/1's is pingora's reuse count).
    let last = session.is_http2() && connection.count_request(max_requests);
    if check.recheck.is_err() || check.aged || last {
        connection.end();
    }
    check
}

/// An upgraded (WebSocket) exchange outlives its requests: it is held to the listener's
/// `max_connection_age` frame by frame, and cut once past it.
pub(super) fn past_max_age(ctx: &mut RequestCtx) -> Result<()> {
    if ctx.upgraded
        && ctx
            .connection_deadline
            .is_some_and(|deadline| std::time::Instant::now() >= deadline)
    {
        ctx.cut_at_max_age = true;
        return Err(Error::explain(
            ErrorType::ConnectionClosed,
            "upgraded connection past the listener's max_connection_age",
        ));
    }
    Ok(())
}

impl super::Gateway {
    /// Starts the request's trace (continuing a trusted caller's); the connection's TLS
    /// handshake becomes a child span of its first traced request.
    pub(super) fn begin_trace(
        &self,
        tracing: &crate::traces::Tracing,
        session: &Session,
        ctx: &mut RequestCtx,
    ) {
        let trace = tracing.begin(&crate::traces::TraceStart {
            req: session.req_header(),
            client: ctx.client.as_ref().map(|c| c.ip),
            spiffe_id: ctx.identity.as_deref().and_then(|i| i.spiffe_id.as_ref()),
            started: ctx.started,
        });
        if trace.recording() {
            let connection = session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .and_then(|ssl| ssl.extension.get::<ConnectionIdentity>());
            if let Some((took, c)) = connection.and_then(|c| Some((c.untraced_handshake()?, c))) {
                trace.handshake(c.established.elapsed(), took, c.tls_version);
            }
        }
        ctx.trace = Some(Box::new(trace));
    }
}
