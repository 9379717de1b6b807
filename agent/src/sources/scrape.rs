//! The `scrape` source: scrapes Prometheus text-format and OpenMetrics
//! targets (fence's `/metrics`, node_exporter, any exporter) with
//! Prometheus's scrape semantics, configured as `sources.scrape.jobs` in the
//! agent's YAML (field names as in Prometheus's `scrape_configs`) or with
//! `--scrape [JOB=]URL`.
//!
//! Targets come from `static_configs` and `file_sd_configs` (Prometheus's
//! file_sd JSON/YAML, re-read when a file changes, checked every second, and
//! every `refresh_interval`). Each target's labels start as its group's
//! labels plus `__address__`, `__scheme__`, `__metrics_path__`,
//! `__scrape_interval__`, `__scrape_timeout__`, `__param_<name>`, `job` (and
//! `__meta_filepath` for file_sd); `relabel_configs` run on them; then
//! `instance` defaults to `__address__` and every `__`-prefixed label is
//! dropped. The URL is built from `__scheme__`, `__address__`,
//! `__metrics_path__` and `params` overridden by `__param_*`.
//!
//! One loop per target runs at the job's `scrape_interval`, offset by a
//! stable per-target jitter, each scrape limited to `scrape_timeout`, with the
//! `Accept` header Prometheus sends. Every scrape yields `up`,
//! `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling` and `scrape_series_added`. The
//! target's labels are attached to each sample: with `honor_labels: false` (the
//! default) a clashing exposed label is kept as `exported_<name>`; with
//! `honor_labels: true` the exposed one wins. `metric_relabel_configs` then
//! run on each sample; more than `sample_limit` samples after it fails the
//! whole scrape (`up` 0). Exposed timestamps are used when
//! `honor_timestamps` (default true).
//!
//! Staleness: a series present in one scrape and absent from the next gets a
//! staleness marker (`csoc_proto::STALE_NAN_BITS`) at the new scrape's time;
//! when a scrape fails every series of the previous one does; when a target
//! disappears (relabelling or service discovery change) all its series,
//! `up` and the other report series do. Series exposed with their own
//! timestamp are not tracked, as in Prometheus. The agent shutting down writes
//! no markers (as Prometheus).
//!
//! The pipeline only adds `instance` when a sample has none, so the target's
//! `instance` reaches the collector unchanged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use serde::{Deserialize, Deserializer};
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;
use crate::model::{Frame, Labels, Sample, has_label, set_label, sort_labels};
use csoc_common::duration::parse_duration;
use csoc_common::error::error_chain;
use csoc_common::exposition::{Format, parse_bytes};
use csoc_common::labels::valid_label_name;
use csoc_common::relabel::{RelabelConfig, relabel};

/// The `Accept` header Prometheus (2.x) sends.
pub const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Configuration of the `scrape` source (`sources.scrape`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    /// Scrape jobs; the source runs when there is at least one.
    pub jobs: Vec<ScrapeJobConfig>,
}

/// One scrape job (Prometheus's `scrape_config`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeJobConfig {
    /// Value of the `job` label; unique among jobs.
    pub job_name: String,
    /// How often to scrape (default: the agent's `interval`).
    #[serde(deserialize_with = "de_opt_duration")]
    pub scrape_interval: Option<Duration>,
    /// Time limit of one scrape (default 10s, or the interval if shorter).
    #[serde(deserialize_with = "de_opt_duration")]
    pub scrape_timeout: Option<Duration>,
    /// Path of the metrics (default `/metrics`).
    pub metrics_path: String,
    /// `http` (default) or `https`.
    pub scheme: String,
    /// URL query parameters.
    pub params: BTreeMap<String, Vec<String>>,
    /// Exposed labels win over the target's (default false).
    pub honor_labels: bool,
    /// Use exposed timestamps (default true).
    pub honor_timestamps: bool,
    /// Fixed targets.
    pub static_configs: Vec<StaticConfig>,
    /// Targets from files.
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Relabelling of targets.
    pub relabel_configs: Vec<RelabelConfig>,
    /// Relabelling of scraped samples.
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Most samples per scrape after metric relabelling; 0 = no limit.
    pub sample_limit: usize,
    /// File holding a bearer token (read at every scrape).
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// TLS settings.
    pub tls_config: TlsConfig,
}

impl Default for ScrapeJobConfig {
    fn default() -> Self {
        ScrapeJobConfig {
            job_name: String::new(),
            scrape_interval: None,
            scrape_timeout: None,
            metrics_path: "/metrics".into(),
            scheme: "http".into(),
            params: BTreeMap::new(),
            honor_labels: false,
            honor_timestamps: true,
            static_configs: Vec::new(),
            file_sd_configs: Vec::new(),
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
            sample_limit: 0,
            bearer_token_file: None,
            basic_auth: None,
            tls_config: TlsConfig::default(),
        }
    }
}

/// A group of fixed targets.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    /// `host:port` addresses.
    pub targets: Vec<String>,
    /// Labels of every target of the group.
    pub labels: BTreeMap<String, String>,
}

/// Targets read from files (Prometheus file_sd).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSdConfig {
    /// Globs of `.json`, `.yml` or `.yaml` files, each a list of
    /// `{targets: [...], labels: {...}}`.
    pub files: Vec<String>,
    /// Re-read every file at least this often (default 5m).
    #[serde(deserialize_with = "de_duration")]
    pub refresh_interval: Duration,
}

impl Default for FileSdConfig {
    fn default() -> Self {
        FileSdConfig {
            files: Vec::new(),
            refresh_interval: Duration::from_secs(300),
        }
    }
}

/// HTTP basic authentication.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password (prefer `password_file`).
    pub password: Option<String>,
    /// File holding the password (read at every scrape).
    pub password_file: Option<PathBuf>,
}

/// TLS settings of a job.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Accept any certificate (default false).
    pub insecure_skip_verify: bool,
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn invalid(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

impl ScrapeJobConfig {
    /// The interval, given the agent's default.
    pub fn interval(&self, default: Duration) -> Duration {
        self.scrape_interval.unwrap_or(default)
    }

    /// The timeout, given the agent's default interval.
    pub fn timeout(&self, default: Duration) -> Duration {
        self.scrape_timeout
            .unwrap_or_else(|| self.interval(default).min(Duration::from_secs(10)))
    }
}

impl ScrapeConfig {
    /// Checks every job; errors name the field (`sources.scrape.jobs[0].scheme`).
    pub fn validate(&self, default_interval: Duration) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, j) in self.jobs.iter().enumerate() {
            let f = |name: &str| format!("sources.scrape.jobs[{i}].{name}");
            if j.job_name.is_empty() {
                return Err(invalid(f("job_name"), "is required"));
            }
            if !names.insert(j.job_name.clone()) {
                return Err(invalid(f("job_name"), format!("{:?} is used by two jobs", j.job_name)));
            }
            let interval = j.interval(default_interval);
            if interval < Duration::from_millis(100) {
                return Err(invalid(f("scrape_interval"), format!("{interval:?} is below the minimum of 100ms")));
            }
            let timeout = j.timeout(default_interval);
            if timeout.is_zero() || timeout > interval {
                return Err(invalid(
                    f("scrape_timeout"),
                    format!("{timeout:?} must be above zero and at most the scrape interval ({interval:?})"),
                ));
            }
            if j.scheme != "http" && j.scheme != "https" {
                return Err(invalid(f("scheme"), format!("{:?}: expected http or https", j.scheme)));
            }
            if !j.metrics_path.starts_with('/') {
                return Err(invalid(f("metrics_path"), format!("{:?} does not start with '/'", j.metrics_path)));
            }
            for (k, s) in j.static_configs.iter().enumerate() {
                for t in &s.targets {
                    if t.trim().is_empty() || t.contains('/') {
                        return Err(invalid(
                            format!("sources.scrape.jobs[{i}].static_configs[{k}].targets"),
                            format!("{t:?} is not a host:port address"),
                        ));
                    }
                }
                for l in s.labels.keys() {
                    if !valid_label_name(l) {
                        return Err(invalid(
                            format!("sources.scrape.jobs[{i}].static_configs[{k}].labels"),
                            format!("{l:?} is not a valid label name"),
                        ));
                    }
                }
            }
            for (k, s) in j.file_sd_configs.iter().enumerate() {
                let ff = format!("sources.scrape.jobs[{i}].file_sd_configs[{k}].files");
                if s.files.is_empty() {
                    return Err(invalid(ff, "at least one file is required"));
                }
                for p in &s.files {
                    if !(p.ends_with(".json") || p.ends_with(".yml") || p.ends_with(".yaml")) {
                        return Err(invalid(ff, format!("{p:?} must end in .json, .yml or .yaml")));
                    }
                    glob::Pattern::new(p).map_err(|e| invalid(ff.clone(), format!("{p:?}: {e}")))?;
                }
                if s.refresh_interval < Duration::from_secs(1) {
                    return Err(invalid(
                        format!("sources.scrape.jobs[{i}].file_sd_configs[{k}].refresh_interval"),
                        "must be at least 1s",
                    ));
                }
            }
            if j.static_configs.is_empty() && j.file_sd_configs.is_empty() {
                return Err(invalid(f("static_configs"), "a job needs static_configs or file_sd_configs"));
            }
            if let Some(b) = &j.basic_auth {
                if j.bearer_token_file.is_some() {
                    return Err(invalid(f("basic_auth"), "set basic_auth or bearer_token_file, not both"));
                }
                if b.password.is_some() && b.password_file.is_some() {
                    return Err(invalid(f("basic_auth.password"), "set password or password_file, not both"));
                }
            }
        }
        Ok(())
    }
}

/// One target after relabelling.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The URL scraped.
    pub url: String,
    /// Its labels (`job`, `instance`, group labels...), sorted, without `__` labels.
    pub labels: Labels,
}

impl Target {
    fn key(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.url.hash(&mut h);
        self.labels.hash(&mut h);
        h.finish()
    }
}

/// Builds a target from an address and its group's labels (Prometheus's
/// `PopulateLabels`): `Ok(None)` when relabelling drops it.
pub fn populate_target(
    job: &ScrapeJobConfig,
    default_interval: Duration,
    address: &str,
    group_labels: &BTreeMap<String, String>,
    meta: &[(String, String)],
) -> Result<Option<Target>, String> {
    let mut l: Labels = meta.to_vec();
    for (k, v) in group_labels {
        l.push((k.clone(), v.clone()));
    }
    sort_labels(&mut l);
    set_label(&mut l, "__address__", address);
    let defaults = [
        ("job", job.job_name.clone()),
        ("__scheme__", job.scheme.clone()),
        ("__metrics_path__", job.metrics_path.clone()),
        (
            "__scrape_interval__",
            csoc_common::duration::format_duration(job.interval(default_interval)),
        ),
        (
            "__scrape_timeout__",
            csoc_common::duration::format_duration(job.timeout(default_interval)),
        ),
    ];
    for (k, v) in defaults {
        if !has_label(&l, k) {
            set_label(&mut l, k, &v);
        }
    }
    for (k, vs) in &job.params {
        let name = format!("__param_{k}");
        if let Some(v) = vs.first()
            && !has_label(&l, &name)
        {
            set_label(&mut l, &name, v);
        }
    }
    if !relabel(&mut l, &job.relabel_configs) {
        return Ok(None);
    }
    let get = |n: &str| l.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
    let addr = get("__address__");
    if addr.is_empty() {
        return Err("no __address__ label after relabelling".into());
    }
    if addr.contains('/') {
        return Err(format!("{addr:?} is not a valid address"));
    }
    let scheme = get("__scheme__");
    let path = get("__metrics_path__");
    let mut url = Url::parse(&format!("{scheme}://{addr}{path}")).map_err(|e| format!("{scheme}://{addr}{path}: {e}"))?;
    // Query: the job's params, each overridden by a __param_ label.
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, vs) in &job.params {
        let over = l.iter().find(|(n, _)| n.strip_prefix("__param_") == Some(k.as_str()));
        // As Prometheus: the label replaces the first value only.
        for (n, v) in vs.iter().enumerate() {
            let v = match over {
                Some((_, o)) if n == 0 => o,
                _ => v,
            };
            params.push((k.clone(), v.clone()));
        }
    }
    for (n, v) in &l {
        if let Some(k) = n.strip_prefix("__param_")
            && !job.params.contains_key(k)
        {
            params.push((k.to_string(), v.clone()));
        }
    }
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params.iter());
    }
    if !has_label(&l, "instance") {
        set_label(&mut l, "instance", &addr);
    }
    l.retain(|(k, v)| !k.starts_with("__") && !v.is_empty());
    Ok(Some(Target {
        url: url.to_string(),
        labels: l,
    }))
}

/// Reads one file_sd file: a list of `{targets, labels}` groups.
pub fn read_file_sd(path: &std::path::Path) -> Result<Vec<StaticConfig>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let groups: Vec<StaticConfig> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {}", path.display(), crate::config::yaml_error(&e)))?
    };
    for g in &groups {
        for l in g.labels.keys() {
            if !valid_label_name(l) {
                return Err(format!("{}: {l:?} is not a valid label name", path.display()));
            }
        }
    }
    Ok(groups)
}

/// What is known of one file_sd file.
struct SdFile {
    modified: Option<SystemTime>,
    len: u64,
    read_at: Instant,
    groups: Vec<StaticConfig>,
}

/// Service discovery state of one job.
#[derive(Default)]
struct Discovery {
    files: HashMap<PathBuf, SdFile>,
}

impl Discovery {
    /// Targets of `job` now, re-reading changed or due files.
    fn targets(&mut self, job: &ScrapeJobConfig, default_interval: Duration, source: &str) -> Vec<Target> {
        let mut out = Vec::new();
        let mut add = |addr: &str, labels: &BTreeMap<String, String>, meta: &[(String, String)]| match populate_target(
            job,
            default_interval,
            addr,
            labels,
            meta,
        ) {
            Ok(Some(t)) => out.push(t),
            Ok(None) => {}
            Err(e) => tracing::warn!(source, job = %job.job_name, target = addr, error = %e, "target skipped"),
        };
        for g in &job.static_configs {
            for t in &g.targets {
                add(t, &g.labels, &[]);
            }
        }
        let mut present = HashSet::new();
        for sd in &job.file_sd_configs {
            for pat in &sd.files {
                let Ok(paths) = glob::glob(pat) else { continue };
                for p in paths.flatten() {
                    present.insert(p.clone());
                    let md = std::fs::metadata(&p).ok();
                    let modified = md.as_ref().and_then(|m| m.modified().ok());
                    let len = md.as_ref().map_or(0, |m| m.len());
                    let stale = match self.files.get(&p) {
                        None => true,
                        Some(f) => f.modified != modified || f.len != len || f.read_at.elapsed() >= sd.refresh_interval,
                    };
                    if stale {
                        match read_file_sd(&p) {
                            Ok(groups) => {
                                self.files.insert(
                                    p.clone(),
                                    SdFile {
                                        modified,
                                        len,
                                        read_at: Instant::now(),
                                        groups,
                                    },
                                );
                            }
                            Err(e) => {
                                // Keep what the file said last time.
                                tracing::warn!(source, job = %job.job_name, error = %e, "cannot read a file_sd file");
                                if let Some(f) = self.files.get_mut(&p) {
                                    f.modified = modified;
                                    f.len = len;
                                    f.read_at = Instant::now();
                                }
                            }
                        }
                    }
                    if let Some(f) = self.files.get(&p) {
                        let meta = [("__meta_filepath".to_string(), p.display().to_string())];
                        for g in &f.groups {
                            for t in &g.targets {
                                add(t, &g.labels, &meta);
                            }
                        }
                    }
                }
            }
        }
        self.files.retain(|p, _| present.contains(p));
        out
    }
}

/// A job ready to scrape.
struct Job {
    cfg: ScrapeJobConfig,
    client: reqwest::Client,
    interval: Duration,
    timeout: Duration,
}

/// The scrape source.
pub struct ScrapeSource {
    jobs: Vec<Arc<Job>>,
    default_interval: Duration,
}

impl ScrapeSource {
    /// Builds the jobs' HTTP clients; `default_interval` is the agent's
    /// `interval` (for jobs without `scrape_interval`).
    pub fn new(cfg: &ScrapeConfig, default_interval: Duration) -> Result<Self, ConfigError> {
        cfg.validate(default_interval)?;
        let mut jobs = Vec::new();
        for (i, j) in cfg.jobs.iter().enumerate() {
            let client = reqwest::Client::builder()
                .user_agent(concat!("csoc-agent/", env!("CARGO_PKG_VERSION")))
                .danger_accept_invalid_certs(j.tls_config.insecure_skip_verify)
                .pool_max_idle_per_host(2)
                .build()
                .map_err(|e| invalid(format!("sources.scrape.jobs[{i}]"), format!("cannot build the HTTP client: {e}")))?;
            jobs.push(Arc::new(Job {
                interval: j.interval(default_interval),
                timeout: j.timeout(default_interval),
                cfg: j.clone(),
                client,
            }));
        }
        Ok(ScrapeSource { jobs, default_interval })
    }
}

impl Source for ScrapeSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            let mut discovery: Vec<Discovery> = self.jobs.iter().map(|_| Discovery::default()).collect();
            let mut running: HashMap<(usize, u64), (CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
            loop {
                let mut want: HashMap<(usize, u64), Target> = HashMap::new();
                for (i, job) in self.jobs.iter().enumerate() {
                    for t in discovery[i].targets(&job.cfg, self.default_interval, &cx.name) {
                        want.insert((i, t.key()), t);
                    }
                }
                running.retain(|k, (stop, _)| {
                    if want.contains_key(k) {
                        true
                    } else {
                        stop.cancel();
                        false
                    }
                });
                for (k, t) in want {
                    if running.contains_key(&k) {
                        continue;
                    }
                    tracing::info!(source = %cx.name, job = %self.jobs[k.0].cfg.job_name, url = %t.url, "scrape target added");
                    let stop = CancellationToken::new();
                    let h = tokio::spawn(target_loop(self.jobs[k.0].clone(), t, cx.clone(), stop.clone()));
                    running.insert(k, (stop, h));
                }
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            for (_, (_, h)) in running {
                let _ = h.await;
            }
        })
    }
}

/// Names of the report series.
const REPORT: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Staleness marker value.
fn stale_nan() -> f64 {
    f64::from_bits(csoc_proto::STALE_NAN_BITS)
}

/// The result of one scrape.
pub struct Scraped {
    /// Samples after target labels and metric relabelling (timestamps set).
    pub samples: Vec<Sample>,
    /// Metadata of the exposed families.
    pub metadata: Vec<crate::model::Metadata>,
    /// Samples in the exposition.
    pub scraped: usize,
    /// Per sample, the hash of its labels when it is tracked for staleness
    /// (`None`: it has its own timestamp).
    pub tracked: Vec<Option<u64>>,
}

/// Attaches the target's labels to an exposed sample's (Prometheus's
/// `mutateSampleLabels`).
pub fn merge_target_labels(labels: &mut Labels, target: &Labels, honor: bool) {
    if honor {
        for (k, v) in target {
            if !has_label(labels, k) {
                set_label(labels, k, v);
            }
        }
    } else {
        let mut conflicts: Vec<(String, String)> = Vec::new();
        for (k, v) in target {
            if let Ok(i) = labels.binary_search_by(|(n, _)| n.as_str().cmp(k))
                && !labels[i].1.is_empty()
            {
                conflicts.push((k.clone(), labels[i].1.clone()));
            }
            set_label(labels, k, v);
        }
        conflicts.sort_by_key(|(k, _)| k.len());
        for (k, v) in conflicts {
            let mut name = format!("exported_{k}");
            while has_label(labels, &name) {
                name = format!("exported_{name}");
            }
            set_label(labels, &name, &v);
        }
    }
    labels.retain(|(_, v)| !v.is_empty());
}

/// One scrape of `target`: fetch, parse, label, relabel, limit.
async fn scrape_once(job: &Job, target: &Target, ts: i64) -> Result<Scraped, String> {
    let mut req = job
        .client
        .get(&target.url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", job.timeout.as_secs_f64()));
    if let Some(p) = &job.cfg.bearer_token_file {
        let tok = std::fs::read_to_string(p).map_err(|e| format!("bearer_token_file {}: {e}", p.display()))?;
        req = req.bearer_auth(tok.trim());
    }
    if let Some(b) = &job.cfg.basic_auth {
        let pw = match &b.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("password_file {}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => b.password.clone(),
        };
        req = req.basic_auth(&b.username, pw);
    }
    let fetch = async {
        let resp = req.send().await.map_err(|e| format!("{}: {}", target.url, error_chain(&e)))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("{}: server returned HTTP status {}", target.url, resp.status()));
        }
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.bytes().await.map_err(|e| format!("{}: {}", target.url, error_chain(&e)))?;
        Ok((ct, body))
    };
    let (ct, body) = match tokio::time::timeout(job.timeout, fetch).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("{}: scrape timed out after {:?}", target.url, job.timeout)),
    };
    let exp = parse_bytes(&body, Format::from_content_type(&ct)).map_err(|e| format!("{}: {e}", target.url))?;
    let scraped = exp.samples.len();
    let mut samples = Vec::with_capacity(scraped);
    let mut tracked = Vec::with_capacity(scraped);
    let mut seen: HashSet<u64> = HashSet::with_capacity(scraped);
    for s in exp.samples {
        let mut labels = s.labels;
        merge_target_labels(&mut labels, &target.labels, job.cfg.honor_labels);
        if !relabel(&mut labels, &job.cfg.metric_relabel_configs) || !has_label(&labels, "__name__") {
            continue;
        }
        // A series twice in one exposition: the first wins (Prometheus
        // reports the rest as duplicates).
        let mut h = std::collections::hash_map::DefaultHasher::new();
        labels.hash(&mut h);
        let hash = h.finish();
        if !seen.insert(hash) {
            continue;
        }
        let timestamp_ms = match s.timestamp_ms {
            Some(t) if job.cfg.honor_timestamps => {
                tracked.push(None);
                t
            }
            _ => {
                tracked.push(Some(hash));
                ts
            }
        };
        samples.push(Sample {
            labels,
            timestamp_ms,
            value: s.value,
        });
    }
    if job.cfg.sample_limit > 0 && samples.len() > job.cfg.sample_limit {
        return Err(format!(
            "{}: sample_limit exceeded ({} samples, limit {})",
            target.url,
            samples.len(),
            job.cfg.sample_limit
        ));
    }
    Ok(Scraped {
        samples,
        metadata: exp.metadata,
        scraped,
        tracked,
    })
}

/// Stable offset of a target within its interval (spreads the scrapes).
fn offset(key: u64, interval: Duration) -> Duration {
    let n = interval.as_nanos().max(1) as u64;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    // Mixed with the host name, as Prometheus does, so that two agents
    // scraping one target do not scrape it at the same instant.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    crate::config::hostname().hash(&mut h);
    let want = (key ^ h.finish()) % n;
    Duration::from_nanos((want + n - now % n) % n)
}

/// Scrapes one target until the agent stops (`cx.shutdown`) or the target
/// goes away (`removed`: then everything it reported goes stale).
async fn target_loop(job: Arc<Job>, target: Target, cx: SourceContext, removed: CancellationToken) {
    let mut state = LoopState::default();
    tokio::select! {
        _ = cx.shutdown.cancelled() => return,
        _ = removed.cancelled() => return,
        _ = tokio::time::sleep(offset(target.key(), job.interval)) => {}
    }
    let mut tick = tokio::time::interval(job.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            _ = removed.cancelled() => {
                let frame = state.target_gone(&target, csoc_common::time::now_ms(), &cx.name);
                let _ = cx.emit(frame).await;
                return;
            }
            _ = tick.tick() => {}
        }
        let ts = csoc_common::time::now_ms();
        let started = Instant::now();
        let res = tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            r = scrape_once(&job, &target, ts) => r,
        };
        let took = started.elapsed();
        if let Err(e) = &res {
            tracing::debug!(source = %cx.name, job = %job.cfg.job_name, error = %e, "scrape failed");
            cx.error(if e.contains("sample_limit") { "sample_limit" } else { "scrape" });
        }
        let frame = state.after_scrape(&target, ts, took, res, &cx.name);
        if !cx.emit(frame).await {
            return;
        }
    }
}

/// What a target loop remembers between scrapes (for staleness).
#[derive(Default)]
pub struct LoopState {
    /// Series of the last successful scrape, by label hash.
    prev: HashMap<u64, Labels>,
    reported: bool,
}

impl LoopState {
    /// The frame of one scrape at `ts`: its samples, staleness markers for
    /// series gone since the last one, and the report series.
    pub fn after_scrape(&mut self, target: &Target, ts: i64, took: Duration, res: Result<Scraped, String>, source: &str) -> Frame {
        let mut f = Frame::new(source);
        let (up, scraped, post, added) = match res {
            Ok(s) => {
                // Labels are cloned only for series new since the last scrape.
                let mut cur = HashMap::with_capacity(s.samples.len());
                let mut added = 0usize;
                for (smp, h) in s.samples.iter().zip(&s.tracked) {
                    let Some(h) = *h else { continue };
                    let labels = match self.prev.remove(&h) {
                        Some(l) => l,
                        None => {
                            added += 1;
                            smp.labels.clone()
                        }
                    };
                    cur.insert(h, labels);
                }
                let post = s.samples.len();
                f.samples = s.samples;
                f.metadata = s.metadata;
                for (_, gone) in self.prev.drain() {
                    f.samples.push(Sample {
                        labels: gone,
                        timestamp_ms: ts,
                        value: stale_nan(),
                    });
                }
                self.prev = cur;
                (1.0, s.scraped, post, added)
            }
            Err(_) => {
                for (_, gone) in self.prev.drain() {
                    f.samples.push(Sample {
                        labels: gone,
                        timestamp_ms: ts,
                        value: stale_nan(),
                    });
                }
                (0.0, 0, 0, 0)
            }
        };
        let values = [up, took.as_secs_f64(), scraped as f64, post as f64, added as f64];
        for (name, v) in REPORT.iter().zip(values) {
            f.samples.push(report_sample(target, name, ts, v));
        }
        self.reported = true;
        f
    }

    /// Staleness markers for everything the target reported (it is gone).
    pub fn target_gone(&mut self, target: &Target, ts: i64, source: &str) -> Frame {
        let mut f = Frame::new(source);
        for (_, gone) in self.prev.drain() {
            f.samples.push(Sample {
                labels: gone,
                timestamp_ms: ts,
                value: stale_nan(),
            });
        }
        if self.reported {
            for name in REPORT {
                f.samples.push(report_sample(target, name, ts, stale_nan()));
            }
        }
        f
    }
}

fn report_sample(target: &Target, name: &str, ts: i64, value: f64) -> Sample {
    let mut labels = target.labels.clone();
    set_label(&mut labels, "__name__", name);
    Sample {
        labels,
        timestamp_ms: ts,
        value,
    }
}

/// Turns `--scrape [JOB=]URL` flags into jobs (one job per name; each URL a
/// static target whose scheme, path and query come from the URL).
pub fn jobs_from_flags(flags: &[String]) -> Result<Vec<ScrapeJobConfig>, String> {
    let mut jobs: Vec<ScrapeJobConfig> = Vec::new();
    for f in flags {
        let (job, url) = match f.split_once('=') {
            Some((j, u)) if !j.contains('/') && !j.contains(':') && !j.contains('?') => (j.to_string(), u),
            _ => ("scrape".to_string(), f.as_str()),
        };
        let u = Url::parse(url).map_err(|e| format!("--scrape {f:?}: {e}"))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(format!("--scrape {f:?}: expected an http:// or https:// URL"));
        }
        let host = u.host_str().ok_or_else(|| format!("--scrape {f:?}: no host"))?;
        let addr = match u.port_or_known_default() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let mut labels = BTreeMap::new();
        labels.insert("__scheme__".to_string(), u.scheme().to_string());
        labels.insert("__metrics_path__".to_string(), u.path().to_string());
        for (k, v) in u.query_pairs() {
            labels.insert(format!("__param_{k}"), v.into_owned());
        }
        let group = StaticConfig {
            targets: vec![addr],
            labels,
        };
        match jobs.iter_mut().find(|j| j.job_name == job) {
            Some(j) => j.static_configs.push(group),
            None => jobs.push(ScrapeJobConfig {
                job_name: job,
                static_configs: vec![group],
                ..Default::default()
            }),
        }
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    /// What the test server answers.
    #[derive(Clone)]
    struct Answer {
        status: StatusCode,
        content_type: &'static str,
        body: String,
        delay: Duration,
    }

    type Shared = Arc<Mutex<(Answer, Vec<HeaderMap>)>>;

    async fn metrics(State(s): State<Shared>, headers: HeaderMap) -> Response {
        let a = {
            let mut g = s.lock().expect("lock");
            g.1.push(headers);
            g.0.clone()
        };
        tokio::time::sleep(a.delay).await;
        (a.status, [(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
    }

    async fn server(body: &str) -> (String, Shared) {
        let shared: Shared = Arc::new(Mutex::new((
            Answer {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: body.to_string(),
                delay: Duration::ZERO,
            },
            Vec::new(),
        )));
        let app = Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr.to_string(), shared)
    }

    fn set(s: &Shared, f: impl FnOnce(&mut Answer)) {
        f(&mut s.lock().expect("lock").0);
    }

    fn job(yaml: &str) -> ScrapeConfig {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn start(cfg: &ScrapeConfig) -> (mpsc::Receiver<Frame>, CancellationToken) {
        let src = ScrapeSource::new(cfg, Duration::from_millis(100)).unwrap_or_else(|e| panic!("{e}"));
        let (cx, rx) = SourceContext::for_test("scrape", Duration::from_millis(100));
        let stop = cx.shutdown.clone();
        tokio::spawn(Box::new(src).run(cx));
        (rx, stop)
    }

    async fn next(rx: &mut mpsc::Receiver<Frame>) -> Frame {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a frame within 10s")
            .expect("source running")
    }

    fn val(f: &Frame, name: &str) -> Option<f64> {
        f.samples
            .iter()
            .find(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == name))
            .map(|s| s.value)
    }

    fn label<'a>(s: &'a Sample, k: &str) -> Option<&'a str> {
        s.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn is_stale(v: Option<f64>) -> bool {
        v.is_some_and(|v| v.to_bits() == csoc_proto::STALE_NAN_BITS)
    }

    fn one_job(addr: &str, extra: &str) -> ScrapeConfig {
        job(&format!(
            "jobs:\n- job_name: node\n  scrape_interval: 100ms\n  scrape_timeout: 80ms\n  static_configs:\n  - targets: ['{addr}']\n    labels: {{env: test}}\n{extra}"
        ))
    }

    #[tokio::test]
    async fn up_then_down_marks_everything_stale() {
        let (addr, srv) = server("# TYPE a gauge\na 1\nb{x=\"1\"} 2\n").await;
        let (mut rx, stop) = start(&one_job(&addr, ""));
        let f = next(&mut rx).await;
        assert_eq!(val(&f, "up"), Some(1.0));
        assert_eq!(val(&f, "a"), Some(1.0));
        assert_eq!(val(&f, "scrape_samples_scraped"), Some(2.0));
        assert_eq!(val(&f, "scrape_samples_post_metric_relabeling"), Some(2.0));
        assert_eq!(val(&f, "scrape_series_added"), Some(2.0));
        assert!(val(&f, "scrape_duration_seconds").is_some_and(|d| d >= 0.0));
        let a = f.samples.iter().find(|s| label(s, "__name__") == Some("a")).expect("a");
        assert_eq!(label(a, "job"), Some("node"));
        assert_eq!(label(a, "instance"), Some(addr.as_str()));
        assert_eq!(label(a, "env"), Some("test"));
        assert_eq!(f.metadata.len(), 1);
        // The Accept header Prometheus sends.
        let h = srv.lock().expect("lock").1[0].clone();
        assert_eq!(h.get(header::ACCEPT).and_then(|v| v.to_str().ok()), Some(ACCEPT));
        assert!(h.get("x-prometheus-scrape-timeout-seconds").is_some());
        set(&srv, |a| a.status = StatusCode::INTERNAL_SERVER_ERROR);
        let f = loop {
            let f = next(&mut rx).await;
            if val(&f, "up") == Some(0.0) {
                break f;
            }
        };
        assert!(is_stale(val(&f, "a")) && is_stale(val(&f, "b")), "{f:?}");
        assert_eq!(val(&f, "scrape_samples_scraped"), Some(0.0));
        // Next failure: nothing left to mark.
        let f = next(&mut rx).await;
        assert_eq!(val(&f, "up"), Some(0.0));
        assert_eq!(val(&f, "a"), None);
        stop.cancel();
    }

    #[tokio::test]
    async fn vanished_series_get_a_staleness_marker() {
        let (addr, srv) = server("a 1\nb 2\n").await;
        let (mut rx, stop) = start(&one_job(&addr, ""));
        let f = next(&mut rx).await;
        assert_eq!(val(&f, "b"), Some(2.0));
        set(&srv, |a| a.body = "a 1\nc 3\n".into());
        let f = loop {
            let f = next(&mut rx).await;
            if val(&f, "c").is_some() {
                break f;
            }
        };
        assert!(is_stale(val(&f, "b")));
        assert_eq!(val(&f, "a"), Some(1.0));
        assert_eq!(val(&f, "scrape_series_added"), Some(1.0));
        stop.cancel();
    }

    #[tokio::test]
    async fn sample_limit_fails_the_scrape() {
        let (addr, _srv) = server("a 1\nb 2\nc 3\ngo_x 4\n").await;
        let (mut rx, stop) = start(&one_job(&addr, "  sample_limit: 2\n"));
        let f = next(&mut rx).await;
        assert_eq!(val(&f, "up"), Some(0.0));
        assert_eq!(val(&f, "a"), None);
        stop.cancel();
        // After metric relabelling drops two, it fits.
        let (mut rx, stop) = start(&one_job(
            &addr,
            "  sample_limit: 2\n  metric_relabel_configs:\n  - source_labels: [__name__]\n    regex: 'go_.*|c'\n    action: drop\n",
        ));
        let f = next(&mut rx).await;
        assert_eq!(val(&f, "up"), Some(1.0));
        assert_eq!(val(&f, "scrape_samples_scraped"), Some(4.0));
        assert_eq!(val(&f, "scrape_samples_post_metric_relabeling"), Some(2.0));
        stop.cancel();
    }

    #[tokio::test]
    async fn slow_target_times_out() {
        let (addr, srv) = server("a 1\n").await;
        set(&srv, |a| a.delay = Duration::from_millis(300));
        let (mut rx, stop) = start(&one_job(&addr, ""));
        let f = next(&mut rx).await;
        assert_eq!(val(&f, "up"), Some(0.0));
        assert!(val(&f, "scrape_duration_seconds").is_some_and(|d| d < 0.25), "{f:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn honor_labels_and_exported_prefix() {
        let body = "a{job=\"inner\",instance=\"i\",exported_job=\"x\"} 1\n";
        let (addr, _srv) = server(body).await;
        let (mut rx, stop) = start(&one_job(&addr, ""));
        let f = next(&mut rx).await;
        let a = f.samples.iter().find(|s| label(s, "__name__") == Some("a")).expect("a");
        assert_eq!(label(a, "job"), Some("node"));
        assert_eq!(label(a, "exported_instance"), Some("i"));
        assert_eq!(label(a, "exported_job"), Some("x"));
        assert_eq!(label(a, "exported_exported_job"), Some("inner"));
        stop.cancel();
        let (mut rx, stop) = start(&one_job(&addr, "  honor_labels: true\n"));
        let f = next(&mut rx).await;
        let a = f.samples.iter().find(|s| label(s, "__name__") == Some("a")).expect("a");
        assert_eq!(label(a, "job"), Some("inner"));
        assert_eq!(label(a, "instance"), Some("i"));
        assert_eq!(label(a, "env"), Some("test"));
        // `up` always has the target's labels.
        let up = f.samples.iter().find(|s| label(s, "__name__") == Some("up")).expect("up");
        assert_eq!(label(up, "job"), Some("node"));
        stop.cancel();
    }

    #[tokio::test]
    async fn openmetrics_and_honor_timestamps() {
        let (addr, srv) = server("").await;
        set(&srv, |a| {
            a.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            a.body = "# TYPE c counter\nc_total 5 1700000000.5\nd 1\n# EOF\n".into();
        });
        let (mut rx, stop) = start(&one_job(&addr, ""));
        let f = next(&mut rx).await;
        let c = f.samples.iter().find(|s| label(s, "__name__") == Some("c_total")).expect("c_total");
        assert_eq!(c.timestamp_ms, 1_700_000_000_500);
        stop.cancel();
        let (mut rx, stop) = start(&one_job(&addr, "  honor_timestamps: false\n"));
        let f = next(&mut rx).await;
        let c = f.samples.iter().find(|s| label(s, "__name__") == Some("c_total")).expect("c_total");
        assert!(c.timestamp_ms > 1_700_000_000_500);
        stop.cancel();
        // A broken exposition is a failed scrape.
        set(&srv, |a| a.body = "c_total 5\n".into());
        let (mut rx, stop) = start(&one_job(&addr, ""));
        assert_eq!(val(&next(&mut rx).await, "up"), Some(0.0));
        stop.cancel();
    }

    #[tokio::test]
    async fn file_sd_is_reread_and_removed_targets_go_stale() {
        let (addr, _srv) = server("a 1\n").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("targets.json");
        std::fs::write(&file, format!("[{{\"targets\": [\"{addr}\"], \"labels\": {{\"team\": \"one\"}}}}]")).expect("write");
        let cfg = job(&format!(
            "jobs:\n- job_name: sd\n  scrape_interval: 100ms\n  file_sd_configs:\n  - files: ['{}/*.json']\n  relabel_configs:\n  - source_labels: [__meta_filepath]\n    regex: '.*/(.*)'\n    target_label: file\n",
            dir.path().display()
        ));
        let (mut rx, stop) = start(&cfg);
        let f = next(&mut rx).await;
        let up = f.samples.iter().find(|s| label(s, "__name__") == Some("up")).expect("up");
        assert_eq!(label(up, "team"), Some("one"));
        assert_eq!(label(up, "file"), Some("targets.json"));
        assert!(label(up, "__meta_filepath").is_none());
        // New labels: the old target goes away (stale), the new one appears.
        std::fs::write(&file, format!("[{{\"targets\": [\"{addr}\"], \"labels\": {{\"team\": \"two\"}}}}]")).expect("write");
        let (mut gone, mut new) = (false, false);
        while !(gone && new) {
            let f = next(&mut rx).await;
            for s in &f.samples {
                if label(s, "__name__") == Some("up") && label(s, "file") == Some("targets.json") {
                    match label(s, "team") {
                        Some("one") if s.value.to_bits() == csoc_proto::STALE_NAN_BITS => gone = true,
                        Some("two") if s.value == 1.0 => new = true,
                        _ => {}
                    }
                }
            }
        }
        stop.cancel();
    }

    #[test]
    fn file_sd_yaml_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.yml");
        std::fs::write(&p, "- targets: ['a:1', 'b:2']\n  labels: {team: two}\n").expect("write");
        let g = read_file_sd(&p).expect("yaml");
        assert_eq!(g[0].targets, ["a:1", "b:2"]);
        std::fs::write(&p, "- targets: ['a:1']\n  labelz: {}\n").expect("write");
        let e = read_file_sd(&p).expect_err("unknown field");
        assert!(e.contains("t.yml") && e.contains("labelz") && e.contains("line 2"), "{e}");
        let j = dir.path().join("t.json");
        std::fs::write(&j, "[{\"targets\": [\"a:1\"], \"labels\": {\"a-b\": \"x\"}}]").expect("write");
        assert!(read_file_sd(&j).expect_err("label").contains("a-b"));
    }

    #[tokio::test]
    async fn source_compliance() {
        let (addr, _srv) = server("a 1\n").await;
        let src = ScrapeSource::new(&one_job(&addr, ""), Duration::from_millis(100)).expect("source");
        let f = crate::sources::test_util::run_and_assert_source_compliance(Box::new(src), "scrape").await;
        assert_eq!(val(&f, "up"), Some(1.0));
    }

    #[test]
    fn target_relabelling_builds_labels_and_url() {
        let cfg = job(concat!(
            "jobs:\n- job_name: fence\n  params: {module: [http_2xx], x: [1, 2]}\n  static_configs: [{targets: ['a:80']}]\n",
            "  relabel_configs:\n",
            "  - source_labels: [__address__]\n    target_label: __param_target\n",
            "  - target_label: __address__\n    replacement: 'prober:9115'\n",
            "  - source_labels: [__param_target]\n    target_label: instance\n",
            "  - target_label: __metrics_path__\n    replacement: /probe\n",
        ));
        let j = &cfg.jobs[0];
        let t = populate_target(
            j,
            Duration::from_secs(15),
            "a:80",
            &BTreeMap::new(),
            &[("__meta_x".into(), "y".into())],
        )
        .expect("ok")
        .expect("kept");
        assert_eq!(t.url, "http://prober:9115/probe?module=http_2xx&x=1&x=2&target=a%3A80");
        assert_eq!(
            t.labels,
            vec![
                ("instance".to_string(), "a:80".to_string()),
                ("job".to_string(), "fence".to_string())
            ]
        );
        // Dropped by relabelling.
        let cfg = job(
            "jobs:\n- job_name: j\n  static_configs: [{targets: ['a:80']}]\n  relabel_configs:\n  - source_labels: [__address__]\n    regex: 'a:.*'\n    action: drop\n",
        );
        assert_eq!(
            populate_target(&cfg.jobs[0], Duration::from_secs(15), "a:80", &BTreeMap::new(), &[]),
            Ok(None)
        );
        // No address left.
        let cfg = job(
            "jobs:\n- job_name: j\n  static_configs: [{targets: ['a:80']}]\n  relabel_configs:\n  - target_label: __address__\n    replacement: ''\n",
        );
        assert!(populate_target(&cfg.jobs[0], Duration::from_secs(15), "a:80", &BTreeMap::new(), &[]).is_err());
    }

    #[test]
    fn series_with_own_timestamps_are_not_marked_stale() {
        let target = Target {
            url: "http://t/metrics".into(),
            labels: vec![("instance".into(), "t".into()), ("job".into(), "j".into())],
        };
        let sample = |name: &str, ts: i64| Sample {
            labels: vec![("__name__".into(), name.into())],
            timestamp_ms: ts,
            value: 1.0,
        };
        let mut st = LoopState::default();
        let first = Scraped {
            samples: vec![sample("a", 1000), sample("b", 5)],
            metadata: Vec::new(),
            scraped: 2,
            tracked: vec![Some(1), None],
        };
        let f = st.after_scrape(&target, 1000, Duration::from_millis(1), Ok(first), "s");
        assert_eq!(val(&f, "scrape_series_added"), Some(1.0));
        let empty = Scraped {
            samples: Vec::new(),
            metadata: Vec::new(),
            scraped: 0,
            tracked: Vec::new(),
        };
        let f = st.after_scrape(&target, 2000, Duration::from_millis(1), Ok(empty), "s");
        assert!(is_stale(val(&f, "a")));
        assert_eq!(val(&f, "b"), None);
        // The target goes away: its report series go stale.
        let f = st.target_gone(&target, 3000, "s");
        assert!(is_stale(val(&f, "up")) && is_stale(val(&f, "scrape_duration_seconds")));
        assert_eq!(f.samples.len(), 5);
    }

    #[test]
    fn merge_labels_as_prometheus() {
        let target: Labels = vec![("instance".into(), "t:1".into()), ("job".into(), "j".into())];
        let mut l: Labels = vec![("__name__".into(), "m".into()), ("job".into(), "".into())];
        merge_target_labels(&mut l, &target, false);
        assert_eq!(
            l,
            vec![
                ("__name__".to_string(), "m".to_string()),
                ("instance".to_string(), "t:1".to_string()),
                ("job".to_string(), "j".to_string())
            ]
        );
    }

    #[test]
    fn flags_become_jobs() {
        let jobs = jobs_from_flags(&[
            "http://127.0.0.1:9100/metrics".into(),
            "fence=http://fence/metrics?x=1".into(),
            "fence=https://fence2:8443/m".into(),
        ])
        .expect("flags");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].job_name, "scrape");
        assert_eq!(jobs[0].static_configs[0].targets, ["127.0.0.1:9100"]);
        assert_eq!(jobs[1].static_configs.len(), 2);
        assert_eq!(jobs[1].static_configs[0].targets, ["fence:80"]);
        assert_eq!(jobs[1].static_configs[0].labels.get("__param_x").map(String::as_str), Some("1"));
        assert_eq!(
            jobs[1].static_configs[1].labels.get("__scheme__").map(String::as_str),
            Some("https")
        );
        let t = populate_target(
            &jobs[1],
            Duration::from_secs(15),
            "fence:80",
            &jobs[1].static_configs[0].labels,
            &[],
        )
        .expect("ok")
        .expect("kept");
        assert_eq!(t.url, "http://fence/metrics?x=1");
        assert!(jobs_from_flags(&["ftp://x/".into()]).is_err());
        assert!(jobs_from_flags(&["not a url".into()]).is_err());
    }

    #[test]
    fn example_config_job_is_valid() {
        // deploy/examples/agent.yml documents one job in comments: uncomment it.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.yml");
        let text = std::fs::read_to_string(&path).expect("example");
        let mut yaml = String::from("jobs:\n");
        let mut on = false;
        for l in text.lines() {
            if l.trim() == "jobs: []" {
                on = true;
                continue;
            }
            if on {
                match l.strip_prefix("    #") {
                    Some(rest) if !rest.starts_with(' ') || rest.starts_with("  ") => {
                        let code = rest.split("  #").next().unwrap_or("");
                        yaml.push_str(code.trim_end());
                        yaml.push('\n');
                    }
                    _ => break,
                }
            }
        }
        let cfg: ScrapeConfig = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(cfg.jobs.len(), 1, "{yaml}");
        assert_eq!(cfg.jobs[0].metric_relabel_configs.len(), 1);
        cfg.validate(Duration::from_secs(15)).expect("valid");
        let whole = crate::config::AgentConfig::from_file(&path).expect("example parses");
        assert!(whole.sources.scrape.jobs.is_empty());
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |y: &str| {
            ScrapeSource::new(&job(y), Duration::from_secs(15))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let t = "  static_configs: [{targets: ['a:1']}]\n";
        assert!(err(&format!("jobs:\n- job_name: ''\n{t}")).contains("jobs[0].job_name"));
        assert!(err(&format!("jobs:\n- job_name: a\n{t}- job_name: a\n{t}")).contains("jobs[1].job_name"));
        assert!(
            err(&format!("jobs:\n- job_name: a\n  scrape_interval: 5s\n  scrape_timeout: 10s\n{t}")).contains("jobs[0].scrape_timeout")
        );
        assert!(err(&format!("jobs:\n- job_name: a\n  scheme: ftp\n{t}")).contains("jobs[0].scheme"));
        assert!(err(&format!("jobs:\n- job_name: a\n  metrics_path: metrics\n{t}")).contains("metrics_path"));
        assert!(err("jobs:\n- job_name: a\n  static_configs: [{targets: ['http://a/']}]\n").contains("static_configs[0].targets"));
        assert!(
            err("jobs:\n- job_name: a\n  static_configs: [{targets: ['a:1'], labels: {'a-b': c}}]\n").contains("static_configs[0].labels")
        );
        assert!(err("jobs:\n- job_name: a\n  file_sd_configs: [{files: ['x.txt']}]\n").contains("file_sd_configs[0].files"));
        assert!(err("jobs:\n- job_name: a\n").contains("static_configs"));
        let e = serde_yaml_ng::from_str::<ScrapeConfig>("jobs:\n- job_name: a\n  relabel_configs:\n  - action: keep\n    regex: x\n")
            .expect_err("relabel")
            .to_string();
        assert!(e.contains("source_labels is required") && e.contains("line"), "{e}");
    }
}
