//! PromQL functions over float samples.

use std::sync::Arc;

use promql_parser::parser::{Call, Expr};

use super::EvalError;
use super::eval::{Ctx, RangeData, Steps, Sv, Val, by_step, get_label};
use crate::tsdb::Labels;

/// Kahan–Neumaier summation step, as Prometheus's `kahanSumInc`.
pub(super) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A mean that stays exact-ish and survives overflow (Prometheus's avg).
#[derive(Default, Clone, Debug)]
pub(super) struct Mean {
    count: f64,
    sum: f64,
    c: f64,
    mean: f64,
    incremental: bool,
}

impl Mean {
    pub fn add(&mut self, v: f64) {
        self.count += 1.0;
        if !self.incremental {
            let (s, c) = kahan_inc(v, self.sum, self.c);
            if self.count == 1.0 || !s.is_infinite() {
                self.sum = s;
                self.c = c;
                return;
            }
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.c /= self.count - 1.0;
        }
        if self.mean.is_infinite() {
            if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                return;
            }
            if !v.is_infinite() && !v.is_nan() {
                return;
            }
        }
        let cur = self.mean + self.c;
        let (m, c) = kahan_inc(v / self.count - cur / self.count, self.mean, self.c);
        self.mean = m;
        self.c = c;
    }

    pub fn value(&self) -> f64 {
        if self.incremental {
            self.mean + self.c
        } else {
            self.sum / self.count + self.c / self.count
        }
    }
}

/// Running variance (Welford with Kahan), as Prometheus's stdvar.
#[derive(Default, Clone, Debug)]
pub(super) struct Var {
    count: f64,
    mean: f64,
    cmean: f64,
    aux: f64,
    caux: f64,
}

impl Var {
    pub fn add(&mut self, v: f64) {
        self.count += 1.0;
        let delta = v - (self.mean + self.cmean);
        let (m, c) = kahan_inc(delta / self.count, self.mean, self.cmean);
        self.mean = m;
        self.cmean = c;
        let (a, ca) = kahan_inc(delta * (v - (self.mean + self.cmean)), self.aux, self.caux);
        self.aux = a;
        self.caux = ca;
    }
    pub fn value(&self) -> f64 {
        (self.aux + self.caux) / self.count
    }
}

/// Prometheus's quantile over a set of values (sorts them).
pub(super) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    // NaN sorts last in total_cmp for positive NaN; Prometheus's sort.Float64s puts NaN first.
    let nans: Vec<f64> = values.iter().copied().filter(|v| v.is_nan()).collect();
    if !nans.is_empty() {
        let rest: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        for (i, v) in nans.iter().chain(rest.iter()).enumerate() {
            values[i] = *v;
        }
    }
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, as Prometheus writes sample
/// values in JSON and label values in `count_values` (shared with the
/// agent's text output).
pub use csoc_common::gofmt::format_f as fmt_float;

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

/// The window context of one step of a function over a range vector.
pub(super) struct Win<'a> {
    pub samples: &'a [(i64, f64)],
    pub range_start: i64,
    pub range_end: i64,
    pub range_secs: f64,
    /// The step's own time (ms).
    pub ts: i64,
    pub step: usize,
    /// Which series of the range data, and where the window starts in its
    /// samples (for functions that keep per-series state across steps).
    pub series: usize,
    pub offset: usize,
}

/// Applies a window function to every series at every step. Large inputs
/// are split by series over the machine's cores (as VictoriaMetrics does;
/// Prometheus evaluates on one): `make` gives each worker its own function,
/// so functions may keep per-series state.
fn over_range<F, M>(cx: &mut Ctx<'_>, rd: &RangeData, steps: Steps, keep_name: bool, make: M) -> Result<Vec<Sv>, EvalError>
where
    M: Fn() -> F + Sync,
    F: FnMut(&Win<'_>) -> Result<Option<f64>, EvalError>,
{
    let n = steps.len();
    let work: usize = rd.series.iter().map(|s| s.samples.len()).sum::<usize>() + rd.series.len() * n;
    let threads = if work >= PARALLEL_WORK && rd.series.len() > 1 {
        std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .min(8)
            .min(rd.series.len())
    } else {
        1
    };
    let deadline = cx.deadline;
    let run = |from: usize, to: usize| -> Result<Vec<Sv>, EvalError> {
        let mut f = make();
        let mut out = Vec::with_capacity(to - from);
        for si in from..to {
            let s = &rd.series[si];
            if si % 64 == 0 && std::time::Instant::now() > deadline {
                return Err(EvalError::Timeout("query timed out in query execution".into()));
            }
            if let Some(sv) = window_series(rd, si, s, steps, keep_name, &mut f)? {
                out.push(sv);
            }
        }
        Ok(out)
    };
    let out: Vec<Sv> = if threads <= 1 {
        run(0, rd.series.len())?
    } else {
        let per = rd.series.len().div_ceil(threads);
        let parts: Vec<Result<Vec<Sv>, EvalError>> = std::thread::scope(|sc| {
            let run = &run;
            let handles: Vec<_> = (0..threads)
                .map(|k| {
                    let (from, to) = (k * per, ((k + 1) * per).min(rd.series.len()));
                    sc.spawn(move || run(from, to))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(EvalError::Execution("a query worker panicked".into())))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(rd.series.len());
        for p in parts {
            out.extend(p?);
        }
        out
    };
    cx.account(out.iter().map(|s| s.pts.len()).sum())?;
    Ok(out)
}

/// Work (samples plus series × steps) from which `over_range` uses every core.
const PARALLEL_WORK: usize = 400_000;

/// One series of [`over_range`].
fn window_series<F>(
    rd: &RangeData,
    si: usize,
    s: &super::eval::Ms,
    steps: Steps,
    keep_name: bool,
    f: &mut F,
) -> Result<Option<Sv>, EvalError>
where
    F: FnMut(&Win<'_>) -> Result<Option<f64>, EvalError>,
{
    let n = steps.len();
    let mut pts = Vec::with_capacity(n.min(s.samples.len() + 1));
    // A sliding window: the steps' window ends only move forward (with
    // `@` they stay put), so two cursors find each window in O(1).
    let samples = &s.samples;
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut prev_te = i64::MIN;
    for i in 0..n {
        let te = rd.te[i];
        if te < prev_te {
            lo = 0;
            hi = 0;
        }
        prev_te = te;
        while hi < samples.len() && samples[hi].0 <= te {
            hi += 1;
        }
        while lo < hi && samples[lo].0 <= te - rd.range {
            lo += 1;
        }
        let w = &samples[lo..hi];
        if w.is_empty() {
            continue;
        }
        let win = Win {
            samples: w,
            range_start: te - rd.range,
            range_end: te,
            range_secs: rd.range as f64 / 1000.0,
            ts: steps.ts(i),
            step: i,
            series: si,
            offset: lo,
        };
        if let Some(v) = f(&win)? {
            pts.push((i as u32, v));
        }
    }
    Ok((!pts.is_empty()).then(|| Sv {
        labels: s.labels.clone(),
        drop_name: s.drop_name || !keep_name,
        pts,
    }))
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

pub(super) fn extrapolated_rate(w: &Win<'_>, resets: Option<&[u32]>, is_counter: bool, is_rate: bool) -> Option<f64> {
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
    let mut to_start = (first.0 - w.range_start) as f64 / 1000.0;
    let mut to_end = (w.range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg = sampled / (s.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= w.range_secs;
    }
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

fn scalar_arg(cx: &mut Ctx<'_>, c: &Call, i: usize, steps: Steps, default: f64) -> Result<Vec<f64>, EvalError> {
    match c.args.args.get(i) {
        Some(e) => cx.eval_scalar(e, steps),
        None => Ok(vec![default; steps.len()]),
    }
}

fn string_arg(c: &Call, i: usize) -> Result<String, EvalError> {
    let mut e = c.args.args.get(i).map(|b| b.as_ref());
    while let Some(Expr::Paren(p)) = e {
        e = Some(&p.expr);
    }
    match e {
        Some(Expr::StringLiteral(s)) => Ok(s.val.clone()),
        _ => Err(EvalError::BadData(format!(
            "expected a string literal as argument {} of {}",
            i + 1,
            c.func.name
        ))),
    }
}

fn arg(c: &Call, i: usize) -> Result<&Expr, EvalError> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| EvalError::BadData(format!("missing argument {} of {}", i + 1, c.func.name)))
}

/// Applies `f` to every sample of a vector argument; the name is dropped.
fn map_vector(mut v: Vec<Sv>, keep_name: bool, mut f: impl FnMut(f64, usize) -> Option<f64>) -> Vec<Sv> {
    for s in &mut v {
        s.pts.retain_mut(|p| match f(p.1, p.0 as usize) {
            Some(x) => {
                p.1 = x;
                true
            }
            None => false,
        });
        if !keep_name {
            s.drop_name = true;
        }
    }
    v.retain(|s| !s.pts.is_empty());
    v
}

pub(super) fn eval_call(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let name = c.func.name;
    let n = steps.len();
    let secs = |i: usize| steps.ts(i) as f64 / 1000.0;
    match name {
        "time" => return Ok(Val::Scalar((0..n).map(secs).collect())),
        "min_of" | "max_of" => {
            let a = scalar_arg(cx, c, 0, steps, f64::NAN)?;
            let b = scalar_arg(cx, c, 1, steps, f64::NAN)?;
            let min = name == "min_of";
            return Ok(Val::Scalar(
                a.iter()
                    .zip(&b)
                    .map(|(&x, &y)| if min { go_min(x, y) } else { go_max(x, y) })
                    .collect(),
            ));
        }
        "pi" => return Ok(Val::Scalar(vec![std::f64::consts::PI; n])),
        "start" => return Ok(Val::Scalar(vec![cx.qstart as f64 / 1000.0; n])),
        "end" => return Ok(Val::Scalar(vec![cx.qend as f64 / 1000.0; n])),
        "range" => return Ok(Val::Scalar(vec![(cx.qend - cx.qstart) as f64 / 1000.0; n])),
        "step" => return Ok(Val::Scalar(vec![cx.qstep as f64 / 1000.0; n])),
        "vector" => {
            let v = scalar_arg(cx, c, 0, steps, f64::NAN)?;
            return Ok(Val::Vector(vec![Sv {
                labels: Arc::new(Vec::new()),
                drop_name: false,
                pts: v.into_iter().enumerate().map(|(i, x)| (i as u32, x)).collect(),
            }]));
        }
        "scalar" => {
            let v = cx.eval_vector(arg(c, 0)?, steps)?;
            let per = by_step(&v, n);
            return Ok(Val::Scalar(
                per.iter().map(|s| if s.len() == 1 { s[0].1 } else { f64::NAN }).collect(),
            ));
        }
        "timestamp" => {
            let mut e = arg(c, 0)?;
            while let Expr::Paren(p) = e {
                e = &p.expr;
            }
            let v = match e {
                Expr::VectorSelector(vs) => cx.vector_selector_with(vs, steps, true)?,
                other => {
                    let v = cx.eval_vector(other, steps)?;
                    map_vector(v, false, |_, i| Some(secs(i)))
                }
            };
            return Ok(Val::Vector(
                v.into_iter()
                    .map(|mut s| {
                        s.drop_name = true;
                        s
                    })
                    .collect(),
            ));
        }
        "absent" => {
            let v = cx.eval_vector(arg(c, 0)?, steps)?;
            let per = by_step(&v, n);
            let empty: Vec<usize> = (0..n).filter(|&i| per[i].is_empty()).collect();
            return Ok(absent_result(arg(c, 0)?, empty));
        }
        "absent_over_time" => {
            let rd = cx.range_data(arg(c, 0)?, steps)?;
            let empty: Vec<usize> = (0..n)
                .filter(|&i| (0..rd.series.len()).all(|si| rd.window(si, i).is_empty()))
                .collect();
            return Ok(absent_result(arg(c, 0)?, empty));
        }
        "label_replace" => return label_replace(cx, c, steps),
        "label_join" => return label_join(cx, c, steps),
        "sort" | "sort_desc" => {
            let mut v = cx.eval_vector(arg(c, 0)?, steps)?;
            if cx.qstep > 0 {
                cx.warn(
                    "sort is ineffective for range queries since results are always ordered by labels".into(),
                    &Expr::Call(c.clone()),
                );
            }
            if n == 1 {
                let desc = name == "sort_desc";
                v.sort_by(|a, b| {
                    let (x, y) = (a.pts[0].1, b.pts[0].1);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                        _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                    }
                });
            }
            return Ok(Val::Vector(v));
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut v = cx.eval_vector(arg(c, 0)?, steps)?;
            if cx.qstep > 0 {
                cx.warn(
                    "sort is ineffective for range queries since results are always ordered by labels".into(),
                    &Expr::Call(c.clone()),
                );
            }
            let mut names = Vec::new();
            for i in 1..c.args.args.len() {
                names.push(string_arg(c, i)?);
            }
            let desc = name == "sort_by_label_desc";
            // Ties keep the order of the full label sets (descending for _desc).
            v.sort_by(|a, b| if desc { b.labels.cmp(&a.labels) } else { a.labels.cmp(&b.labels) });
            v.sort_by(|a, b| {
                for l in &names {
                    let x = get_label(&a.labels, l).unwrap_or("");
                    let y = get_label(&b.labels, l).unwrap_or("");
                    let o = natural_cmp(x, y);
                    if o != std::cmp::Ordering::Equal {
                        return if desc { o.reverse() } else { o };
                    }
                }
                std::cmp::Ordering::Equal
            });
            return Ok(Val::Vector(v));
        }
        "histogram_quantile" => return histogram_quantile(cx, c, steps),
        "histogram_fraction" => return histogram_fraction(cx, c, steps),
        "histogram_quantiles" => return histogram_quantiles(cx, c, steps),
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev" | "histogram_stdvar" => {
            // Native histograms only: float samples are ignored.
            for a in &c.args.args {
                let _ = cx.eval(a, steps)?;
            }
            return Ok(Val::Vector(Vec::new()));
        }
        "info" => return info(cx, c, steps),
        "clamp" => {
            let v = cx.eval_vector(arg(c, 0)?, steps)?;
            let lo = scalar_arg(cx, c, 1, steps, f64::NAN)?;
            let hi = scalar_arg(cx, c, 2, steps, f64::NAN)?;
            return Ok(Val::Vector(map_vector(v, false, |x, i| {
                if hi[i] < lo[i] {
                    return None;
                }
                Some(go_max(lo[i], go_min(hi[i], x)))
            })));
        }
        "clamp_min" | "clamp_max" => {
            let v = cx.eval_vector(arg(c, 0)?, steps)?;
            let b = scalar_arg(cx, c, 1, steps, f64::NAN)?;
            let is_min = name == "clamp_min";
            return Ok(Val::Vector(map_vector(v, false, |x, i| {
                Some(if is_min { go_max(b[i], x) } else { go_min(b[i], x) })
            })));
        }
        "round" => {
            let v = cx.eval_vector(arg(c, 0)?, steps)?;
            let to = scalar_arg(cx, c, 1, steps, 1.0)?;
            return Ok(Val::Vector(map_vector(v, false, |x, i| {
                let inv = 1.0 / to[i];
                Some((x * inv + 0.5).floor() / inv)
            })));
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute" | "month" | "year" => {
            let f = date_fn(name);
            if c.args.args.is_empty() {
                return Ok(Val::Vector(vec![Sv {
                    labels: Arc::new(Vec::new()),
                    drop_name: false,
                    pts: (0..n).map(|i| (i as u32, f(secs(i)))).collect(),
                }]));
            }
            let v = cx.eval_vector(arg(c, 0)?, steps)?;
            return Ok(Val::Vector(map_vector(v, false, |x, _| Some(f(x)))));
        }
        _ => {}
    }
    if let Some(f) = math_fn(name) {
        let v = cx.eval_vector(arg(c, 0)?, steps)?;
        return Ok(Val::Vector(map_vector(v, false, |x, _| Some(f(x)))));
    }
    // Functions over range vectors.
    let rd = match name {
        "quantile_over_time" => cx.range_data(arg(c, 1)?, steps)?,
        _ => cx.range_data(arg(c, 0)?, steps)?,
    };
    if matches!(name, "rate" | "increase" | "irate") {
        for s in &rd.series {
            if let Some(metric) = get_label(&s.labels, "__name__")
                && !(metric.ends_with("_total") || metric.ends_with("_sum") || metric.ends_with("_count") || metric.ends_with("_bucket"))
            {
                let msg = format!("metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}");
                cx.info(msg, arg(c, 0)?);
            }
        }
    }
    let out = match name {
        "rate" | "increase" => {
            let is_rate = name == "rate";
            let series = &rd.series;
            over_range(cx, &rd, steps, false, || {
                // The series' resets, found when the worker reaches it.
                let (mut cur, mut resets) = (usize::MAX, Vec::new());
                move |w: &Win<'_>| {
                    if w.series != cur {
                        cur = w.series;
                        resets = reset_indices(&series[cur].samples);
                    }
                    Ok(extrapolated_rate(w, Some(&resets), true, is_rate))
                }
            })?
        }
        "delta" => over_range(cx, &rd, steps, false, || |w: &Win<'_>| Ok(extrapolated_rate(w, None, false, false)))?,
        "irate" => over_range(cx, &rd, steps, false, || |w: &Win<'_>| Ok(instant_value(w, true)))?,
        "idelta" => over_range(cx, &rd, steps, false, || |w: &Win<'_>| Ok(instant_value(w, false)))?,
        "deriv" => over_range(cx, &rd, steps, false, || {
            |w: &Win<'_>| Ok((w.samples.len() >= 2).then(|| linear_regression(w.samples, w.samples[0].0).0))
        })?,
        "predict_linear" => {
            let d = scalar_arg(cx, c, 1, steps, 0.0)?;
            over_range(cx, &rd, steps, false, || {
                |w: &Win<'_>| {
                    Ok((w.samples.len() >= 2).then(|| {
                        let (slope, intercept) = linear_regression(w.samples, w.ts);
                        slope * d[w.step] + intercept
                    }))
                }
            })?
        }
        "double_exponential_smoothing" | "holt_winters" => {
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
            })?
        }
        "changes" | "resets" => {
            let resets = name == "resets";
            over_range(cx, &rd, steps, false, || {
                |w: &Win<'_>| {
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
            })?
        }
        "avg_over_time" => over_range(cx, &rd, steps, false, || {
            |w: &Win<'_>| {
                let mut m = Mean::default();
                for &(_, v) in w.samples {
                    m.add(v);
                }
                Ok(Some(m.value()))
            }
        })?,
        "sum_over_time" => over_range(cx, &rd, steps, false, || {
            |w: &Win<'_>| {
                let (mut s, mut c) = (0.0, 0.0);
                for &(_, v) in w.samples {
                    (s, c) = kahan_inc(v, s, c);
                }
                Ok(Some(s + c))
            }
        })?,
        "count_over_time" => over_range(cx, &rd, steps, false, || |w: &Win<'_>| Ok(Some(w.samples.len() as f64)))?,
        "present_over_time" => over_range(cx, &rd, steps, false, || |_: &Win<'_>| Ok(Some(1.0)))?,
        "last_over_time" => over_range(cx, &rd, steps, true, || |w: &Win<'_>| Ok(w.samples.last().map(|p| p.1)))?,
        "first_over_time" => over_range(cx, &rd, steps, true, || |w: &Win<'_>| Ok(w.samples.first().map(|p| p.1)))?,
        "ts_of_last_over_time" => over_range(cx, &rd, steps, false, || {
            |w: &Win<'_>| Ok(w.samples.last().map(|p| p.0 as f64 / 1000.0))
        })?,
        "ts_of_first_over_time" => over_range(cx, &rd, steps, false, || {
            |w: &Win<'_>| Ok(w.samples.first().map(|p| p.0 as f64 / 1000.0))
        })?,
        "max_over_time" | "min_over_time" => {
            // A monotonic deque of sample indices per series: each sample
            // enters and leaves once. NaN never wins unless the window has
            // nothing else (then NaN), as Prometheus's comparison does.
            let max = name == "max_over_time";
            let series = &rd.series;
            over_range(cx, &rd, steps, false, || {
                let mut dq: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
                let (mut cur, mut last_lo, mut last_hi) = (usize::MAX, 0usize, 0usize);
                move |w: &Win<'_>| {
                    let all = &series[w.series].samples;
                    let (lo, hi) = (w.offset, w.offset + w.samples.len());
                    if w.series != cur || lo < last_lo || hi < last_hi {
                        dq.clear();
                        cur = w.series;
                        last_hi = lo;
                    }
                    for j in last_hi.max(lo)..hi {
                        let v = all[j].1;
                        if v.is_nan() {
                            continue;
                        }
                        while let Some(&b) = dq.back() {
                            let bv = all[b].1;
                            if (max && bv <= v) || (!max && bv >= v) {
                                dq.pop_back();
                            } else {
                                break;
                            }
                        }
                        dq.push_back(j);
                    }
                    while dq.front().is_some_and(|&f| f < lo) {
                        dq.pop_front();
                    }
                    last_lo = lo;
                    last_hi = hi;
                    Ok(Some(dq.front().map_or(f64::NAN, |&f| all[f].1)))
                }
            })?
        }
        "ts_of_max_over_time" | "ts_of_min_over_time" => {
            let max = name.contains("max");
            let ts = name.starts_with("ts_of");
            over_range(cx, &rd, steps, false, || {
                |w: &Win<'_>| {
                    let (mut bt, mut bv) = w.samples[0];
                    for &(t, v) in &w.samples[1..] {
                        let better = if max {
                            if ts { v >= bv } else { v > bv }
                        } else if ts {
                            v <= bv
                        } else {
                            v < bv
                        };
                        if better || bv.is_nan() {
                            bt = t;
                            bv = v;
                        }
                    }
                    Ok(Some(if ts { bt as f64 / 1000.0 } else { bv }))
                }
            })?
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let dev = name == "stddev_over_time";
            over_range(cx, &rd, steps, false, || {
                |w: &Win<'_>| {
                    let mut var = Var::default();
                    for &(_, v) in w.samples {
                        var.add(v);
                    }
                    Ok(Some(if dev { var.value().sqrt() } else { var.value() }))
                }
            })?
        }
        "quantile_over_time" => {
            let q = scalar_arg(cx, c, 0, steps, f64::NAN)?;
            cx.warn_quantile(&q, arg(c, 0)?);
            over_range(cx, &rd, steps, false, || {
                |w: &Win<'_>| {
                    let mut vals: Vec<f64> = w.samples.iter().map(|p| p.1).collect();
                    Ok(Some(quantile(q[w.step], &mut vals)))
                }
            })?
        }
        "mad_over_time" => over_range(cx, &rd, steps, false, || {
            |w: &Win<'_>| {
                let mut vals: Vec<f64> = w.samples.iter().map(|p| p.1).collect();
                if vals.iter().any(|v| v.is_nan()) {
                    return Ok(Some(f64::NAN));
                }
                let median = quantile(0.5, &mut vals);
                let mut dev: Vec<f64> = vals.iter().map(|v| (v - median).abs()).collect();
                Ok(Some(quantile(0.5, &mut dev)))
            }
        })?,
        other => {
            return Err(EvalError::BadData(format!(
                "function {other:?} is not supported by csoc-collector's query engine"
            )));
        }
    };
    Ok(Val::Vector(out))
}

/// `absent` / `absent_over_time`: 1 at the steps where the argument has
/// nothing, labelled from its equality matchers.
fn absent_result(e: &Expr, empty_steps: Vec<usize>) -> Val {
    if empty_steps.is_empty() {
        return Val::Vector(Vec::new());
    }
    Val::Vector(vec![Sv {
        labels: Arc::new(absent_labels(e)),
        drop_name: false,
        pts: empty_steps.into_iter().map(|i| (i as u32, 1.0)).collect(),
    }])
}

fn absent_labels(e: &Expr) -> Labels {
    let ms = match e {
        Expr::VectorSelector(vs) => &vs.matchers,
        Expr::MatrixSelector(m) => &m.vs.matchers,
        _ => return Vec::new(),
    };
    // Labels of equality matchers; a name with more than one matcher is
    // ambiguous and left out.
    let mut out: Labels = Vec::new();
    for m in &ms.matchers {
        if m.name == "__name__" || !matches!(m.op, promql_parser::label::MatchOp::Equal) {
            continue;
        }
        if ms.matchers.iter().filter(|o| o.name == m.name).count() == 1 {
            out.push((m.name.clone(), m.value.clone()));
        }
    }
    out.sort();
    out
}

fn set_label(l: &mut Labels, name: &str, value: String) {
    l.retain(|(k, _)| k != name);
    if !value.is_empty() {
        l.push((name.to_string(), value));
        l.sort();
    }
}

/// Sets (or, empty, deletes) label `dst` of a series; a series whose name
/// is set explicitly keeps it even if an earlier operation dropped it.
fn relabel(s: &mut Sv, dst: &str, value: String) {
    let mut l = (*s.labels).clone();
    set_label(&mut l, dst, value);
    if dst == "__name__" {
        s.drop_name = false;
    }
    s.labels = Arc::new(l);
}

fn label_replace(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    let dst = string_arg(c, 1)?;
    let repl = string_arg(c, 2)?;
    let src = string_arg(c, 3)?;
    let re_src = string_arg(c, 4)?;
    let re = regex::Regex::new(&format!("^(?s:{re_src})$"))
        .map_err(|_| EvalError::Execution(format!("invalid regular expression in label_replace(): {re_src}")))?;
    if dst.is_empty() {
        return Err(EvalError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        let sv = get_label(&s.labels, &src).unwrap_or("").to_string();
        if let Some(caps) = re.captures(&sv) {
            let mut res = String::new();
            caps.expand(&repl, &mut res);
            relabel(&mut s, &dst, res);
        }
        out.push(s);
    }
    Ok(Val::Vector(out))
}

fn label_join(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    let dst = string_arg(c, 1)?;
    let sep = string_arg(c, 2)?;
    let mut srcs = Vec::new();
    for i in 3..c.args.args.len() {
        srcs.push(string_arg(c, i)?);
    }
    if dst.is_empty() {
        return Err(EvalError::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        let joined: Vec<&str> = srcs.iter().map(|n| get_label(&s.labels, n).unwrap_or("")).collect();
        let value = joined.join(&sep);
        relabel(&mut s, &dst, value);
        out.push(s);
    }
    Ok(Val::Vector(out))
}

/// Parses a bucket bound as Go's ParseFloat would (`+Inf`, `1e3`, …).
fn parse_le(s: &str) -> Option<f64> {
    let t = s.trim();
    match t {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => t.parse::<f64>().ok(),
    }
}

fn histogram_quantile(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let phi = scalar_arg(cx, c, 0, steps, f64::NAN)?;
    let v = cx.eval_vector(arg(c, 1)?, steps)?;
    cx.warn_quantile(&phi, arg(c, 0)?);
    over_buckets(cx, v, arg(c, 1)?, steps, |i, buckets| bucket_quantile(phi[i], buckets))
}

/// `info(v, {selector})` (experimental upstream): adds the data labels of
/// info series (`*_info`, `target_info` by default) that share the base
/// series' identifying labels (`instance`, `job`). The selector's `__name__`
/// matchers pick the info metrics; its other matchers filter the info
/// series and name the labels to add. Where no info series matches, the
/// sample passes unchanged if every data matcher accepts the empty string,
/// and is dropped otherwise. Of several info series of one metric the one
/// with the latest sample wins; series that are info metrics themselves
/// pass unchanged.
fn info(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    use crate::tsdb::Matcher;
    const IDENTIFYING: [&str; 2] = ["instance", "job"];
    let base = cx.eval_vector(arg(c, 0)?, steps)?;
    let sel = match c.args.args.get(1).map(|b| b.as_ref()) {
        Some(Expr::VectorSelector(vs)) => Some(vs.clone()),
        Some(_) => return Err(EvalError::BadData("the second argument of info() must be a series selector".into())),
        None => None,
    };
    let mut name_ms: Vec<Matcher> = Vec::new();
    let mut data_ms: Vec<Matcher> = Vec::new();
    if let Some(vs) = &sel {
        for set in super::matchers_of(vs)? {
            for m in set {
                if m.name == "__name__" {
                    name_ms.push(m);
                } else {
                    data_ms.push(m);
                }
            }
        }
    }
    if name_ms.is_empty() {
        name_ms.push(Matcher::equal("__name__", "target_info"));
    }
    // The info series, with the time of their latest sample at each step.
    // With a positive `__name__` matcher those metrics are the info
    // metrics; with only negative ones, the `*_info` metrics they allow.
    let positive: Vec<promql_parser::label::Matcher> = sel
        .iter()
        .flat_map(|vs| vs.matchers.matchers.iter())
        .filter(|m| m.name == "__name__" && matches!(m.op, promql_parser::label::MatchOp::Equal | promql_parser::label::MatchOp::Re(_)))
        .cloned()
        .chain(sel.iter().filter_map(|vs| {
            vs.name
                .as_ref()
                .map(|n| promql_parser::label::Matcher::new(promql_parser::label::MatchOp::Equal, "__name__", n))
        }))
        .collect();
    let any_positive = !positive.is_empty() || sel.is_none();
    let mut fetch = promql_parser::parser::VectorSelector::new(None, promql_parser::label::Matchers::empty());
    fetch.matchers.matchers = if sel.is_none() {
        vec![promql_parser::label::Matcher::new(
            promql_parser::label::MatchOp::Equal,
            "__name__",
            "target_info",
        )]
    } else if !positive.is_empty() {
        positive
    } else {
        vec![promql_parser::label::Matcher::new(
            promql_parser::label::MatchOp::Re(regex::Regex::new("^(?s:.+_info)$").map_err(|e| EvalError::Execution(e.to_string()))?),
            "__name__",
            ".+_info",
        )]
    };
    // The info series are looked up at the base selector's own time
    // (its `@` and `offset`).
    let mut b0 = arg(c, 0)?;
    while let Expr::Paren(p) = b0 {
        b0 = &p.expr;
    }
    if let Expr::VectorSelector(bvs) = b0 {
        fetch.at = bvs.at.clone();
        fetch.offset = bvs.offset.clone();
    }
    let candidates: Vec<Sv> = cx
        .vector_selector_with(&fetch, steps, true)?
        .into_iter()
        .filter(|s| name_ms.iter().all(|m| m.matches(&s.labels)) && data_ms.iter().all(|m| m.matches(&s.labels)))
        .collect();
    let empty_ok = data_ms.iter().all(|m| m.matches(&Vec::new()));
    let ident = |l: &Labels| -> Vec<String> { IDENTIFYING.iter().map(|n| get_label(l, n).unwrap_or("").to_string()).collect() };
    let mut by_ident: std::collections::HashMap<Vec<String>, Vec<usize>> = std::collections::HashMap::new();
    for (k, s) in candidates.iter().enumerate() {
        by_ident.entry(ident(&s.labels)).or_default().push(k);
    }
    let mut out = super::eval::OutBuilder::new();
    for b in base {
        let is_info_metric = name_ms.iter().all(|m| m.matches(&b.labels))
            && get_label(&b.labels, "__name__").is_some_and(|n| any_positive || n.ends_with("_info"));
        if is_info_metric {
            let slot = out.slot(b.labels.clone(), b.drop_name);
            for &(i, v) in &b.pts {
                out.push(slot, i, v);
            }
            continue;
        }
        let infos = by_ident.get(&ident(&b.labels)).map(Vec::as_slice).unwrap_or(&[]);
        for &(i, v) in &b.pts {
            // Per info metric name, the series with the latest sample.
            let mut chosen: Vec<(&str, f64, usize)> = Vec::new();
            for &k in infos {
                let s = &candidates[k];
                let Some(&(_, ts)) = s.pts.iter().find(|p| p.0 == i) else {
                    continue;
                };
                let name = get_label(&s.labels, "__name__").unwrap_or("");
                match chosen.iter_mut().find(|c| c.0 == name) {
                    Some(c) if ts > c.1 => *c = (name, ts, k),
                    Some(_) => {}
                    None => chosen.push((name, ts, k)),
                }
            }
            if chosen.is_empty() {
                if empty_ok {
                    let slot = out.slot(b.labels.clone(), b.drop_name);
                    out.push(slot, i, v);
                }
                continue;
            }
            let mut l: Labels = (*b.labels).clone();
            let mut added: Vec<(&str, &str)> = Vec::new();
            for (_, _, k) in &chosen {
                for (name, value) in candidates[*k].labels.iter() {
                    if name == "__name__" || IDENTIFYING.contains(&name.as_str()) || get_label(&b.labels, name).is_some() {
                        continue;
                    }
                    if !data_ms.is_empty() && !data_ms.iter().any(|m| &m.name == name) {
                        continue;
                    }
                    match added.iter().find(|(n, _)| n == name) {
                        Some((_, v)) if v != value => {
                            return Err(EvalError::Execution(format!(
                                "conflicting label: {name:?} has the values {v:?} and {value:?} in different info metrics"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            added.push((name.as_str(), value.as_str()));
                            l.push((name.clone(), value.clone()));
                        }
                    }
                }
            }
            l.sort();
            let slot = out.slot(Arc::new(l), b.drop_name);
            if !out.push(slot, i, v) {
                return Err(super::eval::dup_labelset());
            }
        }
    }
    Ok(Val::Vector(out.series))
}

/// `histogram_quantiles(v, "label", q1, q2, …)`: one series per quantile,
/// told apart by the label.
fn histogram_quantiles(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    let label = string_arg(c, 1)?;
    let mut out = Vec::new();
    for i in 2..c.args.args.len() {
        let q = scalar_arg(cx, c, i, steps, f64::NAN)?;
        cx.warn_quantile(&q, arg(c, i)?);
        let Val::Vector(series) = over_buckets(cx, v.clone(), arg(c, 0)?, steps, |i, buckets| bucket_quantile(q[i], buckets))? else {
            continue;
        };
        let qs = q.first().map_or_else(String::new, |&x| {
            if x.is_finite() && x.fract() == 0.0 {
                format!("{x:.1}")
            } else {
                fmt_float(x)
            }
        });
        for mut s in series {
            if get_label(&s.labels, &label).is_some() {
                return Err(EvalError::Execution(format!(
                    "label {label:?} already exists on the input of histogram_quantiles"
                )));
            }
            let mut l = (*s.labels).clone();
            set_label(&mut l, &label, qs.clone());
            s.labels = Arc::new(l);
            out.push(s);
        }
    }
    Ok(Val::Vector(out))
}

fn histogram_fraction(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let lower = scalar_arg(cx, c, 0, steps, f64::NAN)?;
    let upper = scalar_arg(cx, c, 1, steps, f64::NAN)?;
    let v = cx.eval_vector(arg(c, 2)?, steps)?;
    over_buckets(cx, v, arg(c, 2)?, steps, |i, buckets| bucket_fraction(lower[i], upper[i], buckets))
}

/// Groups classic bucket series (`le`) by their other labels and applies `f`
/// to each group's buckets at each step.
fn over_buckets(
    cx: &mut Ctx<'_>,
    v: Vec<Sv>,
    node: &Expr,
    steps: Steps,
    mut f: impl FnMut(usize, &mut [(f64, f64)]) -> (f64, bool),
) -> Result<Val, EvalError> {
    let n = steps.len();
    // Group the bucket series by their labels without `le`.
    // (labels without `le`, (series index, bucket bound) of its buckets)
    let mut groups: Vec<(Labels, Vec<(usize, f64)>)> = Vec::new();
    let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    for (si, s) in v.iter().enumerate() {
        let le = get_label(&s.labels, "le");
        let Some(bound) = le.and_then(parse_le) else {
            let metric = get_label(&s.labels, "__name__").unwrap_or("");
            let msg = format!(
                "bucket label \"le\" is missing or has a malformed value of {:?} for metric name {metric:?}",
                le.unwrap_or("")
            );
            cx.warn(msg, node);
            continue;
        };
        let key: Labels = s.labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        let gi = match index.get(&key) {
            Some(&g) => g,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, Vec::new()));
                groups.len() - 1
            }
        };
        groups[gi].1.push((si, bound));
    }
    let mut out = Vec::with_capacity(groups.len());
    for (labels, members) in groups {
        // Per step buckets.
        let mut per_step: Vec<Vec<(f64, f64)>> = vec![Vec::new(); n];
        for (si, bound) in &members {
            for &(i, val) in &v[*si].pts {
                per_step[i as usize].push((*bound, val));
            }
        }
        let mut pts = Vec::new();
        for (i, mut buckets) in per_step.into_iter().enumerate() {
            if buckets.is_empty() {
                continue;
            }
            let (q, fixed) = f(i, &mut buckets);
            if fixed {
                let metric = get_label(&labels, "__name__").unwrap_or("");
                let msg = format!(
                    "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {metric:?}"
                );
                cx.info(msg, node);
            }
            pts.push((i as u32, q));
        }
        if !pts.is_empty() {
            out.push(Sv {
                labels: Arc::new(labels),
                drop_name: true,
                pts,
            });
        }
    }
    Ok(Val::Vector(out))
}

/// Prometheus's classic-bucket quantile; also says whether the buckets had
/// to be made monotonic.
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    let Some((co, forced)) = prepare_buckets(buckets) else {
        return (f64::NAN, false);
    };
    if co.len() < 2 {
        return (f64::NAN, forced);
    }
    let obs = co[co.len() - 1].1;
    if obs == 0.0 || obs.is_nan() {
        return (f64::NAN, forced);
    }
    let mut rank = q * obs;
    let last = co.len() - 1;
    let b = co[..last].partition_point(|x| x.1 < rank);
    if b == last {
        return (co[last - 1].0, forced);
    }
    if b == 0 && co[0].0 <= 0.0 {
        return (co[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, co[b].0, co[b].1);
    if b > 0 {
        start = co[b - 1].0;
        count -= co[b - 1].1;
        rank -= co[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// Prometheus's classic-bucket fraction of observations in [lower, upper]:
/// finite buckets interpolate linearly; a bucket of infinite width counts
/// only when it lies wholly inside.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut [(f64, f64)]) -> (f64, bool) {
    let Some((co, forced)) = prepare_buckets(buckets) else {
        return (f64::NAN, false);
    };
    let total = co[co.len() - 1].1;
    if total == 0.0 || total.is_nan() || lower.is_nan() || upper.is_nan() {
        return (f64::NAN, forced);
    }
    if lower >= upper {
        return (0.0, forced);
    }
    let mut sum = 0.0;
    for (i, &(ub, cum)) in co.iter().enumerate() {
        let (lb, prev) = if i == 0 {
            (if ub > 0.0 { 0.0 } else { f64::NEG_INFINITY }, 0.0)
        } else {
            (co[i - 1].0, co[i - 1].1)
        };
        let cnt = cum - prev;
        if lb >= upper || ub <= lower {
            continue;
        }
        if ub == f64::INFINITY || lb == f64::NEG_INFINITY {
            // No interpolation in a bucket of infinite width: it counts when
            // the range reaches its infinite end.
            if (ub == f64::INFINITY && upper == f64::INFINITY) || (lb == f64::NEG_INFINITY && lower == f64::NEG_INFINITY) {
                sum += cnt;
            }
        } else if lb >= lower && ub <= upper {
            sum += cnt;
        } else {
            sum += cnt * (ub.min(upper) - lb.max(lower)) / (ub - lb);
        }
    }
    (sum / total, forced)
}

/// Sorts, checks for the +Inf bucket, coalesces equal bounds and makes the
/// counts monotonic (ignoring tiny deltas); None without a +Inf bucket.
fn prepare_buckets(buckets: &mut [(f64, f64)]) -> Option<(Vec<(f64, f64)>, bool)> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return None;
    }
    // Coalesce equal bounds.
    let mut co: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(b, c) in buckets.iter() {
        match co.last_mut() {
            Some(last) if last.0 == b => last.1 += c,
            _ => co.push((b, c)),
        }
    }
    // Monotonicity, ignoring tiny deltas.
    let mut forced = false;
    let mut prev = co[0].1;
    for b in co.iter_mut().skip(1) {
        let cur = b.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) {
            b.1 = prev;
            continue;
        }
        if cur < prev {
            b.1 = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    Some((co, forced))
}

pub(super) fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    let min_normal = f64::MIN_POSITIVE;
    if a == 0.0 || b == 0.0 || (a.abs() + b.abs()) < min_normal {
        return diff < eps * min_normal;
    }
    diff / (a.abs() + b.abs()).min(f64::MAX) < eps
}

fn math_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |x| x * 180.0 / std::f64::consts::PI,
        "rad" => |x| x * std::f64::consts::PI / 180.0,
        "sgn" => |x: f64| {
            if x.is_nan() {
                x
            } else if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        },
        _ => return None,
    })
}

/// Civil date from days since the epoch (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
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

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
    }
}

fn date_fn(name: &str) -> fn(f64) -> f64 {
    fn parts(x: f64) -> Option<(i64, u32, u32, i64, i64)> {
        if !x.is_finite() {
            return None;
        }
        let secs = x.floor() as i64;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil(days);
        Some((y, m, d, days, sod))
    }
    match name {
        "day_of_month" => |x| parts(x).map_or(f64::NAN, |p| p.2 as f64),
        "day_of_week" => |x| parts(x).map_or(f64::NAN, |p| (p.3 + 4).rem_euclid(7) as f64),
        "day_of_year" => |x| {
            parts(x).map_or(f64::NAN, |(y, m, d, _, _)| {
                let before: u32 = (1..m).map(|mm| days_in(y, mm)).sum();
                (before + d) as f64
            })
        },
        "days_in_month" => |x| parts(x).map_or(f64::NAN, |(y, m, _, _, _)| days_in(y, m) as f64),
        "hour" => |x| parts(x).map_or(f64::NAN, |p| (p.4 / 3600) as f64),
        "minute" => |x| parts(x).map_or(f64::NAN, |p| ((p.4 % 3600) / 60) as f64),
        "month" => |x| parts(x).map_or(f64::NAN, |p| p.1 as f64),
        _ => |x| parts(x).map_or(f64::NAN, |p| p.0 as f64),
    }
}

/// Natural order: runs of digits compare by number.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            let o = ab[i].cmp(&bb[j]);
            if o != Ordering::Equal {
                return o;
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}
