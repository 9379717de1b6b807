//! Ordering an instant vector: `sort`, `sort_desc` by value and
//! `sort_by_label`, `sort_by_label_desc` in natural order of label values.

use promql_parser::parser::{Call, Expr};

use super::{arg, string_arg};
use crate::promql::EvalError;
use crate::promql::eval::{Ctx, Steps, Val, get_label};

/// The warning of every sort function in a range query.
fn warn_range_query(cx: &mut Ctx<'_>, c: &Call) {
    if cx.qstep > 0 {
        cx.warn(
            "sort is ineffective for range queries since results are always ordered by labels".into(),
            &Expr::Call(c.clone()),
        );
    }
}

/// `sort` and `sort_desc` (`desc`); NaN last either way.
pub(super) fn sort(cx: &mut Ctx<'_>, c: &Call, steps: Steps, desc: bool) -> Result<Val, EvalError> {
    let mut v = cx.eval_vector(arg(c, 0)?, steps)?;
    warn_range_query(cx, c);
    if steps.len() == 1 {
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
    Ok(Val::Vector(v))
}

/// `sort_by_label` and `sort_by_label_desc` (`desc`).
pub(super) fn sort_by_label(cx: &mut Ctx<'_>, c: &Call, steps: Steps, desc: bool) -> Result<Val, EvalError> {
    let mut v = cx.eval_vector(arg(c, 0)?, steps)?;
    warn_range_query(cx, c);
    let mut names = Vec::new();
    for i in 1..c.args.args.len() {
        names.push(string_arg(c, i)?);
    }
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
    Ok(Val::Vector(v))
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
