//! Reloading the whole configuration: `POST /-/reload` and SIGHUP both call
//! [`Reloader::reload_all`], the one place where "reload everything"
//! happens.
//!
//! The file is read again and the flags applied over it (flags given on
//! the command line still override the file). Then each part is checked
//! and applied on its own, so that a broken part keeps its last good
//! version while the others change:
//!
//! | part | applied to |
//! |---|---|
//! | `agent_tokens` | the gRPC ingest and the remote-write receiver (new streams; open streams keep running) |
//! | `api_tokens` | every HTTP request from now on |
//! | `limits` | ingest and query limits (not `max_connections`, `header_read_timeout`, `idle_timeout`, `max_metadata_per_commons`: those need a restart) |
//! | `alertmanagers`, `alerting`, `receivers` | the notifier (the alerts firing now go to new destinations at once; alerts queued for a replaced one are given up) |
//! | `remote_write` | the remote-write queues (unchanged targets keep running; a changed one resumes where its predecessor stood; a new one sends from now on) |
//! | `rule_files` | the rule groups (alert state carried over by name) |
//! | `agent_config_dir` | the central agent config files (re-read; agents whose merged config changed get a push) |
//!
//! The outcome is `csoc_collector_config_last_reload_successful` (1 when
//! every part applied) and
//! `csoc_collector_config_last_reload_success_timestamp_seconds`, as
//! Prometheus's `prometheus_config_last_reload_*`. Everything else (listen
//! addresses, data directory, TLS of the listeners, which has its own
//! watcher, `inhibit_rules`, `external_labels` of the rules, query
//! settings) needs a restart.

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::CollectorConfig;
use crate::live::Live;

/// Reads the configuration again: the file, with the command line's flags
/// over it.
pub type Loader = Arc<dyn Fn() -> anyhow::Result<CollectorConfig> + Send + Sync>;

/// Where the configuration comes from.
#[derive(Clone)]
pub struct ConfigSource {
    /// The file (`--config`), if any: shown by `/api/v1/status/config`.
    pub path: Option<PathBuf>,
    /// Reads it all again.
    pub load: Loader,
}

/// `csoc_collector_config_last_reload_*`.
#[derive(Clone, Default)]
pub struct ReloadMetrics {
    ok: Gauge,
    at: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ReloadMetrics {
    /// Registers the metrics (under the collector's prefix).
    pub fn new(reg: &mut Registry) -> Self {
        let m = ReloadMetrics::default();
        reg.register(
            "config_last_reload_successful",
            "Whether the last configuration reload applied every part (1) or kept the last good version of some (0)",
            m.ok.clone(),
        );
        reg.register(
            "config_last_reload_success_timestamp_seconds",
            "Time of the last configuration reload that applied every part (the start counts as one)",
            m.at.clone(),
        );
        m
    }

    fn set(&self, ok: bool) {
        self.ok.set(i64::from(ok));
        if ok {
            self.at.set(csoc_common::time::now_ms() as f64 / 1000.0);
        }
    }
}

/// What a reload did, part by part.
#[derive(Debug, Default)]
pub struct ReloadOutcome {
    /// (part, what was applied or why it was not).
    pub parts: Vec<(&'static str, Result<String, String>)>,
}

impl ReloadOutcome {
    /// Whether every part applied.
    pub fn ok(&self) -> bool {
        self.parts.iter().all(|(_, r)| r.is_ok())
    }
}

impl std::fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (part, r) in &self.parts {
            match r {
                Ok(m) => writeln!(f, "{part}: {m}")?,
                Err(e) => writeln!(f, "{part}: NOT reloaded, the previous one stays: {e}")?,
            }
        }
        Ok(())
    }
}

/// The handles a reload replaces.
pub struct Reloader {
    /// None: no file and no flags to read again; a reload re-reads the
    /// rule files only.
    pub source: Option<ConfigSource>,
    /// The rule groups.
    pub rules: Arc<crate::rules::RuleManager>,
    /// Alertmanagers and receivers.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Remote-write targets.
    pub remotes: Arc<crate::remote::Remotes>,
    /// Agent tokens.
    pub agent_auth: Live<crate::auth::AgentAuth>,
    /// The in-process agent's token digest, kept across reloads.
    pub local_agent_digest: Option<[u8; 32]>,
    /// API tokens.
    pub api_auth: Live<crate::auth::ApiAuth>,
    /// Limits (ingest and queries).
    pub limits: Live<crate::config::Limits>,
    /// The per-agent limiter.
    pub limiter: Arc<crate::ingest::limits::Limiter>,
    /// `csoc_collector_limit{limit}`.
    pub limit_metrics: crate::ingest::limits::LimitMetrics,
    /// Receiver names (`/api/v2/receivers`).
    pub receiver_names: Live<Vec<String>>,
    /// The file as last loaded, secrets redacted (`/api/v1/status/config`).
    pub config_yaml: Live<String>,
    /// The outcome metrics.
    pub metrics: ReloadMetrics,
    /// One reload at a time.
    pub serial: tokio::sync::Mutex<()>,
    /// The agent registry, whose central agent config store (`--agent-config-dir`) is re-read too.
    pub agents: Arc<crate::agents::AgentRegistry>,
}

impl Reloader {
    /// Records the start as a successful load and the file's text.
    pub fn started(&self) {
        self.metrics.set(true);
        self.config_yaml.store(self.read_yaml());
    }

    fn read_yaml(&self) -> String {
        match self.source.as_ref().and_then(|s| s.path.as_ref()) {
            None => "# no configuration file: defaults and command-line flags only (see /api/v1/status/flags)\n".into(),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => redacted_yaml(&t),
                Err(e) => format!("# {}: {e}\n", p.display()),
            },
        }
    }

    /// Reads the configuration again and applies each part that is valid
    /// (see the module docs). The single place where a reload happens.
    pub async fn reload_all(&self) -> ReloadOutcome {
        let _serial = self.serial.lock().await;
        let mut out = ReloadOutcome::default();
        let cfg = match &self.source {
            None => None,
            Some(src) => {
                let load = src.load.clone();
                match tokio::task::spawn_blocking(move || load()).await {
                    Ok(Ok(c)) => Some(c),
                    Ok(Err(e)) => {
                        out.parts.push(("config", Err(format!("{e:#}"))));
                        None
                    }
                    Err(e) => {
                        out.parts.push(("config", Err(format!("the reading task failed: {e}"))));
                        None
                    }
                }
            }
        };
        match &cfg {
            Some(cfg) => self.apply(cfg, &mut out).await,
            None if self.source.is_none() => {
                let r = self.rules.reload().await;
                out.parts.push((
                    "rule_files",
                    r.map(|s| format!("{} files, {} groups, {} rules", s.files, s.groups, s.rules))
                        .map_err(|e| e.to_string()),
                ));
            }
            None => {}
        }
        // Central agent config (`--agent-config-dir`): a refused file keeps its last good version.
        if let Some(store) = self.agents.config_store() {
            out.parts.push((
                "agent_config_dir",
                crate::agent_config::reload_logged(Some(store.as_ref()), "reload")
                    .map(|()| format!("{} re-read", store.dir().display()))
                    .map_err(|e| e.to_string()),
            ));
        }
        let ok = out.ok();
        self.metrics.set(ok);
        if ok {
            tracing::info!(outcome = %out.to_string().trim_end().replace('\n', "; "), "configuration reloaded");
        } else {
            tracing::error!(outcome = %out.to_string().trim_end().replace('\n', "; "), "configuration reload incomplete: the parts that failed keep their previous version");
        }
        out
    }

    async fn apply(&self, cfg: &CollectorConfig, out: &mut ReloadOutcome) {
        out.parts.push((
            "agent_tokens",
            cfg.agent_auth().map_err(|e| e.to_string()).map(|mut a| {
                if let Some(d) = self.local_agent_digest {
                    a.add_digest(crate::LOCAL_COMMONS, d);
                }
                let n = a.len();
                self.agent_auth.store(a);
                format!("{n} tokens")
            }),
        ));
        out.parts.push((
            "api_tokens",
            cfg.api_auth().map_err(|e| e.to_string()).map(|a| {
                let n = a.len();
                self.api_auth.store(a);
                format!("{n} tokens")
            }),
        ));
        out.parts.push(("limits", self.apply_limits(cfg)));
        let notify = cfg.resolved_alertmanagers().and_then(|ams| {
            for (i, r) in cfg.receivers.iter().enumerate() {
                r.validate().map_err(|e| format!("receivers[{i}]: {e}"))?;
            }
            let mut names = std::collections::HashSet::new();
            for r in &cfg.receivers {
                if !names.insert(r.name.as_str()) {
                    return Err(format!("receiver name {:?} is used twice", r.name));
                }
            }
            let (a, r) = self.notifier.reconfigure(&ams, &cfg.receivers).map_err(|e| e.to_string())?;
            self.receiver_names.store(cfg.receivers.iter().map(|r| r.name.clone()).collect());
            let (na, nr) = self.notifier.counts();
            Ok(format!(
                "{na} Alertmanagers ({}), {nr} receivers ({})",
                if a { "changed" } else { "unchanged" },
                if r { "changed" } else { "unchanged" }
            ))
        });
        out.parts.push(("alerting and receivers", notify));
        out.parts.push((
            "remote_write",
            self.remotes
                .reconfigure(&cfg.remote_write, &cfg.external_labels)
                .map(|(k, s, st)| format!("{k} kept, {s} started, {st} stopped"))
                .map_err(|e| csoc_common::error::error_chain(&e)),
        ));
        out.parts.push((
            "rule_files",
            self.rules
                .reload_patterns(cfg.rule_files.clone())
                .await
                .map(|s| format!("{} files, {} groups, {} rules", s.files, s.groups, s.rules))
                .map_err(|e| e.to_string()),
        ));
        self.config_yaml.store(self.read_yaml());
    }

    fn apply_limits(&self, cfg: &CollectorConfig) -> Result<String, String> {
        let l = &cfg.limits;
        if l.max_batch_bytes < 1024 {
            return Err("max_batch_bytes must be at least 1KiB".into());
        }
        let before = self.limits.load();
        let changed: Vec<&str> = l
            .named()
            .iter()
            .zip(before.named().iter())
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        let restart_only = [
            "max_connections",
            "header_read_timeout_seconds",
            "idle_timeout_seconds",
            "max_metadata_per_commons",
        ];
        let later: Vec<&str> = changed.iter().copied().filter(|n| restart_only.contains(n)).collect();
        for (name, v) in l.named() {
            if !restart_only.contains(&name) {
                self.limit_metrics.set_limit(name, v);
            }
        }
        let mut applied = l.clone();
        // What needs a restart keeps the value it runs with.
        applied.max_connections = before.max_connections;
        applied.header_read_timeout = before.header_read_timeout;
        applied.idle_timeout = before.idle_timeout;
        applied.max_metadata_per_commons = before.max_metadata_per_commons;
        self.limiter.set_limits(applied.clone());
        self.limits.store(applied);
        let mut msg = if changed.is_empty() {
            "unchanged".to_string()
        } else {
            format!("changed: {}", changed.join(", "))
        };
        if !later.is_empty() {
            msg.push_str(&format!(" ({} take effect at the next restart)", later.join(", ")));
        }
        Ok(msg)
    }
}

/// Keys whose values are secrets, shown as `<secret>` (as Prometheus
/// shows its secrets).
const SECRET_KEYS: [&str; 8] = [
    "password",
    "credentials",
    "bearer_token",
    "token",
    "key",
    "routing_key",
    "api_url",
    "client_secret",
];

/// The YAML text with every secret value replaced by `<secret>` and the
/// credentials of URLs removed; text that does not parse is not shown.
pub fn redacted_yaml(text: &str) -> String {
    match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        Ok(mut v) => {
            redact(&mut v, false);
            serde_yaml_ng::to_string(&v).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
        }
        Err(e) => format!("# the configuration file does not parse: {e}\n"),
    }
}

fn redact(v: &mut serde_yaml_ng::Value, in_webhook: bool) {
    use serde_yaml_ng::Value;
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let key = k.as_str().unwrap_or_default();
                let secret = SECRET_KEYS.contains(&key) || (in_webhook && key == "url");
                if secret && !val.is_null() {
                    *val = Value::String("<secret>".into());
                } else {
                    redact(val, key == "webhook");
                }
            }
        }
        Value::Sequence(s) => {
            for x in s {
                redact(x, false);
            }
        }
        Value::String(s) if s.contains("://") && s.contains('@') => {
            *s = csoc_common::url::redact_url(s);
        }
        Value::Tagged(t) => redact(&mut t.value, in_webhook),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let y = r#"
agent_tokens:
  - {commons: a, token: supersecret-token-1234}
remote_write:
  - url: https://u:pw@mimir/api/v1/push
    basic_auth: {username: csoc, password: hunter2}
    authorization: {credentials: abc123}
    tls_config: {key: "-----BEGIN PRIVATE KEY-----"}
receivers:
  - name: hook
    webhook: {url: "http://hook/secret-path"}
  - name: slack
    slack: {api_url: "https://hooks.slack.com/services/T/B/X"}
"#;
        let r = redacted_yaml(y);
        for s in ["supersecret", "hunter2", "abc123", "PRIVATE", "secret-path", "hooks.slack", "pw@"] {
            assert!(!r.contains(s), "{s} in\n{r}");
        }
        assert!(
            r.contains("<secret>") && r.contains("username: csoc") && r.contains("https://mimir/api/v1/push"),
            "{r}"
        );
    }
}
