//! The Rice form of a column's residuals.
//!
//! ```text
//! mode: u8 │ len: uvarint │ len bytes: bit stream, zero-padded to a byte
//! mode bits: 5..0 k (0..=62) │ 6 zero flags │ 7 zero
//! per residual r, with z = zigzag(r), or with zero flags:
//!   r = 0: '0';  r ≠ 0: '1', then the code below for z = zigzag(r) - 1
//! and q = z >> k:
//!   q < 32:  '1' × q │ '0' │ bits(k) = z's low k bits
//!   q ≥ 32:  '1' × 32 │ bits(64) = z                    (an escape)
//! ```
//!
//! Zero flags serve series that often repeat their last value between
//! changes of some size (memory gauges, bursty counters): a repeat costs one
//! bit instead of k + 1.
//!
//! Residuals of noisy gauges and counters are close to normally distributed
//! around the predictor. Bit packing gives every residual the width of the
//! widest usual one; a Rice code spends about `k + 2` bits on a typical
//! one and more only on the rare large ones. On the storage benchmark's
//! node_exporter data that is 1 to 1.5 bits per sample less than packing
//! for the noisiest series, which are half of the bytes.

use super::ChunkError;
use super::bstream::{BitSink, tail_bytes};
use super::bytes::{ByteReader, uvarint_len};
use crate::varint::{put_uvarint, zigzag};

/// Unary quotients from this length on are escapes.
const ESCAPE: u64 = 32;
/// The largest `k` written.
const MAX_K: u32 = 62;

/// Bits of `z` with parameter `k`.
#[inline]
fn bits(z: u64, k: u32) -> u64 {
    let q = z >> k;
    if q < ESCAPE { q + 1 + u64::from(k) } else { ESCAPE + 64 }
}

/// Flag in the mode byte: residuals carry zero flags.
const ZERO_FLAGS: u8 = 0x40;

/// How a column's residuals are Rice-coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Params {
    k: u32,
    zeros: bool,
}

impl Params {
    /// The code of residual `r`: the value written, and its bits.
    #[inline]
    fn code(self, r: i64) -> Option<u64> {
        let z = zigzag(r);
        match (self.zeros, z) {
            (true, 0) => None,
            (true, z) => Some(z - 1),
            (false, z) => Some(z),
        }
    }

    #[inline]
    fn bits(self, r: i64) -> u64 {
        let flag = u64::from(self.zeros);
        self.code(r).map_or(1, |z| flag + bits(z, self.k))
    }
}

/// The best parameters for `residuals`, and the encoded length in bytes with them.
pub(super) fn choose(residuals: &[i64]) -> (Params, usize) {
    let plain = best_k(residuals.iter().map(|&r| zigzag(r)), false, residuals);
    let zeros = residuals.iter().filter(|&&r| r == 0).count();
    // Zero flags cost a bit on every other residual: worth trying only
    // when repeats are common.
    let best = if zeros * 16 >= residuals.len() {
        let flagged = best_k(residuals.iter().filter(|&&r| r != 0).map(|&r| zigzag(r) - 1), true, residuals);
        if flagged.1 < plain.1 { flagged } else { plain }
    } else {
        plain
    };
    let len = best.1.div_ceil(8) as usize;
    (best.0, 1 + uvarint_len(len as u64) + len)
}

/// The best `k` for the codes `z` (with or without zero flags), and the
/// total bits of `residuals` with it.
fn best_k(codes: impl Iterator<Item = u64>, zeros: bool, residuals: &[i64]) -> (Params, u64) {
    // Codes by bit width give each k's cost roughly (a value of width
    // w > k has a quotient of about 1.5 × 2^(w-k-1)), robustly against a
    // few huge outliers; the exact cost then decides around the best.
    let mut widths = [0u64; 65];
    for z in codes {
        widths[(64 - z.leading_zeros()) as usize] += 1;
    }
    // Integer arithmetic, each k once: this runs for every column of every
    // block written, closed head chunks included.
    let used: Vec<(u64, u64)> = (0..=64u64).zip(widths).filter(|&(_, c)| c > 0).collect();
    let rough = |k: u64| -> u64 {
        used.iter()
            .map(|&(w, c)| {
                // A quotient of about 1.5 × 2^(w-k-1).
                let q = if w <= k {
                    0
                } else if w - k > 6 {
                    ESCAPE
                } else {
                    (3 << (w - k - 1)) / 2
                };
                c * if q < ESCAPE { q + 1 + k } else { ESCAPE + 64 }
            })
            .sum()
    };
    let k0 = (0..=u64::from(MAX_K)).min_by_key(|&k| rough(k)).unwrap_or(0) as u32;
    let mut best = (Params { k: 0, zeros }, u64::MAX);
    for k in k0.saturating_sub(1)..=(k0 + 1).min(MAX_K) {
        let p = Params { k, zeros };
        let total = residuals.iter().map(|&r| p.bits(r)).sum::<u64>();
        if total < best.1 {
            best = (p, total);
        }
    }
    best
}

/// Writes `residuals` in the Rice form with parameters `p`.
pub(super) fn write(residuals: &[i64], p: Params, out: &mut Vec<u8>) {
    let k = p.k;
    let mut stream = Vec::with_capacity(residuals.len() * (k as usize + 2) / 8 + 16);
    let (mut acc, mut nbits) = (0u64, 0u8);
    let mut w = BitSink {
        buf: &mut stream,
        acc: &mut acc,
        nbits: &mut nbits,
    };
    let low = if k == 0 { 0 } else { (1u64 << k) - 1 };
    for &r in residuals {
        let Some(z) = p.code(r) else {
            w.put(0, 1);
            continue;
        };
        if p.zeros {
            w.put(1, 1);
        }
        let q = z >> k;
        if q < ESCAPE {
            // q ones, then a zero.
            w.put((1u64 << (q + 1)) - 2, q as u32 + 1);
            if k > 0 {
                w.put(z & low, k);
            }
        } else {
            w.put((1u64 << ESCAPE) - 1, ESCAPE as u32);
            w.put(z, 64);
        }
    }
    let (tail, len) = tail_bytes(acc, nbits);
    stream.extend_from_slice(&tail[..len]);
    out.push(k as u8 | if p.zeros { ZERO_FLAGS } else { 0 });
    put_uvarint(out, stream.len() as u64);
    out.extend_from_slice(&stream);
}

/// A most-significant-bit-first reader of a Rice stream.
struct Bits<'a> {
    data: &'a [u8],
    /// Next byte of `data` to load.
    next: usize,
    /// Loaded bits, left-aligned; bits past `n` are zero.
    acc: u64,
    n: u32,
}

impl Bits<'_> {
    #[inline]
    fn refill(&mut self) {
        while self.n <= 56 {
            let Some(&b) = self.data.get(self.next) else { break };
            self.acc |= u64::from(b) << (56 - self.n);
            self.n += 8;
            self.next += 1;
        }
    }

    #[inline]
    fn consume(&mut self, k: u32) {
        self.acc = if k == 64 { 0 } else { self.acc << k };
        self.n -= k;
    }

    /// The next `k ≤ 32` bits, or `None` past the end.
    #[inline]
    fn take(&mut self, k: u32) -> Option<u64> {
        if k == 0 {
            return Some(0);
        }
        if self.n < k {
            self.refill();
            if self.n < k {
                return None;
            }
        }
        let v = self.acc >> (64 - k);
        self.consume(k);
        Some(v)
    }

    /// The next `k ≤ 64` bits.
    #[inline]
    fn take_wide(&mut self, k: u32) -> Option<u64> {
        if k <= 32 {
            return self.take(k);
        }
        let hi = self.take(k - 32)?;
        let lo = self.take(32)?;
        Some((hi << 32) | lo)
    }
}

/// Reads `m` residuals in the Rice form, handing each (still zigzagged) to `f`.
pub(super) fn read(r: &mut ByteReader<'_>, m: usize, mut f: impl FnMut(u64)) -> Result<(), ChunkError> {
    let at = r.at();
    let mode = r.u8("rice mode")?;
    let (k, zeros) = (u32::from(mode & 0x3f), mode & ZERO_FLAGS != 0);
    if k > MAX_K || mode & 0x80 != 0 {
        return Err(ChunkError::Invalid {
            what: "rice mode (k over 62, or bit 7 set)",
            at,
        });
    }
    let len = r.uvarint("rice stream length")?;
    let at = r.at();
    let data = r.take(len, "rice stream")?;
    // Every residual takes at least one bit.
    if (m as u64) > len.saturating_mul(8) {
        return Err(ChunkError::Truncated { what: "rice stream", at });
    }
    let truncated = ChunkError::Truncated { what: "rice stream", at };
    let mut b = Bits {
        data,
        next: 0,
        acc: 0,
        n: 0,
    };
    for _ in 0..m {
        if b.n <= 56 {
            b.refill();
        }
        if zeros {
            if b.n == 0 {
                return Err(truncated);
            }
            let nonzero = b.acc >> 63 == 1;
            b.consume(1);
            if !nonzero {
                f(0);
                continue;
            }
            if b.n <= 56 {
                b.refill();
            }
        }
        // With zero flags the code is zigzag(r) - 1.
        let offset = u64::from(zeros);
        // Leading ones of the loaded bits (the bits past `n` are zeros).
        let ones = (!b.acc).leading_zeros().min(ESCAPE as u32);
        if u64::from(ones) >= ESCAPE {
            b.consume(ESCAPE as u32);
            f(b.take_wide(64).ok_or_else(|| truncated.clone())?.wrapping_add(offset));
            continue;
        }
        if ones >= b.n {
            return Err(truncated);
        }
        b.consume(ones + 1);
        let lowbits = b.take_wide(k).ok_or_else(|| truncated.clone())?;
        f(((u64::from(ones) << k) | lowbits).wrapping_add(offset));
    }
    // The stream must end within its last byte.
    if b.next != data.len() || b.n >= 8 {
        return Err(ChunkError::Invalid {
            what: "rice stream (length does not match its residuals)",
            at,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::chunkenc::bytes::Origin;
    use crate::varint::unzigzag;

    fn roundtrip(res: &[i64]) -> usize {
        let (p, est) = choose(res);
        let mut out = Vec::new();
        write(res, p, &mut out);
        assert_eq!(out.len(), est, "estimate is exact");
        let mut r = ByteReader::new(&out, Origin::INPUT);
        let mut got = Vec::new();
        read(&mut r, res.len(), |z| got.push(unzigzag(z))).expect("decodes");
        assert_eq!(got, res);
        assert!(r.rest().is_empty());
        out.len()
    }

    #[test]
    fn residuals_round_trip_with_escapes_and_extremes() {
        roundtrip(&[0]);
        roundtrip(&[0; 100]);
        roundtrip(&[1, -1, 2, -2, 0, 5]);
        roundtrip(&[i64::MIN, i64::MAX, 0, -1, 1]);
        // Mostly small with huge outliers: the outliers are escapes.
        let mut v: Vec<i64> = (0..1000).map(|i| (i * 7919 % 61) - 30).collect();
        v[10] = 1 << 40;
        v[500] = -(1 << 50);
        let len = roundtrip(&v);
        assert!(len < 1000 * 8 / 8 + 40, "{len}");
    }

    #[test]
    fn normal_residuals_cost_less_than_their_packed_width() {
        // Sums of uniforms: close to normal, sigma about 9,000.
        let mut x = 12345u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 31_177) as i64 - 15_588
        };
        let res: Vec<i64> = (0..5760).map(|_| next() + next() + next()).collect();
        let len = roundtrip(&res);
        let width = 64 - res.iter().map(|&r| r.unsigned_abs() * 2).max().unwrap_or(0).leading_zeros();
        let packed = res.len() * width as usize / 8;
        assert!(len * 100 < packed * 95, "rice {len} B against packed {packed} B");
    }

    #[test]
    fn repeats_take_one_bit_with_zero_flags() {
        // A gauge that keeps its value four times in ten and otherwise
        // moves by about a thousand.
        let res: Vec<i64> = (0..3000i64)
            .map(|i| if i % 10 < 4 { 0 } else { (i * 7919 % 2001) - 1000 })
            .collect();
        let (p, _) = choose(&res);
        assert!(p.zeros, "{p:?}");
        let len = roundtrip(&res);
        let plain = residual_bits(&res, Params { k: p.k, zeros: false });
        assert!(len * 8 < plain as usize * 9 / 10, "{len} B flagged against {plain} bits plain");
        // Extremes survive the offset by one.
        roundtrip(&[0, i64::MIN, 0, i64::MAX, -1, 0, 1, 0, 0, 0]);
        let mut out = Vec::new();
        write(&[0, 0, i64::MIN, 5], Params { k: 3, zeros: true }, &mut out);
        let mut r = ByteReader::new(&out, Origin::INPUT);
        let mut got = Vec::new();
        read(&mut r, 4, |z| got.push(unzigzag(z))).expect("decodes");
        assert_eq!(got, [0, 0, i64::MIN, 5]);
    }

    fn residual_bits(res: &[i64], p: Params) -> u64 {
        res.iter().map(|&r| p.bits(r)).sum()
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let mut out = Vec::new();
        write(&[3, -7, 100, 1 << 45], Params { k: 2, zeros: false }, &mut out);
        // Cut short anywhere: an error, never a panic.
        for cut in 0..out.len() {
            let mut r = ByteReader::new(&out[..cut], Origin::INPUT);
            assert!(read(&mut r, 4, |_| {}).is_err(), "cut at {cut}");
        }
        // More residuals than the stream holds (beyond its zero padding,
        // which can read as small residuals: undetectable, as documented
        // in the module of the block format).
        let mut r = ByteReader::new(&out, Origin::INPUT);
        assert!(read(&mut r, 7, |_| {}).is_err());
        // Fewer: the stream is longer than its residuals.
        let mut r = ByteReader::new(&out, Origin::INPUT);
        assert!(read(&mut r, 2, |_| {}).is_err());
        // Modes no encoder writes.
        for mode in [63, 0x80 | 2] {
            let mut bad = out.clone();
            bad[0] = mode;
            let mut r = ByteReader::new(&bad, Origin::INPUT);
            assert!(read(&mut r, 4, |_| {}).is_err(), "{mode:#x}");
        }
    }
}
