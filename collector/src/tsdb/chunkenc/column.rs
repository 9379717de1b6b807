//! Integer columns of a block (timestamps, decimal mantissas): the linear, delta,
//! delta-of-delta and grid predictors, common-factor scaling, and the varint,
//! bit-packed or Rice forms of the residuals.

use super::ChunkError;
use super::bstream::{BitReader, BitSink, tail_bytes};
use super::bytes::{ByteReader, put_varint, uvarint_len};
use super::compress::zstd_compress;
use super::rice;
use crate::varint::{put_uvarint, unzigzag, zigzag};

const COL_LINEAR: u8 = 0;
const COL_DELTA: u8 = 1;
const COL_DOD: u8 = 2;
const COL_GRID: u8 = 3;
/// Flag in a column kind byte: the residuals are bit-packed rather than varints.
const COL_PACKED: u8 = 0x10;
/// Flag in a column kind byte: a common factor of the residuals follows the parameters.
const COL_SCALED: u8 = 0x20;
/// Flag in a column kind byte: the residuals are Rice-coded (rice.rs; never with `COL_PACKED`).
const COL_RICE: u8 = 0x40;

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
pub(super) fn encode_column(x: &[i64], out: &mut Vec<u8>) {
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
    let (rice_params, rice_len) = rice::choose(&residuals);
    let varint_len: usize = residuals.iter().map(|&r| uvarint_len(zigzag(r))).sum();
    // The smaller of the two bit forms; varints can win after zstd on
    // low-entropy columns (mostly zeros), so that is tried there.
    let bits_len = packing.len.min(rice_len);
    let bits = bits_len < varint_len && (bits_len * 8 > residuals.len() * 3 || bits_len < zstd_len_of_varints(&residuals, varint_len));
    if bits && rice_len < packing.len {
        out[kind_at] |= COL_RICE;
        rice::write(&residuals, rice_params, out);
    } else if bits {
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

/// Reads `m` residuals in varint, packed or Rice form.
fn read_residuals(r: &mut ByteReader<'_>, m: usize, packed: bool, rice: bool) -> Result<Vec<i64>, ChunkError> {
    if rice {
        let mut res = Vec::with_capacity(m);
        rice::read(r, m, |z| res.push(unzigzag(z)))?;
        return Ok(res);
    }
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
pub(super) fn decode_column(r: &mut ByteReader<'_>, n: usize, mut f: impl FnMut(i64)) -> Result<(), ChunkError> {
    const WHAT: &str = "column parameter";
    let at = r.at();
    let byte = r.u8("column kind")?;
    let (kind, packed, scaled, rice) = (byte & 0x0f, byte & COL_PACKED != 0, byte & COL_SCALED != 0, byte & COL_RICE != 0);
    if kind > COL_GRID || byte & 0x80 != 0 || (packed && rice) || (kind == COL_LINEAR && (packed || scaled || rice)) {
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
        let mut res = read_residuals(r, m, packed, rice)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::chunkenc::bytes::Origin;
    use crate::tsdb::chunkenc::tests::Rng;
    use proptest::prelude::*;

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

    proptest! {
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
    }
}
