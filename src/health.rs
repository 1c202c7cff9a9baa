//! `portcullis health [URL]`: one plain-HTTP GET of the metrics listener's `/healthz` (or
//! `/readyz`), exit 0 on a 2xx answer. It is the container's HEALTHCHECK and a probe for
//! images without curl; it speaks just enough HTTP/1.1 for the gateway's own listener.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

/// Connect, write and read, each within this.
const TIMEOUT: Duration = Duration::from_secs(3);
/// A status line and headers fit in far less; the body is not needed.
const MAX_READ: usize = 4096;

/// GETs `url` (`http://HOST:PORT/PATH`) and succeeds on a 2xx status.
pub(crate) fn probe(url: &str) -> anyhow::Result<()> {
    let (authority, path) = split_url(url)?;
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{url}: {authority} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("{url}: cannot connect"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: portcullis-health\r\n\r\n"
    )
    .with_context(|| format!("{url}: cannot send the request"))?;
    let mut head = Vec::with_capacity(256);
    stream
        .take(MAX_READ as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("{url}: no answer"))?;
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("{url}: not an HTTP answer: {:?}", line.trim_end()))?;
    if !(200..300).contains(&status) {
        bail!("{url}: {}", line.trim_end());
    }
    println!("{url}: {}", line.trim_end());
    Ok(())
}

/// `http://host:port/path` into (`host:port`, `/path`); no TLS: the metrics listener is plain.
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url.strip_prefix("http://").with_context(|| {
        format!("{url}: give an http:// URL (the metrics listener is plain HTTP)")
    })?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:9901/healthz").unwrap(),
            ("127.0.0.1:9901", "/healthz")
        );
        assert_eq!(split_url("http://[::1]:9901").unwrap(), ("[::1]:9901", "/"));
        assert!(split_url("https://127.0.0.1:9901/healthz").is_err());
    }
}
