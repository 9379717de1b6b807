//! CronJob schedules, for `kube_cronjob_next_schedule_time`: the standard
//! five-field cron syntax as the CronJob controller (robfig/cron's
//! `ParseStandard`) reads it, in UTC.
//!
//! Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
//! JAN-DEC), day of week (0-6 or SUN-SAT); each a comma list of
//! `*` (or `?`), `N`, `N-M`, with an optional `/step` (`N/step` runs to the
//! field's maximum). As in cron, when both day fields are restricted a day
//! matching either one matches. Descriptors: `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`. Anything else
//! (`@every`, a `CRON_TZ=` prefix) is not understood: no next time.

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Either day field is unrestricted (`*`), so both must match.
    day_and: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parses one value of a field: a number or a name.
fn value(s: &str, min: u32, max: u32, names: &[&str], name_base: u32) -> Option<u32> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Some(i as u32 + name_base);
    }
    let v: u32 = s.parse().ok()?;
    (min..=max).contains(&v).then_some(v)
}

/// Parses a field; returns its bits and whether it is unrestricted.
fn field(expr: &str, min: u32, max: u32, names: &[&str], name_base: u32) -> Option<(u64, bool)> {
    let mut bits = 0u64;
    let mut star = false;
    for part in expr.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s.parse::<u32>().ok().filter(|s| *s > 0)?)),
            None => (part, None),
        };
        let (lo, hi, is_star) = if range == "*" || range == "?" {
            (min, max, true)
        } else if let Some((a, z)) = range.split_once('-') {
            (value(a, min, max, names, name_base)?, value(z, min, max, names, name_base)?, false)
        } else {
            let v = value(range, min, max, names, name_base)?;
            // "N/step" runs from N to the maximum.
            (v, if step.is_some() { max } else { v }, false)
        };
        if lo > hi {
            return None;
        }
        let step = step.unwrap_or(1);
        if is_star && step == 1 {
            star = true;
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Some((bits, star))
}

impl Schedule {
    /// Parses a CronJob's `schedule`; None when it is not understood.
    pub fn parse(s: &str) -> Option<Schedule> {
        let s = s.trim();
        let expanded = match s.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            _ => s.to_string(),
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let [mi, h, dom, mo, dow] = f.as_slice() else {
            return None;
        };
        let (minute, _) = field(mi, 0, 59, &[], 0)?;
        let (hour, _) = field(h, 0, 23, &[], 0)?;
        let (dom, dom_star) = field(dom, 1, 31, &[], 0)?;
        let (month, _) = field(mo, 1, 12, &MONTHS, 1)?;
        let (dow, dow_star) = field(dow, 0, 6, &DAYS, 0)?;
        Some(Schedule {
            minute,
            hour,
            dom,
            month,
            dow,
            day_and: dom_star || dow_star,
        })
    }

    fn day_matches(&self, dom: u32, dow: u32) -> bool {
        let d = self.dom & (1 << dom) != 0;
        let w = self.dow & (1 << dow) != 0;
        if self.day_and { d && w } else { d || w }
    }

    /// The first time (seconds since the epoch, UTC) strictly after `t`
    /// that the schedule fires; None when there is none within five years.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        let start = (t.div_euclid(60) + 1) * 60;
        let first_day = start.div_euclid(86_400);
        let start_min = start.rem_euclid(86_400) / 60;
        for day in first_day..first_day + 5 * 366 {
            let (_, m, d) = civil_from_days(day);
            let dow = (day + 4).rem_euclid(7) as u32;
            if self.month & (1 << m) == 0 || !self.day_matches(d, dow) {
                continue;
            }
            let from = if day == first_day { start_min } else { 0 };
            for minute_of_day in from..1440 {
                let (h, mi) = (minute_of_day / 60, minute_of_day % 60);
                if self.hour & (1 << h) != 0 && self.minute & (1 << mi) != 0 {
                    return Some(day * 86_400 + minute_of_day * 60);
                }
            }
        }
        None
    }
}

/// (year, month 1-12, day 1-31) of a day number since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds of a UTC date and time.
    fn at(s: &str) -> i64 {
        s.parse::<k8s_openapi::jiff::Timestamp>().expect("timestamp").as_second()
    }

    fn next(sched: &str, after: &str) -> Option<i64> {
        Schedule::parse(sched)
            .unwrap_or_else(|| panic!("{sched:?} should parse"))
            .next_after(at(after))
    }

    #[test]
    fn next_times_of_common_schedules() {
        assert_eq!(next("*/5 * * * *", "2025-03-01T10:02:30Z"), Some(at("2025-03-01T10:05:00Z")));
        assert_eq!(
            next("*/5 * * * *", "2025-03-01T10:05:00Z"),
            Some(at("2025-03-01T10:10:00Z")),
            "strictly after"
        );
        assert_eq!(next("0 * * * *", "2025-03-01T10:00:00Z"), Some(at("2025-03-01T11:00:00Z")));
        assert_eq!(next("@hourly", "2025-12-31T23:30:00Z"), Some(at("2026-01-01T00:00:00Z")));
        // Every four hours, on the hour.
        assert_eq!(next("0 */4 * * *", "2025-03-01T09:00:00Z"), Some(at("2025-03-01T12:00:00Z")));
        assert_eq!(next("30 2 * * *", "2025-03-01T03:00:00Z"), Some(at("2025-03-02T02:30:00Z")));
        assert_eq!(next("@daily", "2024-02-28T12:00:00Z"), Some(at("2024-02-29T00:00:00Z")), "leap day");
        assert_eq!(next("@monthly", "2025-01-31T00:00:00Z"), Some(at("2025-02-01T00:00:00Z")));
        assert_eq!(next("@yearly", "2025-06-01T00:00:00Z"), Some(at("2026-01-01T00:00:00Z")));
        // 2025-03-01 is a Saturday.
        assert_eq!(next("@weekly", "2025-03-01T00:00:00Z"), Some(at("2025-03-02T00:00:00Z")));
        assert_eq!(next("0 9 * * MON-FRI", "2025-03-01T00:00:00Z"), Some(at("2025-03-03T09:00:00Z")));
        assert_eq!(next("0 0 1 JAN,jul *", "2025-03-01T00:00:00Z"), Some(at("2025-07-01T00:00:00Z")));
        assert_eq!(next("15/20 * * * *", "2025-03-01T10:36:00Z"), Some(at("2025-03-01T10:55:00Z")));
        assert_eq!(next("0 0 29 2 *", "2025-03-01T00:00:00Z"), Some(at("2028-02-29T00:00:00Z")));
        assert_eq!(next("0 0 31 2 *", "2025-03-01T00:00:00Z"), None, "never fires");
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 15th, or any Monday: from Saturday 2025-03-01 the Monday 3rd comes first.
        assert_eq!(next("0 0 15 * 1", "2025-03-01T00:00:00Z"), Some(at("2025-03-03T00:00:00Z")));
        // With a star in the day of week, only the 15th.
        assert_eq!(next("0 0 15 * *", "2025-03-01T00:00:00Z"), Some(at("2025-03-15T00:00:00Z")));
        // "*/2" is a restriction (step > 1): the 15th or an even weekday.
        assert_eq!(next("0 0 15 * */2", "2025-03-01T00:00:00Z"), Some(at("2025-03-02T00:00:00Z")));
    }

    #[test]
    fn rejects_what_cron_rejects() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "5-1 * * * *",
            "*/0 * * * *",
            "@every 5m",
            "CRON_TZ=UTC 0 * * * *",
            "a * * * *",
        ] {
            assert!(Schedule::parse(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
