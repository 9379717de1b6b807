//! The collector's configuration: a YAML file (`--config FILE`) whose every
//! field has a default, overridden by flags. Documented field by field in
//! `deploy/examples/collector.yml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use csoc_agent::util::{LogFormat, de_duration};
use serde::Deserialize;

use crate::auth::AgentAuth;

pub use csoc_agent::config::ConfigError;

/// One agent token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentToken {
    /// The commons an agent presenting this token belongs to.
    pub commons: String,
    /// The token itself. Prefer `token_sha256`, so that the file holds no
    /// secret.
    #[serde(default)]
    pub token: Option<String>,
    /// The token's SHA-256 digest, hex (`printf %s TOKEN | sha256sum`).
    #[serde(default)]
    pub token_sha256: Option<String>,
}

/// Limits on what agents may send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest encoded WriteBatch accepted (bytes, default 16MiB).
    #[serde(deserialize_with = "csoc_agent::util::de_bytes")]
    pub max_batch_bytes: u64,
    /// Most labels on one series, `__name__` and `commons` included (default 64).
    pub max_labels_per_series: usize,
    /// Longest label name (bytes, default 256).
    pub max_label_name_length: usize,
    /// Longest label value (bytes, default 4096).
    pub max_label_value_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_bytes: 16 << 20,
            max_labels_per_series: 64,
            max_label_name_length: 256,
            max_label_value_length: 4096,
        }
    }
}

/// The collector's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Directory of the database (default ./csoc-data).
    pub data_dir: PathBuf,
    /// Address of the HTTP API, /metrics and UI (default 127.0.0.1:9300).
    pub http_listen: SocketAddr,
    /// HTTPS for the HTTP API (off unless set; see `crate::tls`).
    pub http_tls: Option<crate::tls::HttpTlsConfig>,
    /// Address of the gRPC ingest (default 127.0.0.1:9301).
    pub grpc_listen: SocketAddr,
    /// TLS, and optionally client certificates, on the gRPC ingest (off
    /// unless set; see `crate::tls`).
    pub grpc_tls: Option<crate::tls::GrpcTlsConfig>,
    /// Agent tokens. With none, every remote agent is refused.
    pub agent_tokens: Vec<AgentToken>,
    /// Agent client certificate names mapped to commons (needs
    /// `grpc_tls.client_ca_file`).
    pub agent_certs: Vec<crate::tls::AgentCert>,
    /// Also run an agent in-process watching this host as commons "local".
    pub local_agent: bool,
    /// Collection interval of the local agent (default 15s).
    #[serde(deserialize_with = "de_duration")]
    pub local_agent_interval: Duration,
    /// How far back an instant query looks for a sample (default 5m).
    #[serde(deserialize_with = "de_duration")]
    pub lookback_delta: Duration,
    /// Time limit of one query (default 2m); a query past it fails with
    /// Prometheus's `timeout` error.
    #[serde(deserialize_with = "de_duration")]
    pub query_timeout: Duration,
    /// At most this many samples held in memory by one query (default
    /// 50,000,000); more fails the query with an `execution` error.
    pub query_max_samples: usize,
    /// How often the collector sends a heartbeat on an idle stream (default 15s).
    #[serde(deserialize_with = "de_duration")]
    pub heartbeat_interval: Duration,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Ingest limits.
    pub limits: Limits,
    /// Delete data older than this (default 15d).
    #[serde(deserialize_with = "de_duration")]
    pub retention: Duration,
    /// Keep the database under this size, deleting the oldest data first
    /// (`10GB`, `512MiB`; 0 = no limit, the default).
    #[serde(deserialize_with = "csoc_agent::util::de_bytes")]
    pub retention_size: u64,
    /// Memory for decoded chunks that repeated queries reuse (`256MiB`, the
    /// default; 0 disables the cache).
    #[serde(deserialize_with = "csoc_agent::util::de_bytes")]
    pub chunk_cache_size: u64,
    /// Allow the admin endpoints (`POST /api/v1/admin/tsdb/flush`). Off by
    /// default, as in Prometheus (`--web.enable-admin-api`).
    pub enable_admin_api: bool,
    /// Rule files (paths or globs), as Prometheus's `rule_files`.
    pub rule_files: Vec<String>,
    /// Evaluation interval of rule groups that set none (default 1m).
    #[serde(deserialize_with = "de_duration")]
    pub evaluation_interval: Duration,
    /// Minimum time before a firing alert is re-sent to Alertmanager
    /// (default 1m, Prometheus's `--rules.alert.resend-delay`).
    #[serde(deserialize_with = "de_duration")]
    pub alert_resend_delay: Duration,
    /// Labels added to every alert sent (and `$externalLabels` in templates).
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// The collector's URL as users reach it (alert links, `$externalURL`;
    /// default `http://<http_listen>`).
    pub external_url: Option<String>,
    /// Alertmanager base URLs that receive the alerts (API v2).
    pub alertmanagers: Vec<String>,
    /// Built-in receivers (webhook, Slack, PagerDuty) for teams without an
    /// Alertmanager.
    pub receivers: Vec<crate::notify::ReceiverConfig>,
    /// How often the collector stores its own metrics (job
    /// "csoc-collector"), including each agent's last contact (default
    /// 15s; 0 disables).
    #[serde(deserialize_with = "de_duration")]
    pub self_scrape_interval: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            data_dir: PathBuf::from("./csoc-data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9300)),
            http_tls: None,
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 9301)),
            grpc_tls: None,
            agent_tokens: Vec::new(),
            agent_certs: Vec::new(),
            local_agent: false,
            local_agent_interval: Duration::from_secs(15),
            lookback_delta: Duration::from_secs(300),
            query_timeout: Duration::from_secs(120),
            query_max_samples: 50_000_000,
            heartbeat_interval: Duration::from_secs(15),
            log_format: LogFormat::Text,
            limits: Limits::default(),
            retention: Duration::from_secs(15 * 86_400),
            retention_size: 0,
            chunk_cache_size: crate::tsdb::DEFAULT_CHUNK_CACHE_BYTES as u64,
            enable_admin_api: false,
            rule_files: Vec::new(),
            evaluation_interval: Duration::from_secs(60),
            alert_resend_delay: Duration::from_secs(60),
            external_labels: Default::default(),
            external_url: None,
            alertmanagers: Vec::new(),
            receivers: Vec::new(),
            self_scrape_interval: Duration::from_secs(15),
        }
    }
}

/// Whether `s` may name a commons (it becomes a label value and appears in
/// logs and file names): letters, digits, `-`, `_`, `.`, 1 to 128 bytes.
pub fn valid_commons(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl CollectorConfig {
    /// Reads a YAML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        csoc_agent::config::read_yaml(path)
    }

    /// Checks every value and builds the token table.
    pub fn agent_auth(&self) -> Result<AgentAuth, ConfigError> {
        let mut auth = AgentAuth::default();
        for (i, t) in self.agent_tokens.iter().enumerate() {
            let field = format!("agent_tokens[{i}]");
            if !valid_commons(&t.commons) {
                return Err(ConfigError::Invalid {
                    field,
                    message: format!("commons {:?} must be 1-128 letters, digits, '-', '_' or '.'", t.commons),
                });
            }
            match (&t.token, &t.token_sha256) {
                (Some(tok), None) => {
                    if tok.len() < 16 {
                        return Err(ConfigError::Invalid {
                            field,
                            message: format!(
                                "the token of commons {:?} is shorter than 16 characters; use a long random one (openssl rand -hex 32)",
                                t.commons
                            ),
                        });
                    }
                    auth.add_token(&t.commons, tok)
                }
                (None, Some(hexd)) => {
                    let bytes = hex::decode(hexd.trim())
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| ConfigError::Invalid {
                            field: field.clone(),
                            message: "token_sha256 must be 64 hex digits".into(),
                        })?;
                    auth.add_digest(&t.commons, bytes)
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        field,
                        message: "give exactly one of token or token_sha256".into(),
                    });
                }
            }
        }
        Ok(auth)
    }

    /// The external URL: as configured, or `http://<http_listen>`
    /// (`https://` with `http_tls`).
    pub fn external_url(&self) -> String {
        let scheme = if self.http_tls.is_some() { "https" } else { "http" };
        self.external_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.http_listen))
            .trim_end_matches('/')
            .to_string()
    }

    /// Checks every value; returns the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.agent_auth()?;
        self.validate_tls()?;
        let inv = |field: &str, message: String| ConfigError::Invalid {
            field: field.into(),
            message,
        };
        if self.query_timeout < Duration::from_millis(1) {
            return Err(inv("query_timeout", "must be positive".into()));
        }
        if self.query_max_samples == 0 {
            return Err(inv("query_max_samples", "must be at least 1".into()));
        }
        if self.lookback_delta < Duration::from_secs(1) {
            return Err(inv("lookback_delta", "must be at least 1s".into()));
        }
        if self.heartbeat_interval < Duration::from_secs(1) || self.heartbeat_interval > Duration::from_secs(300) {
            return Err(inv("heartbeat_interval", "must be between 1s and 5m".into()));
        }
        if self.local_agent_interval < Duration::from_millis(100) {
            return Err(inv("local_agent_interval", "must be at least 100ms".into()));
        }
        if self.http_listen == self.grpc_listen {
            return Err(inv("grpc_listen", format!("{} is also the HTTP address", self.grpc_listen)));
        }
        if self.retention < Duration::from_secs(60) {
            return Err(inv("retention", "must be at least 1m".into()));
        }
        if self.evaluation_interval < Duration::from_millis(100) {
            return Err(inv("evaluation_interval", "must be at least 100ms".into()));
        }
        for (k, v) in &self.external_labels {
            if !csoc_agent::config::valid_label_name(k) || v.is_empty() {
                return Err(inv("external_labels", format!("{k:?}={v:?}: invalid label name or empty value")));
            }
        }
        if let Some(u) = &self.external_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(inv("external_url", format!("{u:?} must start with http:// or https://")));
        }
        for (i, u) in self.alertmanagers.iter().enumerate() {
            crate::notify::alertmanager::alerts_endpoint(u).map_err(|e| inv(&format!("alertmanagers[{i}]"), e))?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            r.validate().map_err(|e| inv(&format!("receivers[{i}]"), e))?;
            if !names.insert(r.name.clone()) {
                return Err(inv(&format!("receivers[{i}]"), format!("receiver name {:?} is used twice", r.name)));
            }
        }
        if self.limits.max_batch_bytes < 1024 {
            return Err(inv("limits.max_batch_bytes", "must be at least 1KiB".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<CollectorConfig, ConfigError> {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("c.yml");
        std::fs::write(&p, y).expect("write");
        CollectorConfig::from_file(&p)
    }

    #[test]
    fn tokens_plain_and_hashed() {
        let c = parse(&format!(
            "agent_tokens:\n  - {{commons: a, token: aaaaaaaaaaaaaaaaaaaa}}\n  - {{commons: b, token_sha256: {}}}\n",
            hex::encode(crate::auth::digest("bbbbbbbbbbbbbbbbbbbbbb"))
        ))
        .expect("parse");
        c.validate().expect("valid");
        let auth = c.agent_auth().expect("auth");
        assert_eq!(auth.authenticate("bbbbbbbbbbbbbbbbbbbbbb"), Some("b"));
        assert_eq!(auth.authenticate("aaaaaaaaaaaaaaaaaaaa"), Some("a"));
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse("agent_tokens:\n  - {commons: 'a b', token: aaaaaaaaaaaaaaaaaaaa}\n")
            .expect("parse")
            .validate()
            .expect_err("invalid");
        assert!(e.to_string().contains("agent_tokens[0]"), "{e}");
        let e = parse("agent_tokens:\n  - {commons: a, token: short}\n")
            .expect("parse")
            .validate()
            .expect_err("invalid");
        assert!(e.to_string().contains("shorter"), "{e}");
        let e = parse("lookback: 5m\n").expect_err("unknown field");
        assert!(e.to_string().contains("lookback"), "{e}");
        let e = parse("http_listen: nowhere\n").expect_err("bad addr");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
