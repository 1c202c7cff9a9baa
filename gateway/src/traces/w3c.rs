//! W3C Trace Context: the `traceparent` header read strictly (what an outsider sends is
//! parsed, never trusted to be well formed) and written for the upstream.

use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

/// A `traceparent` that parsed: `00-<trace id>-<parent id>-<flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

/// The longest `tracestate` passed on (the W3C limit: 32 members of at most 256 bytes is more,
/// but 512 is what implementations must propagate).
pub(crate) const MAX_TRACESTATE: usize = 512;

/// Reads a `traceparent` value. `None` for anything the spec says to ignore: a version that
/// is not two lower-case hex digits or is `ff`, ids that are not lower-case hex of the right
/// length or are all zero, a version `00` header with anything after the flags, and a future
/// version whose extra fields do not start with `-`.
pub(crate) fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let b = value.trim_matches(|c| c == ' ' || c == '\t').as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = hex_u8(&b[0..2])?;
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = u128::from_str_radix(lower_hex(&b[3..35])?, 16).ok()?;
    let span_id = u64::from_str_radix(lower_hex(&b[36..52])?, 16).ok()?;
    let flags = hex_u8(&b[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(TraceParent {
        trace_id: TraceId::from(trace_id),
        span_id: SpanId::from(span_id),
        // Only the sampled bit is defined; the others are not passed on.
        flags: TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
    })
}

/// Whether a `tracestate` value may be passed on as it is: bounded, printable ASCII.
pub(crate) fn acceptable_tracestate(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_TRACESTATE
        && value.iter().all(|&b| b == b' ' || b.is_ascii_graphic())
}

fn lower_hex(b: &[u8]) -> Option<&str> {
    b.iter()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        .then(|| std::str::from_utf8(b).ok())
        .flatten()
}

fn hex_u8(b: &[u8]) -> Option<u8> {
    u8::from_str_radix(lower_hex(b)?, 16).ok()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

/// A trace id as 32 lower-case hex digits, kept inline: what the access line and the audit
/// record carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceHex([u8; 32]);

impl TraceHex {
    pub(crate) fn of(id: TraceId) -> Self {
        let mut hex = [0; 32];
        write_hex(&mut hex, &id.to_bytes());
        Self(hex)
    }

    /// From hex digits already checked (32 of them, any case).
    pub(crate) fn from_checked(digits: &[u8]) -> Option<Self> {
        let digits: [u8; 32] = digits.try_into().ok()?;
        digits
            .iter()
            .all(u8::is_ascii_hexdigit)
            .then(|| Self(digits.map(|b| b.to_ascii_lowercase())))
    }

    pub(crate) fn as_str(&self) -> &str {
        // Hex digits are ASCII: the conversion cannot fail.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for TraceHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `traceparent` the upstream gets: our trace, our span as its parent.
pub(crate) fn format_traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    write_hex(&mut out[3..35], &trace_id.to_bytes());
    write_hex(&mut out[36..52], &span_id.to_bytes());
    if sampled {
        out[54] = b'1';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_well_formed_traceparent_parses() {
        let p = parse_traceparent(GOOD).unwrap();
        assert_eq!(
            p.trace_id,
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736_u128)
        );
        assert_eq!(p.span_id, SpanId::from(0x00f067aa0ba902b7_u64));
        assert!(p.flags.is_sampled());
        let unsampled = parse_traceparent(&GOOD.replace("-01", "-00")).unwrap();
        assert!(!unsampled.flags.is_sampled());
        // Surrounding blanks are allowed (OWS); unknown flag bits are dropped.
        let p = parse_traceparent(&format!(" {} ", GOOD.replace("-01", "-ff"))).unwrap();
        assert_eq!(p.flags, TraceFlags::SAMPLED);
    }

    #[test]
    fn what_the_spec_says_to_ignore_is_refused() {
        for bad in [
            "",
            "garbage",
            "00",
            // Upper case is not the spec's HEXDIGLC.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff is invalid.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Version 00 has nothing after the flags.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
            // Short, long or misplaced fields.
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // A future version's extra fields must start with `-`.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
        // A future version is read as far as version 00 goes.
        assert!(parse_traceparent(&GOOD.replacen("00", "01", 1)).is_some());
        assert!(parse_traceparent(&format!("{}-more", GOOD.replacen("00", "cc", 1))).is_some());
    }

    #[test]
    fn the_upstream_traceparent_reads_back() {
        let p = parse_traceparent(GOOD).unwrap();
        let out = format_traceparent(p.trace_id, p.span_id, true);
        assert_eq!(std::str::from_utf8(&out).unwrap(), GOOD);
        let out = format_traceparent(p.trace_id, p.span_id, false);
        assert!(std::str::from_utf8(&out).unwrap().ends_with("-00"));
        assert_eq!(
            TraceHex::of(p.trace_id).as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn tracestate_is_passed_on_only_when_bounded_and_printable() {
        assert!(acceptable_tracestate(
            b"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"
        ));
        assert!(!acceptable_tracestate(b""));
        assert!(!acceptable_tracestate(b"a=b\tc=d"));
        assert!(!acceptable_tracestate(&[b'a'; MAX_TRACESTATE + 1]));
    }

    proptest! {
        #[test]
        fn any_header_value_parses_or_not_without_panicking(s in "\\PC{0,80}") {
            let _ = parse_traceparent(&s);
        }

        #[test]
        fn anything_that_parses_writes_back_the_same(t in 1u128.., s in 1u64.., sampled: bool) {
            let out = format_traceparent(TraceId::from(t), SpanId::from(s), sampled);
            let p = parse_traceparent(std::str::from_utf8(&out).unwrap()).unwrap();
            prop_assert_eq!((p.trace_id, p.span_id, p.flags.is_sampled()), (TraceId::from(t), SpanId::from(s), sampled));
        }
    }
}
