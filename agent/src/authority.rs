//! grpc-core clients (Python's `grpcio`, hence py-spiffe; C++, Ruby) send the percent-encoded
//! socket path as the `:authority` of a request on a Unix socket, which is no valid authority;
//! hyper's HTTP/2 server (`h2`) resets such a stream with PROTOCOL_ERROR (hyperium/h2#487,
//! grpc/grpc#38142). Go and tonic clients send `localhost`. So the agent sits in front of the
//! HTTP/2 server on each connection: frames from the client pass through unchanged except
//! request header blocks, which are decoded (HPACK), given `localhost` for an `:authority` that
//! is not one, and encoded again. Answers pass through untouched. The authority means nothing
//! to the agent: callers are known by their peer credentials only.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::unix::UCred;
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// The client connection preface.
const PREFACE_LEN: usize = 24;
/// Largest frame accepted from a client (the server's SETTINGS_MAX_FRAME_SIZE is the HTTP/2
/// default, 16 KiB; h2 refuses larger ones itself, this only bounds what is buffered here).
const MAX_FRAME: usize = 16 * 1024;
/// Largest request header block collected from HEADERS and CONTINUATION frames.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Buffer between the relay and the HTTP/2 server.
const PIPE: usize = 64 * 1024;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// One accepted connection as the HTTP/2 server sees it: the relayed bytes, and the peer
/// credentials of the real socket.
pub(crate) struct Relayed {
    io: DuplexStream,
    cred: Option<UCred>,
}

impl Relayed {
    /// Starts relaying `stream`; the returned end is for the HTTP/2 server.
    pub(crate) fn start(stream: UnixStream) -> Self {
        let cred = stream.peer_cred().ok();
        let (server_end, relay_end) = tokio::io::duplex(PIPE);
        tokio::spawn(async move {
            let (mut client_read, mut client_write) = stream.into_split();
            let (mut server_read, mut server_write) = tokio::io::split(relay_end);
            let requests = async {
                let result = relay_requests(&mut client_read, &mut server_write).await;
                let _ = server_write.shutdown().await;
                result
            };
            let answers = async {
                let result = tokio::io::copy(&mut server_read, &mut client_write).await;
                let _ = client_write.shutdown().await;
                result.map(|_| ())
            };
            // Either side ending ends the connection.
            let outcome = tokio::select! {
                r = requests => r,
                r = answers => r,
            };
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "Workload API connection ended");
            }
        });
        Self {
            io: server_end,
            cred,
        }
    }
}

impl Connected for Relayed {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        UdsConnectInfo {
            peer_addr: None,
            peer_cred: self.cred,
        }
    }
}

impl AsyncRead for Relayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Relayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// A header block being collected: its stream, the HEADERS flags and priority fields.
struct PendingBlock {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// Copies the client's frames to the server, rewriting request header blocks.
async fn relay_requests<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE_LEN];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    let mut decoder = hpack::Decoder::new();
    let mut encoder = hpack::Encoder::new();
    let mut pending: Option<PendingBlock> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > MAX_FRAME {
            return Err(invalid("frame over the maximum size"));
        }
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        match (kind, pending.as_mut()) {
            (HEADERS, None) => {
                let (priority, fragment) = headers_fragment(flags, &payload)?;
                let block = PendingBlock {
                    stream,
                    flags,
                    priority,
                    block: fragment.to_vec(),
                };
                if flags & END_HEADERS != 0 {
                    send_block(&block, &mut decoder, &mut encoder, to).await?;
                } else {
                    pending = Some(block);
                }
            }
            (CONTINUATION, Some(block)) if block.stream == stream => {
                if block.block.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err(invalid("header block over the maximum size"));
                }
                block.block.extend_from_slice(&payload);
                if flags & END_HEADERS != 0 {
                    if let Some(block) = pending.take() {
                        send_block(&block, &mut decoder, &mut encoder, to).await?;
                    }
                }
            }
            // A frame interleaved in a header block, or a CONTINUATION out of one, is a
            // connection error (RFC 9113 §6.10): the server would close the connection.
            (_, Some(_)) | (CONTINUATION, None) => {
                return Err(invalid("frame interleaved in a header block"))
            }
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
            }
        }
    }
}

/// The priority fields and the header block fragment of a HEADERS frame's payload.
fn headers_fragment(flags: u8, payload: &[u8]) -> io::Result<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, after) = rest.split_first().ok_or_else(|| invalid("short HEADERS"))?;
        pad = usize::from(n);
        rest = after;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        if rest.len() < 5 {
            return Err(invalid("short HEADERS"));
        }
        let (fields, after) = rest.split_at(5);
        let mut p = [0u8; 5];
        p.copy_from_slice(fields);
        priority = Some(p);
        rest = after;
    }
    let end = rest
        .len()
        .checked_sub(pad)
        .ok_or_else(|| invalid("HEADERS padding over its length"))?;
    Ok((priority, &rest[..end]))
}

/// Decodes a header block, replaces an `:authority` that is not one with `localhost`, and
/// writes it again as HEADERS (and CONTINUATION frames when larger than a frame).
async fn send_block<W: AsyncWrite + Unpin>(
    block: &PendingBlock,
    decoder: &mut hpack::Decoder<'_>,
    encoder: &mut hpack::Encoder<'_>,
    to: &mut W,
) -> io::Result<()> {
    let mut headers = decoder
        .decode(&block.block)
        .map_err(|e| invalid(&format!("header block: {e:?}")))?;
    for (name, value) in headers.iter_mut() {
        if name.as_slice() == b":authority"
            && http::uri::Authority::try_from(value.as_slice()).is_err()
        {
            *value = b"localhost".to_vec();
        }
    }
    let encoded = encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    let mut first = Vec::with_capacity(encoded.len() + 5);
    if let Some(p) = block.priority {
        first.extend_from_slice(&p);
    }
    first.extend_from_slice(&encoded);
    let flags = block.flags & (END_STREAM | PRIORITY);
    let mut chunks = first.chunks(MAX_FRAME).peekable();
    let mut kind = HEADERS;
    let mut frame_flags = flags;
    if first.is_empty() {
        return write_frame(to, HEADERS, flags | END_HEADERS, block.stream, &[]).await;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let f = if last {
            frame_flags | END_HEADERS
        } else {
            frame_flags
        };
        write_frame(to, kind, f, block.stream, chunk).await?;
        kind = CONTINUATION;
        frame_flags = 0;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| invalid("frame too large"))?;
    let mut head = [0u8; 9];
    head[..3].copy_from_slice(&len.to_be_bytes()[1..]);
    head[3] = kind;
    head[4] = flags;
    head[5..].copy_from_slice(&stream.to_be_bytes());
    to.write_all(&head).await?;
    to.write_all(payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's bytes: the preface, SETTINGS, and one HEADERS frame (padded, with priority)
    /// whose block carries a percent-encoded socket path as `:authority`.
    fn client_bytes(authority: &[u8]) -> Vec<u8> {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        let block = hpack::Encoder::new().encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b":authority", authority),
            (b"workload.spiffe.io", b"true"),
        ]);
        let mut payload = vec![2u8];
        payload.extend_from_slice(&[0, 0, 0, 0, 15]);
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0, 0]);
        let len = payload.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[HEADERS, END_HEADERS | PADDED | PRIORITY, 0, 0, 0, 1]);
        out.extend_from_slice(&payload);
        out
    }

    async fn relayed(input: Vec<u8>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        relay_requests(&mut input.as_slice(), &mut out)
            .await
            .unwrap();
        assert_eq!(&out[..PREFACE_LEN], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let settings = &out[PREFACE_LEN..PREFACE_LEN + 9];
        assert_eq!(settings[3], 0x4, "other frames pass unchanged");
        let head = &out[PREFACE_LEN + 9..PREFACE_LEN + 18];
        assert_eq!((head[3], head[4]), (HEADERS, END_HEADERS | PRIORITY));
        let len = usize::from(head[1]) << 8 | usize::from(head[2]);
        let payload = &out[PREFACE_LEN + 18..PREFACE_LEN + 18 + len];
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 15], "priority kept");
        hpack::Decoder::new().decode(&payload[5..]).unwrap()
    }

    fn authority(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        headers
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let headers = relayed(client_bytes(b"%2Frun%2Fagent%2Fworkload.sock")).await;
        assert_eq!(authority(&headers), b"localhost");
        assert_eq!(headers.len(), 5);
        assert!(headers
            .iter()
            .any(|(n, v)| n == b"workload.spiffe.io" && v == b"true"));
        // A valid authority is left alone.
        let headers = relayed(client_bytes(b"localhost")).await;
        assert_eq!(authority(&headers), b"localhost");
        let headers = relayed(client_bytes(b"agent.internal:80")).await;
        assert_eq!(authority(&headers), b"agent.internal:80");
    }

    #[tokio::test]
    async fn malformed_frames_end_the_relay() {
        let mut bytes = client_bytes(b"x");
        bytes.truncate(PREFACE_LEN + 9);
        // A CONTINUATION out of any header block.
        bytes.extend_from_slice(&[0, 0, 0, CONTINUATION, END_HEADERS, 0, 0, 0, 1]);
        let mut out = Vec::new();
        assert!(relay_requests(&mut bytes.as_slice(), &mut out)
            .await
            .is_err());
        // An oversized frame.
        let mut bytes = client_bytes(b"x");
        bytes.truncate(PREFACE_LEN);
        bytes.extend_from_slice(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(relay_requests(&mut bytes.as_slice(), &mut Vec::new())
            .await
            .is_err());
    }
}
