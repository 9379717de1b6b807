//! Label rewriting: `label_replace`, `label_join`.

use std::sync::Arc;

use promql_parser::parser::Call;

use super::{arg, string_arg};
use crate::promql::EvalError;
use crate::promql::eval::{Ctx, Steps, Sv, Val, get_label};
use crate::tsdb::Labels;

pub(super) fn set_label(l: &mut Labels, name: &str, value: String) {
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

pub(super) fn label_replace(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
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

pub(super) fn label_join(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
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
