//! One service's probe: its health request (up, status, duration) and its
//! version request, concurrently.

use std::time::Duration;

use super::config::Target;
use crate::sources::gen3_http::fetch;

/// Largest part of an answer body that is read (health bodies are short;
/// guppy's lists its indices).
pub(super) const BODY_LIMIT: usize = 64 * 1024;
/// Longest version or commit label value kept.
pub(super) const MAX_LABEL_LEN: usize = 128;

/// What one health probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutcome {
    /// The `service` label.
    pub service: String,
    /// Healthy?
    pub up: bool,
    /// HTTP status, 0 without an answer.
    pub status: u16,
    /// Seconds the health request took.
    pub duration: f64,
    /// Completion time of the health request (ms).
    pub ts_ms: i64,
    /// Why it is down: error kind and detail.
    pub error: Option<(&'static str, String)>,
    /// Version and commit, when the version endpoint told; with its
    /// completion time.
    pub version: Option<(String, Option<String>, i64)>,
    /// Why the version is unknown although the service is up.
    pub version_error: Option<String>,
}

/// Whether a body is an HTML page (leading whitespace and BOM skipped).
pub(super) fn looks_like_html(body: &[u8]) -> bool {
    let b = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    b.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'<')
}

fn label_value(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || s.chars().any(char::is_control) {
        return None;
    }
    Some(s.chars().take(MAX_LABEL_LEN).collect())
}

/// Reads version and commit from a version endpoint's body: a JSON object
/// with `version` (and `commit`), or a bare JSON string. `None` when the
/// body tells no version.
pub(super) fn parse_version(body: &[u8]) -> Option<(String, Option<String>)> {
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::String(v) => Some((label_value(&v)?, None)),
        serde_json::Value::Object(m) => {
            let version = label_value(m.get("version")?.as_str()?)?;
            let commit = m.get("commit").and_then(|c| c.as_str()).and_then(label_value);
            Some((version, commit))
        }
        _ => None,
    }
}

pub(super) async fn probe(client: reqwest::Client, t: Target, timeout: Duration) -> (ProbeOutcome, Option<Vec<u8>>) {
    let version = async {
        match &t.version_url {
            Some(u) => Some(fetch(&client, u, timeout, BODY_LIMIT).await),
            None => None,
        }
    };
    let (h, v) = tokio::join!(fetch(&client, &t.health_url, timeout, BODY_LIMIT), version);
    let error = if let Some(e) = h.error {
        Some(e)
    } else if !(200..300).contains(&h.status) {
        Some(("http_status", format!("HTTP {} from {}", h.status, t.health_url)))
    } else if !t.html_ok && looks_like_html(&h.body) {
        Some((
            "unexpected_body",
            format!(
                "HTTP {} from {} is an HTML page, not the service's health answer (a catch-all route?)",
                h.status, t.health_url
            ),
        ))
    } else {
        None
    };
    let up = error.is_none();
    let (version, version_error) = match v {
        None => (None, None),
        Some(v) => match (&v.error, v.status) {
            (Some((_, e)), _) => (None, Some(e.clone())),
            (None, s) if !(200..300).contains(&s) => (None, Some(format!("HTTP {s}"))),
            (None, _) => match parse_version(&v.body) {
                Some((ver, commit)) => (Some((ver, commit, v.ts_ms)), None),
                None => (None, Some("no version in the answer".to_string())),
            },
        },
    };
    let cert = if t.via_base { h.cert } else { None };
    (
        ProbeOutcome {
            service: t.service,
            up,
            status: h.status,
            duration: h.duration,
            ts_ms: h.ts_ms,
            error,
            version,
            version_error,
        },
        cert,
    )
}
