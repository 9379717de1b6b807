//! Kubernetes resource quantities (`250m`, `1.5`, `64Mi`, `1G`, `1e3`,
//! `100Ki`), parsed exactly as apimachinery's `resource.Quantity`:
//!
//! ```text
//! <quantity> ::= <sign><digits>[.<digits>]<suffix>
//! <suffix>   ::= Ki | Mi | Gi | Ti | Pi | Ei          (powers of 1024)
//!              | n | u | m | "" | k | M | G | T | P | E (powers of 1000)
//!              | e<signed int> | E<signed int>       (powers of 10)
//! ```
//!
//! The value is kept as an exact decimal (digits × 10^exp10 × 2^exp2), so
//! that kube-state-metrics' roundings can be reproduced exactly: CPU in
//! cores rounded up to the milli-core (`MilliValue() / 1000`), bytes rounded
//! up to the integer (`Value()`).

/// An exactly parsed quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    /// The significant digits, with the sign.
    digits: i128,
    /// Power of ten applied to `digits`.
    exp10: i32,
    /// Power of two applied (binary suffixes).
    exp2: u32,
}

/// Most significant digits accepted (beyond, i128 could overflow).
const MAX_DIGITS: usize = 36;

impl Quantity {
    /// Parses `s`; None when it is not a quantity.
    pub fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let (neg, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return None;
        }
        let mut digits: i128 = 0;
        let mut count = 0usize;
        for c in int.bytes().chain(frac.bytes()) {
            let d = i128::from(c - b'0');
            if digits == 0 && d == 0 {
                continue;
            }
            count += 1;
            if count > MAX_DIGITS {
                return None;
            }
            digits = digits * 10 + d;
        }
        let frac_len = i32::try_from(frac.len()).ok()?;
        let (mut exp10, exp2): (i32, u32) = match suffix {
            "" => (0, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            s if s.starts_with(['e', 'E']) => {
                let e = &s[1..];
                let body = e.strip_prefix(['+', '-']).unwrap_or(e);
                if body.is_empty() || !body.bytes().all(|c| c.is_ascii_digit()) || body.len() > 4 {
                    return None;
                }
                (e.parse::<i32>().ok()?, 0)
            }
            _ => return None,
        };
        exp10 -= frac_len;
        Some(Quantity {
            digits: if neg { -digits } else { digits },
            exp10,
            exp2,
        })
    }

    /// The value as a float (nearest).
    pub fn as_f64(&self) -> f64 {
        self.digits as f64 * 10f64.powi(self.exp10) * 2f64.powi(self.exp2 as i32)
    }

    /// `ceil(value × 10^scale)`, rounding away from zero as apimachinery's
    /// `ScaledValue` does; None when it does not fit.
    pub fn ceil_scaled(&self, scale: i32) -> Option<i128> {
        let mut n = self.digits.checked_mul(1i128.checked_shl(self.exp2)?)?;
        let e = self.exp10 + scale;
        if e >= 0 {
            for _ in 0..e {
                n = n.checked_mul(10)?;
            }
            return Some(n);
        }
        let mut div: i128 = 1;
        for _ in 0..(-e) {
            div = match div.checked_mul(10) {
                Some(d) => d,
                // Far below one unit: rounds to ±1 (or 0).
                None => return Some(n.signum()),
            };
        }
        let q = n / div;
        let r = n % div;
        Some(if r == 0 { q } else { q + n.signum() })
    }

    /// CPU cores as kube-state-metrics reports them: rounded up to the
    /// milli-core.
    pub fn cores(&self) -> f64 {
        match self.ceil_scaled(3) {
            Some(m) => m as f64 / 1000.0,
            None => self.as_f64(),
        }
    }

    /// Bytes (or any integer resource) as kube-state-metrics reports them:
    /// rounded up to the integer.
    pub fn integer(&self) -> f64 {
        match self.ceil_scaled(0) {
            Some(v) => v as f64,
            None => self.as_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|| panic!("{s:?} should parse"))
    }

    #[test]
    fn parses_every_suffix_family() {
        assert_eq!(q("250m").cores(), 0.25);
        assert_eq!(q("1.5").cores(), 1.5);
        assert_eq!(q("2").cores(), 2.0);
        assert_eq!(q("64Mi").integer(), 67_108_864.0);
        assert_eq!(q("1G").integer(), 1e9);
        assert_eq!(q("1e3").integer(), 1000.0);
        assert_eq!(q("1E3").integer(), 1000.0);
        assert_eq!(q("100Ki").integer(), 102_400.0);
        assert_eq!(q("1.5Gi").integer(), 1_610_612_736.0);
        assert_eq!(q("0.5Ki").integer(), 512.0);
        assert_eq!(q("128974848").integer(), 128_974_848.0);
        assert_eq!(q("129e6").integer(), 129_000_000.0);
        assert_eq!(q("123Mi").integer(), 128_974_848.0);
        assert_eq!(q("12e-3").cores(), 0.012);
        assert_eq!(q("+1k").integer(), 1000.0);
        assert_eq!(q("-1k").integer(), -1000.0);
        assert_eq!(q(".5").cores(), 0.5);
        assert_eq!(q("5.").cores(), 5.0);
        assert_eq!(q("1Ei").integer(), 1_152_921_504_606_846_976.0);
        assert_eq!(q("0").integer(), 0.0);
        assert_eq!(q("000100m").cores(), 0.1);
    }

    #[test]
    fn rounds_up_like_apimachinery() {
        // 0.1 is not exact in binary; the decimal path gives 100m, not 101m.
        assert_eq!(q("0.1").cores(), 0.1);
        assert_eq!(q("100u").cores(), 0.001, "MilliValue rounds up");
        assert_eq!(q("1500500u").cores(), 1.501);
        assert_eq!(q("1n").cores(), 0.001);
        assert_eq!(q("0.1").integer(), 1.0, "Value rounds up");
        assert_eq!(q("1.2").integer(), 2.0);
        assert_eq!(q("-1.2").integer(), -2.0, "away from zero");
        // metrics-server's nanocores, as a float.
        assert!((q("123456789n").as_f64() - 0.123456789).abs() < 1e-15);
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in [
            "", "m", "Mi", "1.5.3", "1x", "1mi", "1KiB", "abc", "1e", "1e+", "1e99999", "--1", " ", "1 Mi", "1e3Mi",
        ] {
            assert!(Quantity::parse(bad).is_none(), "{bad:?} should not parse");
        }
        let long = "1".repeat(40);
        assert!(Quantity::parse(&long).is_none());
    }
}
