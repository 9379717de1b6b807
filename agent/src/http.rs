//! The agent's own HTTP endpoint: `/metrics` (OpenMetrics text) and
//! `/-/healthy`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use csoc_common::http::metrics_response;

async fn metrics(State(reg): State<Arc<Registry>>) -> axum::response::Response {
    metrics_response(&reg)
}

/// Binds `addr` and serves until `shutdown`. Binding errors are returned at
/// once (a port in use is a startup error, not a silent failure).
pub async fn serve(addr: SocketAddr, registry: Arc<Registry>, shutdown: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "csoc-agent is healthy\n" }))
        .with_state(registry);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for /metrics: {e} (change --http-listen)"))?;
    tracing::info!(addr = %addr, "agent /metrics listening");
    Ok(tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "agent HTTP server failed");
        }
    }))
}
