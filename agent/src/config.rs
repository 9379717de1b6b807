//! The agent's configuration: a YAML file (`--config FILE`) whose every field
//! has a default, overridden by command-line flags. Documented field by field
//! in `deploy/examples/agent.yml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::sources::gen3_status::Gen3StatusConfig;
use crate::sources::gen3_usage::Gen3UsageConfig;
use crate::sources::host::HostConfig;
use crate::sources::kubernetes::KubernetesConfig;
use crate::sources::revproxy_log::RevproxyLogConfig;
use crate::sources::scrape::ScrapeConfig;
use csoc_common::duration::{de_bytes, de_duration};
use csoc_common::labels::valid_label_name;
use csoc_common::log::LogFormat;

pub use csoc_common::config::{ConfigError, parse_yaml, read_yaml, yaml_error};

/// The agent's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// gRPC URL of the collector (`http://collector:9301`).
    pub collector: String,
    /// Bearer token the collector maps to this agent's commons. Prefer
    /// `token_file` or the CSOC_AGENT_TOKEN environment variable: a token on
    /// the command line is visible to every user of the host.
    pub token: Option<String>,
    /// File holding the token (surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// The commons this agent watches. Informational: the collector derives
    /// the commons from the token, whatever this says.
    pub commons_name: Option<String>,
    /// This agent's name: with the commons it identifies the agent at the
    /// collector, and it is the default `instance` label. `--agent-name` or
    /// the CSOC_AGENT_NAME environment variable override it; default: the
    /// host name. In a pod the host name is the pod's name, new at every
    /// rollout, so the Helm chart sets CSOC_AGENT_NAME from the release.
    pub agent_name: Option<String>,
    /// Collection interval of periodic sources (default 15s).
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Address of the agent's own /metrics (default 127.0.0.1:9302).
    pub http_listen: SocketAddr,
    /// Directory of the on-disk spool (default ./csoc-agent-spool).
    pub spool_dir: PathBuf,
    /// Largest size of the spool; when full the oldest batches are dropped
    /// (default 256MiB).
    #[serde(deserialize_with = "de_bytes")]
    pub spool_max_bytes: u64,
    /// Labels added to every series that does not already have them (e.g.
    /// `environment: prod`). `commons` cannot be set here: the collector sets
    /// it.
    pub external_labels: BTreeMap<String, String>,
    /// Relabelling applied by the pipeline to every sample of every source
    /// after the external labels and `instance` are stamped (Prometheus's
    /// `relabel_configs` syntax and actions; a sample that is dropped or
    /// loses `__name__` is not sent).
    pub relabel_configs: Vec<csoc_common::relabel::RelabelConfig>,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// TLS to the collector (used with an `https://` collector URL): the CA
    /// to trust, this agent's client certificate and key, the server name.
    pub tls: crate::tls::TlsConfig,
    /// Kubernetes credentials for the sources that read the Kubernetes API:
    /// this kubeconfig file's current context (`--kubeconfig`); unset, the
    /// in-cluster service account, then `KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Per-source settings.
    pub sources: SourcesConfig,
}

/// Settings of each source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// The host source (node_exporter-compatible host metrics).
    pub host: HostConfig,
    /// The gen3_status source (health, version and TLS expiry of each Gen3
    /// service; off unless enabled or `--gen3-url` is given).
    pub gen3_status: Gen3StatusConfig,
    /// The gen3_usage source (indexd `_stats` and the other unauthenticated
    /// counts; runs whenever a Gen3 base URL or namespace is configured,
    /// every 5m by default).
    pub gen3_usage: Gen3UsageConfig,
    /// The revproxy_log source (tails revproxy's JSON access log; off unless
    /// enabled or `--revproxy-log PATH` is given).
    pub revproxy_log: RevproxyLogConfig,
    /// The scrape source (Prometheus text/OpenMetrics targets; runs when
    /// `jobs` is not empty or `--scrape` is given).
    pub scrape: ScrapeConfig,
    /// The kubernetes source (the commons' namespaces watched through the
    /// Kubernetes API under kube-state-metrics' names; off unless enabled
    /// or `--kubernetes-namespace NS` is given).
    pub kubernetes: KubernetesConfig,
    // -- backends (Elasticsearch, PostgreSQL) --
    /// The elasticsearch source (guppy's Elasticsearch or OpenSearch
    /// cluster health and index document counts; runs when `url` or `urls`
    /// is set, or `--elasticsearch-url URL` is given).
    pub elasticsearch: crate::sources::elasticsearch::ElasticsearchConfig,
    /// The postgres source (each Gen3 database's connections, transactions,
    /// size, oldest transaction and replication lag; runs when `databases`
    /// is not empty, or `--postgres-dsn NAME=DSN` is given).
    pub postgres: crate::sources::postgres::PostgresConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            collector: "http://127.0.0.1:9301".into(),
            token: None,
            token_file: None,
            commons_name: None,
            agent_name: None,
            interval: Duration::from_secs(15),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9302)),
            spool_dir: PathBuf::from("./csoc-agent-spool"),
            spool_max_bytes: 256 << 20,
            external_labels: BTreeMap::new(),
            relabel_configs: Vec::new(),
            log_format: LogFormat::Text,
            tls: crate::tls::TlsConfig::default(),
            kubeconfig: None,
            sources: SourcesConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Reads a YAML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        read_yaml(path)
    }

    /// Parses YAML text (`path` only names it in errors).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        parse_yaml(text, path)
    }

    /// Checks every value; returns the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.collector.trim();
        let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
            return Err(ConfigError::Invalid {
                field: "collector".into(),
                message: format!("{url:?} is not a URL like http://collector:9301 or https://collector:9301"),
            });
        };
        if url.starts_with("http://") && !self.tls.is_empty() {
            return Err(ConfigError::Invalid {
                field: "tls".into(),
                message: format!("TLS settings are given but the collector URL {url:?} is http://; use https:// to connect with TLS"),
            });
        }
        self.client_tls()?;
        if rest.trim_end_matches('/').is_empty() {
            return Err(ConfigError::Invalid {
                field: "collector".into(),
                message: format!("{url:?} has no host"),
            });
        }
        if self.interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                field: "interval".into(),
                message: format!("{:?} is below the minimum of 100ms", self.interval),
            });
        }
        if self.spool_max_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid {
                field: "spool_max_bytes".into(),
                message: format!("{} bytes is below the minimum of 64KiB", self.spool_max_bytes),
            });
        }
        for k in self.external_labels.keys() {
            if !valid_label_name(k) || k.starts_with("__") {
                return Err(ConfigError::Invalid {
                    field: "external_labels".into(),
                    message: format!("{k:?} is not a valid label name"),
                });
            }
            if k == "commons" {
                return Err(ConfigError::Invalid {
                    field: "external_labels".into(),
                    message: "\"commons\" is set by the collector from the agent's token".into(),
                });
            }
        }
        if let (Some(_), Some(_)) = (&self.token, &self.token_file) {
            return Err(ConfigError::Invalid {
                field: "token".into(),
                message: "set token or token_file, not both".into(),
            });
        }
        crate::sources::host::HostSource::new(&self.sources.host).map_err(|e| ConfigError::Invalid {
            field: "sources.host".into(),
            message: e.to_string(),
        })?;
        if self.sources.gen3_status.enabled {
            self.sources.gen3_status.validate(self.interval)?;
            // Reads ca_file and builds the HTTP clients.
            crate::sources::gen3_status::Gen3StatusSource::new(&self.sources.gen3_status).map_err(|e| match e {
                crate::sources::gen3_status::Gen3StatusError::Config(c) => c,
                other => ConfigError::Invalid {
                    field: "sources.gen3_status".into(),
                    message: other.to_string(),
                },
            })?;
        }
        if self.sources.gen3_usage.active(&self.sources.gen3_status) {
            crate::sources::gen3_usage::Gen3UsageSource::new(&self.sources.gen3_usage, &self.sources.gen3_status).map_err(|e| match e {
                crate::sources::gen3_usage::Gen3UsageError::Config(c) => c,
                other => ConfigError::Invalid {
                    field: "sources.gen3_usage".into(),
                    message: other.to_string(),
                },
            })?;
        }
        if self.sources.revproxy_log.enabled {
            self.sources.revproxy_log.validate()?;
        }
        crate::sources::scrape::ScrapeSource::new(&self.sources.scrape, self.interval)?;
        self.sources.kubernetes.validate()?;
        // -- backends --
        if self.sources.elasticsearch.active() {
            crate::sources::elasticsearch::ElasticsearchSource::new(&self.sources.elasticsearch, self.interval).map_err(|e| match e {
                crate::sources::elasticsearch::ElasticsearchError::Config(c) => c,
                other => ConfigError::Invalid {
                    field: "sources.elasticsearch".into(),
                    message: other.to_string(),
                },
            })?;
        }
        if self.sources.postgres.active() {
            self.sources.postgres.validate(self.interval)?;
        }
        if let Some(n) = &self.agent_name {
            validate_agent_name(n)?;
        }
        Ok(())
    }

    /// The TLS settings for an `https://` collector URL, files read and
    /// checked (None for `http://`).
    pub fn client_tls(&self) -> Result<Option<crate::tls::ClientTls>, ConfigError> {
        if !self.collector.trim().starts_with("https://") {
            return Ok(None);
        }
        crate::tls::ClientTls::from_config(&self.tls).map(Some)
    }

    /// The token, read from `token_file` if that is how it is given.
    pub fn resolve_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(p) = &self.token_file {
            let t = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(ConfigError::Invalid {
                    field: "token_file".into(),
                    message: format!("{} is empty", p.display()),
                });
            }
            return Ok(Some(t));
        }
        Ok(self.token.clone().filter(|t| !t.is_empty()))
    }
}

/// Checks an agent name: what the collector keeps of it (at most 128
/// characters, no control characters) must be the whole name.
fn validate_agent_name(n: &str) -> Result<(), ConfigError> {
    let bad = if n.trim().is_empty() {
        Some("must not be empty".to_string())
    } else if n.chars().count() > 128 {
        Some(format!("{} characters; at most 128", n.chars().count()))
    } else if n.chars().any(char::is_control) {
        Some(format!("{n:?} contains control characters"))
    } else if n.trim() != n {
        Some(format!("{n:?} has surrounding whitespace"))
    } else {
        None
    };
    match bad {
        Some(message) => Err(ConfigError::Invalid {
            field: "agent_name".into(),
            message: format!("{message} (from agent_name, --agent-name or CSOC_AGENT_NAME)"),
        }),
        None => Ok(()),
    }
}

/// The host's name (for `instance` and the agent name).
pub fn hostname() -> String {
    let u = rustix::system::uname();
    let n = u.nodename().to_string_lossy().into_owned();
    if n.is_empty() { "localhost".into() } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = AgentConfig::from_yaml("", Path::new("a.yml")).expect("parse");
        assert_eq!(c.interval, Duration::from_secs(15));
        assert_eq!(c.collector, "http://127.0.0.1:9301");
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn full_file_parses() {
        let y = "collector: http://c:9301\ntoken_file: /t\ninterval: 1m\nspool_max_bytes: 10MiB\nexternal_labels: {environment: prod}\nsources:\n  host:\n    job: host\n";
        let c = AgentConfig::from_yaml(y, Path::new("a.yml")).expect("parse");
        assert_eq!(c.interval, Duration::from_secs(60));
        assert_eq!(c.spool_max_bytes, 10 << 20);
        assert_eq!(c.sources.host.job, "host");
        c.validate().expect("valid");
    }

    #[test]
    fn errors_name_the_field_and_place() {
        let e = AgentConfig::from_yaml("intervall: 1s\n", Path::new("a.yml")).expect_err("unknown field");
        let s = e.to_string();
        assert!(s.contains("a.yml") && s.contains("intervall") && s.contains("line 1"), "{s}");
        let e = AgentConfig::from_yaml("interval: soon\n", Path::new("a.yml")).expect_err("bad duration");
        assert!(e.to_string().contains("invalid duration"), "{e}");
        let mut c = AgentConfig::default();
        c.external_labels.insert("commons".into(), "x".into());
        assert!(c.validate().expect_err("commons").to_string().contains("external_labels"));
        let c = AgentConfig {
            collector: "collector:9301".into(),
            ..Default::default()
        };
        assert!(c.validate().expect_err("bad url").to_string().contains("collector"));
    }
}
