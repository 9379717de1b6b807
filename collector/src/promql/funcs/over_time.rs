//! The `*_over_time` aggregations of each window of a range vector.

use promql_parser::parser::Call;

use super::stats::{Mean, Var, kahan_inc, quantile};
use super::window::{Win, over_range};
use super::{arg, scalar_arg};
use crate::promql::EvalError;
use crate::promql::eval::{Ctx, Steps, Val};

pub(super) fn avg_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        |w: &Win<'_>| {
            let mut m = Mean::default();
            for &(_, v) in w.samples {
                m.add(v);
            }
            Ok(Some(m.value()))
        }
    })
    .map(Val::Vector)
}

pub(super) fn sum_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        |w: &Win<'_>| {
            let (mut s, mut c) = (0.0, 0.0);
            for &(_, v) in w.samples {
                (s, c) = kahan_inc(v, s, c);
            }
            Ok(Some(s + c))
        }
    })
    .map(Val::Vector)
}

pub(super) fn count_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || |w: &Win<'_>| Ok(Some(w.samples.len() as f64))).map(Val::Vector)
}

pub(super) fn present_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || |_: &Win<'_>| Ok(Some(1.0))).map(Val::Vector)
}

/// `last_over_time` and `first_over_time` keep the metric name.
pub(super) fn last_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, true, || |w: &Win<'_>| Ok(w.samples.last().map(|p| p.1))).map(Val::Vector)
}

pub(super) fn first_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, true, || |w: &Win<'_>| Ok(w.samples.first().map(|p| p.1))).map(Val::Vector)
}

pub(super) fn ts_of_last_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        |w: &Win<'_>| Ok(w.samples.last().map(|p| p.0 as f64 / 1000.0))
    })
    .map(Val::Vector)
}

pub(super) fn ts_of_first_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        |w: &Win<'_>| Ok(w.samples.first().map(|p| p.0 as f64 / 1000.0))
    })
    .map(Val::Vector)
}

/// `max_over_time` (`max`) and `min_over_time`.
pub(super) fn max_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps, max: bool) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    // A monotonic deque of sample indices per series: each sample
    // enters and leaves once. NaN never wins unless the window has
    // nothing else (then NaN), as Prometheus's comparison does.
    over_range(cx, &rd, steps, false, || {
        let mut dq: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
        let (mut cur, mut last_lo, mut last_hi) = (usize::MAX, 0usize, 0usize);
        move |w: &Win<'_>| {
            let all = w.all;
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
    })
    .map(Val::Vector)
}

/// `ts_of_max_over_time` (`max`) and `ts_of_min_over_time`: the time of
/// the last sample with the extreme value.
pub(super) fn ts_of_max_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps, max: bool) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        move |w: &Win<'_>| {
            let (mut bt, mut bv) = w.samples[0];
            for &(t, v) in &w.samples[1..] {
                let better = if max { v >= bv } else { v <= bv };
                if better || bv.is_nan() {
                    bt = t;
                    bv = v;
                }
            }
            Ok(Some(bt as f64 / 1000.0))
        }
    })
    .map(Val::Vector)
}

/// `stddev_over_time` (`dev`) and `stdvar_over_time`.
pub(super) fn stdvar_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps, dev: bool) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        move |w: &Win<'_>| {
            let mut var = Var::default();
            for &(_, v) in w.samples {
                var.add(v);
            }
            Ok(Some(if dev { var.value().sqrt() } else { var.value() }))
        }
    })
    .map(Val::Vector)
}

pub(super) fn quantile_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 1)?, steps)?;
    let q = scalar_arg(cx, c, 0, steps, f64::NAN)?;
    cx.warn_quantile(&q, arg(c, 0)?);
    over_range(cx, &rd, steps, false, || {
        |w: &Win<'_>| {
            let mut vals: Vec<f64> = w.samples.iter().map(|p| p.1).collect();
            Ok(Some(quantile(q[w.step], &mut vals)))
        }
    })
    .map(Val::Vector)
}

pub(super) fn mad_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_input(arg(c, 0)?, steps)?;
    over_range(cx, &rd, steps, false, || {
        |w: &Win<'_>| {
            let mut vals: Vec<f64> = w.samples.iter().map(|p| p.1).collect();
            if vals.iter().any(|v| v.is_nan()) {
                return Ok(Some(f64::NAN));
            }
            let median = quantile(0.5, &mut vals);
            let mut dev: Vec<f64> = vals.iter().map(|v| (v - median).abs()).collect();
            Ok(Some(quantile(0.5, &mut dev)))
        }
    })
    .map(Val::Vector)
}
