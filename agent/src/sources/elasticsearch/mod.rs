//! The `elasticsearch` source: the health of the Elasticsearch or OpenSearch
//! cluster behind guppy, and the document count of its indices and aliases,
//! under elasticsearch_exporter's names (prometheus-community), so its
//! dashboards and alert rules work unchanged.
//!
//! Each round asks, in order, `GET <url>/_cluster/health`,
//! `GET <url>/_cat/indices?format=json` and `GET <url>/_cat/aliases?format=json`
//! (the first configured URL that answers the health request serves the two
//! others). It reports:
//!
//! | metric | labels | from |
//! |---|---|---|
//! | `elasticsearch_cluster_health_up` | job | 1 when `_cluster/health` answered 200 with its JSON, else 0 |
//! | `elasticsearch_cluster_health_status` | job, cluster, color | 1 for the current color (`green`, `yellow`, `red`), 0 for the two others, as the exporter does |
//! | `elasticsearch_cluster_health_number_of_nodes` | job, cluster | `number_of_nodes` |
//! | `elasticsearch_cluster_health_number_of_data_nodes` | job, cluster | `number_of_data_nodes` |
//! | `elasticsearch_cluster_health_active_primary_shards` | job, cluster | `active_primary_shards` |
//! | `elasticsearch_cluster_health_active_shards` | job, cluster | `active_shards` |
//! | `elasticsearch_cluster_health_relocating_shards` | job, cluster | `relocating_shards` |
//! | `elasticsearch_cluster_health_initializing_shards` | job, cluster | `initializing_shards` |
//! | `elasticsearch_cluster_health_unassigned_shards` | job, cluster | `unassigned_shards` |
//! | `elasticsearch_cluster_health_number_of_pending_tasks` | job, cluster | `number_of_pending_tasks` |
//! | `elasticsearch_index_stats_up` | job | 1 when `_cat/indices` answered and parsed, else 0 (only after a good health answer) |
//! | `elasticsearch_indices_docs` | job, cluster, index | `docs.count` of `_cat/indices`: the documents of the index's primary shards |
//! | `elasticsearch_indices_docs_primary` | job, cluster, index | the same value under the exporter's per-index name |
//! | `elasticsearch_alias_stats_up` | job | 1 when `_cat/aliases` answered and parsed, else 0 |
//! | `elasticsearch_aliases_docs_primary` | job, cluster, alias, index | for each alias and each index it points to, that index's `docs.count` (the exporter's alias scheme: sum over `index` for the alias's total) |
//!
//! `cluster` is the `cluster_name` of the health answer. The issue's
//! `elasticsearch_indices_docs{index}` is the exporter's name for a node's
//! document count, reused here per index; `elasticsearch_indices_docs_primary`
//! is the exporter's own per-index name; both carry the same value.
//!
//! **Which indices.** Every index (and alias) whose name does not start with
//! `.` (system and security indices such as `.opendistro_security`), or those
//! matching `indices` (globs). An index without a count (red: no primary
//! shard active, `docs.count` is `null`) reports none that round; its
//! aliases neither.
//!
//! **Errors** count in `csoc_agent_source_errors_total{source="elasticsearch",kind}`,
//! one per failed request and round: `unauthorized` (401), `forbidden`
//! (403), `http_status` (other non-2xx), `timeout`, `connect`, `tls`,
//! `request`, `parse` (the body is not what the endpoint sends),
//! `password_file` (the basic-auth password file cannot be read). Each
//! endpoint's failure is logged once when it starts and once when it ends.
//! A red cluster is not an error: it is data
//! (`elasticsearch_cluster_health_status{color="red"} 1`).

mod config;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::gen3_http::{Fetched, client_builder, fetch_request, invalid, join};
use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;
use crate::model::{Frame, MetricKind};
use csoc_common::tls::{CaError, read_ca_roots};

pub use config::{DEFAULT_TIMEOUT, ElasticsearchConfig, EsBasicAuth, EsTlsConfig};
use config::{FIELD, IndexFilter};

/// Largest body parsed (a `_cat/indices` of thousands of indices fits).
const BODY_LIMIT: usize = 16 << 20;

/// The colors of `elasticsearch_cluster_health_status`.
const COLORS: [&str; 3] = ["green", "yellow", "red"];

/// The endpoints, as named in logs.
const ENDPOINTS: [&str; 3] = ["cluster_health", "cat_indices", "cat_aliases"];

/// The health counts reported, field of `_cluster/health` → metric suffix.
const HEALTH_FIELDS: [(&str, &str); 8] = [
    ("number_of_nodes", "The number of nodes in the cluster."),
    ("number_of_data_nodes", "The number of data nodes in the cluster."),
    ("active_primary_shards", "The number of active primary shards."),
    ("active_shards", "The number of active shards, replicas included."),
    ("relocating_shards", "The number of shards moving from one node to another."),
    ("initializing_shards", "The number of shards being created."),
    ("unassigned_shards", "The number of shards not allocated to any node."),
    ("number_of_pending_tasks", "Cluster-level changes not yet executed."),
];

/// Errors building the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElasticsearchError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error("elasticsearch: cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The elasticsearch source.
pub struct ElasticsearchSource {
    urls: Vec<String>,
    client: reqwest::Client,
    auth: Option<EsBasicAuth>,
    interval: Duration,
    timeout: Duration,
    filter: IndexFilter,
    job: String,
}

impl ElasticsearchSource {
    /// Validates the config (`default_interval`: the agent's) and builds the
    /// source.
    pub fn new(cfg: &ElasticsearchConfig, default_interval: Duration) -> Result<Self, ElasticsearchError> {
        cfg.validate(default_interval)?;
        let mut b = client_builder(concat!("csoc-agent/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(cfg.tls.insecure_skip_verify)
            .pool_max_idle_per_host(2);
        if let Some(p) = &cfg.tls.ca_file {
            let field = format!("{FIELD}.tls.ca_file");
            let roots = read_ca_roots(p).map_err(|e| match e {
                CaError::Read(e) => invalid(field.clone(), format!("cannot read {}: {e}", p.display())),
                CaError::Pem(m) => invalid(field.clone(), format!("{}: {m}", p.display())),
            })?;
            for r in roots {
                b = b.add_root_certificate(r);
            }
        }
        Ok(ElasticsearchSource {
            urls: cfg.all_urls(),
            client: b.build().map_err(ElasticsearchError::Client)?,
            auth: cfg.basic_auth.clone(),
            interval: cfg.effective_interval(default_interval),
            timeout: cfg.effective_timeout(default_interval),
            filter: IndexFilter::new(&cfg.indices)?,
            job: cfg.job.clone(),
        })
    }
}

/// A failed request of one round.
#[derive(Debug, Clone, PartialEq)]
pub struct EsError {
    /// `cluster_health`, `cat_indices` or `cat_aliases`.
    pub endpoint: &'static str,
    /// The error kind (see the module docs).
    pub kind: &'static str,
    /// What happened (no credentials).
    pub message: String,
}

/// What one round gave.
pub struct EsRound {
    /// The samples.
    pub frame: Frame,
    /// The failed requests.
    pub errors: Vec<EsError>,
}

/// `_cluster/health`: the fields reported (others ignored).
#[derive(Debug, Deserialize)]
struct Health {
    cluster_name: String,
    status: String,
    #[serde(flatten)]
    counts: BTreeMap<String, serde_json::Value>,
}

/// One row of `_cat/indices?format=json` (every value is a string; counts
/// are `null` for an index without an active primary).
#[derive(Debug, Deserialize)]
struct CatIndex {
    index: String,
    #[serde(rename = "docs.count")]
    docs_count: Option<String>,
}

/// One row of `_cat/aliases?format=json`.
#[derive(Debug, Deserialize)]
struct CatAlias {
    alias: String,
    index: String,
}

/// The kind of a non-2xx status.
fn status_kind(status: u16) -> &'static str {
    match status {
        401 => "unauthorized",
        403 => "forbidden",
        _ => "http_status",
    }
}

/// A parsed health answer: cluster name, status color, the counts reported.
type ParsedHealth = (String, String, Vec<(&'static str, f64)>);

/// Parses a `_cluster/health` body.
fn parse_health(body: &[u8]) -> Result<ParsedHealth, String> {
    let h: Health = serde_json::from_slice(body).map_err(|e| format!("not a _cluster/health answer: {e}"))?;
    if !COLORS.contains(&h.status.as_str()) {
        return Err(format!("unknown status {:?}", h.status));
    }
    let mut counts = Vec::new();
    for (field, _) in HEALTH_FIELDS {
        // number_of_pending_tasks and the shard counts are in every version
        // since 1.x; a missing one is not reported rather than invented.
        if let Some(v) = h.counts.get(field).and_then(serde_json::Value::as_f64) {
            counts.push((field, v));
        }
    }
    if !counts.iter().any(|(f, _)| *f == "number_of_nodes") {
        return Err("no number_of_nodes in the _cluster/health answer".into());
    }
    Ok((h.cluster_name, h.status, counts))
}

/// Parses a `_cat/indices?format=json` body: index → documents (None when
/// the count is null).
fn parse_indices(body: &[u8]) -> Result<BTreeMap<String, Option<f64>>, String> {
    let rows: Vec<CatIndex> = serde_json::from_slice(body).map_err(|e| format!("not a _cat/indices?format=json answer: {e}"))?;
    let mut out = BTreeMap::new();
    for r in rows {
        let docs = match r.docs_count {
            Some(s) => Some(
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("index {:?}: docs.count {s:?} is not a number", r.index))?,
            ),
            None => None,
        };
        out.insert(r.index, docs);
    }
    Ok(out)
}

/// Parses a `_cat/aliases?format=json` body: (alias, index) pairs.
fn parse_aliases(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let rows: Vec<CatAlias> = serde_json::from_slice(body).map_err(|e| format!("not a _cat/aliases?format=json answer: {e}"))?;
    Ok(rows.into_iter().map(|r| (r.alias, r.index)).collect())
}

impl ElasticsearchSource {
    /// The password, read from its file (None without basic auth).
    fn credentials(&self) -> Result<Option<(String, String)>, String> {
        let Some(a) = &self.auth else { return Ok(None) };
        let pw = std::fs::read_to_string(&a.password_file)
            .map_err(|e| format!("cannot read the password file {}: {e}", a.password_file.display()))?;
        Ok(Some((a.username.clone(), pw.trim().to_string())))
    }

    async fn get(&self, base: &str, path: &str, creds: &Option<(String, String)>) -> Fetched {
        let mut rb = self.client.get(join(base, path)).header("Accept", "application/json");
        if let Some((u, p)) = creds {
            rb = rb.basic_auth(u, Some(p));
        }
        fetch_request(rb, self.timeout, BODY_LIMIT).await
    }

    /// A 200 body, or the error of the request.
    fn body_of(endpoint: &'static str, url: &str, f: Fetched) -> Result<(Vec<u8>, i64), EsError> {
        if let Some((kind, msg)) = f.error {
            return Err(EsError {
                endpoint,
                kind,
                message: format!("{url}: {msg}"),
            });
        }
        if !(200..300).contains(&f.status) {
            return Err(EsError {
                endpoint,
                kind: status_kind(f.status),
                message: format!("{url}: HTTP {}", f.status),
            });
        }
        if f.truncated {
            return Err(EsError {
                endpoint,
                kind: "parse",
                message: format!("{url}: body larger than {BODY_LIMIT} bytes"),
            });
        }
        Ok((f.body, f.ts_ms))
    }

    /// One round: the three requests and the frame.
    pub async fn collect(&self, source: &str) -> EsRound {
        let mut frame = Frame::new(source);
        let mut errors = Vec::new();
        let job = self.job.as_str();
        declare(&mut frame);
        let creds = match self.credentials() {
            Ok(c) => c,
            Err(message) => {
                errors.push(EsError {
                    endpoint: "cluster_health",
                    kind: "password_file",
                    message,
                });
                frame.push("elasticsearch_cluster_health_up", &[("job", job)], csoc_common::time::now_ms(), 0.0);
                return EsRound { frame, errors };
            }
        };
        // The health answer of the first URL that gives one.
        let mut health = None;
        let mut last_err = None;
        for base in &self.urls {
            let url = join(base, "/_cluster/health");
            let f = self.get(base, "/_cluster/health", &creds).await;
            match Self::body_of("cluster_health", &url, f).and_then(|(b, ts)| {
                parse_health(&b).map(|h| (h, ts)).map_err(|m| EsError {
                    endpoint: "cluster_health",
                    kind: "parse",
                    message: format!("{url}: {m}"),
                })
            }) {
                Ok(h) => {
                    health = Some((base.clone(), h));
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some((base, ((cluster, status, counts), ts))) = health else {
            errors.extend(last_err);
            frame.push("elasticsearch_cluster_health_up", &[("job", job)], csoc_common::time::now_ms(), 0.0);
            return EsRound { frame, errors };
        };
        frame.push("elasticsearch_cluster_health_up", &[("job", job)], ts, 1.0);
        for color in COLORS {
            let v = if color == status { 1.0 } else { 0.0 };
            frame.push(
                "elasticsearch_cluster_health_status",
                &[("job", job), ("cluster", cluster.as_str()), ("color", color)],
                ts,
                v,
            );
        }
        for (field, v) in counts {
            frame.push(
                &format!("elasticsearch_cluster_health_{field}"),
                &[("job", job), ("cluster", cluster.as_str())],
                ts,
                v,
            );
        }

        let (indices, aliases) = tokio::join!(
            self.get(&base, "/_cat/indices?format=json", &creds),
            self.get(&base, "/_cat/aliases?format=json", &creds)
        );
        let url = join(&base, "/_cat/indices?format=json");
        let docs = match Self::body_of("cat_indices", &url, indices).and_then(|(b, ts)| {
            parse_indices(&b).map(|d| (d, ts)).map_err(|m| EsError {
                endpoint: "cat_indices",
                kind: "parse",
                message: format!("{url}: {m}"),
            })
        }) {
            Ok((docs, ts)) => {
                frame.push("elasticsearch_index_stats_up", &[("job", job)], ts, 1.0);
                for (index, n) in &docs {
                    let Some(n) = n else { continue };
                    if !self.filter.matches(index) {
                        continue;
                    }
                    let l = [("job", job), ("cluster", cluster.as_str()), ("index", index.as_str())];
                    frame.push("elasticsearch_indices_docs", &l, ts, *n);
                    frame.push("elasticsearch_indices_docs_primary", &l, ts, *n);
                }
                Some((docs, ts))
            }
            Err(e) => {
                frame.push("elasticsearch_index_stats_up", &[("job", job)], csoc_common::time::now_ms(), 0.0);
                errors.push(e);
                None
            }
        };
        let url = join(&base, "/_cat/aliases?format=json");
        match Self::body_of("cat_aliases", &url, aliases).and_then(|(b, ts)| {
            parse_aliases(&b).map(|a| (a, ts)).map_err(|m| EsError {
                endpoint: "cat_aliases",
                kind: "parse",
                message: format!("{url}: {m}"),
            })
        }) {
            Ok((pairs, ts)) => {
                frame.push("elasticsearch_alias_stats_up", &[("job", job)], ts, 1.0);
                if let Some((docs, _)) = &docs {
                    for (alias, index) in &pairs {
                        if !self.filter.matches(alias) && !self.filter.matches(index) {
                            continue;
                        }
                        let Some(Some(n)) = docs.get(index) else { continue };
                        frame.push(
                            "elasticsearch_aliases_docs_primary",
                            &[
                                ("job", job),
                                ("cluster", cluster.as_str()),
                                ("alias", alias.as_str()),
                                ("index", index.as_str()),
                            ],
                            ts,
                            *n,
                        );
                    }
                }
            }
            Err(e) => {
                frame.push("elasticsearch_alias_stats_up", &[("job", job)], csoc_common::time::now_ms(), 0.0);
                errors.push(e);
            }
        }
        EsRound { frame, errors }
    }
}

/// The families' metadata.
fn declare(frame: &mut Frame) {
    let g = MetricKind::Gauge;
    frame.meta(
        "elasticsearch_cluster_health_up",
        g,
        "Was the last request of the cluster health endpoint successful.",
        "",
    );
    frame.meta(
        "elasticsearch_cluster_health_status",
        g,
        "Whether all primary and replica shards are allocated: 1 for the cluster's color.",
        "",
    );
    for (field, help) in HEALTH_FIELDS {
        frame.meta(&format!("elasticsearch_cluster_health_{field}"), g, help, "");
    }
    frame.meta(
        "elasticsearch_index_stats_up",
        g,
        "Was the last request of _cat/indices successful.",
        "",
    );
    frame.meta(
        "elasticsearch_indices_docs",
        g,
        "Count of documents of the index (primary shards), from _cat/indices.",
        "",
    );
    frame.meta(
        "elasticsearch_indices_docs_primary",
        g,
        "Count of documents with only primary shards.",
        "",
    );
    frame.meta(
        "elasticsearch_alias_stats_up",
        g,
        "Was the last request of _cat/aliases successful.",
        "",
    );
    frame.meta(
        "elasticsearch_aliases_docs_primary",
        g,
        "Count of documents with only primary shards of each index behind the alias.",
        "",
    );
}

impl Source for ElasticsearchSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            tracing::info!(
                source = %cx.name,
                urls = ?self.urls,
                interval = ?self.interval,
                timeout = ?self.timeout,
                basic_auth = self.auth.is_some(),
                "elasticsearch polling"
            );
            let mut failing: BTreeMap<&'static str, Option<&'static str>> = BTreeMap::new();
            let mut vanished = super::vanished::Vanished::default();
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
                    let err = round.errors.iter().find(|e| e.endpoint == ep);
                    let was = failing.get(ep).copied().flatten();
                    match err {
                        Some(e) => {
                            cx.error(e.kind);
                            if was != Some(e.kind) {
                                tracing::warn!(source = %cx.name, endpoint = ep, kind = e.kind, error = %e.message, "Elasticsearch request failed");
                            }
                        }
                        None if was.is_some()
                            && (ep == "cluster_health" || !round.errors.iter().any(|e| e.endpoint == "cluster_health")) =>
                        {
                            tracing::info!(source = %cx.name, endpoint = ep, "Elasticsearch request succeeds again");
                        }
                        None => {}
                    }
                    // After a failed health request the two others are not
                    // sent: their state is kept.
                    let health_failed = round.errors.iter().any(|e| e.endpoint == "cluster_health");
                    if ep == "cluster_health" || !health_failed {
                        failing.insert(ep, err.map(|e| e.kind));
                    }
                }
                let mut frame = round.frame;
                vanished.mark(&mut frame, csoc_common::time::now_ms());
                if !cx.emit(frame).await {
                    break;
                }
            }
        })
    }
}
