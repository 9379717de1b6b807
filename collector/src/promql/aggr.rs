//! Aggregation operators with `by` / `without`: sum, avg, min, max, count,
//! group, stddev, stdvar, quantile, topk, bottomk, limitk, limit_ratio,
//! count_values.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::EvalError;
use super::eval::{Ctx, OutBuilder, Steps, Sv, Val, by_step, drop_name};
use super::funcs::{Mean, Var, fmt_float, kahan_inc, quantile};
use crate::tsdb::Labels;

/// The group labels of a series.
/// With `by (__name__)` a name that is to be dropped still partitions the
/// groups (Prometheus's delayed name removal does the same); the group's
/// name is then dropped at the end if any member's was to be.
fn group_labels(labels: &Labels, m: &Option<LabelModifier>) -> Labels {
    match m {
        Some(LabelModifier::Include(by)) => labels.iter().filter(|(k, _)| by.labels.iter().any(|n| n == k)).cloned().collect(),
        Some(LabelModifier::Exclude(without)) => labels
            .iter()
            .filter(|(k, _)| k != "__name__" && !without.labels.iter().any(|n| n == k))
            .cloned()
            .collect(),
        None => Vec::new(),
    }
}

#[derive(Default, Clone)]
struct Acc {
    count: f64,
    value: f64,
    c: f64,
    mean: Mean,
    var: Var,
    seen: bool,
    values: Vec<f64>,
}

pub(super) fn eval_aggregate(cx: &mut Ctx<'_>, a: &AggregateExpr, steps: Steps) -> Result<Val, EvalError> {
    let op = a.op.to_string();
    let n = steps.len();
    // Parameters.
    let mut param: Option<Vec<f64>> = None;
    let mut label_param: Option<String> = None;
    if let Some(p) = &a.param {
        match cx.eval(p, steps)? {
            Val::Scalar(v) => param = Some(v),
            Val::Str(s) => label_param = Some(s),
            _ => return Err(EvalError::BadData(format!("invalid parameter for {op}"))),
        }
    }
    let input = cx.eval_vector(&a.expr, steps)?;
    let groups_of: Vec<Labels> = input.iter().map(|s| group_labels(&s.labels, &a.modifier)).collect();
    let mut gindex: HashMap<&Labels, usize> = HashMap::new();
    let mut gid: Vec<usize> = Vec::with_capacity(input.len());
    let mut glabels: Vec<&Labels> = Vec::new();
    for g in &groups_of {
        let k = gindex.len();
        let id = *gindex.entry(g).or_insert_with(|| {
            glabels.push(g);
            k
        });
        gid.push(id);
    }
    let mut gdrop = vec![false; glabels.len()];
    for (si, s) in input.iter().enumerate() {
        if s.drop_name {
            gdrop[gid[si]] = true;
        }
    }
    // Per-step lists, only for the branches that work step by step.
    let per_step = || by_step(&input, n);
    match op.as_str() {
        "topk" | "bottomk" | "limitk" | "limit_ratio" => {
            let p = param.ok_or_else(|| EvalError::BadData(format!("{op} needs a parameter")))?;
            let mut out: Vec<Sv> = input
                .iter()
                .map(|s| Sv {
                    labels: s.labels.clone(),
                    drop_name: s.drop_name,
                    pts: Vec::new(),
                })
                .collect();
            // The order of the selected samples at the (single) step of an
            // instant query: topk/bottomk return them sorted.
            let mut order: Vec<u32> = Vec::new();
            for (i, samples) in per_step().iter().enumerate() {
                let k_raw = p[i];
                if op == "limit_ratio" {
                    if k_raw.is_nan() {
                        return Err(EvalError::Execution("Ratio value is NaN".to_string()));
                    }
                    let r = k_raw.clamp(-1.0, 1.0);
                    for &(si, v) in samples {
                        let off = ratio_offset(&input[si as usize].labels);
                        let take = if r >= 0.0 { off < r } else { off >= 1.0 + r };
                        if take {
                            out[si as usize].pts.push((i as u32, v));
                            if n == 1 {
                                order.push(si);
                            }
                        }
                    }
                    continue;
                }
                if k_raw.is_nan() {
                    return Err(EvalError::Execution("Parameter value is NaN".to_string()));
                }
                if k_raw >= 9.2e18 || k_raw <= -9.2e18 {
                    return Err(EvalError::Execution(format!("Scalar value {k_raw} overflows int64")));
                }
                let k = k_raw as i64;
                if k < 1 {
                    continue;
                }
                let k = k as usize;
                let mut by_group: Vec<Vec<(u32, f64)>> = vec![Vec::new(); glabels.len()];
                for &(si, v) in samples {
                    by_group[gid[si as usize]].push((si, v));
                }
                for mut members in by_group {
                    if members.is_empty() {
                        continue;
                    }
                    match op.as_str() {
                        "topk" => members.sort_by(|a, b| cmp_desc_nan_last(a.1, b.1)),
                        "bottomk" => members.sort_by(|a, b| cmp_asc_nan_last(a.1, b.1)),
                        _ => {}
                    }
                    members.truncate(k);
                    for (si, v) in members {
                        out[si as usize].pts.push((i as u32, v));
                        if n == 1 {
                            order.push(si);
                        }
                    }
                }
            }
            if n == 1 {
                let mut ordered: Vec<Sv> = Vec::with_capacity(order.len());
                for si in order {
                    ordered.push(std::mem::replace(
                        &mut out[si as usize],
                        Sv {
                            labels: Arc::new(Vec::new()),
                            drop_name: false,
                            pts: Vec::new(),
                        },
                    ));
                }
                return Ok(Val::Vector(ordered));
            }
            out.retain(|s| !s.pts.is_empty());
            Ok(Val::Vector(out))
        }
        "count_values" => {
            let label = label_param.ok_or_else(|| EvalError::BadData("count_values needs a label name".into()))?;
            if !csoc_common::labels::valid_utf8_label_name(&label) {
                return Err(EvalError::Execution(format!("invalid label name {label:?}")));
            }
            let mut out = OutBuilder::new();
            for (i, samples) in per_step().iter().enumerate() {
                if i % 256 == 255 {
                    cx.check_deadline()?;
                }
                // Each distinct value makes a series: counted as it grows.
                cx.account(samples.len())?;
                let mut counts: Vec<(Labels, f64)> = Vec::new();
                let mut idx: HashMap<Labels, usize> = HashMap::new();
                for &(si, v) in samples {
                    let mut l: Labels = glabels[gid[si as usize]].clone();
                    l.retain(|(k, _)| k != &label);
                    l.push((label.clone(), fmt_float(v)));
                    l.sort();
                    match idx.get(&l) {
                        Some(&j) => counts[j].1 += 1.0,
                        None => {
                            idx.insert(l.clone(), counts.len());
                            counts.push((l, 1.0));
                        }
                    }
                }
                for (l, c) in counts {
                    let slot = out.slot(Arc::new(l), false);
                    out.push(slot, i as u32, c);
                }
            }
            Ok(Val::Vector(out.series))
        }
        "sum" | "count" | "group" | "min" | "max" | "avg" if glabels.len().saturating_mul(n) <= 8_000_000 => {
            // Series by series into one accumulator per (group, step): the
            // same order of additions as step by step, without building
            // per-step vectors.
            let cells = glabels.len() * n;
            let mut val = vec![0.0f64; cells];
            let mut comp = vec![0.0f64; cells];
            let mut cnt = vec![0u32; cells];
            let mut means: Vec<Mean> = if op == "avg" { vec![Mean::default(); cells] } else { Vec::new() };
            // The operator decided once, not by its name at every point.
            #[derive(PartialEq)]
            enum Op {
                Sum,
                Min,
                Max,
                Avg,
                Count,
            }
            let kind = match op.as_str() {
                "sum" => Op::Sum,
                "min" => Op::Min,
                "max" => Op::Max,
                "avg" => Op::Avg,
                _ => Op::Count,
            };
            for (si, s) in input.iter().enumerate() {
                if si % 256 == 255 {
                    cx.check_deadline()?;
                }
                let base = gid[si] * n;
                let (val, comp, cnt) = (&mut val[base..base + n], &mut comp[base..base + n], &mut cnt[base..base + n]);
                for &(i, v) in &s.pts {
                    let k = i as usize;
                    match kind {
                        Op::Sum => (val[k], comp[k]) = kahan_inc(v, val[k], comp[k]),
                        Op::Min if cnt[k] == 0 || val[k] > v || val[k].is_nan() => val[k] = v,
                        Op::Max if cnt[k] == 0 || val[k] < v || val[k].is_nan() => val[k] = v,
                        Op::Avg => means[base + k].add(v),
                        _ => {}
                    }
                    cnt[k] += 1;
                }
            }
            let mut out = Vec::with_capacity(glabels.len());
            for (g, l) in glabels.iter().enumerate() {
                let mut pts = Vec::new();
                for i in 0..n {
                    let k = g * n + i;
                    if cnt[k] == 0 {
                        continue;
                    }
                    let v = match op.as_str() {
                        "sum" => val[k] + comp[k],
                        "count" => cnt[k] as f64,
                        "group" => 1.0,
                        "avg" => means[k].value(),
                        _ => val[k],
                    };
                    pts.push((i as u32, v));
                }
                if !pts.is_empty() {
                    out.push(Sv {
                        labels: Arc::new((*l).clone()),
                        drop_name: gdrop[g],
                        pts,
                    });
                }
            }
            cx.account(out.iter().map(|s| s.pts.len()).sum())?;
            Ok(Val::Vector(out))
        }
        _ => {
            let mut out: Vec<Sv> = glabels
                .iter()
                .enumerate()
                .map(|(g, l)| Sv {
                    labels: Arc::new((*l).clone()),
                    drop_name: gdrop[g],
                    pts: Vec::new(),
                })
                .collect();
            let mut accs: Vec<Acc> = vec![Acc::default(); glabels.len()];
            for (i, samples) in per_step().iter().enumerate() {
                if i % 256 == 255 {
                    cx.check_deadline()?;
                }
                if samples.is_empty() {
                    continue;
                }
                let mut touched: Vec<usize> = Vec::new();
                for &(si, v) in samples {
                    let g = gid[si as usize];
                    let acc = &mut accs[g];
                    if !acc.seen {
                        acc.seen = true;
                        touched.push(g);
                        acc.value = match op.as_str() {
                            "min" | "max" => v,
                            _ => 0.0,
                        };
                    }
                    accumulate(&op, acc, v);
                }
                touched.sort_unstable();
                for &g in &touched {
                    let acc = &accs[g];
                    let v = match op.as_str() {
                        "sum" => acc.value + acc.c,
                        "avg" => acc.mean.value(),
                        "count" => acc.count,
                        "group" => 1.0,
                        "min" | "max" => acc.value,
                        "stdvar" => acc.var.value(),
                        "stddev" => acc.var.value().sqrt(),
                        "quantile" => {
                            let q = param.as_ref().map(|p| p[i]).unwrap_or(f64::NAN);
                            let mut vals = acc.values.clone();
                            quantile(q, &mut vals)
                        }
                        other => return Err(EvalError::BadData(format!("unknown aggregation {other:?}"))),
                    };
                    out[g].pts.push((i as u32, v));
                }
                for &g in &touched {
                    accs[g] = Acc::default();
                }
            }
            if op == "quantile"
                && let (Some(p), Some(node)) = (&param, &a.param)
            {
                cx.warn_quantile(p, node);
            }
            out.retain(|s| !s.pts.is_empty());
            Ok(Val::Vector(out))
        }
    }
}

fn accumulate(op: &str, acc: &mut Acc, v: f64) {
    match op {
        "sum" => {
            let (s, c) = kahan_inc(v, acc.value, acc.c);
            acc.value = s;
            acc.c = c;
        }
        "avg" => acc.mean.add(v),
        "count" | "group" => acc.count += 1.0,
        "max" if acc.value < v || acc.value.is_nan() => acc.value = v,
        "min" if acc.value > v || acc.value.is_nan() => acc.value = v,
        "stddev" | "stdvar" => acc.var.add(v),
        "quantile" => acc.values.push(v),
        _ => {}
    }
}

fn cmp_desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
    }
}

fn cmp_asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// A series' stable position in [0, 1) for limit_ratio (a hash of its
/// labels without the name).
fn ratio_offset(labels: &Labels) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    drop_name(labels).hash(&mut h);
    h.finish() as f64 / u64::MAX as f64
}
