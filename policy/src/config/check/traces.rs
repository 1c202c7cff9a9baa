//! Checks the `tracing` section.

use std::time::Duration;

use super::{parse_cidr, Checker};
use crate::config::raw::RawTracing;
use crate::config::traces::{OtlpProtocol, OtlpTls, TraceparentTrust, TracingSettings};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_QUEUE: usize = 4096;

impl Checker<'_> {
    pub(super) fn tracing(&mut self, raw: &RawTracing) -> TracingSettings {
        let protocol = match raw.otlp.protocol.as_deref() {
            None | Some("http") => OtlpProtocol::Http,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                self.at_value(
                    "tracing.otlp.protocol",
                    format!("tracing: otlp.protocol `{other}` is not `http` or `grpc`"),
                );
                OtlpProtocol::Http
            }
        };
        let endpoint = raw.otlp.endpoint.trim().to_owned();
        let https = endpoint.starts_with("https://");
        if !http_url(&endpoint) {
            self.at_value(
                "tracing.otlp.endpoint",
                format!(
                    "tracing: otlp.endpoint `{endpoint}` is not an http(s)://host:port[/path] URL"
                ),
            );
        }
        let tls = match (&raw.otlp.tls, https) {
            (Some(_), false) => {
                self.at_key(
                    "tracing.otlp.tls",
                    "tracing: otlp.tls needs an https:// endpoint".to_owned(),
                );
                None
            }
            (None, false) => None,
            (None, true) => Some(OtlpTls::default()),
            (Some(t), true) => {
                let what = "tracing.otlp.tls";
                let cert = t.client_certificate.as_deref();
                let client = self
                    .client_pair(what, what, cert, t.client_key.as_deref())
                    .unwrap_or_default();
                Some(OtlpTls {
                    ca: t
                        .ca
                        .as_ref()
                        .map(|ca| self.file_path("tracing.otlp.tls.ca", what, ca)),
                    client,
                })
            }
        };
        let timeout = raw.otlp.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&timeout) {
            self.at_value(
                "tracing.otlp.timeout",
                "tracing: otlp.timeout must be between 1ms and 60s".to_owned(),
            );
        }
        let sampling = raw.sampling.as_ref();
        let ratio = sampling.and_then(|s| s.ratio).unwrap_or(1.0);
        if !(0.0..=1.0).contains(&ratio) {
            self.at_value(
                "tracing.sampling.ratio",
                "tracing: sampling.ratio must be between 0.0 and 1.0".to_owned(),
            );
        }
        let service_name = raw
            .service_name
            .clone()
            .unwrap_or_else(|| "portcullis".to_owned());
        if service_name.is_empty()
            || service_name.len() > 255
            || service_name.chars().any(char::is_control)
        {
            self.at_value(
                "tracing.service_name",
                "tracing: service_name must be 1 to 255 characters without control characters"
                    .to_owned(),
            );
        }
        let max_queued_spans = raw.max_queued_spans.unwrap_or(DEFAULT_QUEUE);
        if !(1..=1_000_000).contains(&max_queued_spans) {
            self.at_value(
                "tracing.max_queued_spans",
                "tracing: max_queued_spans must be between 1 and 1000000".to_owned(),
            );
        }
        let mut trust = TraceparentTrust::default();
        if let Some(t) = &raw.trust_traceparent {
            for (i, text) in t.from.iter().enumerate() {
                match parse_cidr(text) {
                    Ok(net) => trust.from.push(net),
                    Err(msg) => self.at_value(
                        &format!("tracing.trust_traceparent.from[{i}]"),
                        format!("tracing: trust_traceparent.from: {msg}"),
                    ),
                }
            }
            for (i, text) in t.spiffe_ids.iter().enumerate() {
                match text.parse() {
                    Ok(pattern) => trust.spiffe_ids.push(pattern),
                    Err(e) => self.at_value(
                        &format!("tracing.trust_traceparent.spiffe_ids[{i}]"),
                        format!("tracing: trust_traceparent.spiffe_ids: `{text}`: {e}"),
                    ),
                }
            }
        }
        TracingSettings {
            endpoint,
            protocol,
            tls,
            timeout,
            ratio,
            parent_based: sampling.and_then(|s| s.parent_based).unwrap_or(true),
            service_name,
            trust,
            max_queued_spans,
        }
    }
}

/// `http(s)://host:port[/path]`: a host and a port number, nothing else before the path.
fn http_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !authority.contains('@')
        && port.parse::<u16>().is_ok_and(|p| p > 0)
        && url.bytes().all(|b| b.is_ascii_graphic())
}
