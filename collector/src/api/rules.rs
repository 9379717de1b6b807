//! `/api/v1/rules`, `/api/v1/alerts` and `POST /-/reload`, in Prometheus's
//! shapes (Grafana's alert list and rule browser read them).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use csoc_common::gofmt::format_e;
use serde_json::{Value as Json, json};

use super::access::Access;
use super::{ApiError, AppState, Params, success};
use crate::rules::file::RuleKind;
use crate::rules::group::{Alert, AlertState, Group};

fn rfc3339_or_zero(ms: i64) -> String {
    if ms == 0 {
        "0001-01-01T00:00:00Z".into()
    } else {
        crate::notify::rfc3339(ms)
    }
}

fn alert_json(a: &Alert) -> Json {
    let labels: serde_json::Map<String, Json> = a.labels.iter().map(|(k, v)| (k.clone(), Json::String(v.clone()))).collect();
    let mut o = json!({
        "labels": labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339_or_zero(a.active_at),
        "value": format_e(a.value),
    });
    if a.keep_firing_since != 0 {
        o["keepFiringSince"] = json!(rfc3339_or_zero(a.keep_firing_since));
    }
    o
}

fn active(a: &Alert) -> bool {
    a.state != AlertState::Inactive
}

/// Filters of `/api/v1/rules`.
struct RuleFilter {
    kind: Option<&'static str>,
    names: Vec<String>,
    groups: Vec<String>,
    files: Vec<String>,
    exclude_alerts: bool,
}

impl RuleFilter {
    fn from(p: &Params) -> Result<Self, ApiError> {
        let kind = match p.non_empty("type") {
            None => None,
            Some("alert") => Some("alerting"),
            Some("record") => Some("recording"),
            Some(other) => {
                return Err(ApiError::BadData(format!(
                    "invalid parameter \"type\": {other:?} is neither \"alert\" nor \"record\""
                )));
            }
        };
        let exclude_alerts = match p.non_empty("exclude_alerts") {
            None => false,
            Some(v) => v
                .parse::<bool>()
                .map_err(|_| ApiError::BadData(format!("invalid parameter \"exclude_alerts\": {v:?}")))?,
        };
        Ok(RuleFilter {
            kind,
            names: p.all("rule_name[]").map(str::to_string).collect(),
            groups: p.all("rule_group[]").map(str::to_string).collect(),
            files: p.all("file[]").map(str::to_string).collect(),
            exclude_alerts,
        })
    }
}

fn group_json(g: &Group, f: &RuleFilter, access: &Access) -> Option<Json> {
    if (!f.groups.is_empty() && !f.groups.contains(&g.spec.name)) || (!f.files.is_empty() && !f.files.contains(&g.spec.file)) {
        return None;
    }
    let st = g.state();
    let mut rules = Vec::new();
    for r in &st.rules {
        let spec = &r.spec;
        if !f.names.is_empty() && !f.names.contains(&spec.name) {
            continue;
        }
        let labels: serde_json::Map<String, Json> = spec.labels.iter().map(|l| (l.name.clone(), Json::String(l.text.clone()))).collect();
        let mut o = match &spec.kind {
            RuleKind::Alert {
                for_,
                keep_firing_for,
                annotations,
            } => {
                if f.kind == Some("recording") {
                    continue;
                }
                let mut alerts: Vec<&Alert> = r.active.values().filter(|a| active(a) && access.sees(&a.labels)).collect();
                alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
                let state = if alerts.iter().any(|a| a.state == AlertState::Firing) {
                    "firing"
                } else if alerts.is_empty() {
                    "inactive"
                } else {
                    "pending"
                };
                let mut o = json!({
                    "state": state,
                    "name": spec.name,
                    "query": spec.expr_text,
                    "duration": for_.as_secs_f64(),
                    "keepFiringFor": keep_firing_for.as_secs_f64(),
                    "labels": labels,
                    "annotations": annotations.iter().map(|a| (a.name.clone(), Json::String(a.text.clone()))).collect::<serde_json::Map<_, _>>(),
                    "type": "alerting",
                });
                if !f.exclude_alerts {
                    o["alerts"] = Json::Array(alerts.into_iter().map(alert_json).collect());
                }
                o
            }
            RuleKind::Record => {
                if f.kind == Some("alerting") {
                    continue;
                }
                json!({
                    "name": spec.name,
                    "query": spec.expr_text,
                    "labels": labels,
                    "type": "recording",
                })
            }
        };
        o["health"] = json!(r.health.as_str());
        o["lastError"] = json!(r.last_error);
        o["evaluationTime"] = json!(r.eval_duration.as_secs_f64());
        o["lastEvaluation"] = json!(rfc3339_or_zero(r.last_eval));
        rules.push(o);
    }
    if rules.is_empty() && (f.kind.is_some() || !f.names.is_empty()) {
        return None;
    }
    Some(json!({
        "name": g.spec.name,
        "file": g.spec.file,
        "rules": rules,
        "interval": g.interval.as_secs_f64(),
        "limit": g.spec.limit,
        "evaluationTime": st.eval_duration.as_secs_f64(),
        "lastEvaluation": rfc3339_or_zero(st.last_eval),
    }))
}

/// `GET /api/v1/rules`.
pub async fn rules(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let f = RuleFilter::from(&p)?;
    let groups: Vec<Json> = st.rules.groups().iter().filter_map(|g| group_json(g, &f, &access)).collect();
    Ok(success(json!({ "groups": groups })))
}

/// `GET /api/v1/alerts`: every pending and firing alert.
pub async fn alerts(State(st): State<AppState>, Extension(access): Extension<Access>) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    for g in st.rules.groups() {
        let s = g.state();
        for r in &s.rules {
            out.extend(r.active.values().filter(|a| active(a) && access.sees(&a.labels)).map(alert_json));
        }
    }
    Ok(success(json!({ "alerts": out })))
}

/// `POST /-/reload`: re-reads the rule files. 200 when loaded; 500 with
/// the file, line and reason when not (the previous rules keep running).
pub async fn reload(State(st): State<AppState>) -> Response {
    // Central agent config (cfgpush): a refused file fails the reload; its last good version stays.
    let agent_cfg = crate::agent_config::reload_logged(st.agents.config_store().map(|s| s.as_ref()), "POST /-/reload");
    match st.rules.reload().await {
        Ok(_) if agent_cfg.is_err() => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rules reloaded; {}\n", agent_cfg.err().map(|e| e.to_string()).unwrap_or_default()),
        )
            .into_response(),
        Ok(s) => (
            StatusCode::OK,
            format!("rules reloaded: {} files, {} groups, {} rules\n", s.files, s.groups, s.rules),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload rules (the previous rules keep running): {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_values_use_gos_e_format() {
        assert_eq!(format_e(1.0), "1e+00");
        assert_eq!(format_e(0.0), "0e+00");
        assert_eq!(format_e(1234.5), "1.2345e+03");
        assert_eq!(format_e(0.00012), "1.2e-04");
        assert_eq!(format_e(-2.5e120), "-2.5e+120");
        assert_eq!(format_e(f64::NAN), "NaN");
        assert_eq!(format_e(f64::NEG_INFINITY), "-Inf");
    }
}
