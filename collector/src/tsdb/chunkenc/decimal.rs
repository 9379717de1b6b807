//! The decimal value encoding of blocks: values as integer mantissas times one
//! power of ten, kept only where every value decodes to its exact bits.

use super::ChunkError;
use super::bytes::ByteReader;
use super::column::{decode_column, encode_column};
use crate::varint::put_uvarint;

/// Largest power of ten that is an exact `f64`, and so the exponent bound of the decimal encoding.
const MAX_DECIMAL_EXP: i32 = 22;
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
/// Mantissas up to 2^53 in magnitude convert to `f64` exactly.
const MAX_EXACT_MANTISSA: f64 = 9_007_199_254_740_992.0;

/// `m × 10^e` as one IEEE-754 operation (`e` in `-22..=22`).
#[inline]
pub(super) fn decimal_value(m: i64, e: i32) -> f64 {
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
pub(super) fn encode_decimal(samples: &[(i64, f64)], out: &mut Vec<u8>) -> Option<()> {
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

/// Reads the decimal value encoding of a block payload (exponent, mantissa
/// column, exceptions) into the value slots of `out`, which holds `n` samples.
pub(super) fn decode_decimal(r: &mut ByteReader<'_>, n: usize, out: &mut [(i64, f64)]) -> Result<(), ChunkError> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
