//! Prometheus durations and byte sizes, as config files, flags, rule files,
//! API parameters and test scripts write them: one parser and one printer
//! for both binaries.
//!
//! Durations follow Prometheus's `model.ParseDuration`: integers with the
//! units `y w d h m s ms`, in that order, each at most once (`1h30m`,
//! `15d`, `500ms`, `0`). A year is 365 days, a week 7 days. Anything else
//! (`30s1m`, `1.5h`, `2 days`) is refused with an example of the form.
//! [`format_duration`] is `model.Duration.String()` (`1m30s`, `90d`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a duration string does not parse. The kinds are those of
/// Prometheus's `model.ParseDuration`, so that callers that must answer as
/// Prometheus does (rule templates' `parseDuration`, promtool) can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The empty string.
    #[error("empty duration string")]
    Empty,
    /// Not of the form `<int><unit>...` with units in order, each once.
    #[error("invalid duration {input:?} (Prometheus form: 15s, 1m30s, 2h, 15d, 1w, 500ms)")]
    Invalid {
        /// The input.
        input: String,
    },
    /// A unit other than `y w d h m s ms`.
    #[error("unknown unit {unit:?} in duration {input:?} (units: y w d h m s ms)")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The input.
        input: String,
    },
    /// Longer than `i64` milliseconds.
    #[error("duration {input:?} out of range")]
    OutOfRange {
        /// The input.
        input: String,
    },
}

/// A byte size that does not parse; the message quotes the input and shows
/// the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SizeError(String);

const UNITS: [(&str, i64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a Prometheus duration string to milliseconds (never negative).
pub fn parse_duration_ms(s: &str) -> Result<i64, DurationError> {
    let bad = || DurationError::Invalid { input: s.to_string() };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: i64 = 0;
    let mut last: Option<usize> = None;
    let mut rest = s;
    while !rest.is_empty() {
        let nd = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if nd == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..nd].parse().map_err(|_| bad())?;
        let r = &rest[nd..];
        let nu = r.find(|c: char| c.is_ascii_digit()).unwrap_or(r.len());
        if nu == 0 {
            return Err(bad());
        }
        let idx = UNITS
            .iter()
            .position(|(u, _)| *u == &r[..nu])
            .ok_or_else(|| DurationError::UnknownUnit {
                unit: r[..nu].to_string(),
                input: s.to_string(),
            })?;
        if last.is_some_and(|l| idx <= l) {
            return Err(bad());
        }
        last = Some(idx);
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::OutOfRange { input: s.to_string() })?;
        rest = &r[nu..];
    }
    Ok(total)
}

/// Parses a Prometheus duration string (surrounding white space ignored).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let ms = parse_duration_ms(s.trim())?;
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

/// Formats milliseconds as Prometheus does (`model.Duration.String()`):
/// `0s`, `1m30s`, `15d`; years and weeks only when exact (`90d`, not `12w6d`).
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms.unsigned_abs();
    if ms < 0 {
        out.push('-');
    }
    for (i, (unit, len)) in UNITS.iter().enumerate() {
        let len = len.unsigned_abs();
        let exact = i < 2;
        if rest >= len && (!exact || rest.is_multiple_of(len)) {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    out
}

/// Formats a [`Duration`] as Prometheus does (see [`format_duration_ms`]);
/// below a millisecond is dropped.
pub fn format_duration(d: Duration) -> String {
    format_duration_ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Parses a byte size: a plain number of bytes or a number with one of the
/// units B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of
/// 1024). `10GB` and `256MiB` are both accepted.
pub fn parse_bytes(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| SizeError(format!("invalid size {s:?} (examples: 1048576, 512MiB, 10GB)")))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" | "ki" => 1024.0,
        "mib" | "mi" => 1024.0 * 1024.0,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(SizeError(format!(
                "invalid size unit {other:?} in {s:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )));
        }
    };
    if !n.is_finite() || n < 0.0 {
        return Err(SizeError(format!("invalid size {s:?}")));
    }
    Ok((n * mult) as u64)
}

/// Formats a byte count as Prometheus shows sizes (base 2: `512MiB`,
/// `10GiB`; other counts as `123B`).
pub fn format_bytes(b: u64) -> String {
    for (unit, len) in [
        ("EiB", 1u64 << 60),
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if b >= len && b.is_multiple_of(len) {
            return format!("{}{unit}", b / len);
        }
    }
    format!("{b}B")
}

/// serde helper: a duration written as a string (`15s`).
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// serde helper: a byte size written as a number or a string (`512MiB`).
pub fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        N(u64),
        S(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::N(n) => Ok(n),
        NumOrStr::S(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_prometheus() {
        let f = |s: &str, ms: u64| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        f("15s", 15_000);
        f("1m30s", 90_000);
        f("500ms", 500);
        f("15d", 15 * 86_400_000);
        f("2w", 14 * 86_400_000);
        f("1y", 365 * 86_400_000);
        f("0", 0);
        f("1h90m", 150 * 60_000);
        f(" 5m ", 300_000);
        for bad in [
            "",
            "abc",
            "10 parsecs",
            "1min",
            "2 days",
            "30s1m",
            "1m1m",
            "1.5h",
            "-1s",
            "5",
            "1h 30m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(
            parse_duration("soon").expect_err("soon").to_string().contains("1m30s"),
            "the message shows the form"
        );
        assert!(
            parse_duration("1min")
                .expect_err("1min")
                .to_string()
                .contains("units: y w d h m s ms")
        );
        assert!(matches!(
            parse_duration_ms("99999999999999999y"),
            Err(DurationError::OutOfRange { .. })
        ));
        assert!(matches!(parse_duration_ms("1x"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "x"));
        assert_eq!(parse_duration_ms(""), Err(DurationError::Empty));
        assert!(matches!(parse_duration_ms("5"), Err(DurationError::Invalid { .. })));
    }

    #[test]
    fn durations_print_like_prometheus() {
        for (ms, s) in [
            (0, "0s"),
            (90_000, "1m30s"),
            (15 * 86_400_000, "15d"),
            (14 * 86_400_000, "2w"),
            (90 * 86_400_000, "90d"),
            (365 * 86_400_000, "1y"),
            (3_600_500, "1h500ms"),
            (-60_000, "-1m"),
        ] {
            assert_eq!(format_duration_ms(ms), s);
            assert_eq!(
                parse_duration_ms(s.trim_start_matches('-')).map(|v| if ms < 0 { -v } else { v }),
                Ok(ms),
                "{s}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("").is_err());
        assert_eq!(format_bytes(512 << 20), "512MiB");
        assert_eq!(format_bytes(10 << 30), "10GiB");
        assert_eq!(format_bytes(1000), "1000B");
    }
}
