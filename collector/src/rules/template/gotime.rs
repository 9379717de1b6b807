//! Time (Go's `time.Time` in UTC and `time.Duration`): layouts, the
//! methods templates call, `Duration.String`. Dates come from
//! `csoc_common::calendar`.

use csoc_common::calendar::{civil_from_days, days_from_civil, weekday};

use super::exec::Value;
use super::funcs::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GoTime {
    secs: i64,
    nanos: u32,
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    wday: u32,
    yday: u32,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

impl GoTime {
    pub(super) fn from_millis(ms: i64) -> GoTime {
        GoTime {
            secs: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as u32,
        }
    }

    fn civil(&self) -> Civil {
        let days = self.secs.div_euclid(86_400);
        let sod = self.secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: sod / 3600,
            min: (sod / 60) % 60,
            sec: sod % 60,
            wday: weekday(days),
            yday: (days - days_from_civil(year, 1, 1) + 1) as u32,
        }
    }

    /// `Time.String()`.
    pub(super) fn string(&self) -> String {
        self.format("2006-01-02 15:04:05.999999999 -0700 MST")
    }

    /// `Time.Format(layout)` for a UTC time.
    fn format(&self, layout: &str) -> String {
        let c = self.civil();
        let mut out = String::new();
        let b = layout.as_bytes();
        let mut i = 0;
        let mut lit_start = 0;
        while i < b.len() {
            let rest = &b[i..];
            let lower_after = |n: usize| b.get(i + n).is_some_and(u8::is_ascii_lowercase);
            // (chunk length, replacement)
            let std: Option<(usize, String)> = match b[i] {
                b'J' if rest.starts_with(b"January") => Some((7, MONTHS[c.month as usize - 1].to_string())),
                b'J' if rest.starts_with(b"Jan") && !lower_after(3) => Some((3, MONTHS[c.month as usize - 1][..3].to_string())),
                b'M' if rest.starts_with(b"Monday") => Some((6, DAYS[c.wday as usize].to_string())),
                b'M' if rest.starts_with(b"Mon") && !lower_after(3) => Some((3, DAYS[c.wday as usize][..3].to_string())),
                b'M' if rest.starts_with(b"MST") => Some((3, "UTC".to_string())),
                b'0' if b.get(i + 1).is_some_and(|d| (b'1'..=b'6').contains(d)) => Some((
                    2,
                    match b[i + 1] {
                        b'1' => format!("{:02}", c.month),
                        b'2' => format!("{:02}", c.day),
                        b'3' => format!("{:02}", if c.hour.is_multiple_of(12) { 12 } else { c.hour % 12 }),
                        b'4' => format!("{:02}", c.min),
                        b'5' => format!("{:02}", c.sec),
                        _ => format!("{:02}", c.year.rem_euclid(100)),
                    },
                )),
                b'0' if rest.starts_with(b"002") => Some((3, format!("{:03}", c.yday))),
                b'1' if rest.starts_with(b"15") => Some((2, format!("{:02}", c.hour))),
                b'1' => Some((1, c.month.to_string())),
                b'2' if rest.starts_with(b"2006") => Some((4, format!("{:04}", c.year))),
                b'2' => Some((1, c.day.to_string())),
                b'_' if rest.starts_with(b"_2006") => {
                    // A literal "_" followed by the year.
                    out.push_str(&layout[lit_start..=i]);
                    lit_start = i + 1;
                    i += 1;
                    continue;
                }
                b'_' if rest.starts_with(b"_2") => Some((2, format!("{:>2}", c.day))),
                b'_' if rest.starts_with(b"__2") => Some((3, format!("{:>3}", c.yday))),
                b'3' => Some((1, (if c.hour.is_multiple_of(12) { 12 } else { c.hour % 12 }).to_string())),
                b'4' => Some((1, c.min.to_string())),
                b'5' => Some((1, c.sec.to_string())),
                b'P' if rest.starts_with(b"PM") => Some((2, (if c.hour >= 12 { "PM" } else { "AM" }).to_string())),
                b'p' if rest.starts_with(b"pm") => Some((2, (if c.hour >= 12 { "pm" } else { "am" }).to_string())),
                b'-' | b'Z' => {
                    let z = b[i] == b'Z';
                    let body = &rest[1..];
                    ["070000", "07:00:00", "0700", "07:00", "07"]
                        .iter()
                        .find(|p| body.starts_with(p.as_bytes()))
                        .map(|p| {
                            let text = if z {
                                "Z".to_string()
                            } else {
                                match *p {
                                    "070000" => "+000000",
                                    "07:00:00" => "+00:00:00",
                                    "0700" => "+0000",
                                    "07:00" => "+00:00",
                                    _ => "+00",
                                }
                                .to_string()
                            };
                            (p.len() + 1, text)
                        })
                }
                sep @ (b'.' | b',') if matches!(b.get(i + 1), Some(b'0' | b'9')) => {
                    let ch = b[i + 1];
                    let mut j = i + 1;
                    while b.get(j) == Some(&ch) {
                        j += 1;
                    }
                    if b.get(j).is_some_and(u8::is_ascii_digit) {
                        None
                    } else {
                        let n = (j - i - 1).min(9);
                        let digits = format!("{:09}", self.nanos);
                        let mut frac = &digits[..n];
                        if ch == b'9' {
                            frac = frac.trim_end_matches('0');
                        }
                        let text = if frac.is_empty() {
                            String::new()
                        } else {
                            format!("{}{frac}", sep as char)
                        };
                        Some((j - i, text))
                    }
                }
                _ => None,
            };
            match std {
                Some((len, text)) => {
                    out.push_str(&layout[lit_start..i]);
                    out.push_str(&text);
                    i += len;
                    lit_start = i;
                }
                None => i += 1,
            }
        }
        out.push_str(&layout[lit_start..]);
        out
    }
}

/// `time.Duration.String()`.
pub(super) fn duration_string(d: i64) -> String {
    let neg = d < 0;
    let mut u = d.unsigned_abs();
    let frac = |u: u64, prec: u32| -> (String, u64) {
        let pow = 10u64.pow(prec);
        let f = u % pow;
        let s = if f == 0 {
            String::new()
        } else {
            let digits = format!("{:0width$}", f, width = prec as usize);
            format!(".{}", digits.trim_end_matches('0'))
        };
        (s, u / pow)
    };
    let body = if u < 1_000_000_000 {
        let (unit, prec) = match u {
            0 => return "0s".to_string(),
            1..=999 => ("ns", 0),
            1000..=999_999 => ("µs", 3),
            _ => ("ms", 6),
        };
        let (f, whole) = frac(u, prec);
        format!("{whole}{f}{unit}")
    } else {
        let (f, secs) = frac(u, 9);
        u = secs;
        let mut s = format!("{}{f}s", u % 60);
        u /= 60;
        if u > 0 {
            s = format!("{}m{s}", u % 60);
            u /= 60;
            if u > 0 {
                s = format!("{u}h{s}");
            }
        }
        s
    };
    if neg { format!("-{body}") } else { body }
}

pub(super) fn time_method(t: &GoTime, m: Method, argv: &[Value]) -> Value {
    let c = t.civil();
    match m {
        Method::Format => {
            let layout = match argv.first() {
                Some(Value::Str(s)) => s.to_string(),
                _ => String::new(),
            };
            Value::str(&t.format(&layout))
        }
        Method::String => Value::str(&t.string()),
        Method::Unix => Value::Int(t.secs),
        Method::UnixMilli => Value::Int(t.secs.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)),
        Method::UnixMicro => Value::Int(t.secs.saturating_mul(1_000_000) + i64::from(t.nanos / 1000)),
        Method::UnixNano => Value::Int(t.secs.saturating_mul(1_000_000_000) + i64::from(t.nanos)),
        Method::Utc => Value::Time(*t),
        Method::Year => Value::Int(c.year),
        Method::YearDay => Value::Int(i64::from(c.yday)),
        Method::Day => Value::Int(i64::from(c.day)),
        Method::Hour => Value::Int(i64::from(c.hour)),
        Method::Minute => Value::Int(i64::from(c.min)),
        Method::Second => Value::Int(i64::from(c.sec)),
        Method::Nanosecond => Value::Int(i64::from(t.nanos)),
        Method::IsZero => Value::Bool(t.secs == -62_135_596_800 && t.nanos == 0),
        _ => Value::Invalid,
    }
}

pub(super) fn duration_method(d: i64, m: Method) -> Value {
    match m {
        Method::String => Value::str(&duration_string(d)),
        Method::Seconds => Value::Float(d as f64 / 1e9),
        Method::Minutes => Value::Float(d as f64 / 6e10),
        Method::Hours => Value::Float(d as f64 / 3.6e12),
        Method::Milliseconds => Value::Int(d / 1_000_000),
        Method::Microseconds => Value::Int(d / 1000),
        Method::Nanoseconds => Value::Int(d),
        _ => Value::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formatting_and_durations() {
        let t = GoTime::from_millis(951_782_400_000); // 2000-02-29 00:00:00 UTC (leap day)
        assert_eq!(t.string(), "2000-02-29 00:00:00 +0000 UTC");
        assert_eq!(t.format("Monday 2 Jan 06 03:04:05 PM __2"), "Tuesday 29 Feb 00 12:00:00 AM  60");
        assert_eq!(GoTime::from_millis(-86_400_000).string(), "1969-12-31 00:00:00 +0000 UTC");
        for (ns, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_000_000_000, "1s"),
            (61_500_000_000, "1m1.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (-90_000_000_000, "-1m30s"),
        ] {
            assert_eq!(duration_string(ns), want, "{ns}ns");
        }
    }
}
