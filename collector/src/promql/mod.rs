//! PromQL evaluation over the storage's [`Querier`](crate::tsdb::Querier):
//! the AST from promql-parser in, a [`Value`] out; no HTTP, no JSON.
//!
//! This first evaluator covers selectors: instant vector selectors (with
//! Prometheus's lookback delta and staleness markers), range vector
//! selectors, `offset`, `@`, number and string literals, parentheses and
//! unary minus. Everything else (operators, aggregations, functions) is
//! refused with a clear error until the full engine lands.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
mod aggr;
mod binop;
mod eval;
mod funcs;
pub mod guard;

pub use eval::{TIMED_OUT, TOO_MANY_SAMPLES};

pub use funcs::fmt_float;
pub mod notation;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, VectorSelector};

use crate::tsdb::{Labels, Matcher, Querier, Queryable, Series, TsdbError};

/// A sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// The series' labels.
    pub labels: Arc<Labels>,
    /// Evaluation time, ms.
    pub t: i64,
    /// Value.
    pub v: f64,
}

/// The result of an evaluation.
#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar at a time.
    Scalar(i64, f64),
    /// A string at a time.
    String(i64, String),
    /// An instant vector.
    Vector(Vec<InstantSample>),
    /// A range vector / range query result.
    Matrix(Vec<Series>),
}

/// What a query returns: its value and the annotations (warnings and
/// infos, as Prometheus's API reports them).
#[derive(Debug, Clone)]
pub struct Output {
    /// The result.
    pub value: Value,
    /// Warnings (e.g. "metric might not be a counter").
    pub warnings: Vec<String>,
    /// Infos.
    pub infos: Vec<String>,
}

/// Evaluation errors, with Prometheus's error types.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The query is invalid or unsupported (`bad_data`, HTTP 400).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (`execution`, HTTP 422), including the sample limit.
    #[error("{0}")]
    Execution(String),
    /// The query ran past its time limit (`timeout`, HTTP 503).
    #[error("{0}")]
    Timeout(String),
    /// Storage failed (`internal`).
    #[error("storage: {0}")]
    Storage(#[from] TsdbError),
}

/// Series held in memory: for tests, and for rule unit tests
/// (`csoc-collector --test-rules`), which load their input series here.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    series: std::collections::BTreeMap<Labels, Vec<(i64, f64)>>,
}

impl MemStore {
    /// A store holding `series`.
    pub fn from_series(series: Vec<Series>) -> Self {
        let mut m = MemStore::default();
        for s in series {
            for (t, v) in &s.samples {
                m.add(&s.labels, *t, *v);
            }
        }
        m
    }

    /// Adds a sample (`labels` sorted by name); a sample at an existing
    /// timestamp replaces it.
    pub fn add(&mut self, labels: &Labels, t: i64, v: f64) {
        let samples = self.series.entry(labels.clone()).or_default();
        match samples.binary_search_by_key(&t, |p| p.0) {
            Ok(i) => samples[i].1 = v,
            Err(i) => samples.insert(i, (t, v)),
        }
    }
}

impl Queryable for MemStore {
    fn querier(&self, mint: i64, maxt: i64) -> Box<dyn Querier + '_> {
        Box::new(MemQuerier { store: self, mint, maxt })
    }
}

/// A store shared with writers (rule unit tests write rule results back
/// between evaluations): a querier holds the read lock while it lives.
impl Queryable for std::sync::RwLock<MemStore> {
    fn querier(&self, mint: i64, maxt: i64) -> Box<dyn Querier + '_> {
        Box::new(MemQuerier {
            store: self.read().unwrap_or_else(|p| p.into_inner()),
            mint,
            maxt,
        })
    }
}

/// A [`MemStore`] querier (`S`: a reference or a lock guard).
struct MemQuerier<S> {
    store: S,
    mint: i64,
    maxt: i64,
}

impl<S: std::ops::Deref<Target = MemStore>> Querier for MemQuerier<S> {
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<Series>, TsdbError> {
        let (mint, maxt) = (self.mint, self.maxt);
        Ok(self
            .store
            .series
            .iter()
            .filter(|(l, _)| matchers.iter().all(|m| m.matches(l)))
            .map(|(l, samples)| Series {
                labels: Arc::new(l.clone()),
                samples: samples.iter().copied().filter(|p| p.0 >= mint && p.0 <= maxt).collect(),
            })
            .filter(|s| !s.samples.is_empty())
            .collect())
    }

    fn series(&self, matchers: &[Matcher]) -> Result<Vec<Arc<Labels>>, TsdbError> {
        Ok(self.select(matchers)?.into_iter().map(|s| s.labels).collect())
    }
}

/// Evaluation settings.
#[derive(Debug, Clone)]
pub struct Engine {
    /// How far back an instant selector looks (Prometheus's lookback delta).
    pub lookback: Duration,
    /// At most this many samples held in memory by one query
    /// (Prometheus's `--query.max-samples`).
    pub max_samples: usize,
    /// Time limit of one query (`--query.timeout`).
    pub timeout: Duration,
    /// The step of subqueries that name none (Prometheus uses the global
    /// evaluation interval, 1m by default).
    pub default_subquery_step: Duration,
}

impl Engine {
    /// An engine with Prometheus's defaults and the given lookback delta.
    pub fn new(lookback: Duration) -> Self {
        Engine {
            lookback,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step: Duration::from_secs(60),
        }
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Converts a selector's matchers (and name) to storage matchers.
pub fn matchers_of(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, EvalError> {
    let conv = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, EvalError> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        for m in ms {
            out.push(match &m.op {
                PMatchOp::Equal => Matcher::equal(&m.name, &m.value),
                PMatchOp::NotEqual => Matcher {
                    name: m.name.clone(),
                    op: crate::tsdb::MatchOp::NotEqual,
                    value: m.value.clone(),
                },
                PMatchOp::Re(_) => Matcher::regex(&m.name, &m.value, false).map_err(|e| EvalError::BadData(e.to_string()))?,
                PMatchOp::NotRe(_) => Matcher::regex(&m.name, &m.value, true).map_err(|e| EvalError::BadData(e.to_string()))?,
            });
        }
        if let Some(name) = &vs.name
            && !out
                .iter()
                .any(|m| m.name == "__name__" && matches!(m.op, crate::tsdb::MatchOp::Equal))
        {
            out.push(Matcher::equal("__name__", name));
        }
        Ok(out)
    };
    // With `or` (`{a="x" or b="y"}`) the alternatives carry every matcher
    // and the plain list is empty: an empty set would match everything.
    if vs.matchers.or_matchers.is_empty() {
        return Ok(vec![conv(&vs.matchers.matchers)?]);
    }
    let mut sets = Vec::with_capacity(vs.matchers.or_matchers.len());
    for alt in &vs.matchers.or_matchers {
        let mut all = vs.matchers.matchers.clone();
        all.extend(alt.iter().cloned());
        sets.push(conv(&all)?);
    }
    Ok(sets)
}

impl Engine {
    fn ctx<'a>(&self, db: &'a dyn Queryable, start: i64, end: i64, step: i64, text: Option<&'a str>) -> eval::Ctx<'a> {
        eval::Ctx {
            db,
            text,
            lookback: ms(self.lookback).max(1),
            max_samples: self.max_samples,
            samples: 0,
            deadline: std::time::Instant::now() + self.timeout,
            default_subquery_step: ms(self.default_subquery_step).max(1),
            qstart: start,
            qend: end,
            qstep: step,
            warnings: Vec::new(),
            infos: Vec::new(),
        }
    }

    /// Evaluates `expr` at time `t` (ms).
    pub fn instant(&self, db: &dyn Queryable, expr: &Expr, t: i64) -> Result<Output, EvalError> {
        self.instant_with_text(db, expr, t, None)
    }

    /// [`Engine::instant`], with the query's text so that annotations say
    /// where in it they arise (`… (1:25)`, line:column as Prometheus).
    pub fn instant_with_text(&self, db: &dyn Queryable, expr: &Expr, t: i64, text: Option<&str>) -> Result<Output, EvalError> {
        let steps = eval::Steps { start: t, end: t, step: 1 };
        guard::ensure_query_stack(guard::DEFAULT_MAX_DEPTH, || {
            eval::exec(self.ctx(db, t, t, 0, text), expr, steps, true)
        })
        .map_err(EvalError::Execution)?
    }

    /// Evaluates `expr` at every step from `start` to `end` (ms, inclusive).
    pub fn range(&self, db: &dyn Queryable, expr: &Expr, start: i64, end: i64, step: i64) -> Result<Output, EvalError> {
        self.range_with_text(db, expr, start, end, step, None)
    }

    /// [`Engine::range`], with the query's text (see [`Engine::instant_with_text`]).
    pub fn range_with_text(
        &self,
        db: &dyn Queryable,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        text: Option<&str>,
    ) -> Result<Output, EvalError> {
        if step <= 0 {
            return Err(EvalError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if (end - start) / step > 11_000 {
            return Err(EvalError::BadData(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        match expr.value_type() {
            ValueType::Vector | ValueType::Scalar => {}
            other => {
                return Err(EvalError::BadData(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    eval::type_name(other)
                )));
            }
        }
        let steps = eval::Steps { start, end, step };
        guard::ensure_query_stack(guard::DEFAULT_MAX_DEPTH, || {
            eval::exec(self.ctx(db, start, end, step, text), expr, steps, false)
        })
        .map_err(EvalError::Execution)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::Tsdb;
    use prometheus_client::registry::Registry;

    async fn db_with(samples: &[(&str, &str, i64, f64)]) -> (tempfile::TempDir, Tsdb) {
        let d = tempfile::tempdir().expect("tempdir");
        let db = Tsdb::open(d.path(), &crate::tsdb::TsdbOptions::default(), &mut Registry::default()).expect("open");
        let mut a = db.appender();
        for (name, job, t, v) in samples {
            let l = vec![("__name__".to_string(), name.to_string()), ("job".to_string(), job.to_string())];
            a.append(Arc::new(l), *t, *v);
        }
        a.commit().await.expect("commit");
        (d, db)
    }

    fn eval(db: &Tsdb, q: &str, t: i64) -> Value {
        let e = Engine::new(Duration::from_secs(300));
        e.instant(db, &promql_parser::parser::parse(q).expect("parse"), t)
            .expect("eval")
            .value
    }

    /// Functions over range vectors read the storage lazily, one series at
    /// a time and on several threads; their answers, annotations and sample
    /// limit are those of the same data read at once (a `MemStore`): with
    /// chunks on disk and in the head, counter resets, staleness markers, a
    /// series without samples in range and a gauge under `rate` (whose info
    /// annotation is only for series with samples).
    #[tokio::test]
    async fn lazily_read_range_functions_answer_as_an_eager_store() {
        let stale = f64::from_bits(csoc_proto::STALE_NAN_BITS);
        let d = tempfile::tempdir().expect("tempdir");
        let db = Tsdb::open(d.path(), &crate::tsdb::TsdbOptions::default(), &mut Registry::default()).expect("open");
        let mut mem = MemStore::default();
        // 40 counters and 40 gauges x 2,000 samples at 15 s: enough work
        // for over_range to split; the first half is flushed to disk.
        let (n, step) = (2_000i64, 15_000i64);
        let mut sample = |labels: &Arc<Labels>, t: i64, v: f64, a: &mut crate::tsdb::Appender| {
            a.append(labels.clone(), t, v);
            mem.add(labels, t, v);
        };
        for half in 0..2 {
            let mut a = db.appender();
            for k in 0..40 {
                let l = |name: &str| -> Arc<Labels> { Arc::new(vec![("__name__".into(), name.into()), ("k".into(), format!("{k:02}"))]) };
                let (c, g) = (l("c_total"), l("g"));
                for r in (half * n / 2)..((half + 1) * n / 2) {
                    let t = r * step + k;
                    // A reset every 700 rounds; a staleness marker in some.
                    let v = if k % 7 == 3 && r % 333 == 5 {
                        stale
                    } else {
                        ((r % 700) * (k + 1)) as f64 * 1.5
                    };
                    sample(&c, t, v, &mut a);
                    sample(&g, t, ((r * 31 + k) % 97) as f64 / 4.0, &mut a);
                }
            }
            a.commit().await.expect("commit");
            if half == 0 {
                db.flush().await.expect("flush");
            }
        }
        // A series with samples only long before the queried range.
        let mut a = db.appender();
        let old: Arc<Labels> = Arc::new(vec![("__name__".into(), "c_total".into()), ("k".into(), "zz".into())]);
        sample(&old, -3_600_000, 1.0, &mut a);
        a.commit().await.expect("commit");
        let e = Engine::new(Duration::from_secs(300));
        let (start, end) = (600_000, n * step);
        for q in [
            "rate(c_total[5m])",
            "increase(c_total[1h])",
            "irate(c_total[5m])",
            "resets(c_total[10m])",
            "max_over_time(g[10m])",
            "avg_over_time(g[10m])",
            "quantile_over_time(0.9, g[15m])",
            "rate(g[5m])",
            "sum by (k) (rate({__name__=~\"c_total|g\"}[5m]))",
        ] {
            let expr = promql_parser::parser::parse(q).expect("parse");
            let got = e.range(&db, &expr, start, end, 60_000).expect("eval");
            let want = e.range(&mem, &expr, start, end, 60_000).expect("eval");
            assert_eq!(format!("{:?}", got.value), format!("{:?}", want.value), "{q}");
            assert_eq!(got.infos, want.infos, "{q}");
            assert!(matches!(&got.value, Value::Matrix(m) if m.len() >= 40), "{q}");
        }
        // The sample limit: refused the same way.
        let small = Engine {
            max_samples: 50_000,
            ..Engine::new(Duration::from_secs(300))
        };
        let expr = promql_parser::parser::parse("rate(c_total[5m])").expect("parse");
        let got = small.range(&db, &expr, start, end, 60_000).map(|_| ()).map_err(|e| e.to_string());
        let want = small.range(&mem, &expr, start, end, 60_000).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(got, want);
        assert!(got.is_err());
        db.close();
    }

    #[tokio::test]
    async fn lookback_staleness_offset() {
        let stale = f64::from_bits(csoc_proto::STALE_NAN_BITS);
        let (_d, db) = db_with(&[
            ("up", "a", 10_000, 1.0),
            ("up", "a", 20_000, 2.0),
            ("up", "b", 10_000, 5.0),
            ("up", "b", 20_000, stale),
        ])
        .await;
        let Value::Vector(v) = eval(&db, "up", 30_000) else {
            panic!("vector")
        };
        assert_eq!(v.len(), 1, "b is stale");
        assert_eq!((v[0].t, v[0].v), (30_000, 2.0));
        let Value::Vector(v) = eval(&db, "up", 15_000) else {
            panic!("vector")
        };
        assert_eq!(v.len(), 2);
        let Value::Vector(v) = eval(&db, r#"up{job=~"a|c"} offset 10s"#, 25_000) else {
            panic!("vector")
        };
        assert_eq!(v[0].v, 1.0);
        // Beyond the lookback delta nothing is returned.
        let Value::Vector(v) = eval(&db, "up", 20_000 + 300_000) else {
            panic!("vector")
        };
        assert!(v.is_empty());
        let Value::Vector(v) = eval(&db, "up @ 15", 1_000_000) else {
            panic!("vector")
        };
        assert_eq!(v.len(), 2);
        let Value::Matrix(m) = eval(&db, r#"up{job="a"}[1m]"#, 30_000) else {
            panic!("matrix")
        };
        assert_eq!(m[0].samples, vec![(10_000, 1.0), (20_000, 2.0)]);
        let Value::Vector(v) = eval(&db, "-up", 30_000) else {
            panic!("vector")
        };
        assert_eq!(v[0].v, -2.0);
        assert!(!v[0].labels.iter().any(|(k, _)| k == "__name__"));
    }

    fn vec_of(v: Value) -> Vec<(String, f64)> {
        let Value::Vector(v) = v else { panic!("vector, got {v:?}") };
        let mut out: Vec<(String, f64)> = v
            .into_iter()
            .map(|s| (s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","), s.v))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[tokio::test]
    async fn operators_aggregations_and_rates() {
        // Two counters growing 1/s and 2/s, scraped every 15 s for 10 minutes.
        let mut samples = Vec::new();
        for i in 0..=40i64 {
            samples.push(("req_total", "a", i * 15_000, i as f64 * 15.0));
            samples.push(("req_total", "b", i * 15_000, i as f64 * 30.0));
        }
        let (_d, db) = db_with(&samples).await;
        let t = 600_000;
        let r = vec_of(eval(&db, "rate(req_total[5m])", t));
        assert_eq!(r.len(), 2);
        assert!((r[0].1 - 1.0).abs() < 1e-9 && (r[1].1 - 2.0).abs() < 1e-9, "{r:?}");
        assert!(!r[0].0.contains("__name__"), "rate drops the name: {r:?}");
        let r = vec_of(eval(&db, "sum(rate(req_total[5m]))", t));
        assert_eq!(r.len(), 1);
        assert!((r[0].1 - 3.0).abs() < 1e-9);
        let r = vec_of(eval(&db, r#"req_total{job="b"} / ignoring(job) group_left req_total{job="a"}"#, t));
        assert_eq!(r, vec![("job=b".to_string(), 2.0)], "many side's labels, name dropped");
        let r = vec_of(eval(&db, r#"req_total{job="b"} / on() req_total{job="a"}"#, t));
        assert_eq!(r, vec![(String::new(), 2.0)]);
        let r = vec_of(eval(&db, "req_total > 700", t));
        assert_eq!(r, vec![("__name__=req_total,job=b".into(), 1200.0)]);
        let r = vec_of(eval(&db, "topk(1, req_total)", t));
        assert_eq!(r[0].1, 1200.0);
        let Value::Scalar(_, v) = eval(&db, "scalar(count(req_total)) * 2", t) else {
            panic!("scalar")
        };
        assert_eq!(v, 4.0);
        let r = vec_of(eval(&db, "max_over_time(req_total[1m:15s])", t));
        assert_eq!(r[0].1, 600.0);
        let r = vec_of(eval(&db, r#"label_replace(req_total, "x", "$1", "job", "(.)")"#, t));
        assert!(r[0].0.contains("x=a"), "{r:?}");
    }

    #[test]
    fn sliding_max_min_and_rate_resets_match_a_plain_walk() {
        // A noisy counter with resets, gaps and NaNs.
        let mut x = 7u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 33
        };
        let mut samples = Vec::new();
        let mut c = 0.0;
        let mut t = 0i64;
        for _ in 0..2000 {
            t += 5_000 + (next() % 20_000) as i64;
            c = if next() % 50 == 0 {
                (next() % 10) as f64
            } else {
                c + (next() % 100) as f64
            };
            samples.push((t, if next() % 97 == 0 { f64::NAN } else { c }));
        }
        let labels = Arc::new(vec![("__name__".to_string(), "x_total".to_string())]);
        let db = MemStore::from_series(vec![Series {
            labels,
            samples: samples.clone(),
        }]);
        let e = Engine::new(Duration::from_secs(300));
        let range = 420_000i64;
        let (start, end, step) = (range, t, 60_000);
        for (q, f) in [
            ("max_over_time(x_total[7m])", 0),
            ("min_over_time(x_total[7m])", 1),
            ("increase(x_total[7m])", 2),
        ] {
            let Value::Matrix(m) = e
                .range(&db, &promql_parser::parser::parse(q).expect("parse"), start, end, step)
                .expect("eval")
                .value
            else {
                panic!("matrix")
            };
            let got: std::collections::HashMap<i64, f64> = m.first().map(|s| s.samples.iter().copied().collect()).unwrap_or_default();
            let mut ts = start;
            while ts <= end {
                let w: Vec<(i64, f64)> = samples.iter().copied().filter(|p| p.0 > ts - range && p.0 <= ts).collect();
                let want = match f {
                    0 | 1 => w.first().map(|first| {
                        w.iter().fold(first.1, |acc, p| {
                            let better = if f == 0 { p.1 > acc } else { p.1 < acc };
                            if better || acc.is_nan() { p.1 } else { acc }
                        })
                    }),
                    // The plain walk over the window (no reset index).
                    _ => funcs::extrapolated_rate(
                        &funcs::Win {
                            samples: &w,
                            all: &w,
                            range_start: ts - range,
                            range_end: ts,
                            range_secs: range as f64 / 1000.0,
                            ts,
                            step: 0,
                            series: 0,
                            offset: 0,
                        },
                        None,
                        true,
                        false,
                    ),
                };
                match (want, got.get(&ts)) {
                    (None, None) => {}
                    (Some(a), Some(&b)) => assert!(a == b || (a.is_nan() && b.is_nan()), "{q} at {ts}: want {a}, got {b}"),
                    (a, b) => panic!("{q} at {ts}: want {a:?}, got {b:?}"),
                }
                ts += step;
            }
        }
    }

    #[test]
    fn parallel_windows_equal_series_by_series() {
        // Enough work to split over the cores: 60 series x 6000 samples.
        let series: Vec<Series> = (0..60)
            .map(|k| Series {
                labels: Arc::new(vec![
                    ("__name__".to_string(), "c_total".to_string()),
                    ("i".to_string(), format!("{k:02}")),
                ]),
                samples: (0..6000i64).map(|j| (j * 15_000, ((j * (k + 1)) % 977) as f64)).collect(),
            })
            .collect();
        let db = MemStore::from_series(series);
        let e = Engine::new(Duration::from_secs(300));
        let (start, end, step) = (600_000, 6000 * 15_000, 60_000);
        let run = |q: &str| {
            let Value::Matrix(m) = e
                .range(&db, &promql_parser::parser::parse(q).expect("parse"), start, end, step)
                .expect("eval")
                .value
            else {
                panic!("matrix")
            };
            m
        };
        for f in ["rate", "max_over_time"] {
            let all = run(&format!("{f}(c_total[5m])"));
            assert_eq!(all.len(), 60);
            for (k, s) in all.iter().enumerate() {
                let one = run(&format!("{f}(c_total{{i=\"{k:02}\"}}[5m])"));
                assert_eq!(one.len(), 1);
                assert_eq!(one[0].labels, s.labels);
                assert_eq!(one[0].samples.len(), s.samples.len(), "{f} series {k}");
                for (a, b) in one[0].samples.iter().zip(&s.samples) {
                    assert!(
                        a.0 == b.0 && (a.1 == b.1 || (a.1.is_nan() && b.1.is_nan())),
                        "{f} series {k}: {a:?} vs {b:?}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn errors_are_typed() {
        let (_d, db) = db_with(&[("up", "a", 10_000, 1.0), ("up", "b", 10_000, 2.0)]).await;
        let e = Engine::new(Duration::from_secs(300));
        let err = e
            .instant(&db, &promql_parser::parser::parse("up + on() up").expect("parse"), 10_000)
            .expect_err("many-to-many");
        assert!(matches!(err, EvalError::Execution(_)), "{err:?}");
        let err = e
            .range(&db, &promql_parser::parser::parse("up[5m]").expect("parse"), 0, 10_000, 1_000)
            .expect_err("range vector");
        assert!(matches!(err, EvalError::BadData(_)), "{err:?}");
        let mut small = Engine::new(Duration::from_secs(300));
        small.max_samples = 1;
        let err = small
            .instant(&db, &promql_parser::parser::parse("up").expect("parse"), 10_000)
            .expect_err("too many samples");
        assert!(err.to_string().contains("too many samples"), "{err}");
    }

    #[tokio::test]
    async fn range_query_steps() {
        let (_d, db) = db_with(&[("up", "a", 0, 1.0), ("up", "a", 60_000, 2.0)]).await;
        let e = Engine::new(Duration::from_secs(300));
        let Value::Matrix(m) = e
            .range(&db, &promql_parser::parser::parse("up").expect("parse"), 0, 120_000, 30_000)
            .expect("eval")
            .value
        else {
            panic!("matrix")
        };
        assert_eq!(
            m[0].samples,
            vec![(0, 1.0), (30_000, 1.0), (60_000, 2.0), (90_000, 2.0), (120_000, 2.0)]
        );
    }
}
