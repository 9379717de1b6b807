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
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use crate::tsdb::{Labels, Matcher, Series, Tsdb, TsdbError};

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

/// Where the engine reads series from: the storage, or anything that can
/// select series by matchers in a time range (tests, a commons-scoped view).
pub trait Queryable: Send + Sync {
    /// Series matching every matcher with their samples in `[mint, maxt]`
    /// (ms, inclusive, staleness markers included), sorted by labels;
    /// series without samples in range are omitted.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, TsdbError>;
}

impl Queryable for Tsdb {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, TsdbError> {
        self.querier(mint, maxt).select(matchers)
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
    let mut sets = vec![conv(&vs.matchers.matchers)?];
    for alt in &vs.matchers.or_matchers {
        sets.push(conv(alt)?);
    }
    Ok(sets)
}

impl Engine {
    /// Evaluates `expr` at time `t` (ms).
    pub fn instant(&self, db: &dyn Queryable, expr: &Expr, t: i64) -> Result<Output, EvalError> {
        Ok(Output { value: self.instant_v(db, expr, t)?, warnings: vec![], infos: vec![] })
    }

    fn instant_v(&self, db: &dyn Queryable, expr: &Expr, t: i64) -> Result<Value, EvalError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(t, n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(t, s.val.clone())),
            Expr::Paren(p) => self.instant_v(db, &p.expr, t),
            Expr::Unary(u) => match self.instant_v(db, &u.expr, t)? {
                Value::Scalar(t, v) => Ok(Value::Scalar(t, -v)),
                Value::Vector(vs) => Ok(Value::Vector(
                    vs.into_iter()
                        .map(|s| InstantSample {
                            labels: Arc::new(drop_name(&s.labels)),
                            t: s.t,
                            v: -s.v,
                        })
                        .collect(),
                )),
                _ => Err(EvalError::BadData("unary minus needs a scalar or an instant vector".into())),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.vector_selector(db, vs, t)?)),
            Expr::MatrixSelector(m) => {
                let te = self.effective_time(&m.vs, t);
                let range = ms(m.range);
                let mut out = Vec::new();
                for set in matchers_of(&m.vs)? {
                    for mut s in db.select(&set, te - range + 1, te)? {
                        s.samples.retain(|(_, v)| !csoc_proto::is_stale_nan(*v));
                        if !s.samples.is_empty() {
                            out.push(s);
                        }
                    }
                }
                dedup_series(&mut out);
                Ok(Value::Matrix(out))
            }
            other => Err(EvalError::BadData(format!(
                "not supported yet by csoc-collector's query engine: {} (selectors, offset, @ and literals are)",
                kind_of(other)
            ))),
        }
    }

    /// Evaluates `expr` at every step from `start` to `end` (ms, inclusive).
    pub fn range(&self, db: &dyn Queryable, expr: &Expr, start: i64, end: i64, step: i64) -> Result<Output, EvalError> {
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
        let mut series: std::collections::BTreeMap<Arc<Labels>, Vec<(i64, f64)>> = std::collections::BTreeMap::new();
        let mut t = start;
        while t <= end {
            match self.instant_v(db, expr, t)? {
                Value::Vector(v) => {
                    for s in v {
                        series.entry(s.labels).or_default().push((t, s.v));
                    }
                }
                Value::Scalar(_, v) => series.entry(Arc::new(Vec::new())).or_default().push((t, v)),
                Value::Matrix(_) | Value::String(..) => {
                    return Err(EvalError::BadData(
                        "invalid expression type for range query, must be Scalar or instant Vector".into(),
                    ));
                }
            }
            t += step;
        }
        Ok(Output {
            value: Value::Matrix(series.into_iter().map(|(labels, samples)| Series { labels, samples }).collect()),
            warnings: vec![],
            infos: vec![],
        })
    }

    fn effective_time(&self, vs: &VectorSelector, t: i64) -> i64 {
        let base = match &vs.at {
            Some(AtModifier::At(st)) => system_time_ms(*st),
            // start()/end() equal the evaluation time for instant queries.
            Some(AtModifier::Start) | Some(AtModifier::End) | None => t,
        };
        match &vs.offset {
            Some(Offset::Pos(d)) => base - ms(*d),
            Some(Offset::Neg(d)) => base + ms(*d),
            None => base,
        }
    }

    fn vector_selector(&self, db: &dyn Queryable, vs: &VectorSelector, t: i64) -> Result<Vec<InstantSample>, EvalError> {
        let te = self.effective_time(vs, t);
        let lb = ms(self.lookback);
        let mut out = Vec::new();
        for set in matchers_of(vs)? {
            for s in db.select(&set, te - lb + 1, te)? {
                // The latest sample in (te - lookback, te]; a staleness marker
                // there means the series is gone.
                if let Some(&(_, v)) = s.samples.last()
                    && !csoc_proto::is_stale_nan(v)
                {
                    out.push(InstantSample { labels: s.labels, t, v });
                }
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out.dedup_by(|a, b| a.labels == b.labels);
        Ok(out)
    }
}

fn dedup_series(v: &mut Vec<Series>) {
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    v.dedup_by(|a, b| a.labels == b.labels);
}

fn drop_name(l: &Labels) -> Labels {
    l.iter().filter(|(k, _)| k != "__name__").cloned().collect()
}

fn kind_of(e: &Expr) -> &'static str {
    match e {
        Expr::Aggregate(_) => "aggregations",
        Expr::Binary(_) => "binary operators",
        Expr::Subquery(_) => "subqueries",
        Expr::Call(_) => "function calls",
        _ => "this expression",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        e.instant(db, &promql_parser::parser::parse(q).expect("parse"), t).expect("eval").value
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

    #[tokio::test]
    async fn unsupported_is_an_error_not_a_wrong_answer() {
        let (_d, db) = db_with(&[("up", "a", 10_000, 1.0)]).await;
        let e = Engine::new(Duration::from_secs(300));
        let err = e
            .instant(&db, &promql_parser::parser::parse("sum(up)").expect("parse"), 10_000)
            .expect_err("unsupported");
        assert!(err.to_string().contains("aggregations"), "{err}");
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
