//! Open connections per listener and per source address, and why one was refused at accept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use portcullis_policy::ConnectionLimits;

use crate::snapshot::canonical;

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    ListenerFull,
    SourceFull,
    /// On a `proxy_protocol` listener, a peer that is not one of its balancers.
    ProxySource,
    /// Over `connections.abuse.connection_rate_per_source`.
    SourceRate,
    /// Over `connections.abuse.connection_rate_per_identity` (after the handshake).
    IdentityRate,
}

impl Refused {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Refused::ListenerFull => "listener_full",
            Refused::SourceFull => "source_full",
            Refused::ProxySource => "proxy_source",
            Refused::SourceRate => "source_rate",
            Refused::IdentityRate => "identity_rate",
        }
    }
}

/// Open connections of one listener, in total and per source address.
#[derive(Debug)]
pub(crate) struct ConnectionCounts {
    max_total: u32,
    max_per_source: u32,
    pub(super) open: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

impl ConnectionCounts {
    pub(crate) fn new(limits: &ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            max_total: limits.max_connections,
            max_per_source: limits.max_connections_per_source,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a new connection from `source`, held for the connection's life.
    pub(crate) fn admit(self: &Arc<Self>, source: IpAddr) -> Result<ConnectionSlot, Refused> {
        let source = canonical(source);
        // A panic while holding the lock cannot leave the counts half-updated.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.0 >= self.max_total {
            return Err(Refused::ListenerFull);
        }
        let from_source = open.1.entry(source).or_insert(0);
        if *from_source >= self.max_per_source {
            return Err(Refused::SourceFull);
        }
        *from_source += 1;
        open.0 += 1;
        Ok(ConnectionSlot {
            counts: Arc::clone(self),
            source: Some(source),
        })
    }

    /// A slot under the listener's cap only: a balancer's connection, whose source is known
    /// once its PROXY header is read ([`ConnectionSlot::attribute`]).
    pub(crate) fn admit_unattributed(self: &Arc<Self>) -> Result<ConnectionSlot, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.0 >= self.max_total {
            return Err(Refused::ListenerFull);
        }
        open.0 += 1;
        Ok(ConnectionSlot {
            counts: Arc::clone(self),
            source: None,
        })
    }

    fn release(&self, source: Option<IpAddr>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        let Some(source) = source else { return };
        if let Some(n) = open.1.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&source);
            }
        }
    }
}

/// One open connection's place in its listener's counts; freed on drop (also when
/// [`ConnectionSlot::attribute`] refuses it).
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    source: Option<IpAddr>,
}

impl ConnectionSlot {
    /// Counts the connection against `source`'s cap (once: a slot already attributed keeps
    /// its source).
    pub(crate) fn attribute(&mut self, source: IpAddr) -> Result<(), Refused> {
        if self.source.is_some() {
            return Ok(());
        }
        let source = canonical(source);
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let from_source = open.1.entry(source).or_insert(0);
        if *from_source >= self.counts.max_per_source {
            if *from_source == 0 {
                open.1.remove(&source);
            }
            return Err(Refused::SourceFull);
        }
        *from_source += 1;
        self.source = Some(source);
        Ok(())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counts.release(self.source);
    }
}
