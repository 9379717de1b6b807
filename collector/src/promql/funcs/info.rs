//! `info`: enriching series with the labels of info metrics.

use std::sync::Arc;

use promql_parser::parser::{Call, Expr};

use super::arg;
use crate::promql::EvalError;
use crate::promql::eval::{Ctx, OutBuilder, Steps, Sv, Val, dup_labelset, get_label};
use crate::tsdb::Labels;

/// `info(v, {selector})` (experimental upstream): adds the data labels of
/// info series (`*_info`, `target_info` by default) that share the base
/// series' identifying labels (`instance`, `job`). The selector's `__name__`
/// matchers pick the info metrics; its other matchers filter the info
/// series and name the labels to add. Where no info series matches, the
/// sample passes unchanged if every data matcher accepts the empty string,
/// and is dropped otherwise. Of several info series of one metric the one
/// with the latest sample wins; series that are info metrics themselves
/// pass unchanged.
pub(super) fn info(cx: &mut Ctx<'_>, c: &Call, steps: Steps) -> Result<Val, EvalError> {
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
        for set in crate::promql::matchers_of(vs)? {
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
    let mut out = OutBuilder::new();
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
                return Err(dup_labelset());
            }
        }
    }
    Ok(Val::Vector(out.series))
}
