//! The fleet console, served by the collector's HTTP listener: server-
//! rendered HTML with a small script (`static/console.js`) and uPlot for
//! the charts, all built into the binary (no CDN).
//!
//! | path | page |
//! |---|---|
//! | `/` | fleet: one row per commons, one cell per Gen3 service (`data-commons`, `data-service`, `data-state`), agents, alerts, workloads, traffic; refreshes itself |
//! | `/commons/{name}` | one commons: service states over 24 hours, probes, Kubernetes, hosts, usage charts |
//! | `/alerts` | firing and pending alerts (`data-alertname`, `data-state`), silences (create, list, expire) |
//! | `/explore` | PromQL with completion, table and graph; the query is kept in the URL |
//! | `/rules`, `/agents`, `/system` | rule groups, agents, remote write, storage, build and flags |
//! | `/status` | public status page (only with `public_status`) |
//! | `/runbook` | the rule pack's runbook (open, like `/-/healthy`) |
//! | `/login`, `/logout` | token → session cookie (see [`session`]) |
//!
//! Every label value that reaches a page is escaped ([`esc`]); the pages
//! send a Content-Security-Policy that allows only the collector's own
//! scripts and styles.

mod backends;
mod fleet;
mod pages;
pub mod runbook;
pub mod session;

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::api::AppState;
use crate::api::access::{Access, Scoped};
use crate::promql::Value;
use crate::tsdb::Labels;
pub use fleet::{FleetData, fleet_data, render_fleet};
pub use session::Console;

/// The console's routes (merged into the API's router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(fleet::page))
        .route("/commons/{name}", get(pages::commons))
        .route("/alerts", get(pages::alerts))
        .route("/explore", get(pages::explore))
        .route("/rules", get(pages::rules))
        .route("/agents", get(pages::agents))
        .route("/system", get(pages::system))
        .route("/status", get(pages::public_status))
        .route("/runbook", get(runbook::page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/ui/static/{file}", get(asset))
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A PromQL string literal of `s` (double-quoted, escaped).
pub fn pq(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A URL query component.
pub fn urlq(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The link to a query in Explore.
pub fn explore_link(q: &str, range: &str) -> String {
    format!("/explore?q={}&range={}", urlq(q), urlq(range))
}

/// Value of label `name` in a label set.
pub fn label<'a>(l: &'a Labels, name: &str) -> &'a str {
    l.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// Evaluates `q` at `t` for the caller (scoped like every read); errors
/// give no rows (logged), so that one missing source does not blank a page.
pub fn instant(st: &AppState, access: &Access, q: &str, t: i64) -> Vec<(Arc<Labels>, f64)> {
    let expr = match crate::promql::guard::parse(q) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(query = %q, error = %e, "console query does not parse");
            return Vec::new();
        }
    };
    let db = Scoped::new(st.storage.as_ref(), access);
    match st.engine.instant(&db, &expr, t) {
        Ok(out) => match out.value {
            Value::Vector(v) => v.into_iter().map(|s| (s.labels, s.v)).collect(),
            Value::Scalar(_, v) => vec![(Arc::new(Labels::new()), v)],
            _ => Vec::new(),
        },
        Err(e) => {
            tracing::debug!(query = %q, error = %e, "console query failed");
            Vec::new()
        }
    }
}

/// Evaluates `q` over a range for the caller.
pub fn range(st: &AppState, access: &Access, q: &str, start: i64, end: i64, step: i64) -> Vec<crate::tsdb::Series> {
    let Ok(expr) = crate::promql::guard::parse(q) else {
        return Vec::new();
    };
    let db = Scoped::new(st.storage.as_ref(), access);
    match st.engine.range(&db, &expr, start, end, step) {
        Ok(out) => match out.value {
            Value::Matrix(m) => m,
            _ => Vec::new(),
        },
        Err(e) => {
            tracing::debug!(query = %q, error = %e, "console range query failed");
            Vec::new()
        }
    }
}

/// Runs page work off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("page task failed: {e}")))
}

/// The navigation entries: path, label.
const NAV: &[(&str, &str)] = &[
    ("/", "Fleet"),
    ("/alerts", "Alerts"),
    ("/explore", "Explore"),
    ("/rules", "Rules"),
    ("/agents", "Agents"),
    ("/system", "System"),
];

/// What a page needs to know about its viewer.
pub struct Viewer<'a> {
    /// The caller.
    pub access: &'a Access,
    /// The session's CSRF token (console sessions only).
    pub csrf: String,
    /// Whether API tokens are configured (a logout button).
    pub auth: bool,
}

impl Viewer<'_> {
    /// Whether the viewer may create and expire silences.
    pub fn may_write(&self) -> bool {
        self.access.principal.as_ref().is_none_or(|p| p.role.may_write())
    }
}

/// The viewer of a request.
pub fn viewer<'a>(st: &AppState, access: &'a Access, headers: &HeaderMap) -> Viewer<'a> {
    let csrf = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| session::cookie(c, session::COOKIE))
        .and_then(|id| st.console.session(id, csoc_common::time::now_ms()))
        .map(|s| s.csrf)
        .unwrap_or_default();
    Viewer {
        access,
        csrf,
        auth: !st.api_auth.load().is_empty(),
    }
}

/// A full page: head, navigation, `body`.
pub fn layout(title: &str, active: &str, v: &Viewer<'_>, body: &str) -> String {
    let mut nav = String::new();
    for (path, name) in NAV {
        let cur = if *path == active { " aria-current=\"page\"" } else { "" };
        nav.push_str(&format!("<a href=\"{path}\"{cur}>{name}</a>"));
    }
    let who = match &v.access.principal {
        Some(p) => {
            let scope = p.commons.as_deref().map(|c| format!(", commons {}", esc(c))).unwrap_or_default();
            format!(
                "<span class=\"who\">{} ({}{scope})</span><form method=\"post\" action=\"/logout\" class=\"inline\"><button type=\"submit\">Sign out</button></form>",
                esc(&p.name),
                p.role.as_str()
            )
        }
        None if v.auth => String::new(),
        None => "<span class=\"who\">open access</span>".into(),
    };
    let ver = env!("CARGO_PKG_VERSION");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"csrf-token\" content=\"{csrf}\"><title>{title} · csoc-watch</title>\
<link rel=\"stylesheet\" href=\"/ui/static/console.css?v={ver}\"></head><body>\
<a class=\"skip\" href=\"#main\">Skip to content</a>\
<header><span class=\"brand\">csoc-watch</span><nav aria-label=\"Main\">{nav}</nav><div class=\"user\">{who}</div></header>\
<main id=\"main\">{body}</main>\
<script src=\"/ui/static/console.js?v={ver}\"></script></body></html>",
        csrf = esc(&v.csrf),
        title = esc(title),
    )
}

/// The security headers of every page.
pub fn html(code: StatusCode, body: String) -> Response {
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A page saying what went wrong.
pub fn error_page(code: StatusCode, msg: &str) -> Response {
    let v = Viewer {
        access: &Access::default(),
        csrf: String::new(),
        auth: true,
    };
    html(
        code,
        layout("Error", "", &v, &format!("<h1>{}</h1><p>{}</p>", code.as_u16(), esc(msg))),
    )
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, ctype): (&'static [u8], &str) = match file.as_str() {
        "console.css" => (include_bytes!("static/console.css"), "text/css; charset=utf-8"),
        "console.js" => (include_bytes!("static/console.js"), "text/javascript; charset=utf-8"),
        "uPlot.iife.min.js" => (include_bytes!("static/vendor/uPlot.iife.min.js"), "text/javascript; charset=utf-8"),
        "uPlot.min.css" => (include_bytes!("static/vendor/uPlot.min.css"), "text/css; charset=utf-8"),
        "uPlot.LICENSE" => (include_bytes!("static/vendor/uPlot.LICENSE"), "text/plain; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(ctype) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Only local paths are followed after login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

fn login_form(next: &str, msg: &str) -> String {
    let v = Viewer {
        access: &Access::default(),
        csrf: String::new(),
        auth: true,
    };
    let err = if msg.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", esc(msg))
    };
    layout(
        "Sign in",
        "",
        &v,
        &format!(
            "<h1>Sign in</h1>{err}<form method=\"post\" action=\"/login\" class=\"login\">\
<label for=\"token\">API token</label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
<input type=\"hidden\" name=\"next\" value=\"{}\"><button type=\"submit\">Sign in</button></form>\
<p class=\"hint\">The token is exchanged for a session cookie and not kept by the browser.</p>",
            esc(next)
        ),
    )
}

async fn login_page(State(st): State<AppState>, p: crate::api::Params) -> Response {
    if st.api_auth.load().is_empty() {
        return Redirect::to("/").into_response();
    }
    html(StatusCode::OK, login_form(&safe_next(p.get("next")), ""))
}

async fn login(State(st): State<AppState>, headers: HeaderMap, p: crate::api::Params) -> Response {
    let next = safe_next(p.get("next"));
    if st.api_auth.load().is_empty() {
        return Redirect::to(&next).into_response();
    }
    let token = p.get("token").unwrap_or("").trim().to_string();
    let Some(principal) = st.api_auth.load().authenticate(&token).cloned() else {
        tracing::warn!("console sign-in refused: token not recognised");
        return html(StatusCode::UNAUTHORIZED, login_form(&next, "That token is not recognised."));
    };
    let Some(id) = st.console.login(principal.clone(), csoc_common::time::now_ms()) else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "no randomness available for a session");
    };
    tracing::info!(token = %principal.name, "console sign-in");
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "https")
        || st.console.https;
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session::COOKIE,
        session::SESSION_MS / 1000,
        if secure { "; Secure" } else { "" }
    );
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(st): State<AppState>, headers: HeaderMap, _: Extension<Access>) -> Response {
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| session::cookie(c, session::COOKIE))
    {
        st.console.logout(id);
    }
    let mut r = Redirect::to(if st.api_auth.load().is_empty() { "/" } else { "/login" }).into_response();
    let clear = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", session::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `1.23 s`, `45 ms`.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        "–".into()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// A count or rate, short: `12`, `3.4`, `1.2k`, `5.6M`.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// How long ago, short: `5s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn ago(now: i64, t: i64) -> String {
    if t <= 0 {
        return "never".into();
    }
    let s = (now - t).max(0) / 1000;
    if s < 120 {
        format!("{s}s ago")
    } else if s < 7200 {
        format!("{}m ago", s / 60)
    } else if s < 172_800 {
        format!("{}h ago", s / 3600)
    } else {
        format!("{}d ago", s / 86_400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(pq("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(urlq("rate(x[1m]) a&b"), "rate%28x%5B1m%5D%29+a%26b");
    }

    #[test]
    fn next_is_local_only() {
        assert_eq!(safe_next(Some("/commons/a")), "/commons/a");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_secs(0.123), "123 ms");
        assert_eq!(fmt_secs(2.5), "2.50 s");
        assert_eq!(fmt_num(12.0), "12");
        assert_eq!(fmt_num(0.5), "0.50");
        assert_eq!(fmt_num(12_345.0), "12.3k");
        assert_eq!(ago(100_000, 95_000), "5s ago");
        assert_eq!(ago(100_000, 0), "never");
    }
}
