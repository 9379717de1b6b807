//! Go's float formatting (`strconv.FormatFloat`), for what must print
//! numbers byte for byte as Go programs do: the rule templates' `printf`,
//! `humanize` and value printing, which follow Prometheus's (Go) output.
//! Only the decimal formats `e`, `E`, `f`, `g` and `G` of a `float64`.

use std::fmt::Write as _;

/// Decimal digits (without trailing zeros) and decimal-point position of |v|:
/// `sig` significant digits, or the shortest representation when None.
fn decimal_digits(v: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    let Some(n) = sig else {
        let mut digits = [0u8; 17];
        let (len, dp) = shortest(v, &mut digits);
        return (digits[..len].to_vec(), dp);
    };
    let s = format!("{:.*e}", n.saturating_sub(1), v.abs());
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

/// The fewest decimal digits that read back as |v| (finite), as ASCII in
/// `digits`, and the position of the decimal point: |v| = 0.d1d2… ×
/// 10^point. Returns (number of digits, point); zero has no digits.
///
/// The digits are Ryū's, which are Go's: when two shortest candidates are
/// equally near (1658206780088562.25 lies halfway between …562.2 and
/// …562.3), both take the even one, where Rust's own shortest formatting
/// takes the one above.
fn shortest(v: f64, digits: &mut [u8; 17]) -> (usize, i32) {
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v.abs());
    let (mant, exp) = text.split_once('e').unwrap_or((text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (mut n, mut point, mut before_point) = (0usize, exp, true);
    for b in mant.bytes() {
        if b == b'.' {
            before_point = false;
            continue;
        }
        if before_point {
            point += 1;
        }
        if n == 0 && b == b'0' {
            // A leading zero is no digit: the point moves past it.
            point -= 1;
            continue;
        }
        if n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    while n > 0 && digits[n - 1] == b'0' {
        n -= 1;
    }
    if n == 0 { (0, 0) } else { (n, point) }
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
/// The same as [`format_float`]`(v, 'f', -1)`, without its digit buffer.
pub fn format_f(v: f64) -> String {
    let mut out = String::new();
    push_f(&mut out, v);
    out
}

/// [`format_f`] appended to `out`, without allocating: query answers write
/// tens of thousands of values.
pub fn push_f(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if v.is_sign_negative() {
        out.push('-');
    }
    let a = v.abs();
    // Whole numbers below 2^53 are their integer's digits.
    if a.trunc() == a && a < 9_007_199_254_740_992.0 {
        out.push_str(itoa::Buffer::new().format(a as u64));
        return;
    }
    // Ryū writes the same digits; without its exponent (from 1e-5 to
    // below 1e16) it lays them out as Go does, but for a whole number's
    // ".0", which the integer case above already took.
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(a);
    if !text.contains('e') && !text.ends_with(".0") {
        out.push_str(text);
        return;
    }
    let mut digits = [0u8; 17];
    let (n, dp) = shortest(a, &mut digits);
    fmt_f(out, &digits[..n], dp, (n as i32 - dp).max(0) as usize);
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
    let mut digits = [0u8; 17];
    let (n, dp) = shortest(v, &mut digits);
    let exp = dp - 1;
    let mut out = String::with_capacity(24);
    if v < 0.0 {
        out.push('-');
    }
    if (-4..6).contains(&exp) {
        fmt_f(&mut out, &digits[..n], dp, (n as i32 - dp).max(0) as usize);
    } else {
        fmt_e(&mut out, &digits[..n], dp, n.saturating_sub(1), 'e');
    }
    out
}

/// `FormatFloat(v, 'e', -1, 64)`: how Prometheus writes an alert's value
/// (`1.5e+00`), as [`format_float`]`(v, 'e', -1)`, faster.
pub fn format_e(v: f64) -> String {
    if !v.is_finite() {
        return format_f(v);
    }
    let mut digits = [0u8; 17];
    let (n, dp) = shortest(v, &mut digits);
    let mut out = String::with_capacity(24);
    if v.is_sign_negative() {
        out.push('-');
    }
    fmt_e(&mut out, &digits[..n], dp, n.saturating_sub(1), 'e');
    out
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

    /// Ties between two shortest candidates go to the even digit, as in
    /// Go: the expected texts are Prometheus 2.42's answers to these
    /// numbers as scalar queries.
    #[test]
    fn shortest_digits_are_gos_on_ties() {
        for (v, go) in [
            // …562.25 and …562.75, exactly (written as sums: a literal with
            // the quarter is "excessive precision" to clippy, which prints
            // it with Rust's rounding).
            (1658206780088562.0 + 0.25, "1658206780088562.2"),
            (1658206780088562.0 + 0.75, "1658206780088562.8"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1000000000000000000000"),
            (1e-7, "0.0000001"),
            (123456789012345.6, "123456789012345.6"),
            (9007199254740993.0, "9007199254740992"),
        ] {
            assert_eq!(format_f(v), go, "{v:e}");
        }
        assert_eq!(format_g(1658206780088562.0 + 0.25), "1.6582067800885622e+15");
        assert_eq!(format_e(-(1658206780088562.0 + 0.25)), "-1.6582067800885622e+15");
    }

    /// Whatever the value, the text reads back as it, has no exponent, and
    /// has as many digits as Rust's own shortest formatting (which differs
    /// from Go's at most by one in the last digit, on ties).
    #[test]
    fn f_reads_back_with_the_fewest_digits() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut values = vec![
            5e-324,
            f64::MAX,
            1e15,
            1e15 + 0.5,
            1e16,
            2f64.powi(53),
            2f64.powi(53) + 2.0,
            -0.5,
            1e-5,
            9.99e-6,
        ];
        for _ in 0..100_000 {
            let bits = next();
            values.push(f64::from_bits(bits));
            values.push((next() % 10_000_000_000) as f64 / 10f64.powi((bits % 10) as i32));
            values.push((next() % 1_000_000) as f64 * 4096.0);
        }
        for v in values.into_iter().filter(|v| v.is_finite()) {
            let ours = format_f(v);
            assert!(!ours.contains('e'), "{ours}");
            assert_eq!(ours.parse::<f64>().ok().map(f64::to_bits), Some(v.to_bits()), "{ours} for {v:e}");
            let rust = format!("{v}");
            assert_eq!(ours.len(), rust.len(), "{ours} against {rust}");
            if ours != rust {
                let (a, b) = (ours.as_bytes(), rust.as_bytes());
                let n = a.len();
                assert_eq!(a[..n - 1], b[..n - 1], "{ours} against {rust}");
                assert_eq!(a[n - 1].abs_diff(b[n - 1]), 1, "{ours} against {rust}");
            }
        }
    }
}
