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
//! kind bits: 3..0 predictor │ 4 residuals packed │ 5 residuals scaled by s │ 7..6 zero
//!
//! predictor  m     values (r_j = s × residual_j, s = 1 unless bit 5 is set)
//! 0 linear   0     x_i = a + i·b                               (bits 4 and 5 clear)
//! 1 delta    n-1   x_0 = a; x_i = x_{i-1} + b + r_{i-1}
//! 2 dod      n-2   x_0 = a; x_1 = a + b; d_1 = b;
//!                  d_i = d_{i-1} + r_{i-2}, x_i = x_{i-1} + d_i  (i ≥ 2)
//! 3 grid     n     x_i = a + i·b + r_i
//!
//! residuals, varint form (bit 4 clear): m × varint
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
//! 3 reserved
//! ```
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

use std::cell::RefCell;
use std::fmt;

/// First byte of a serialized [`XorChunk`] (format version 1).
pub const XOR_CHUNK_FORMAT: u8 = 0x01;

/// Block format version, stored in bits 7..5 of a block's header byte.
pub const BLOCK_VERSION: u8 = 1;

/// The most samples, and the most decompressed payload bytes, that a block may
/// declare per byte of its own encoded length. [`encode_block`] pads with zero
/// bytes when needed so that every block it writes respects this bound.
pub const MAX_EXPANSION: usize = 256;

const ZSTD_LEVEL: i32 = 3;
/// Payloads shorter than this are not worth a zstd frame.
const MIN_COMPRESS_LEN: usize = 24;

const HEADER_COMPRESSED: u8 = 0x10;
const HEADER_RESERVED: u8 = 0x03;

const VENC_CONST: u8 = 0;
const VENC_DECIMAL: u8 = 1;
const VENC_XOR: u8 = 2;

const COL_LINEAR: u8 = 0;
const COL_DELTA: u8 = 1;
const COL_DOD: u8 = 2;
const COL_GRID: u8 = 3;
/// Flag in a column kind byte: the residuals are bit-packed rather than varints.
const COL_PACKED: u8 = 0x10;
/// Flag in a column kind byte: a common factor of the residuals follows the parameters.
const COL_SCALED: u8 = 0x20;

/// Leading-zero count meaning "no XOR window set yet".
const NO_WINDOW: u8 = 0xff;
/// Initial buffer capacity of an [`XorChunk`]; the first sample needs at most 18 bytes.
const INITIAL_CAPACITY: usize = 32;

/// Largest power of ten that is an exact `f64`, and so the exponent bound of the decimal encoding.
const MAX_DECIMAL_EXP: i32 = 22;
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
/// Mantissas up to 2^53 in magnitude convert to `f64` exactly.
const MAX_EXACT_MANTISSA: f64 = 9_007_199_254_740_992.0;

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
// Byte-level helpers
// ---------------------------------------------------------------------------

use crate::varint::{VarintError, put_uvarint, read_uvarint, unzigzag, zigzag};

#[inline]
fn put_varint(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, zigzag(x));
}

fn uvarint_len(x: u64) -> usize {
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
}

/// Which offsets a reader reports: into the input or into a decompressed payload.
#[derive(Debug, Clone, Copy)]
struct Origin {
    base: usize,
    in_payload: bool,
}

impl Origin {
    const INPUT: Origin = Origin {
        base: 0,
        in_payload: false,
    };
    const PAYLOAD: Origin = Origin { base: 0, in_payload: true };

    fn at(self, offset: usize) -> ByteOffset {
        let n = self.base.saturating_add(offset);
        if self.in_payload {
            ByteOffset::Payload(n)
        } else {
            ByteOffset::Input(n)
        }
    }

    fn shifted(self, by: usize) -> Origin {
        Origin {
            base: self.base.saturating_add(by),
            in_payload: self.in_payload,
        }
    }
}

/// Reads byte-aligned fields.
struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
    origin: Origin,
}

impl<'a> ByteReader<'a> {
    fn new(data: &'a [u8], origin: Origin) -> Self {
        ByteReader { data, pos: 0, origin }
    }

    fn at(&self) -> ByteOffset {
        self.origin.at(self.pos)
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ChunkError> {
        let b = *self.data.get(self.pos).ok_or(ChunkError::Truncated { what, at: self.at() })?;
        self.pos += 1;
        Ok(b)
    }

    fn u64_be(&mut self, what: &'static str) -> Result<u64, ChunkError> {
        let bytes = self
            .rest()
            .first_chunk::<8>()
            .ok_or(ChunkError::Truncated { what, at: self.at() })?;
        self.pos += 8;
        Ok(u64::from_be_bytes(*bytes))
    }

    fn take(&mut self, len: u64, what: &'static str) -> Result<&'a [u8], ChunkError> {
        let rest = self.rest();
        match usize::try_from(len) {
            Ok(len) if len <= rest.len() => {
                self.pos += len;
                Ok(&rest[..len])
            }
            _ => Err(ChunkError::Truncated { what, at: self.at() }),
        }
    }

    fn skip(&mut self, len: usize) {
        self.pos = self.pos.saturating_add(len).min(self.data.len());
    }

    #[inline]
    fn uvarint(&mut self, what: &'static str) -> Result<u64, ChunkError> {
        let start = self.pos;
        read_uvarint(self.data, &mut self.pos).map_err(|e| match e {
            VarintError::Truncated => ChunkError::Truncated {
                what,
                at: self.origin.at(start),
            },
            VarintError::Overlong => ChunkError::Invalid {
                what: "varint (longer than 64 bits)",
                at: self.origin.at(start),
            },
        })
    }

    #[inline]
    fn varint(&mut self, what: &'static str) -> Result<i64, ChunkError> {
        self.uvarint(what).map(unzigzag)
    }

    /// Accepts only zero bytes from the current position to the end.
    fn expect_padding(&self) -> Result<(), ChunkError> {
        match self.rest().iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(ChunkError::TrailingBytes {
                at: self.origin.at(self.pos + i),
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Bit-level helpers
// ---------------------------------------------------------------------------

/// A bit writer over borrowed state, so that [`XorChunk`] can keep its fields
/// flat (and small) while sharing the code with the block encoder.
struct BitSink<'a> {
    buf: &'a mut Vec<u8>,
    /// Pending bits, right-aligned; only the low `nbits` bits are meaningful.
    acc: &'a mut u64,
    nbits: &'a mut u8,
}

impl BitSink<'_> {
    /// Appends the low `n` bits of `value` (`1 ≤ n ≤ 64`, `value < 2^n`).
    #[inline(always)]
    fn put(&mut self, value: u64, n: u32) {
        debug_assert!((1..=64).contains(&n) && (n == 64 || value >> n == 0));
        let used = u32::from(*self.nbits);
        let free = 64 - used;
        if n < free {
            *self.acc = (*self.acc << n) | value;
            *self.nbits = (used + n) as u8;
        } else {
            let rest = n - free;
            let word = if used == 0 { value } else { (*self.acc << free) | (value >> rest) };
            push_word(self.buf, word);
            // Bits above `rest` are stale but are shifted out before they are ever written.
            *self.acc = value;
            *self.nbits = rest as u8;
        }
    }
}

#[inline]
fn push_word(buf: &mut Vec<u8>, word: u64) {
    if buf.capacity() - buf.len() < 8 {
        // Grow by a quarter rather than doubling: head chunks are many and long-lived.
        buf.reserve_exact(8 + buf.len() / 4);
    }
    buf.extend_from_slice(&word.to_be_bytes());
}

/// The pending bits of a writer as whole bytes, zero-padded.
fn tail_bytes(acc: u64, nbits: u8) -> ([u8; 8], usize) {
    if nbits == 0 {
        ([0; 8], 0)
    } else {
        ((acc << (64 - u32::from(nbits))).to_be_bytes(), usize::from(nbits).div_ceil(8))
    }
}

#[inline(always)]
fn fits_signed(x: i64, bits: u32) -> bool {
    let half = 1i64 << (bits - 1);
    (-half..half).contains(&x)
}

#[inline(always)]
fn sign_extend(x: u64, bits: u32) -> i64 {
    ((x << (64 - bits)) as i64) >> (64 - bits)
}

#[inline(always)]
fn put_dod(w: &mut BitSink<'_>, dod: i64) {
    let u = dod as u64;
    if dod == 0 {
        w.put(0, 1);
    } else if fits_signed(dod, 7) {
        w.put((0b10 << 7) | (u & 0x7f), 9);
    } else if fits_signed(dod, 14) {
        w.put((0b110 << 14) | (u & 0x3fff), 17);
    } else if fits_signed(dod, 24) {
        w.put((0b1110 << 24) | (u & 0xff_ffff), 28);
    } else {
        w.put(0b1111, 4);
        w.put(u, 64);
    }
}

/// Appends the XOR code of `bits` against `*last` and updates the window state.
#[inline(always)]
fn put_xor(w: &mut BitSink<'_>, last: &mut u64, leading: &mut u8, trailing: &mut u8, bits: u64) {
    let x = bits ^ *last;
    *last = bits;
    if x == 0 {
        w.put(0, 1);
        return;
    }
    let lead = x.leading_zeros().min(31);
    let trail = x.trailing_zeros();
    let (pl, pt) = (u32::from(*leading), u32::from(*trailing));
    // `lead ≤ 31` is never ≥ NO_WINDOW, so an unset window is never reused.
    if lead >= pl && trail >= pt {
        let reuse = 64 - pl - pt;
        if reuse <= 64 - lead - trail + 11 {
            w.put(0b10, 2);
            w.put(x >> pt, reuse);
            return;
        }
    }
    let sig = 64 - lead - trail;
    w.put((0b11 << 11) | (u64::from(lead) << 6) | u64::from(sig & 63), 13);
    w.put(x >> trail, sig);
    *leading = lead as u8;
    *trailing = trail as u8;
}

/// Reads a bit stream from `data`, followed by up to 8 `tail` bytes (the
/// not-yet-flushed bits of a live [`XorChunk`]).
struct BitReader<'a> {
    data: &'a [u8],
    tail: [u8; 8],
    tail_len: usize,
    /// Next byte to load (indexes `data`, then `tail`).
    pos: usize,
    /// Loaded bits, left-aligned; bits below the top `nbits` are either zero or
    /// the correct following stream bits.
    cur: u64,
    nbits: u32,
    origin: Origin,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], tail: [u8; 8], tail_len: usize, origin: Origin) -> Self {
        BitReader {
            data,
            tail,
            tail_len: tail_len.min(8),
            pos: 0,
            cur: 0,
            nbits: 0,
            origin,
        }
    }

    /// Bytes touched so far (a partly read byte counts as consumed).
    fn consumed_bytes(&self) -> usize {
        (self.pos * 8 - self.nbits as usize).div_ceil(8)
    }

    fn at(&self) -> ByteOffset {
        self.origin.at((self.pos * 8 - self.nbits as usize) / 8)
    }

    #[inline]
    fn refill(&mut self) {
        if self.nbits > 56 {
            return;
        }
        if let Some(word) = self.data.get(self.pos..).and_then(|s| s.first_chunk::<8>()) {
            self.cur |= u64::from_be_bytes(*word) >> self.nbits;
            let whole = (63 - self.nbits) / 8;
            self.pos += whole as usize;
            self.nbits += whole * 8;
            return;
        }
        while self.nbits <= 56 {
            let byte = if self.pos < self.data.len() {
                self.data[self.pos]
            } else {
                match self.tail.get(self.pos - self.data.len()) {
                    Some(&b) if self.pos - self.data.len() < self.tail_len => b,
                    _ => return,
                }
            };
            self.cur |= u64::from(byte) << (56 - self.nbits);
            self.nbits += 8;
            self.pos += 1;
        }
    }

    /// Reads an `n`-bit field, `1 ≤ n ≤ 64`.
    #[inline]
    fn bits(&mut self, n: u32, what: &'static str) -> Result<u64, ChunkError> {
        if n > 56 {
            let hi = self.bits(n - 32, what)?;
            let lo = self.bits(32, what)?;
            return Ok((hi << 32) | lo);
        }
        if self.nbits < n {
            self.refill();
            if self.nbits < n {
                return Err(ChunkError::Truncated { what, at: self.at() });
            }
        }
        let v = self.cur >> (64 - n);
        self.cur <<= n;
        self.nbits -= n;
        Ok(v)
    }

    #[inline]
    fn bit(&mut self, what: &'static str) -> Result<bool, ChunkError> {
        self.bits(1, what).map(|b| b == 1)
    }

    fn uvarint(&mut self, what: &'static str) -> Result<u64, ChunkError> {
        let at = self.at();
        let mut x = 0u64;
        for i in 0..10 {
            let b = self.bits(8, what)?;
            if i == 9 && b > 1 {
                break;
            }
            x |= (b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(ChunkError::Invalid {
            what: "varint (longer than 64 bits)",
            at,
        })
    }

    #[inline]
    fn dod(&mut self) -> Result<i64, ChunkError> {
        const WHAT: &str = "timestamp delta-of-delta";
        if !self.bit(WHAT)? {
            return Ok(0);
        }
        if !self.bit(WHAT)? {
            return Ok(sign_extend(self.bits(7, WHAT)?, 7));
        }
        if !self.bit(WHAT)? {
            return Ok(sign_extend(self.bits(14, WHAT)?, 14));
        }
        if !self.bit(WHAT)? {
            return Ok(sign_extend(self.bits(24, WHAT)?, 24));
        }
        Ok(self.bits(64, WHAT)? as i64)
    }
}

/// XOR-decoding state: the previous value's bits and the current window.
#[derive(Debug, Clone, Copy)]
struct XorState {
    v: u64,
    leading: u8,
    trailing: u8,
}

impl XorState {
    fn new(first: u64) -> Self {
        XorState {
            v: first,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    #[inline]
    fn next(&mut self, r: &mut BitReader<'_>) -> Result<u64, ChunkError> {
        const WHAT: &str = "xor value";
        if !r.bit(WHAT)? {
            return Ok(self.v);
        }
        let at = r.at();
        let x = if !r.bit(WHAT)? {
            if self.leading == NO_WINDOW {
                return Err(ChunkError::Invalid {
                    what: "xor window reuse before any window was set",
                    at,
                });
            }
            let (l, t) = (u32::from(self.leading), u32::from(self.trailing));
            r.bits(64 - l - t, WHAT)? << t
        } else {
            let head = r.bits(11, WHAT)?;
            let l = (head >> 6) as u32;
            let sig = match (head & 63) as u32 {
                0 => 64,
                s => s,
            };
            if l + sig > 64 {
                return Err(ChunkError::Invalid {
                    what: "xor window (leading zeros + significant bits > 64)",
                    at,
                });
            }
            let t = 64 - l - sig;
            self.leading = l as u8;
            self.trailing = t as u8;
            r.bits(sig, WHAT)? << t
        };
        self.v ^= x;
        Ok(self.v)
    }
}

// ---------------------------------------------------------------------------
// XorChunk
// ---------------------------------------------------------------------------

/// The in-memory head chunk of one series: Gorilla-style delta-of-delta
/// timestamps and XOR-coded values in an append-only bit stream.
///
/// The struct itself is 64 bytes; its bit buffer grows by a quarter at a time
/// (see [`XorChunk::heap_bytes`] and [`XorChunk::shrink_to_fit`]). A chunk
/// holds at most `u32::MAX` samples. The byte layout of
/// [`XorChunk::to_bytes`] is described in the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct XorChunk {
    /// Byte-aligned header (t0, v0, t1 - t0) followed by the flushed bit stream.
    buf: Vec<u8>,
    /// Bits not yet flushed to `buf`, right-aligned.
    acc: u64,
    last_t: i64,
    last_delta: i64,
    last_v: u64,
    count: u32,
    acc_bits: u8,
    leading: u8,
    trailing: u8,
}

impl XorChunk {
    /// Creates an empty chunk; it allocates nothing until the first append.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a sample.
    ///
    /// The caller guarantees that `t` is strictly greater than the timestamp of
    /// the previous sample (checked by a debug assertion only; a violation in
    /// release builds is still encoded and decoded faithfully, but readers of
    /// the chunk expect sorted data).
    ///
    /// # Panics
    ///
    /// If the chunk already holds `u32::MAX` samples.
    #[inline]
    pub fn append(&mut self, t: i64, v: f64) {
        debug_assert!(
            self.count == 0 || t > self.last_t,
            "XorChunk::append: timestamp {t} is not after {}",
            self.last_t
        );
        assert!(self.count < u32::MAX, "XorChunk::append: chunk is full");
        let bits = v.to_bits();
        if self.count >= 2 {
            let delta = t.wrapping_sub(self.last_t);
            let dod = delta.wrapping_sub(self.last_delta);
            let mut w = BitSink {
                buf: &mut self.buf,
                acc: &mut self.acc,
                nbits: &mut self.acc_bits,
            };
            if dod == 0 && bits == self.last_v {
                w.put(0, 2);
            } else {
                put_dod(&mut w, dod);
                put_xor(&mut w, &mut self.last_v, &mut self.leading, &mut self.trailing, bits);
            }
            self.last_delta = delta;
        } else if self.count == 0 {
            self.buf.reserve_exact(INITIAL_CAPACITY);
            put_varint(&mut self.buf, t);
            self.buf.extend_from_slice(&bits.to_be_bytes());
            self.last_v = bits;
            self.last_delta = 0;
            self.leading = NO_WINDOW;
            self.trailing = 0;
        } else {
            // No bits are pending yet, so the delta can go straight into `buf`.
            let delta = t.wrapping_sub(self.last_t);
            put_uvarint(&mut self.buf, delta as u64);
            let mut w = BitSink {
                buf: &mut self.buf,
                acc: &mut self.acc,
                nbits: &mut self.acc_bits,
            };
            put_xor(&mut w, &mut self.last_v, &mut self.leading, &mut self.trailing, bits);
            self.last_delta = delta;
        }
        self.last_t = t;
        self.count += 1;
    }

    /// Number of samples in the chunk.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the chunk holds no samples.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Timestamp of the first sample, `None` when the chunk is empty.
    pub fn min_time(&self) -> Option<i64> {
        if self.count == 0 {
            return None;
        }
        ByteReader::new(&self.buf, Origin::INPUT).varint("first timestamp").ok()
    }

    /// Timestamp of the last sample, `None` when the chunk is empty.
    pub fn max_time(&self) -> Option<i64> {
        (self.count > 0).then_some(self.last_t)
    }

    /// Iterates over the samples in append order.
    pub fn iter(&self) -> XorIter<'_> {
        let (tail, tail_len) = tail_bytes(self.acc, self.acc_bits);
        XorIter::new(BitReader::new(&self.buf, tail, tail_len, Origin::INPUT), self.len())
    }

    /// Length in bytes of [`XorChunk::to_bytes`]'s output.
    pub fn encoded_len(&self) -> usize {
        1 + uvarint_len(u64::from(self.count)) + self.buf.len() + usize::from(self.acc_bits).div_ceil(8)
    }

    /// Appends the self-describing serialized form (format byte, sample count,
    /// samples; see the [module documentation](self)) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(XOR_CHUNK_FORMAT);
        put_uvarint(out, u64::from(self.count));
        out.extend_from_slice(&self.buf);
        let (tail, tail_len) = tail_bytes(self.acc, self.acc_bits);
        out.extend_from_slice(&tail[..tail_len]);
    }

    /// The self-describing serialized form; decode it with [`XorChunk::decode`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }

    /// Decodes bytes written by [`XorChunk::to_bytes`].
    ///
    /// The declared sample count is checked against the input length (every
    /// sample after the second takes at least two bits) before anything is
    /// allocated; bytes after the end of the bit stream are an error.
    pub fn decode(bytes: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
        let mut it = Self::decode_iter(bytes)?;
        let mut out = Vec::with_capacity(it.n);
        for _ in 0..it.n {
            out.push(it.next_sample()?);
        }
        let used = it.r.consumed_bytes();
        if used < it.r.data.len() {
            return Err(ChunkError::TrailingBytes { at: it.r.origin.at(used) });
        }
        Ok(out)
    }

    /// Iterates over bytes written by [`XorChunk::to_bytes`] without collecting
    /// them. The header is checked here; corruption found later ends the
    /// iteration early and is reported by [`XorIter::error`].
    pub fn decode_iter(bytes: &[u8]) -> Result<XorIter<'_>, ChunkError> {
        let mut r = ByteReader::new(bytes, Origin::INPUT);
        let format = r.u8("chunk format byte")?;
        if format != XOR_CHUNK_FORMAT {
            return Err(ChunkError::UnknownFormat {
                what: "xor chunk format byte",
                byte: format,
                at: ByteOffset::Input(0),
            });
        }
        let count = r.uvarint("sample count")?;
        let rest = r.rest();
        if count > 2 + 4 * rest.len() as u64 {
            return Err(ChunkError::TooManySamples { count, len: bytes.len() });
        }
        Ok(XorIter::new(
            BitReader::new(rest, [0; 8], 0, Origin::INPUT.shifted(r.pos)),
            count as usize,
        ))
    }

    /// Heap memory owned by the chunk, in bytes (the capacity of its buffer).
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Releases unused buffer capacity, e.g. when the chunk stops receiving samples.
    pub fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
    }
}

/// Iterator over the samples of an [`XorChunk`], from [`XorChunk::iter`].
///
/// Iteration stops early if the data is found corrupt (which cannot happen
/// for a chunk built by [`XorChunk::append`]); [`XorIter::error`] tells.
#[derive(Debug)]
pub struct XorIter<'a> {
    r: BitReader<'a>,
    n: usize,
    i: usize,
    t: i64,
    delta: i64,
    state: XorState,
    error: Option<ChunkError>,
}

impl fmt::Debug for BitReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitReader")
            .field("len", &(self.data.len() + self.tail_len))
            .field("pos", &self.pos)
            .finish()
    }
}

impl<'a> XorIter<'a> {
    fn new(r: BitReader<'a>, n: usize) -> Self {
        XorIter {
            r,
            n,
            i: 0,
            t: 0,
            delta: 0,
            state: XorState::new(0),
            error: None,
        }
    }

    /// The error that ended iteration early, if any.
    pub fn error(&self) -> Option<&ChunkError> {
        self.error.as_ref()
    }

    #[inline]
    fn next_sample(&mut self) -> Result<(i64, f64), ChunkError> {
        match self.i {
            0 => {
                self.t = unzigzag(self.r.uvarint("first timestamp")?);
                self.state = XorState::new(self.r.bits(64, "first value")?);
            }
            1 => {
                self.delta = self.r.uvarint("second timestamp delta")? as i64;
                self.t = self.t.wrapping_add(self.delta);
                self.state.next(&mut self.r)?;
            }
            _ => {
                self.delta = self.delta.wrapping_add(self.r.dod()?);
                self.t = self.t.wrapping_add(self.delta);
                self.state.next(&mut self.r)?;
            }
        }
        self.i += 1;
        Ok((self.t, f64::from_bits(self.state.v)))
    }
}

impl Iterator for XorIter<'_> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        if self.i >= self.n {
            return None;
        }
        match self.next_sample() {
            Ok(s) => Some(s),
            Err(e) => {
                self.error = Some(e);
                self.n = self.i;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.n - self.i))
    }
}

// ---------------------------------------------------------------------------
// Block codec: integer columns
// ---------------------------------------------------------------------------

/// Estimated encoded size of a residual in bits (its zigzag bit width, plus one).
#[inline]
fn cost(r: i64) -> u64 {
    u64::from(65 - zigzag(r).leading_zeros())
}

fn median(values: &[i64]) -> i64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    let mid = v.len() / 2;
    *v.select_nth_unstable(mid).1
}

/// Writes an integer column (kind byte and data), choosing the predictor, the
/// common factor and the residual form by estimated size.
fn encode_column(x: &[i64], out: &mut Vec<u8>) {
    let Some((&x0, rest)) = x.split_first() else { return };
    let n = x.len();
    let d1 = rest.first().map_or(0, |&x1| x1.wrapping_sub(x0));
    let deltas: Vec<i64> = x.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let kind_at = out.len();
    if deltas.iter().all(|&d| d == d1) {
        out.push(COL_LINEAR);
        put_varint(out, x0);
        put_varint(out, d1);
        return;
    }
    let d_med = median(&deltas);
    // Grid: a straight line through the end points, shifted to the median residual.
    let span = i128::from(x[n - 1]) - i128::from(x0);
    let den = (n as i128 - 1).max(1);
    let slope = (2 * span + den).div_euclid(2 * den) as i64;
    let mut grid: Vec<i64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v.wrapping_sub(x0).wrapping_sub((i as i64).wrapping_mul(slope)))
        .collect();
    let r_med = median(&grid);
    for r in &mut grid {
        *r = r.wrapping_sub(r_med);
    }
    let candidates = [
        (
            COL_DELTA,
            x0,
            d_med,
            deltas.iter().map(|&d| d.wrapping_sub(d_med)).collect::<Vec<i64>>(),
        ),
        (COL_DOD, x0, d1, deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect()),
        (COL_GRID, x0.wrapping_add(r_med), slope, grid),
    ];
    let Some((kind, a, b, mut residuals, scale)) = candidates
        .into_iter()
        .map(|(kind, a, b, r)| {
            let scale = common_factor(&r);
            (kind, a, b, r, scale)
        })
        .min_by_key(|(_, _, _, r, scale)| r.iter().map(|&v| cost(v / scale)).sum::<u64>())
    else {
        return;
    };
    out.push(kind);
    put_varint(out, a);
    put_varint(out, b);
    if scale > 1 {
        out[kind_at] |= COL_SCALED;
        put_uvarint(out, scale as u64);
        for r in &mut residuals {
            *r /= scale;
        }
    }
    let packing = Packing::choose(&residuals);
    let varint_len: usize = residuals.iter().map(|&r| uvarint_len(zigzag(r))).sum();
    // Varints can win after zstd on low-entropy columns (mostly zeros); try it there.
    let packed =
        packing.len < varint_len && (packing.len * 8 > residuals.len() * 3 || packing.len < zstd_len_of_varints(&residuals, varint_len));
    if packed {
        out[kind_at] |= COL_PACKED;
        packing.write(&residuals, out);
    } else {
        for &r in &residuals {
            put_varint(out, r);
        }
    }
}

/// The largest factor shared by all residuals, as a positive `i64` (1 when none).
fn common_factor(r: &[i64]) -> i64 {
    let mut g = 0u64;
    for &v in r {
        let (mut a, mut b) = (g, v.unsigned_abs());
        while b != 0 {
            (a, b) = (b, a % b);
        }
        g = a;
        if g == 1 {
            return 1;
        }
    }
    i64::try_from(g).ok().filter(|&g| g > 1).unwrap_or(1)
}

/// Size of the varint form of `residuals` after zstd (`usize::MAX` if it does not compress).
fn zstd_len_of_varints(residuals: &[i64], varint_len: usize) -> usize {
    let mut v = Vec::with_capacity(varint_len);
    for &r in residuals {
        put_varint(&mut v, r);
    }
    zstd_compress(&v).map_or(usize::MAX, |f| f.len() + 2)
}

/// Number of significant bits of `u` (0 for 0).
#[inline]
fn bit_width(u: u64) -> usize {
    64 - u.leading_zeros() as usize
}

/// A frame-of-reference bit packing of residuals: the low `width` bits of each
/// `r - base` in a bit stream, then, as exceptions, the rest (`(r - base) >> width`,
/// arithmetic shift) of the few values for which that is not zero.
#[derive(Debug, Clone, Copy)]
struct Packing {
    base: i64,
    width: u32,
    /// Estimated encoded length in bytes.
    len: usize,
}

impl Packing {
    fn choose(r: &[i64]) -> Packing {
        let n = r.len();
        let mut best = Packing {
            base: 0,
            width: 64,
            len: usize::MAX,
        };
        if n == 0 {
            return Packing { len: 3, ..best };
        }
        let mut sorted = r.to_vec();
        sorted.sort_unstable();
        let mut prev = None;
        for base in [sorted[0], sorted[n / 64], sorted[n / 16], 0] {
            if prev == Some(base) {
                continue;
            }
            prev = Some(base);
            // Counts by bit width of r - base, non-negative and negative apart.
            let (mut pos, mut neg) = ([0usize; 65], [0usize; 65]);
            for &v in r {
                let s = v.wrapping_sub(base);
                if s >= 0 {
                    pos[bit_width(s as u64)] += 1;
                } else {
                    neg[bit_width(!s as u64)] += 1;
                }
            }
            let used =
                |h: &[usize; 65]| -> Vec<(usize, usize)> { h.iter().enumerate().filter(|&(_, &c)| c > 0).map(|(b, &c)| (b, c)).collect() };
            let (pos, neg) = (used(&pos), used(&neg));
            let top = pos.iter().chain(&neg).map(|&(b, _)| b).max().unwrap_or(0);
            for w in 0..=top.min(63) {
                let (mut exc, mut exc_bytes) = (0usize, 0usize);
                // An exception's zigzag(rest) has about (b - w + 1) bits, plus a gap byte.
                for &(b, c) in pos.iter().filter(|&&(b, _)| b > w) {
                    exc += c;
                    exc_bytes += c * (1 + (b - w + 1).div_ceil(7));
                }
                for &(b, c) in &neg {
                    exc += c;
                    exc_bytes += c * (1 + (b.saturating_sub(w) + 1).div_ceil(7));
                }
                let len = uvarint_len(zigzag(base)) + 1 + (n * w).div_ceil(8) + uvarint_len(exc as u64) + exc_bytes;
                if len < best.len {
                    best = Packing {
                        base,
                        width: w as u32,
                        len,
                    };
                }
            }
        }
        best
    }

    fn write(&self, r: &[i64], out: &mut Vec<u8>) {
        put_varint(out, self.base);
        out.push(self.width as u8);
        let mut exceptions = Vec::new();
        if self.width == 0 {
            exceptions.extend(
                r.iter()
                    .enumerate()
                    .map(|(i, &v)| (i, v.wrapping_sub(self.base)))
                    .filter(|&(_, s)| s != 0),
            );
        } else {
            out.reserve((r.len() * self.width as usize).div_ceil(8) + 8);
            let (mut acc, mut nbits) = (0u64, 0u8);
            let mut w = BitSink {
                buf: out,
                acc: &mut acc,
                nbits: &mut nbits,
            };
            for (i, &v) in r.iter().enumerate() {
                let s = v.wrapping_sub(self.base);
                if self.width == 64 {
                    w.put(s as u64, 64);
                } else {
                    w.put(s as u64 & ((1 << self.width) - 1), self.width);
                    if s >> self.width != 0 {
                        exceptions.push((i, s >> self.width));
                    }
                }
            }
            let (tail, len) = tail_bytes(acc, nbits);
            out.extend_from_slice(&tail[..len]);
        }
        put_uvarint(out, exceptions.len() as u64);
        let mut next = 0usize;
        for (i, rest) in exceptions {
            put_uvarint(out, (i - next) as u64);
            put_varint(out, rest);
            next = i + 1;
        }
    }
}

/// Reads `m` residuals in varint or packed form.
fn read_residuals(r: &mut ByteReader<'_>, m: usize, packed: bool) -> Result<Vec<i64>, ChunkError> {
    if !packed {
        let mut res = Vec::with_capacity(m.min(r.rest().len()));
        for _ in 0..m {
            res.push(r.varint("column residual")?);
        }
        return Ok(res);
    }
    let base = r.varint("packing base")?;
    let at = r.at();
    let width = u32::from(r.u8("packing width")?);
    if width > 64 {
        return Err(ChunkError::Invalid {
            what: "packing width (over 64 bits)",
            at,
        });
    }
    let origin = r.origin.shifted(r.pos);
    let bytes = r.take((m as u64 * u64::from(width)).div_ceil(8), "packed residuals")?;
    let mut res: Vec<i64> = Vec::with_capacity(m);
    if width == 0 {
        res.resize(m, 0);
    } else {
        let mut br = BitReader::new(bytes, [0; 8], 0, origin);
        for _ in 0..m {
            res.push(br.bits(width, "packed residual")? as i64);
        }
    }
    let at = r.at();
    let k = r.uvarint("packing exception count")?;
    if k > m as u64 || (k > 0 && width == 64) {
        return Err(ChunkError::Invalid {
            what: "packing exception count",
            at,
        });
    }
    let mut next = 0u64;
    for _ in 0..k {
        let at = r.at();
        let idx = next.saturating_add(r.uvarint("packing exception index")?);
        let rest = r.varint("packing exception value")?;
        let slot = usize::try_from(idx).ok().and_then(|i| res.get_mut(i));
        let Some(slot) = slot else {
            return Err(ChunkError::Invalid {
                what: "packing exception index (past the last residual)",
                at,
            });
        };
        *slot |= rest << width;
        next = idx + 1;
    }
    for v in &mut res {
        *v = v.wrapping_add(base);
    }
    Ok(res)
}

/// Reads an integer column of `n ≥ 1` values, handing each to `f` in order.
fn decode_column(r: &mut ByteReader<'_>, n: usize, mut f: impl FnMut(i64)) -> Result<(), ChunkError> {
    const WHAT: &str = "column parameter";
    let at = r.at();
    let byte = r.u8("column kind")?;
    let (kind, packed, scaled) = (byte & 0x0f, byte & COL_PACKED != 0, byte & COL_SCALED != 0);
    if kind > COL_GRID || byte & 0xc0 != 0 || (kind == COL_LINEAR && (packed || scaled)) {
        return Err(ChunkError::UnknownFormat {
            what: "column kind",
            byte,
            at,
        });
    }
    let a = r.varint(WHAT)?;
    let b = r.varint(WHAT)?;
    let scale = if scaled { r.uvarint("column scale")? as i64 } else { 1 };
    let mut residuals = |m: usize| -> Result<Vec<i64>, ChunkError> {
        let mut res = read_residuals(r, m, packed)?;
        if scale != 1 {
            for v in &mut res {
                *v = v.wrapping_mul(scale);
            }
        }
        Ok(res)
    };
    match kind {
        COL_LINEAR => {
            let mut x = a;
            for _ in 0..n {
                f(x);
                x = x.wrapping_add(b);
            }
        }
        COL_DELTA => {
            let mut x = a;
            f(x);
            for res in residuals(n - 1)? {
                x = x.wrapping_add(b).wrapping_add(res);
                f(x);
            }
        }
        COL_DOD => {
            let mut x = a;
            f(x);
            if n > 1 {
                let mut d = b;
                x = x.wrapping_add(d);
                f(x);
                for res in residuals(n - 2)? {
                    d = d.wrapping_add(res);
                    x = x.wrapping_add(d);
                    f(x);
                }
            }
        }
        _ => {
            let mut line = a;
            for res in residuals(n)? {
                f(line.wrapping_add(res));
                line = line.wrapping_add(b);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Block codec: values
// ---------------------------------------------------------------------------

/// `m × 10^e` as one IEEE-754 operation (`e` in `-22..=22`).
#[inline]
fn decimal_value(m: i64, e: i32) -> f64 {
    let p = POW10[e.unsigned_abs() as usize];
    if e >= 0 { m as f64 * p } else { m as f64 / p }
}

/// The mantissa `m` for exponent `e` such that `decimal_value(m, e)` has exactly
/// `v`'s bits. `Err(())` means larger (more negative) exponents cannot work either.
#[inline]
fn mantissa_for(v: f64, e: i32) -> Result<Option<i64>, ()> {
    let p = POW10[e.unsigned_abs() as usize];
    let m = if e >= 0 { v / p } else { v * p }.round();
    if m.abs() > MAX_EXACT_MANTISSA {
        return Err(());
    }
    let m = m as i64;
    Ok((decimal_value(m, e).to_bits() == v.to_bits()).then_some(m))
}

/// Finds a short decimal form `(m, e)` of a non-zero finite `v`, trying exponent `hint` first.
fn to_decimal(v: f64, hint: i32) -> Option<(i64, i32)> {
    let strip = |mut m: i64, mut e: i32| {
        while m % 10 == 0 && e < MAX_DECIMAL_EXP {
            m /= 10;
            e += 1;
        }
        (m, e)
    };
    if let Ok(Some(m)) = mantissa_for(v, hint) {
        return Some(strip(m, hint));
    }
    if v.abs() >= MAX_EXACT_MANTISSA {
        for e in 1..=MAX_DECIMAL_EXP {
            if let Ok(Some(m)) = mantissa_for(v, e) {
                return Some(strip(m, e));
            }
        }
        return None;
    }
    for k in 0..=MAX_DECIMAL_EXP {
        match mantissa_for(v, -k) {
            Ok(Some(m)) => return Some(strip(m, -k)),
            Ok(None) => {}
            Err(()) => return None,
        }
    }
    None
}

/// Tries the decimal value encoding; `None` when too many values have no
/// decimal form for it to be worthwhile.
fn encode_decimal(samples: &[(i64, f64)], out: &mut Vec<u8>) -> Option<()> {
    let n = samples.len();
    let max_exceptions = n / 8 + 1;
    // Pass 1: per-value decimal forms and the common (smallest) exponent.
    let mut forms: Vec<Option<(i64, i32)>> = Vec::with_capacity(n);
    let mut exceptions = 0usize;
    let mut min_e: Option<i32> = None;
    for &(_, v) in samples {
        let form = if v == 0.0 && v.is_sign_positive() {
            Some((0, i32::MAX))
        } else if v.is_finite() && v != 0.0 {
            to_decimal(v, min_e.unwrap_or(0))
        } else {
            None
        };
        match form {
            Some((_, e)) if e != i32::MAX => min_e = Some(min_e.map_or(e, |m| m.min(e))),
            Some(_) => {}
            None => {
                exceptions += 1;
                if exceptions > max_exceptions {
                    return None;
                }
            }
        }
        forms.push(form);
    }
    let exp = min_e.unwrap_or(0);
    // Pass 2: mantissas at the common exponent; values that overflow become exceptions.
    let mut mantissas = Vec::with_capacity(n);
    let mut exc: Vec<(usize, u64)> = Vec::new();
    let mut prev = 0i64;
    for (i, (form, &(_, v))) in forms.iter().zip(samples).enumerate() {
        let scaled = form.and_then(|(m, e)| {
            if m == 0 {
                return Some(0);
            }
            let m = 10i64.checked_pow((e - exp).unsigned_abs()).and_then(|p| m.checked_mul(p))?;
            let ok = (m.unsigned_abs() <= 1 << 53) && decimal_value(m, exp).to_bits() == v.to_bits();
            ok.then_some(m)
        });
        match scaled {
            Some(m) => prev = m,
            None => exc.push((i, v.to_bits())),
        }
        mantissas.push(prev);
    }
    if exc.len() > max_exceptions {
        return None;
    }
    out.push(exp as i8 as u8);
    encode_column(&mantissas, out);
    put_uvarint(out, exc.len() as u64);
    let mut next = 0usize;
    for &(i, bits) in &exc {
        put_uvarint(out, (i - next) as u64);
        out.extend_from_slice(&bits.to_be_bytes());
        next = i + 1;
    }
    Some(())
}

fn encode_xor_values(samples: &[(i64, f64)], out: &mut Vec<u8>) {
    let Some((&(_, first), rest)) = samples.split_first() else { return };
    let mut last = first.to_bits();
    out.extend_from_slice(&last.to_be_bytes());
    let (mut acc, mut nbits, mut leading, mut trailing) = (0u64, 0u8, NO_WINDOW, 0u8);
    let mut w = BitSink {
        buf: out,
        acc: &mut acc,
        nbits: &mut nbits,
    };
    for &(_, v) in rest {
        put_xor(&mut w, &mut last, &mut leading, &mut trailing, v.to_bits());
    }
    let (tail, len) = tail_bytes(acc, nbits);
    out.extend_from_slice(&tail[..len]);
}

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
    if have_decimal && final_len_estimate(&decimal) <= final_len_estimate(&xor) {
        out.extend_from_slice(&decimal);
        VENC_DECIMAL
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
// Block codec: zstd
// ---------------------------------------------------------------------------

thread_local! {
    static ZSTD_COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses with a per-thread context; `None` if zstd fails for any reason.
fn zstd_compress(data: &[u8]) -> Option<Vec<u8>> {
    let with_cached = |cell: &RefCell<Option<zstd::bulk::Compressor<'static>>>| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.is_none() {
            let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?;
            c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false)).ok()?;
            c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(false)).ok()?;
            *slot = Some(c);
        }
        slot.as_mut()?.compress(data).ok()
    };
    ZSTD_COMPRESSOR.try_with(with_cached).ok().flatten()
}

/// Decompresses a frame that must expand to exactly `raw_len` bytes.
fn zstd_decompress(frame: &[u8], raw_len: usize, at: ByteOffset) -> Result<Vec<u8>, ChunkError> {
    let fresh = || zstd::bulk::Decompressor::new().and_then(|mut d| d.decompress(frame, raw_len));
    let result = ZSTD_DECOMPRESSOR
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => {
                if slot.is_none() {
                    *slot = zstd::bulk::Decompressor::new().ok();
                }
                match slot.as_mut() {
                    Some(d) => d.decompress(frame, raw_len),
                    None => fresh(),
                }
            }
            Err(_) => fresh(),
        })
        .unwrap_or_else(|_| fresh());
    let payload = result.map_err(|e| ChunkError::Decompress { at, reason: e.to_string() })?;
    if payload.len() != raw_len {
        return Err(ChunkError::Decompress {
            at,
            reason: format!("expanded to {} bytes, expected {raw_len}", payload.len()),
        });
    }
    Ok(payload)
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
        VENC_DECIMAL => {
            let at = r.at();
            let e = i32::from(r.u8("decimal exponent")? as i8);
            if !(-MAX_DECIMAL_EXP..=MAX_DECIMAL_EXP).contains(&e) {
                return Err(ChunkError::Invalid {
                    what: "decimal exponent (outside -22..=22)",
                    at,
                });
            }
            let mut slots = out.iter_mut();
            decode_column(r, n, |m| {
                if let Some(s) = slots.next() {
                    s.1 = decimal_value(m, e);
                }
            })?;
            let at = r.at();
            let k = r.uvarint("exception count")?;
            if k > n as u64 {
                return Err(ChunkError::Invalid {
                    what: "exception count (more than samples)",
                    at,
                });
            }
            let mut next = 0u64;
            for _ in 0..k {
                let at = r.at();
                let idx = next.saturating_add(r.uvarint("exception index")?);
                let bits = r.u64_be("exception value")?;
                let slot = usize::try_from(idx).ok().and_then(|i| out.get_mut(i));
                let Some(slot) = slot else {
                    return Err(ChunkError::Invalid {
                        what: "exception index (past the last sample)",
                        at,
                    });
                };
                slot.1 = f64::from_bits(bits);
                next = idx + 1;
            }
        }
        VENC_XOR => {
            let first = r.u64_be("first value")?;
            let mut state = XorState::new(first);
            let mut bits = BitReader::new(r.rest(), [0; 8], 0, r.origin.shifted(r.pos));
            let mut slots = out.iter_mut();
            if let Some(s) = slots.next() {
                s.1 = f64::from_bits(first);
            }
            for s in slots {
                s.1 = f64::from_bits(state.next(&mut bits)?);
            }
            r.skip(bits.consumed_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn special_values() -> Vec<f64> {
        [
            STALE_NAN,
            f64::NAN.to_bits(),
            0x7ff8_0000_0000_0001,
            0xfff8_0000_0000_0000,
            0x7ff0_0000_0000_0001,
            u64::MAX,
            (-0.0f64).to_bits(),
            0.0f64.to_bits(),
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            1,
            0x000f_ffff_ffff_ffff,
            0x8000_0000_0000_0001,
            f64::MIN_POSITIVE.to_bits(),
            f64::MAX.to_bits(),
            f64::MIN.to_bits(),
            f64::EPSILON.to_bits(),
            1.0f64.to_bits(),
            (-1.0f64).to_bits(),
            0.1f64.to_bits(),
            (0.1f64 + 0.2).to_bits(),
            1e300f64.to_bits(),
            1e-300f64.to_bits(),
            9_007_199_254_740_992.0f64.to_bits(),
            9_007_199_254_740_994.0f64.to_bits(),
            1.844_674_407_370_955_2e19f64.to_bits(),
            1e22f64.to_bits(),
            1e23f64.to_bits(),
            1e-22f64.to_bits(),
            1e-23f64.to_bits(),
        ]
        .into_iter()
        .map(f64::from_bits)
        .collect()
    }

    fn bits_of(s: &[(i64, f64)]) -> Vec<(i64, u64)> {
        s.iter().map(|&(t, v)| (t, v.to_bits())).collect()
    }

    fn xor_chunk(samples: &[(i64, f64)]) -> XorChunk {
        let mut c = XorChunk::new();
        for &(t, v) in samples {
            c.append(t, v);
        }
        c
    }

    fn block(samples: &[(i64, f64)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_block(samples, &mut out);
        out
    }

    /// Checks both encodings round-trip `samples` bit for bit.
    fn roundtrip(samples: &[(i64, f64)]) {
        let want = bits_of(samples);
        let c = xor_chunk(samples);
        assert_eq!(c.len(), samples.len());
        assert_eq!(c.is_empty(), samples.is_empty());
        assert_eq!(c.min_time(), samples.first().map(|s| s.0));
        assert_eq!(c.max_time(), samples.last().map(|s| s.0));
        let it = c.iter();
        assert_eq!(bits_of(&it.collect::<Vec<_>>()), want, "xor iter");
        let bytes = c.to_bytes();
        assert_eq!(bytes.len(), c.encoded_len());
        assert_eq!(bits_of(&XorChunk::decode(&bytes).expect("xor decode")), want, "xor decode");

        let mut out = vec![0xAA];
        encode_block(samples, &mut out);
        assert_eq!(out[0], 0xAA, "encode_block appends");
        assert_eq!(bits_of(&decode_block(&out[1..]).expect("block decode")), want, "block decode");
    }

    fn regular(n: usize, start: i64, step: i64, v: impl Fn(usize) -> f64) -> Vec<(i64, f64)> {
        (0..n).map(|i| (start + i as i64 * step, v(i))).collect()
    }

    fn value_encoding(block: &[u8]) -> u8 {
        (block[0] >> 2) & 3
    }

    #[test]
    fn struct_is_small() {
        assert!(std::mem::size_of::<XorChunk>() <= 64, "{}", std::mem::size_of::<XorChunk>());
    }

    #[test]
    fn empty() {
        let c = XorChunk::new();
        assert_eq!((c.len(), c.min_time(), c.max_time(), c.heap_bytes()), (0, None, None, 0));
        assert_eq!(c.iter().count(), 0);
        assert_eq!(c.to_bytes(), vec![XOR_CHUNK_FORMAT, 0]);
        assert_eq!(XorChunk::decode(&[XOR_CHUNK_FORMAT, 0]).expect("decode"), vec![]);
        assert_eq!(block(&[]), vec![0x20, 0]);
        assert_eq!(decode_block(&[0x20, 0]).expect("decode"), vec![]);
        assert_eq!(decode_block(&[0x20, 0, 0, 0]).expect("decode"), vec![]);
        roundtrip(&[]);
    }

    #[test]
    fn one_sample() {
        for t in [0, 1, -1, 1_700_000_000_000, i64::MIN, i64::MAX] {
            for v in special_values() {
                roundtrip(&[(t, v)]);
            }
        }
    }

    #[test]
    fn extreme_timestamps() {
        roundtrip(&[(i64::MIN, 1.0), (i64::MAX, 2.0)]);
        roundtrip(&[(i64::MIN, 1.0), (0, 2.0), (i64::MAX, 3.0)]);
        roundtrip(&[
            (i64::MIN, 1.0),
            (i64::MIN + 1, 2.0),
            (-1, 3.0),
            (0, 4.0),
            (1, 5.0),
            (i64::MAX - 1, 6.0),
            (i64::MAX, 7.0),
        ]);
        roundtrip(&regular(50, i64::MIN, 1 << 57, |i| i as f64));
        roundtrip(&regular(50, -1_000_000, 15_000, |i| i as f64));
        roundtrip(&regular(50, i64::MAX - 49, 1, |_| 0.5));
    }

    #[test]
    fn irregular_intervals_and_jumps() {
        let mut t = 1_700_000_000_000i64;
        let mut s = Vec::new();
        let steps = [
            1,
            15_000,
            14_999,
            15_003,
            1,
            2,
            86_400_000 * 30,
            15_000,
            15_000,
            63,
            64,
            65,
            8191,
            8192,
            8193,
            8_388_607,
            8_388_608,
            1 << 40,
        ];
        for (i, step) in steps.iter().cycle().take(400).enumerate() {
            t += step;
            s.push((t, (i % 7) as f64 * 0.25));
        }
        roundtrip(&s);
        // Every delta-of-delta bucket boundary, both signs.
        let mut t = 0i64;
        let mut d = 1_000_000i64;
        let mut s = vec![(0, 0.0)];
        for dod in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            -8192,
            8192,
            -8193,
            8_388_607,
            -8_388_608,
            8_388_608,
            -8_388_609,
            1 << 40,
        ] {
            d += dod;
            t += d;
            s.push((t, 1.0));
        }
        roundtrip(&s);
    }

    #[test]
    fn special_floats() {
        let specials = special_values();
        roundtrip(&regular(specials.len(), 1000, 15_000, |i| specials[i]));
        for &v in &specials {
            roundtrip(&regular(130, 0, 15_000, |_| v));
            roundtrip(&regular(130, 0, 15_000, |i| if i % 2 == 0 { v } else { 1.5 }));
        }
        // A decimal series ending in a staleness marker stays decimal, with one exception.
        let mut s = regular(200, 0, 15_000, |i| i as f64 / 100.0);
        s.push((200 * 15_000, f64::from_bits(STALE_NAN)));
        s.push((201 * 15_000, -0.0));
        roundtrip(&s);
        assert_eq!(value_encoding(&block(&s)), VENC_DECIMAL);
    }

    #[test]
    fn long_constant_runs() {
        let s = regular(100_000, 1_700_000_000_000, 15_000, |_| 42.0);
        roundtrip(&s);
        let c = xor_chunk(&s);
        assert!(c.encoded_len() < 100_000 * 2 / 8 + 64, "{}", c.encoded_len());
        let b = block(&s);
        assert_eq!(value_encoding(&b), VENC_CONST);
        // Perfectly regular and constant: only the expansion bound's padding grows.
        assert!(b.len() <= 100_000usize.div_ceil(MAX_EXPANSION) + 1, "{}", b.len());
        assert!(b[20..].iter().all(|&x| x == 0));
        let mut jittered = s.clone();
        for (i, x) in jittered.iter_mut().enumerate() {
            x.0 += (i as i64 * 7919) % 5;
        }
        roundtrip(&jittered);
        assert!(block(&jittered).len() < 100_000 / 2);
        let nan_run = regular(5000, 0, 15_000, |_| f64::from_bits(STALE_NAN));
        roundtrip(&nan_run);
        assert!(block(&nan_run).len() < 24);
    }

    #[test]
    fn alternating_values() {
        roundtrip(&regular(1000, 0, 15_000, |i| if i % 2 == 0 { 1.0 } else { 2.0 }));
        roundtrip(&regular(1000, 0, 15_000, |i| if i % 2 == 0 { 0.0 } else { -0.0 }));
        roundtrip(&regular(1000, 0, 15_000, |i| {
            if i % 2 == 0 { f64::NAN } else { f64::from_bits(STALE_NAN) }
        }));
        roundtrip(&regular(1000, 0, 15_000, |i| if i % 3 == 0 { f64::MAX } else { f64::from_bits(1) }));
    }

    #[test]
    fn counters_and_gauges_use_decimal() {
        let counter = regular(720, 1_700_000_000_000, 15_000, |i| (i * i % 97 + i * 150) as f64 / 100.0);
        roundtrip(&counter);
        let b = block(&counter);
        assert_eq!(value_encoding(&b), VENC_DECIMAL);
        assert!(
            b.len() < xor_chunk(&counter).encoded_len() / 2,
            "{} vs {}",
            b.len(),
            xor_chunk(&counter).encoded_len()
        );
        let big = regular(300, 0, 15_000, |i| 1e20 + (i as f64) * 1e15);
        roundtrip(&big);
        let tiny = regular(300, 0, 15_000, |i| (i % 10) as f64 * 1e-9);
        roundtrip(&tiny);
        // Mixed precisions share the smallest exponent.
        let mixed = regular(300, 0, 15_000, |i| if i % 2 == 0 { 1234.0 } else { 0.000_001 * i as f64 });
        roundtrip(&mixed);
        // Full-precision floats fall back to xor.
        let noisy = regular(300, 0, 15_000, |i| (i as f64).sin());
        roundtrip(&noisy);
        assert_eq!(value_encoding(&block(&noisy)), VENC_XOR);
    }

    #[test]
    fn to_decimal_is_exact() {
        for v in [
            0.21,
            217.53,
            1.59744e6,
            9.4458e-05,
            1.795_288_262e9,
            1e22,
            1e-22,
            123_456_789_012_345.6,
            -0.5,
            2.5e-7,
        ] {
            let (m, e) = to_decimal(v, 0).expect("decimal form");
            assert_eq!(decimal_value(m, e).to_bits(), v.to_bits(), "{v}");
            assert_ne!(m % 10, 0, "{v}: {m}e{e} not stripped");
        }
        assert_eq!(to_decimal(0.21, 0), Some((21, -2)));
        assert_eq!(to_decimal(1.59744e6, -3), Some((159_744, 1)));
        assert_eq!(to_decimal(0.1 + 0.2, 0), None);
        assert_eq!(to_decimal(1e-300, 0), None);
    }

    #[test]
    fn decode_iter_streams_and_reports_errors() {
        let s = regular(300, 1_700_000_000_000, 15_000, |i| (i % 17) as f64 / 8.0);
        let bytes = xor_chunk(&s).to_bytes();
        let it = XorChunk::decode_iter(&bytes).expect("header");
        assert_eq!(bits_of(&it.collect::<Vec<_>>()), bits_of(&s));
        let mut it = XorChunk::decode_iter(&bytes[..bytes.len() / 2]).expect("header");
        let got = it.by_ref().count();
        assert!(got < s.len());
        assert!(matches!(it.error(), Some(ChunkError::Truncated { .. })));
    }

    #[test]
    fn memory_accounting() {
        let mut c = XorChunk::new();
        for i in 0..2000 {
            c.append(
                i * 15_000 + (i * 31) % 7,
                f64::from_bits(0x4000_0000_0000_0000 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 12),
            );
        }
        let len = c.encoded_len();
        assert!(c.heap_bytes() >= len - 10);
        assert!(
            c.heap_bytes() <= len + len / 4 + 64,
            "capacity {} for {} bytes",
            c.heap_bytes(),
            len
        );
        c.shrink_to_fit();
        assert!(c.heap_bytes() <= len + 8);
        assert_eq!(c.iter().count(), 2000);
    }

    #[test]
    fn iterating_a_growing_chunk() {
        let mut c = XorChunk::new();
        let mut want = Vec::new();
        for i in 0..300i64 {
            let s = (
                i * 15_000 + (i * 13) % 11,
                if i % 5 == 0 {
                    f64::from_bits(i as u64 * 0x1234_5678_9abc)
                } else {
                    i as f64 / 4.0
                },
            );
            c.append(s.0, s.1);
            want.push(s);
            assert_eq!(bits_of(&c.iter().collect::<Vec<_>>()), bits_of(&want));
        }
    }

    #[test]
    fn decode_errors() {
        assert!(matches!(XorChunk::decode(&[]), Err(ChunkError::Truncated { .. })));
        assert!(matches!(
            XorChunk::decode(&[0x20, 0]),
            Err(ChunkError::UnknownFormat { byte: 0x20, .. })
        ));
        assert!(matches!(
            XorChunk::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(ChunkError::TooManySamples { .. })
        ));
        assert!(matches!(
            XorChunk::decode(&[1, 0, 0]),
            Err(ChunkError::TrailingBytes { at: ByteOffset::Input(2) })
        ));
        assert!(matches!(decode_block(&[]), Err(ChunkError::Truncated { .. })));
        assert!(matches!(decode_block(&[0x01, 0]), Err(ChunkError::UnknownFormat { .. })));
        assert!(matches!(decode_block(&[0x21, 0]), Err(ChunkError::Invalid { .. })));
        assert!(matches!(
            decode_block(&[0x20, 0, 7]),
            Err(ChunkError::TrailingBytes { at: ByteOffset::Input(2) })
        ));
        assert!(matches!(
            decode_block(&[0x20, 0xff, 0xff, 0xff, 0x7f]),
            Err(ChunkError::TooManySamples { .. })
        ));
        assert!(matches!(
            decode_block(&[0x30, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(ChunkError::Invalid { .. } | ChunkError::TooManySamples { .. })
        ));
        let s = regular(500, 0, 15_000, |i| (i * 7 % 13) as f64);
        let mut b = block(&s);
        assert_ne!(b[0] & HEADER_COMPRESSED, 0, "expected a compressed block");
        let last = b.len() - 1;
        b[last] ^= 0x55;
        let err = decode_block(&b).expect_err("corrupt input decoded");
        assert!(matches!(err, ChunkError::Decompress { .. } | ChunkError::Invalid { .. }), "{err:?}");
        // Messages are lower-case and say where.
        for e in [
            XorChunk::decode(&[1, 3, 5]).expect_err("corrupt input decoded"),
            decode_block(&[0x20, 0, 7]).expect_err("corrupt input decoded"),
            decode_block(&[0x60, 0]).expect_err("corrupt input decoded"),
            err,
        ] {
            let msg = e.to_string();
            assert!(msg.chars().next().expect("non-empty message").is_lowercase(), "{msg}");
            assert!(msg.contains("offset"), "{msg}");
        }
    }

    /// Encodes and decodes one integer column; returns its encoded form.
    fn column_roundtrip(x: &[i64]) -> Vec<u8> {
        let mut enc = Vec::new();
        encode_column(x, &mut enc);
        let mut r = ByteReader::new(&enc, Origin::INPUT);
        let mut got = Vec::new();
        decode_column(&mut r, x.len(), |v| got.push(v)).expect("column decodes");
        assert_eq!(got, x);
        assert!(r.rest().is_empty(), "column not fully consumed");
        enc
    }

    #[test]
    fn columns() {
        let kind = |enc: &[u8]| enc[0];
        // Perfectly linear, including wrapping slopes.
        assert_eq!(kind(&column_roundtrip(&[5])), COL_LINEAR);
        assert_eq!(kind(&column_roundtrip(&[i64::MAX, i64::MIN, i64::MAX.wrapping_add(2)])), COL_LINEAR);
        // Page-sized steps are scaled down.
        let pages: Vec<i64> = (0..500).map(|i| 1_000_000_000 + ((i * 7919) % 301 - 150) * 4096).collect();
        assert_ne!(kind(&column_roundtrip(&pages)) & COL_SCALED, 0);
        // Sparse changes, both signs: exceptions with negative high parts.
        let sparse: Vec<i64> = (0..700)
            .map(|i| {
                if i % 50 == 0 {
                    -3
                } else if i % 77 == 0 {
                    2
                } else {
                    0
                }
            })
            .collect();
        column_roundtrip(&sparse);
        // Small jitter with a few huge outliers.
        let mut rng = Rng(3);
        let jitter: Vec<i64> = (0..700i64)
            .map(|i| i * 15_000 + (rng.next_u64() % 6) as i64 + if i == 400 { 1 << 50 } else { 0 })
            .collect();
        let enc = column_roundtrip(&jitter);
        assert_ne!(kind(&enc) & COL_PACKED, 0);
        assert!(enc.len() < 700 * 3 / 8 + 40, "{}", enc.len());
        // Full-width noise packs at 64 bits.
        let noise: Vec<i64> = (0..300).map(|_| rng.next_u64() as i64).collect();
        column_roundtrip(&noise);
        // Extremes everywhere.
        column_roundtrip(&[i64::MIN, i64::MAX, 0, i64::MIN, -1, 1, i64::MAX, i64::MIN + 1]);
        // A clock that drifts against the grid.
        let drift: Vec<i64> = (0..720i64).map(|i| i * 15_000 + i * 2 / 5 + (i * 13) % 4).collect();
        column_roundtrip(&drift);
    }

    type Decoder = fn(&[u8]) -> Result<Vec<(i64, f64)>, ChunkError>;

    /// Every prefix and every single-bit flip of `bytes` decodes without panicking.
    fn mangle(bytes: &[u8], decode: Decoder) {
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut]);
        }
        let mut b = bytes.to_vec();
        for i in 0..b.len() * 8 {
            b[i / 8] ^= 1 << (i % 8);
            let _ = decode(&b);
            b[i / 8] ^= 1 << (i % 8);
        }
    }

    #[test]
    fn corrupt_inputs_do_not_panic() {
        let specials = special_values();
        let sets = [
            regular(40, 1_700_000_000_000, 15_000, |i| (i * 3) as f64 * 0.01),
            regular(30, -5, 7, |i| specials[i % specials.len()]),
            regular(60, 0, 15_000, |i| 1.0 + (i % 4) as f64),
            regular(200, 0, 15_000, |i| (i * i) as f64),
        ];
        for s in &sets {
            let x = xor_chunk(s).to_bytes();
            mangle(&x, XorChunk::decode);
            for cut in 0..x.len() {
                assert!(XorChunk::decode(&x[..cut]).is_err(), "prefix {cut} of {} decoded", x.len());
            }
            mangle(&block(s), decode_block);
        }
    }

    fn sorted_timestamps(max: usize) -> impl Strategy<Value = Vec<i64>> {
        prop_oneof![
            prop::collection::btree_set(any::<i64>(), 0..max).prop_map(|s| s.into_iter().collect::<Vec<_>>()),
            (
                any::<i32>(),
                prop::collection::vec(
                    prop_oneof![4 => Just(15_000i64), 4 => 14_990i64..15_010, 1 => 1i64..100_000_000],
                    0..max
                )
            )
                .prop_map(|(start, steps)| {
                    let mut t = i64::from(start) * 1000;
                    steps
                        .into_iter()
                        .map(|d| {
                            t += d;
                            t
                        })
                        .collect()
                }),
        ]
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            3 => any::<u64>().prop_map(f64::from_bits),
            3 => (-1_000_000i64..1_000_000, -8i32..4).prop_map(|(m, e)| decimal_value(m, e)),
            1 => prop::sample::select(special_values()),
            1 => Just(42.0),
        ]
    }

    fn series(max: usize) -> impl Strategy<Value = Vec<(i64, f64)>> {
        (sorted_timestamps(max), prop::collection::vec(value(), max), 0usize..4).prop_map(|(ts, vs, mode)| {
            ts.into_iter()
                .zip(vs)
                .enumerate()
                .map(|(i, (t, v))| match mode {
                    // Long runs of repeats, and runs of decimal values with an occasional oddity.
                    1 if i % 5 != 0 => (t, 7.5),
                    2 => (
                        t,
                        if v.is_finite() && v.abs() < 1e6 && v == v.trunc() {
                            v
                        } else {
                            (i as f64) * 0.5
                        },
                    ),
                    _ => (t, v),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn prop_roundtrip(samples in series(300)) {
            roundtrip(&samples);
        }

        #[test]
        fn prop_columns_roundtrip(x in prop_oneof![
            prop::collection::vec(any::<i64>(), 1..200),
            (any::<i32>(), 0i64..100_000, 0i64..9, 1i64..5000, prop::collection::vec((0i64..1000, any::<bool>()), 1..300)).prop_map(
                |(start, step, jitter, unit, noise)| {
                    let mut x = i64::from(start);
                    noise.into_iter().map(|(n, spike)| {
                        x += step + (n % (jitter + 1)) * unit + if spike && n < 5 { i64::from(start) * 1000 } else { 0 };
                        x
                    }).collect()
                }
            ),
        ]) {
            column_roundtrip(&x);
        }

        #[test]
        fn prop_random_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), head in 0u8..0x40) {
            let _ = XorChunk::decode(&bytes);
            let _ = decode_block(&bytes);
            let mut with_head = vec![head];
            with_head.extend_from_slice(&bytes);
            let _ = XorChunk::decode(&with_head);
            let _ = decode_block(&with_head);
        }

        #[test]
        fn prop_damaged_encodings_do_not_panic(samples in series(120), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            for enc in [xor_chunk(&samples).to_bytes(), block(&samples)] {
                let n = cut.index(enc.len() + 1);
                let _ = XorChunk::decode(&enc[..n]);
                let _ = decode_block(&enc[..n]);
                let mut bad = enc.clone();
                let i = flip.index(bad.len());
                bad[i] ^= 1 << bit;
                let _ = XorChunk::decode(&bad);
                let _ = decode_block(&bad);
            }
            let x = xor_chunk(&samples).to_bytes();
            let n = cut.index(x.len());
            prop_assert!(XorChunk::decode(&x[..n]).is_err());
        }
    }

    // -----------------------------------------------------------------------
    // Size and speed report on node_exporter-like data:
    //   cargo test --release -- --ignored --nocapture chunkenc_report
    // -----------------------------------------------------------------------

    /// SplitMix64: a small deterministic generator for synthetic data.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let u = self.uniform().max(1e-300);
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    enum Kind {
        Constant,
        Counter,
        Gauge,
    }

    /// A synthetic series: its name, what it models and its samples.
    type Series = (String, Kind, Vec<(i64, f64)>);

    const EXPOSITION_FALLBACK: &str = "\
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 217.53
node_cpu_seconds_total{cpu=\"0\",mode=\"irq\"} 0
# TYPE node_network_receive_bytes_total counter
node_network_receive_bytes_total{device=\"eth0\"} 8.2463294e+07
# TYPE node_memory_MemFree_bytes gauge
node_memory_MemFree_bytes 2.3030423552e+10
# TYPE node_load1 gauge
node_load1 0.79
# TYPE node_memory_MemTotal_bytes gauge
node_memory_MemTotal_bytes 2.5276502016e+10
";

    fn load_exposition() -> String {
        let candidates = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/node_exporter.prom"),
            "/work/shared/data/node_exporter.prom",
        ];
        candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_else(|| EXPOSITION_FALLBACK.to_owned())
    }

    /// Decimal places of a printed value: "217.53" → 2, "1.59744e+06" → 0, "9.4458e-05" → 9.
    fn decimals(text: &str) -> u32 {
        let (mantissa, exp) = text
            .split_once(['e', 'E'])
            .map_or((text, 0), |(m, e)| (m, e.parse::<i32>().unwrap_or(0)));
        let frac = mantissa.split_once('.').map_or(0, |(_, f)| f.len() as i32);
        (frac - exp).max(0) as u32
    }

    /// `units × 10^-dec`, as an exporter printing that decimal would produce it.
    fn from_units(units: i64, dec: u32) -> f64 {
        format!("{units}e-{dec}").parse().unwrap_or(0.0)
    }

    const CONSTANT_HINTS: [&str; 22] = [
        "_info",
        "boot_time",
        "start_time",
        "size_bytes",
        "size_bits",
        "Total_bytes",
        "_max",
        "maximum",
        "limit",
        "mtu",
        "speed",
        "flags",
        "iface",
        "protocol",
        "assign_type",
        "queue_length",
        "Hugepagesize",
        "DirectMap",
        "timex_",
        "filesystem_files{",
        "Forwarding",
        "sys_bytes",
    ];

    /// Builds `n` samples per series of the exposition: 15 s scrapes with 0-5 ms of
    /// jitter; zero counters and config-like gauges constant; counters growing by
    /// noisy amounts at the printed precision; gauges random-walking around their value.
    fn synthesize(text: &str, n: usize, seed: u64) -> Vec<Series> {
        let mut rng = Rng(seed);
        let mut types: HashMap<&str, &str> = HashMap::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                if let (Some(name), Some(ty)) = (it.next(), it.next()) {
                    types.insert(name, ty);
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, text)) = line.rsplit_once(' ') else { continue };
            let Ok(v0) = text.parse::<f64>() else { continue };
            let name = series.split('{').next().unwrap_or(series);
            let family = ["_sum", "_count", "_bucket"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| types.contains_key(f))
                .unwrap_or(name);
            let ty = types.get(family).copied().unwrap_or("untyped");
            let monotonic =
                ty == "counter" || (ty == "untyped" && !series.contains("CurrEstab")) || name.ends_with("_sum") || name.ends_with("_count");
            let kind = if v0 == 0.0 || v0 == 1.0 || CONSTANT_HINTS.iter().any(|h| series.contains(h)) {
                Kind::Constant
            } else if monotonic {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            let dec = decimals(text);
            let units0 = (v0 * 10f64.powi(dec as i32)).round() as i64;
            let mut units = units0;
            let start = 1_700_000_000_000 + (rng.next_u64() % 15_000) as i64;
            let mut samples = Vec::with_capacity(n);
            for i in 0..n {
                let t = start + i as i64 * 15_000 + (rng.next_u64() % 6) as i64;
                let v = match kind {
                    Kind::Constant => v0,
                    _ if name == "node_time_seconds" => t as f64 / 1000.0 + rng.uniform() * 1e-3,
                    Kind::Counter => {
                        let mean = units0 as f64 * 15.0 / 250.0;
                        units += if mean < 1.0 {
                            i64::from(rng.uniform() < mean)
                        } else {
                            (mean * (0.5 + rng.uniform())).round() as i64
                        };
                        from_units(units, dec)
                    }
                    Kind::Gauge => {
                        let page = if name.ends_with("_bytes") && units0 % 4096 == 0 { 4096 } else { 1 };
                        let scale = if name.contains("duration") {
                            0.3
                        } else if name.contains("load") {
                            0.05
                        } else {
                            0.003
                        };
                        let sigma = (units0.abs() as f64 * scale / page as f64).max(1.0);
                        if units0.abs() >= 100 || rng.uniform() < 0.1 {
                            let pull = (units0 - units) as f64 * 0.05 / page as f64;
                            units += (pull + rng.normal() * sigma).round() as i64 * page;
                            if units0 >= 0 {
                                units = units.max(0);
                            }
                        }
                        from_units(units, dec)
                    }
                };
                samples.push((t, v));
            }
            out.push((series.to_owned(), kind, samples));
        }
        out
    }

    #[test]
    #[ignore = "report: run with --release -- --ignored --nocapture"]
    fn chunkenc_report() {
        use std::hint::black_box;
        use std::time::Instant;

        const N: usize = 2880; // 12 h of 15 s scrapes
        let data = synthesize(&load_exposition(), N, 42);
        let mut by_kind: std::collections::BTreeMap<Kind, [usize; 7]> = Default::default();
        let mut encodings: std::collections::BTreeMap<String, usize> = Default::default();
        for (_, kind, s) in &data {
            let e = by_kind.entry(*kind).or_default();
            e[0] += 1;
            e[1] += s.len();
            e[2] += xor_chunk(s).encoded_len();
            e[3] += s.chunks(120).map(|c| xor_chunk(c).encoded_len()).sum::<usize>();
            e[4] += s.chunks(120).map(|c| block(c).len()).sum::<usize>();
            e[5] += s.chunks(720).map(|c| block(c).len()).sum::<usize>();
            e[6] += block(s).len();
            for c in s.chunks(720) {
                let b = block(c);
                roundtrip(c);
                let venc = ["const", "decimal", "xor", "?"][usize::from(value_encoding(&b))];
                let z = if b[0] & HEADER_COMPRESSED != 0 { "+zstd" } else { "" };
                *encodings.entry(format!("{kind:?}/{venc}{z}")).or_default() += 1;
            }
        }
        let mut total = [0usize; 7];
        println!("\nbytes/sample, {N} samples per series, 15 s scrapes with 0-5 ms jitter");
        println!(
            "{:<10} {:>7} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11}",
            "kind", "series", "samples", "xor(whole)", "xor(120)", "block(120)", "block(720)", "block(2880)"
        );
        for (kind, e) in &by_kind {
            for (t, x) in total.iter_mut().zip(e) {
                *t += x;
            }
            let per = |i: usize| e[i] as f64 / e[1] as f64;
            println!(
                "{:<10} {:>7} {:>9} {:>11.3} {:>11.3} {:>11.3} {:>11.3} {:>11.3}",
                format!("{kind:?}"),
                e[0],
                e[1],
                per(2),
                per(3),
                per(4),
                per(5),
                per(6)
            );
        }
        let per = |i: usize| total[i] as f64 / total[1] as f64;
        println!(
            "{:<10} {:>7} {:>9} {:>11.3} {:>11.3} {:>11.3} {:>11.3} {:>11.3}",
            "all",
            total[0],
            total[1],
            per(2),
            per(3),
            per(4),
            per(5),
            per(6)
        );
        println!("block(720) encodings: {encodings:?}");

        // Throughput.
        let rate = |samples: usize, secs: f64| samples as f64 / secs / 1e6;
        let n = 1_000_000usize;
        let mut rng = Rng(7);
        let counter: Vec<f64> = (0..n)
            .scan(0i64, |u, _| {
                *u += 1000 + (rng.next_u64() % 500) as i64;
                Some(*u as f64 / 100.0)
            })
            .collect();
        let random: Vec<f64> = (0..n).map(|_| f64::from_bits(rng.next_u64() >> 2)).collect();
        for (label, values) in [("constant", vec![42.0; n]), ("counter", counter), ("random bits", random)] {
            let mut best = f64::MAX;
            let mut chunk = XorChunk::new();
            for _ in 0..5 {
                let t0 = Instant::now();
                let mut c = XorChunk::new();
                for (i, &v) in values.iter().enumerate() {
                    c.append(1_700_000_000_000 + i as i64 * 15_000, v);
                }
                best = best.min(t0.elapsed().as_secs_f64());
                chunk = black_box(c);
            }
            let t0 = Instant::now();
            let sum: f64 = chunk.iter().map(|s| s.1).sum();
            let iter_secs = t0.elapsed().as_secs_f64();
            black_box(sum);
            println!(
                "XorChunk {label:<12} append {:>7.1} M samples/s, iter {:>6.1} M samples/s, {:.3} bytes/sample",
                rate(n, best),
                rate(n, iter_secs),
                chunk.encoded_len() as f64 / n as f64
            );
        }

        let heads: Vec<XorChunk> = data.iter().map(|(_, _, s)| xor_chunk(&s[..120])).collect();
        let heap: usize = heads.iter().map(XorChunk::heap_bytes).sum();
        println!(
            "XorChunk memory: struct {} bytes + {:.1} heap bytes on average per 120-sample head chunk",
            std::mem::size_of::<XorChunk>(),
            heap as f64 / heads.len() as f64
        );

        let blocks: Vec<&[(i64, f64)]> = data.iter().flat_map(|(_, _, s)| s.chunks(720)).collect();
        let samples: usize = blocks.iter().map(|b| b.len()).sum();
        let mut encoded = Vec::new();
        let t0 = Instant::now();
        for b in &blocks {
            let mut out = Vec::new();
            encode_block(b, &mut out);
            encoded.push(out);
        }
        let enc_secs = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let mut decoded = 0usize;
        for e in &encoded {
            decoded += black_box(decode_block(e).expect("decode")).len();
        }
        let dec_secs = t0.elapsed().as_secs_f64();
        assert_eq!(decoded, samples);
        println!(
            "block(720) over the data set: encode {:.1} M samples/s, decode {:.1} M samples/s ({} blocks)",
            rate(samples, enc_secs),
            rate(samples, dec_secs),
            blocks.len()
        );
    }
}
