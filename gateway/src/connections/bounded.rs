//! The deadlines pingora 0.9 does not have, on the downstream stream itself: a whole HTTP/1
//! request head (or the HTTP/2 preface) within `request_head_timeout`, and no write stalled
//! longer than `write_timeout`. Small writes are gathered until a flush, so that a response's
//! head and a short body leave as one TLS record and one system call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, sleep_until, Instant, Sleep};

use crate::metrics::Metrics;

/// Writes are gathered up to this many bytes before they go to TLS. pingora flushes wherever
/// bytes must leave now (a head without a body, each piece of a streamed body, the end of a
/// response), and h2 after each batch of frames.
const GATHER: usize = 16 * 1024;

/// The gathering buffer keeps at most this much room once sent: a keep-alive connection that
/// has sent a large response does not hold the buffer it needed for all of its idle time.
const KEEP_GATHERED: usize = 4 * 1024;

/// Where an HTTP/1 connection is in reading a request head.
#[derive(Debug)]
pub(crate) struct HeadPhase(AtomicU8);

const HEAD_DONE: u8 = 0;
const HEAD_AWAITING: u8 = 1;
const HEAD_READING: u8 = 2;

impl HeadPhase {
    /// A new connection's first head is timed from now.
    pub(crate) fn new() -> Self {
        Self(AtomicU8::new(HEAD_READING))
    }

    /// After a response: the next head is timed from its first byte (the wait for it is the
    /// keep-alive idle timeout).
    pub(crate) fn next_request(&self) {
        self.0.store(HEAD_AWAITING, Ordering::Release);
    }
}

/// Finds the end of an HTTP/1 head (an empty line) in the bytes as they are read.
#[derive(Debug, Default)]
struct HeadEnd {
    /// A byte other than CR/LF was seen (leading empty lines are not the end).
    content: bool,
    /// The last byte other than CR was LF.
    after_lf: bool,
}

impl HeadEnd {
    /// Whether `bytes` complete the head. Line by line (memchr for LF), so a head costs a few
    /// instructions per line rather than per byte.
    fn scan(&mut self, bytes: &[u8]) -> bool {
        let mut start = 0;
        for lf in memchr::memchr_iter(b'\n', bytes) {
            self.line(&bytes[start..lf]);
            if self.after_lf && self.content {
                return true;
            }
            self.after_lf = true;
            start = lf + 1;
        }
        self.line(&bytes[start..]);
        false
    }

    /// Bytes between two LFs: anything but CR is content and ends the empty-line run.
    fn line(&mut self, bytes: &[u8]) {
        if bytes.iter().any(|&b| b != b'\r') {
            self.content = true;
            self.after_lf = false;
        }
    }
}

/// A downstream connection with the deadlines pingora does not have: the whole HTTP/1 request
/// head within `head_timeout`, and no write stalled longer than `write_timeout`. Either
/// failing is an I/O error (`TimedOut`), which makes pingora close the connection.
#[derive(Debug)]
pub(crate) struct BoundedStream {
    inner: Stream,
    phase: Arc<HeadPhase>,
    head_timeout: Duration,
    head_end: HeadEnd,
    /// When the head being read started; `None` between heads.
    head_since: Option<Instant>,
    /// The head deadline's timer, made only once a read has to wait, and reused.
    head_timer: Option<Pin<Box<Sleep>>>,
    write_timeout: Duration,
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// Written by pingora, not yet handed to TLS; `gathered_sent` of it already has been.
    gathered: Vec<u8>,
    gathered_sent: usize,
    listener: String,
    metrics: Arc<Metrics>,
}

impl BoundedStream {
    pub(crate) fn new(
        inner: Stream,
        phase: Arc<HeadPhase>,
        head_timeout: Duration,
        write_timeout: Duration,
        listener: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        let head_since = (phase.0.load(Ordering::Acquire) == HEAD_READING).then(Instant::now);
        Self {
            inner,
            phase,
            head_timeout,
            head_end: HeadEnd::default(),
            head_since,
            head_timer: None,
            write_timeout,
            write_deadline: None,
            gathered: Vec::new(),
            gathered_sent: 0,
            listener,
            metrics,
        }
    }

    fn timed_out(&self, what: &'static str) -> std::io::Error {
        self.metrics.connection_timeout(&self.listener, what);
        tracing::info!(listener = %self.listener, timeout = what, "connection cut");
        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timeout"))
    }

    /// Polls a write-side operation, cutting it once it has made no progress for the write
    /// timeout.
    fn bound_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut Stream>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match poll(Pin::new(&mut self.inner), cx) {
            Poll::Ready(result) => {
                self.write_deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let deadline = self
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(sleep(timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    self.write_deadline = None;
                    return Poll::Ready(Err(self.timed_out("write")));
                }
                Poll::Pending
            }
        }
    }
}

impl BoundedStream {
    /// Takes `bufs` (`len` bytes in all) into the gathered bytes if they fit.
    fn gather<'a>(&mut self, len: usize, bufs: impl IntoIterator<Item = &'a [u8]>) -> bool {
        if self.gathered.len() + len > GATHER {
            return false;
        }
        for buf in bufs {
            self.gathered.extend_from_slice(buf);
        }
        true
    }

    /// Hands every gathered byte to TLS.
    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.gathered_sent < self.gathered.len() {
            let gathered = std::mem::take(&mut self.gathered);
            let from = self.gathered_sent;
            let written = self.bound_write(cx, |s, cx| s.poll_write(cx, &gathered[from..]));
            self.gathered = gathered;
            match written {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.gathered_sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.gathered.capacity() > KEEP_GATHERED {
            self.gathered = Vec::new();
        } else {
            self.gathered.clear();
        }
        self.gathered_sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let phase = this.phase.0.load(Ordering::Acquire);
        if phase == HEAD_DONE {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if phase == HEAD_AWAITING && !read.is_empty() {
                    // The first byte of the next request starts its head's clock.
                    this.head_end = HeadEnd::default();
                    this.head_since = Some(Instant::now());
                    this.phase.0.store(HEAD_READING, Ordering::Release);
                }
                if this.head_end.scan(read) {
                    this.head_since = None;
                    this.phase.0.store(HEAD_DONE, Ordering::Release);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(since) = this.head_since else {
                    return Poll::Pending;
                };
                // A head that arrives in one read (nearly all) never makes a timer.
                let deadline = since + this.head_timeout;
                let timer = this
                    .head_timer
                    .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.head_since = None;
                    this.phase.0.store(HEAD_DONE, Ordering::Release);
                    return Poll::Ready(Err(this.timed_out("request_head")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.gather(buf.len(), [buf]) {
            return Poll::Ready(Ok(buf.len()));
        }
        ready!(this.poll_send_gathered(cx))?;
        if buf.len() < GATHER {
            this.gathered.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        this.bound_write(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // pingora writes a chunk as size line, data and CRLF in one vectored write: gathered
        // like any other, so a head, its chunks and the last chunk leave as one TLS record.
        let this = &mut *self;
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        if this.gather(len, bufs.iter().map(|b| &**b)) {
            return Poll::Ready(Ok(len));
        }
        ready!(this.poll_send_gathered(cx))?;
        this.bound_write(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_send_gathered(cx))?;
        self.bound_write(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_send_gathered(cx))?;
        self.bound_write(cx, |s, cx| s.poll_shutdown(cx))
    }
}

#[async_trait]
impl Shutdown for BoundedStream {
    async fn shutdown(&mut self) {
        // A client that does not read cannot hold the close either.
        let timeout = self.write_timeout;
        let close = async {
            // What was gathered still goes out first.
            let _ = tokio::io::AsyncWriteExt::flush(self).await;
            self.inner.shutdown().await;
        };
        if tokio::time::timeout(timeout, close).await.is_err() {
            tracing::debug!(listener = %self.listener, "shutdown timed out");
        }
    }
}

impl UniqueID for BoundedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for BoundedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for BoundedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for BoundedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for BoundedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for BoundedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http2_preface_ends_like_a_head() {
        let mut end = HeadEnd::default();
        assert!(end.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    }

    #[test]
    fn head_end_is_the_first_empty_line_after_content() {
        let mut end = HeadEnd::default();
        assert!(!end.scan(b"\r\n\r\n"), "leading empty lines are skipped");
        assert!(!end.scan(b"GET / HTTP/1.1\r\nHost: a\r"));
        assert!(!end.scan(b"\n\r"));
        assert!(end.scan(b"\nbody"));
        let mut end = HeadEnd::default();
        assert!(end.scan(b"GET / HTTP/1.1\nHost: a\n\n"), "bare LF lines");
        let mut end = HeadEnd::default();
        for b in b"GET / HTTP/1.1\r\nX: y\r\n" {
            assert!(!end.scan(&[*b]), "one byte at a time");
        }
        assert!(!end.scan(b"\r"));
        assert!(end.scan(b"\n"));
    }
}
