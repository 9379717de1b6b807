//! Go's float formatting (`strconv.FormatFloat`), for what must print
//! numbers byte for byte as Go programs do: the rule templates' `printf`,
//! `humanize` and value printing, which follow Prometheus's (Go) output.
//! Only the decimal formats `e`, `E`, `f`, `g` and `G` of a `float64`.

use std::fmt::Write as _;

/// Decimal digits (without trailing zeros) and decimal-point position of |v|:
/// `sig` significant digits, or the shortest representation when None.
fn decimal_digits(v: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    let s = match sig {
        Some(n) => format!("{:.*e}", n.saturating_sub(1), v.abs()),
        None => format!("{:e}", v.abs()),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        return (digits, 0);
    }
    (digits, exp + 1)
}

fn fmt_e(out: &mut String, digs: &[u8], dp: i32, prec: usize, e: char) {
    out.push(digs.first().map_or('0', |&d| d as char));
    if prec > 0 {
        out.push('.');
        for i in 1..=prec {
            out.push(digs.get(i).map_or('0', |&d| d as char));
        }
    }
    out.push(e);
    let exp = if digs.is_empty() { 0 } else { dp - 1 };
    out.push(if exp < 0 { '-' } else { '+' });
    let _ = write!(out, "{:02}", exp.unsigned_abs());
}

fn fmt_f(out: &mut String, digs: &[u8], dp: i32, prec: usize) {
    if dp > 0 {
        for i in 0..dp as usize {
            out.push(digs.get(i).map_or('0', |&d| d as char));
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 1..=prec as i32 {
            let j = dp + i - 1;
            out.push(if j >= 0 {
                digs.get(j as usize).map_or('0', |&d| d as char)
            } else {
                '0'
            });
        }
    }
}

/// Go's `strconv.FormatFloat(v, fmt, prec, 64)` for `fmt` in `'e'`, `'E'`,
/// `'f'`, `'g'` and `'G'` (other formats are not supported: they format as
/// `'g'`).
///
/// `prec` is the number of digits after the decimal point for `'e'`, `'E'`
/// and `'f'`, and the number of significant digits for `'g'` and `'G'` (0 is
/// taken as 1); -1 (any negative value) asks for the fewest digits that read
/// back as `v`. NaN is `NaN` and the infinities `+Inf` and `-Inf` whatever
/// the format; negative zero keeps its sign. `'g'` uses the exponent form
/// when the exponent is below -4 or at least the precision (6 for the
/// shortest form: `1e+06` but `100000`, `0.0001` but `1e-05`); exponents have
/// at least two digits.
pub fn format_float(v: f64, fmt: char, prec: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let mut out = String::new();
    if v.is_sign_negative() {
        out.push('-');
    }
    let shortest = prec < 0;
    match fmt {
        'f' if !shortest => {
            let _ = write!(out, "{:.*}", prec as usize, v.abs());
        }
        'f' => {
            let (digs, dp) = decimal_digits(v, None);
            fmt_f(&mut out, &digs, dp, (digs.len() as i32 - dp).max(0) as usize);
        }
        'e' | 'E' => {
            let (digs, dp) = if shortest {
                decimal_digits(v, None)
            } else {
                decimal_digits(v, Some(prec as usize + 1))
            };
            let p = if shortest { digs.len().saturating_sub(1) } else { prec as usize };
            fmt_e(&mut out, &digs, dp, p, fmt);
        }
        _ => {
            // 'g' / 'G'
            let mut prec = if prec == 0 { 1 } else { prec };
            let (digs, dp) = if shortest {
                decimal_digits(v, None)
            } else {
                decimal_digits(v, Some(prec as usize))
            };
            let nd = digs.len() as i32;
            let mut eprec = prec;
            if shortest {
                prec = nd;
            }
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let exp = dp - 1;
            if exp < -4 || exp >= eprec {
                if prec > nd {
                    prec = nd;
                }
                fmt_e(&mut out, &digs, dp, (prec - 1).max(0) as usize, if fmt == 'G' { 'E' } else { 'e' });
            } else {
                if prec > dp {
                    prec = nd;
                }
                fmt_f(&mut out, &digs, dp, (prec - dp).max(0) as usize);
            }
        }
    }
    out
}

/// `FormatFloat(v, 'f', -1, 64)`: how Prometheus writes sample values in
/// its JSON API (`"1234.5"`, `"1e+21"` is `"1000000000000000000000"`).
/// The same as [`format_float`]`(v, 'f', -1)`, without its digit buffer:
/// Rust's `Display` for `f64` also prints the shortest round-trip digits
/// without an exponent.
pub fn format_f(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// `FormatFloat(v, 'g', -1, 64)`: how Prometheus's client libraries write
/// values in the text exposition (`/federate`): the exponent form below
/// 1e-4 and from 1e6 up, as [`format_float`]`(v, 'g', -1)`, faster.
pub fn format_g(v: f64) -> String {
    if !v.is_finite() {
        return format_f(v);
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d.ddde<exp>`.
    let e = format!("{v:e}");
    let Some((mantissa, exp)) = e.split_once('e') else { return e };
    let Ok(exp) = exp.parse::<i32>() else { return e };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
    format!("{v}")
}

/// `FormatFloat(v, 'e', -1, 64)`: how Prometheus writes an alert's value
/// (`1.5e+00`), as [`format_float`]`(v, 'e', -1)`, faster.
pub fn format_e(v: f64) -> String {
    if !v.is_finite() {
        return format_f(v);
    }
    let s = format!("{v:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::format_float;
    use super::{format_e, format_f, format_g};

    /// `(v, fmt, prec, Go's strconv.FormatFloat(v, fmt, prec, 64))`.
    fn check(cases: &[(f64, char, i32, &str)]) {
        for (v, fmt, prec, want) in cases {
            assert_eq!(format_float(*v, *fmt, *prec), *want, "FormatFloat({v:?}, '{fmt}', {prec}, 64)");
        }
    }

    #[test]
    fn shortest_g_switches_to_the_exponent_at_six_digits_and_below_1e_minus_4() {
        check(&[
            (1e6, 'g', -1, "1e+06"),
            (100000.0, 'g', -1, "100000"),
            (123456.0, 'g', -1, "123456"),
            (123456789.0, 'g', -1, "1.23456789e+08"),
            (0.0001, 'g', -1, "0.0001"),
            (0.00001, 'g', -1, "1e-05"),
            (1e21, 'g', -1, "1e+21"),
            (1.5, 'g', -1, "1.5"),
            (0.1, 'g', -1, "0.1"),
            (1.0 / 3.0, 'g', -1, "0.3333333333333333"),
            (-2.5, 'g', -1, "-2.5"),
            (0.0, 'g', -1, "0"),
            (-0.0, 'g', -1, "-0"),
            (1e-7, 'G', -1, "1E-07"),
            (1e100, 'G', -1, "1E+100"),
        ]);
    }

    #[test]
    fn g_with_a_precision_counts_significant_digits() {
        check(&[
            (123456789.0, 'g', 4, "1.235e+08"),
            (123456789.0, 'g', 9, "123456789"),
            (123456789.0, 'g', 0, "1e+08"),
            (1e6, 'g', 7, "1000000"),
            (1e6, 'g', 3, "1e+06"),
            (100000.0, 'g', 6, "100000"),
            (0.0001, 'g', 2, "0.0001"),
            (0.00001, 'g', 3, "1e-05"),
            (1e21, 'g', 4, "1e+21"),
            (1234.5678, 'g', 4, "1235"),
            (-0.0, 'g', 4, "-0"),
        ]);
    }

    #[test]
    fn e_format() {
        check(&[
            (1.5, 'e', -1, "1.5e+00"),
            (123456789.0, 'e', -1, "1.23456789e+08"),
            (123456789.0, 'e', 3, "1.235e+08"),
            (1e21, 'e', -1, "1e+21"),
            (1e21, 'e', 2, "1.00e+21"),
            (0.00001, 'e', -1, "1e-05"),
            (0.00001, 'e', 6, "1.000000e-05"),
            (0.0, 'e', -1, "0e+00"),
            (0.0, 'e', 2, "0.00e+00"),
            (-0.0, 'e', -1, "-0e+00"),
            (123456.789, 'E', 6, "1.234568E+05"),
            (5e-324, 'e', -1, "5e-324"),
        ]);
    }

    #[test]
    fn f_format() {
        check(&[
            (123456789.0, 'f', -1, "123456789"),
            (123456789.0, 'f', 2, "123456789.00"),
            (1e21, 'f', -1, "1000000000000000000000"),
            (1e21, 'f', 1, "1000000000000000000000.0"),
            (0.00001, 'f', -1, "0.00001"),
            (0.00001, 'f', 3, "0.000"),
            (0.00001, 'f', 7, "0.0000100"),
            (1.5, 'f', -1, "1.5"),
            (0.1, 'f', 20, "0.10000000000000000555"),
            (-0.0, 'f', -1, "-0"),
            (-0.0, 'f', 2, "-0.00"),
            (-1.5, 'f', 3, "-1.500"),
        ]);
    }

    #[test]
    fn nan_and_infinities_ignore_format_and_precision() {
        for fmt in ['e', 'E', 'f', 'g', 'G'] {
            for prec in [-1, 0, 3] {
                check(&[
                    (f64::NAN, fmt, prec, "NaN"),
                    (f64::INFINITY, fmt, prec, "+Inf"),
                    (f64::NEG_INFINITY, fmt, prec, "-Inf"),
                ]);
            }
        }
    }

    #[test]
    fn fast_forms_equal_format_float() {
        // Deterministic pseudo-random bit patterns plus edge cases.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1e-4,
            1e-5,
            99999.0,
            1e5,
            1e6,
            123456.0,
            1e20,
            1e21,
            1e22,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(f64::from_bits(x));
            values.push((x % 1_000_000) as f64 / 1000.0);
        }
        for v in values {
            assert_eq!(format_f(v), format_float(v, 'f', -1), "{v:e}");
            assert_eq!(format_g(v), format_float(v, 'g', -1), "{v:e}");
            assert_eq!(format_e(v), format_float(v, 'e', -1), "{v:e}");
        }
    }
}
