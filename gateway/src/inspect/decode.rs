//! `Content-Encoding` decoders: gzip, deflate, br and zstd, stacked in any order, each bounded
//! by the route's limits on decoded size and expansion ratio. A coding we do not know is not
//! guessed at: the plan refuses it (or passes it unscanned, when the tenant says so).

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Decompress, FlushDecompress, Status};
use portcullis_policy::InspectionLimits;
use std::borrow::Cow;
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

use super::Problem;

/// Most codings a body may stack.
const MAX_LAYERS: usize = 4;
/// Output produced per decoding step: bounds what one step can expand to before it is checked.
const STEP: usize = 64 * 1024;
/// Below this many decoded bytes the ratio is not judged: tiny bodies compress well.
const RATIO_FLOOR: u64 = 64 * 1024;
/// zstd's window is capped at 8 MiB (2^23): a frame asking for more is refused, so a header
/// cannot make us allocate the 2 GiB window the format allows.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// One content coding the gateway decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// zlib-wrapped deflate (RFC 9110's `deflate`).
    Deflate,
    Brotli,
    Zstd,
}

/// A body's `Content-Encoding`: the codings to undo, in the order they are undone (the last
/// one listed first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Codings(Vec<Coding>);

/// Why a `Content-Encoding` cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UnknownCoding;

impl Codings {
    /// Reads a `Content-Encoding` value: a comma-separated list, `identity` ignored.
    pub(crate) fn parse(header: Option<&str>) -> Result<Self, UnknownCoding> {
        let mut applied = Vec::new();
        for token in header.unwrap_or("").split(',') {
            let coding = match token.trim().to_ascii_lowercase().as_str() {
                "" | "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(UnknownCoding),
            };
            applied.push(coding);
        }
        if applied.len() > MAX_LAYERS {
            return Err(UnknownCoding);
        }
        applied.reverse();
        Ok(Codings(applied))
    }

    /// Whether there is anything to decode.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The codings in the order they are undone.
    pub fn layers(&self) -> &[Coding] {
        &self.0
    }
}

/// The decoders of one body, outermost first, with the bytes each has produced.
pub(super) struct Decoders {
    layers: Vec<(Layer, u64)>,
    raw: u64,
    limits: InspectionLimits,
}

impl Decoders {
    pub(super) fn new(codings: &Codings, limits: InspectionLimits) -> Result<Self, Problem> {
        let layers = codings
            .layers()
            .iter()
            .map(|c| Layer::new(*c).map(|l| (l, 0)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            layers,
            raw: 0,
            limits,
        })
    }

    /// Decodes the next chunk through every layer.
    pub(super) fn push<'a>(&mut self, chunk: &'a [u8]) -> Result<Cow<'a, [u8]>, Problem> {
        self.raw += chunk.len() as u64;
        // No coding: the chunk is what is scanned, uncopied.
        let mut data = Cow::Borrowed(chunk);
        let (raw, limits) = (self.raw, self.limits);
        for (layer, produced) in &mut self.layers {
            let mut out = Vec::new();
            layer.decode(&data, &mut |piece: &[u8]| {
                *produced += piece.len() as u64;
                let expanded =
                    *produced > RATIO_FLOOR && *produced > raw.saturating_mul(limits.max_ratio);
                if *produced > limits.max_decompressed_bytes || expanded {
                    return Err(Problem::ExpandsTooFar);
                }
                out.extend_from_slice(piece);
                Ok(())
            })?;
            data = Cow::Owned(out);
        }
        Ok(data)
    }
}

type Sink<'a> = dyn FnMut(&[u8]) -> Result<(), Problem> + 'a;

/// One streaming decoder.
enum Layer {
    Inflate {
        z: Decompress,
        gzip: bool,
        done: bool,
    },
    Brotli {
        state: Box<BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>>,
        done: bool,
    },
    Zstd {
        z: Box<ZstdDecoder<'static>>,
    },
}

impl Layer {
    fn new(coding: Coding) -> Result<Self, Problem> {
        Ok(match coding {
            Coding::Gzip => Layer::Inflate {
                z: Decompress::new_gzip(15),
                gzip: true,
                done: false,
            },
            Coding::Deflate => Layer::Inflate {
                z: Decompress::new(true),
                gzip: false,
                done: false,
            },
            Coding::Brotli => Layer::Brotli {
                state: Box::new(BrotliState::new(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                )),
                done: false,
            },
            Coding::Zstd => {
                let mut z = ZstdDecoder::new().map_err(|_| Problem::Corrupt("zstd decoder"))?;
                z.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .map_err(|_| Problem::Corrupt("zstd decoder"))?;
                Layer::Zstd { z: Box::new(z) }
            }
        })
    }

    /// Decodes `input`, handing each decoded piece (at most [`STEP`] bytes) to `sink`.
    fn decode(&mut self, input: &[u8], sink: &mut Sink<'_>) -> Result<(), Problem> {
        let mut out = vec![0u8; STEP];
        match self {
            Layer::Inflate { z, gzip, done } => {
                let mut input = input;
                while !input.is_empty() || !*done {
                    if *done {
                        // gzip allows several members one after another; the other
                        // codings end where their stream ends.
                        if !*gzip {
                            return Err(Problem::Corrupt("data after the end of the stream"));
                        }
                        *z = Decompress::new_gzip(15);
                        *done = false;
                    }
                    let (in_before, out_before) = (z.total_in(), z.total_out());
                    let status = z
                        .decompress(input, &mut out, FlushDecompress::None)
                        .map_err(|_| Problem::Corrupt("corrupt compressed body"))?;
                    let consumed = usize::try_from(z.total_in() - in_before).unwrap_or(0);
                    let produced = usize::try_from(z.total_out() - out_before).unwrap_or(0);
                    input = input.get(consumed..).unwrap_or_default();
                    sink(out.get(..produced).unwrap_or_default())?;
                    if status == Status::StreamEnd {
                        *done = true;
                        continue;
                    }
                    if (input.is_empty() && produced < out.len())
                        || (consumed == 0 && produced == 0)
                    {
                        break;
                    }
                }
            }
            Layer::Brotli { state, done } => {
                let mut offset = 0;
                loop {
                    if *done {
                        if offset < input.len() {
                            return Err(Problem::Corrupt("data after the end of the stream"));
                        }
                        break;
                    }
                    let mut available_in = input.len() - offset;
                    let (mut available_out, mut out_offset, mut total) = (out.len(), 0, 0);
                    let result = BrotliDecompressStream(
                        &mut available_in,
                        &mut offset,
                        input,
                        &mut available_out,
                        &mut out_offset,
                        &mut out,
                        &mut total,
                        state,
                    );
                    sink(out.get(..out_offset).unwrap_or_default())?;
                    match result {
                        BrotliResult::ResultSuccess => *done = true,
                        BrotliResult::NeedsMoreOutput => {}
                        BrotliResult::NeedsMoreInput => break,
                        BrotliResult::ResultFailure => {
                            return Err(Problem::Corrupt("corrupt brotli body"))
                        }
                    }
                }
            }
            Layer::Zstd { z } => {
                let mut offset = 0;
                loop {
                    let rest = input.get(offset..).unwrap_or_default();
                    let mut inb = InBuffer::around(rest);
                    let mut outb = OutBuffer::around(&mut out[..]);
                    z.run(&mut inb, &mut outb)
                        .map_err(|_| Problem::Corrupt("corrupt zstd body"))?;
                    let (consumed, produced) = (inb.pos(), outb.pos());
                    offset += consumed;
                    sink(out.get(..produced).unwrap_or_default())?;
                    // Frames may follow one another; the decoder starts the next by itself.
                    if offset >= input.len() && produced < out.len() {
                        break;
                    }
                    if consumed == 0 && produced == 0 {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings_are_listed_in_the_order_applied_and_undone_in_reverse() {
        let c = Codings::parse(Some("gzip, br")).unwrap();
        assert_eq!(c.layers(), &[Coding::Brotli, Coding::Gzip]);
        assert!(Codings::parse(Some("identity")).unwrap().is_empty());
        assert!(Codings::parse(None).unwrap().is_empty());
        assert_eq!(
            Codings::parse(Some("ZSTD")).unwrap().layers(),
            &[Coding::Zstd]
        );
        assert_eq!(Codings::parse(Some("compress")), Err(UnknownCoding));
        assert_eq!(Codings::parse(Some("gzip, x-custom")), Err(UnknownCoding));
        assert_eq!(
            Codings::parse(Some("gzip,gzip,gzip,gzip,gzip")),
            Err(UnknownCoding)
        );
    }
}
