//! Arithmetic on each sample: `abs`, `ceil`, `floor`, `exp`, `sqrt`, the
//! logarithms, trigonometry, `deg`, `rad`, `sgn`, `clamp*`, `round`; and the
//! scalar `pi`, `min_of`, `max_of`.

use promql_parser::parser::Call;

use super::{arg, map_vector, scalar_arg};
use crate::promql::EvalError;
use crate::promql::eval::{Ctx, Steps, Val};

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

/// A function of one sample value (`abs`, `ln`, `sin`, …) over a vector.
pub(super) fn elementwise(cx: &mut Ctx<'_>, c: &Call, steps: Steps, f: fn(f64) -> f64) -> Result<Val, EvalError> {
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    Ok(Val::Vector(map_vector(v, false, |x, _| Some(f(x)))))
}

pub(super) fn deg(x: f64) -> f64 {
    x * 180.0 / std::f64::consts::PI
}

pub(super) fn rad(x: f64) -> f64 {
    x * std::f64::consts::PI / 180.0
}

pub(super) fn sgn(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

pub(super) fn pi(_: &mut Ctx<'_>, _: &Call, steps: Steps) -> Result<Val, EvalError> {
    Ok(Val::Scalar(vec![std::f64::consts::PI; steps.len()]))
}

/// `min_of` (`min`) and `max_of` of two scalars.
pub(super) fn min_of(cx: &mut Ctx<'_>, c: &Call, steps: Steps, min: bool) -> Result<Val, EvalError> {
    let a = scalar_arg(cx, c, 0, steps, f64::NAN)?;
    let b = scalar_arg(cx, c, 1, steps, f64::NAN)?;
    Ok(Val::Scalar(
        a.iter()
            .zip(&b)
            .map(|(&x, &y)| if min { go_min(x, y) } else { go_max(x, y) })
            .collect(),
    ))
}

pub(super) fn clamp(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    let lo = scalar_arg(cx, c, 1, steps, f64::NAN)?;
    let hi = scalar_arg(cx, c, 2, steps, f64::NAN)?;
    Ok(Val::Vector(map_vector(v, false, |x, i| {
        if hi[i] < lo[i] {
            return None;
        }
        Some(go_max(lo[i], go_min(hi[i], x)))
    })))
}

/// `clamp_min` (`is_min`) and `clamp_max`.
pub(super) fn clamp_min(cx: &mut Ctx<'_>, c: &Call, steps: Steps, is_min: bool) -> Result<Val, EvalError> {
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    let b = scalar_arg(cx, c, 1, steps, f64::NAN)?;
    Ok(Val::Vector(map_vector(v, false, |x, i| {
        Some(if is_min { go_max(b[i], x) } else { go_min(b[i], x) })
    })))
}

pub(super) fn round(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    let to = scalar_arg(cx, c, 1, steps, 1.0)?;
    Ok(Val::Vector(map_vector(v, false, |x, i| {
        let inv = 1.0 / to[i];
        Some((x * inv + 0.5).floor() / inv)
    })))
}
