//! Who may read what: API tokens (`--api-token NAME=TOKEN:ROLE[:commons=C]`).
//!
//! With no API token configured the API is open, as Prometheus's is (the
//! default listen address is loopback). With any, every request but
//! `/-/healthy`, `/-/ready`, the remote-write receiver (which takes agent
//! tokens), the console's `/login`, `/logout`, static files and `/status`
//! (which answers only with `public_status`) needs `Authorization: Bearer
//! <token>` (or HTTP basic auth with the token as password, for tools that
//! only speak basic auth), or the console's session cookie (see
//! `crate::ui::session`); a console page without either redirects to
//! `/login`:
//!
//! | endpoint | needs |
//! |---|---|
//! | `/-/reload`, `/api/v1/admin/*` | an admin token |
//! | `/metrics`, `/api/v1/status/tsdb`, `/api/v1/status/config`, `/api/v1/alertmanagers` (they name every commons) | a token without a commons scope |
//! | `POST /api/v2/silences`, `DELETE /api/v2/silence/{id}` | a write or admin token (checked by the handlers) |
//! | everything else | any token |
//!
//! Writes (any method but GET, HEAD, OPTIONS) are refused when they come
//! from another site's page (`Origin` not this host, or `Sec-Fetch-Site:
//! cross-site`), tokens or not; with a session cookie they also need the
//! session's CSRF token in `X-CSRF-Token`.
//!
//! A token scoped to commons C only ever sees C's series: the middleware
//! puts an [`Access`] in the request, and every handler that reads series
//! adds `commons="C"` to every selector it evaluates: the engine reads
//! through [`Scoped`], and series, labels, label values and `/federate` add
//! the matcher to each `match[]` set. Alerts (in `/api/v1/alerts` and
//! `/api/v1/rules`) are filtered to those labelled with C, and agents
//! (`/api/v1/agents`) to C's. Removing an agent is an admin endpoint, and
//! admin tokens are never scoped, so no commons' token can remove an agent.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::auth::{Principal, Role};
use crate::tsdb::{Labels, LazySelection, Matcher, Querier, Queryable, Series, TsdbError};

/// The caller of a request, as the handlers see it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `None`: the API is open (no tokens configured).
    pub principal: Option<Arc<Principal>>,
}

impl Access {
    /// The commons this caller is limited to, if any.
    pub fn scope(&self) -> Option<&str> {
        self.principal.as_ref().and_then(|p| p.commons.as_deref())
    }

    /// The matcher every selector of this caller gets, if scoped.
    pub fn matcher(&self) -> Option<Matcher> {
        self.scope().map(|c| Matcher::equal("commons", c))
    }

    /// `sets` with the scope's matcher added to each; scoped and with no
    /// sets (all series), the scope alone.
    pub fn restrict(&self, mut sets: Vec<Vec<Matcher>>) -> Vec<Vec<Matcher>> {
        if let Some(m) = self.matcher() {
            if sets.is_empty() {
                sets.push(Vec::new());
            }
            for s in &mut sets {
                s.push(m.clone());
            }
        }
        sets
    }

    /// Whether this caller may see an alert with these labels.
    pub fn sees(&self, labels: &[(String, String)]) -> bool {
        match self.scope() {
            None => true,
            Some(c) => labels.iter().any(|(k, v)| k == "commons" && v == c),
        }
    }
}

/// A [`Queryable`] that only ever returns one commons' series.
pub struct Scoped<'a> {
    inner: &'a dyn Queryable,
    matcher: Option<Matcher>,
}

impl<'a> Scoped<'a> {
    /// `inner` as `access` may see it.
    pub fn new(inner: &'a dyn Queryable, access: &Access) -> Self {
        Scoped {
            inner,
            matcher: access.matcher(),
        }
    }
}

impl Queryable for Scoped<'_> {
    fn querier(&self, mint: i64, maxt: i64) -> Box<dyn Querier + '_> {
        Box::new(ScopedQuerier {
            inner: self.inner.querier(mint, maxt),
            matcher: self.matcher.as_ref(),
        })
    }

    fn select_lazy(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        without_stale: bool,
    ) -> Result<Option<Box<dyn LazySelection + '_>>, TsdbError> {
        let mut all = matchers.to_vec();
        all.extend(self.matcher.iter().cloned());
        self.inner.select_lazy(mint, maxt, &all, without_stale)
    }
}

/// A [`Scoped`] querier: the scope's matcher is added to every selection.
struct ScopedQuerier<'a> {
    inner: Box<dyn Querier + 'a>,
    matcher: Option<&'a Matcher>,
}

impl ScopedQuerier<'_> {
    fn scoped<'m>(&self, matchers: &'m [Matcher]) -> std::borrow::Cow<'m, [Matcher]> {
        match self.matcher {
            None => std::borrow::Cow::Borrowed(matchers),
            Some(m) => {
                let mut all = Vec::with_capacity(matchers.len() + 1);
                all.extend_from_slice(matchers);
                all.push(m.clone());
                std::borrow::Cow::Owned(all)
            }
        }
    }
}

impl Querier for ScopedQuerier<'_> {
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<Series>, TsdbError> {
        self.inner.select(&self.scoped(matchers))
    }

    fn select_without_stale(&self, matchers: &[Matcher]) -> Result<Vec<Series>, TsdbError> {
        self.inner.select_without_stale(&self.scoped(matchers))
    }

    fn series(&self, matchers: &[Matcher]) -> Result<Vec<Arc<Labels>>, TsdbError> {
        self.inner.series(&self.scoped(matchers))
    }
}

/// The token of a request: `Authorization: Bearer T`, or basic auth with
/// password T.
fn token_of(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = crate::auth::bearer(v) {
        return Some(t.to_string());
    }
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64_decode(b64.trim())?;
    let s = String::from_utf8(raw).ok()?;
    let (_, password) = s.split_once(':')?;
    (!password.is_empty()).then(|| password.to_string())
}

/// Standard base64 (with or without padding).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// What [`authorize`] (and the request metrics) need from a router's
/// state: the API's router and the one that answers while the collector
/// starts ([`super::startup`]) share the middleware.
pub trait Gate: Clone + Send + Sync + 'static {
    /// The API tokens (empty: the API is open).
    fn api_auth(&self) -> Arc<crate::auth::ApiAuth>;
    /// Where requests and refusals are counted.
    fn http_metrics(&self) -> &crate::metrics::HttpMetrics;
    /// The console's sessions (none while the collector starts).
    fn console(&self) -> Option<&crate::ui::Console> {
        None
    }
}

impl Gate for AppState {
    fn api_auth(&self) -> Arc<crate::auth::ApiAuth> {
        self.api_auth.load()
    }

    fn http_metrics(&self) -> &crate::metrics::HttpMetrics {
        &self.metrics
    }

    fn console(&self) -> Option<&crate::ui::Console> {
        Some(&self.console)
    }
}

fn refuse<S: Gate>(st: &S, code: StatusCode, reason: &str, msg: String) -> Response {
    st.http_metrics().refused(reason);
    let mut resp = (code, axum::Json(json!({"status": "error", "errorType": reason, "error": msg}))).into_response();
    if code == StatusCode::UNAUTHORIZED
        && let Ok(v) = header::HeaderValue::from_str("Bearer realm=\"csoc-collector\"")
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Whether a request changes state (needs the cross-site checks).
fn is_write(m: &axum::http::Method) -> bool {
    !matches!(*m, axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS)
}

/// A write sent by another site's page: an `Origin` that is not this
/// host, or `Sec-Fetch-Site: cross-site`. Requests from tools (amtool,
/// curl) send neither and pass.
fn cross_site(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if let Some(o) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let o_host = o.split_once("://").map(|(_, h)| h).unwrap_or(o).trim_end_matches('/');
        if o == "null" || !o_host.eq_ignore_ascii_case(host) {
            return true;
        }
    }
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
}

/// Paths a browser shows (the console): an unauthenticated request there
/// is sent to the login page rather than refused with JSON.
fn is_page(path: &str) -> bool {
    !(path.starts_with("/api/") || path.starts_with("/-/") || path == "/metrics" || path == "/federate")
}

/// The middleware: authenticates (a token in `Authorization`, or a
/// console session cookie), checks the endpoint's requirement and, for
/// writes, the cross-site protections, and hands the handlers an
/// [`Access`].
pub async fn authorize<S: Gate>(State(st): State<S>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let write = is_write(req.method());
    if write && cross_site(req.headers()) {
        tracing::warn!(path = %path, "refused a cross-site write");
        return refuse(
            &st,
            StatusCode::FORBIDDEN,
            "forbidden",
            "cross-site requests may not change anything".into(),
        );
    }
    let open_path = matches!(
        path.as_str(),
        "/-/healthy" | "/-/ready" | "/api/v1/write" | "/login" | "/logout" | "/status" | "/runbook"
    ) || path.starts_with("/ui/static/");
    if st.api_auth().is_empty() || open_path {
        req.extensions_mut().insert(Access::default());
        return next.run(req).await;
    }
    let now = csoc_common::time::now_ms();
    let p = match token_of(req.headers()) {
        Some(token) => {
            let Some(p) = st.api_auth().authenticate(&token).cloned() else {
                tracing::warn!(path = %path, "refused an API request: token not recognised");
                return refuse(&st, StatusCode::UNAUTHORIZED, "unauthorized", "API token not recognised".into());
            };
            p
        }
        None => {
            let session = req
                .headers()
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|c| crate::ui::session::cookie(c, crate::ui::session::COOKIE))
                .and_then(|id| st.console().and_then(|c| c.session(id, now)));
            match session {
                Some(s) => {
                    if write {
                        let sent = req
                            .headers()
                            .get(crate::ui::session::CSRF_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        if !crate::ui::session::ct_eq(sent, &s.csrf) {
                            tracing::warn!(path = %path, token = %s.principal.name, "refused a console write without its CSRF token");
                            return refuse(&st, StatusCode::FORBIDDEN, "forbidden", "missing or wrong X-CSRF-Token".into());
                        }
                    }
                    s.principal
                }
                None if is_page(&path) && !write => {
                    let next_path: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
                    return axum::response::Redirect::to(&format!("/login?next={next_path}")).into_response();
                }
                None => {
                    return refuse(
                        &st,
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "this collector requires an API token: send Authorization: Bearer <token>".into(),
                    );
                }
            }
        }
    };
    let admin_only = path == "/-/reload" || path.starts_with("/api/v1/admin/");
    if admin_only && p.role != Role::Admin {
        tracing::warn!(path = %path, token = %p.name, "refused an API request: needs an admin token");
        return refuse(
            &st,
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{path} needs an admin token; token {:?} has role {}", p.name, p.role.as_str()),
        );
    }
    let unscoped_only =
        path == "/metrics" || path == "/api/v1/status/tsdb" || path == "/api/v1/status/config" || path == "/api/v1/alertmanagers";
    if unscoped_only && let Some(c) = &p.commons {
        tracing::warn!(path = %path, token = %p.name, "refused an API request: needs a token without a commons scope");
        return refuse(
            &st,
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{path} shows every commons; token {:?} is limited to commons {c:?}", p.name),
        );
    }
    req.extensions_mut().insert(Access {
        principal: Some(Arc::new(p)),
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_password_is_the_token() {
        let mut h = HeaderMap::new();
        // "grafana:s3cret-token" in base64.
        h.insert(header::AUTHORIZATION, "Basic Z3JhZmFuYTpzM2NyZXQtdG9rZW4=".parse().expect("header"));
        assert_eq!(token_of(&h).as_deref(), Some("s3cret-token"));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("header"));
        assert_eq!(token_of(&h).as_deref(), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().expect("header"));
        assert_eq!(token_of(&h), None);
        assert_eq!(base64_decode("aGk"), Some(b"hi".to_vec()));
    }

    #[test]
    fn cross_site_writes_are_recognised() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    v.parse().expect("value"),
                );
            }
            m
        };
        assert!(!cross_site(&h(&[("host", "127.0.0.1:9300")])), "a tool without Origin");
        assert!(!cross_site(&h(&[("host", "127.0.0.1:9300"), ("origin", "http://127.0.0.1:9300")])));
        assert!(cross_site(&h(&[("host", "127.0.0.1:9300"), ("origin", "http://evil.example")])));
        assert!(cross_site(&h(&[("host", "127.0.0.1:9300"), ("origin", "null")])));
        assert!(cross_site(&h(&[("host", "127.0.0.1:9300"), ("sec-fetch-site", "cross-site")])));
        assert!(is_page("/commons/alpha") && !is_page("/api/v2/silences") && !is_page("/metrics"));
    }

    #[test]
    fn scoped_access_adds_the_commons_matcher_everywhere() {
        let open = Access::default();
        let scoped = Access {
            principal: Some(Arc::new(Principal {
                name: "g".into(),
                role: Role::Read,
                commons: Some("alpha".into()),
            })),
        };
        let up = vec![vec![Matcher::equal("__name__", "up")]];
        let names = |sets: &[Vec<Matcher>]| -> Vec<Vec<(String, String)>> {
            sets.iter()
                .map(|s| s.iter().map(|m| (m.name.clone(), m.value.clone())).collect())
                .collect()
        };
        assert_eq!(names(&open.restrict(up.clone())), names(&up));
        let r = names(&scoped.restrict(up));
        assert_eq!(
            r[0],
            vec![
                ("__name__".to_string(), "up".to_string()),
                ("commons".to_string(), "alpha".to_string())
            ]
        );
        assert_eq!(
            names(&scoped.restrict(Vec::new())),
            vec![vec![("commons".to_string(), "alpha".to_string())]]
        );
        let a = vec![("commons".to_string(), "alpha".to_string())];
        let b = vec![("commons".to_string(), "beta".to_string())];
        assert!(scoped.sees(&a) && !scoped.sees(&b) && !scoped.sees(&[]));
        assert!(open.sees(&b));

        // The engine's reads go through Scoped: another commons' series
        // cannot be selected, whatever the query says.
        let s = |c: &str| Series {
            labels: Arc::new(vec![("__name__".into(), "up".into()), ("commons".into(), c.into())]),
            samples: vec![(1000, 1.0)],
        };
        let store = crate::promql::MemStore::from_series(vec![s("alpha"), s("beta")]);
        let q = Scoped::new(&store, &scoped);
        let got = q.querier(0, 2000).select(&[Matcher::equal("commons", "beta")]).expect("select");
        assert!(got.is_empty(), "{got:?}");
        let got = q.querier(0, 2000).select(&[Matcher::equal("__name__", "up")]).expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels[1].1, "alpha");
    }
}
