//! The evaluator: every node is evaluated over all steps of the query at
//! once (an instant query is a range query of one step), as Prometheus's
//! engine does. Selectors read storage once per query node, then look back or
//! slide a window per step; binary operators and aggregations work step by
//! step over their children's results; functions over range vectors slide a
//! window over each series.
//!
//! `__name__` removal is delayed (as with Prometheus's delayed name removal,
//! which its test scripts run with): a sample whose operation drops the
//! metric name keeps it, flagged, until the end of the query, so that
//! `label_replace` and friends still see it; then it is dropped and series
//! that became identical are a "vector cannot contain metrics with the same
//! labelset" error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use super::{EvalError, InstantSample, Output, Value, matchers_of, ms, system_time_ms};
use crate::tsdb::{Labels, LazySelection, Queryable, Series};

/// The steps of an evaluation: `start, start+step, …, end` (ms).
#[derive(Debug, Clone, Copy)]
pub(super) struct Steps {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Steps {
    pub fn len(&self) -> usize {
        ((self.end - self.start) / self.step + 1).max(0) as usize
    }
    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// A series of an instant-vector result over the steps: `pts` are
/// (step index, value), ascending.
#[derive(Debug, Clone)]
pub(super) struct Sv {
    pub labels: Arc<Labels>,
    /// `__name__` is to be dropped at the end of the query.
    pub drop_name: bool,
    pub pts: Vec<(u32, f64)>,
}

/// A series with timestamped samples (range vectors).
#[derive(Debug, Clone)]
pub(super) struct Ms {
    pub labels: Arc<Labels>,
    pub drop_name: bool,
    pub samples: Vec<(i64, f64)>,
}

/// A node's value over the steps.
#[derive(Debug)]
pub(super) enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    Vector(Vec<Sv>),
    /// Only at the top of an instant query (`x[5m]`, `x[5m:1m]`).
    Matrix(Vec<Ms>),
    Str(String),
}

/// Range data for functions over range vectors: the series and, per step,
/// the window's right edge; the window is `(te - range, te]`.
pub(super) struct RangeData<'a> {
    /// With `lazy`, only the labels: the samples are read one series at a
    /// time (see [`Ctx::range_input`]).
    pub series: Vec<Ms>,
    pub te: Vec<i64>,
    pub range: i64,
    /// The selection to read the series from, if not read yet.
    pub lazy: Option<Box<dyn LazySelection + 'a>>,
}

impl RangeData<'_> {
    /// The samples of series `s` in step `i`'s window (of read series).
    pub fn window(&self, s: usize, i: usize) -> &[(i64, f64)] {
        let samples = &self.series[s].samples;
        let te = self.te[i];
        let lo = samples.partition_point(|p| p.0 <= te - self.range);
        let hi = samples.partition_point(|p| p.0 <= te);
        &samples[lo..hi.max(lo)]
    }
}

pub(super) struct Ctx<'a> {
    pub db: &'a dyn Queryable,
    /// The query's text, for annotation positions.
    pub text: Option<&'a str>,
    pub lookback: i64,
    pub max_samples: usize,
    pub samples: usize,
    pub deadline: Instant,
    pub default_subquery_step: i64,
    /// The query's own start and end (for `@ start()`, `@ end()`).
    pub qstart: i64,
    pub qend: i64,
    pub qstep: i64,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

pub(super) fn exec(mut cx: Ctx<'_>, expr: &Expr, steps: Steps, instant: bool) -> Result<Output, EvalError> {
    let v = cx.eval(expr, steps)?;
    let value = match v {
        Val::Scalar(vals) => {
            if instant {
                Value::Scalar(steps.start, vals.first().copied().unwrap_or(f64::NAN))
            } else {
                let samples = vals.iter().enumerate().map(|(i, v)| (steps.ts(i), *v)).collect();
                Value::Matrix(vec![Series {
                    labels: Arc::new(Vec::new()),
                    samples,
                }])
            }
        }
        Val::Str(s) => Value::String(steps.start, s),
        Val::Matrix(m) => {
            let mut out: Vec<Series> = m
                .into_iter()
                .map(|s| Series {
                    labels: if s.drop_name { Arc::new(drop_name(&s.labels)) } else { s.labels },
                    samples: s.samples,
                })
                .collect();
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            for w in out.windows(2) {
                if w[0].labels == w[1].labels {
                    return Err(dup_labelset());
                }
            }
            Value::Matrix(out)
        }
        Val::Vector(vs) => {
            let vs = cleanup(vs)?;
            if instant {
                Value::Vector(
                    vs.into_iter()
                        .filter_map(|s| {
                            s.pts.first().map(|p| InstantSample {
                                labels: s.labels,
                                t: steps.start,
                                v: p.1,
                            })
                        })
                        .collect(),
                )
            } else {
                let mut out: Vec<Series> = vs
                    .into_iter()
                    .filter(|s| !s.pts.is_empty())
                    .map(|s| Series {
                        labels: s.labels,
                        samples: s.pts.iter().map(|(i, v)| (steps.ts(*i as usize), *v)).collect(),
                    })
                    .collect();
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Matrix(out)
            }
        }
    };
    Ok(Output {
        value,
        warnings: dedup_strings(cx.warnings),
        infos: dedup_strings(cx.infos),
    })
}

fn dedup_strings(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
    v
}

/// The refusal by `--query.max-samples` (Prometheus's text, then the
/// limit's name).
pub(super) fn too_many_samples(max: usize) -> EvalError {
    EvalError::Execution(format!("{TOO_MANY_SAMPLES} (limit query_max_samples: {max})"))
}

/// Prometheus's message for the sample limit.
pub const TOO_MANY_SAMPLES: &str = "query processing would load too many samples into memory in query execution";

/// Prometheus's message for the time limit.
pub const TIMED_OUT: &str = "query timed out in query execution";

pub(super) fn dup_labelset() -> EvalError {
    EvalError::Execution("vector cannot contain metrics with the same labelset".into())
}

/// Drops flagged names and merges series that became identical; two points
/// at one step are an error.
pub(super) fn cleanup(vs: Vec<Sv>) -> Result<Vec<Sv>, EvalError> {
    let mut out: Vec<Sv> = Vec::with_capacity(vs.len());
    let mut index: HashMap<Arc<Labels>, usize> = HashMap::new();
    for s in vs {
        if s.pts.is_empty() {
            continue;
        }
        let labels = if s.drop_name { Arc::new(drop_name(&s.labels)) } else { s.labels };
        match index.get(&labels) {
            Some(&i) => {
                let merged = &mut out[i].pts;
                let mut all = std::mem::take(merged);
                all.extend(s.pts);
                all.sort_by_key(|p| p.0);
                if all.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(dup_labelset());
                }
                *merged = all;
            }
            None => {
                index.insert(labels.clone(), out.len());
                out.push(Sv {
                    labels,
                    drop_name: false,
                    pts: s.pts,
                });
            }
        }
    }
    Ok(out)
}

/// Drops the metric name, and with it the `__type__` and `__unit__`
/// metadata labels that describe it.
pub(super) fn drop_name(l: &Labels) -> Labels {
    l.iter()
        .filter(|(k, _)| k != "__name__" && k != "__type__" && k != "__unit__")
        .cloned()
        .collect()
}

pub(super) fn get_label<'l>(l: &'l Labels, name: &str) -> Option<&'l str> {
    l.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => ms(*d),
        Some(Offset::Neg(d)) => -ms(*d),
        None => 0,
    }
}

impl<'a> Ctx<'a> {
    pub fn check_deadline(&self) -> Result<(), EvalError> {
        if Instant::now() > self.deadline {
            return Err(EvalError::Timeout(TIMED_OUT.into()));
        }
        Ok(())
    }

    /// " (line:col)" of `node` in the query text: where its canonical form
    /// first occurs (queries written canonically match exactly); empty if
    /// it cannot be found.
    fn position(&self, node: &Expr) -> String {
        let Some(text) = self.text else { return String::new() };
        let needle = node.to_string();
        let Some(at) = text.find(&needle) else { return String::new() };
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(" ({line}:{col})")
    }

    /// Adds a warning about `node`.
    pub fn warn(&mut self, msg: String, node: &Expr) {
        let p = self.position(node);
        self.warnings.push(format!("PromQL warning: {msg}{p}"));
    }

    /// Warns when a quantile parameter (one value per step) leaves [0, 1].
    pub fn warn_quantile(&mut self, q: &[f64], node: &Expr) {
        if let Some(bad) = q.iter().copied().find(|q| !(0.0..=1.0).contains(q)) {
            let msg = format!("quantile value should be between 0 and 1, got {}", super::funcs::fmt_float(bad));
            self.warn(msg, node);
        }
    }

    /// Adds an info annotation about `node`.
    pub fn info(&mut self, msg: String, node: &Expr) {
        let p = self.position(node);
        self.infos.push(format!("PromQL info: {msg}{p}"));
    }

    pub fn account(&mut self, n: usize) -> Result<(), EvalError> {
        self.samples = self.samples.saturating_add(n);
        if self.samples > self.max_samples {
            return Err(too_many_samples(self.max_samples));
        }
        Ok(())
    }

    /// Refuses before allocating `n` values (steps, or steps × series)
    /// that would not fit under the sample limit even on their own.
    pub fn fits(&self, n: usize) -> Result<(), EvalError> {
        if n > self.max_samples {
            return Err(too_many_samples(self.max_samples));
        }
        Ok(())
    }

    /// The reference time of each step for a node with `@` and `offset`.
    fn ref_times(&self, at: &Option<AtModifier>, offset: &Option<Offset>, steps: Steps) -> Vec<i64> {
        let off = offset_ms(offset);
        let fixed = match at {
            Some(AtModifier::At(t)) => Some(system_time_ms(*t)),
            Some(AtModifier::Start) => Some(self.qstart),
            Some(AtModifier::End) => Some(self.qend),
            None => None,
        };
        (0..steps.len()).map(|i| fixed.unwrap_or_else(|| steps.ts(i)) - off).collect()
    }

    fn select(&mut self, vs: &VectorSelector, mint: i64, maxt: i64) -> Result<Vec<Series>, EvalError> {
        self.select_with(vs, mint, maxt, false)
    }

    /// [`Ctx::select`]; `without_stale` drops the staleness markers (range
    /// functions ignore them).
    fn select_with(&mut self, vs: &VectorSelector, mint: i64, maxt: i64, without_stale: bool) -> Result<Vec<Series>, EvalError> {
        let mut out = Vec::new();
        let sets = matchers_of(vs)?;
        let n = sets.len();
        let q = self.db.querier(mint, maxt);
        for set in sets {
            if without_stale {
                out.extend(q.select_without_stale(&set)?);
            } else {
                out.extend(q.select(&set)?);
            }
        }
        if n > 1 {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.dedup_by(|a, b| a.labels == b.labels);
        }
        let total: usize = out.iter().map(|s| s.samples.len()).sum();
        self.account(total)?;
        Ok(out)
    }

    fn vector_selector(&mut self, vs: &VectorSelector, steps: Steps) -> Result<Vec<Sv>, EvalError> {
        self.vector_selector_with(vs, steps, false)
    }

    /// Instant vector selection per step; with `ts_values` the values are
    /// the samples' timestamps in seconds (for `timestamp()`).
    pub fn vector_selector_with(&mut self, vs: &VectorSelector, steps: Steps, ts_values: bool) -> Result<Vec<Sv>, EvalError> {
        let te = self.ref_times(&vs.at, &vs.offset, steps);
        let (Some(&lo), Some(&hi)) = (te.iter().min(), te.iter().max()) else {
            return Ok(Vec::new());
        };
        let series = self.select(vs, lo - self.lookback + 1, hi)?;
        let mut out = Vec::with_capacity(series.len());
        for (k, s) in series.into_iter().enumerate() {
            if k % 64 == 63 {
                self.check_deadline()?;
            }
            let mut pts = Vec::new();
            // Cursor over the samples; the reference times only move
            // forward (or stay, with `@`).
            let mut idx = 0usize;
            let mut prev = i64::MIN;
            for (i, &t) in te.iter().enumerate() {
                if t < prev {
                    idx = 0;
                }
                prev = t;
                while idx < s.samples.len() && s.samples[idx].0 <= t {
                    idx += 1;
                }
                if idx == 0 {
                    continue;
                }
                let (st, v) = s.samples[idx - 1];
                if st > t - self.lookback && !csoc_proto::is_stale_nan(v) {
                    pts.push((i as u32, if ts_values { st as f64 / 1000.0 } else { v }));
                }
                if i % 65_536 == 65_535 {
                    self.check_deadline()?;
                }
            }
            // Every step may hold a point though the series has few
            // samples: count the expansion.
            self.account(pts.len())?;
            if !pts.is_empty() {
                out.push(Sv {
                    labels: s.labels,
                    drop_name: false,
                    pts,
                });
            }
        }
        Ok(out)
    }

    /// [`Ctx::range_data`] for functions that go through `over_range`: a
    /// matrix selector over a store that reads lazily is not read here, but
    /// one series at a time by `over_range`'s workers (no query then holds
    /// every series' samples at once, and several threads read). The
    /// selected samples are counted against the sample limit as they are
    /// read. Instant queries read at once.
    pub fn range_input(&mut self, e: &Expr, steps: Steps) -> Result<RangeData<'a>, EvalError> {
        match e {
            Expr::Paren(p) => self.range_input(&p.expr, steps),
            // An instant query's windows hold a few samples a series: read
            // at once, in one read transaction begun after every head read,
            // rather than a statement (and its lock) per series as a lazy
            // reader must (see tsdb/querier.rs). Decided before the
            // matchers are built: a regex is compiled there.
            Expr::MatrixSelector(_) if steps.len() == 1 => self.range_data(e, steps),
            Expr::MatrixSelector(m) => {
                let range = ms(m.range);
                let te = self.ref_times(&m.vs.at, &m.vs.offset, steps);
                let (Some(&lo), Some(&hi)) = (te.iter().min(), te.iter().max()) else {
                    return self.range_data(e, steps);
                };
                // (Several matcher sets, or a store that reads only at once,
                // take the eager path, building the matchers again.)
                let mut sets = matchers_of(&m.vs)?;
                if sets.len() != 1 {
                    return self.range_data(e, steps);
                }
                let set = sets.remove(0);
                let db = self.db;
                let Some(lazy) = db.select_lazy(lo - range + 1, hi, &set, true)? else {
                    return self.range_data(e, steps);
                };
                let series = lazy
                    .labels()
                    .iter()
                    .map(|l| Ms {
                        labels: l.clone(),
                        drop_name: false,
                        samples: Vec::new(),
                    })
                    .collect();
                Ok(RangeData {
                    series,
                    te,
                    range,
                    lazy: Some(lazy),
                })
            }
            _ => self.range_data(e, steps),
        }
    }

    /// The data for a function over a range vector (a matrix selector or a
    /// subquery, possibly in parentheses).
    pub fn range_data(&mut self, e: &Expr, steps: Steps) -> Result<RangeData<'a>, EvalError> {
        match e {
            Expr::Paren(p) => self.range_data(&p.expr, steps),
            Expr::MatrixSelector(m) => {
                let range = ms(m.range);
                let te = self.ref_times(&m.vs.at, &m.vs.offset, steps);
                let (Some(&lo), Some(&hi)) = (te.iter().min(), te.iter().max()) else {
                    return Ok(RangeData {
                        series: Vec::new(),
                        te,
                        range,
                        lazy: None,
                    });
                };
                let series = self
                    .select_with(&m.vs, lo - range + 1, hi, true)?
                    .into_iter()
                    .map(|s| Ms {
                        labels: s.labels,
                        drop_name: false,
                        samples: s.samples,
                    })
                    .collect();
                Ok(RangeData {
                    series,
                    te,
                    range,
                    lazy: None,
                })
            }
            Expr::Subquery(sq) => self.subquery(sq, steps),
            other => Err(EvalError::BadData(format!(
                "expected a range vector (a selector with [range] or a subquery), got {}",
                type_name(other.value_type())
            ))),
        }
    }

    fn subquery(&mut self, sq: &SubqueryExpr, steps: Steps) -> Result<RangeData<'a>, EvalError> {
        let range = ms(sq.range);
        let step = sq.step.map(ms).unwrap_or(self.default_subquery_step);
        if step <= 0 {
            return Err(EvalError::BadData("subquery step must be positive".into()));
        }
        let te = self.ref_times(&sq.at, &sq.offset, steps);
        let (Some(&lo), Some(&hi)) = (te.iter().min(), te.iter().max()) else {
            return Ok(RangeData {
                series: Vec::new(),
                te,
                range,
                lazy: None,
            });
        };
        // Inner steps: the multiples of the step in (lo - range, hi].
        let first = lo - range;
        let mut start = first.div_euclid(step) * step;
        if start <= first {
            start += step;
        }
        if start > hi {
            return Ok(RangeData {
                series: Vec::new(),
                te,
                range,
                lazy: None,
            });
        }
        let end = hi.div_euclid(step) * step;
        let inner = Steps { start, end, step };
        // The inner evaluation holds at least one value per inner step:
        // counted before anything of that size is allocated.
        self.account(inner.len())?;
        let series = match self.eval(&sq.expr, inner)? {
            Val::Vector(vs) => vs
                .into_iter()
                .map(|s| Ms {
                    samples: s.pts.iter().map(|(i, v)| (inner.ts(*i as usize), *v)).collect(),
                    labels: s.labels,
                    drop_name: s.drop_name,
                })
                .collect(),
            Val::Scalar(vals) => vec![Ms {
                labels: Arc::new(Vec::new()),
                drop_name: false,
                samples: vals.iter().enumerate().map(|(i, v)| (inner.ts(i), *v)).collect(),
            }],
            _ => return Err(EvalError::BadData("subquery is only allowed on instant vector".into())),
        };
        Ok(RangeData {
            series,
            te,
            range,
            lazy: None,
        })
    }

    pub fn eval(&mut self, expr: &Expr, steps: Steps) -> Result<Val, EvalError> {
        self.check_deadline()?;
        // Every node may allocate a value per step.
        self.fits(steps.len())?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; steps.len()])),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, steps),
            Expr::Unary(u) => match self.eval(&u.expr, steps)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(vs) => Ok(Val::Vector(
                    vs.into_iter()
                        .map(|mut s| {
                            s.drop_name = true;
                            for p in &mut s.pts {
                                p.1 = -p.1;
                            }
                            s
                        })
                        .collect(),
                )),
                _ => Err(EvalError::BadData(
                    "unary expression only allowed on expressions of type scalar or instant vector".into(),
                )),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.vector_selector(vs, steps)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                if steps.len() != 1 {
                    return Err(EvalError::BadData(
                        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
                    ));
                }
                let rd = self.range_data(expr, steps)?;
                let mut out = Vec::with_capacity(rd.series.len());
                for (i, s) in rd.series.iter().enumerate() {
                    let w = rd.window(i, 0);
                    if !w.is_empty() {
                        out.push(Ms {
                            labels: s.labels.clone(),
                            drop_name: s.drop_name,
                            samples: w.to_vec(),
                        });
                    }
                }
                Ok(Val::Matrix(out))
            }
            Expr::Binary(b) => super::binop::eval_binary(self, b, steps),
            Expr::Aggregate(a) => super::aggr::eval_aggregate(self, a, steps),
            Expr::Call(c) => super::funcs::eval_call(self, c, steps),
            Expr::Extension(_) => Err(EvalError::BadData("extension expressions are not supported".into())),
        }
    }

    /// Evaluates a scalar-valued argument to one value per step.
    pub fn eval_scalar(&mut self, e: &Expr, steps: Steps) -> Result<Vec<f64>, EvalError> {
        match self.eval(e, steps)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(EvalError::BadData("expected a scalar".into())),
        }
    }

    /// Evaluates an instant-vector-valued argument.
    pub fn eval_vector(&mut self, e: &Expr, steps: Steps) -> Result<Vec<Sv>, EvalError> {
        match self.eval(e, steps)? {
            Val::Vector(v) => Ok(v),
            Val::Scalar(_) => Err(EvalError::BadData("expected an instant vector, got a scalar".into())),
            _ => Err(EvalError::BadData("expected an instant vector".into())),
        }
    }
}

pub(super) fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

/// Unpacks vectors into per-step lists of (series index, value).
pub(super) fn by_step(vs: &[Sv], n: usize) -> Vec<Vec<(u32, f64)>> {
    let mut out: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n];
    for (si, s) in vs.iter().enumerate() {
        for &(i, v) in &s.pts {
            out[i as usize].push((si as u32, v));
        }
    }
    out
}

/// Collects output series built step by step, keyed by labels.
pub(super) struct OutBuilder {
    pub series: Vec<Sv>,
    index: HashMap<Arc<Labels>, usize>,
}

impl OutBuilder {
    pub fn new() -> Self {
        OutBuilder {
            series: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The output series for `labels`, created on first use.
    pub fn slot(&mut self, labels: Arc<Labels>, drop_name: bool) -> usize {
        if let Some(&i) = self.index.get(&labels) {
            return i;
        }
        let i = self.series.len();
        self.index.insert(labels.clone(), i);
        self.series.push(Sv {
            labels,
            drop_name,
            pts: Vec::new(),
        });
        i
    }

    /// Adds a point; false if the series already has one at this step.
    pub fn push(&mut self, slot: usize, step: u32, v: f64) -> bool {
        let s = &mut self.series[slot];
        if let Some(last) = s.pts.last()
            && last.0 == step
        {
            return false;
        }
        s.pts.push((step, v));
        true
    }
}
