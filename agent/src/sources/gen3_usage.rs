//! The `gen3_usage` source: how much a Gen3 commons holds and serves, from
//! the counts its services publish without authentication
//! (shared/gen3/SERVICES.md, table B), polled rarely.
//!
//! | metric | labels | endpoint (public path through revproxy; in-cluster path) | field |
//! |---|---|---|---|
//! | `gen3_indexd_files` | job | indexd `/index/_stats`; `/_stats` | `fileCount` |
//! | `gen3_indexd_size_bytes` | job | same | `totalFileSize` |
//! | `gen3_drs_objects` | job | indexd `/ga4gh/drs/v1/service-info` (indexd ≥ 2026.08) | `drs.objectCount` |
//! | `gen3_drs_size_bytes` | job | same | `drs.totalObjectSize` |
//! | `gen3_peregrine_projects` | job | peregrine `/api/search/datasets?nodes=…`; `/datasets?nodes=…` | number of projects in the answer |
//! | `gen3_peregrine_records` | job, project, node | same | records of each node type (`peregrine_nodes`, default case, file) per project |
//! | `gen3_discovery_studies` | job | metadata-service `/mds/metadata?_guid_type=discovery_metadata&limit=…&offset=…`; `/metadata?…` | studies listed (pages followed) |
//! | `gen3_mds_aggregate_commons` | job | metadata-service `/mds/aggregate/commons`; `/aggregate/commons` (aggregate MDS only) | number of commons in `commons` |
//! | `gen3_hatchery_workspaces` | job | hatchery `/allCosts`, in-cluster only (hatchery ≥ 2.6.0) | `total_pods` (running workspaces) |
//!
//! All are gauges in base units, stamped with the completion time of the
//! request they come from; `instance` and external labels are added by the
//! pipeline.
//!
//! **When it runs.** Whenever the agent knows a Gen3 base URL
//! (`sources.gen3_usage.base_url`, default `sources.gen3_status.base_url`,
//! which `--gen3-url` sets), or the commons' `namespace`; `enabled: false`
//! turns it off. Where each endpoint is fetched follows `gen3_status`: at the
//! service's own `url` (`sources.gen3_status.services.<service>.url`), else
//! in-cluster when `namespace` is set, else through revproxy at the base URL.
//! Hatchery's `/allCosts` is only reachable in-cluster (`hatchery_url`,
//! default from the hatchery service's `url` or `namespace`); without one it
//! is skipped.
//!
//! **Interval and timeout.** Default interval 5m, not the agent's: indexd
//! `_stats` up to indexd 6.1.x counts and sums every record on each call (slow
//! on large commons), and the counts move slowly. Default timeout 30s (or 80%
//! of a shorter interval); endpoints are fetched concurrently, each within the
//! timeout. Bodies above 4 MiB are not parsed (`parse` error).
//!
//! **Errors** count in `csoc_agent_source_errors_total{source="gen3_usage",kind}`,
//! one per failed endpoint and round: `unauthorized` (401), `forbidden`
//! (403), `not_found` (404), `http_status` (other non-2xx), `timeout`,
//! `connect`, `tls`, `request`, `parse` (the body is not what the endpoint
//! sends). A failed endpoint emits nothing for its metrics (they go stale at
//! the collector); the others are not affected. A commons where an endpoint
//! does not exist (no aggregate MDS, peregrine without `PUBLIC_DATASETS`)
//! can list it in `disable`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::gen3_http::{client_builder, de_opt_duration, fetch, invalid, join, parse_http_url};
use super::gen3_status::{BUILTIN_SERVICES, Gen3StatusConfig};
use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;
use crate::model::{Frame, MetricKind};
use csoc_common::tls::{CaError, read_ca_roots};

const FIELD: &str = "sources.gen3_usage";

/// Default poll interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// Default time limit of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest body parsed.
const BODY_LIMIT: usize = 4 << 20;
/// Most discovery pages followed in one round.
const MAX_PAGES: usize = 1000;

/// The endpoints, by the names `disable` takes.
pub const ENDPOINTS: &[&str] = &[
    "indexd_stats",
    "drs_service_info",
    "peregrine_datasets",
    "mds_discovery",
    "mds_aggregate_commons",
    "hatchery_all_costs",
];

/// Configuration of the `gen3_usage` source (`sources.gen3_usage`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gen3UsageConfig {
    /// Poll when a base URL or namespace is known (default true).
    pub enabled: bool,
    /// The commons' public URL (default: `sources.gen3_status.base_url`).
    pub base_url: Option<String>,
    /// Poll interval (default 5m).
    #[serde(deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
    /// Time limit of one request (default 30s, or 80% of a shorter
    /// interval); must be below the interval.
    #[serde(deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// Extra CA certificates (PEM) to trust (default:
    /// `sources.gen3_status.ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Hatchery's in-cluster base URL for `/allCosts` (default: the hatchery
    /// service's `url` in gen3_status, else in-cluster from `namespace`).
    pub hatchery_url: Option<String>,
    /// Node types counted per project by peregrine (default case, file).
    pub peregrine_nodes: Vec<String>,
    /// Page size of the discovery metadata listing (default 1000).
    pub discovery_page_size: u32,
    /// Endpoints not polled (names in [`ENDPOINTS`]).
    pub disable: Vec<String>,
    /// Value of the `job` label (default: gen3_status's, `gen3`).
    pub job: Option<String>,
}

impl Default for Gen3UsageConfig {
    fn default() -> Self {
        Gen3UsageConfig {
            enabled: true,
            base_url: None,
            interval: None,
            timeout: None,
            ca_file: None,
            hatchery_url: None,
            peregrine_nodes: vec!["case".into(), "file".into()],
            discovery_page_size: 1000,
            disable: Vec::new(),
            job: None,
        }
    }
}

/// Where one endpoint is fetched: the URL before its query.
#[derive(Debug, Clone, PartialEq)]
struct Place {
    root: String,
    in_cluster: bool,
}

/// The resolved settings.
#[derive(Debug, Clone)]
struct Plan {
    indexd: Option<Place>,
    peregrine: Option<Place>,
    metadata: Option<Place>,
    hatchery: Option<String>,
}

impl Gen3UsageConfig {
    fn base_url<'a>(&'a self, status: &'a Gen3StatusConfig) -> &'a str {
        self.base_url.as_deref().unwrap_or(&status.base_url).trim()
    }

    /// Whether the source runs: enabled, and a base URL or namespace known.
    pub fn active(&self, status: &Gen3StatusConfig) -> bool {
        self.enabled && (!self.base_url(status).is_empty() || !status.namespace.trim().is_empty() || self.hatchery_url.is_some())
    }

    /// The interval in force.
    pub fn effective_interval(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }

    /// The request time limit in force.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.effective_interval().mul_f64(0.8)))
    }

    /// Checks every value (`status`: gen3_status's settings, for defaults).
    /// Errors name the field.
    pub fn validate(&self, status: &Gen3StatusConfig) -> Result<(), ConfigError> {
        let interval = self.effective_interval();
        if interval < Duration::from_millis(100) {
            return Err(invalid(
                format!("{FIELD}.interval"),
                format!("{interval:?} is below the minimum of 100ms"),
            ));
        }
        if let Some(t) = self.timeout {
            if t < Duration::from_millis(10) {
                return Err(invalid(format!("{FIELD}.timeout"), format!("{t:?} is below the minimum of 10ms")));
            }
            if t >= interval {
                return Err(invalid(
                    format!("{FIELD}.timeout"),
                    format!("{t:?} must be shorter than the interval ({interval:?})"),
                ));
            }
        }
        for n in &self.peregrine_nodes {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(invalid(
                    format!("{FIELD}.peregrine_nodes"),
                    format!("{n:?} is not a node type name"),
                ));
            }
        }
        if self.discovery_page_size == 0 {
            return Err(invalid(format!("{FIELD}.discovery_page_size"), "must be at least 1"));
        }
        for d in &self.disable {
            if !ENDPOINTS.contains(&d.as_str()) {
                return Err(invalid(
                    format!("{FIELD}.disable"),
                    format!("unknown endpoint {d:?} (one of: {})", ENDPOINTS.join(", ")),
                ));
            }
        }
        if self.job.as_deref() == Some("") {
            return Err(invalid(format!("{FIELD}.job"), "must not be empty"));
        }
        self.plan(status).map(|_| ())
    }

    fn plan(&self, status: &Gen3StatusConfig) -> Result<Plan, ConfigError> {
        let base = match self.base_url(status) {
            "" => None,
            b => {
                let field = if self.base_url.is_some() {
                    format!("{FIELD}.base_url")
                } else {
                    "sources.gen3_status.base_url".to_string()
                };
                Some(parse_http_url(&field, b)?.as_str().trim_end_matches('/').to_string())
            }
        };
        let ns = status.namespace.trim();
        let place = |service: &str| -> Option<Place> {
            if let Some(u) = status.services.get(service).and_then(|s| s.url.as_deref()) {
                return Some(Place {
                    root: u.trim().trim_end_matches('/').to_string(),
                    in_cluster: true,
                });
            }
            if !ns.is_empty()
                && let Some(b) = BUILTIN_SERVICES.iter().find(|b| b.name == service)
            {
                return Some(Place {
                    root: format!("http://{}.{ns}.svc.cluster.local", b.k8s_service),
                    in_cluster: true,
                });
            }
            base.clone().map(|root| Place { root, in_cluster: false })
        };
        let hatchery = match &self.hatchery_url {
            Some(u) => Some(
                parse_http_url(&format!("{FIELD}.hatchery_url"), u)?
                    .as_str()
                    .trim_end_matches('/')
                    .to_string(),
            ),
            None => place("hatchery").filter(|p| p.in_cluster).map(|p| p.root),
        };
        Ok(Plan {
            indexd: place("indexd"),
            peregrine: place("peregrine"),
            metadata: place("metadata"),
            hatchery,
        })
    }
}

/// Errors building the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Gen3UsageError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error("gen3_usage: cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The gen3_usage source.
pub struct Gen3UsageSource {
    plan: Plan,
    client: reqwest::Client,
    interval: Duration,
    timeout: Duration,
    nodes: Vec<String>,
    page_size: u32,
    disabled: Vec<String>,
    job: String,
}

/// One failed endpoint of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointError {
    /// The endpoint (a name of [`ENDPOINTS`]).
    pub endpoint: &'static str,
    /// The error kind.
    pub kind: &'static str,
    /// What happened.
    pub message: String,
}

/// One round of polls.
#[derive(Debug, Default)]
pub struct UsageRound {
    /// The frame to emit.
    pub frame: Frame,
    /// The endpoints that failed.
    pub errors: Vec<EndpointError>,
}

/// A parsed value: (metric, extra labels, value).
type Values = Vec<(&'static str, Vec<(String, String)>, f64)>;

type Polled = Result<(Values, i64), (&'static str, String)>;

/// GETs `url` and parses its JSON body.
async fn get_json(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<(Value, i64), (&'static str, String)> {
    let r = fetch(client, url, timeout, BODY_LIMIT).await;
    if let Some(e) = r.error {
        return Err(e);
    }
    let kind = match r.status {
        200..=299 => None,
        401 => Some("unauthorized"),
        403 => Some("forbidden"),
        404 => Some("not_found"),
        _ => Some("http_status"),
    };
    if let Some(k) = kind {
        return Err((k, format!("HTTP {} from {url}", r.status)));
    }
    if r.truncated {
        return Err(("parse", format!("{url}: answer larger than {BODY_LIMIT} bytes")));
    }
    serde_json::from_slice(&r.body)
        .map(|v| (v, r.ts_ms))
        .map_err(|e| ("parse", format!("{url}: not JSON: {e}")))
}

/// A non-negative count from a JSON number.
fn count(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite() && *x >= 0.0)
}

fn missing(url: &str, what: &str) -> (&'static str, String) {
    ("parse", format!("{url}: no {what} in the answer"))
}

/// Parses indexd `/_stats`.
pub fn parse_indexd_stats(v: &Value) -> Option<(f64, f64)> {
    Some((count(&v["fileCount"])?, count(&v["totalFileSize"])?))
}

/// Parses DRS service-info's `drs.objectCount` and `drs.totalObjectSize`.
pub fn parse_drs(v: &Value) -> Option<(f64, f64)> {
    Some((count(&v["drs"]["objectCount"])?, count(&v["drs"]["totalObjectSize"])?))
}

/// Parses peregrine `/datasets`: per project, per node type, a count.
pub fn parse_datasets(v: &Value) -> Option<Vec<(String, String, f64)>> {
    let mut out = Vec::new();
    for (project, nodes) in v.as_object()? {
        for (node, n) in nodes.as_object()? {
            out.push((project.clone(), node.clone(), count(n)?));
        }
    }
    Some(out)
}

impl Gen3UsageSource {
    /// Validates the config (`status`: gen3_status's, for the defaults) and
    /// builds the source.
    pub fn new(cfg: &Gen3UsageConfig, status: &Gen3StatusConfig) -> Result<Self, Gen3UsageError> {
        cfg.validate(status)?;
        let plan = cfg.plan(status)?;
        let mut b = client_builder(&status.user_agent);
        let (ca, field) = match &cfg.ca_file {
            Some(p) => (Some(p), format!("{FIELD}.ca_file")),
            None => (status.ca_file.as_ref(), "sources.gen3_status.ca_file".to_string()),
        };
        if let Some(p) = ca {
            let roots = read_ca_roots(p).map_err(|e| match e {
                CaError::Read(e) => invalid(field.clone(), format!("cannot read {}: {e}", p.display())),
                CaError::Pem(m) => invalid(field.clone(), format!("{}: {m}", p.display())),
            })?;
            for r in roots {
                b = b.add_root_certificate(r);
            }
        }
        Ok(Gen3UsageSource {
            plan,
            client: b.build().map_err(Gen3UsageError::Client)?,
            interval: cfg.effective_interval(),
            timeout: cfg.effective_timeout(),
            nodes: cfg.peregrine_nodes.clone(),
            page_size: cfg.discovery_page_size,
            disabled: cfg.disable.clone(),
            job: cfg.job.clone().unwrap_or_else(|| status.job.clone()),
        })
    }

    fn on(&self, endpoint: &str) -> bool {
        !self.disabled.iter().any(|d| d == endpoint)
    }

    async fn indexd_stats(&self) -> Option<Polled> {
        let p = self.plan.indexd.as_ref().filter(|_| self.on("indexd_stats"))?;
        let url = join(&p.root, if p.in_cluster { "/_stats" } else { "/index/_stats" });
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let (files, size) = parse_indexd_stats(&v).ok_or_else(|| missing(&url, "fileCount and totalFileSize"))?;
            Ok((
                vec![("gen3_indexd_files", vec![], files), ("gen3_indexd_size_bytes", vec![], size)],
                ts,
            ))
        }))
    }

    async fn drs(&self) -> Option<Polled> {
        let p = self.plan.indexd.as_ref().filter(|_| self.on("drs_service_info"))?;
        let url = join(&p.root, "/ga4gh/drs/v1/service-info");
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let (n, size) = parse_drs(&v).ok_or_else(|| missing(&url, "drs.objectCount and drs.totalObjectSize"))?;
            Ok((vec![("gen3_drs_objects", vec![], n), ("gen3_drs_size_bytes", vec![], size)], ts))
        }))
    }

    async fn datasets(&self) -> Option<Polled> {
        let p = self.plan.peregrine.as_ref().filter(|_| self.on("peregrine_datasets"))?;
        let path = if p.in_cluster { "/datasets" } else { "/api/search/datasets" };
        let url = format!("{}?nodes={}", join(&p.root, path), self.nodes.join(","));
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let rows = parse_datasets(&v).ok_or_else(|| missing(&url, "{project: {node: count}} object"))?;
            let projects = v.as_object().map_or(0, serde_json::Map::len) as f64;
            let mut out: Values = vec![("gen3_peregrine_projects", vec![], projects)];
            for (project, node, n) in rows {
                out.push((
                    "gen3_peregrine_records",
                    vec![("project".into(), project), ("node".into(), node)],
                    n,
                ));
            }
            Ok((out, ts))
        }))
    }

    async fn discovery(&self) -> Option<Polled> {
        let p = self.plan.metadata.as_ref().filter(|_| self.on("mds_discovery"))?;
        let root = join(&p.root, if p.in_cluster { "/metadata" } else { "/mds/metadata" });
        let limit = self.page_size as usize;
        let mut total = 0usize;
        let mut ts = 0;
        for page in 0..MAX_PAGES {
            let url = format!(
                "{root}?_guid_type=discovery_metadata&limit={limit}&offset={}",
                page.saturating_mul(limit)
            );
            let (v, t) = match get_json(&self.client, &url, self.timeout).await {
                Ok(x) => x,
                Err(e) => return Some(Err(e)),
            };
            ts = t;
            // A list of GUIDs, or (with data=True) an object keyed by GUID.
            let n = match &v {
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                _ => return Some(Err(missing(&url, "list of GUIDs"))),
            };
            total += n;
            if n < limit {
                break;
            }
        }
        Some(Ok((vec![("gen3_discovery_studies", vec![], total as f64)], ts)))
    }

    async fn aggregate_commons(&self) -> Option<Polled> {
        let p = self.plan.metadata.as_ref().filter(|_| self.on("mds_aggregate_commons"))?;
        let url = join(
            &p.root,
            if p.in_cluster {
                "/aggregate/commons"
            } else {
                "/mds/aggregate/commons"
            },
        );
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let n = v["commons"].as_array().ok_or_else(|| missing(&url, "commons list"))?.len();
            Ok((vec![("gen3_mds_aggregate_commons", vec![], n as f64)], ts))
        }))
    }

    async fn hatchery(&self) -> Option<Polled> {
        let root = self.plan.hatchery.as_ref().filter(|_| self.on("hatchery_all_costs"))?;
        let url = join(root, "/allCosts");
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let n = count(&v["total_pods"])
                .or_else(|| v["pods"].as_array().map(|a| a.len() as f64))
                .ok_or_else(|| missing(&url, "total_pods"))?;
            Ok((vec![("gen3_hatchery_workspaces", vec![], n)], ts))
        }))
    }

    /// Polls every endpoint once, concurrently, and builds the frame.
    pub async fn collect(&self, source: &str) -> UsageRound {
        let (a, b, c, d, e, f) = tokio::join!(
            self.indexd_stats(),
            self.drs(),
            self.datasets(),
            self.discovery(),
            self.aggregate_commons(),
            self.hatchery()
        );
        let mut round = UsageRound {
            frame: Frame::new(source),
            errors: Vec::new(),
        };
        for (name, res) in ENDPOINTS.iter().zip([a, b, c, d, e, f]) {
            match res {
                None => {}
                Some(Err((kind, message))) => round.errors.push(EndpointError {
                    endpoint: name,
                    kind,
                    message,
                }),
                Some(Ok((values, ts))) => {
                    for (metric, labels, v) in values {
                        if !round.frame.metadata.iter().any(|m| m.name == metric) {
                            let (help, unit) = help(metric);
                            round.frame.meta(metric, MetricKind::Gauge, help, unit);
                        }
                        let mut l: Vec<(&str, &str)> = vec![("job", self.job.as_str())];
                        l.extend(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                        round.frame.push(metric, &l, ts, v);
                    }
                }
            }
        }
        round
    }
}

/// HELP text and unit of each metric.
fn help(metric: &str) -> (&'static str, &'static str) {
    match metric {
        "gen3_indexd_files" => ("Files indexed by indexd (fileCount of /_stats).", ""),
        "gen3_indexd_size_bytes" => ("Total size of the files indexed by indexd (totalFileSize of /_stats).", "bytes"),
        "gen3_drs_objects" => ("DRS objects (drs.objectCount of the DRS service-info).", ""),
        "gen3_drs_size_bytes" => (
            "Total size of the DRS objects (drs.totalObjectSize of the DRS service-info).",
            "bytes",
        ),
        "gen3_peregrine_projects" => ("Projects in peregrine's public datasets counts.", ""),
        "gen3_peregrine_records" => (
            "Records of one node type in one project, from peregrine's public datasets counts.",
            "",
        ),
        "gen3_discovery_studies" => ("Studies in the metadata service's discovery metadata.", ""),
        "gen3_mds_aggregate_commons" => ("Commons aggregated by the metadata service (aggregate MDS).", ""),
        "gen3_hatchery_workspaces" => ("Running workspaces (hatchery /allCosts total_pods).", ""),
        _ => ("", ""),
    }
}

impl Source for Gen3UsageSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            tracing::info!(
                source = %cx.name,
                indexd = ?self.plan.indexd.as_ref().map(|p| p.root.as_str()),
                peregrine = ?self.plan.peregrine.as_ref().map(|p| p.root.as_str()),
                metadata = ?self.plan.metadata.as_ref().map(|p| p.root.as_str()),
                hatchery = ?self.plan.hatchery,
                interval = ?self.interval,
                timeout = ?self.timeout,
                "gen3_usage polling"
            );
            let mut failing: BTreeMap<&'static str, bool> = BTreeMap::new();
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let round = tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    r = self.collect(&cx.name) => r,
                };
                for ep in ENDPOINTS {
                    let err = round.errors.iter().find(|e| e.endpoint == *ep);
                    let was = failing.get(ep).copied().unwrap_or(false);
                    match err {
                        Some(e) => {
                            cx.error(e.kind);
                            if !was {
                                tracing::warn!(source = %cx.name, endpoint = ep, kind = e.kind, error = %e.message, "Gen3 usage endpoint unavailable");
                            }
                        }
                        None if was => tracing::info!(source = %cx.name, endpoint = ep, "Gen3 usage endpoint available again"),
                        None => {}
                    }
                    failing.insert(ep, err.is_some());
                }
                if !cx.emit(round.frame).await {
                    break;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture(name: &str) -> Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/gen3/fixtures/status")
            .join(name);
        let b = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        serde_json::from_slice(&b).expect("fixture is JSON")
    }

    #[test]
    fn fixtures_parse() {
        assert_eq!(
            parse_indexd_stats(&fixture("indexd._stats.json")),
            Some((1_842_217.0, 412_877_613_095_342.0))
        );
        assert_eq!(parse_indexd_stats(&fixture("indexd._stats.empty.json")), Some((0.0, 0.0)));
        assert_eq!(
            parse_drs(&fixture("indexd.drs-service-info.json")),
            Some((1_842_217.0, 412_877_613_095_342.0))
        );
        let d = parse_datasets(&fixture("peregrine.datasets.json")).expect("datasets");
        assert!(d.contains(&("CMC-LUAD".into(), "case".into(), 812.0)), "{d:?}");
        assert_eq!(d.len(), 4);
        assert_eq!(parse_indexd_stats(&serde_json::json!({"fileCount": -1, "totalFileSize": 0})), None);
    }

    /// A commons answering the public usage paths from the fixtures, with
    /// peregrine refusing anonymous callers (403).
    async fn serve() -> String {
        use axum::http::{StatusCode, Uri};
        async fn answer(uri: Uri) -> (StatusCode, Vec<u8>) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/gen3/fixtures/status");
            let file = match uri.path() {
                "/index/_stats" => "indexd._stats.json",
                "/ga4gh/drs/v1/service-info" => "indexd.drs-service-info.json",
                "/mds/aggregate/commons" => "metadata.aggregate-commons.json",
                "/hatchery/allCosts" => "hatchery.allCosts.json",
                "/api/search/datasets" => return (StatusCode::FORBIDDEN, b"{}".to_vec()),
                "/mds/metadata" => {
                    // Two full pages of 2, then one GUID.
                    let offset: usize = uri
                        .query()
                        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("offset=")))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let body = match offset {
                        0 => r#"["a","b"]"#,
                        2 => r#"["c","d"]"#,
                        _ => r#"["e"]"#,
                    };
                    return (StatusCode::OK, body.as_bytes().to_vec());
                }
                _ => return (StatusCode::NOT_FOUND, Vec::new()),
            };
            (StatusCode::OK, std::fs::read(dir.join(file)).unwrap_or_default())
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, axum::Router::new().fallback(answer)).await;
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_refused_endpoint_is_an_error_and_the_others_report() {
        let base = serve().await;
        let status = Gen3StatusConfig {
            base_url: base.clone(),
            ..Default::default()
        };
        let cfg = Gen3UsageConfig {
            hatchery_url: Some(format!("{base}/hatchery")),
            discovery_page_size: 2,
            timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let src = Gen3UsageSource::new(&cfg, &status).expect("valid");
        let r = src.collect("gen3_usage").await;
        let get = |name: &str| {
            r.frame
                .samples
                .iter()
                .find(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == name))
                .map(|s| s.value)
        };
        assert_eq!(get("gen3_indexd_files"), Some(1_842_217.0));
        assert_eq!(get("gen3_indexd_size_bytes"), Some(412_877_613_095_342.0));
        assert_eq!(get("gen3_drs_objects"), Some(1_842_217.0));
        assert_eq!(get("gen3_mds_aggregate_commons"), Some(2.0));
        assert_eq!(get("gen3_hatchery_workspaces"), Some(2.0));
        assert_eq!(get("gen3_discovery_studies"), Some(5.0), "pages followed");
        assert_eq!(get("gen3_peregrine_projects"), None, "403: nothing emitted");
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert_eq!((r.errors[0].endpoint, r.errors[0].kind), ("peregrine_datasets", "forbidden"));
        assert!(
            r.frame
                .metadata
                .iter()
                .any(|m| m.name == "gen3_indexd_size_bytes" && m.unit == "bytes")
        );
        // Compliance: runs, emits, counts.
        let frame = crate::sources::test_util::run_and_assert_source_compliance(
            Box::new(Gen3UsageSource::new(&cfg, &status).expect("valid")),
            "gen3_usage",
        )
        .await;
        assert_eq!(frame.source, "gen3_usage");
    }

    #[test]
    fn runs_with_a_base_url_and_validates() {
        let mut status = Gen3StatusConfig::default();
        let mut c = Gen3UsageConfig::default();
        assert!(!c.active(&status), "no URL: off");
        status.base_url = "https://data.example.org".into();
        assert!(c.active(&status));
        assert_eq!(c.effective_interval(), DEFAULT_INTERVAL);
        assert_eq!(c.effective_timeout(), DEFAULT_TIMEOUT);
        let plan = c.plan(&status).expect("plan");
        assert_eq!(plan.indexd.map(|p| p.root), Some("https://data.example.org".into()));
        assert_eq!(plan.hatchery, None, "hatchery is in-cluster only");
        status.namespace = "gen3".into();
        let plan = c.plan(&status).expect("plan");
        assert_eq!(plan.hatchery.as_deref(), Some("http://hatchery-service.gen3.svc.cluster.local"));
        c.disable = vec!["nope".into()];
        assert!(
            c.validate(&status)
                .expect_err("bad")
                .to_string()
                .contains("sources.gen3_usage.disable")
        );
        c.disable.clear();
        c.interval = Some(Duration::from_secs(10));
        c.timeout = Some(Duration::from_secs(10));
        assert!(
            c.validate(&status)
                .expect_err("bad")
                .to_string()
                .contains("sources.gen3_usage.timeout")
        );
        c.enabled = false;
        assert!(!c.active(&status));
    }
}
