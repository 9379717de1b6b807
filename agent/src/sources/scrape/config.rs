//! The `scrape` source's configuration: `sources.scrape.jobs` (Prometheus's
//! `scrape_configs` field names), its defaults and validation, and the jobs
//! `--scrape [JOB=]URL` flags make.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Deserializer};

use crate::config::ConfigError;
use csoc_common::duration::parse_duration;
use csoc_common::labels::valid_label_name;
use csoc_common::relabel::RelabelConfig;

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
    /// Targets from the Kubernetes API (roles `pod` and `endpoints`, with
    /// Prometheus's `__meta_kubernetes_*` labels).
    pub kubernetes_sd_configs: Vec<super::kubernetes_sd::KubernetesSdConfig>,
    /// Relabelling of targets.
    pub relabel_configs: Vec<RelabelConfig>,
    /// Relabelling of scraped samples.
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Most samples per scrape after metric relabelling; 0 = no limit.
    pub sample_limit: usize,
    /// File holding a bearer token (read at every scrape).
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic authentication (`username` or `username_file`,
    /// `password` or `password_file`; files read at every scrape).
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization: <type> <credentials>` (`type` default `Bearer`;
    /// `credentials` or `credentials_file`, read at every scrape).
    pub authorization: Option<csoc_common::httpconf::Authorization>,
    /// TLS settings, as Prometheus's `tls_config` (`ca_file`, `cert_file`,
    /// `key_file`, inline `ca`/`cert`/`key`, `insecure_skip_verify`,
    /// `min_version`, `max_version`).
    pub tls_config: TlsConfig,
    /// Largest response body accepted, after decompression (`10MB`; 0, the
    /// default: at most [`MAX_BODY_DEFAULT`], so that a gzip bomb cannot
    /// exhaust the agent's memory). A larger body fails the scrape.
    #[serde(deserialize_with = "csoc_common::duration::de_bytes")]
    pub body_size_limit: u64,
    /// Ask for gzip (`Accept-Encoding: gzip`) and decompress (default
    /// true, as Prometheus's `enable_compression`).
    pub enable_compression: bool,
}

/// The body limit of a job with `body_size_limit: 0`: 256MiB.
pub const MAX_BODY_DEFAULT: u64 = 256 << 20;

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
            kubernetes_sd_configs: Vec::new(),
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
            sample_limit: 0,
            bearer_token_file: None,
            basic_auth: None,
            authorization: None,
            tls_config: TlsConfig::default(),
            body_size_limit: 0,
            enable_compression: true,
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

/// HTTP basic authentication (Prometheus's fields).
pub type BasicAuth = csoc_common::httpconf::BasicAuth;

/// TLS settings of a job (Prometheus's `tls_config`).
pub type TlsConfig = csoc_common::httpconf::TlsConfig;

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

pub(super) fn invalid(field: String, message: impl Into<String>) -> ConfigError {
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
            for (k, sd) in j.kubernetes_sd_configs.iter().enumerate() {
                sd.validate(&format!("sources.scrape.jobs[{i}].kubernetes_sd_configs[{k}]"))?;
            }
            if j.static_configs.is_empty() && j.file_sd_configs.is_empty() && j.kubernetes_sd_configs.is_empty() {
                return Err(invalid(
                    f("static_configs"),
                    "a job needs static_configs, file_sd_configs or kubernetes_sd_configs",
                ));
            }
            let auths = [j.basic_auth.is_some(), j.authorization.is_some(), j.bearer_token_file.is_some()];
            if auths.iter().filter(|x| **x).count() > 1 {
                return Err(invalid(
                    f("basic_auth"),
                    "set one of basic_auth, authorization or bearer_token_file, not several",
                ));
            }
            if let Some(b) = &j.basic_auth {
                b.validate().map_err(|e| invalid(f("basic_auth"), e))?;
            }
            if let Some(a) = &j.authorization {
                a.validate().map_err(|e| invalid(f("authorization"), e))?;
            }
            j.tls_config.validate().map_err(|e| invalid(f("tls_config"), e))?;
        }
        Ok(())
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
