//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that an L4 balancer puts in
//! front of a connection to carry the client's address. Parsed strictly from the bytes read so
//! far: [`parse`] says whether they hold a whole header (and its length, so that the bytes
//! after it — the TLS ClientHello — are handed on), need more, or can never be one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: the first 12 bytes of every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 header's first bytes.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The spec's bound on a whole v1 line, CRLF included.
pub(crate) const V1_MAX: usize = 107;
/// Our bound on a whole v2 header: the address block and room for a few TLVs (a balancer's
/// unique id, TLS details), far above what HAProxy sends by default.
pub(crate) const V2_MAX: usize = 16 + 1024;
/// The most bytes a header can span: what the reader needs room for.
pub(crate) const MAX_HEADER: usize = V2_MAX;

/// A whole header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProxyHeader {
    /// Its length in bytes: what follows belongs to the proxied connection.
    pub len: usize,
    /// The client's address; `None` for `LOCAL` (v2) and `UNKNOWN` (v1) — a balancer's health
    /// check or a client it cannot name — where the connection keeps the balancer's address.
    pub source: Option<SocketAddr>,
}

/// Why bytes can never start a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY v1 line")]
    MalformedV1,
    #[error("PROXY v1 line longer than 107 bytes")]
    TooLongV1,
    #[error("malformed PROXY v2 header")]
    MalformedV2,
    #[error("PROXY v2 header longer than 1040 bytes")]
    TooLongV2,
}

impl HeaderError {
    /// Whether the header was refused for its size (counted apart from other malformations).
    pub(crate) fn is_oversized(self) -> bool {
        matches!(self, HeaderError::TooLongV1 | HeaderError::TooLongV2)
    }
}

/// What the bytes read so far are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    Complete(ProxyHeader),
    /// A valid beginning: read more.
    Incomplete,
}

/// Parses the start of a connection. Never reads past the header's own bytes.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, HeaderError> {
    if starts_like(buf, &V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(Parsed::Incomplete);
        }
        parse_v2(buf)
    } else if starts_like(buf, V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(HeaderError::NotProxy)
    }
}

/// Whether `buf` and `prefix` agree on their common length.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(HeaderError::TooLongV1)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = window[..lf]
        .strip_suffix(b"\r")
        .ok_or(HeaderError::MalformedV1)?;
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::MalformedV1)?;
    let rest = line
        .strip_prefix("PROXY ")
        .ok_or(HeaderError::MalformedV1)?;
    let len = lf + 1;
    // UNKNOWN: the rest of the line is to be ignored (the spec's words).
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        return Ok(Parsed::Complete(ProxyHeader { len, source: None }));
    }
    let mut fields = rest.split(' ');
    let (family, src, dst, sport, dport) = match (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) {
        (Some(f), Some(s), Some(d), Some(sp), Some(dp), None) => (f, s, d, sp, dp),
        _ => return Err(HeaderError::MalformedV1),
    };
    // The destination is checked for its form, not used.
    let src: IpAddr = match family {
        "TCP4" => {
            v1_ipv4(dst)?;
            v1_ipv4(src)?.into()
        }
        "TCP6" => {
            v1_ipv6(dst)?;
            v1_ipv6(src)?.into()
        }
        _ => return Err(HeaderError::MalformedV1),
    };
    let sport = v1_port(sport)?;
    v1_port(dport)?;
    Ok(Parsed::Complete(ProxyHeader {
        len,
        source: Some(SocketAddr::new(src, sport)),
    }))
}

/// Dotted quad only (Rust's parser refuses leading zeros and other spellings).
fn v1_ipv4(text: &str) -> Result<Ipv4Addr, HeaderError> {
    text.parse().map_err(|_| HeaderError::MalformedV1)
}

fn v1_ipv6(text: &str) -> Result<Ipv6Addr, HeaderError> {
    text.parse().map_err(|_| HeaderError::MalformedV1)
}

/// 0-65535 in decimal, without a sign or leading zeros.
fn v1_port(text: &str) -> Result<u16, HeaderError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(HeaderError::MalformedV1);
    }
    text.parse().map_err(|_| HeaderError::MalformedV1)
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, HeaderError> {
    if buf.len() < 16 {
        // The version and command byte can be refused before the rest arrives.
        if let Some(&vc) = buf.get(12) {
            v2_command(vc)?;
        }
        return Ok(Parsed::Incomplete);
    }
    let local = v2_command(buf[12])?;
    let family = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Err(HeaderError::TooLongV2);
    }
    // LOCAL: the spec has the receiver discard the block, family included.
    if local {
        return Ok(if buf.len() < len {
            Parsed::Incomplete
        } else {
            Parsed::Complete(ProxyHeader { len, source: None })
        });
    }
    // The address block's size for the family; what follows it (TLVs) is not read.
    let needed = match family {
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => return Err(HeaderError::MalformedV2),
    };
    if body < needed {
        return Err(HeaderError::MalformedV2);
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let addresses = &buf[16..16 + needed];
    let source = match family {
        // TCP over IPv4 or IPv6: the only transports a TLS listener carries.
        0x11 => {
            let ip = Ipv4Addr::new(addresses[0], addresses[1], addresses[2], addresses[3]);
            let port = u16::from_be_bytes([addresses[8], addresses[9]]);
            Some(SocketAddr::new(ip.into(), port))
        }
        0x21 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addresses[..16]);
            let port = u16::from_be_bytes([addresses[32], addresses[33]]);
            Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
        }
        // PROXY with an unspecified family: the spec has the receiver use the real endpoints.
        0x00 => None,
        // UDP or a UNIX socket relayed as a TCP connection: not something a balancer sends.
        _ => return Err(HeaderError::MalformedV2),
    };
    Ok(Parsed::Complete(ProxyHeader { len, source }))
}

/// Version 2 and the command: `true` for LOCAL, `false` for PROXY.
fn v2_command(byte: u8) -> Result<bool, HeaderError> {
    match byte {
        0x20 => Ok(true),
        0x21 => Ok(false),
        _ => Err(HeaderError::MalformedV2),
    }
}

#[cfg(test)]
mod tests;
