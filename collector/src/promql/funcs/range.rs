//! Rates and trends over a range vector: `rate`, `increase`, `delta`,
//! `irate`, `idelta`, `deriv`, `predict_linear`,
//! `double_exponential_smoothing` (`holt_winters`), `changes`, `resets`.

use promql_parser::parser::Call;

use super::stats::kahan_inc;
use super::window::{Win, over_range};
use super::{arg, scalar_arg};
use crate::promql::EvalError;
use crate::promql::eval::{Ctx, RangeData, Steps, Val, get_label};

/// `rate` (`is_rate`) and `increase`: the extrapolated counter increase,
/// per second for `rate`.
pub(super) fn rate(cx: &mut Ctx<'_>, c: &Call, steps: Steps, is_rate: bool) -> Result<Val, EvalError> {
    let rd = counter_input(cx, c, steps)?;
    over_range(cx, &rd, steps, false, || {
        // The series' resets, found when the worker reaches it.
        let (mut cur, mut resets, mut secs) = (usize::MAX, Vec::new(), Seconds::default());
        move |w: &Win<'_>| {
            if w.series != cur {
                cur = w.series;
                resets = reset_indices(w.all);
            }
            Ok(extrapolated_rate_with(w, Some(&resets), true, is_rate, &mut secs))
        }
    })
    .map(Val::Vector)
}

pub(super) fn delta(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        let mut secs = Seconds::default();
        move |w: &Win<'_>| Ok(extrapolated_rate_with(w, None, false, false, &mut secs))
    })
    .map(Val::Vector)
}

/// `irate` (`is_rate`) and `idelta`: from the last two samples.
pub(super) fn instant(cx: &mut Ctx<'_>, c: &Call, steps: Steps, is_rate: bool) -> Result<Val, EvalError> {
    let rd = if is_rate {
        counter_input(cx, c, steps)?
    } else {
        cx.range_input(arg(c, 0)?, steps)?
    };
    over_range(cx, &rd, steps, false, || move |w: &Win<'_>| Ok(instant_value(w, is_rate))).map(Val::Vector)
}

pub(super) fn deriv(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        |w: &Win<'_>| Ok((w.samples.len() >= 2).then(|| linear_regression(w.samples, w.samples[0].0).0))
    })
    .map(Val::Vector)
}

pub(super) fn predict_linear(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    let d = scalar_arg(cx, c, 1, steps, 0.0)?;
    over_range(cx, &rd, steps, false, || {
        |w: &Win<'_>| {
            Ok((w.samples.len() >= 2).then(|| {
                let (slope, intercept) = linear_regression(w.samples, w.ts);
                slope * d[w.step] + intercept
            }))
        }
    })
    .map(Val::Vector)
}

/// `double_exponential_smoothing`, also under its old name `holt_winters`.
pub(super) fn double_exponential_smoothing(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    let sf = scalar_arg(cx, c, 1, steps, f64::NAN)?;
    let tf = scalar_arg(cx, c, 2, steps, f64::NAN)?;
    over_range(cx, &rd, steps, false, || {
        |w: &Win<'_>| {
            let (sf, tf) = (sf[w.step], tf[w.step]);
            if !(sf > 0.0 && sf < 1.0) {
                return Err(EvalError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                )));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return Err(EvalError::Execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                )));
            }
            let s = w.samples;
            if s.len() < 2 {
                return Ok(None);
            }
            let (mut s0, mut s1) = (0.0, s[0].1);
            let mut b = s[1].1 - s[0].1;
            for (i, &(_, v)) in s.iter().enumerate().skip(1) {
                let x = sf * v;
                if i > 1 {
                    b = tf * (s1 - s0) + (1.0 - tf) * b;
                }
                let y = (1.0 - sf) * (s1 + b);
                s0 = s1;
                s1 = x + y;
            }
            Ok(Some(s1))
        }
    })
    .map(Val::Vector)
}

/// `changes` and `resets` (`resets`): how often the value changed, or fell.
pub(super) fn changes(cx: &mut Ctx<'_>, c: &Call, steps: Steps, resets: bool) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        move |w: &Win<'_>| {
            let mut count = 0.0;
            let mut prev = w.samples[0].1;
            for &(_, v) in &w.samples[1..] {
                if resets {
                    if v < prev {
                        count += 1.0;
                    }
                } else if v != prev && !(v.is_nan() && prev.is_nan()) {
                    count += 1.0;
                }
                prev = v;
            }
            Ok(Some(count))
        }
    })
    .map(Val::Vector)
}

/// The range input of `rate`, `increase` and `irate`, with the info
/// annotation for each series whose name does not look like a counter's.
/// Only series with samples in range are told about, so a lazy selection
/// with such a series among its labels is read at once.
fn counter_input<'a>(cx: &mut Ctx<'a>, c: &Call, steps: Steps) -> Result<RangeData<'a>, EvalError> {
    let mut rd = cx.range_input(arg(c, 0)?, steps)?;
    if rd.lazy.is_some() && rd.series.iter().any(|s| non_counter_name(&s.labels).is_some()) {
        rd = cx.range_data(arg(c, 0)?, steps)?;
    }
    info_if_not_counter(cx, c, &rd)?;
    Ok(rd)
}

/// The metric name of `labels` if it does not look like a counter's.
fn non_counter_name(labels: &crate::tsdb::Labels) -> Option<&str> {
    get_label(labels, "__name__")
        .filter(|m| !(m.ends_with("_total") || m.ends_with("_sum") || m.ends_with("_count") || m.ends_with("_bucket")))
}

/// The info annotation of `rate`, `increase` and `irate` for each series
/// (read) whose name does not look like a counter's.
fn info_if_not_counter(cx: &mut Ctx<'_>, c: &Call, rd: &RangeData<'_>) -> Result<(), EvalError> {
    if rd.lazy.is_some() {
        return Ok(());
    }
    for s in &rd.series {
        if let Some(metric) = non_counter_name(&s.labels) {
            let msg = format!("metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}");
            cx.info(msg, arg(c, 0)?);
        }
    }
    Ok(())
}

/// The indices `j` of a series' samples where a counter resets
/// (`v[j] < v[j-1]`): most series have none, so a window's reset
/// correction costs a binary search instead of a walk over the window.
fn reset_indices(v: &[(i64, f64)]) -> Vec<u32> {
    let mut r = Vec::new();
    for j in 1..v.len() {
        if v[j].1 < v[j - 1].1 {
            r.push(j as u32);
        }
    }
    r
}

/// Prometheus's `extrapolatedRate` of one window (for tests: the
/// functions use [`extrapolated_rate_with`]).
#[cfg(test)]
pub(in crate::promql) fn extrapolated_rate(w: &Win<'_>, resets: Option<&[u32]>, is_counter: bool, is_rate: bool) -> Option<f64> {
    extrapolated_rate_with(w, resets, is_counter, is_rate, &mut Seconds::default())
}

/// Millisecond spans in seconds (`ms as f64 / 1000.0`, the same division),
/// the average sample interval and the extrapolation factor, remembered
/// from the last window: over regularly scraped series a window's spans
/// repeat from step to step, and these divisions were most of `rate`'s
/// time.
#[derive(Default)]
pub(in crate::promql) struct Seconds {
    ms: [i64; 3],
    secs: [f64; 3],
    /// (sampled span in ms, samples) and the average interval of those.
    avg_of: (i64, usize),
    avg: f64,
    /// The bits of (sampled, to_start, to_end, range in s or 0) and the
    /// extrapolation factor of those.
    factor_of: Option<[u64; 4]>,
    factor: f64,
}

impl Seconds {
    /// `ms as f64 / 1000.0`, remembered in `slot`. (The initial 0 ms is
    /// 0.0 s, so the empty memory answers right too.)
    fn secs(&mut self, slot: usize, ms: i64) -> f64 {
        if self.ms[slot] != ms {
            self.ms[slot] = ms;
            self.secs[slot] = ms as f64 / 1000.0;
        }
        self.secs[slot]
    }

    /// `sampled / (n - 1) as f64` for a span of `sampled_ms` (n ≥ 2).
    fn avg(&mut self, sampled_ms: i64, sampled: f64, n: usize) -> f64 {
        if self.avg_of != (sampled_ms, n) {
            self.avg_of = (sampled_ms, n);
            self.avg = sampled / (n - 1) as f64;
        }
        self.avg
    }

    /// `(sampled + to_start + to_end) / sampled`, divided by `range_secs`
    /// for a rate.
    fn factor(&mut self, sampled: f64, to_start: f64, to_end: f64, range_secs: Option<f64>) -> f64 {
        let key = [
            sampled.to_bits(),
            to_start.to_bits(),
            to_end.to_bits(),
            range_secs.map_or(0, f64::to_bits),
        ];
        if self.factor_of != Some(key) {
            self.factor_of = Some(key);
            let mut factor = (sampled + to_start + to_end) / sampled;
            if let Some(r) = range_secs {
                factor /= r;
            }
            self.factor = factor;
        }
        self.factor
    }
}

/// Whether `sampled * (first / result)` (the time back to a counter's
/// zero, all three positive or `first` zero) is surely not below
/// `to_start`, told without the division: the products are finite for
/// these magnitudes, each off by at most a rounding, so a margin of two
/// leaves the computed quotient above `to_start` too.
fn surely_not_below(sampled: f64, first: f64, result: f64, to_start: f64) -> bool {
    first < 1e150 && result > 1e-150 && result < 1e150 && to_start < 1e150 && first * sampled >= 2.0 * to_start * result
}

/// [`extrapolated_rate`] with the divisions of the previous window kept.
fn extrapolated_rate_with(w: &Win<'_>, resets: Option<&[u32]>, is_counter: bool, is_rate: bool, memo: &mut Seconds) -> Option<f64> {
    let s = w.samples;
    if s.len() < 2 {
        return None;
    }
    let (first, last) = (s[0], s[s.len() - 1]);
    let mut result = last.1 - first.1;
    if is_counter {
        match resets {
            Some(r) => {
                // Resets at window positions 1..len, in order (the same
                // additions as the walk below).
                let from = r.partition_point(|&j| (j as usize) <= w.offset);
                for &j in &r[from..] {
                    let k = j as usize - w.offset;
                    if k >= s.len() {
                        break;
                    }
                    result += s[k - 1].1;
                }
            }
            None => {
                let mut prev = first.1;
                for &(_, v) in &s[1..] {
                    if v < prev {
                        result += prev;
                    }
                    prev = v;
                }
            }
        }
    }
    let mut to_start = memo.secs(0, first.0 - w.range_start);
    let mut to_end = memo.secs(1, w.range_end - last.0);
    let sampled = memo.secs(2, last.0 - first.0);
    let avg = memo.avg(last.0 - first.0, sampled, s.len());
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter && result > 0.0 && first.1 >= 0.0 && !surely_not_below(sampled, first.1, result, to_start) {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let factor = memo.factor(sampled, to_start, to_end, is_rate.then_some(w.range_secs));
    Some(result * factor)
}

fn instant_value(w: &Win<'_>, is_rate: bool) -> Option<f64> {
    let s = w.samples;
    if s.len() < 2 {
        return None;
    }
    let (prev, last) = (s[s.len() - 2], s[s.len() - 1]);
    let mut v = last.1 - prev.1;
    if is_rate && last.1 < prev.1 {
        v = last.1;
    }
    let dt = last.0 - prev.0;
    if dt == 0 {
        return None;
    }
    if is_rate {
        v /= dt as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares slope and intercept (at `intercept_t`), as Prometheus's
/// `linearRegression`.
fn linear_regression(s: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = s[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in s.iter().enumerate() {
        if const_y && i > 0 && v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus's `extrapolatedRate` as written there: every division
    /// done, nothing remembered.
    fn reference(s: &[(i64, f64)], range_start: i64, range_end: i64, is_counter: bool, is_rate: bool) -> Option<f64> {
        if s.len() < 2 {
            return None;
        }
        let (first, last) = (s[0], s[s.len() - 1]);
        let mut result = last.1 - first.1;
        if is_counter {
            let mut prev = first.1;
            for &(_, v) in &s[1..] {
                if v < prev {
                    result += prev;
                }
                prev = v;
            }
        }
        let mut to_start = (first.0 - range_start) as f64 / 1000.0;
        let mut to_end = (range_end - last.0) as f64 / 1000.0;
        let sampled = (last.0 - first.0) as f64 / 1000.0;
        let avg = sampled / (s.len() - 1) as f64;
        if to_start >= avg * 1.1 {
            to_start = avg / 2.0;
        }
        if is_counter && result > 0.0 && first.1 >= 0.0 {
            let to_zero = sampled * (first.1 / result);
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
        if to_end >= avg * 1.1 {
            to_end = avg / 2.0;
        }
        let mut factor = (sampled + to_start + to_end) / sampled;
        if is_rate {
            factor /= (range_end - range_start) as f64 / 1000.0;
        }
        Some(result * factor)
    }

    /// The remembered divisions and the skipped one give the reference's
    /// bits on series that repeat their spans (regular scrapes, where the
    /// memory is used) and on ones that do not, with counters near zero,
    /// resets, zeros, huge and tiny values, one memory for all windows.
    #[test]
    fn remembered_divisions_give_the_references_bits() {
        let mut x = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut memo = Seconds::default();
        let mut windows = 0;
        for series in 0..400 {
            let regular = series % 2 == 0;
            let scale = [1e-300, 1e-3, 1.0, 1e6, 1e200][series % 5];
            let mut t = (next() % 10_000) as i64;
            let mut v = if series % 3 == 0 { 0.0 } else { (next() % 1000) as f64 * scale };
            let mut samples = Vec::new();
            for _ in 0..300 {
                samples.push((t, v));
                t += if regular { 15_000 } else { 1 + (next() % 30_000) as i64 };
                v = if next() % 50 == 0 {
                    (next() % 10) as f64 * scale
                } else {
                    v + (next() % 100) as f64 * scale / 7.0
                };
            }
            let range = [60_000, 300_000, 3_600_000][series % 3];
            let mut end = samples[0].0 + range / 2;
            while end < t {
                let lo = samples.partition_point(|p| p.0 <= end - range);
                let hi = samples.partition_point(|p| p.0 <= end);
                let w = &samples[lo..hi];
                for (is_counter, is_rate) in [(true, true), (true, false), (false, false)] {
                    let win = Win {
                        samples: w,
                        all: &samples,
                        range_start: end - range,
                        range_end: end,
                        range_secs: range as f64 / 1000.0,
                        ts: end,
                        step: 0,
                        series,
                        offset: lo,
                    };
                    let got = extrapolated_rate_with(&win, None, is_counter, is_rate, &mut memo);
                    let want = reference(w, end - range, end, is_counter, is_rate);
                    assert_eq!(
                        got.map(f64::to_bits),
                        want.map(f64::to_bits),
                        "series {series} at {end}: {got:?} against {want:?}"
                    );
                    windows += 1;
                }
                end += 60_000;
            }
        }
        assert!(windows > 50_000, "{windows}");
    }
}
