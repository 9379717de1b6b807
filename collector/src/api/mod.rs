//! The HTTP API: Prometheus's `/api/v1` (same parameters, GET and POST form,
//! same JSON shapes and error types), `/metrics`, `/-/healthy`, `/-/ready`.
//! This module only translates HTTP; evaluation is in `promql`, data in
//! `tsdb`.

mod params;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde_json::{Value as Json, json};

use crate::metrics::HttpMetrics;
use crate::promql::{Engine, EvalError, Value};
use crate::tsdb::{Labels, Matcher, Tsdb};
pub use params::Params;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub tsdb: Tsdb,
    /// Query engine settings.
    pub engine: Engine,
    /// Registry rendered on /metrics.
    pub registry: Arc<Registry>,
    /// HTTP metrics.
    pub metrics: HttpMetrics,
    /// Set once start-up is complete.
    pub ready: Arc<AtomicBool>,
    /// Whether the admin endpoints are enabled (`--web.enable-admin-api`).
    pub admin_enabled: bool,
}

/// Prometheus's API error types, mapped to status codes in one place.
#[derive(Debug)]
pub enum ApiError {
    /// 400 bad_data.
    BadData(String),
    /// 422 execution.
    Execution(String),
    /// 500 internal.
    Internal(String),
    /// 404 not_found.
    NotFound(String),
    /// 503 unavailable.
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, typ, msg) = match self {
            ApiError::BadData(m) => (StatusCode::BAD_REQUEST, "bad_data", m),
            ApiError::Execution(m) => (StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
        };
        (code, axum::Json(json!({"status": "error", "errorType": typ, "error": msg}))).into_response()
    }
}

impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> Self {
        match e {
            EvalError::BadData(m) => ApiError::BadData(m),
            EvalError::Execution(m) => ApiError::Execution(m),
            EvalError::Timeout(m) => ApiError::Unavailable(m),
            EvalError::Storage(e) => ApiError::Internal(e.to_string()),
        }
    }
}

fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// A success response with the query's annotations, as Prometheus sends
/// them (`warnings` and `infos` only when there are any).
fn success_with_warnings(data: Json, out: &crate::promql::Output) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("status".into(), json!("success"));
    body.insert("data".into(), data);
    if !out.warnings.is_empty() {
        body.insert("warnings".into(), json!(out.warnings));
    }
    if !out.infos.is_empty() {
        body.insert("infos".into(), json!(out.infos));
    }
    axum::Json(Json::Object(body)).into_response()
}

/// Formats a sample value as Prometheus does (Go's 'f', -1 formatting).
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn fmt_ts(t: i64) -> Json {
    // Seconds with millisecond precision, as a JSON number.
    let secs = t as f64 / 1000.0;
    serde_json::Number::from_f64(secs).map(Json::Number).unwrap_or(Json::Null)
}

fn labels_json(l: &Labels) -> Json {
    let mut m = serde_json::Map::new();
    for (k, v) in l {
        m.insert(k.clone(), Json::String(v.clone()));
    }
    Json::Object(m)
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Scalar(t, v) => json!({"resultType": "scalar", "result": [fmt_ts(*t), fmt_value(*v)]}),
        Value::String(t, s) => json!({"resultType": "string", "result": [fmt_ts(*t), s]}),
        Value::Vector(vs) => json!({
            "resultType": "vector",
            "result": vs.iter().map(|s| json!({"metric": labels_json(&s.labels), "value": [fmt_ts(s.t), fmt_value(s.v)]})).collect::<Vec<_>>(),
        }),
        Value::Matrix(ms) => json!({
            "resultType": "matrix",
            "result": ms.iter().map(|s| json!({
                "metric": labels_json(&s.labels),
                "values": s.samples.iter().map(|(t, v)| json!([fmt_ts(*t), fmt_value(*v)])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("query task failed: {e}")))?
}

fn parse_expr(q: &str) -> Result<promql_parser::parser::Expr, ApiError> {
    promql_parser::parser::parse(q).map_err(|e| ApiError::BadData(format!("invalid parameter \"query\": {e}")))
}

async fn query(State(st): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let q = p.required("query")?;
    let t = p.time_or_now("time")?;
    let expr = parse_expr(&q)?;
    let out = blocking(move || Ok(st.engine.instant(&st.tsdb, &expr, t)?)).await?;
    Ok(success_with_warnings(value_json(&out.value), &out))
}

async fn query_range(State(st): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let q = p.required("query")?;
    let start = p
        .time("start")?
        .ok_or_else(|| ApiError::BadData("invalid parameter \"start\": missing".into()))?;
    let end = p
        .time("end")?
        .ok_or_else(|| ApiError::BadData("invalid parameter \"end\": missing".into()))?;
    if end < start {
        return Err(ApiError::BadData(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        ));
    }
    let step = p
        .duration("step")?
        .ok_or_else(|| ApiError::BadData("invalid parameter \"step\": missing".into()))?;
    let expr = parse_expr(&q)?;
    let out = blocking(move || Ok(st.engine.range(&st.tsdb, &expr, start, end, step)?)).await?;
    Ok(success_with_warnings(value_json(&out.value), &out))
}

/// The `match[]` selectors of a request as matcher sets.
fn match_sets(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut sets = Vec::new();
    for m in p.all("match[]") {
        let expr = promql_parser::parser::parse(m).map_err(|e| ApiError::BadData(format!("invalid parameter \"match[]\": {e}")))?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(ApiError::BadData(format!(
                "invalid parameter \"match[]\": {m:?} is not a series selector"
            )));
        };
        sets.extend(crate::promql::matchers_of(&vs)?);
    }
    Ok(sets)
}

async fn series(State(st): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let sets = match_sets(&p)?;
    if sets.is_empty() {
        return Err(ApiError::BadData("no match[] parameter provided".into()));
    }
    let limit = p.limit()?;
    let start = p.time("start")?.unwrap_or(i64::MIN);
    let end = p.time("end")?.unwrap_or(i64::MAX);
    let out = blocking(move || {
        let q = st.tsdb.querier(start, end);
        let mut all: Vec<Arc<Labels>> = Vec::new();
        for set in &sets {
            if start == i64::MIN && end == i64::MAX {
                all.extend(q.select_labels(set));
            } else {
                all.extend(
                    q.select(set)
                        .map_err(|e| ApiError::Internal(e.to_string()))?
                        .into_iter()
                        .map(|s| s.labels),
                );
            }
        }
        all.sort();
        all.dedup();
        Ok(all)
    })
    .await?;
    let n = limit.unwrap_or(usize::MAX).min(out.len());
    Ok(success(Json::Array(out[..n].iter().map(|l| labels_json(l)).collect())))
}

async fn labels(State(st): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let sets = match_sets(&p)?;
    let limit = p.limit()?;
    let mut names = if sets.is_empty() {
        st.tsdb.label_names()
    } else {
        let q = st.tsdb.querier(i64::MIN, i64::MAX);
        let mut n: Vec<String> = sets
            .iter()
            .flat_map(|s| q.select_labels(s))
            .flat_map(|l| l.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())
            .collect();
        n.sort();
        n.dedup();
        n
    };
    names.truncate(limit.unwrap_or(usize::MAX));
    Ok(success(json!(names)))
}

async fn label_values(State(st): State<AppState>, Path(name): Path<String>, p: Params) -> Result<Response, ApiError> {
    if !(name == "__name__" || csoc_agent::config::valid_label_name(&name)) {
        return Err(ApiError::BadData(format!("invalid label name: {name:?}")));
    }
    let sets = match_sets(&p)?;
    let limit = p.limit()?;
    let mut values = if sets.is_empty() {
        st.tsdb.label_values(&name)
    } else {
        let q = st.tsdb.querier(i64::MIN, i64::MAX);
        let mut v: Vec<String> = sets
            .iter()
            .flat_map(|s| q.select_labels(s))
            .filter_map(|l| l.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    values.truncate(limit.unwrap_or(usize::MAX));
    Ok(success(json!(values)))
}

async fn flush(State(st): State<AppState>) -> Result<Response, ApiError> {
    if !st.admin_enabled {
        return Err(ApiError::Unavailable(
            "admin APIs disabled (start with --web.enable-admin-api)".into(),
        ));
    }
    let stats = st.tsdb.flush().await.map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(success(serde_json::to_value(stats).unwrap_or(Json::Null)))
}

async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

async fn metrics(State(st): State<AppState>) -> Response {
    csoc_agent::http::metrics_response(&st.registry)
}

async fn ready(State(st): State<AppState>) -> Response {
    if st.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "csoc-collector is ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "csoc-collector is starting\n").into_response()
    }
}

async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .observe(&handler, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// The router of the HTTP API; `extra` (routes with their own state, such
/// as the remote-write receiver) is merged in and shares the request
/// metrics.
pub fn router(state: AppState, extra: Router) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/admin/tsdb/flush", axum::routing::post(flush).put(flush))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "csoc-collector is healthy\n" }))
        .route("/-/ready", get(ready))
        .with_state(state.clone())
        .merge(extra)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state, track))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_format_like_prometheus() {
        assert_eq!(fmt_value(1.0), "1");
        assert_eq!(fmt_value(0.52), "0.52");
        assert_eq!(fmt_value(16710004736.0), "16710004736");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(fmt_ts(1_700_000_000_123), json!(1700000000.123));
    }
}
