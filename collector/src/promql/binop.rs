//! Binary operators: arithmetic, comparisons (filtering or `bool`), the set
//! operators, with Prometheus's vector matching (`on`, `ignoring`,
//! `group_left`, `group_right`) and the `fill` modifiers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::EvalError;
use super::eval::{Ctx, OutBuilder, Steps, Sv, Val, by_step, get_label};
use crate::tsdb::Labels;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    pub fn parse(s: &str) -> Result<Op, EvalError> {
        Ok(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            other => return Err(EvalError::BadData(format!("unknown binary operator {other:?}"))),
        })
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    fn is_set(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Unless)
    }
}

/// `(value, keep)`: for comparisons the value is the left operand and
/// `keep` the comparison's outcome.
pub(super) fn apply(op: Op, l: f64, r: f64) -> (f64, bool) {
    match op {
        Op::Add => (l + r, true),
        Op::Sub => (l - r, true),
        Op::Mul => (l * r, true),
        Op::Div => (l / r, true),
        Op::Mod => (l % r, true),
        Op::Pow => (l.powf(r), true),
        Op::Atan2 => (l.atan2(r), true),
        Op::Eq => (l, l == r),
        Op::Ne => (l, l != r),
        Op::Gt => (l, l > r),
        Op::Lt => (l, l < r),
        Op::Ge => (l, l >= r),
        Op::Le => (l, l <= r),
        Op::And | Op::Or | Op::Unless => (l, true),
    }
}

pub(super) fn eval_binary(cx: &mut Ctx<'_>, b: &BinaryExpr, steps: Steps) -> Result<Val, EvalError> {
    let op = Op::parse(&b.op.to_string())?;
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = cx.eval(&b.lhs, steps)?;
    let rhs = cx.eval(&b.rhs, steps)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            if op.is_comparison() && !return_bool {
                return Err(EvalError::BadData("comparisons between scalars must use BOOL modifier".into()));
            }
            Ok(Val::Scalar(
                l.iter()
                    .zip(&r)
                    .map(|(&a, &b)| {
                        let (v, keep) = apply(op, a, b);
                        if op.is_comparison() { if keep { 1.0 } else { 0.0 } } else { v }
                    })
                    .collect(),
            ))
        }
        (Val::Vector(v), Val::Scalar(s)) => Ok(Val::Vector(vector_scalar(op, v, &s, false, return_bool))),
        (Val::Scalar(s), Val::Vector(v)) => Ok(Val::Vector(vector_scalar(op, v, &s, true, return_bool))),
        (Val::Vector(l), Val::Vector(r)) => {
            let modifier = b.modifier.clone().unwrap_or_default_modifier(op);
            if op.is_set() {
                Ok(Val::Vector(set_op(op, l, r, &modifier, steps)))
            } else {
                Ok(Val::Vector(vector_vector(cx, op, l, r, &modifier, return_bool, steps)?))
            }
        }
        _ => Err(EvalError::BadData(format!(
            "binary expression must contain only scalar and instant vector types (operator {})",
            b.op
        ))),
    }
}

trait DefaultModifier {
    fn unwrap_or_default_modifier(self, op: Op) -> BinModifier;
}

impl DefaultModifier for Option<BinModifier> {
    fn unwrap_or_default_modifier(self, op: Op) -> BinModifier {
        self.unwrap_or_else(|| {
            let card = if op.is_set() {
                VectorMatchCardinality::ManyToMany
            } else {
                VectorMatchCardinality::OneToOne
            };
            BinModifier {
                card,
                matching: None,
                return_bool: false,
                fill_values: Default::default(),
            }
        })
    }
}

fn vector_scalar(op: Op, v: Vec<Sv>, s: &[f64], scalar_left: bool, return_bool: bool) -> Vec<Sv> {
    let drop = !op.is_comparison() || return_bool;
    v.into_iter()
        .filter_map(|mut series| {
            series.pts.retain_mut(|p| {
                let x = s[p.0 as usize];
                let (l, r) = if scalar_left { (x, p.1) } else { (p.1, x) };
                let (mut value, keep) = apply(op, l, r);
                if op.is_comparison() && scalar_left {
                    value = r;
                }
                if return_bool {
                    p.1 = if keep { 1.0 } else { 0.0 };
                    return true;
                }
                if keep {
                    p.1 = value;
                }
                keep
            });
            if drop {
                series.drop_name = true;
            }
            (!series.pts.is_empty()).then_some(series)
        })
        .collect()
}

/// The matching signature of a series: the `on` labels, or every label but
/// the `ignoring` ones and the name.
fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> String {
    let mut key = String::new();
    let mut add = |k: &str, v: &str| {
        key.push_str(k);
        key.push('\u{ff}');
        key.push_str(v);
        key.push('\u{fe}');
    };
    match matching {
        Some(LabelModifier::Include(on)) => {
            for (k, v) in labels {
                if on.labels.iter().any(|n| n == k) {
                    add(k, v);
                }
            }
        }
        Some(LabelModifier::Exclude(ign)) => {
            for (k, v) in labels {
                if !is_name_label(k) && !ign.labels.iter().any(|n| n == k) {
                    add(k, v);
                }
            }
        }
        None => {
            for (k, v) in labels {
                if !is_name_label(k) {
                    add(k, v);
                }
            }
        }
    }
    key
}

/// The signature of a series whose name is to be dropped does not include
/// it even when `on(__name__)` asks for it.
fn sig_of(s: &Sv, matching: &Option<LabelModifier>) -> String {
    if s.drop_name {
        signature(&super::eval::drop_name(&s.labels), matching)
    } else {
        signature(&s.labels, matching)
    }
}

fn set_op(op: Op, l: Vec<Sv>, r: Vec<Sv>, m: &BinModifier, steps: Steps) -> Vec<Sv> {
    let n = steps.len();
    let lsig: Vec<String> = l.iter().map(|s| sig_of(s, &m.matching)).collect();
    let rsig: Vec<String> = r.iter().map(|s| sig_of(s, &m.matching)).collect();
    // Per step, the signatures present on the right (and, for `or`, left).
    let sigs_at = |side: &[Sv], sigs: &[String]| -> Vec<HashSet<usize>> {
        // Map signature strings to small ids to keep the sets cheap.
        let _ = sigs;
        let mut out: Vec<HashSet<usize>> = vec![HashSet::new(); n];
        for (si, s) in side.iter().enumerate() {
            for &(i, _) in &s.pts {
                out[i as usize].insert(si);
            }
        }
        out
    };
    // Signature ids shared between sides.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let lid: Vec<usize> = lsig
        .iter()
        .map(|s| {
            let k = ids.len();
            *ids.entry(s.as_str()).or_insert(k)
        })
        .collect();
    let rid: Vec<usize> = rsig
        .iter()
        .map(|s| {
            let k = ids.len();
            *ids.entry(s.as_str()).or_insert(k)
        })
        .collect();
    match op {
        Op::And | Op::Unless => {
            let present = sigs_at(&r, &rsig);
            let present: Vec<HashSet<usize>> = present.into_iter().map(|set| set.into_iter().map(|si| rid[si]).collect()).collect();
            l.into_iter()
                .enumerate()
                .filter_map(|(si, mut s)| {
                    let id = lid[si];
                    s.pts.retain(|p| present[p.0 as usize].contains(&id) == (op == Op::And));
                    (!s.pts.is_empty()).then_some(s)
                })
                .collect()
        }
        _ => {
            let present = sigs_at(&l, &lsig);
            let present: Vec<HashSet<usize>> = present.into_iter().map(|set| set.into_iter().map(|si| lid[si]).collect()).collect();
            let mut out = l;
            for (si, mut s) in r.into_iter().enumerate() {
                let id = rid[si];
                s.pts.retain(|p| !present[p.0 as usize].contains(&id));
                if !s.pts.is_empty() {
                    out.push(s);
                }
            }
            out
        }
    }
}

/// The labels of a result of a vector-vector operation.
fn result_labels(op: Op, many: &Labels, one: &Labels, m: &BinModifier, return_bool: bool) -> (Labels, bool) {
    let mut l: Labels = many.clone();
    let drop = !op.is_comparison() || return_bool;
    if matches!(m.card, VectorMatchCardinality::OneToOne) {
        match &m.matching {
            Some(LabelModifier::Include(on)) => l.retain(|(k, _)| on.labels.iter().any(|n| n == k)),
            Some(LabelModifier::Exclude(ign)) => l.retain(|(k, _)| !ign.labels.iter().any(|n| n == k)),
            None => {}
        }
    }
    if let Some(include) = m.card.labels() {
        for name in &include.labels {
            l.retain(|(k, _)| k != name);
            if let Some(v) = get_label(one, name)
                && !v.is_empty()
            {
                l.push((name.clone(), v.to_string()));
            }
        }
        l.sort();
    }
    (l, drop)
}

fn labels_string(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

#[allow(clippy::too_many_arguments)]
fn vector_vector(
    cx: &mut Ctx<'_>,
    op: Op,
    l: Vec<Sv>,
    r: Vec<Sv>,
    m: &BinModifier,
    return_bool: bool,
    steps: Steps,
) -> Result<Vec<Sv>, EvalError> {
    let n = steps.len();
    // group_right: the right side is the "many" side.
    let swapped = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swapped { (&r, &l) } else { (&l, &r) };
    let many_sig: Vec<String> = many.iter().map(|s| sig_of(s, &m.matching)).collect();
    let one_sig: Vec<String> = one.iter().map(|s| sig_of(s, &m.matching)).collect();
    // Fast path: no fill, every signature unique on the "one" side (and on
    // the "many" side for one-to-one), so each many-side series has at most
    // one partner for all steps; walk the two point lists together.
    if m.fill_values.lhs.is_none() && m.fill_values.rhs.is_none() {
        let mut one_by_sig: HashMap<&str, usize> = HashMap::with_capacity(one.len());
        let mut unique = one_sig
            .iter()
            .enumerate()
            .all(|(i, sg)| one_by_sig.insert(sg.as_str(), i).is_none());
        if unique && matches!(m.card, VectorMatchCardinality::OneToOne) {
            let mut seen: HashSet<&str> = HashSet::with_capacity(many.len());
            unique = many_sig.iter().all(|sg| seen.insert(sg.as_str()));
        }
        if unique {
            let mut out = OutBuilder::new();
            for (mi, ms) in many.iter().enumerate() {
                let Some(&oi) = one_by_sig.get(many_sig[mi].as_str()) else {
                    continue;
                };
                let os = &one[oi];
                let mut slot = None;
                let (mut a, mut b) = (0usize, 0usize);
                while a < ms.pts.len() && b < os.pts.len() {
                    let (sa, mv) = ms.pts[a];
                    let (sb, ov) = os.pts[b];
                    if sa < sb {
                        a += 1;
                        continue;
                    }
                    if sb < sa {
                        b += 1;
                        continue;
                    }
                    a += 1;
                    b += 1;
                    let (lv, rv) = if swapped { (ov, mv) } else { (mv, ov) };
                    let Some(value) = combine(op, lv, rv, return_bool) else {
                        continue;
                    };
                    let s = *slot.get_or_insert_with(|| {
                        let (labels, drop) = result_labels(op, &ms.labels, &os.labels, m, return_bool);
                        out.slot(Arc::new(labels), drop || ms.drop_name)
                    });
                    if !out.push(s, sa, value) {
                        return Err(multiple_matches(one_to_one_card(m)));
                    }
                }
            }
            // Points of one output series may come from several pairs in
            // step order per pair only; keep them sorted.
            for s in &mut out.series {
                if !s.pts.windows(2).all(|w| w[0].0 < w[1].0) {
                    s.pts.sort_by_key(|p| p.0);
                    if s.pts.windows(2).any(|w| w[0].0 == w[1].0) {
                        return Err(multiple_matches(false));
                    }
                }
            }
            return Ok(out.series);
        }
    }
    let many_steps = by_step(many, n);
    let one_steps = by_step(one, n);
    // As in Prometheus, after group_right's swap fill_left fills the "many"
    // side and fill_right the "one" side.
    let fill_many = m.fill_values.lhs;
    let fill_one = m.fill_values.rhs;
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    let mut out = OutBuilder::new();
    // (many index or MAX, one index or MAX) → output slot.
    let mut slots: HashMap<(u32, u32), usize> = HashMap::new();
    let side_name = |right: bool| if right { "right" } else { "left" };
    for i in 0..n {
        if i % 256 == 0 {
            cx.check_deadline()?;
        }
        let mut one_map: HashMap<&str, (u32, f64)> = HashMap::with_capacity(one_steps[i].len());
        for &(si, v) in &one_steps[i] {
            let sig = one_sig[si as usize].as_str();
            if let Some(prev) = one_map.insert(sig, (si, v)) {
                let a = labels_string(&one[prev.0 as usize].labels);
                let b = labels_string(&one[si as usize].labels);
                return Err(EvalError::Execution(format!(
                    "found duplicate series for the match group {} on the {} hand-side of the operation: [{a}, {b}];many-to-many matching not allowed: matching labels must be unique on one side",
                    labels_string(&match_group(&one[si as usize].labels, &m.matching)),
                    side_name(!swapped),
                )));
            }
        }
        let mut matched_many: HashMap<&str, u32> = HashMap::new();
        let mut used_one: HashSet<&str> = HashSet::new();
        for &(mi, mv) in &many_steps[i] {
            let sig = many_sig[mi as usize].as_str();
            let (oi, ov) = match one_map.get(sig) {
                Some(&x) => x,
                None => match fill_one {
                    Some(f) => (u32::MAX, f),
                    None => continue,
                },
            };
            if oi != u32::MAX {
                used_one.insert(sig);
            }
            if one_to_one
                && oi != u32::MAX
                && let Some(prev) = matched_many.insert(sig, mi)
            {
                {
                    return Err(EvalError::Execution(format!(
                        "found duplicate series for the match group {} on the {} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                        labels_string(&match_group(&many[mi as usize].labels, &m.matching)),
                        side_name(swapped),
                        labels_string(&many[prev as usize].labels),
                        labels_string(&many[mi as usize].labels),
                    )));
                }
            }
            let (lv, rv) = if swapped { (ov, mv) } else { (mv, ov) };
            let Some(value) = combine(op, lv, rv, return_bool) else {
                continue;
            };
            let key = (mi, oi);
            let slot = match slots.get(&key) {
                Some(&s) => s,
                None => {
                    let empty = Vec::new();
                    let one_labels = if oi == u32::MAX { &empty } else { &one[oi as usize].labels };
                    let ms = &many[mi as usize];
                    let (labels, drop) = result_labels(op, &ms.labels, one_labels, m, return_bool);
                    let s = out.slot(Arc::new(labels), drop || ms.drop_name);
                    slots.insert(key, s);
                    s
                }
            };
            if !out.push(slot, i as u32, value) {
                return Err(multiple_matches(one_to_one));
            }
        }
        // The one side's unmatched samples, when the many side has a fill value.
        if let Some(f) = fill_many {
            for &(oi, ov) in &one_steps[i] {
                let sig = one_sig[oi as usize].as_str();
                if used_one.contains(sig) {
                    continue;
                }
                let (lv, rv) = if swapped { (ov, f) } else { (f, ov) };
                let Some(value) = combine(op, lv, rv, return_bool) else {
                    continue;
                };
                let key = (u32::MAX, oi);
                let slot = match slots.get(&key) {
                    Some(&s) => s,
                    None => {
                        // Only the one side is there: the result is its
                        // match group.
                        let os = &one[oi as usize];
                        let s = out.slot(Arc::new(match_group(&os.labels, &m.matching)), false);
                        slots.insert(key, s);
                        s
                    }
                };
                if !out.push(slot, i as u32, value) {
                    return Err(multiple_matches(false));
                }
            }
        }
    }
    Ok(out.series)
}

/// The name and the metadata labels that go with it (`__type__`,
/// `__unit__`) are not part of a matching signature.
fn is_name_label(k: &str) -> bool {
    k == "__name__" || k == "__type__" || k == "__unit__"
}

/// The result of `op` on two matched values, None when a comparison
/// without `bool` filters the pair out.
fn combine(op: Op, lv: f64, rv: f64, return_bool: bool) -> Option<f64> {
    let (value, keep) = apply(op, lv, rv);
    if return_bool {
        Some(if keep { 1.0 } else { 0.0 })
    } else {
        keep.then_some(value)
    }
}

/// Two results of a vector match with the same labels at one step.
fn multiple_matches(one_to_one: bool) -> EvalError {
    EvalError::Execution(if one_to_one {
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into()
    } else {
        "multiple matches for labels: grouping labels must ensure unique matches".into()
    })
}

fn one_to_one_card(m: &BinModifier) -> bool {
    matches!(m.card, VectorMatchCardinality::OneToOne)
}

fn match_group(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.iter().filter(|(k, _)| on.labels.iter().any(|n| n == k)).cloned().collect(),
        Some(LabelModifier::Exclude(ign)) => labels
            .iter()
            .filter(|(k, _)| !is_name_label(k) && !ign.labels.iter().any(|n| n == k))
            .cloned()
            .collect(),
        None => labels.iter().filter(|(k, _)| !is_name_label(k)).cloned().collect(),
    }
}
