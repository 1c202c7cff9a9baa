//! `multipart/*` bodies read part by part, each with its own headers: a part's
//! `Content-Transfer-Encoding` (base64, quoted-printable) is decoded for the scanner, a part
//! that is itself `multipart/*` is read the same way (at most [`MAX_DEPTH`] levels), and any
//! other part is read with its JSON escapes decoded, like a whole body. Delimiter lines and
//! part headers are scanned as they are (a file name can carry data too).
//!
//! The parser is strict where being lenient would let the gateway and the upstream read
//! different parts: a part with two `Content-Type` or `Content-Transfer-Encoding` headers, a
//! folded header line, or a header block over [`MAX_HEADER_BYTES`] is refused.

use memchr::memchr;
use memchr::memmem::Finder;

use super::json::JsonEscapes;
use super::view::ViewOut;
use super::Problem;

/// Most levels of multipart inside multipart.
pub(super) const MAX_DEPTH: usize = 3;
/// Most bytes of one part's header block.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most bytes on a delimiter line (after the boundary: `--`, padding, CRLF).
const MAX_DELIMITER_LINE: usize = 1024;

/// The `boundary` parameter of a `multipart/*` content type, if it is one and has a valid one.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim().as_bytes();
    if !kind
        .get(.."multipart/".len())
        .is_some_and(|k| k.eq_ignore_ascii_case(b"multipart/"))
    {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let valid = (1..=70).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            && !value.ends_with(' ');
        valid.then(|| value.to_owned())
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the very start: the body may open with the first delimiter.
    Start,
    Preamble,
    /// After a delimiter's boundary: the rest of its line (`--` closes the body).
    DelimiterLine,
    Headers,
    Body,
    Epilogue,
}

/// A part's headers, as far as reading it goes.
#[derive(Debug, Default)]
struct PartHeaders {
    content_type: Option<String>,
    transfer_encoding: Option<String>,
    bytes: usize,
}

/// How a part's content is read.
#[derive(Debug)]
enum PartBody {
    Text(JsonEscapes),
    Base64(Base64),
    QuotedPrintable(QuotedPrintable),
    Nested(Box<Multipart>),
}

/// The multipart reader of one body (or part).
#[derive(Debug)]
pub(super) struct Multipart {
    /// `--boundary`, for a body that opens with it.
    dash_boundary: Vec<u8>,
    /// `\r\n--boundary`.
    delimiter: Finder<'static>,
    state: State,
    /// Source bytes not yet read (a possible delimiter, an incomplete line).
    buf: Vec<u8>,
    headers: PartHeaders,
    part: Option<PartBody>,
    depth: usize,
    pass_unknown: bool,
}

impl Multipart {
    pub(super) fn new(boundary: &str, depth: usize, pass_unknown: bool) -> Self {
        let dash_boundary = format!("--{boundary}").into_bytes();
        let delimiter = Finder::new(format!("\r\n--{boundary}").as_bytes()).into_owned();
        Self {
            dash_boundary,
            delimiter,
            state: State::Start,
            buf: Vec::new(),
            headers: PartHeaders::default(),
            part: None,
            depth,
            pass_unknown,
        }
    }

    pub(super) fn feed(&mut self, input: &[u8], out: &mut ViewOut) -> Result<(), Problem> {
        self.buf.extend_from_slice(input);
        let buf = std::mem::take(&mut self.buf);
        let used = self.read(&buf, out);
        self.buf = buf;
        let used = used?;
        self.buf.drain(..used);
        Ok(())
    }

    /// Ends the body: what is held is read as part content or as it is.
    pub(super) fn finish(&mut self, out: &mut ViewOut) -> Result<(), Problem> {
        let rest = std::mem::take(&mut self.buf);
        match self.part.take() {
            Some(mut part) if self.state == State::Body => {
                part.feed(&rest, out)?;
                part.finish(out)
            }
            _ => {
                out.same(&rest);
                Ok(())
            }
        }
    }

    /// Reads what it can of `buf`; returns how many bytes it used.
    fn read(&mut self, buf: &[u8], out: &mut ViewOut) -> Result<usize, Problem> {
        let delimiter_len = self.delimiter.needle().len();
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.state {
                State::Start => {
                    let n = self.dash_boundary.len();
                    if rest.len() < n && self.dash_boundary.starts_with(rest) {
                        return Ok(at);
                    }
                    if rest.starts_with(&self.dash_boundary) {
                        out.same(&rest[..n]);
                        at += n;
                        self.state = State::DelimiterLine;
                    } else {
                        self.state = State::Preamble;
                    }
                }
                State::Preamble | State::Body => match self.delimiter.find(rest) {
                    Some(k) => {
                        self.content(&rest[..k], out)?;
                        if let Some(mut part) = self.part.take() {
                            part.finish(out)?;
                        }
                        out.same(&rest[k..k + delimiter_len]);
                        at += k + delimiter_len;
                        self.state = State::DelimiterLine;
                    }
                    None => {
                        let safe = rest.len() - partial_suffix(rest, self.delimiter.needle());
                        self.content(&rest[..safe], out)?;
                        return Ok(at + safe);
                    }
                },
                State::DelimiterLine => {
                    if rest.starts_with(b"--") {
                        self.state = State::Epilogue;
                        continue;
                    }
                    match memchr(b'\n', rest) {
                        // Only transport padding may follow the boundary: a longer line is
                        // content to an upstream that reads the boundary strictly.
                        Some(k) if !padding(&rest[..k]) => {
                            return Err(Problem::Malformed("multipart delimiter line"))
                        }
                        Some(k) => {
                            out.same(&rest[..=k]);
                            at += k + 1;
                            self.headers = PartHeaders::default();
                            self.state = State::Headers;
                        }
                        None if rest.len() > MAX_DELIMITER_LINE => {
                            return Err(Problem::Malformed("multipart delimiter line too long"))
                        }
                        None => return Ok(at),
                    }
                }
                State::Headers => match memchr(b'\n', rest) {
                    Some(k) => {
                        let line = &rest[..=k];
                        out.same(line);
                        at += k + 1;
                        self.headers.bytes += line.len();
                        if self.headers.bytes > MAX_HEADER_BYTES {
                            return Err(Problem::Malformed("multipart part headers too long"));
                        }
                        let line = line.strip_suffix(b"\n").unwrap_or(line);
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        if line.is_empty() {
                            self.part = Some(self.part_body(out)?);
                            self.state = State::Body;
                        } else {
                            self.header_line(line)?;
                        }
                    }
                    None if self.headers.bytes + rest.len() > MAX_HEADER_BYTES => {
                        return Err(Problem::Malformed("multipart part headers too long"))
                    }
                    None => return Ok(at),
                },
                State::Epilogue => {
                    out.same(rest);
                    return Ok(buf.len());
                }
            }
        }
    }

    /// Preamble bytes as they are; part content through the part's reader.
    fn content(&mut self, bytes: &[u8], out: &mut ViewOut) -> Result<(), Problem> {
        match &mut self.part {
            Some(part) if self.state == State::Body => part.feed(bytes, out),
            _ => {
                out.same(bytes);
                Ok(())
            }
        }
    }

    fn header_line(&mut self, line: &[u8]) -> Result<(), Problem> {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(Problem::Malformed("folded multipart header"));
        }
        let Some(colon) = memchr(b':', line) else {
            return Err(Problem::Malformed("multipart header without a colon"));
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_owned();
        let slot = match name.as_str() {
            "content-type" => &mut self.headers.content_type,
            "content-transfer-encoding" => &mut self.headers.transfer_encoding,
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err(Problem::DuplicatePartHeader);
        }
        *slot = Some(value);
        Ok(())
    }

    /// The reader for the part whose headers were just read.
    fn part_body(&mut self, out: &mut ViewOut) -> Result<PartBody, Problem> {
        let cte = self
            .headers
            .transfer_encoding
            .as_deref()
            .map(str::to_ascii_lowercase);
        match cte.as_deref() {
            None | Some("7bit" | "8bit" | "binary") => {}
            Some("base64") => return Ok(PartBody::Base64(Base64::default())),
            Some("quoted-printable") => {
                return Ok(PartBody::QuotedPrintable(QuotedPrintable::default()))
            }
            Some(_) if self.pass_unknown => {
                out.unknown_encoding = true;
                return Ok(PartBody::Text(JsonEscapes::default()));
            }
            Some(_) => return Err(Problem::UnknownEncoding),
        }
        match self.headers.content_type.as_deref().and_then(boundary) {
            Some(_) if self.depth + 1 >= MAX_DEPTH => {
                Err(Problem::Malformed("multipart nested too deep"))
            }
            Some(b) => Ok(PartBody::Nested(Box::new(Multipart::new(
                &b,
                self.depth + 1,
                self.pass_unknown,
            )))),
            None => Ok(PartBody::Text(JsonEscapes::default())),
        }
    }
}

impl PartBody {
    fn feed(&mut self, bytes: &[u8], out: &mut ViewOut) -> Result<(), Problem> {
        match self {
            PartBody::Text(json) => json.feed(bytes, out),
            PartBody::Base64(b) => b.feed(bytes, out),
            PartBody::QuotedPrintable(q) => q.feed(bytes, out),
            PartBody::Nested(m) => return m.feed(bytes, out),
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut ViewOut) -> Result<(), Problem> {
        match self {
            PartBody::Text(json) => json.finish(out),
            PartBody::Base64(b) => b.finish(out),
            PartBody::QuotedPrintable(q) => q.finish(out),
            PartBody::Nested(m) => return m.finish(out),
        }
        Ok(())
    }
}

/// Whether the rest of a delimiter line is transport padding (spaces, tabs, then CR).
fn padding(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.iter().all(|b| *b == b' ' || *b == b'\t')
}

/// How many bytes at the end of `data` could be the start of `needle`.
fn partial_suffix(data: &[u8], needle: &[u8]) -> usize {
    let longest = needle.len().saturating_sub(1).min(data.len());
    (1..=longest)
        .rev()
        .find(|&n| needle.starts_with(&data[data.len() - n..]))
        .unwrap_or(0)
}

/// Base64 content. Upstreams differ: some decode it, many (RFC 7578 deprecates the header in
/// forms) read the text as it is. So both are scanned: the part is held until it ends (it is
/// within `max_bytes`), then the view is the decoded bytes (characters outside the alphabet
/// ignored, as RFC 2045 says), a line break, and the text as it is. Only the text is source,
/// and it comes last: it leaves only once the decoded bytes have been scanned.
#[derive(Debug, Default)]
struct Base64 {
    text: Vec<u8>,
}

impl Base64 {
    fn feed(&mut self, bytes: &[u8], _out: &mut ViewOut) {
        self.text.extend_from_slice(bytes);
    }

    fn finish(&mut self, out: &mut ViewOut) {
        let text = std::mem::take(&mut self.text);
        let mut decoded = Vec::with_capacity(text.len() / 4 * 3 + 3);
        let mut group = [0u8; 4];
        let mut n = 0;
        let flush = |group: &mut [u8; 4], n: &mut usize, decoded: &mut Vec<u8>| {
            let g = *group;
            let bytes = [
                (g[0] << 2) | (g[1] >> 4),
                (g[1] << 4) | (g[2] >> 2),
                (g[2] << 6) | g[3],
            ];
            decoded.extend_from_slice(&bytes[..n.saturating_sub(1)]);
            *group = [0; 4];
            *n = 0;
        };
        for &b in &text {
            let value = match b {
                b'A'..=b'Z' => b - b'A',
                b'a'..=b'z' => b - b'a' + 26,
                b'0'..=b'9' => b - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if n >= 2 => {
                    flush(&mut group, &mut n, &mut decoded);
                    continue;
                }
                _ => continue,
            };
            group[n] = value;
            n += 1;
            if n == 4 {
                flush(&mut group, &mut n, &mut decoded);
            }
        }
        if n >= 2 {
            flush(&mut group, &mut n, &mut decoded);
        }
        decoded.push(b'\n');
        out.decoded(0, &decoded);
        out.same(&text);
    }
}

/// Quoted-printable content: `=XX` decoded, soft line breaks (`=` at a line's end) removed;
/// everything else is its own view (so it can be redacted exactly).
#[derive(Debug, Default)]
struct QuotedPrintable {
    /// An `=` sequence cut by the chunk boundary.
    held: Vec<u8>,
}

impl QuotedPrintable {
    fn feed(&mut self, bytes: &[u8], out: &mut ViewOut) {
        let joined;
        let data: &[u8] = if self.held.is_empty() {
            bytes
        } else {
            let mut held = std::mem::take(&mut self.held);
            held.extend_from_slice(bytes);
            joined = held;
            &joined
        };
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            let Some(k) = memchr(b'=', rest) else {
                out.same(rest);
                break;
            };
            out.same(&rest[..k]);
            let seq = &rest[k..];
            let (a, b) = (seq.get(1).copied(), seq.get(2).copied());
            match (a, b) {
                (None, _) | (Some(b'\r'), None) => {
                    self.held = seq.to_vec();
                    break;
                }
                (Some(b'\n'), _) => {
                    out.decoded(2, b"");
                    i += k + 2;
                }
                (Some(b'\r'), Some(b'\n')) => {
                    out.decoded(3, b"");
                    i += k + 3;
                }
                (Some(h), None) if h.is_ascii_hexdigit() => {
                    self.held = seq.to_vec();
                    break;
                }
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    let byte = (hex(h) << 4) | hex(l);
                    out.decoded(3, &[byte]);
                    i += k + 3;
                }
                _ => {
                    out.same(b"=");
                    i += k + 1;
                }
            }
        }
    }

    fn finish(&mut self, out: &mut ViewOut) {
        out.same(&std::mem::take(&mut self.held));
    }
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        b'A'..=b'F' => d - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
