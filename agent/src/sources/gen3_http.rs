//! HTTP helpers shared by the Gen3 sources (`gen3_status`, `gen3_usage`):
//! one way to build the client (no redirects, the configured User-Agent,
//! Mozilla roots plus a `ca_file`), to fetch a bounded body within a time
//! limit, and to name what went wrong (`timeout`, `connect`, `tls`,
//! `request`).

use std::time::{Duration, Instant};

use reqwest::Url;
use serde::{Deserialize, Deserializer};

use crate::config::ConfigError;
use csoc_common::duration::parse_duration;

/// A `ConfigError::Invalid` for `field`.
pub(crate) use csoc_common::config::invalid;

/// Deserializes an optional duration (`30s`, `5m`).
pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

/// Parses an http(s) URL with a host.
pub(crate) fn parse_http_url(field: &str, s: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s.trim()).map_err(|e| invalid(field, format!("{s:?} is not a URL: {e} (example: https://data.example.org)")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(field, format!("{s:?}: only http:// and https:// URLs can be probed")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(field, format!("{s:?} has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(field, format!("{s:?}: a base URL takes no query or fragment")));
    }
    Ok(url)
}

/// `base` (trailing slashes dropped) followed by `path`.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// The client builder of the Gen3 sources: redirects are not followed, the
/// peer certificate is kept (`tls_info`), the time limit is set per request.
pub(crate) fn client_builder(user_agent: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent.to_string())
        .tls_info(true)
        .pool_max_idle_per_host(4)
}

/// What one request brought back.
pub(crate) struct Fetched {
    /// HTTP status, 0 without an answer.
    pub status: u16,
    /// The body, up to the limit.
    pub body: Vec<u8>,
    /// Whether the body was cut at the limit.
    pub truncated: bool,
    /// The peer's certificate (DER), https only.
    pub cert: Option<Vec<u8>>,
    /// A transport error (before or after the status line).
    pub error: Option<(&'static str, String)>,
    /// Seconds the request took.
    pub duration: f64,
    /// Completion time (ms since the epoch).
    pub ts_ms: i64,
}

/// Whether `err` is, or wraps through `io::Error`s, a rustls error.
fn is_tls_error(err: &(dyn std::error::Error + 'static)) -> bool {
    if err.is::<rustls::Error>() {
        return true;
    }
    // io::Error::source() skips the error it wraps (tokio-rustls wraps the
    // rustls error in one, the connector that in another): look inside.
    match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        Some(inner) => is_tls_error(inner),
        None => false,
    }
}

/// The error kind of a failed request.
pub(crate) fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if is_tls_error(err) {
            return "tls";
        }
        cur = err.source();
    }
    if e.is_connect() { "connect" } else { "request" }
}

pub(crate) use csoc_common::error::error_chain;

/// GETs `url` within `timeout`, keeping at most `limit` bytes of the body.
pub(crate) async fn fetch(client: &reqwest::Client, url: &str, timeout: Duration, limit: usize) -> Fetched {
    fetch_request(client.get(url), timeout, limit).await
}

/// Sends `request` (with its headers, e.g. basic auth) within `timeout`,
/// keeping at most `limit` bytes of the body.
pub(crate) async fn fetch_request(request: reqwest::RequestBuilder, timeout: Duration, limit: usize) -> Fetched {
    let start = Instant::now();
    let mut out = Fetched {
        status: 0,
        body: Vec::new(),
        truncated: false,
        cert: None,
        error: None,
        duration: 0.0,
        ts_ms: 0,
    };
    match request.timeout(timeout).send().await {
        Ok(mut resp) => {
            out.status = resp.status().as_u16();
            out.cert = resp
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|i| i.peer_certificate())
                .map(<[u8]>::to_vec);
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        let room = limit - out.body.len();
                        out.body.extend_from_slice(&c[..c.len().min(room)]);
                        if out.body.len() >= limit {
                            out.truncated = c.len() > room;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.error = Some((classify(&e), error_chain(&e)));
                        break;
                    }
                }
            }
        }
        Err(e) => out.error = Some((classify(&e), error_chain(&e))),
    }
    out.duration = start.elapsed().as_secs_f64();
    out.ts_ms = csoc_common::time::now_ms();
    out
}
