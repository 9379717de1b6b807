//! `POST /api/v1/admin/tsdb/snapshot` (admin API, admin token), as
//! Prometheus: writes a consistent copy of the storage under
//! `<data-dir>/snapshots/<name>/` while ingest goes on and answers
//! `{"status":"success","data":{"name":"<name>"}}`. `skip_head=true` leaves
//! out the samples that are not yet in persisted chunks (the WAL's
//! records), as Prometheus leaves out its head block.
//!
//! Besides `csoc.db`, the snapshot holds copies of the small state files
//! of the data directory that a restored collector reads at start: the
//! alert rules' state (`rules-state.json`, so pending and firing alerts
//! keep their `activeAt`), silences (`silences.json`), the notifier's
//! state (`notify-state.json`) and the agent registry (`agents.json`).
//! Each is replaced atomically by its writer, so a copy is always one
//! whole version. Left out: `remote-write/` (positions in the WAL of
//! this database; a restored collector starts its remote-write queues
//! afresh) and the local agent's spool.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::{ApiError, AppState, Params, success};

/// State files copied next to the database (those that exist).
pub const STATE_FILES: &[&str] = &["rules-state.json", "silences.json", "notify-state.json", crate::agents::STATE_FILE];

/// Go's `strconv.ParseBool`, which Prometheus uses for `skip_head`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `POST|PUT /api/v1/admin/tsdb/snapshot[?skip_head=<bool>]`.
pub async fn snapshot(State(st): State<AppState>, p: Params) -> Result<Response, ApiError> {
    if !st.admin_enabled {
        return Err(ApiError::Unavailable(
            "admin APIs disabled (start with --web.enable-admin-api)".into(),
        ));
    }
    let skip_head = match p.get("skip_head").filter(|v| !v.is_empty()) {
        None => false,
        Some(v) => {
            parse_bool(v).ok_or_else(|| ApiError::BadData(format!("unable to parse boolean 'skip_head' argument: invalid syntax {v:?}")))?
        }
    };
    let name = crate::tsdb::snapshot_name(std::time::SystemTime::now());
    let stats = st
        .tsdb_admin
        .snapshot(name, skip_head)
        .await
        .map_err(|e| ApiError::Internal(format!("create snapshot: {e}")))?;
    // <data-dir>/snapshots/<name>: the data directory is two levels up.
    if let Some(data_dir) = stats.dir.parent().and_then(|p| p.parent()) {
        for f in STATE_FILES {
            let from = data_dir.join(f);
            if from.is_file() {
                std::fs::copy(&from, stats.dir.join(f))
                    .map_err(|e| ApiError::Internal(format!("create snapshot: copying {}: {e}", from.display())))?;
            }
        }
    }
    Ok(success(json!({ "name": stats.name })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_head_parses_like_go() {
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("F"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }
}
