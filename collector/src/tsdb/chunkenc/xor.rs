//! The XOR (Gorilla) value code: the head chunk [`XorChunk`] and its iterator, and
//! the xor value encoding of blocks, which shares the bit stream of values with it.

use super::bstream::{BitReader, BitSink, put_dod, tail_bytes};
use super::bytes::{ByteReader, Origin, put_varint, uvarint_len};
use super::{ByteOffset, ChunkError, XOR_CHUNK_FORMAT};
use crate::varint::{put_uvarint, unzigzag};

/// Leading-zero count meaning "no XOR window set yet".
const NO_WINDOW: u8 = 0xff;
/// Initial buffer capacity of an [`XorChunk`]; the first sample needs at most 18 bytes.
const INITIAL_CAPACITY: usize = 32;

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
/// [`XorChunk::to_bytes`] is described in the [module documentation](super).
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
    /// samples; see the [module documentation](super)) to `out`.
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
// Block codec: xor values
// ---------------------------------------------------------------------------

/// Writes the xor value encoding of a block payload: the first value, then the
/// bit stream of the others, coded as in [`XorChunk`].
pub(super) fn encode_xor_values(samples: &[(i64, f64)], out: &mut Vec<u8>) {
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

/// Reads the xor value encoding of a block payload into the value slots of `out`
/// (its first value, then the bit stream of the others).
pub(super) fn decode_xor_values(r: &mut ByteReader<'_>, out: &mut [(i64, f64)]) -> Result<(), ChunkError> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_is_small() {
        assert!(std::mem::size_of::<XorChunk>() <= 64, "{}", std::mem::size_of::<XorChunk>());
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
}
