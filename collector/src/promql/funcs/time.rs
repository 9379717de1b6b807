//! Time: the evaluation time (`time`), the query's own bounds (`start`,
//! `end`, `range`, `step`), sample timestamps (`timestamp`) and the calendar
//! functions (`year`, `month`, `day_of_month`, `day_of_week`,
//! `day_of_year`, `days_in_month`, `hour`, `minute`) in UTC.

use std::sync::Arc;

use csoc_common::calendar::{civil_from_days, days_in_month as month_days, weekday};
use promql_parser::parser::{Call, Expr};

use super::{arg, map_vector};
use crate::promql::EvalError;
use crate::promql::eval::{Ctx, Steps, Sv, Val};

/// The time of step `i` in seconds.
fn secs(steps: Steps, i: usize) -> f64 {
    steps.ts(i) as f64 / 1000.0
}

pub(super) fn time(_: &mut Ctx<'_>, _: &Call, steps: Steps) -> Result<Val, EvalError> {
    Ok(Val::Scalar((0..steps.len()).map(|i| secs(steps, i)).collect()))
}

pub(super) fn start(cx: &mut Ctx<'_>, _: &Call, steps: Steps) -> Result<Val, EvalError> {
    Ok(Val::Scalar(vec![cx.qstart as f64 / 1000.0; steps.len()]))
}

pub(super) fn end(cx: &mut Ctx<'_>, _: &Call, steps: Steps) -> Result<Val, EvalError> {
    Ok(Val::Scalar(vec![cx.qend as f64 / 1000.0; steps.len()]))
}

pub(super) fn range(cx: &mut Ctx<'_>, _: &Call, steps: Steps) -> Result<Val, EvalError> {
    Ok(Val::Scalar(vec![(cx.qend - cx.qstart) as f64 / 1000.0; steps.len()]))
}

pub(super) fn step(cx: &mut Ctx<'_>, _: &Call, steps: Steps) -> Result<Val, EvalError> {
    Ok(Val::Scalar(vec![cx.qstep as f64 / 1000.0; steps.len()]))
}

pub(super) fn timestamp(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let mut e = arg(c, 0)?;
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    let v = match e {
        Expr::VectorSelector(vs) => cx.vector_selector_with(vs, steps, true)?,
        other => {
            let v = cx.eval_vector(other, steps)?;
            map_vector(v, false, |_, i| Some(secs(steps, i)))
        }
    };
    Ok(Val::Vector(
        v.into_iter()
            .map(|mut s| {
                s.drop_name = true;
                s
            })
            .collect(),
    ))
}

/// A calendar function `f` of each sample value (seconds since the epoch),
/// or of the step's time without an argument.
pub(super) fn date(cx: &mut Ctx<'_>, c: &Call, steps: Steps, f: fn(f64) -> f64) -> Result<Val, EvalError> {
    if c.args.args.is_empty() {
        return Ok(Val::Vector(vec![Sv {
            labels: Arc::new(Vec::new()),
            drop_name: false,
            pts: (0..steps.len()).map(|i| (i as u32, f(secs(steps, i)))).collect(),
        }]));
    }
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    Ok(Val::Vector(map_vector(v, false, |x, _| Some(f(x)))))
}

/// The UTC date and time of `x` seconds since the epoch: (year, month,
/// day, days since the epoch, seconds of the day); None if not finite.
fn parts(x: f64) -> Option<(i64, u32, u32, i64, i64)> {
    if !x.is_finite() {
        return None;
    }
    let secs = x.floor() as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    Some((y, m, d, days, sod))
}

pub(super) fn day_of_month(x: f64) -> f64 {
    parts(x).map_or(f64::NAN, |p| p.2 as f64)
}

pub(super) fn day_of_week(x: f64) -> f64 {
    parts(x).map_or(f64::NAN, |p| weekday(p.3) as f64)
}

pub(super) fn day_of_year(x: f64) -> f64 {
    parts(x).map_or(f64::NAN, |(y, m, d, _, _)| {
        let before: u32 = (1..m).map(|mm| month_days(y, mm)).sum();
        (before + d) as f64
    })
}

pub(super) fn days_in_month(x: f64) -> f64 {
    parts(x).map_or(f64::NAN, |(y, m, _, _, _)| month_days(y, m) as f64)
}

pub(super) fn hour(x: f64) -> f64 {
    parts(x).map_or(f64::NAN, |p| (p.4 / 3600) as f64)
}

pub(super) fn minute(x: f64) -> f64 {
    parts(x).map_or(f64::NAN, |p| ((p.4 % 3600) / 60) as f64)
}

pub(super) fn month(x: f64) -> f64 {
    parts(x).map_or(f64::NAN, |p| p.1 as f64)
}

pub(super) fn year(x: f64) -> f64 {
    parts(x).map_or(f64::NAN, |p| p.0 as f64)
}
