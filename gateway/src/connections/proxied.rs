//! A listener behind an L4 balancer (`connections.proxy_protocol`). Before the TLS handshake,
//! a connection from one of the balancers must begin with a PROXY header (v1 or v2), read
//! within the configured timeout; the bytes after it are put back on the stream for rustls.
//!
//! The carried source is made the connection's peer address in the socket digest that pingora
//! reads `client_addr()` from, so everything downstream of the accept loop — per-source
//! connection caps, `source` rules, per-source rate limits, X-Forwarded-For (now trusted or not
//! by the carried address), access log and audit — sees the client, never the balancer, without
//! a second notion of "the client address" to keep in step.

use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use tokio::io::AsyncReadExt;

use super::proxy_header::{parse, HeaderError, Parsed, MAX_HEADER};

/// Why a balancer's connection was closed before its header was read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderRefusal {
    /// Not a PROXY header, or not a valid one (a TLS ClientHello sent straight, a forgery cut
    /// short, an unknown version).
    Malformed(HeaderError),
    /// Over the v1 line's or our v2 bound.
    Oversized(HeaderError),
    /// Not whole within the timeout.
    Timeout,
    /// The peer closed (or the socket failed) before the header was whole; `empty` when it
    /// sent nothing at all (a balancer's plain TCP check).
    Closed { empty: bool },
}

impl HeaderRefusal {
    /// The label counted: a refusal reason, or for `Timeout` the timeout's name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HeaderRefusal::Malformed(_) | HeaderRefusal::Closed { .. } => "proxy_header",
            HeaderRefusal::Oversized(_) => "proxy_header_size",
            HeaderRefusal::Timeout => "proxy_header",
        }
    }
}

/// Reads the PROXY header at the start of `stream` within `timeout`. Returns the carried
/// source (`None` for LOCAL/UNKNOWN), with every byte read past the header put back.
pub(crate) async fn read_header(
    stream: &mut L4Stream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, HeaderRefusal> {
    let mut buf = [0u8; MAX_HEADER];
    let mut filled = 0;
    let read = async {
        // Each read adds at least one byte, and the buffer holds any header whole, so this
        // ends within MAX_HEADER reads.
        loop {
            let n = match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return Err(HeaderRefusal::Closed { empty: filled == 0 }),
                Ok(n) => n,
            };
            filled += n;
            match parse(&buf[..filled]) {
                Ok(Parsed::Complete(header)) => return Ok(header),
                Ok(Parsed::Incomplete) => {}
                Err(e) if e.is_oversized() => return Err(HeaderRefusal::Oversized(e)),
                Err(e) => return Err(HeaderRefusal::Malformed(e)),
            }
        }
    };
    let header = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| HeaderRefusal::Timeout)??;
    stream.rewind(&buf[header.len..filled]);
    Ok(header.source)
}

/// Makes `source` the connection's peer address for pingora (`client_addr()`) and for us.
pub(crate) fn carry_source(stream: &mut L4Stream, source: SocketAddr) {
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    // A new cell: nothing can have filled it yet.
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(source)));
    stream.set_socket_digest(digest);
}

/// At most one log line per interval for a kind of refusal, so that a flood of refused
/// connections cannot flood the log; the lines skipped are counted into the next one.
#[derive(Debug)]
pub(crate) struct LogGate {
    start: Instant,
    /// Milliseconds since `start` of the last line, plus one (0: none yet).
    last: AtomicU64,
    skipped: AtomicU64,
}

const LOG_INTERVAL_MS: u64 = 1000;

impl LogGate {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(lines skipped since the last one)` when a line may be written now.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_INTERVAL_MS;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair: what the client writes, the gateway's stream reads.
    async fn pair() -> (TcpStream, L4Stream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.set_nodelay(true).unwrap();
        (client, L4Stream::from(server))
    }

    #[tokio::test]
    async fn a_split_header_is_read_whole_and_the_hello_kept() {
        let (mut client, mut stream) = pair().await;
        let writer = tokio::spawn(async move {
            for piece in [
                &b"PROXY TCP4 192.0"[..],
                b".2.7 127.0.0.1 5",
                b"1000 8443\r\n\x16\x03",
            ] {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client.write_all(b"\x01rest").await.unwrap();
            client
        });
        let source = read_header(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(source, Ok(Some("192.0.2.7:51000".parse().unwrap())));
        let _client = writer.await.unwrap();
        let mut after = [0u8; 7];
        stream.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"\x16\x03\x01rest");
        carry_source(&mut stream, "192.0.2.7:51000".parse().unwrap());
        let digest = stream.get_socket_digest().unwrap();
        assert_eq!(
            digest.peer_addr().and_then(|a| a.as_inet()).copied(),
            Some("192.0.2.7:51000".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_slow_header_times_out_and_a_bare_hello_is_refused() {
        let (mut client, mut stream) = pair().await;
        client.write_all(b"PROXY TCP4").await.unwrap();
        let refused = read_header(&mut stream, Duration::from_millis(200)).await;
        assert_eq!(refused, Err(HeaderRefusal::Timeout));
        let (mut client, mut stream) = pair().await;
        client
            .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8])
            .await
            .unwrap();
        let refused = read_header(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(
            refused,
            Err(HeaderRefusal::Malformed(HeaderError::NotProxy))
        );
        let (client, mut stream) = pair().await;
        drop(client);
        let refused = read_header(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(refused, Err(HeaderRefusal::Closed { empty: true }));
    }

    #[test]
    fn log_gate_lets_one_line_through_per_interval() {
        let gate = LogGate::new();
        assert_eq!(gate.admit(), Some(0));
        assert_eq!(gate.admit(), None);
        assert_eq!(gate.admit(), None);
        gate.last.store(1, Ordering::Relaxed);
        // Pretend the last line was long ago: the next one reports the two skipped.
        let long_ago = Instant::now() - Duration::from_secs(5);
        let gate = LogGate {
            start: long_ago,
            ..gate
        };
        assert_eq!(gate.admit(), Some(2));
    }
}
