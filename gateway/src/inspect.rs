//! Body inspection on the data path: feeds request and response bodies, chunk by chunk, to the
//! route's DLP scanner, decoding gzip/deflate on the way with bounds on size and expansion
//! ratio, and stops scanning (or refuses) past the inspection limit. Nothing here keeps or
//! logs matched data: only the scanner's counts leave this module.

use flate2::{Decompress, FlushDecompress, Status};
use portcullis_policy::{
    BodyDirection, Findings, InspectionLimits, OverLimit, RouteInspection, Scanner,
};

use crate::admission::Refusal;

/// How the body is encoded, from `Content-Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    /// An encoding we cannot decode (br, zstd, several layers...).
    Opaque,
}

impl Encoding {
    pub(crate) fn from_header(value: Option<&str>) -> Self {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            None => Encoding::Identity,
            Some(v) if v.is_empty() || v == "identity" => Encoding::Identity,
            Some(v) if v == "gzip" || v == "x-gzip" => Encoding::Gzip,
            Some(v) if v == "deflate" => Encoding::Deflate,
            Some(_) => Encoding::Opaque,
        }
    }
}

/// Whether a body of this content type is text we scan: text, JSON, XML, forms. A body
/// without a content type is scanned too (an attacker chooses the header).
pub(crate) fn scannable(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct.is_empty()
        || ct.starts_with("text/")
        || ct == "application/json"
        || ct.ends_with("+json")
        || ct == "application/x-www-form-urlencoded"
        || ct == "application/xml"
        || ct.ends_with("+xml")
        || ct == "application/javascript"
        || ct == "application/x-ndjson"
}

/// Streaming inflate with bounded output per step.
struct Inflate {
    z: Decompress,
    done: bool,
}

const STEP: usize = 64 * 1024;

impl Inflate {
    fn new(encoding: Encoding) -> Self {
        let z = match encoding {
            // 15-bit window, gzip wrapper.
            Encoding::Gzip => Decompress::new_gzip(15),
            _ => Decompress::new(true),
        };
        Self { z, done: false }
    }

    /// Decodes `input`, handing each decoded piece to `sink`, which may refuse.
    fn feed(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Refusal>,
        direction: BodyDirection,
    ) -> Result<(), Refusal> {
        let mut out = vec![0u8; STEP];
        while !self.done {
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(input, &mut out, FlushDecompress::None)
                .map_err(|_| Refusal::Undecodable(direction, "corrupt compressed body"))?;
            let consumed = (self.z.total_in() - in_before) as usize;
            let produced = (self.z.total_out() - out_before) as usize;
            input = &input[consumed.min(input.len())..];
            sink(&out[..produced])?;
            if status == Status::StreamEnd {
                self.done = true;
            }
            if input.is_empty() && produced < out.len() {
                break;
            }
            if consumed == 0 && produced == 0 {
                break;
            }
        }
        Ok(())
    }
}

/// Inspects one body.
pub(crate) struct BodyInspector {
    direction: BodyDirection,
    scanner: Scanner,
    inflate: Option<Inflate>,
    /// Whether scanning may change the body's length (decoding or redaction).
    changes_length: bool,
    limits: InspectionLimits,
    raw_bytes: u64,
    decoded_bytes: u64,
    scanned_bytes: u64,
    /// Past the inspection limit with `over_limit: pass`: the rest goes through unscanned.
    pub(crate) incomplete: bool,
}

impl BodyInspector {
    /// Starts inspecting a body the admission plan says to scan. A body in an encoding we
    /// cannot read is over the inspection limit from its first byte (the plan has already
    /// refused it if the route refuses such bodies).
    pub(crate) fn new(
        inspection: &RouteInspection,
        direction: BodyDirection,
        encoding: Encoding,
    ) -> Self {
        let inflate =
            matches!(encoding, Encoding::Gzip | Encoding::Deflate).then(|| Inflate::new(encoding));
        Self {
            direction,
            scanner: inspection.policy.scanner(direction),
            changes_length: inflate.is_some() || inspection.may_rewrite(direction),
            inflate,
            limits: inspection.limits,
            raw_bytes: 0,
            decoded_bytes: 0,
            scanned_bytes: 0,
            incomplete: encoding == Encoding::Opaque,
        }
    }

    /// Whether the forwarded body is the decoded one (so `Content-Encoding` must go).
    pub(crate) fn decodes(&self) -> bool {
        self.inflate.is_some()
    }

    /// Whether the forwarded body's length may differ from the received one's (so
    /// `Content-Length` must go).
    pub(crate) fn changes_length(&self) -> bool {
        self.changes_length
    }

    pub(crate) fn findings(&self) -> &Findings {
        self.scanner.findings()
    }

    /// Feeds the next chunk (and, with `end`, finishes). Returns what may be forwarded now.
    pub(crate) fn push(&mut self, chunk: &[u8], end: bool) -> Result<Vec<u8>, Refusal> {
        self.raw_bytes += chunk.len() as u64;
        let mut out = Vec::with_capacity(chunk.len());
        match self.inflate.take() {
            None => self.scan(chunk, &mut out)?,
            Some(mut inflate) => {
                let (limits, direction) = (self.limits, self.direction);
                let raw = self.raw_bytes;
                let mut decoded = self.decoded_bytes;
                let mut pieces = Vec::new();
                inflate.feed(
                    chunk,
                    &mut |piece| {
                        decoded += piece.len() as u64;
                        // A ratio is only meaningful past a floor: tiny bodies compress well.
                        let expanded =
                            decoded > 64 * 1024 && decoded > raw.saturating_mul(limits.max_ratio);
                        if decoded > limits.max_decompressed_bytes || expanded {
                            return Err(Refusal::Undecodable(
                                direction,
                                "compressed body expands beyond the limit",
                            ));
                        }
                        pieces.extend_from_slice(piece);
                        Ok(())
                    },
                    direction,
                )?;
                self.decoded_bytes = decoded;
                self.inflate = Some(inflate);
                self.scan(&pieces, &mut out)?;
            }
        }
        // Once incomplete, the scanner has already been flushed.
        if end && !self.incomplete {
            let tail = self
                .scanner
                .finish()
                .map_err(|b| Refusal::DlpBlocked(self.direction, b.detector))?;
            out.extend_from_slice(&tail);
        }
        Ok(out)
    }

    /// Scans up to the inspection limit; past it, passes through or refuses.
    fn scan(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        if self.incomplete {
            out.extend_from_slice(data);
            return Ok(());
        }
        let room = self.limits.max_bytes.saturating_sub(self.scanned_bytes);
        let (inspect, rest) = data.split_at((room as usize).min(data.len()));
        let scanned = self
            .scanner
            .push(inspect)
            .map_err(|b| Refusal::DlpBlocked(self.direction, b.detector))?;
        out.extend_from_slice(&scanned);
        self.scanned_bytes += inspect.len() as u64;
        if !rest.is_empty() {
            if self.limits.over_limit == OverLimit::Refuse {
                return Err(Refusal::OverInspectionLimit(self.direction));
            }
            // Release what the scanner held back (scanned), then the rest unscanned.
            let tail = self
                .scanner
                .finish()
                .map_err(|b| Refusal::DlpBlocked(self.direction, b.detector))?;
            out.extend_from_slice(&tail);
            out.extend_from_slice(rest);
            self.incomplete = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::sync::Arc;

    use portcullis_policy::Config;

    use super::*;

    /// The inspection of the only route of a config with the given tenant settings.
    fn inspection(tenant_settings: &str) -> Arc<RouteInspection> {
        let yaml = format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:8443\n    tls: {{ certificate: s.pem, private_key: s.key, client_ca: ca.pem }}\n\
             upstreams:\n  - name: u\n    targets: [127.0.0.1:9000]\n\
             tenants:\n  - name: t\n{tenant_settings}    routes:\n      - name: r\n        upstream: u\n"
        );
        let config = Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap();
        let route = config.routes.iter().next().unwrap();
        route.inspection.clone().unwrap()
    }

    const SSN: &str = "    dlp: { request: { us_ssn: redact } }\n";

    fn inspector(settings: &str, encoding: Encoding) -> BodyInspector {
        BodyInspector::new(&inspection(settings), BodyDirection::Request, encoding)
    }

    #[test]
    fn past_the_limit_the_rest_passes_unscanned_or_is_refused() {
        let pass = format!("{SSN}    body_inspection: {{ max_bytes: 32 }}\n");
        let mut scan = inspector(&pass, Encoding::Identity);
        let body = b"ssn 123-45-6789 then padding padding padding 987-65-4321";
        let out = scan.push(body, true).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("ssn [REDACTED:us_ssn] then"), "{out}");
        assert!(
            out.ends_with("987-65-4321"),
            "past the limit: unscanned: {out}"
        );
        assert!(scan.incomplete);

        let refuse = format!("{SSN}    body_inspection: {{ max_bytes: 32, over_limit: refuse }}\n");
        let mut scan = inspector(&refuse, Encoding::Identity);
        assert!(matches!(
            scan.push(body, true),
            Err(Refusal::OverInspectionLimit(BodyDirection::Request))
        ));
    }

    #[test]
    fn an_unreadable_encoding_passes_uninspected_and_says_so() {
        let mut scan = inspector(SSN, Encoding::Opaque);
        assert!(scan.incomplete);
        assert_eq!(scan.push(b"123-45-6789", true).unwrap(), b"123-45-6789");
    }

    #[test]
    fn gzip_is_decoded_across_chunks_and_corrupt_input_refused() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"id 123-45-6789 end").unwrap();
        let gz = enc.finish().unwrap();
        let mut scan = inspector(SSN, Encoding::Gzip);
        let mut out = Vec::new();
        for piece in gz.chunks(3) {
            out.extend(scan.push(piece, false).unwrap());
        }
        out.extend(scan.push(&[], true).unwrap());
        assert_eq!(out, b"id [REDACTED:us_ssn] end");
        let mut scan = inspector(SSN, Encoding::Gzip);
        assert!(matches!(
            scan.push(b"not gzip at all", true),
            Err(Refusal::Undecodable(BodyDirection::Request, _))
        ));
    }

    #[test]
    fn only_text_bodies_are_scanned() {
        assert!(scannable(Some("application/json; charset=utf-8")));
        assert!(scannable(Some("application/vnd.api+json")));
        assert!(scannable(None));
        assert!(!scannable(Some("image/png")));
        assert!(!scannable(Some("application/octet-stream")));
    }
}
