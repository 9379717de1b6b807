//! PromQL functions over float samples: a table from function name to its
//! implementation ([`lookup`]), one file per family, and the argument
//! helpers they share.

mod histogram;
mod info;
mod labels;
mod math;
mod misc;
mod over_time;
mod range;
mod sort;
mod stats;
mod time;
mod window;

use promql_parser::parser::{Call, Expr};

use super::EvalError;
use super::eval::{Ctx, Steps, Sv, Val};

#[cfg(test)]
#[cfg(test)]
pub(super) use range::extrapolated_rate;
pub(super) use stats::{Mean, Var, kahan_inc, quantile};
#[cfg(test)]
pub(super) use window::Win;

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, as Prometheus writes sample
/// values in JSON and label values in `count_values` (shared with the
/// agent's text output).
pub use csoc_common::gofmt::format_f as fmt_float;

/// The implementation of one PromQL function: evaluates the call's
/// arguments as it needs them, at every step.
type Func = fn(&mut Ctx<'_>, &Call, Steps) -> Result<Val, EvalError>;

/// The implementation of the function `name`; None for a function the
/// parser knows and this engine does not implement. A `match` on the name
/// (compiled to a switch on its length and a few compares, no allocation):
/// as fast as a sorted table's binary search or faster, and the compiler
/// rejects a name listed twice. Variants of one implementation pass their
/// flag or per-sample function through a closure.
fn lookup(name: &str) -> Option<Func> {
    let f: Func = match name {
        // Functions over range vectors.
        "rate" => |cx, c, s| range::rate(cx, c, s, true),
        "increase" => |cx, c, s| range::rate(cx, c, s, false),
        "delta" => range::delta,
        "irate" => |cx, c, s| range::instant(cx, c, s, true),
        "idelta" => |cx, c, s| range::instant(cx, c, s, false),
        "deriv" => range::deriv,
        "predict_linear" => range::predict_linear,
        "double_exponential_smoothing" | "holt_winters" => range::double_exponential_smoothing,
        "changes" => |cx, c, s| range::changes(cx, c, s, false),
        "resets" => |cx, c, s| range::changes(cx, c, s, true),
        "avg_over_time" => over_time::avg_over_time,
        "sum_over_time" => over_time::sum_over_time,
        "count_over_time" => over_time::count_over_time,
        "present_over_time" => over_time::present_over_time,
        "last_over_time" => over_time::last_over_time,
        "first_over_time" => over_time::first_over_time,
        "ts_of_last_over_time" => over_time::ts_of_last_over_time,
        "ts_of_first_over_time" => over_time::ts_of_first_over_time,
        "max_over_time" => |cx, c, s| over_time::max_over_time(cx, c, s, true),
        "min_over_time" => |cx, c, s| over_time::max_over_time(cx, c, s, false),
        "ts_of_max_over_time" => |cx, c, s| over_time::ts_of_max_over_time(cx, c, s, true),
        "ts_of_min_over_time" => |cx, c, s| over_time::ts_of_max_over_time(cx, c, s, false),
        "stddev_over_time" => |cx, c, s| over_time::stdvar_over_time(cx, c, s, true),
        "stdvar_over_time" => |cx, c, s| over_time::stdvar_over_time(cx, c, s, false),
        "quantile_over_time" => over_time::quantile_over_time,
        "mad_over_time" => over_time::mad_over_time,
        "absent_over_time" => misc::absent_over_time,
        // Arithmetic on each sample, and scalars.
        "abs" => |cx, c, s| math::elementwise(cx, c, s, f64::abs),
        "ceil" => |cx, c, s| math::elementwise(cx, c, s, f64::ceil),
        "floor" => |cx, c, s| math::elementwise(cx, c, s, f64::floor),
        "exp" => |cx, c, s| math::elementwise(cx, c, s, f64::exp),
        "sqrt" => |cx, c, s| math::elementwise(cx, c, s, f64::sqrt),
        "ln" => |cx, c, s| math::elementwise(cx, c, s, f64::ln),
        "log2" => |cx, c, s| math::elementwise(cx, c, s, f64::log2),
        "log10" => |cx, c, s| math::elementwise(cx, c, s, f64::log10),
        "sin" => |cx, c, s| math::elementwise(cx, c, s, f64::sin),
        "cos" => |cx, c, s| math::elementwise(cx, c, s, f64::cos),
        "tan" => |cx, c, s| math::elementwise(cx, c, s, f64::tan),
        "asin" => |cx, c, s| math::elementwise(cx, c, s, f64::asin),
        "acos" => |cx, c, s| math::elementwise(cx, c, s, f64::acos),
        "atan" => |cx, c, s| math::elementwise(cx, c, s, f64::atan),
        "sinh" => |cx, c, s| math::elementwise(cx, c, s, f64::sinh),
        "cosh" => |cx, c, s| math::elementwise(cx, c, s, f64::cosh),
        "tanh" => |cx, c, s| math::elementwise(cx, c, s, f64::tanh),
        "asinh" => |cx, c, s| math::elementwise(cx, c, s, f64::asinh),
        "acosh" => |cx, c, s| math::elementwise(cx, c, s, f64::acosh),
        "atanh" => |cx, c, s| math::elementwise(cx, c, s, f64::atanh),
        "deg" => |cx, c, s| math::elementwise(cx, c, s, math::deg),
        "rad" => |cx, c, s| math::elementwise(cx, c, s, math::rad),
        "sgn" => |cx, c, s| math::elementwise(cx, c, s, math::sgn),
        "clamp" => math::clamp,
        "clamp_min" => |cx, c, s| math::clamp_min(cx, c, s, true),
        "clamp_max" => |cx, c, s| math::clamp_min(cx, c, s, false),
        "round" => math::round,
        "pi" => math::pi,
        "min_of" => |cx, c, s| math::min_of(cx, c, s, true),
        "max_of" => |cx, c, s| math::min_of(cx, c, s, false),
        // Time and the calendar.
        "time" => time::time,
        "start" => time::start,
        "end" => time::end,
        "range" => time::range,
        "step" => time::step,
        "timestamp" => time::timestamp,
        "year" => |cx, c, s| time::date(cx, c, s, time::year),
        "month" => |cx, c, s| time::date(cx, c, s, time::month),
        "day_of_month" => |cx, c, s| time::date(cx, c, s, time::day_of_month),
        "day_of_week" => |cx, c, s| time::date(cx, c, s, time::day_of_week),
        "day_of_year" => |cx, c, s| time::date(cx, c, s, time::day_of_year),
        "days_in_month" => |cx, c, s| time::date(cx, c, s, time::days_in_month),
        "hour" => |cx, c, s| time::date(cx, c, s, time::hour),
        "minute" => |cx, c, s| time::date(cx, c, s, time::minute),
        // Labels and order.
        "label_replace" => labels::label_replace,
        "label_join" => labels::label_join,
        "sort" => |cx, c, s| sort::sort(cx, c, s, false),
        "sort_desc" => |cx, c, s| sort::sort(cx, c, s, true),
        "sort_by_label" => |cx, c, s| sort::sort_by_label(cx, c, s, false),
        "sort_by_label_desc" => |cx, c, s| sort::sort_by_label(cx, c, s, true),
        "info" => info::info,
        // Histograms.
        "histogram_quantile" => histogram::histogram_quantile,
        "histogram_quantiles" => histogram::histogram_quantiles,
        "histogram_fraction" => histogram::histogram_fraction,
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev" | "histogram_stdvar" => histogram::native_only,
        // Vectors, scalars and absence.
        "vector" => misc::vector,
        "scalar" => misc::scalar,
        "absent" => misc::absent,
        _ => return None,
    };
    Some(f)
}

pub(super) fn eval_call(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let f = lookup(c.func.name).unwrap_or(unsupported);
    f(cx, c, steps)
}

/// A function the parser knows and this engine does not implement
/// (`integral`, `start_timestamp`). Its first argument is still read as a
/// range vector before the error is returned, as the engine always did, so
/// a call whose argument is missing or not a range vector keeps failing
/// with that error.
fn unsupported(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    cx.range_data(arg(c, 0)?, steps)?;
    Err(EvalError::BadData(format!(
        "function {:?} is not supported by csoc-collector's query engine",
        c.func.name
    )))
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
