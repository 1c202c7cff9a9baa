//! A listener's `connections` section: timeouts, connection caps and HTTP/2 limits, each
//! defaulted and kept within a range that cannot switch a protection off.

use std::time::Duration;

use super::{parse_cidr, Checker};
use crate::config::raw::{RawAbuse, RawConnections, RawProxyProtocol, RawRate, RawRateOrOff};
use crate::config::{AbuseLimits, ConnectionLimits, ProxyProtocol};

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
            abuse: self.abuse(&p, what, raw.abuse.as_ref()),
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
    fn abuse(&mut self, section: &str, what: &str, raw: Option<&RawAbuse>) -> AbuseLimits {
        let d = AbuseLimits::DEFAULT;
        let Some(raw) = raw else { return d };
        let p = format!("{section}.abuse");
        let rate = |c: &mut Self, key: &str, raw: &Option<RawRateOrOff>, default| match raw {
            None => default,
            Some(RawRateOrOff::Off(_)) => None,
            Some(RawRateOrOff::Rate(r)) if r.connections == 0 => {
                c.at_value(
                    &format!("{p}.{key}.connections"),
                    format!("{what}: connections.abuse.{key}: `connections` must be at least 1"),
                );
                None
            }
            Some(RawRateOrOff::Rate(r)) => {
                let r = RawRate {
                    requests: r.connections,
                    per: r.per,
                    burst: r.burst,
                };
                c.rate(
                    &format!("{p}.{key}"),
                    &format!("{what}: connections.abuse.{key}"),
                    &r,
                )
            }
        };
        let per_source = rate(
            self,
            "connection_rate_per_source",
            &raw.connection_rate_per_source,
            d.connection_rate_per_source,
        );
        let per_identity = rate(
            self,
            "connection_rate_per_identity",
            &raw.connection_rate_per_identity,
            d.connection_rate_per_identity,
        );
        let mut abuse = AbuseLimits {
            connection_rate_per_source: per_source,
            connection_rate_per_identity: per_identity,
            ..d
        };
        if let Some(r) = &raw.refusals {
            let r_path = format!("{p}.refusals");
            abuse.window = r.window.unwrap_or(abuse.window);
            abuse.slow_after = r.slow_after.unwrap_or(abuse.slow_after);
            abuse.delay = r.delay.unwrap_or(abuse.delay);
            abuse.close_after = r.close_after.unwrap_or(abuse.close_after);
            if !(Duration::from_secs(1)..=MAX_TIMEOUT).contains(&abuse.window) {
                self.at_value(
                    &format!("{r_path}.window"),
                    format!("{what}: connections.abuse.refusals.window must be between 1s and 1h"),
                );
            }
            if abuse.delay > Duration::from_secs(10) {
                self.at_value(
                    &format!("{r_path}.delay"),
                    format!("{what}: connections.abuse.refusals.delay must be at most 10s (a delayed refusal holds the connection, not the caller's next one)"),
                );
            }
            if abuse.slow_after == 0 || abuse.close_after == 0 {
                self.at_value(
                    &r_path,
                    format!("{what}: connections.abuse.refusals: slow_after and close_after must be at least 1"),
                );
            } else if abuse.slow_after > abuse.close_after {
                self.at_value(
                    &format!("{r_path}.slow_after"),
                    format!(
                        "{what}: connections.abuse.refusals.slow_after ({}) exceeds close_after ({})",
                        abuse.slow_after, abuse.close_after
                    ),
                );
            }
        }
        for (i, text) in raw.exempt.iter().enumerate() {
            match parse_cidr(text) {
                Ok(net) => abuse.exempt.push(net),
                Err(e) => self.at_value(
                    &format!("{p}.exempt[{i}]"),
                    format!("{what}: connections.abuse.exempt: {e}"),
                ),
            }
        }
        abuse
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
