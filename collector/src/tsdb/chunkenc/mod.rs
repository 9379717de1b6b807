//! Sample encodings for the collector's storage: an append-only, Gorilla-style
//! head chunk ([`XorChunk`]) and a compact codec for closed chunks
//! ([`encode_block`] / [`decode_block`]).
//!
//! A sample is `(t, v)`: `t` is a timestamp in milliseconds (`i64`), `v` an
//! `f64`. Both encodings reproduce every value **bit for bit**: NaN payloads
//! (Prometheus's staleness marker `0x7ff0000000000002` included), `-0.0`,
//! infinities and subnormals come back exactly as they went in. Timestamps are
//! handled with wrapping two's-complement arithmetic, so any `i64` sequence
//! round-trips; callers must still keep timestamps strictly increasing, which
//! is what the encodings are tuned for and what readers expect.
//!
//! Decoding never panics and never trusts a length or count it cannot check
//! against the size of its input: corrupt bytes give a [`ChunkError`] (or, when
//! the corruption is undetectable, wrong but harmless samples).
//!
//! # Notation
//!
//! * `uvarint`: unsigned LEB128 (7 bits per byte, least significant group
//!   first, high bit set on every byte but the last; at most 10 bytes).
//! * `varint`: a signed integer, zigzag-mapped (`(x << 1) ^ (x >> 63)`) and
//!   then written as a `uvarint`.
//! * `u64be`: 8 bytes, big-endian.
//! * Bit streams are written most significant bit first; `bits(n)` is an
//!   `n`-bit unsigned field, `sbits(n)` an `n`-bit two's-complement field.
//!   A bit stream is padded with zero bits to a whole byte at its end.
//! * Every timestamp difference is computed with wrapping `i64` arithmetic.
//!
//! # `XorChunk` layout (the head chunk)
//!
//! The serialized form ([`XorChunk::to_bytes`]) is:
//!
//! ```text
//! ┌──────────────┬────────────────────┬──────────────────────────────────────────────┐
//! │ format: 0x01 │ n: uvarint         │ samples (empty when n = 0)                   │
//! └──────────────┴────────────────────┴──────────────────────────────────────────────┘
//! samples:
//! ┌────────────┬──────────┬───────────────────────┬──────────────────────────────────┐
//! │ t0: varint │ v0: u64be│ t1 - t0: uvarint (n≥2)│ bit stream: v1, then (dod_i, v_i)│
//! │            │          │ (as u64, wrapping)    │ for i = 2 .. n-1                 │
//! └────────────┴──────────┴───────────────────────┴──────────────────────────────────┘
//! ```
//!
//! The bit stream starts byte-aligned right after `t1 - t0` and holds the value
//! of sample 1, then for every later sample its timestamp delta-of-delta
//! `dod_i = (t_i - t_{i-1}) - (t_{i-1} - t_{i-2})` followed by its value.
//!
//! Timestamp delta-of-delta, one of:
//!
//! ```text
//! '0'                      dod = 0
//! '10'   sbits(7)          -64 ≤ dod ≤ 63
//! '110'  sbits(14)         -8192 ≤ dod ≤ 8191
//! '1110' sbits(24)         -8388608 ≤ dod ≤ 8388607
//! '1111' bits(64)          any other dod (two's complement)
//! ```
//!
//! Value `v_i` (i ≥ 1), with `x = bits(v_i) XOR bits(v_{i-1})`:
//!
//! ```text
//! '0'                                   x = 0 (same value)
//! '10' bits(64 - L - T)                 x's significant bits inside the
//!                                       current window (L leading, T trailing
//!                                       zero bits); only valid once a window
//!                                       has been set
//! '11' bits(5)=L bits(6)=S bits(S)      new window: L leading zeros (0..=31;
//!                                       more are written as 31), S significant
//!                                       bits (1..=64, 64 written as 0);
//!                                       T = 64 - L - S
//! ```
//!
//! The encoder reuses the window only when that costs no more bits than
//! opening a new one; the decoder accepts either.
//!
//! # Block layout (closed chunks)
//!
//! ```text
//! ┌─────────────┬──────────────┬───────────────────────────────────────┬─────────────┐
//! │ header: u8  │ n: uvarint   │ body (absent when n = 0)              │ padding     │
//! └─────────────┴──────────────┴───────────────────────────────────────┴─────────────┘
//! header bits: 7..5 version (= 1) │ 4 compressed │ 3..2 value encoding │ 1..0 zero
//!
//! body, uncompressed:  payload
//! body, compressed:    raw_len: uvarint │ zlen: uvarint │ zstd frame (zlen bytes)
//!                      (the frame decompresses to exactly raw_len payload bytes)
//!
//! payload:             timestamp column (n values) │ values (per value encoding)
//! padding:             zero or more 0x00 bytes
//! ```
//!
//! The header of a block is therefore always in `0x20..=0x3f`, never equal to
//! the `XorChunk` format byte `0x01`. When `n = 0` the header is exactly `0x20`.
//!
//! An integer column of `n ≥ 1` values `x_0 .. x_{n-1}` (all arithmetic wrapping):
//!
//! ```text
//! ┌──────────┬───────────┬───────────┬───────────────────────────┬──────────────────┐
//! │ kind: u8 │ a: varint │ b: varint │ s: uvarint (if bit 5 set) │ m residuals      │
//! └──────────┴───────────┴───────────┴───────────────────────────┴──────────────────┘
//! kind bits: 3..0 predictor │ 4 residuals packed │ 5 residuals scaled by s │
//!            6 residuals Rice-coded (never with bit 4) │ 7 zero
//!
//! predictor  m     values (r_j = s × residual_j, s = 1 unless bit 5 is set)
//! 0 linear   0     x_i = a + i·b                               (bits 4 and 5 clear)
//! 1 delta    n-1   x_0 = a; x_i = x_{i-1} + b + r_{i-1}
//! 2 dod      n-2   x_0 = a; x_1 = a + b; d_1 = b;
//!                  d_i = d_{i-1} + r_{i-2}, x_i = x_{i-1} + d_i  (i ≥ 2)
//! 3 grid     n     x_i = a + i·b + r_i
//!
//! residuals, varint form (bits 4 and 6 clear): m × varint
//! residuals, Rice form (bit 6 set):
//!   mode: u8 (bits 5..0 k ≤ 62, bit 6 zero flags, bit 7 zero) │ len: uvarint │
//!   len bytes of bit stream, zero-padded to a byte; per residual, with zero flags
//!   first '0' for a residual of 0 (nothing follows) or '1'; then, with
//!   z = zigzag(residual) (minus 1 with zero flags) and q = z >> k:
//!   q < 32: '1' × q │ '0' │ bits(k) = z mod 2^k; q ≥ 32: '1' × 32 │ bits(64) = z
//! residuals, packed form (bit 4 set):
//!   base: varint │ w: u8 (0..=64) │ m × bits(w), zero-padded to a byte │
//!   k: uvarint │ k × (gap: uvarint │ hi: varint)
//!   residual_j = base + low_j + hi_j × 2^w, where low_j is the j-th w-bit field and
//!   hi_j = 0 except at the k exception indexes (coded by gaps as for decimal
//!   exceptions below); k = 0 when w = 64.
//! ```
//!
//! Value encodings (header bits 3..2):
//!
//! ```text
//! 0 constant: u64be                                every sample has these bits
//! 1 decimal:  e: i8 (-22..=22) │ mantissa column (n values) │
//!             k: uvarint │ k × (gap: uvarint │ bits: u64be)
//!     v_i = m_i × 10^e computed as one IEEE-754 operation: (m_i as f64) * 1e{e}
//!     when e ≥ 0, (m_i as f64) / 1e{-e} when e < 0 (the power is an exact f64).
//!     The k exceptions then overwrite single samples with raw bits; exception j
//!     is at index gap_0 for j = 0 and at index_{j-1} + 1 + gap_j afterwards.
//! 2 xor:      v0: u64be │ bit stream of v_1 .. v_{n-1}, coded as in XorChunk
//! 3 bits:     integer column (n values) of the values' IEEE-754 bit patterns
//!             as i64 (v_i = f64::from_bits(x_i as u64))
//! ```
//!
//! The bits encoding serves full-precision floats that change slowly (a
//! clock in seconds, a ratio): while their sign and exponent stay, their bit
//! patterns grow like the values, so the column's predictors and Rice code
//! take the changes in units of the last place, where XOR pays for every
//! bit that differs.
//!
//! The encoder picks the decimal encoding only after checking that every
//! non-exception value decodes to the identical bits; a value with no such
//! short decimal form (NaN, ±Inf, `-0.0`, full-precision floats) becomes an
//! exception (its mantissa slot repeats the previous mantissa), and a block
//! with many of them is written as xor instead. The predictor, scale and
//! residual form of each column, and the value encoding, are chosen per block
//! by estimates of their final size. Compression (zstd level 3, no checksum,
//! no content size in the frame) is kept only when it makes the block smaller.
//!
//! Bounds: a decoder rejects a block whose `n` or `raw_len` exceeds
//! [`MAX_EXPANSION`] times the block's total length, so decoding never
//! allocates more than a fixed multiple of its input (about 6 KiB per input
//! byte at worst; an [`XorChunk`] at most 64 bytes per input byte). The
//! encoder appends zero padding in the rare cases (long, perfectly regular,
//! constant blocks) where it would otherwise break that rule.

mod bstream;
mod bytes;
mod column;
mod compress;
mod decimal;
mod rice;
mod xor;

#[cfg(test)]
mod tests;

use std::fmt;

use self::bytes::{ByteReader, Origin, uvarint_len};
use self::column::{decode_column, encode_column};
use self::compress::{MIN_COMPRESS_LEN, zstd_compress, zstd_decompress};
use self::decimal::{decode_decimal, encode_decimal};
use self::xor::{decode_xor_values, encode_xor_values};
use crate::varint::put_uvarint;

pub use self::xor::XorChunk;

/// First byte of a serialized [`XorChunk`] (format version 1).
pub const XOR_CHUNK_FORMAT: u8 = 0x01;

/// Block format version, stored in bits 7..5 of a block's header byte.
pub const BLOCK_VERSION: u8 = 1;

/// The most samples, and the most decompressed payload bytes, that a block may
/// declare per byte of its own encoded length. [`encode_block`] pads with zero
/// bytes when needed so that every block it writes respects this bound.
pub const MAX_EXPANSION: usize = 256;

const HEADER_COMPRESSED: u8 = 0x10;
const HEADER_RESERVED: u8 = 0x03;

const VENC_CONST: u8 = 0;
const VENC_DECIMAL: u8 = 1;
const VENC_XOR: u8 = 2;
const VENC_BITS: u8 = 3;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Where in the decoded data a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOffset {
    /// Offset into the bytes handed to the decoder.
    Input(usize),
    /// Offset into the zstd-decompressed payload of a block.
    Payload(usize),
}

impl fmt::Display for ByteOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteOffset::Input(n) => write!(f, "byte offset {n}"),
            ByteOffset::Payload(n) => write!(f, "byte offset {n} of the decompressed payload"),
        }
    }
}

/// Why encoded chunk bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The data ended in the middle of a field.
    #[error("truncated chunk: data ends while reading {what} at {at}")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Where the field starts.
        at: ByteOffset,
    },
    /// A format, version or kind byte has a value this decoder does not know.
    #[error("unknown {what} {byte:#04x} at {at}")]
    UnknownFormat {
        /// The kind of byte.
        what: &'static str,
        /// Its value.
        byte: u8,
        /// Where it is.
        at: ByteOffset,
    },
    /// A field holds a value that no encoder writes.
    #[error("invalid {what} at {at}")]
    Invalid {
        /// The field and what is wrong with it.
        what: &'static str,
        /// Where the field starts.
        at: ByteOffset,
    },
    /// The declared sample count cannot fit in, or be backed by, the input.
    #[error("sample count {count} is too large for {len} bytes of input")]
    TooManySamples {
        /// The declared count.
        count: u64,
        /// The length of the input.
        len: usize,
    },
    /// The zstd frame of a compressed block failed to decompress.
    #[error("zstd payload at {at} does not decompress: {reason}")]
    Decompress {
        /// Where the zstd frame starts.
        at: ByteOffset,
        /// zstd's explanation.
        reason: String,
    },
    /// Bytes follow the encoded data where there should be none (or only zero padding).
    #[error("unexpected trailing bytes at {at}")]
    TrailingBytes {
        /// Where the first unexpected byte is.
        at: ByteOffset,
    },
}

// ---------------------------------------------------------------------------
// Block codec: values
// ---------------------------------------------------------------------------

/// Writes the values part of the payload and returns the value encoding used.
fn encode_values(samples: &[(i64, f64)], out: &mut Vec<u8>) -> u8 {
    let Some(&(_, first)) = samples.first() else { return VENC_CONST };
    let first = first.to_bits();
    if samples.iter().all(|s| s.1.to_bits() == first) {
        out.extend_from_slice(&first.to_be_bytes());
        return VENC_CONST;
    }
    let n = samples.len();
    let mut decimal = Vec::with_capacity(n * 2 + 16);
    let have_decimal = encode_decimal(samples, &mut decimal).is_some();
    // An XOR stream takes at least a bit per value; skip it when decimal is clearly smaller.
    if have_decimal && decimal.len() <= 8 + n / 8 {
        out.extend_from_slice(&decimal);
        return VENC_DECIMAL;
    }
    let mut xor = Vec::with_capacity(n * 4 + 16);
    encode_xor_values(samples, &mut xor);
    let xor_len = final_len_estimate(&xor);
    if have_decimal && final_len_estimate(&decimal) <= xor_len {
        out.extend_from_slice(&decimal);
        return VENC_DECIMAL;
    }
    // Neither decimal: try the bit patterns as integers.
    let bits: Vec<i64> = samples.iter().map(|s| s.1.to_bits() as i64).collect();
    let mut column = Vec::with_capacity(n * 2 + 16);
    encode_column(&bits, &mut column);
    if final_len_estimate(&column) < xor_len {
        out.extend_from_slice(&column);
        VENC_BITS
    } else {
        out.extend_from_slice(&xor);
        VENC_XOR
    }
}

/// The size `bytes` would take in a block: compressed when that helps.
fn final_len_estimate(bytes: &[u8]) -> usize {
    if bytes.len() < MIN_COMPRESS_LEN {
        return bytes.len();
    }
    zstd_compress(bytes).map_or(bytes.len(), |f| bytes.len().min(f.len() + 2))
}

// ---------------------------------------------------------------------------
// Block codec: public API
// ---------------------------------------------------------------------------

/// Encodes a closed chunk of samples as one compact block, appended to `out`.
///
/// `samples` should be sorted by strictly increasing timestamp (any sequence
/// round-trips, but the encoding is tuned for sorted data). Values of every
/// bit pattern round-trip exactly. The layout is in the [module documentation](self).
pub fn encode_block(samples: &[(i64, f64)], out: &mut Vec<u8>) {
    let start = out.len();
    let n = samples.len();
    if n == 0 {
        out.push(BLOCK_VERSION << 5);
        out.push(0);
        return;
    }
    let mut payload = Vec::with_capacity(32 + n * 3);
    let timestamps: Vec<i64> = samples.iter().map(|s| s.0).collect();
    encode_column(&timestamps, &mut payload);
    let venc = encode_values(samples, &mut payload);
    let header = (BLOCK_VERSION << 5) | (venc << 2);

    let frame = if payload.len() >= MIN_COMPRESS_LEN {
        zstd_compress(&payload)
    } else {
        None
    };
    let frame = frame.filter(|f| uvarint_len(payload.len() as u64) + uvarint_len(f.len() as u64) + f.len() < payload.len());
    let mut backed = n;
    match frame {
        Some(frame) => {
            out.push(header | HEADER_COMPRESSED);
            put_uvarint(out, n as u64);
            put_uvarint(out, payload.len() as u64);
            put_uvarint(out, frame.len() as u64);
            out.extend_from_slice(&frame);
            backed = backed.max(payload.len());
        }
        None => {
            out.push(header);
            put_uvarint(out, n as u64);
            out.extend_from_slice(&payload);
        }
    }
    let min_len = backed.div_ceil(MAX_EXPANSION);
    if out.len() - start < min_len {
        out.resize(start + min_len, 0);
    }
}

/// Decodes a block written by [`encode_block`].
///
/// The sample count and decompressed size are checked against
/// [`MAX_EXPANSION`] × `bytes.len()` before anything is allocated; trailing
/// bytes other than zero padding are an error.
pub fn decode_block(bytes: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
    let mut r = ByteReader::new(bytes, Origin::INPUT);
    let header = r.u8("block header")?;
    if header >> 5 != BLOCK_VERSION {
        return Err(ChunkError::UnknownFormat {
            what: "block header (version)",
            byte: header,
            at: ByteOffset::Input(0),
        });
    }
    if header & HEADER_RESERVED != 0 {
        return Err(ChunkError::Invalid {
            what: "block header (reserved bits set)",
            at: ByteOffset::Input(0),
        });
    }
    let venc = (header >> 2) & 0b11;
    let compressed = header & HEADER_COMPRESSED != 0;
    let count = r.uvarint("sample count")?;
    let limit = (bytes.len() as u64).saturating_mul(MAX_EXPANSION as u64);
    if count > limit {
        return Err(ChunkError::TooManySamples { count, len: bytes.len() });
    }
    let n = count as usize;
    if n == 0 {
        if header != BLOCK_VERSION << 5 {
            return Err(ChunkError::Invalid {
                what: "block header (flags set on an empty block)",
                at: ByteOffset::Input(0),
            });
        }
        r.expect_padding()?;
        return Ok(Vec::new());
    }
    if !compressed {
        let samples = decode_payload(&mut r, n, venc)?;
        r.expect_padding()?;
        return Ok(samples);
    }
    let raw_at = r.at();
    let raw_len = r.uvarint("payload length")?;
    if raw_len > limit {
        return Err(ChunkError::Invalid {
            what: "payload length (exceeds the expansion bound)",
            at: raw_at,
        });
    }
    let zlen = r.uvarint("compressed length")?;
    let frame_at = r.at();
    let frame = r.take(zlen, "compressed payload")?;
    r.expect_padding()?;
    let payload = zstd_decompress(frame, raw_len as usize, frame_at)?;
    let mut pr = ByteReader::new(&payload, Origin::PAYLOAD);
    let samples = decode_payload(&mut pr, n, venc)?;
    if !pr.rest().is_empty() {
        return Err(ChunkError::TrailingBytes { at: pr.at() });
    }
    Ok(samples)
}

fn decode_payload(r: &mut ByteReader<'_>, n: usize, venc: u8) -> Result<Vec<(i64, f64)>, ChunkError> {
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(n);
    decode_column(r, n, |t| out.push((t, 0.0)))?;
    match venc {
        VENC_CONST => {
            let v = f64::from_bits(r.u64_be("constant value")?);
            for s in &mut out {
                s.1 = v;
            }
        }
        VENC_DECIMAL => decode_decimal(r, n, &mut out)?,
        VENC_XOR => decode_xor_values(r, &mut out)?,
        VENC_BITS => {
            let mut i = 0;
            decode_column(r, n, |x| {
                if let Some(s) = out.get_mut(i) {
                    s.1 = f64::from_bits(x as u64);
                }
                i += 1;
            })?;
        }
        _ => {
            return Err(ChunkError::UnknownFormat {
                what: "value encoding",
                byte: venc,
                at: ByteOffset::Input(0),
            });
        }
    }
    Ok(out)
}
