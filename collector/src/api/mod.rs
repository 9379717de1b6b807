//! The HTTP API: Prometheus's `/api/v1` (same parameters, GET and POST form
//! where Prometheus takes POST, same JSON shapes and error types),
//! `/federate`, `/metrics`, `/-/healthy`, `/-/ready`. This module only
//! translates HTTP; evaluation is in `promql`, data in `tsdb`.
//!
//! | file | endpoints |
//! |---|---|
//! | `query.rs` | `query`, `query_range`, `query_exemplars`, `format_query`, `parse_query` |
//! | `series.rs` | `series`, `labels`, `label/<name>/values`, `metadata` |
//! | `status.rs` | `status/buildinfo`, `status/runtimeinfo`, `status/flags`, `status/tsdb` |
//! | `federate.rs` | `/federate` |
//! | `rules.rs` | `rules`, `alerts`, `/-/reload` |
//! | `agents.rs` | `agents`, `admin/agents/{commons}/{agent}` |
//! | `amv2.rs` | Alertmanager's API v2: `/api/v2/silences`, `/api/v2/silence/{id}`, `/api/v2/alerts`, `/api/v2/receivers`, `/api/v2/status` |
//! | `snapshot.rs` | `admin/tsdb/snapshot` |
//! | `selfmon.rs` | `targets`, `status/walreplay` |
//! | `params.rs` | parameter parsing (times, durations, limits) |
//! | `startup.rs` | what answers while the storage opens (health, readiness with the WAL replay's progress, `/metrics`; 503 elsewhere), and the switch to this router |

pub mod access;
mod agents;
pub mod amv2;
mod encode;
mod federate;
mod params;
// Issue 20 (config half): /-/reload of everything, status/config, alertmanagers.
mod promcfg;
mod query;
pub mod rules;
mod series;
// selfmon: snapshot, targets, walreplay.
mod selfmon;
mod snapshot;
pub mod startup;
mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde_json::{Value as Json, json};

use crate::metadata::MetadataStore;
use crate::metrics::HttpMetrics;
use crate::promql::{Engine, EvalError};
use crate::tsdb::{Labels, Matcher, Queryable, TsdbAdmin};
pub use federate::TEXT_CONTENT_TYPE;
pub use params::{Params, parse_duration, parse_time};
pub use status::StatusInfo;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Where queries and the series and label endpoints read.
    pub storage: Arc<dyn Queryable>,
    /// Storage statistics and the admin flush.
    pub tsdb_admin: Arc<dyn TsdbAdmin>,
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
    /// Metric metadata received by the ingest paths (`/api/v1/metadata`).
    pub metadata: Arc<MetadataStore>,
    /// Start time, effective flags and retention (`/api/v1/status/*`).
    pub status: Arc<StatusInfo>,
    /// The rule groups (`/api/v1/rules`, `/api/v1/alerts`, `/-/reload`).
    pub rules: Arc<crate::rules::RuleManager>,
    /// API tokens; empty: the API is open.
    pub api_auth: crate::live::Live<crate::auth::ApiAuth>,
    /// What one request may ask for (`max_query_length`, `max_match_sets`,
    /// `max_series_per_request`...).
    pub limits: crate::live::Live<crate::config::Limits>,
    /// Where refusals by a limit are counted
    /// (`csoc_collector_limit_rejections_total{limit,commons}`).
    pub limit_metrics: crate::ingest::limits::LimitMetrics,
    /// The agent registry (`/api/v1/agents`, removal by the admin API).
    pub agents: Arc<crate::agents::AgentRegistry>,
    /// Silences, inhibition and the alerts the notifier holds (`/api/v2`,
    /// the console).
    pub muter: Arc<crate::notify::inhibit::Muter>,
    /// Names of the built-in receivers (`/api/v2/receivers`).
    pub receiver_names: crate::live::Live<Vec<String>>,
    /// The console's sessions and settings.
    pub console: Arc<crate::ui::Console>,
    /// Reloads the whole configuration (`/-/reload`, SIGHUP) and holds
    /// what `/api/v1/status/config` and `/api/v1/alertmanagers` show.
    pub reloader: Arc<crate::reload::Reloader>,
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
    /// 409 conflict: the request contradicts the current state.
    Conflict(String),
    /// 503 unavailable.
    Unavailable(String),
    /// 503 timeout.
    Timeout(String),
}

impl ApiError {
    /// The message.
    pub fn message(self) -> String {
        match self {
            ApiError::BadData(m)
            | ApiError::Execution(m)
            | ApiError::Internal(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Unavailable(m)
            | ApiError::Timeout(m) => m,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, typ, msg) = match self {
            ApiError::BadData(m) => (StatusCode::BAD_REQUEST, "bad_data", m),
            ApiError::Execution(m) => (StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            ApiError::Timeout(m) => (StatusCode::SERVICE_UNAVAILABLE, "timeout", m),
        };
        (code, axum::Json(json!({"status": "error", "errorType": typ, "error": msg}))).into_response()
    }
}

impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> Self {
        match e {
            EvalError::BadData(m) => ApiError::BadData(m),
            EvalError::Execution(m) => ApiError::Execution(m),
            EvalError::Timeout(m) => ApiError::Timeout(m),
            EvalError::Storage(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<crate::tsdb::TsdbError> for ApiError {
    fn from(e: crate::tsdb::TsdbError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// The warning Prometheus adds when `limit` cut a result short.
pub const TRUNCATED: &str = "results truncated due to limit";

fn success(data: Json) -> Response {
    respond(data, &[], &[])
}

/// A success response with annotations, as Prometheus sends them
/// (`warnings` and `infos` only when there are any).
fn respond(data: Json, warnings: &[String], infos: &[String]) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("status".into(), json!("success"));
    body.insert("data".into(), data);
    if !warnings.is_empty() {
        body.insert("warnings".into(), json!(warnings));
    }
    if !infos.is_empty() {
        body.insert("infos".into(), json!(infos));
    }
    axum::Json(Json::Object(body)).into_response()
}

/// Formats a sample value as Prometheus does in JSON (Go's 'f', -1
/// formatting): the engine's formatter.
pub use crate::promql::fmt_float as fmt_value;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("query task failed: {e}")))?
}

/// The `match[]` selectors of a request as matcher sets (a selector with
/// `or` gives several). Like Prometheus: each must be a plain series
/// selector, and each set needs a matcher that does not match the empty
/// string.
pub(crate) fn match_sets(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let bad = |m: String| ApiError::BadData(format!("invalid parameter \"match[]\": {m}"));
    let mut sets = Vec::new();
    for m in p.all("match[]") {
        let expr = crate::promql::guard::parse(m).map_err(bad)?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(bad(format!("{m:?} is not a series selector")));
        };
        if vs.offset.is_some() || vs.at.is_some() {
            return Err(bad(format!("{m:?}: offset and @ are not allowed in a series selector")));
        }
        let has_or = !vs.matchers.or_matchers.is_empty();
        for set in crate::promql::matchers_of(&vs)? {
            if has_or && set.is_empty() {
                // With `or`, the selector's own list is empty and the
                // alternatives carry the matchers.
                continue;
            }
            if set.iter().all(|x| x.matches(&Labels::new())) {
                return Err(ApiError::BadData("match[] must contain at least one non-empty matcher".into()));
            }
            sets.push(set);
        }
    }
    Ok(sets)
}

/// The optional `start`/`end` range of the series and label endpoints
/// (unbounded when absent); `end` must not be before `start`.
fn optional_range(p: &Params) -> Result<(i64, i64), ApiError> {
    let start = p.time("start")?.unwrap_or(i64::MIN);
    let end = p.time("end")?.unwrap_or(i64::MAX);
    if end < start {
        return Err(ApiError::BadData(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        ));
    }
    Ok((start, end))
}

async fn flush(State(st): State<AppState>) -> Result<Response, ApiError> {
    if !st.admin_enabled {
        return Err(ApiError::Unavailable(
            "admin APIs disabled (start with --web.enable-admin-api)".into(),
        ));
    }
    let stats = st.tsdb_admin.flush().await.map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(success(serde_json::to_value(stats).unwrap_or(Json::Null)))
}

async fn metrics(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    csoc_common::http::metrics_response(&st.registry, &headers)
}

async fn ready(State(st): State<AppState>) -> Response {
    if st.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "csoc-collector is ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "csoc-collector is starting\n").into_response()
    }
}

async fn track<S: access::Gate>(State(st): State<S>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    st.http_metrics()
        .observe(&handler, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// The router of the HTTP API; `extra` (routes with their own state, such
/// as the remote-write receiver) is merged in and shares the request
/// metrics. Methods as in Prometheus: POST (form body) wherever Prometheus
/// takes it; label values, metadata and status are GET only.
pub fn router(state: AppState, extra: Router) -> Router {
    use axum::routing::post;
    Router::new()
        .route("/api/v1/query", get(query::query).post(query::query))
        .route("/api/v1/query_range", get(query::query_range).post(query::query_range))
        .route("/api/v1/query_exemplars", get(query::query_exemplars).post(query::query_exemplars))
        .route("/api/v1/format_query", get(query::format_query).post(query::format_query))
        .route("/api/v1/parse_query", get(query::parse_query).post(query::parse_query))
        .route("/api/v1/series", get(series::series).post(series::series))
        .route("/api/v1/labels", get(series::labels).post(series::labels))
        .route("/api/v1/label/{name}/values", get(series::label_values))
        .route("/api/v1/metadata", get(series::metadata))
        .route("/api/v1/status/buildinfo", get(status::buildinfo))
        .route("/api/v1/status/runtimeinfo", get(status::runtimeinfo))
        .route("/api/v1/status/flags", get(status::flags))
        .route("/api/v1/status/tsdb", get(status::tsdb))
        .route("/api/v1/admin/tsdb/flush", post(flush).put(flush))
        // selfmon
        .route("/api/v1/admin/tsdb/snapshot", post(snapshot::snapshot).put(snapshot::snapshot))
        .route("/api/v1/targets", get(selfmon::targets))
        .route("/api/v1/status/walreplay", get(selfmon::walreplay))
        .route("/api/v1/admin/agents/{commons}/{agent}", axum::routing::delete(agents::remove))
        .route("/api/v1/agents", get(agents::list))
        .route("/api/v1/rules", get(rules::rules).post(rules::rules))
        .route("/api/v1/alerts", get(rules::alerts))
        .route("/-/reload", post(promcfg::reload).put(promcfg::reload))
        .route("/api/v1/status/config", get(promcfg::config))
        .route("/api/v1/alertmanagers", get(promcfg::alertmanagers))
        .route("/api/v2/silences", get(amv2::list_silences).post(amv2::post_silence))
        .route("/api/v2/silence/{id}", get(amv2::get_silence).delete(amv2::delete_silence))
        .route("/api/v2/alerts", get(amv2::alerts))
        .route("/api/v2/receivers", get(amv2::receivers))
        .route("/api/v2/status", get(amv2::status))
        .route("/federate", get(federate::federate).post(federate::federate))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "csoc-collector is healthy\n" }))
        .route("/-/ready", get(ready))
        .merge(crate::ui::router())
        .with_state(state.clone())
        .merge(extra)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), access::authorize::<AppState>))
        .layer(axum::middleware::from_fn_with_state(state, track::<AppState>))
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
    }

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn match_params_are_validated_like_prometheus() {
        let sets = match_sets(&p(&[("match[]", "up"), ("match[]", r#"{job="a" or job="b"}"#)])).expect("valid");
        assert_eq!(sets.len(), 3, "`or` gives two sets: {sets:?}");
        let msg = |q: &str| match match_sets(&p(&[("match[]", q)])) {
            Err(ApiError::BadData(m)) => m,
            other => panic!("{q}: expected bad_data, got {other:?}"),
        };
        assert!(msg("up{").starts_with("invalid parameter \"match[]\""));
        assert!(msg("sum(up)").contains("not a series selector"));
        assert!(msg("up offset 5m").contains("offset"));
        assert!(msg("up[5m]").contains("not a series selector"));
        assert!(msg(r#"{job=~".*"}"#).contains("non-empty matcher"));
        assert!(msg("").starts_with("invalid parameter \"match[]\""));
    }

    #[test]
    fn ranges() {
        assert_eq!(optional_range(&p(&[])).ok(), Some((i64::MIN, i64::MAX)));
        assert_eq!(optional_range(&p(&[("start", "1"), ("end", "2")])).ok(), Some((1000, 2000)));
        assert!(matches!(
            optional_range(&p(&[("start", "2"), ("end", "1")])),
            Err(ApiError::BadData(_))
        ));
    }
}
