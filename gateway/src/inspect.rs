//! Body inspection on the data path. Every body a DLP route receives (request) or sends
//! (response) goes through here, whatever its framing: the scanner is planned from the headers
//! (admission for requests, `upstream_response_filter` for responses) and created on the first
//! body byte, so a request or response without a body costs nothing.
//!
//! A body is read in three steps: its `Content-Encoding` is undone (`decode`: gzip, deflate,
//! br, zstd, stacked, within bounds on size and ratio; the decoded body is what is forwarded),
//! then a *view* is made for the scanner — JSON escapes decoded (`json`), or a multipart body
//! read part by part (`multipart`) — and the scanner reads the view. `view` maps what the
//! scanner released and redacted back onto the decoded body. Past `max_bytes` the body is
//! refused, or passed unscanned when the tenant says so; whatever passes unscanned is
//! reported by reason ([`Unscanned`]). Nothing here keeps or logs matched data: only the
//! scanner's counts leave this module.

mod decode;
mod json;
mod multipart;
mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use portcullis_policy::{
    BodyDirection, Findings, InspectionLimits, OverLimit, RouteInspection, Scanner,
};

use crate::admission::{BodyPlan, Refusal};
use decode::Decoders;
use json::JsonEscapes;
use multipart::Multipart;
use view::{SourceMap, ViewOut};

pub use decode::{Coding, Codings};
pub(crate) use multipart::boundary;

/// Why some of a body went through unscanned. Each is counted in
/// `portcullis_dlp_unscanned_total{tenant,direction,reason}`, written in the access line and
/// recorded in the audit record's `dlp` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unscanned {
    /// Past `max_bytes`, under `over_limit: pass`.
    OverLimit,
    /// In an encoding the gateway cannot decode, under `unknown_encoding: pass`.
    UnknownEncoding,
    /// WebSocket (or other upgraded, or CONNECT) traffic, under the route's `websocket: allow`.
    Websocket,
}

impl Unscanned {
    /// The reason's label in metrics and records.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unscanned::OverLimit => "over_limit",
            Unscanned::UnknownEncoding => "unknown_encoding",
            Unscanned::Websocket => "websocket",
        }
    }
}

/// How a body is read for scanning, from its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyFormat {
    /// The content codings to undo.
    pub codings: Codings,
    /// How the decoded body is read.
    pub content: Content,
}

/// How a decoded body is read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Content {
    /// Text-like (text, JSON, XML, forms, no content type): JSON escapes decoded.
    Text,
    /// Any other type, scanned as bytes (JSON escapes decoded too: the upstream may read it
    /// as JSON whatever the label says).
    Bytes,
    /// `multipart/*`, part by part.
    Multipart { boundary: String },
    /// gRPC (`application/grpc`, `+proto`…): length-prefixed messages, scanned as bytes. A
    /// redaction would change a message's length under its prefix, so a `redact` finding
    /// refuses the call instead (`unredactable`).
    Grpc,
}

impl Content {
    /// Reads a content type (the plan then refuses [`Content::Bytes`] under
    /// `other_content: refuse`).
    pub(crate) fn of(content_type: Option<&str>) -> Content {
        let Some(ct) = content_type else {
            return Content::Text;
        };
        if let Some(boundary) = boundary(ct) {
            return Content::Multipart { boundary };
        }
        // Compared without case, as sent (no lower-cased copy).
        let ct = ct.split(';').next().unwrap_or("").trim().as_bytes();
        let is = |t: &str| ct.eq_ignore_ascii_case(t.as_bytes());
        let starts = |p: &str| {
            ct.get(..p.len())
                .is_some_and(|c| c.eq_ignore_ascii_case(p.as_bytes()))
        };
        let ends = |s: &str| {
            ct.len() >= s.len() && ct[ct.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
        };
        if starts("application/grpc") && matches!(ct.get(16), None | Some(b'+')) {
            return Content::Grpc;
        }
        let text = ct.is_empty()
            || starts("text/")
            || is("application/json")
            || ends("+json")
            || is("application/x-www-form-urlencoded")
            || is("application/xml")
            || ends("+xml")
            || is("application/javascript")
            || is("application/x-ndjson");
        if text {
            Content::Text
        } else {
            Content::Bytes
        }
    }
}

/// Why a body could not be read; the inspector turns it into the refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// Does not decode as its encoding says.
    Corrupt(&'static str),
    /// Decodes to more than the limits allow.
    ExpandsTooFar,
    /// A multipart body that cannot be read unambiguously.
    Malformed(&'static str),
    /// A multipart part with two `Content-Type` or `Content-Transfer-Encoding` headers.
    DuplicatePartHeader,
    /// A part in a transfer encoding we cannot decode.
    UnknownEncoding,
}

impl Problem {
    fn refusal(self, direction: BodyDirection) -> Refusal {
        match self {
            Problem::Corrupt(why) => Refusal::Undecodable(direction, why),
            Problem::ExpandsTooFar => Refusal::ExpandsTooFar(direction),
            Problem::Malformed(why) => Refusal::MalformedBody(direction, why),
            Problem::DuplicatePartHeader => {
                Refusal::AmbiguousBodyHeader(direction, "multipart part header")
            }
            Problem::UnknownEncoding => Refusal::Uninspectable(direction),
        }
    }
}

/// One body's inspection: planned, then running once the first byte arrives.
pub(crate) struct BodyScan {
    direction: BodyDirection,
    state: ScanState,
    /// Whether the forwarded body is decoded and may change length (decided with the plan).
    decodes: bool,
    changes_length: bool,
    unscanned: Vec<Unscanned>,
}

enum ScanState {
    Planned(Arc<RouteInspection>, BodyFormat),
    Running(Box<BodyInspector>),
    /// Forwarded unscanned for this reason (counted once a byte passes).
    Passing(Unscanned),
}

impl BodyScan {
    /// The scan a plan asks for; `None` when the body is not inspected at all.
    pub(crate) fn planned(
        inspection: &Arc<RouteInspection>,
        direction: BodyDirection,
        plan: &BodyPlan,
    ) -> Option<Self> {
        let (state, decodes, changes_length) = match plan {
            BodyPlan::Forward => return None,
            BodyPlan::Unscanned(reason) => (ScanState::Passing(*reason), false, false),
            BodyPlan::Scan(format) => {
                let decodes = !format.codings.is_empty();
                let changes_length = decodes || inspection.may_rewrite(direction);
                (
                    ScanState::Planned(inspection.clone(), format.clone()),
                    decodes,
                    changes_length,
                )
            }
        };
        Some(Self {
            direction,
            state,
            decodes,
            changes_length,
            unscanned: Vec::new(),
        })
    }

    /// Whether the forwarded body is the decoded one (so `Content-Encoding` must go).
    pub(crate) fn decodes(&self) -> bool {
        self.decodes
    }

    /// Whether the forwarded body's length may differ from the received one's (so
    /// `Content-Length` must go).
    pub(crate) fn changes_length(&self) -> bool {
        self.changes_length
    }

    /// What the scanner found, if it ran.
    pub(crate) fn findings(&self) -> Option<&Findings> {
        match &self.state {
            ScanState::Running(inspector) => Some(inspector.scanner.findings()),
            _ => None,
        }
    }

    /// What passed unscanned, by reason.
    pub(crate) fn unscanned(&self) -> &[Unscanned] {
        &self.unscanned
    }

    /// Feeds the next chunk (and, with `end`, finishes). Returns what may be forwarded now.
    pub(crate) fn push(&mut self, chunk: &[u8], end: bool) -> Result<Vec<u8>, Refusal> {
        if let ScanState::Planned(inspection, format) = &self.state {
            if chunk.is_empty() {
                return Ok(Vec::new());
            }
            let inspector = BodyInspector::new(inspection, self.direction, format)?;
            self.state = ScanState::Running(Box::new(inspector));
        }
        match &mut self.state {
            ScanState::Planned(..) => Ok(Vec::new()),
            ScanState::Passing(reason) => {
                if !chunk.is_empty() && !self.unscanned.contains(reason) {
                    self.unscanned.push(*reason);
                }
                Ok(chunk.to_vec())
            }
            ScanState::Running(inspector) => {
                let out = inspector.push(chunk, end);
                for reason in inspector.unscanned.drain(..) {
                    if !self.unscanned.contains(&reason) {
                        self.unscanned.push(reason);
                    }
                }
                out
            }
        }
    }
}

/// How the decoded body is turned into the scanner's view.
enum Stage {
    Text(JsonEscapes),
    Multipart(Box<Multipart>),
}

/// Inspects one body.
pub(crate) struct BodyInspector {
    direction: BodyDirection,
    limits: InspectionLimits,
    decoders: Decoders,
    stage: Stage,
    map: SourceMap,
    scanner: Scanner,
    /// Decoded bytes handed to the view.
    scanned: u64,
    /// Past the inspection limit under `over_limit: pass`: the rest goes through unscanned.
    passing: bool,
    /// Reasons found since the owner last looked.
    unscanned: Vec<Unscanned>,
    /// Whether a redaction may be made (not in length-prefixed gRPC messages).
    redactable: bool,
}

impl BodyInspector {
    pub(crate) fn new(
        inspection: &RouteInspection,
        direction: BodyDirection,
        format: &BodyFormat,
    ) -> Result<Self, Refusal> {
        let limits = inspection.limits;
        let stage = match &format.content {
            Content::Multipart { boundary } => Stage::Multipart(Box::new(Multipart::new(
                boundary,
                0,
                limits.unknown_encoding == portcullis_policy::UnknownEncoding::Pass,
            ))),
            Content::Text | Content::Bytes | Content::Grpc => Stage::Text(JsonEscapes::default()),
        };
        Ok(Self {
            direction,
            limits,
            decoders: Decoders::new(&format.codings, limits).map_err(|p| p.refusal(direction))?,
            stage,
            map: SourceMap::default(),
            scanner: inspection.policy.scanner(direction),
            scanned: 0,
            passing: false,
            unscanned: Vec::new(),
            redactable: format.content != Content::Grpc,
        })
    }

    /// Feeds the next chunk (and, with `end`, finishes). Returns what may be forwarded now.
    pub(crate) fn push(&mut self, chunk: &[u8], end: bool) -> Result<Vec<u8>, Refusal> {
        let direction = self.direction;
        let decoded = self
            .decoders
            .push(chunk)
            .map_err(|p| p.refusal(direction))?;
        if self.passing {
            return Ok(decoded.into_owned());
        }
        let room = self.limits.max_bytes.saturating_sub(self.scanned);
        let (inspect, rest) =
            decoded.split_at(usize::try_from(room).map_or(decoded.len(), |r| r.min(decoded.len())));
        let mut out = Vec::with_capacity(decoded.len());
        if !rest.is_empty() {
            if self.limits.over_limit == OverLimit::Refuse {
                // What fits is scanned (and its findings counted) before the refusal.
                self.feed(inspect, false, &mut out)?;
                return Err(Refusal::OverInspectionLimit(direction));
            }
            // Release what was scanned, then the rest unscanned.
            self.feed(inspect, true, &mut out)?;
            out.extend_from_slice(rest);
            self.passing = true;
            self.unscanned.push(Unscanned::OverLimit);
        } else {
            self.feed(inspect, end, &mut out)?;
        }
        Ok(out)
    }

    /// Hands decoded bytes to the view and the scanner; releases what the scanner released.
    /// With `last`, the view and the scanner are ended too and everything is released.
    fn feed(&mut self, data: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), Refusal> {
        self.scanned += data.len() as u64;
        let mut view = ViewOut::default();
        let direction = self.direction;
        match &mut self.stage {
            Stage::Text(json) => {
                json.feed(data, &mut view);
                if last {
                    // One view and one final scan for the last bytes and what the view held
                    // (the same as scanning them in turn: the scanner is exact whatever the
                    // chunking).
                    json.finish(&mut view);
                    self.map.push(data, &view);
                    return self.scan(&view, true, out);
                }
            }
            Stage::Multipart(m) => m.feed(data, &mut view).map_err(|p| p.refusal(direction))?,
        }
        self.map.push(data, &view);
        self.scan(&view, false, out)?;
        if last {
            self.close(out)?;
        }
        Ok(())
    }

    /// Ends a multipart view and the scanner and releases everything.
    fn close(&mut self, out: &mut Vec<u8>) -> Result<(), Refusal> {
        let mut view = ViewOut::default();
        let direction = self.direction;
        match &mut self.stage {
            Stage::Text(json) => json.finish(&mut view),
            Stage::Multipart(m) => m.finish(&mut view).map_err(|p| p.refusal(direction))?,
        }
        self.map.push(&[], &view);
        self.scan(&view, true, out)
    }

    /// Scans the view; with `end`, as the body's last, and checks every byte was accounted for.
    fn scan(&mut self, view: &ViewOut, end: bool, out: &mut Vec<u8>) -> Result<(), Refusal> {
        let direction = self.direction;
        let blocked = |b: portcullis_policy::Blocked| Refusal::DlpBlocked(direction, b.detector);
        if view.unknown_encoding && !self.unscanned.contains(&Unscanned::UnknownEncoding) {
            self.unscanned.push(Unscanned::UnknownEncoding);
        }
        if end {
            self.scanner.push_last(&view.view).map_err(blocked)?;
        } else {
            self.scanner.push(&view.view).map_err(blocked)?;
        }
        let redactions = self.scanner.take_redactions();
        if !self.redactable && !redactions.is_empty() {
            return Err(Refusal::Unredactable(direction));
        }
        self.map
            .release(self.scanner.released(), redactions, out)
            .map_err(|_| Refusal::Unredactable(direction))?;
        if end && !self.map.is_drained() {
            // Every stage accounts for each byte it was given by the time it finishes.
            return Err(Refusal::Internal);
        }
        Ok(())
    }
}
