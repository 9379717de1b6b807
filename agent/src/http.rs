//! The agent's own HTTP endpoint: `/metrics` (OpenMetrics text),
//! `/-/healthy`, `/-/ready` and `POST /-/reload`.
//!
//! - `POST /-/reload` re-reads the local config file (as SIGHUP does) and
//!   applies its `interval` and `sources` without a restart: 200 with what
//!   changed, 500 with the reason when the running configuration was kept.
//!
//! - `/-/healthy` answers 200 whenever the process serves HTTP: Kubernetes'
//!   liveness probe. It never depends on the collector, so a collector
//!   outage (which the spool rides out) never gets the agent restarted.
//! - `/-/ready` answers 200 while the agent runs (configuration checked,
//!   spool open, sources started) and 503 with the reason before that and
//!   once shutdown has begun: Kubernetes' readiness probe, and what
//!   `kubectl rollout status` and Argo CD's health wait for. It does not
//!   depend on the collector either: an agent that cannot reach its
//!   collector is still doing its job, spooling (its
//!   `csoc_agent_collector_connected` gauge says whether it is connected).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use csoc_common::http::metrics_response;

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const STOPPING: u8 = 2;

/// What `/-/ready` answers: starting (503), running (200) or stopping (503).
/// Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicU8>);

impl Readiness {
    /// A new state: starting (not ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// The agent runs: `/-/ready` answers 200 (unless stopping already).
    pub fn set_running(&self) {
        let _ = self.0.compare_exchange(STARTING, RUNNING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown has begun: `/-/ready` answers 503 from now on.
    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Ordering::Release);
    }

    /// Whether `/-/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire) == RUNNING
    }

    fn answer(&self) -> (StatusCode, &'static str) {
        match self.0.load(Ordering::Acquire) {
            RUNNING => (StatusCode::OK, "csoc-agent is ready\n"),
            STOPPING => (StatusCode::SERVICE_UNAVAILABLE, "csoc-agent is not ready: shutting down\n"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "csoc-agent is not ready: starting\n"),
        }
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    readiness: Readiness,
    reload: Option<crate::central::ReloadHandle>,
}

async fn reload(State(st): State<AppState>) -> axum::response::Response {
    let Some(r) = &st.reload else {
        return (StatusCode::NOT_FOUND, "this agent has no local config file to reload\n").into_response();
    };
    match r.reload_local().await {
        Ok(s) => (StatusCode::OK, format!("config reloaded: {s}\n")).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload the config (the running configuration is kept): {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<AppState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    metrics_response(&st.registry, &headers)
}

async fn ready(State(st): State<AppState>) -> axum::response::Response {
    st.readiness.answer().into_response()
}

/// The routes: `/metrics`, `/-/healthy`, `/-/ready`.
pub fn router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    router_with_reload(registry, readiness, None)
}

/// The routes, plus `POST /-/reload` answered through `reload`.
pub fn router_with_reload(registry: Arc<Registry>, readiness: Readiness, reload_handle: Option<crate::central::ReloadHandle>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "csoc-agent is healthy\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", axum::routing::post(reload))
        .with_state(AppState {
            registry,
            readiness,
            reload: reload_handle,
        })
}

/// Binds `addr` and serves until `shutdown`. Binding errors are returned at
/// once (a port in use is a startup error, not a silent failure).
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    serve_with_reload(addr, registry, readiness, None, shutdown).await
}

/// As [`serve`], with `POST /-/reload` answered through `reload`.
pub async fn serve_with_reload(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: Readiness,
    reload: Option<crate::central::ReloadHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let app = router_with_reload(registry, readiness, reload);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for /metrics: {e} (change --http-listen)"))?;
    tracing::info!(addr = %addr, "agent /metrics, /-/healthy and /-/ready listening");
    Ok(tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "agent HTTP server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: &str) -> (u16, String) {
        let r = reqwest::get(url).await.expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    #[tokio::test]
    async fn ready_follows_the_agent_and_healthy_does_not() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let readiness = Readiness::new();
        let shutdown = CancellationToken::new();
        let task = serve(addr, Arc::new(Registry::default()), readiness.clone(), shutdown.clone())
            .await
            .expect("serve");
        let base = format!("http://{addr}");

        assert_eq!(get(&format!("{base}/-/healthy")).await.0, 200);
        let (st, body) = get(&format!("{base}/-/ready")).await;
        assert_eq!((st, body.as_str()), (503, "csoc-agent is not ready: starting\n"));

        readiness.set_running();
        assert!(readiness.is_ready());
        assert_eq!(get(&format!("{base}/-/ready")).await, (200, "csoc-agent is ready\n".to_string()));
        assert_eq!(get(&format!("{base}/metrics")).await.0, 200);

        readiness.set_stopping();
        let (st, body) = get(&format!("{base}/-/ready")).await;
        assert_eq!((st, body.as_str()), (503, "csoc-agent is not ready: shutting down\n"));
        // Stopping is final: a late set_running does not make it ready again.
        readiness.set_running();
        assert_eq!(get(&format!("{base}/-/ready")).await.0, 503);
        assert_eq!(get(&format!("{base}/-/healthy")).await.0, 200);

        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("server stops on shutdown")
            .expect("server task");
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let err = serve(addr, Arc::new(Registry::default()), Readiness::new(), CancellationToken::new())
            .await
            .expect_err("port in use");
        assert!(err.to_string().contains("--http-listen"), "{err}");
    }
}
