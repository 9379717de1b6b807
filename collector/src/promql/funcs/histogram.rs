//! Classic (`le` bucket) histograms: `histogram_quantile`,
//! `histogram_quantiles`, `histogram_fraction`; and the native-histogram
//! functions, which see no float samples.

use std::sync::Arc;

use promql_parser::parser::{Call, Expr};

use super::labels::set_label;
use super::{arg, fmt_float, scalar_arg, string_arg};
use crate::promql::EvalError;
use crate::promql::eval::{Ctx, Steps, Sv, Val, get_label};
use crate::tsdb::Labels;

/// `histogram_count`, `histogram_sum`, `histogram_avg`, `histogram_stddev`,
/// `histogram_stdvar`: native histograms only, so float samples are
/// ignored (the arguments are still evaluated, for their errors).
pub(super) fn native_only(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    for a in &c.args.args {
        let _ = cx.eval(a, steps)?;
    }
    Ok(Val::Vector(Vec::new()))
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

pub(super) fn histogram_quantile(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let phi = scalar_arg(cx, c, 0, steps, f64::NAN)?;
    let v = cx.eval_vector(arg(c, 1)?, steps)?;
    cx.warn_quantile(&phi, arg(c, 0)?);
    over_buckets(cx, v, arg(c, 1)?, steps, |i, buckets| bucket_quantile(phi[i], buckets))
}

/// `histogram_quantiles(v, "label", q1, q2, …)`: one series per quantile,
/// told apart by the label.
pub(super) fn histogram_quantiles(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
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

pub(super) fn histogram_fraction(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
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

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
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
