//! Bit streams, most significant bit first: a writer over borrowed state and a
//! buffered reader, with the delta-of-delta timestamp code of the module documentation.

use std::fmt;

use super::bytes::Origin;
use super::{ByteOffset, ChunkError};

/// A bit writer over borrowed state, so that [`XorChunk`](super::XorChunk) can keep its fields
/// flat (and small) while sharing the code with the block encoder.
pub(super) struct BitSink<'a> {
    pub(super) buf: &'a mut Vec<u8>,
    /// Pending bits, right-aligned; only the low `nbits` bits are meaningful.
    pub(super) acc: &'a mut u64,
    pub(super) nbits: &'a mut u8,
}

impl BitSink<'_> {
    /// Appends the low `n` bits of `value` (`1 ≤ n ≤ 64`, `value < 2^n`).
    #[inline(always)]
    pub(super) fn put(&mut self, value: u64, n: u32) {
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
pub(super) fn tail_bytes(acc: u64, nbits: u8) -> ([u8; 8], usize) {
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
pub(super) fn put_dod(w: &mut BitSink<'_>, dod: i64) {
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

/// Reads a bit stream from `data`, followed by up to 8 `tail` bytes (the
/// not-yet-flushed bits of a live [`XorChunk`](super::XorChunk)).
pub(super) struct BitReader<'a> {
    pub(super) data: &'a [u8],
    tail: [u8; 8],
    tail_len: usize,
    /// Next byte to load (indexes `data`, then `tail`).
    pos: usize,
    /// Loaded bits, left-aligned; bits below the top `nbits` are either zero or
    /// the correct following stream bits.
    cur: u64,
    nbits: u32,
    pub(super) origin: Origin,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8], tail: [u8; 8], tail_len: usize, origin: Origin) -> Self {
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
    pub(super) fn consumed_bytes(&self) -> usize {
        (self.pos * 8 - self.nbits as usize).div_ceil(8)
    }

    pub(super) fn at(&self) -> ByteOffset {
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
    pub(super) fn bits(&mut self, n: u32, what: &'static str) -> Result<u64, ChunkError> {
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
    pub(super) fn bit(&mut self, what: &'static str) -> Result<bool, ChunkError> {
        self.bits(1, what).map(|b| b == 1)
    }

    pub(super) fn uvarint(&mut self, what: &'static str) -> Result<u64, ChunkError> {
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
    pub(super) fn dod(&mut self) -> Result<i64, ChunkError> {
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

impl fmt::Debug for BitReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitReader")
            .field("len", &(self.data.len() + self.tail_len))
            .field("pos", &self.pos)
            .finish()
    }
}
