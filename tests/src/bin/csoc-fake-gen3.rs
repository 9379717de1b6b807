//! csoc-fake-gen3: a fake Gen3 commons for the gen3_status end-to-end tests
//! and benchmarks. One plain-HTTP port answers, from the fixtures in
//! `shared/gen3/fixtures/status/` (`index.json` gives each file's service,
//! path, public path, status and content type):
//!
//! - **through "revproxy"**: every public path (`/user/_status`,
//!   `/index/_version`, `/mds/version`, `/index/_stats`, `/_status`, ...),
//!   as revproxy would: a 500–504 from a service has its body replaced by
//!   revproxy's `{ "error": "service failure - try again later"}`, status
//!   kept, and a service that is down answers 502 (revproxy's answer when the
//!   upstream refuses the connection or is not deployed);
//! - **in-cluster**: `/_svc/<service><path>` (`/_svc/arborist/health`,
//!   `/_svc/fence/_version`, ...) with the service's own bodies, so an agent
//!   can be given `url: http://ADDR/_svc/<service>` per service. This also
//!   serves what revproxy does not expose (arborist, ssjdispatcher,
//!   presigned-url-fence, which answers like fence, and ambassador's
//!   `/ambassador/v0/check_alive`, which has no fixture and answers a
//!   made-up `200 ok`; gen3-user-data-library's `/_version`, also without a
//!   fixture, answers a made-up `{"version":"1.0.0"}`);
//! - the portal at `/` (a made-up HTML page: SPA).
//!
//! Paths with no fixture answer 404 (a real revproxy would send them to the
//! portal). No authentication is checked. A path listed with a query
//! (`/index/_stats?month=7&year=2026`) matches that exact query first.
//!
//! Faults are switched per service (or for `all`) at run time:
//!
//! ```text
//! POST /_fake/fault?service=fence&mode=down    # ok | down | slow | 500
//! POST /_fake/fault?service=all&mode=slow&delay=2s
//! POST /_fake/reset                            # every service back to ok
//! GET  /_fake/state                            # modes and request counts, JSON
//! ```
//!
//! - `ok`: the fixtures' healthy answers.
//! - `down`: every endpoint of the service answers 502 with revproxy's body
//!   through revproxy, 503 in-cluster (a refused connection cannot be faked
//!   per service on one port).
//! - `slow`: every endpoint of the service answers normally after `delay`
//!   (default `--slow-delay`, at most 120s).
//! - `500`: the health endpoint answers 500 with the service's unhealthy
//!   fixture in-cluster (`Internal Server Error` where the service has none)
//!   and revproxy's body through revproxy; version and other endpoints stay
//!   up, as they do when only the database is gone.
//!
//! **TLS faults.** With `--tls-listen ADDR` the same answers are also served
//! over HTTPS on a second port, with a certificate chosen by `--tls-cert`
//! (default `valid-ca`) or at run time (`POST /_fake/tls?mode=expired`, on
//! either port; new connections only, so a client that keeps its connection
//! alive keeps the old certificate until it reconnects):
//!
//! - `valid-ca`: a leaf for `127.0.0.1` and `localhost`, valid until
//!   2040-06-30, signed by a CA generated at start, whose certificate
//!   `--tls-ca-out PATH` writes (PEM) so a client can trust it;
//! - `self-signed`: a self-signed leaf for the same names, valid until
//!   2039-12-31 (no CA vouches for it);
//! - `expired`: a leaf signed by the same CA, valid 2020-01-01 to 2021-01-01.
//!
//! `GET /_fake/state` gives the mode and each certificate's `not_after` (s
//! since the epoch) under `tls`.
//!
//! ```text
//! csoc-fake-gen3 [--listen 127.0.0.1:0] [--fixtures DIR] [--slow-delay 10s] [--max-inflight 256]
//!                [--tls-listen 127.0.0.1:0] [--tls-cert valid-ca|self-signed|expired] [--tls-ca-out PATH]
//! ```
//! **Elasticsearch / OpenSearch.** `/_es/<flavor>/<scenario>/` is the base
//! URL of a fake cluster for the agent's `elasticsearch` source, answering
//! `_cluster/health`, `_cat/indices?format=json` and
//! `_cat/aliases?format=json` from `tests/fixtures/elasticsearch/`
//! (`<flavor>`: `es7` Elasticsearch 7, `os2` OpenSearch 2; `<scenario>`:
//! `green`, `yellow`, `red`, `unauthorized` (every request gets the
//! flavor's 401), `secured` (green behind basic auth `elastic` /
//! `fixture-password`, the 401 otherwise)). Other paths there answer 404.
//! `/_es/live/current/` serves the flavor and scenario last set with
//! `POST /_fake/es?flavor=os2&scenario=red` (default `es7`, `green`), so
//! one agent can be walked through them.
//!
//! The first line on stdout is `listening on http://ADDR`, then, with
//! `--tls-listen`, `listening on https://ADDR`. Only loopback
//! addresses are accepted unless `--allow-remote`. At most `--max-inflight`
//! requests are answered at once (503 beyond). Stops on SIGINT or SIGTERM.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// Longest delay of the `slow` mode.
const MAX_DELAY: Duration = Duration::from_secs(120);

/// Fake Gen3 commons: serves the shared/gen3 status fixtures with switchable
/// faults per service.
#[derive(Debug, Parser)]
#[command(name = "csoc-fake-gen3", about)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory of the status fixtures (with index.json) [default: shared/gen3/fixtures/status beside the repository].
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    /// Delay of the `slow` mode when the fault request gives none (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_delay)]
    slow_delay: Duration,
    /// Requests answered at once; more get 503.
    #[arg(long, default_value_t = 256)]
    max_inflight: usize,
    /// Allow listening on a non-loopback address (the fake has no authentication).
    #[arg(long)]
    allow_remote: bool,
    /// Also serve HTTPS on this address (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// Certificate the HTTPS port presents at start.
    #[arg(long, value_enum, default_value = "valid-ca")]
    tls_cert: TlsMode,
    /// Write the generated CA certificate (PEM) here.
    #[arg(long, value_name = "PATH")]
    tls_ca_out: Option<PathBuf>,
}

/// Which certificate the HTTPS port presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TlsMode {
    /// A leaf signed by the generated CA.
    ValidCa,
    /// A self-signed leaf.
    SelfSigned,
    /// A leaf signed by the CA that expired on 2021-01-01.
    Expired,
}

impl TlsMode {
    const ALL: [TlsMode; 3] = [TlsMode::ValidCa, TlsMode::SelfSigned, TlsMode::Expired];

    fn name(self) -> &'static str {
        match self {
            TlsMode::ValidCa => "valid-ca",
            TlsMode::SelfSigned => "self-signed",
            TlsMode::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<TlsMode> {
        TlsMode::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// `500ms`, `2s`, `1m` or a number of milliseconds; at most [`MAX_DELAY`].
fn parse_delay(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else {
        (t, 1)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid delay {s:?} (examples: 500ms, 2s, 1m)"))?;
    let d = Duration::from_millis(n.saturating_mul(mult));
    if d > MAX_DELAY {
        return Err(format!("delay {s:?} is above the maximum of {}s", MAX_DELAY.as_secs()));
    }
    Ok(d)
}

/// A canned answer.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Arc<Vec<u8>>,
}

/// One endpoint of one service, with its answers by variant.
struct Endpoint {
    service: String,
    /// In-cluster path (with query if the fixture has one).
    path: String,
    /// `healthy`, `unhealthy`, `bad_request`, ... → answer.
    variants: BTreeMap<String, Answer>,
}

impl Endpoint {
    /// The answer when the service is fine: the `healthy` variant, else the
    /// only or first one.
    fn normal(&self) -> Option<&Answer> {
        self.variants.get("healthy").or_else(|| self.variants.values().next())
    }

    /// The service's unhealthy answer, if a fixture shows one.
    fn unhealthy(&self) -> Option<&Answer> {
        self.variants.iter().find(|(k, _)| k.starts_with("unhealthy")).map(|(_, a)| a)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Ok = 0,
    Down = 1,
    Slow = 2,
    Error500 = 3,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "ok" => Some(Mode::Ok),
            "down" => Some(Mode::Down),
            "slow" => Some(Mode::Slow),
            "500" => Some(Mode::Error500),
            _ => None,
        }
    }

    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Down,
            2 => Mode::Slow,
            3 => Mode::Error500,
            _ => Mode::Ok,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Ok => "ok",
            Mode::Down => "down",
            Mode::Slow => "slow",
            Mode::Error500 => "500",
        }
    }
}

/// Fault state and counters of one service.
#[derive(Default)]
struct ServiceState {
    mode: AtomicU8,
    delay_ms: AtomicU64,
    requests: AtomicU64,
    /// The path whose `500` mode answers 500.
    health_path: String,
}

struct App {
    endpoints: Vec<Endpoint>,
    /// Public path → endpoint.
    public: HashMap<String, usize>,
    /// `/_svc/<service><path>` → endpoint.
    internal: HashMap<String, usize>,
    services: BTreeMap<String, ServiceState>,
    revproxy_5xx: Answer,
    default_delay: Duration,
    inflight: Semaphore,
    max_inflight: usize,
    /// The HTTPS certificates, when `--tls-listen` is given.
    tls: Option<Arc<tls::Certs>>,
    /// (flavor, scenario) served at `/_es/live/` (`POST /_fake/es`).
    es_live: std::sync::Mutex<(String, String)>,
}

/// The health path of a service (SERVICES.md table A).
fn health_path(service: &str) -> &'static str {
    match service {
        "arborist" => "/health",
        "portal" => "/",
        "ambassador" => "/ambassador/v0/check_alive",
        _ => "/_status",
    }
}

fn default_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/gen3/fixtures/status")
}

fn str_field<'a>(e: &'a Value, k: &str, i: usize) -> anyhow::Result<&'a str> {
    e[k].as_str().with_context(|| format!("index.json entry {i}: no string {k:?}"))
}

fn load(dir: &Path, default_delay: Duration, max_inflight: usize) -> anyhow::Result<App> {
    let index_path = dir.join("index.json");
    let text = std::fs::read_to_string(&index_path).with_context(|| format!("reading {}", index_path.display()))?;
    let index: Vec<Value> = serde_json::from_str(&text).with_context(|| format!("parsing {}", index_path.display()))?;
    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut public: HashMap<String, usize> = HashMap::new();
    let mut revproxy_5xx = None;
    for (i, e) in index.iter().enumerate() {
        let service = str_field(e, "service", i)?;
        let path = str_field(e, "path", i)?;
        let variant = str_field(e, "variant", i)?;
        let file = str_field(e, "body_file", i)?;
        let status = e["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .with_context(|| format!("index.json entry {i}: invalid status"))?;
        let content_type = e["content_type"].as_str().unwrap_or("application/octet-stream").to_string();
        let body_path = dir.join(file);
        let body = std::fs::read(&body_path).with_context(|| format!("reading {}", body_path.display()))?;
        let answer = Answer {
            status,
            content_type,
            body: Arc::new(body),
        };
        if service == "revproxy" && variant == "upstream_5xx" {
            revproxy_5xx = Some(answer.clone());
        }
        if !path.starts_with('/') {
            continue;
        }
        let idx = match endpoints.iter().position(|ep| ep.service == service && ep.path == path) {
            Some(j) => j,
            None => {
                endpoints.push(Endpoint {
                    service: service.to_string(),
                    path: path.to_string(),
                    variants: BTreeMap::new(),
                });
                endpoints.len() - 1
            }
        };
        endpoints[idx].variants.insert(variant.to_string(), answer);
        let pubp = e["public_path"].as_str().and_then(|p| p.split_whitespace().next()).unwrap_or("");
        if pubp.starts_with('/') {
            public.insert(pubp.to_string(), idx);
        }
    }
    let revproxy_5xx = revproxy_5xx.context("index.json has no revproxy upstream_5xx entry")?;
    // presigned-url-fence is fence's image: the same answers.
    let fence: Vec<(String, BTreeMap<String, Answer>)> = endpoints
        .iter()
        .filter(|ep| ep.service == "fence")
        .map(|ep| (ep.path.clone(), ep.variants.clone()))
        .collect();
    for (path, variants) in fence {
        endpoints.push(Endpoint {
            service: "presigned-url-fence".into(),
            path,
            variants,
        });
    }
    // No fixtures: made-up answers of the right kind.
    let made_up = |service: &str, path: &str, ct: &str, body: &str| Endpoint {
        service: service.into(),
        path: path.into(),
        variants: BTreeMap::from([(
            "healthy".to_string(),
            Answer {
                status: StatusCode::OK,
                content_type: ct.into(),
                body: Arc::new(body.as_bytes().to_vec()),
            },
        )]),
    };
    endpoints.push(made_up(
        "portal",
        "/",
        "text/html",
        "<!doctype html>\n<html><head><title>Gen3 Data Commons</title></head><body><div id=\"root\"></div></body></html>\n",
    ));
    public.insert("/".into(), endpoints.len() - 1);
    endpoints.push(made_up("ambassador", "/ambassador/v0/check_alive", "text/plain", "ok\n"));
    // SERVICES.md: gen3-user-data-library answers {"version":"<pkg>"}; no fixture.
    if !endpoints
        .iter()
        .any(|ep| ep.service == "gen3-user-data-library" && ep.path == "/_version")
    {
        endpoints.push(made_up(
            "gen3-user-data-library",
            "/_version",
            "application/json",
            "{\"version\":\"1.0.0\"}",
        ));
        public.insert("/library/_version".into(), endpoints.len() - 1);
    }
    let internal: HashMap<String, usize> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| (format!("/_svc/{}{}", ep.service, ep.path), i))
        .collect();
    let services = endpoints
        .iter()
        .map(|ep| {
            (
                ep.service.clone(),
                ServiceState {
                    health_path: health_path(&ep.service).to_string(),
                    ..Default::default()
                },
            )
        })
        .collect();
    Ok(App {
        endpoints,
        public,
        internal,
        services,
        revproxy_5xx,
        default_delay,
        inflight: Semaphore::new(max_inflight),
        max_inflight,
        tls: None,
        es_live: std::sync::Mutex::new(("es7".into(), "green".into())),
    })
}

fn respond(a: &Answer, service: &str) -> Response {
    let mut r = (a.status, a.body.as_ref().clone()).into_response();
    if let Ok(v) = HeaderValue::from_str(&a.content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(service) {
        r.headers_mut().insert("x-fake-gen3-service", v);
    }
    r
}

fn text(status: StatusCode, msg: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

/// Looks `uri` up as `path?query`, then as `path`.
fn lookup(map: &HashMap<String, usize>, uri: &Uri) -> Option<usize> {
    uri.path_and_query()
        .and_then(|pq| map.get(pq.as_str()))
        .or_else(|| map.get(uri.path()))
        .copied()
}

async fn fixtures(State(app): State<Arc<App>>, uri: Uri) -> Response {
    let Ok(_permit) = app.inflight.try_acquire() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("fake-gen3: more than {} requests at once\n", app.max_inflight),
        );
    };
    let (idx, through_revproxy) = match lookup(&app.internal, &uri) {
        Some(i) => (i, false),
        None => match lookup(&app.public, &uri) {
            Some(i) => (i, true),
            None => return text(StatusCode::NOT_FOUND, format!("fake-gen3: no fixture for {uri}\n")),
        },
    };
    let ep = &app.endpoints[idx];
    let Some(st) = app.services.get(&ep.service) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "fake-gen3: unknown service\n".into());
    };
    st.requests.fetch_add(1, Ordering::Relaxed);
    let mode = Mode::from_u8(st.mode.load(Ordering::Relaxed));
    let is_health = ep.path == st.health_path;
    let answer = match mode {
        Mode::Down if through_revproxy => {
            let mut a = app.revproxy_5xx.clone();
            a.status = StatusCode::BAD_GATEWAY;
            return respond(&a, "revproxy");
        }
        Mode::Down => return text(StatusCode::SERVICE_UNAVAILABLE, format!("fake-gen3: {} is down\n", ep.service)),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_millis(st.delay_ms.load(Ordering::Relaxed))).await;
            ep.normal()
        }
        Mode::Error500 if is_health => {
            if through_revproxy {
                let mut a = app.revproxy_5xx.clone();
                a.status = StatusCode::INTERNAL_SERVER_ERROR;
                return respond(&a, "revproxy");
            }
            match ep.unhealthy() {
                Some(a) => return respond(a, &ep.service),
                None => return text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error".into()),
            }
        }
        Mode::Ok | Mode::Error500 => ep.normal(),
    };
    match answer {
        // revproxy replaces every upstream 500-504 body, status kept.
        Some(a) if through_revproxy && (500..=504).contains(&a.status.as_u16()) => {
            let mut r = app.revproxy_5xx.clone();
            r.status = a.status;
            respond(&r, "revproxy")
        }
        Some(a) => respond(a, &ep.service),
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "fake-gen3: fixture without answer\n".into()),
    }
}

fn state_json(app: &App) -> Value {
    let services: serde_json::Map<String, Value> = app
        .services
        .iter()
        .map(|(name, st)| {
            let mode = Mode::from_u8(st.mode.load(Ordering::Relaxed));
            let mut v = json!({
                "mode": mode.name(),
                "requests": st.requests.load(Ordering::Relaxed),
                "health_path": st.health_path,
                "internal_url_path": format!("/_svc/{name}"),
            });
            if mode == Mode::Slow {
                v["delay_ms"] = json!(st.delay_ms.load(Ordering::Relaxed));
            }
            (name.clone(), v)
        })
        .collect();
    let mut v = json!({ "services": services, "default_slow_delay_ms": app.default_delay.as_millis() as u64 });
    if let Some(t) = &app.tls {
        v["tls"] = t.state();
    }
    v
}

async fn state(State(app): State<Arc<App>>) -> Json<Value> {
    Json(state_json(&app))
}

async fn fault(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let known = || app.services.keys().cloned().collect::<Vec<_>>().join(", ");
    let Some(service) = q.get("service") else {
        return text(StatusCode::BAD_REQUEST, format!("missing ?service= (one of: all, {})\n", known()));
    };
    let Some(mode) = q.get("mode").and_then(|m| Mode::parse(m)) else {
        return text(StatusCode::BAD_REQUEST, "missing or unknown ?mode= (ok, down, slow, 500)\n".into());
    };
    let delay = match q.get("delay").map(|d| parse_delay(d)) {
        None => app.default_delay,
        Some(Ok(d)) => d,
        Some(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let targets: Vec<&ServiceState> = if service == "all" {
        app.services.values().collect()
    } else {
        match app.services.get(service) {
            Some(s) => vec![s],
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("unknown service {service:?} (one of: all, {})\n", known()),
                );
            }
        }
    };
    for st in targets {
        st.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
        st.mode.store(mode as u8, Ordering::Relaxed);
    }
    eprintln!("fake-gen3: {service} → {}", mode.name());
    Json(json!({ "service": service, "mode": mode.name(), "delay_ms": delay.as_millis() as u64 })).into_response()
}

async fn tls_mode(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(certs) = &app.tls else {
        return text(StatusCode::BAD_REQUEST, "no HTTPS port (start with --tls-listen)\n".into());
    };
    let Some(mode) = q.get("mode").and_then(|m| TlsMode::parse(m)) else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing or unknown ?mode= (valid-ca, self-signed, expired)\n".into(),
        );
    };
    certs.set(mode);
    eprintln!("fake-gen3: TLS certificate → {}", mode.name());
    Json(certs.state()).into_response()
}

/// The basic-auth credentials of the `secured` scenario.
const ES_USER: &str = "elastic";
const ES_PASSWORD: &str = "fixture-password";

fn es_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/elasticsearch")
}

/// A fake Elasticsearch 7 / OpenSearch 2 (module docs).
async fn elasticsearch(
    State(app): State<Arc<App>>,
    axum::extract::Path((flavor, scenario, rest)): axum::extract::Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
    uri: Uri,
) -> Response {
    let (flavor, scenario) = if flavor == "live" {
        match app.es_live.lock() {
            Ok(g) => g.clone(),
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned\n".into()),
        }
    } else {
        (flavor, scenario)
    };
    if !matches!(flavor.as_str(), "es7" | "os2") {
        return text(StatusCode::NOT_FOUND, format!("no flavor {flavor:?} (es7, os2)\n"));
    }
    let dir = es_fixtures().join(&flavor);
    let authorized = match scenario.as_str() {
        "unauthorized" => false,
        "secured" => {
            use base64::Engine as _;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{ES_USER}:{ES_PASSWORD}"))
            );
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(want.as_str())
        }
        "green" | "yellow" | "red" => true,
        _ => return text(StatusCode::NOT_FOUND, format!("no scenario {scenario:?}\n")),
    };
    if !authorized {
        let (file, ctype, challenge) = if flavor == "es7" {
            (
                "unauthorized.json",
                "application/json; charset=UTF-8",
                "Basic realm=\"security\" charset=\"UTF-8\"",
            )
        } else {
            (
                "unauthorized.txt",
                "text/plain; charset=UTF-8",
                "Basic realm=\"OpenSearch Security\"",
            )
        };
        let body = match std::fs::read(dir.join(file)) {
            Ok(b) => b,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("fixture {file}: {e}\n")),
        };
        let mut r = (StatusCode::UNAUTHORIZED, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        return r;
    }
    let set = if scenario == "secured" { "green" } else { scenario.as_str() };
    let query = uri.query().unwrap_or("");
    let file = match (rest.as_str(), query) {
        ("_cluster/health", "") => "cluster_health.json",
        ("_cat/indices", "format=json") => "cat_indices.json",
        ("_cat/aliases", "format=json") => "cat_aliases.json",
        _ => return text(StatusCode::NOT_FOUND, format!("no fixture for /{rest}?{query}\n")),
    };
    match std::fs::read(dir.join(set).join(file)) {
        Ok(b) => {
            let mut r = (StatusCode::OK, b).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("fixture {set}/{file}: {e}\n")),
    }
}

/// `POST /_fake/es?flavor=...&scenario=...`: what `/_es/live/current/` serves.
async fn es_switch(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let flavor = q.get("flavor").cloned().unwrap_or_else(|| "es7".into());
    let scenario = q.get("scenario").cloned().unwrap_or_else(|| "green".into());
    if !matches!(flavor.as_str(), "es7" | "os2") || !matches!(scenario.as_str(), "green" | "yellow" | "red" | "unauthorized" | "secured") {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unknown flavor {flavor:?} or scenario {scenario:?}\n"),
        );
    }
    match app.es_live.lock() {
        Ok(mut g) => *g = (flavor.clone(), scenario.clone()),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned\n".into()),
    }
    Json(json!({"flavor": flavor, "scenario": scenario})).into_response()
}

async fn reset(State(app): State<Arc<App>>) -> Json<Value> {
    for st in app.services.values() {
        st.mode.store(Mode::Ok as u8, Ordering::Relaxed);
    }
    Json(state_json(&app))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        bail!(
            "--listen {}: not a loopback address; the fake commons has no authentication (add --allow-remote to listen there anyway)",
            args.listen
        );
    }
    if args.max_inflight == 0 {
        bail!("--max-inflight must be at least 1");
    }
    if let Some(t) = args.tls_listen
        && !t.ip().is_loopback()
        && !args.allow_remote
    {
        bail!("--tls-listen {t}: not a loopback address (add --allow-remote to listen there anyway)");
    }
    let dir = args.fixtures.clone().unwrap_or_else(default_fixtures);
    let mut app = load(&dir, args.slow_delay, args.max_inflight).with_context(|| format!("loading fixtures from {}", dir.display()))?;
    if args.tls_listen.is_some() {
        let certs = tls::Certs::generate(args.tls_cert).context("generating the TLS certificates")?;
        if let Some(p) = &args.tls_ca_out {
            std::fs::write(p, certs.ca_pem.as_bytes()).with_context(|| format!("writing the CA certificate to {}", p.display()))?;
        }
        app.tls = Some(Arc::new(certs));
    }
    let app = Arc::new(app);
    let router = Router::new()
        .route("/_fake/fault", post(fault))
        .route("/_fake/reset", post(reset))
        .route("/_fake/state", get(state))
        .route("/_fake/tls", post(tls_mode))
        .route("/_es/{flavor}/{scenario}/{*rest}", get(elasticsearch))
        .route("/_fake/es", post(es_switch))
        .fallback(fixtures)
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("local address")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    let https = match (args.tls_listen, &app.tls) {
        (Some(t), Some(certs)) => {
            let l = tls::TlsListener::bind(t, certs.clone()).await?;
            let taddr = l.addr;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on https://{taddr}").context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
            let r = router.clone();
            Some(tokio::spawn(async move { axum::serve(l, r).await }))
        }
        _ => None,
    };
    tokio::select! {
        r = axum::serve(listener, router) => r.context("serving")?,
        _ = shutdown_signal() => {}
    }
    if let Some(h) = https {
        h.abort();
    }
    Ok(())
}

/// The HTTPS side: generated certificates, switchable at run time, and an
/// axum listener doing the TLS handshakes.
mod tls {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::time::Duration;

    use anyhow::Context;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
    use tokio_rustls::rustls::sign::CertifiedKey;

    use super::TlsMode;

    /// The three certificates and the one in use.
    #[derive(Debug)]
    pub struct Certs {
        /// The CA certificate (PEM).
        pub ca_pem: String,
        keys: [Arc<CertifiedKey>; 3],
        not_after: [i64; 3],
        mode: AtomicU8,
    }

    fn names() -> Vec<String> {
        vec!["127.0.0.1".to_string(), "localhost".to_string()]
    }

    fn certified(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> anyhow::Result<Arc<CertifiedKey>> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).context("signing key")?;
        Ok(Arc::new(CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signer)))
    }

    impl Certs {
        /// Generates a CA and the three leaves; `mode` is in use first.
        pub fn generate(mode: TlsMode) -> anyhow::Result<Certs> {
            let ca_key = rcgen::KeyPair::generate()?;
            let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca.distinguished_name.push(rcgen::DnType::CommonName, "csoc-fake-gen3 test CA");
            ca.not_before = rcgen::date_time_ymd(2019, 1, 1);
            ca.not_after = rcgen::date_time_ymd(2045, 1, 1);
            let ca = ca.self_signed(&ca_key)?;
            let leaf = |from: (i32, u8, u8), to: (i32, u8, u8)| -> anyhow::Result<(rcgen::CertificateParams, rcgen::KeyPair)> {
                let mut p = rcgen::CertificateParams::new(names())?;
                p.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
                p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
                p.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
                Ok((p, rcgen::KeyPair::generate()?))
            };
            let (vp, vk) = leaf((2020, 1, 1), (2040, 6, 30))?;
            let (sp, sk) = leaf((2020, 1, 1), (2039, 12, 31))?;
            let (ep, ek) = leaf((2020, 1, 1), (2021, 1, 1))?;
            let not_after = [
                vp.not_after.unix_timestamp(),
                sp.not_after.unix_timestamp(),
                ep.not_after.unix_timestamp(),
            ];
            let valid = vp.signed_by(&vk, &ca, &ca_key)?;
            let self_signed = sp.self_signed(&sk)?;
            let expired = ep.signed_by(&ek, &ca, &ca_key)?;
            Ok(Certs {
                ca_pem: ca.pem(),
                keys: [certified(&valid, &vk)?, certified(&self_signed, &sk)?, certified(&expired, &ek)?],
                not_after,
                mode: AtomicU8::new(index(mode) as u8),
            })
        }

        /// Switches the certificate of new connections.
        pub fn set(&self, mode: TlsMode) {
            self.mode.store(index(mode) as u8, Ordering::Relaxed);
        }

        /// The mode and each certificate's notAfter, JSON.
        pub fn state(&self) -> Value {
            let cur = TlsMode::ALL[usize::from(self.mode.load(Ordering::Relaxed)).min(2)];
            let certs: serde_json::Map<String, Value> = TlsMode::ALL
                .iter()
                .map(|m| (m.name().to_string(), json!({ "not_after": self.not_after[index(*m)] })))
                .collect();
            json!({ "mode": cur.name(), "certs": certs })
        }
    }

    fn index(m: TlsMode) -> usize {
        match m {
            TlsMode::ValidCa => 0,
            TlsMode::SelfSigned => 1,
            TlsMode::Expired => 2,
        }
    }

    impl ResolvesServerCert for Certs {
        fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            self.keys.get(usize::from(self.mode.load(Ordering::Relaxed))).cloned()
        }
    }

    /// Accepts TCP connections and hands axum those whose handshake
    /// succeeded (handshakes run concurrently, each within 10s).
    pub struct TlsListener {
        rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
        /// The bound address.
        pub addr: SocketAddr,
    }

    impl TlsListener {
        pub async fn bind(addr: SocketAddr, certs: Arc<Certs>) -> anyhow::Result<TlsListener> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .context("TLS versions")?
                .with_no_client_auth()
                .with_cert_resolver(certs);
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let addr = listener.local_addr().context("local address")?;
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(async move {
                loop {
                    let (tcp, peer) = match listener.accept().await {
                        Ok(x) => x,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                            let _ = tx.send((tls, peer)).await;
                        }
                    });
                }
            });
            Ok(TlsListener { rx, addr })
        }
    }

    impl axum::serve::Listener for TlsListener {
        type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.rx.recv().await {
                Some(x) => x,
                // The accept task never ends while the process runs.
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> std::io::Result<SocketAddr> {
            Ok(self.addr)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("csoc-fake-gen3: error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csoc-fake-gen3: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        assert_eq!(parse_delay("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_delay("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_delay("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_delay("250"), Ok(Duration::from_millis(250)));
        assert!(parse_delay("3m").is_err(), "above the maximum");
        assert!(parse_delay("soon").is_err());
    }

    #[test]
    fn fixtures_load_with_every_service() {
        let app = load(&default_fixtures(), Duration::from_secs(1), 4).expect("fixtures load");
        for s in [
            "fence",
            "presigned-url-fence",
            "indexd",
            "sheepdog",
            "peregrine",
            "arborist",
            "metadata",
            "guppy",
            "audit",
            "requestor",
            "manifestservice",
            "wts",
            "hatchery",
            "ambassador",
            "sower",
            "ssjdispatcher",
            "portal",
            "revproxy",
            "gen3-workflow",
            "gen3-user-data-library",
        ] {
            assert!(app.services.contains_key(s), "{s}");
            let health = format!("/_svc/{s}{}", health_path(s));
            assert!(app.internal.contains_key(&health), "{health}");
        }
        for p in [
            "/user/_status",
            "/index/_version",
            "/mds/version",
            "/_status",
            "/",
            "/library/_status",
            "/library/_version",
        ] {
            assert!(app.public.contains_key(p), "{p}");
        }
        let uri: Uri = "/index/_stats?month=7".parse().expect("uri");
        let ep = &app.endpoints[lookup(&app.public, &uri).expect("stats")];
        assert_eq!(ep.normal().map(|a| a.status), Some(StatusCode::BAD_REQUEST), "exact query first");
    }
}
