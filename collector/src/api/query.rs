//! Expression queries: `query`, `query_range`, `query_exemplars`,
//! `format_query` and `parse_query`.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use promql_parser::parser::Expr;
use serde_json::{Value as Json, json};

use super::access::{Access, Scoped};
use super::{ApiError, AppState, Params, TRUNCATED, success};
use crate::promql::guard::{self, short};
use crate::promql::{Engine, EvalError, TOO_MANY_SAMPLES, Value};

/// Prometheus's cap on the points per series of a range query.
const MAX_POINTS: i64 = 11_000;

/// Parses a query (on the query thread: the parser recurses); a parse
/// error echoes at most a short prefix of what it quotes.
fn parse_expr(q: &str) -> Result<Expr, ApiError> {
    crate::promql::guard::parse(q).map_err(|e| ApiError::BadData(format!("invalid parameter \"query\": {}", short(&e))))
}

/// The caller's scope, as refusals are counted.
fn scope(access: &Access) -> String {
    access.scope().unwrap_or("").to_string()
}

/// The `query` parameter, checked before it reaches the parser: its length
/// (`max_query_length`) and an upper bound of its syntax tree's depth
/// (`max_query_depth`); a refusal is counted.
///
/// Also says whether the query is shallow (depth bound at most
/// [`guard::POOLED_DEPTH`]: nearly all), so that it may run on a pooled
/// query thread.
fn checked_query(st: &AppState, access: &Access, p: &Params) -> Result<(String, bool), ApiError> {
    let text = p.required("query")?;
    match guard::precheck_depth(&text, st.limits.load().max_query_length, st.limits.load().max_query_depth) {
        Ok(depth) => Ok((text, depth <= guard::POOLED_DEPTH)),
        Err(r) => {
            st.limit_metrics.rejected(r.limit(), &scope(access));
            Err(ApiError::BadData(format!("invalid parameter \"query\": {r}")))
        }
    }
}

/// Runs `f` (which parses, evaluates or prints, and drops the syntax tree)
/// on a query thread with a stack sized for `max_query_depth`, off the
/// async workers: a pooled one for a `shallow` query (see
/// [`checked_query`]), else one of its own.
async fn on_query_thread<T: Send + 'static>(
    st: &AppState,
    shallow: bool,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let depth = st.limits.load().max_query_depth;
    guard::spawn_query_job(
        depth,
        shallow,
        Box::new(move || {
            let _ = tx.send(f());
        }),
    )
    .map_err(|e| ApiError::Internal(format!("starting the query thread: {e}")))?;
    rx.await.map_err(|_| ApiError::Internal("the query thread failed".into()))?
}

/// An evaluation error as the API answers it; refusals by the sample and
/// time limits are counted.
fn eval_error(st: &AppState, commons: &str, e: EvalError) -> ApiError {
    match &e {
        EvalError::Execution(m) if m.starts_with(TOO_MANY_SAMPLES) => st.limit_metrics.rejected("query_max_samples", commons),
        EvalError::Timeout(_) => st.limit_metrics.rejected("query_timeout", commons),
        _ => {}
    }
    match ApiError::from(e) {
        ApiError::BadData(m) => ApiError::BadData(short_message(&m)),
        other => other,
    }
}

/// Bad-data messages of evaluation may quote the query (a regex): cut.
fn short_message(m: &str) -> String {
    if m.chars().count() > 200 { short(m) } else { m.to_string() }
}

/// The engine for one request: `timeout` (capped by the engine's own
/// limit, as `--query.timeout` caps it in Prometheus) and `lookback_delta`
/// (0 or absent: the configured one).
fn engine_for(st: &AppState, p: &Params) -> Result<Engine, ApiError> {
    let mut e = st.engine.clone();
    if let Some(ms) = p.duration("lookback_delta")?
        && ms > 0
    {
        e.lookback = Duration::from_millis(ms as u64);
    }
    if let Some(ms) = p.duration("timeout")? {
        e.timeout = e.timeout.min(Duration::from_millis(ms.max(0) as u64));
    }
    Ok(e)
}

/// Applies `limit` to a vector or matrix result (scalars and strings are
/// not affected); returns whether it cut anything.
fn truncate(v: &mut Value, limit: Option<usize>) -> bool {
    let Some(n) = limit else { return false };
    match v {
        Value::Vector(s) if s.len() > n => {
            s.truncate(n);
            true
        }
        Value::Matrix(s) if s.len() > n => {
            s.truncate(n);
            true
        }
        _ => false,
    }
}

fn answer(mut out: crate::promql::Output, limit: Option<usize>) -> Response {
    if truncate(&mut out.value, limit) {
        out.warnings.push(TRUNCATED.into());
    }
    let body = super::encode::query_body(&out.value, &out.warnings, &out.infos);
    axum::response::IntoResponse::into_response(([(axum::http::header::CONTENT_TYPE, "application/json")], body))
}

/// `GET|POST /api/v1/query`: `query`, `time`, `timeout`, `limit`,
/// `lookback_delta`.
pub async fn query(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let t = p.time_or_now("time")?;
    let limit = p.limit()?;
    let engine = engine_for(&st, &p)?;
    let (text, shallow) = checked_query(&st, &access, &p)?;
    let st2 = st.clone();
    let out = on_query_thread(&st, shallow, move || {
        let expr = parse_expr(&text)?;
        let commons = scope(&access);
        let out = engine
            .instant_with_text(&Scoped::new(st2.storage.as_ref(), &access), &expr, t, Some(&text))
            .map_err(|e| eval_error(&st2, &commons, e));
        drop(expr);
        out
    })
    .await?;
    Ok(answer(out, limit))
}

/// `GET|POST /api/v1/query_range`: `query`, `start`, `end`, `step`,
/// `timeout`, `limit`, `lookback_delta`.
pub async fn query_range(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let start = p.required_time("start")?;
    let end = p.required_time("end")?;
    if end < start {
        return Err(ApiError::BadData(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        ));
    }
    let step = p
        .duration("step")?
        .ok_or_else(|| ApiError::BadData("invalid parameter \"step\": missing".into()))?;
    if step <= 0 {
        return Err(ApiError::BadData(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
        ));
    }
    let limit = p.limit()?;
    let engine = engine_for(&st, &p)?;
    let (text, shallow) = checked_query(&st, &access, &p)?;
    let st2 = st.clone();
    let out = on_query_thread(&st, shallow, move || {
        let expr = parse_expr(&text)?;
        let commons = scope(&access);
        let db = Scoped::new(st2.storage.as_ref(), &access);
        let out = engine
            .range_with_text(&db, &expr, start, end, step, Some(&text))
            .map_err(|e| eval_error(&st2, &commons, e));
        drop(expr);
        out
    })
    .await?;
    Ok(answer(out, limit))
}

/// `GET|POST /api/v1/query_exemplars`: the parameters are checked as
/// Prometheus checks them; exemplars are not stored, so the answer is an
/// empty list.
pub async fn query_exemplars(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let start = p.time("start")?.unwrap_or(i64::MIN);
    let end = p.time("end")?.unwrap_or(i64::MAX);
    if end < start {
        return Err(ApiError::BadData("end timestamp must not be before start timestamp".into()));
    }
    let (text, shallow) = if p.get("query").is_some() {
        checked_query(&st, &access, &p)?
    } else {
        (String::new(), true)
    };
    on_query_thread(&st, shallow, move || parse_expr(&text).map(drop)).await?;
    Ok(success(json!([])))
}

/// `GET|POST /api/v1/format_query`: the query, prettified (on the query
/// thread: printing recurses, and its cost grows with size × depth).
pub async fn format_query(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let (text, shallow) = checked_query(&st, &access, &p)?;
    let pretty = on_query_thread(&st, shallow, move || Ok(parse_expr(&text)?.prettify())).await?;
    Ok(success(Json::String(pretty)))
}

/// `GET|POST /api/v1/parse_query`: the query's syntax tree in Prometheus's
/// JSON shape (as its UI's tree view reads it). The tree is built,
/// serialized and dropped on the query thread (all recursive); the answer
/// is its text.
pub async fn parse_query(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let (text, shallow) = checked_query(&st, &access, &p)?;
    let body = on_query_thread(&st, shallow, move || {
        let expr = parse_expr(&text)?;
        let mut tree = serde_json::to_value(&expr).map_err(|e| ApiError::Internal(format!("serializing the syntax tree: {e}")))?;
        drop(expr);
        add_name_matchers(&mut tree);
        let body = serde_json::to_vec(&json!({"status": "success", "data": tree}))
            .map_err(|e| ApiError::Internal(format!("serializing the syntax tree: {e}")))?;
        Ok(body)
    })
    .await?;
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )))
}

/// Prometheus lists a selector's metric name among its matchers
/// (`__name__="up"`); promql-parser keeps it apart.
fn add_name_matchers(v: &mut Json) {
    match v {
        Json::Object(o) => {
            let is_selector = matches!(o.get("type").and_then(Json::as_str), Some("vectorSelector" | "matrixSelector"));
            if is_selector
                && let Some(name) = o.get("name").and_then(Json::as_str).map(str::to_string)
                && let Some(Json::Array(ms)) = o.get_mut("matchers")
                && !ms.iter().any(|m| m.get("name").and_then(Json::as_str) == Some("__name__"))
            {
                ms.push(json!({"name": "__name__", "type": "=", "value": name}));
            }
            for (_, child) in o.iter_mut() {
                add_name_matchers(child);
            }
        }
        Json::Array(a) => a.iter_mut().for_each(add_name_matchers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::InstantSample;
    use std::sync::Arc;

    #[test]
    fn limit_truncates_vectors_and_matrices_only() {
        let s = |i: i64| InstantSample {
            labels: Arc::new(vec![("__name__".into(), format!("m{i}"))]),
            t: 0,
            v: 0.0,
        };
        let mut v = Value::Vector((0..3).map(s).collect());
        assert!(!truncate(&mut v, None));
        assert!(!truncate(&mut v, Some(3)));
        assert!(truncate(&mut v, Some(2)));
        assert!(matches!(&v, Value::Vector(x) if x.len() == 2));
        let mut sc = Value::Scalar(0, 1.0);
        assert!(!truncate(&mut sc, Some(0)));
        assert_eq!(TRUNCATED, "results truncated due to limit");
    }

    #[test]
    fn syntax_tree_in_prometheus_shape() {
        let expr = parse_expr(r#"rate(http_requests_total{job="api"}[5m] offset 1m)"#).expect("parse");
        let mut tree = serde_json::to_value(&expr).expect("json");
        add_name_matchers(&mut tree);
        assert_eq!(tree["type"], "call");
        assert_eq!(tree["func"]["name"], "rate");
        let arg = &tree["args"][0];
        assert_eq!(arg["type"], "matrixSelector");
        assert_eq!(arg["range"], 300_000);
        assert_eq!(arg["offset"], 60_000);
        assert_eq!(
            arg["matchers"],
            json!([{"name": "job", "type": "=", "value": "api"}, {"name": "__name__", "type": "=", "value": "http_requests_total"}])
        );
        let expr = parse_expr("sum by (job) (up) > 1").expect("parse");
        let tree = serde_json::to_value(&expr).expect("json");
        assert_eq!(tree["type"], "binaryExpr");
        assert_eq!(tree["lhs"]["type"], "aggregation");
        assert_eq!(tree["lhs"]["grouping"], json!(["job"]));
        assert_eq!(tree["rhs"], json!({"type": "numberLiteral", "val": "1"}));
    }

    #[test]
    fn format_query_prettifies() {
        let e = parse_expr("sum(rate(x[5m]))by(job)").expect("parse");
        assert_eq!(e.prettify(), "sum by (job) (rate(x[5m]))");
        assert!(matches!(parse_expr("sum("), Err(ApiError::BadData(m)) if m.starts_with("invalid parameter \"query\"")));
    }
}
