//! `sources.elasticsearch`: the settings, their defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::sources::gen3_http::{de_opt_duration, invalid, parse_http_url};

pub(super) const FIELD: &str = "sources.elasticsearch";

/// Default time limit of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of the `elasticsearch` source (`sources.elasticsearch`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticsearchConfig {
    /// Poll when a URL is configured (default true).
    pub enabled: bool,
    /// Base URL of the cluster (`http://gen3-elasticsearch:9200`, or an
    /// OpenSearch endpoint); `--elasticsearch-url` sets it.
    pub url: Option<String>,
    /// More base URLs of the same cluster (other nodes): each round asks
    /// them in order (`url` first) until one answers `_cluster/health`.
    pub urls: Vec<String>,
    /// HTTP basic authentication (X-Pack / OpenSearch security).
    pub basic_auth: Option<EsBasicAuth>,
    /// TLS of `https://` URLs.
    pub tls: EsTlsConfig,
    /// Time limit of one request (default 10s, or 80% of a shorter
    /// interval); must be below the interval.
    #[serde(deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// Poll interval (default: the agent's `interval`).
    #[serde(deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
    /// Which indices (and aliases) get a document count: glob patterns
    /// (`*`, `?`, `[...]`) on the index or alias name. Default: every index
    /// whose name does not start with `.` (system and security indices);
    /// name a `.` index explicitly to include it.
    pub indices: Vec<String>,
    /// Value of the `job` label (default `elasticsearch`).
    pub job: String,
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        ElasticsearchConfig {
            enabled: true,
            url: None,
            urls: Vec::new(),
            basic_auth: None,
            tls: EsTlsConfig::default(),
            timeout: None,
            interval: None,
            indices: Vec::new(),
            job: "elasticsearch".into(),
        }
    }
}

/// Basic authentication: the password is read from a file at every round
/// (so a rotated Secret is picked up), never given inline.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EsBasicAuth {
    /// User name.
    pub username: String,
    /// File holding the password (surrounding whitespace ignored).
    pub password_file: PathBuf,
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EsTlsConfig {
    /// Extra CA certificates (PEM) to trust besides the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (default false; for test clusters only).
    pub insecure_skip_verify: bool,
}

impl ElasticsearchConfig {
    /// The configured base URLs, `url` first.
    pub fn all_urls(&self) -> Vec<String> {
        self.url.iter().chain(self.urls.iter()).map(|u| u.trim().to_string()).collect()
    }

    /// Whether the source runs: enabled and a URL configured.
    pub fn active(&self) -> bool {
        self.enabled && !self.all_urls().is_empty()
    }

    /// The interval in force (`default`: the agent's).
    pub fn effective_interval(&self, default: Duration) -> Duration {
        self.interval.unwrap_or(default)
    }

    /// The request time limit in force.
    pub fn effective_timeout(&self, default_interval: Duration) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.effective_interval(default_interval).mul_f64(0.8)))
    }

    /// Checks every value; errors name the field.
    pub fn validate(&self, default_interval: Duration) -> Result<(), ConfigError> {
        let urls = self.all_urls();
        for (i, u) in urls.iter().enumerate() {
            let field = if self.url.is_some() && i == 0 {
                format!("{FIELD}.url")
            } else {
                format!("{FIELD}.urls")
            };
            let parsed = parse_http_url(&field, u)?;
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(invalid(
                    field,
                    "credentials in the URL would end up in logs; use basic_auth with password_file",
                ));
            }
        }
        let interval = self.effective_interval(default_interval);
        if interval < Duration::from_millis(100) {
            return Err(invalid(
                format!("{FIELD}.interval"),
                format!("{interval:?} is below the minimum of 100ms"),
            ));
        }
        let timeout = self.effective_timeout(default_interval);
        if timeout < Duration::from_millis(10) {
            return Err(invalid(
                format!("{FIELD}.timeout"),
                format!("{timeout:?} is below the minimum of 10ms"),
            ));
        }
        if timeout >= interval {
            return Err(invalid(
                format!("{FIELD}.timeout"),
                format!("{timeout:?} must be shorter than the interval ({interval:?})"),
            ));
        }
        if let Some(b) = &self.basic_auth {
            if b.username.is_empty() {
                return Err(invalid(format!("{FIELD}.basic_auth.username"), "must not be empty"));
            }
            if b.password_file.as_os_str().is_empty() {
                return Err(invalid(
                    format!("{FIELD}.basic_auth.password_file"),
                    "must name the file holding the password",
                ));
            }
        }
        for p in &self.indices {
            glob::Pattern::new(p).map_err(|e| invalid(format!("{FIELD}.indices"), format!("{p:?} is not a glob pattern: {e}")))?;
        }
        if self.job.trim().is_empty() {
            return Err(invalid(format!("{FIELD}.job"), "must not be empty"));
        }
        Ok(())
    }
}

/// Which index or alias names are counted.
#[derive(Debug, Clone)]
pub(super) struct IndexFilter(Vec<glob::Pattern>);

impl IndexFilter {
    pub(super) fn new(patterns: &[String]) -> Result<Self, ConfigError> {
        patterns
            .iter()
            .map(|p| glob::Pattern::new(p).map_err(|e| invalid(format!("{FIELD}.indices"), format!("{p:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()
            .map(IndexFilter)
    }

    /// Whether `name` is counted: no patterns → every name not starting with
    /// `.`; else a pattern matches it (a leading `.` only matched by a
    /// pattern that starts with `.`).
    pub(super) fn matches(&self, name: &str) -> bool {
        if self.0.is_empty() {
            return !name.starts_with('.');
        }
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: true,
        };
        self.0.iter().any(|p| p.matches_with(name, opts))
    }
}
