//! A listener's `connections` section: timeouts, connection caps and HTTP/2 limits, each
//! defaulted and kept within a range that cannot switch a protection off.

use std::time::Duration;

use super::{parse_cidr, Checker};
use crate::config::raw::{RawConnections, RawProxyProtocol};
use crate::config::{ConnectionLimits, ProxyProtocol};

/// Timeouts are at least this: shorter ones would cut ordinary clients on a busy network.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Timeouts are at most this: longer ones are no bound at all.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_CONNECTIONS: u32 = 1_000_000;
const MAX_REQUESTS_PER_CONNECTION: u32 = 1_000_000;
const MAX_CONCURRENT_STREAMS: u32 = 1_000;
const MIN_HEADER_LIST_SIZE: u32 = 1024;
const MAX_HEADER_LIST_SIZE: u32 = 1 << 20;

impl Checker<'_> {
    /// `listener` is the listener's node path (`listeners[i]`), `what` names it in messages.
    pub(super) fn connections(
        &mut self,
        listener: &str,
        what: &str,
        raw: Option<&RawConnections>,
    ) -> ConnectionLimits {
        let empty = RawConnections::default();
        let raw = raw.unwrap_or(&empty);
        let d = ConnectionLimits::DEFAULT;
        let p = format!("{listener}.connections");
        let timeout = |c: &mut Self, key: &str, value: Option<Duration>, default: Duration| {
            let value = value.unwrap_or(default);
            if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&value) {
                c.at_value(
                    &format!("{p}.{key}"),
                    format!("{what}: connections.{key} must be between 100ms and 1h"),
                );
            }
            value
        };
        let limits = ConnectionLimits {
            handshake_timeout: timeout(
                self,
                "handshake_timeout",
                raw.handshake_timeout,
                d.handshake_timeout,
            ),
            request_head_timeout: timeout(
                self,
                "request_head_timeout",
                raw.request_head_timeout,
                d.request_head_timeout,
            ),
            idle_timeout: timeout(self, "idle_timeout", raw.idle_timeout, d.idle_timeout),
            h2_idle_timeout: timeout(
                self,
                "h2_idle_timeout",
                raw.h2_idle_timeout,
                d.h2_idle_timeout,
            ),
            write_timeout: timeout(self, "write_timeout", raw.write_timeout, d.write_timeout),
            body_idle_timeout: timeout(
                self,
                "body_idle_timeout",
                raw.body_idle_timeout,
                d.body_idle_timeout,
            ),
            max_connections: self.count(
                &p,
                what,
                "max_connections",
                raw.max_connections.unwrap_or(d.max_connections),
                1..=MAX_CONNECTIONS,
            ),
            max_connections_per_source: self.count(
                &p,
                what,
                "max_connections_per_source",
                raw.max_connections_per_source
                    .unwrap_or(d.max_connections_per_source),
                1..=MAX_CONNECTIONS,
            ),
            max_requests_per_connection: self.count(
                &p,
                what,
                "max_requests_per_connection",
                raw.max_requests_per_connection
                    .unwrap_or(d.max_requests_per_connection),
                1..=MAX_REQUESTS_PER_CONNECTION,
            ),
            h2_max_concurrent_streams: self.count(
                &p,
                what,
                "h2_max_concurrent_streams",
                raw.h2_max_concurrent_streams
                    .unwrap_or(d.h2_max_concurrent_streams),
                1..=MAX_CONCURRENT_STREAMS,
            ),
            h2_max_header_list_size: self.count(
                &p,
                what,
                "h2_max_header_list_size",
                raw.h2_max_header_list_size
                    .unwrap_or(d.h2_max_header_list_size),
                MIN_HEADER_LIST_SIZE..=MAX_HEADER_LIST_SIZE,
            ),
            max_connection_age: raw.max_connection_age.unwrap_or(d.max_connection_age),
            proxy_protocol: raw
                .proxy_protocol
                .as_ref()
                .map(|pp| self.proxy_protocol(&p, what, pp)),
        };
        if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600))
            .contains(&limits.max_connection_age)
        {
            self.at_value(
                &format!("{p}.max_connection_age"),
                format!("{what}: connections.max_connection_age must be between 1s and 24h"),
            );
        }
        // pingora counts HTTP/1 keep-alive in whole seconds.
        if limits.idle_timeout.subsec_nanos() != 0 {
            self.at_value(
                &format!("{p}.idle_timeout"),
                format!("{what}: connections.idle_timeout must be whole seconds"),
            );
        }
        if raw.max_connections_per_source.is_some()
            && limits.max_connections_per_source > limits.max_connections
        {
            self.at_value(
                &format!("{p}.max_connections_per_source"),
                format!(
                    "{what}: connections.max_connections_per_source ({}) exceeds max_connections ({})",
                    limits.max_connections_per_source, limits.max_connections
                ),
            );
        }
        limits
    }

    /// `section` is the listener's `connections` node path.
    fn proxy_protocol(
        &mut self,
        section: &str,
        what: &str,
        raw: &RawProxyProtocol,
    ) -> ProxyProtocol {
        let p = format!("{section}.proxy_protocol");
        if raw.from.is_empty() {
            self.at_key(
                &format!("{p}.from"),
                format!("{what}: connections.proxy_protocol.from must name at least one balancer address"),
            );
        }
        let mut from = Vec::new();
        for (i, text) in raw.from.iter().enumerate() {
            match parse_cidr(text) {
                Ok(net) => from.push(net),
                Err(msg) => self.at_value(
                    &format!("{p}.from[{i}]"),
                    format!("{what}: connections.proxy_protocol.from: {msg}"),
                ),
            }
        }
        let timeout = raw.timeout.unwrap_or(ProxyProtocol::DEFAULT_TIMEOUT);
        if !(MIN_TIMEOUT..=Duration::from_secs(60)).contains(&timeout) {
            self.at_value(
                &format!("{p}.timeout"),
                format!("{what}: connections.proxy_protocol.timeout must be between 100ms and 60s"),
            );
        }
        ProxyProtocol { from, timeout }
    }

    fn count(
        &mut self,
        section: &str,
        what: &str,
        key: &str,
        value: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> u32 {
        if !range.contains(&value) {
            self.at_value(
                &format!("{section}.{key}"),
                format!(
                    "{what}: connections.{key} must be between {} and {}",
                    range.start(),
                    range.end()
                ),
            );
        }
        value
    }
}
