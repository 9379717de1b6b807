//! `POST /-/reload` (the whole configuration, see `crate::reload`),
//! `GET /api/v1/status/config` and `GET /api/v1/alertmanagers`, in
//! Prometheus's shapes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, success};

/// `POST /-/reload`: reads the configuration again; 200 when every part
/// applied, 500 naming the parts that kept their previous version.
pub async fn reload(State(st): State<AppState>) -> Response {
    let out = st.reloader.reload_all().await;
    let status = if out.ok() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, out.to_string()).into_response()
}

/// `GET /api/v1/status/config`: the configuration file as last loaded,
/// secrets shown as `<secret>`.
pub async fn config(State(st): State<AppState>) -> Response {
    success(json!({ "yaml": st.reloader.config_yaml.load().as_str() }))
}

/// `GET /api/v1/alertmanagers`: the Alertmanagers alerts are sent to, and
/// those dropped by `relabel_configs`.
pub async fn alertmanagers(State(st): State<AppState>) -> Response {
    let (active, dropped) = st.reloader.notifier.alertmanagers();
    let urls = |v: Vec<String>| v.into_iter().map(|u| json!({ "url": u })).collect::<Vec<_>>();
    success(json!({
        "activeAlertmanagers": urls(active),
        "droppedAlertmanagers": urls(dropped),
    }))
}
