//! Alertmanager's API v2, for the built-in notifier's silences and alerts,
//! so that `amtool` (and Grafana's Alertmanager data source) work against
//! the collector:
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /api/v2/silences?filter=M` | silences (pending, active, expired within 120h) |
//! | `POST /api/v2/silences` | create, or update with `id`; answers `{"silenceID": ...}` |
//! | `GET /api/v2/silence/{id}` | one silence |
//! | `DELETE /api/v2/silence/{id}` | expire it |
//! | `GET /api/v2/alerts` | the alerts the notifier holds, with `silencedBy` and `inhibitedBy` |
//! | `GET /api/v2/receivers` | the built-in receivers |
//! | `GET /api/v2/status` | version, uptime, cluster `disabled` |
//!
//! Writes need a `write` or `admin` token (when tokens are configured) and
//! a JSON body. A commons-scoped token sees the alerts of its commons and
//! the silences with a `commons="C"` matcher, and may only create silences
//! that carry that matcher.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::AppState;
use super::access::Access;
use super::params::{Params, parse_time};
use crate::notify::inhibit::AlertStatus;
use crate::notify::rfc3339;
use crate::notify::silence::{Silence, SilenceError, SilenceMatcher, SilenceRequest, parse_matcher};

/// Largest silence body read (bytes).
const MAX_BODY: usize = 256 << 10;

/// An error as Alertmanager's API v2 answers it: the message as a JSON
/// string.
#[derive(Debug)]
pub struct AmError(pub StatusCode, pub String);

impl IntoResponse for AmError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(Json::String(self.1))).into_response()
    }
}

fn err(code: StatusCode, msg: impl Into<String>) -> AmError {
    AmError(code, msg.into())
}

/// A silence as `gettableSilence`.
pub fn silence_json(s: &Silence, now: i64) -> Json {
    json!({
        "id": s.id,
        "status": {"state": s.state(now).as_str()},
        "updatedAt": rfc3339(s.updated_at),
        "matchers": s.matchers,
        "startsAt": rfc3339(s.starts_at),
        "endsAt": rfc3339(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

/// Whether a caller scoped to commons C may see (or write) this silence:
/// one of its matchers is `commons="C"`.
pub fn scope_allows(access: &Access, matchers: &[SilenceMatcher]) -> bool {
    match access.scope() {
        None => true,
        Some(c) => matchers
            .iter()
            .any(|m| m.name == "commons" && !m.is_regex && m.is_equal && m.value == c),
    }
}

/// The `filter` parameters as matchers; a bad one is a 400.
fn filters(p: &Params) -> Result<Vec<SilenceMatcher>, AmError> {
    p.all("filter")
        .map(|f| parse_matcher(f).map_err(|e| err(StatusCode::BAD_REQUEST, format!("bad matcher format: {e}"))))
        .collect()
}

/// Alertmanager's silence filter: every filter matcher names a label the
/// silence has an equality matcher on, and matches its value.
fn silence_matches_filter(s: &Silence, fs: &[SilenceMatcher]) -> bool {
    fs.iter().all(|f| {
        let Ok(c) = f.compile() else { return false };
        s.matchers
            .iter()
            .find(|m| m.name == f.name)
            .is_some_and(|m| c.matches(&vec![(m.name.clone(), m.value.clone())]))
    })
}

/// `GET /api/v2/silences`.
pub async fn list_silences(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Response {
    let fs = match filters(&p) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let now = csoc_common::time::now_ms();
    let v: Vec<Json> = st
        .muter
        .silences()
        .list(now)
        .iter()
        .filter(|s| scope_allows(&access, &s.matchers) && silence_matches_filter(s, &fs))
        .map(|s| silence_json(s, now))
        .collect();
    axum::Json(Json::Array(v)).into_response()
}

/// `GET /api/v2/silence/{id}`.
pub async fn get_silence(State(st): State<AppState>, Extension(access): Extension<Access>, Path(id): Path<String>) -> Response {
    match st.muter.silences().get(&id) {
        Some(s) if scope_allows(&access, &s.matchers) => axum::Json(silence_json(&s, csoc_common::time::now_ms())).into_response(),
        _ => err(StatusCode::NOT_FOUND, format!("silence {id} not found")).into_response(),
    }
}

/// `postableSilence`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<SilenceMatcher>,
    starts_at: String,
    ends_at: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

/// Whether a write may go on: a token that may write (when tokens are
/// configured). The middleware already checked authentication and, for
/// console sessions, the CSRF token.
fn may_write(access: &Access) -> Result<(), AmError> {
    match &access.principal {
        None => Ok(()),
        Some(p) if p.role.may_write() => Ok(()),
        Some(p) => Err(err(
            StatusCode::FORBIDDEN,
            format!(
                "creating or expiring silences needs a write or admin token; token {:?} has role {}",
                p.name,
                p.role.as_str()
            ),
        )),
    }
}

/// Creates or updates a silence for `access`; the ID, or the error response.
pub fn post_silence_body(st: &AppState, access: &Access, body: &[u8]) -> Result<String, AmError> {
    may_write(access)?;
    let ps: PostableSilence = serde_json::from_slice(body).map_err(|e| err(StatusCode::BAD_REQUEST, format!("invalid silence: {e}")))?;
    let time = |field: &str, v: &str| {
        parse_time(v).ok_or_else(|| {
            err(
                StatusCode::BAD_REQUEST,
                format!("invalid silence: {field} {v:?} is not an RFC 3339 time"),
            )
        })
    };
    let starts_at = time("startsAt", &ps.starts_at)?;
    let ends_at = time("endsAt", &ps.ends_at)?;
    if !scope_allows(access, &ps.matchers) {
        let c = access.scope().unwrap_or_default();
        return Err(err(
            StatusCode::FORBIDDEN,
            format!("this token is limited to commons {c:?}: a silence needs the matcher commons=\"{c}\""),
        ));
    }
    let id = ps.id.filter(|s| !s.is_empty());
    if let Some(id) = &id
        && let Some(prev) = st.muter.silences().get(id)
        && !scope_allows(access, &prev.matchers)
    {
        return Err(err(StatusCode::NOT_FOUND, format!("silence {id} not found")));
    }
    let who = access.principal.as_ref().map(|p| p.name.clone());
    let req = SilenceRequest {
        id,
        matchers: ps.matchers,
        starts_at,
        ends_at,
        created_by: ps.created_by,
        comment: ps.comment,
    };
    let now = csoc_common::time::now_ms();
    match st.muter.silences().set(req, now) {
        Ok(id) => {
            tracing::info!(silence = %id, token = ?who, "silence set");
            Ok(id)
        }
        Err(e) => Err(silence_error(e)),
    }
}

fn silence_error(e: SilenceError) -> AmError {
    let code = match e {
        SilenceError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    err(code, e.to_string())
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// `POST /api/v2/silences`: the body must be JSON (a cross-site form
/// cannot send that without a CORS preflight, which is never granted).
pub async fn post_silence(
    State(st): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if !is_json(&headers) {
        return err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the silence as application/json").into_response();
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("reading the body: {e}")).into_response(),
    };
    match post_silence_body(&st, &access, &body) {
        Ok(id) => axum::Json(json!({"silenceID": id})).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Expires a silence for `access`.
pub fn expire_silence(st: &AppState, access: &Access, id: &str) -> Result<(), AmError> {
    may_write(access)?;
    match st.muter.silences().get(id) {
        Some(s) if scope_allows(access, &s.matchers) => {}
        _ => return Err(err(StatusCode::NOT_FOUND, format!("silence {id} not found"))),
    }
    st.muter.silences().expire(id, csoc_common::time::now_ms()).map_err(silence_error)?;
    tracing::info!(silence = %id, token = ?access.principal.as_ref().map(|p| p.name.clone()), "silence expired");
    Ok(())
}

/// `DELETE /api/v2/silence/{id}`.
pub async fn delete_silence(State(st): State<AppState>, Extension(access): Extension<Access>, Path(id): Path<String>) -> Response {
    match expire_silence(&st, &access, &id) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(r) => r.into_response(),
    }
}

fn flag(p: &Params, key: &str) -> Result<bool, AmError> {
    match p.get(key) {
        None => Ok(true),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(err(StatusCode::BAD_REQUEST, format!("{key}: {v:?} must be true or false"))),
    }
}

/// An alert as `gettableAlert`.
fn alert_json(a: &AlertStatus, receivers: &[String]) -> Json {
    let state = if a.mute.muted() { "suppressed" } else { "active" };
    json!({
        "labels": a.alert.labels,
        "annotations": a.alert.annotations,
        "startsAt": rfc3339(a.alert.starts_at),
        "endsAt": rfc3339(a.alert.ends_at),
        "updatedAt": rfc3339(a.updated_at),
        "generatorURL": a.alert.generator_url,
        "fingerprint": a.fingerprint,
        "receivers": receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "status": {
            "state": state,
            "silencedBy": a.mute.silenced_by,
            "inhibitedBy": a.mute.inhibited_by,
        },
    })
}

/// `GET /api/v2/alerts` (`filter`, `active`, `silenced`, `inhibited` as
/// in Alertmanager).
pub async fn alerts(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Response {
    let fs = match filters(&p) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let (active, silenced, inhibited) = match (flag(&p, "active"), flag(&p, "silenced"), flag(&p, "inhibited")) {
        (Ok(a), Ok(s), Ok(i)) => (a, s, i),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r.into_response(),
    };
    let compiled: Vec<_> = fs.iter().filter_map(|f| f.compile().ok()).collect();
    let receivers = st.receiver_names.load();
    let receivers = receivers.as_ref();
    let v: Vec<Json> = st
        .muter
        .alerts(csoc_common::time::now_ms())
        .iter()
        .filter(|a| {
            let l = crate::notify::inhibit::labels_of(&a.alert);
            access.sees(&l)
                && compiled.iter().all(|m| m.matches(&l))
                && (silenced || a.mute.silenced_by.is_empty())
                && (inhibited || a.mute.inhibited_by.is_empty())
                && (active || a.mute.muted())
        })
        .map(|a| alert_json(a, receivers))
        .collect();
    axum::Json(Json::Array(v)).into_response()
}

/// `GET /api/v2/receivers`.
pub async fn receivers(State(st): State<AppState>) -> Response {
    let v: Vec<Json> = st.receiver_names.load().iter().map(|r| json!({"name": r})).collect();
    axum::Json(Json::Array(v)).into_response()
}

/// `GET /api/v2/status`.
pub async fn status(State(st): State<AppState>) -> Response {
    axum::Json(json!({
        "cluster": {"name": "", "status": "disabled", "peers": []},
        "config": {"original": "# csoc-collector: built-in notifier (receivers and inhibit_rules in the collector's config file)\n"},
        "uptime": rfc3339(
            st.status
                .start_time
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        ),
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "none (csoc-collector)",
        },
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn filters_match_like_alertmanager() {
        let s = Silence {
            id: "x".into(),
            matchers: vec![
                parse_matcher("alertname=Down").expect("m"),
                parse_matcher("commons=alpha").expect("m"),
            ],
            starts_at: 0,
            ends_at: 1,
            updated_at: 0,
            created_by: "a".into(),
            comment: "c".into(),
        };
        let f = |xs: &[&str]| xs.iter().map(|x| parse_matcher(x).expect("f")).collect::<Vec<_>>();
        assert!(silence_matches_filter(&s, &f(&["alertname=Down"])));
        assert!(silence_matches_filter(&s, &f(&["commons=~al.*", "alertname!=Up"])));
        assert!(!silence_matches_filter(&s, &f(&["alertname=Up"])));
        assert!(
            !silence_matches_filter(&s, &f(&["service=fence"])),
            "a label the silence does not name"
        );
        let scoped = Access {
            principal: Some(Arc::new(crate::auth::Principal {
                name: "t".into(),
                role: crate::auth::Role::Write,
                commons: Some("alpha".into()),
            })),
        };
        assert!(scope_allows(&scoped, &s.matchers));
        assert!(!scope_allows(&scoped, &f(&["commons=~alpha"])), "a regex is not a scope");
        assert!(scope_allows(&Access::default(), &f(&["commons=beta"])));
    }

    #[test]
    fn silence_json_has_alertmanagers_fields() {
        let s = Silence {
            id: "x".into(),
            matchers: vec![parse_matcher("a!~b").expect("m")],
            starts_at: 1000,
            ends_at: 2000,
            updated_at: 1000,
            created_by: "ops".into(),
            comment: "c".into(),
        };
        let j = silence_json(&s, 1500);
        assert_eq!(j["status"]["state"], "active");
        assert_eq!(
            j["matchers"][0],
            json!({"name": "a", "value": "b", "isRegex": true, "isEqual": false})
        );
        assert_eq!(j["startsAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(silence_json(&s, 2000)["status"]["state"], "expired");
    }
}
