//! `vector`, `scalar`, and `absent` / `absent_over_time`.

use std::sync::Arc;

use promql_parser::parser::{Call, Expr};

use super::{arg, scalar_arg};
use crate::promql::EvalError;
use crate::promql::eval::{Ctx, Steps, Sv, Val, by_step};
use crate::tsdb::Labels;

pub(super) fn vector(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let v = scalar_arg(cx, c, 0, steps, f64::NAN)?;
    Ok(Val::Vector(vec![Sv {
        labels: Arc::new(Vec::new()),
        drop_name: false,
        pts: v.into_iter().enumerate().map(|(i, x)| (i as u32, x)).collect(),
    }]))
}

pub(super) fn scalar(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    let per = by_step(&v, steps.len());
    Ok(Val::Scalar(
        per.iter().map(|s| if s.len() == 1 { s[0].1 } else { f64::NAN }).collect(),
    ))
}

pub(super) fn absent(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let n = steps.len();
    let v = cx.eval_vector(arg(c, 0)?, steps)?;
    let per = by_step(&v, n);
    let empty: Vec<usize> = (0..n).filter(|&i| per[i].is_empty()).collect();
    Ok(absent_result(arg(c, 0)?, empty))
}

pub(super) fn absent_over_time(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
    let rd = cx.range_data(arg(c, 0)?, steps)?;
    let empty: Vec<usize> = (0..steps.len())
        .filter(|&i| (0..rd.series.len()).all(|si| rd.window(si, i).is_empty()))
        .collect();
    Ok(absent_result(arg(c, 0)?, empty))
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
