//! The HTTP listener while the collector starts.
//!
//! The listener serves from the moment it is bound, before the storage
//! opens: replaying a large WAL takes a while (seconds per million samples),
//! and a Kubernetes liveness probe that found no listener for that long
//! would kill the collector, which would then replay again from the start.
//! So, until the API is ready:
//!
//! | path | answer |
//! |---|---|
//! | `/-/healthy` | 200: the process is alive and making progress |
//! | `/-/ready` | 503, with the progress (`replaying the WAL: 40 of 120 records (33%), 1000000 samples, 2.1s`) |
//! | `/api/v1/status/walreplay` | 200: `{min, max, current}` WAL records |
//! | `/metrics` | 200: the collector's metrics, among them `csoc_collector_tsdb_wal_replay_progress_ratio` (same tokens as later) |
//! | anything else | 503, Prometheus's error JSON (`"errorType": "unavailable"`, the progress in `"error"`) with `Retry-After` |
//!
//! Any other request is refused rather than held: a query cannot be
//! answered before the data is loaded, a remote-write sender retries a 503
//! with backoff, and Grafana shows the message. [`Phased`] switches every
//! connection, including keep-alive connections opened during replay, to the
//! full API router the moment it is installed (per request, not per
//! connection); `/-/ready` turns 200 once start-up is complete.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tower::ServiceExt;

use super::access::{self, Gate};
use super::{ApiError, track};
use crate::auth::ApiAuth;
use crate::metrics::HttpMetrics;
use crate::tsdb::ReplayProgress;

/// Seconds a client is told to wait before retrying during start-up.
const RETRY_AFTER_SECONDS: &str = "5";

/// What the start-up router's handlers share.
#[derive(Clone)]
pub struct StartupState {
    /// Rendered on `/metrics`.
    pub registry: Arc<Registry>,
    /// API tokens, checked as the full API checks them.
    pub api_auth: Arc<ApiAuth>,
    /// Request metrics (shared with the full API).
    pub metrics: HttpMetrics,
    /// The storage's opening.
    pub progress: ReplayProgress,
}

impl Gate for StartupState {
    fn api_auth(&self) -> Arc<ApiAuth> {
        self.api_auth.clone()
    }

    fn http_metrics(&self) -> &HttpMetrics {
        &self.metrics
    }
}

async fn ready(State(st): State<StartupState>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("csoc-collector is starting: {}\n", st.progress.snapshot()),
    )
        .into_response()
}

async fn metrics(State(st): State<StartupState>, headers: axum::http::HeaderMap) -> Response {
    csoc_common::http::metrics_response(&st.registry, &headers)
}

/// `/api/v1/status/walreplay` while the WAL replays (Prometheus serves it
/// before it is ready, for exactly this).
async fn walreplay(State(st): State<StartupState>) -> Response {
    super::success(super::selfmon::walreplay_json(&st.progress.snapshot()))
}

async fn unavailable(State(st): State<StartupState>) -> Response {
    let msg = format!("csoc-collector is starting ({}); try again shortly", st.progress.snapshot());
    let mut resp = ApiError::Unavailable(msg).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    resp
}

/// The router that answers while the storage opens (see the module doc).
pub fn router(state: StartupState) -> Router {
    Router::new()
        .route("/-/healthy", get(|| async { "csoc-collector is healthy\n" }))
        .route("/-/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/status/walreplay", get(walreplay))
        .fallback(unavailable)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authorize::<StartupState>,
        ))
        .layer(axum::middleware::from_fn_with_state(state, track::<StartupState>))
}

/// The start-up router until [`Phased::install`] hands over the full one;
/// chosen per request. Cheap to clone.
#[derive(Clone)]
pub struct Phased {
    early: Router,
    full: Arc<OnceLock<Router>>,
}

impl Phased {
    /// Serves `early` until a router is installed.
    pub fn new(early: Router) -> Self {
        Phased {
            early,
            full: Arc::new(OnceLock::new()),
        }
    }

    /// From now on every request goes to `full` (the first call wins).
    pub fn install(&self, full: Router) {
        let _ = self.full.set(full);
    }

    /// Whether the full router is installed.
    pub fn is_installed(&self) -> bool {
        self.full.get().is_some()
    }

    /// The router to serve: it hands each request to the current phase's.
    pub fn router(&self) -> Router {
        let phased = self.clone();
        Router::new().fallback(move |req: Request| {
            let r = phased.full.get().unwrap_or(&phased.early).clone();
            async move {
                match r.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn state(tokens: &[&str]) -> StartupState {
        let mut auth = ApiAuth::default();
        for (i, t) in tokens.iter().enumerate() {
            auth.add_digest(
                crate::auth::digest(t),
                crate::auth::Principal {
                    name: format!("t{i}"),
                    role: crate::auth::Role::Read,
                    commons: None,
                },
            );
        }
        let mut reg = Registry::default();
        let metrics = crate::metrics::CollectorMetrics::new(reg.sub_registry_with_prefix("csoc_collector")).http;
        StartupState {
            registry: Arc::new(reg),
            api_auth: Arc::new(auth),
            metrics,
            progress: ReplayProgress::default(),
        }
    }

    async fn call(r: &Router, path: &str, token: Option<&str>) -> (u16, Option<String>, String) {
        let mut req = Request::builder().uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = r
            .clone()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let code = resp.status().as_u16();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        (code, retry, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn healthy_while_starting_ready_and_the_api_503_until_the_full_router_is_installed() {
        let st = state(&[]);
        let phased = Phased::new(router(st.clone()));
        let app = phased.router();
        assert_eq!(call(&app, "/-/healthy", None).await.0, 200);
        let (code, _, body) = call(&app, "/-/ready", None).await;
        assert_eq!(code, 503);
        assert!(body.contains("opening the storage"), "{body}");
        let (code, retry, body) = call(&app, "/api/v1/query?query=up", None).await;
        assert_eq!((code, retry.as_deref()), (503, Some(RETRY_AFTER_SECONDS)));
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], "unavailable");
        assert!(v["error"].as_str().unwrap_or_default().contains("starting"), "{v}");
        let (code, _, body) = call(&app, "/metrics", None).await;
        assert_eq!(code, 200);
        assert!(body.contains("csoc_collector_http_requests_total"), "{body}");

        assert!(!phased.is_installed());
        let full = Router::new().route("/api/v1/query", get(|| async { "full" }));
        phased.install(full);
        assert!(phased.is_installed());
        let (code, _, body) = call(&app, "/api/v1/query", None).await;
        assert_eq!(
            (code, body.as_str()),
            (200, "full"),
            "the same service now answers from the full router"
        );
    }

    #[tokio::test]
    async fn metrics_needs_a_token_during_startup_as_later_but_probes_do_not() {
        let st = state(&["0123456789abcdef0123"]);
        let app = router(st);
        assert_eq!(call(&app, "/metrics", None).await.0, 401);
        assert_eq!(call(&app, "/metrics", Some("0123456789abcdef0123")).await.0, 200);
        assert_eq!(call(&app, "/-/healthy", None).await.0, 200);
        assert_eq!(call(&app, "/-/ready", None).await.0, 503);
    }
}
