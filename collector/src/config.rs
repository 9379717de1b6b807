//! The collector's configuration: a YAML file (`--config FILE`) whose every
//! field has a default, overridden by flags. Documented field by field in
//! `deploy/examples/collector.yml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use csoc_common::duration::de_duration;
use csoc_common::log::LogFormat;
use serde::Deserialize;

use crate::auth::AgentAuth;

pub use csoc_common::config::ConfigError;

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
    /// A file holding the token (a mounted Secret; read at start and at
    /// every reload; a final newline is removed).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// One API token (reads of the HTTP API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// A name for logs (never the token).
    pub name: String,
    /// The token itself; prefer `token_sha256`.
    #[serde(default)]
    pub token: Option<String>,
    /// The token's SHA-256 digest, hex (`printf %s TOKEN | sha256sum`).
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// A file holding the token (read at start and at every reload).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `read`, `write` (read, plus creating and expiring silences) or `admin`.
    pub role: crate::auth::Role,
    /// With a commons, the token only ever sees that commons' series.
    #[serde(default)]
    pub commons: Option<String>,
}

impl ApiToken {
    /// Parses `NAME=TOKEN:ROLE[:commons=C]` (`--api-token`).
    pub fn parse_flag(spec: &str) -> Result<ApiToken, String> {
        let usage = "--api-token: expected NAME=TOKEN:ROLE[:commons=COMMONS], ROLE read, write or admin";
        let (name, rest) = spec.split_once('=').ok_or_else(|| usage.to_string())?;
        let mut parts = rest.split(':');
        let token = parts.next().unwrap_or_default();
        let role = parts.next().ok_or_else(|| usage.to_string())?;
        let commons = match parts.next() {
            None => None,
            Some(c) => Some(
                c.strip_prefix("commons=")
                    .ok_or_else(|| format!("{usage}: {c:?} is not commons=COMMONS"))?
                    .to_string(),
            ),
        };
        if parts.next().is_some() || name.is_empty() || token.is_empty() {
            return Err(usage.to_string());
        }
        Ok(ApiToken {
            name: name.to_string(),
            token: Some(token.to_string()),
            token_sha256: None,
            token_file: None,
            role: role.parse().map_err(|e| format!("--api-token {name}: {e}"))?,
            commons,
        })
    }
}

/// A token, its digest or its file, checked: the digest.
fn token_digest(
    field: &str,
    what: &str,
    token: &Option<String>,
    sha: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<[u8; 32], ConfigError> {
    let inv = |message: String| ConfigError::Invalid {
        field: field.to_string(),
        message,
    };
    let from_file;
    let token = match (file, token, sha) {
        (Some(f), None, None) => {
            from_file = Some(csoc_common::httpconf::read_secret(f).map_err(|e| inv(format!("token_file: {e}")))?);
            &from_file
        }
        (Some(_), _, _) => return Err(inv("give exactly one of token, token_sha256 or token_file".into())),
        (None, _, _) => token,
    };
    match (token, sha) {
        (Some(tok), None) => {
            if tok.len() < 16 {
                return Err(inv(format!(
                    "the token of {what} is shorter than 16 characters; use a long random one (openssl rand -hex 32)"
                )));
            }
            Ok(crate::auth::digest(tok))
        }
        (None, Some(hexd)) => hex::decode(hexd.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| inv("token_sha256 must be 64 hex digits".into())),
        _ => Err(inv("give exactly one of token, token_sha256 or token_file".into())),
    }
}

/// Limits on what agents may send and what one request may ask for; each is
/// a `--limit NAME=VALUE` flag and a key of `limits:`, and is exported as
/// `csoc_collector_limit{limit}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest encoded WriteBatch accepted (bytes, default 16MiB).
    #[serde(deserialize_with = "csoc_common::duration::de_bytes")]
    pub max_batch_bytes: u64,
    /// Most labels on one series, `__name__` and `commons` included (default 64).
    pub max_labels_per_series: usize,
    /// Longest label name (bytes, default 256).
    pub max_label_name_length: usize,
    /// Longest label value (bytes, default 4096).
    pub max_label_value_length: usize,
    /// Most active series one agent may write (series written within the
    /// last hour; default 1,000,000; 0 = no limit).
    pub max_series_per_agent: usize,
    /// Samples per second one agent may send, averaged (a token bucket
    /// holding `max_samples_per_second * 10` samples, so a replay after an
    /// outage drains in bursts; default 200,000; 0 = no limit). A batch over
    /// the rate gets a retryable Nack and the agent sends it again later.
    pub max_samples_per_second: u64,
    /// Most agent streams open at once (default 2,000; 0 = no limit).
    pub max_concurrent_agents: usize,
    /// Longest PromQL expression accepted by `query`, `query_range`,
    /// `parse_query`, `format_query` and rule files (bytes, default 64KiB),
    /// checked before parsing.
    #[serde(deserialize_with = "csoc_common::duration::de_bytes")]
    pub max_query_length: u64,
    /// Deepest PromQL expression accepted (nested operators, calls,
    /// parentheses and subqueries; default 512), checked before parsing, so
    /// that parsing, evaluation, printing and dropping stay within their
    /// thread's stack.
    pub max_query_depth: usize,
    /// Most `match[]` selectors in one `series`, `labels`, `label values` or
    /// `federate` request (default 64).
    pub max_match_sets: usize,
    /// Most series one request may select (`series`, `labels`, label values,
    /// `federate`, and each selector of a query; default 500,000): past it,
    /// a 422 naming the limit instead of an answer of unbounded size.
    pub max_series_per_request: usize,
    /// Most metric families kept per commons in the metadata store, and the
    /// longest help text kept (families past the limit are dropped and
    /// counted; default 10,000 families, help cut at 1KiB).
    pub max_metadata_per_commons: usize,
    /// Largest remote-write request body once decompressed (bytes, default
    /// 64MiB), read from the snappy header before anything is decompressed.
    #[serde(deserialize_with = "csoc_common::duration::de_bytes")]
    pub max_remote_write_decompressed_bytes: u64,
    /// Most open connections on each listener, HTTP and gRPC (default
    /// 4,096; 0 = no limit). Past it, new connections wait in the kernel's
    /// backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (HTTP) or finish the
    /// TLS handshake and HTTP/2 preface (both listeners; default 10s).
    #[serde(deserialize_with = "csoc_common::duration::de_duration")]
    pub header_read_timeout: std::time::Duration,
    /// Time an idle keep-alive connection is kept open (default 2m).
    #[serde(deserialize_with = "csoc_common::duration::de_duration")]
    pub idle_timeout: std::time::Duration,
}

impl Limits {
    /// Every limit by the name its rejections and metrics use.
    pub fn named(&self) -> [(&'static str, f64); 16] {
        [
            ("max_batch_bytes", self.max_batch_bytes as f64),
            ("max_labels_per_series", self.max_labels_per_series as f64),
            ("max_label_name_length", self.max_label_name_length as f64),
            ("max_label_value_length", self.max_label_value_length as f64),
            ("max_series_per_agent", self.max_series_per_agent as f64),
            ("max_samples_per_second", self.max_samples_per_second as f64),
            ("max_concurrent_agents", self.max_concurrent_agents as f64),
            ("max_query_length", self.max_query_length as f64),
            ("max_query_depth", self.max_query_depth as f64),
            ("max_match_sets", self.max_match_sets as f64),
            ("max_series_per_request", self.max_series_per_request as f64),
            ("max_metadata_per_commons", self.max_metadata_per_commons as f64),
            (
                "max_remote_write_decompressed_bytes",
                self.max_remote_write_decompressed_bytes as f64,
            ),
            ("max_connections", self.max_connections as f64),
            ("header_read_timeout_seconds", self.header_read_timeout.as_secs_f64()),
            ("idle_timeout_seconds", self.idle_timeout.as_secs_f64()),
        ]
    }

    /// Sets one limit from `NAME=VALUE` (`--limit`); sizes take units.
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        let (name, value) = spec
            .split_once('=')
            .map(|(n, v)| (n.trim(), v.trim()))
            .ok_or_else(|| format!("--limit {spec:?}: expected NAME=VALUE"))?;
        let num = |v: &str| -> Result<u64, String> {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("--limit {name}: {v:?} is not a whole number"))
        };
        match name {
            "max_batch_bytes" => {
                self.max_batch_bytes = csoc_common::duration::parse_bytes(value).map_err(|e| format!("--limit {name}: {e}"))?
            }
            "max_labels_per_series" => self.max_labels_per_series = num(value)? as usize,
            "max_label_name_length" => self.max_label_name_length = num(value)? as usize,
            "max_label_value_length" => self.max_label_value_length = num(value)? as usize,
            "max_series_per_agent" => self.max_series_per_agent = num(value)? as usize,
            "max_samples_per_second" => self.max_samples_per_second = num(value)?,
            "max_concurrent_agents" => self.max_concurrent_agents = num(value)? as usize,
            "max_query_length" => {
                self.max_query_length = csoc_common::duration::parse_bytes(value).map_err(|e| format!("--limit {name}: {e}"))?
            }
            "max_query_depth" => self.max_query_depth = num(value)? as usize,
            "max_match_sets" => self.max_match_sets = num(value)? as usize,
            "max_series_per_request" => self.max_series_per_request = num(value)? as usize,
            "max_metadata_per_commons" => self.max_metadata_per_commons = num(value)? as usize,
            "max_remote_write_decompressed_bytes" => {
                self.max_remote_write_decompressed_bytes =
                    csoc_common::duration::parse_bytes(value).map_err(|e| format!("--limit {name}: {e}"))?
            }
            "max_connections" => self.max_connections = num(value)? as usize,
            "header_read_timeout" | "header_read_timeout_seconds" => {
                self.header_read_timeout = csoc_common::duration::parse_duration(value).map_err(|e| format!("--limit {name}: {e}"))?
            }
            "idle_timeout" | "idle_timeout_seconds" => {
                self.idle_timeout = csoc_common::duration::parse_duration(value).map_err(|e| format!("--limit {name}: {e}"))?
            }
            _ => {
                let names: Vec<&str> = self.named().iter().map(|(n, _)| *n).collect();
                return Err(format!("--limit: unknown limit {name:?} (known: {})", names.join(", ")));
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_bytes: 16 << 20,
            max_labels_per_series: 64,
            max_label_name_length: 256,
            max_label_value_length: 4096,
            max_series_per_agent: 1_000_000,
            max_samples_per_second: 200_000,
            max_concurrent_agents: 2_000,
            max_query_length: 64 << 10,
            max_query_depth: 512,
            max_match_sets: 64,
            max_series_per_request: 500_000,
            max_metadata_per_commons: 10_000,
            max_remote_write_decompressed_bytes: 64 << 20,
            max_connections: 4_096,
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(120),
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
    /// How often the files of `grpc_tls` and `http_tls` (certificate, key,
    /// client CA) are read to see whether they changed (default 5s; 0 =
    /// never). A change is loaded without a restart: new connections get the
    /// new certificate; files that do not load keep the previous one in
    /// service (logged, and counted in
    /// `csoc_collector_tls_reloads_total{result="failure"}`).
    #[serde(deserialize_with = "de_duration")]
    pub tls_reload_interval: Duration,
    /// API tokens for reading the HTTP API. With none, the API is open to
    /// whoever reaches its address (loopback by default).
    pub api_tokens: Vec<ApiToken>,
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
    #[serde(deserialize_with = "csoc_common::duration::de_bytes")]
    pub retention_size: u64,
    /// Memory for decoded chunks that repeated queries reuse (`256MiB`, the
    /// default; 0 disables the cache).
    #[serde(deserialize_with = "csoc_common::duration::de_bytes")]
    pub chunk_cache_size: u64,
    /// Allow the admin endpoints (`POST /api/v1/admin/tsdb/flush`,
    /// `DELETE /api/v1/admin/agents/{commons}/{agent}`). Off by default, as
    /// in Prometheus (`--web.enable-admin-api`).
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
    /// Prometheus's `alerting:` block (`alertmanagers` with `scheme`,
    /// `path_prefix`, `timeout`, `static_configs`, `basic_auth`,
    /// `authorization`, `tls_config`, `relabel_configs`); its
    /// Alertmanagers come after the flat `alertmanagers` URLs.
    pub alerting: crate::notify::am_config::AlertingConfig,
    /// Built-in receivers (webhook, Slack, PagerDuty) for teams without an
    /// Alertmanager.
    pub receivers: Vec<crate::notify::ReceiverConfig>,
    /// Inhibition rules of the built-in receivers, as Alertmanager's
    /// `inhibit_rules` (`source_matchers`, `target_matchers`, `equal`):
    /// while a source alert fires, matching target alerts with the same
    /// `equal` labels are not notified.
    pub inhibit_rules: Vec<crate::notify::inhibit::InhibitRuleConfig>,
    /// Serve the public status page `/status` without authentication
    /// (commons × service up or down, uptime over 24 hours and 30 days;
    /// nothing else). Off by default (`--web.public-status`).
    pub public_status: bool,
    /// How often the collector stores its own metrics (job
    /// "csoc-collector"), including each agent's last contact (default
    /// 15s; 0 disables).
    #[serde(deserialize_with = "de_duration")]
    pub self_scrape_interval: Duration,
    /// Forget an agent that has had no stream open and sent nothing for
    /// longer than this (default 7d; 0 = never): it is no longer listed by
    /// `GET /api/v1/agents` and its `csoc_collector_agent_*` series end, so
    /// `CsocAgentSilent` stops paging for it (an agent renamed or retired,
    /// a pod name from before a rollout). Kept across restarts in
    /// `<data_dir>/agents.json`. `DELETE /api/v1/admin/agents/{commons}/{agent}`
    /// forgets one at once.
    #[serde(deserialize_with = "de_duration")]
    pub agent_forget_after: Duration,
    /// Remote-write targets (Mimir, Thanos Receive, Cortex,
    /// VictoriaMetrics, Prometheus): everything stored is also sent there.
    pub remote_write: Vec<crate::remote::RemoteWriteConfig>,
    // --- selfmon ---
    /// Where the rule pack's runbook lives (default: this collector's own
    /// copy, `<external URL>/runbook`, served by `crate::ui::runbook`).
    /// An alert's `runbook_url` annotation that starts with the default, or
    /// is relative (`deploy/rules/RUNBOOK.md#x`, `#x`), is rewritten onto
    /// this base, so links are absolute and clickable in Slack and
    /// PagerDuty (`--rules.runbook-base-url`).
    pub runbook_base_url: Option<String>,
    // --- central agent configuration (cfgpush) ---
    /// Directory of central agent config files pushed to the agents over
    /// their streams: `_default.yml`, `<commons>.yml`,
    /// `<commons>/<agent>.yml`, merged in that order (`interval` and
    /// `sources` only; see README "Central agent configuration"). Re-read on
    /// change, SIGHUP and `POST /-/reload`. Unset: nothing is pushed.
    pub agent_config_dir: Option<std::path::PathBuf>,
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
            tls_reload_interval: Duration::from_secs(5),
            api_tokens: Vec::new(),
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
            alerting: Default::default(),
            receivers: Vec::new(),
            inhibit_rules: Vec::new(),
            public_status: false,
            self_scrape_interval: Duration::from_secs(15),
            agent_forget_after: crate::agents::DEFAULT_FORGET_AFTER,
            remote_write: Vec::new(),
            runbook_base_url: None,
            agent_config_dir: None,
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
        csoc_common::config::read_yaml(path)
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
            let d = token_digest(
                &field,
                &format!("commons {:?}", t.commons),
                &t.token,
                &t.token_sha256,
                &t.token_file,
            )?;
            auth.add_digest(&t.commons, d);
        }
        Ok(auth)
    }

    /// Checks the API tokens and builds their table.
    pub fn api_auth(&self) -> Result<crate::auth::ApiAuth, ConfigError> {
        let mut auth = crate::auth::ApiAuth::default();
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.api_tokens.iter().enumerate() {
            let field = format!("api_tokens[{i}]");
            let inv = |message: String| ConfigError::Invalid {
                field: field.clone(),
                message,
            };
            if t.name.is_empty() || t.name.len() > 128 || t.name.chars().any(|c| c.is_control()) {
                return Err(inv(format!("name {:?} must be 1-128 printable characters", t.name)));
            }
            if !names.insert(t.name.as_str()) {
                return Err(inv(format!("the name {:?} is used twice", t.name)));
            }
            if let Some(c) = &t.commons {
                if !valid_commons(c) {
                    return Err(inv(format!("commons {c:?} must be 1-128 letters, digits, '-', '_' or '.'")));
                }
                if t.role == crate::auth::Role::Admin {
                    return Err(inv(format!(
                        "token {:?}: an admin token cannot be scoped to a commons (admin sees and reloads everything)",
                        t.name
                    )));
                }
            }
            let d = token_digest(&field, &format!("API token {:?}", t.name), &t.token, &t.token_sha256, &t.token_file)?;
            auth.add_digest(
                d,
                crate::auth::Principal {
                    name: t.name.clone(),
                    role: t.role,
                    commons: t.commons.clone(),
                },
            );
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

    /// The Alertmanagers alerts go to: the flat `alertmanagers` URLs, then
    /// those of the `alerting:` block, relabelled.
    pub fn resolved_alertmanagers(&self) -> Result<crate::notify::am_config::Resolved, String> {
        self.alerting.resolve(&self.alertmanagers)
    }

    /// Checks every value; returns the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.agent_auth()?;
        self.validate_tls()?;
        self.api_auth()?;
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
        if !self.tls_reload_interval.is_zero() && self.tls_reload_interval < Duration::from_secs(1) {
            return Err(inv(
                "tls_reload_interval",
                "must be 0 (never re-read the TLS files) or at least 1s".into(),
            ));
        }
        if self.retention < Duration::from_secs(60) {
            return Err(inv("retention", "must be at least 1m".into()));
        }
        if !self.agent_forget_after.is_zero() && self.agent_forget_after < Duration::from_secs(1) {
            return Err(inv("agent_forget_after", "must be 0 (never forget an agent) or at least 1s".into()));
        }
        if self.evaluation_interval < Duration::from_millis(100) {
            return Err(inv("evaluation_interval", "must be at least 100ms".into()));
        }
        for (k, v) in &self.external_labels {
            if !csoc_common::labels::valid_label_name(k) || v.is_empty() {
                return Err(inv("external_labels", format!("{k:?}={v:?}: invalid label name or empty value")));
            }
        }
        if let Some(u) = &self.external_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(inv("external_url", format!("{u:?} must start with http:// or https://")));
        }
        if let Some(u) = &self.runbook_base_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(inv("runbook_base_url", format!("{u:?} must start with http:// or https://")));
        }
        self.resolved_alertmanagers().map_err(|e| inv("alerting", e))?;
        let mut rw_names = std::collections::HashSet::new();
        for (i, r) in self.remote_write.iter().enumerate() {
            r.validate().map_err(|e| inv(&format!("remote_write[{i}]"), e))?;
            if !rw_names.insert(r.effective_name()) {
                return Err(inv(
                    &format!("remote_write[{i}]"),
                    format!("name {:?} is used twice; give each target a distinct name", r.effective_name()),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.inhibit_rules.iter().enumerate() {
            r.validate().map_err(|e| inv(&format!("inhibit_rules[{i}]"), e))?;
        }
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
    fn api_tokens_from_flags_and_file() {
        let t = ApiToken::parse_flag("grafana-alpha=0123456789abcdef0123:read:commons=alpha").expect("flag");
        assert_eq!(
            (t.name.as_str(), t.role, t.commons.as_deref()),
            ("grafana-alpha", crate::auth::Role::Read, Some("alpha"))
        );
        let t = ApiToken::parse_flag("ops=0123456789abcdef0123:admin").expect("flag");
        assert_eq!((t.role, t.commons), (crate::auth::Role::Admin, None));
        for bad in [
            "x",
            "x=tok",
            "x=tok:root",
            "x=tok:read:alpha",
            "=tok:read",
            "x=:read",
            "x=t:read:commons=a:more",
        ] {
            assert!(ApiToken::parse_flag(bad).is_err(), "{bad}");
        }
        let c = parse(&format!(
            "api_tokens:\n  - {{name: g, role: read, commons: alpha, token_sha256: {}}}\n  - {{name: ops, role: admin, token: 0123456789abcdef0123}}\n",
            hex::encode(crate::auth::digest("scoped-token-0123456789"))
        ))
        .expect("parse");
        let auth = c.api_auth().expect("valid");
        assert_eq!(
            auth.authenticate("scoped-token-0123456789").and_then(|p| p.commons.as_deref()),
            Some("alpha")
        );
        assert_eq!(
            auth.authenticate("0123456789abcdef0123").map(|p| p.role),
            Some(crate::auth::Role::Admin)
        );
        let e = parse("api_tokens:\n  - {name: ops, role: admin, commons: a, token: 0123456789abcdef0123}\n")
            .expect("parse")
            .validate()
            .expect_err("scoped admin");
        assert!(
            e.to_string().contains("api_tokens[0]") && e.to_string().contains("cannot be scoped"),
            "{e}"
        );
        let e = parse("api_tokens:\n  - {name: g, role: reader, token: 0123456789abcdef0123}\n").expect_err("bad role");
        assert!(e.to_string().contains("reader"), "{e}");
    }

    #[test]
    fn the_example_file_is_valid_and_states_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/collector.yml");
        let c = CollectorConfig::from_file(&path).expect("example parses");
        c.validate().expect("example is valid");
        let d = CollectorConfig::default();
        assert_eq!(c.limits.named(), d.limits.named(), "the example's limits are the defaults");
        // The commented api_tokens examples parse too, once uncommented.
        let text = std::fs::read_to_string(&path).expect("read");
        let start = text.find("api_tokens: []").expect("api_tokens");
        let block: Vec<&str> = text[start..].lines().skip(1).take_while(|l| l.starts_with("#  ")).collect();
        let yaml = format!(
            "api_tokens:\n{}\n",
            block
                .iter()
                .map(|l| l
                    .trim_start_matches('#')
                    .split("  #")
                    .next()
                    .unwrap_or_default()
                    .trim_end()
                    .replace("5e88...64 hex digits", &"ab".repeat(32)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("c.yml");
        std::fs::write(&p, &yaml).expect("write");
        let c = CollectorConfig::from_file(&p).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(c.api_auth().expect("valid").len(), 2);
        // And the commented remote_write examples.
        let start = text.find("remote_write: []").expect("remote_write");
        let block: Vec<&str> = text[start..].lines().skip(1).take_while(|l| l.starts_with("#  ")).collect();
        let uncommented: Vec<&str> = block
            .iter()
            .map(|l| l.trim_start_matches('#').split("  #").next().unwrap_or_default().trim_end())
            .collect();
        let yaml = format!("remote_write:\n{}\n", uncommented.join("\n"));
        std::fs::write(&p, &yaml).expect("write");
        let c = CollectorConfig::from_file(&p).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        c.validate().unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(c.remote_write.len(), 2);
        let d = crate::remote::RemoteWriteConfig::with_url("http://x/");
        let m = &c.remote_write[0];
        assert_eq!(
            (m.shards, m.max_samples_per_send, m.max_backlog),
            (d.shards, d.max_samples_per_send, d.max_backlog)
        );
        assert_eq!((m.timeout, m.min_backoff, m.max_backoff), (d.timeout, d.min_backoff, d.max_backoff));
        assert_eq!(m.headers.get("X-Scope-OrgID").map(String::as_str), Some("csoc"));
    }

    #[test]
    fn agent_forget_after_defaults_to_7d_takes_0_and_refuses_less_than_1s() {
        assert_eq!(CollectorConfig::default().agent_forget_after, Duration::from_secs(7 * 86_400));
        let c = parse("agent_forget_after: 0\n").expect("parse");
        c.validate().expect("0 = never");
        assert!(c.agent_forget_after.is_zero());
        let c = parse("agent_forget_after: 36h\n").expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.agent_forget_after, Duration::from_secs(36 * 3600));
        let e = parse("agent_forget_after: 500ms\n")
            .expect("parse")
            .validate()
            .expect_err("too short");
        assert!(e.to_string().contains("agent_forget_after"), "{e}");
        let e = parse("agent_forget_after: 7 days\n").expect_err("not a duration");
        assert!(
            e.to_string().contains("agent_forget_after") || e.to_string().contains("7 days"),
            "{e}"
        );
        // The example states the default.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/collector.yml");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("\nagent_forget_after: 7d\n"),
            "the example documents agent_forget_after"
        );
    }

    #[test]
    fn tls_reload_interval_defaults_to_5s_takes_0_and_refuses_less_than_1s() {
        assert_eq!(CollectorConfig::default().tls_reload_interval, Duration::from_secs(5));
        let c = parse("tls_reload_interval: 0\n").expect("parse");
        c.validate().expect("0 = never");
        let c = parse("tls_reload_interval: 30s\n").expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.tls_reload_interval, Duration::from_secs(30));
        let e = parse("tls_reload_interval: 200ms\n")
            .expect("parse")
            .validate()
            .expect_err("too short");
        assert!(e.to_string().contains("tls_reload_interval"), "{e}");
    }

    #[test]
    fn limits_from_flags() {
        let mut l = Limits::default();
        l.set("max_series_per_agent=1_000").expect("set");
        l.set("max_batch_bytes=4MiB").expect("set");
        assert_eq!((l.max_series_per_agent, l.max_batch_bytes), (1000, 4 << 20));
        assert!(l.set("max_series=1").expect_err("unknown").contains("max_series_per_agent"));
        assert!(l.set("max_series_per_agent=lots").is_err());
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

    #[test]
    fn inhibit_rules_and_public_status() {
        let c = parse(
            "public_status: true\ninhibit_rules:\n  - source_matchers: ['alertname=\"Gen3CommonsDown\"']\n    target_matchers: ['severity=~\"warning|critical\"']\n    equal: [commons]\n",
        )
        .expect("parse");
        c.validate().expect("valid");
        assert!(c.public_status);
        assert_eq!(c.inhibit_rules[0].equal, vec!["commons".to_string()]);
        let bad = parse("inhibit_rules:\n  - source_matchers: ['a=~\"(\"']\n    target_matchers: [b=c]\n").expect("parse");
        let e = bad.validate().expect_err("bad regex");
        assert!(e.to_string().contains("inhibit_rules[0]"), "{e}");
        assert!(!CollectorConfig::default().public_status);
    }
}
