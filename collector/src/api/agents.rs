//! `GET /api/v1/agents` (the agent registry, scoped like every read) and
//! `DELETE /api/v1/admin/agents/{commons}/{agent}` (forget one agent now;
//! an admin endpoint: an admin token, which is never commons-scoped, and
//! `--web.enable-admin-api`). See `crate::agents`.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::access::Access;
use super::{ApiError, AppState, success};
use crate::agents::Removal;
use crate::notify::rfc3339;

/// `GET /api/v1/agents`: `{status, data: [{commons, agent, hostname,
/// version, first_seen, last_seen, connected, forget_at, config_version,
/// config_running_version, config_status, config_error, config_file_errors,
/// spool_backlog}]}`, sorted by commons and agent; a commons-scoped token
/// sees its commons' agents only. `forget_at` is when the agent will be
/// forgotten if it stays silent (null: never, or while it is connected).
///
/// Central config (`--agent-config-dir`, see `crate::agent_config`):
/// `config_version` is the version the collector holds for the agent (null
/// without a directory), `config_running_version` the one the agent last
/// said it runs (0: none), `config_status` `applied`, `rejected`, `pending`
/// or null (nothing pushed yet on its current stream), `config_error` the
/// agent's reason for rejecting the push, else the refused files that apply
/// to it ("FILE line N: reason"), else null, and `config_file_errors` those
/// files as `{file, line, reason}`. `spool_backlog` is the batches waiting
/// in the agent's spool, as it last reported (Hello and heartbeats).
pub async fn list(State(st): State<AppState>, Extension(access): Extension<Access>) -> Response {
    let store = st.agents.config_store().map(|s| s.as_ref());
    let data: Vec<_> = st
        .agents
        .list(access.scope())
        .iter()
        .map(|r| {
            json!({
                "commons": r.commons,
                "agent": r.agent,
                "hostname": r.hostname,
                "version": r.version,
                "first_seen": rfc3339(r.first_seen_ms),
                "last_seen": rfc3339(r.last_seen_ms),
                "connected": r.streams > 0,
                "forget_at": st.agents.forget_at(r).map(rfc3339),
                "config_version": store.map(|s| s.config_for(&r.commons, &r.agent).map(|h| h.version).unwrap_or(0)),
                "config_running_version": r.config.running_version,
                "config_status": (!r.config.status.is_empty()).then_some(&r.config.status),
                "config_error": config_error(store, r),
                "config_file_errors": store.map(|s| s.errors_for(&r.commons, &r.agent)).unwrap_or_default(),
                "spool_backlog": r.config.spool_batches,
            })
        })
        .collect();
    success(json!(data))
}

fn config_error(store: Option<&crate::agent_config::AgentConfigStore>, r: &crate::agents::AgentRecord) -> Option<String> {
    if r.config.status == "rejected" && !r.config.error.is_empty() {
        return Some(r.config.error.clone());
    }
    let errs = store?.errors_for(&r.commons, &r.agent);
    (!errs.is_empty()).then(|| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

/// `DELETE /api/v1/admin/agents/{commons}/{agent}`: 204 once forgotten, 404
/// for an agent the registry does not list, 409 while it has a stream open
/// (it would be listed again at its next message: stop it first).
pub async fn remove(
    State(st): State<AppState>,
    Extension(access): Extension<Access>,
    Path((commons, agent)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if !st.admin_enabled {
        return Err(ApiError::Unavailable(
            "admin APIs disabled (start with --web.enable-admin-api)".into(),
        ));
    }
    let by = access
        .principal
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_else(|| "(open API)".into());
    let agents = st.agents.clone();
    let (c, a) = (commons.clone(), agent.clone());
    let outcome = tokio::task::spawn_blocking(move || agents.remove(&c, &a))
        .await
        .map_err(|e| ApiError::Internal(format!("removal task failed: {e}")))?;
    match outcome {
        Ok(Removal::Removed) => {
            tracing::info!(commons = %commons, agent = %agent, by = %by, "agent removed from the registry by an admin call");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(Removal::Unknown) => Err(ApiError::NotFound(format!(
            "no agent {agent:?} in commons {commons:?} (GET /api/v1/agents lists them)"
        ))),
        Ok(Removal::Connected(n)) => Err(ApiError::Conflict(format!(
            "agent {agent:?} of commons {commons:?} has {n} stream(s) open; it would be listed again at its next message: stop it first"
        ))),
        Err(e) => {
            tracing::error!(commons = %commons, agent = %agent, error = %e, "agent removed, but the registry was not saved");
            Err(ApiError::Internal(format!(
                "agent {agent:?} of commons {commons:?} was removed, but the registry could not be saved, so it may be listed again after a restart: {e}"
            )))
        }
    }
}
