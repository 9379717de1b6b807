//! Command line of `csoc-collector`: flags override the YAML file given with
//! `--config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentToken, CollectorConfig};
use csoc_common::duration::parse_duration;
use csoc_common::log::LogFormat;

/// csoc-collector: fleet metrics and alerting for Gen3 data commons. Receives
/// agent streams, stores time series in SQLite, serves the Prometheus API.
#[derive(Debug, Parser)]
#[command(name = "csoc-collector", version, about)]
pub struct Args {
    /// YAML config file (see deploy/examples/collector.yml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit (non-zero with the reason if invalid).
    #[arg(long)]
    pub check_config: bool,
    /// Data directory [default: ./csoc-data].
    #[arg(long, value_name = "DIR", visible_alias = "storage.tsdb.path")]
    pub data_dir: Option<PathBuf>,
    /// HTTP API, /metrics and UI address [default: 127.0.0.1:9300].
    #[arg(long, value_name = "ADDR", visible_alias = "web.listen-address")]
    pub http_listen: Option<SocketAddr>,
    /// gRPC ingest address [default: 127.0.0.1:9301].
    #[arg(long, value_name = "ADDR")]
    pub grpc_listen: Option<SocketAddr>,
    /// An agent presenting TOKEN is commons COMMONS (repeatable; added to the file's agent_tokens).
    #[arg(long = "agent-token", value_name = "COMMONS=TOKEN")]
    pub agent_tokens: Vec<String>,
    /// An API token, NAME=TOKEN:ROLE[:commons=COMMONS] with ROLE read, write (read and silences) or admin (repeatable;
    /// added to the file's api_tokens). With any, every API request needs one; a commons-scoped
    /// token only ever sees that commons' series.
    #[arg(long = "api-token", value_name = "NAME=TOKEN:ROLE[:commons=C]")]
    pub api_tokens: Vec<String>,
    /// Also run an agent in-process, watching this host as commons "local".
    #[arg(long)]
    pub local_agent: bool,
    /// Collection interval of the local agent [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub local_agent_interval: Option<std::time::Duration>,
    /// How far back instant queries look for a sample [default: 5m].
    #[arg(long = "query.lookback-delta", value_name = "DURATION", value_parser = parse_duration)]
    pub lookback_delta: Option<std::time::Duration>,
    /// Time limit of one query [default: 2m].
    #[arg(long = "query.timeout", value_name = "DURATION", value_parser = parse_duration)]
    pub query_timeout: Option<std::time::Duration>,
    /// At most this many samples held in memory by one query [default: 50000000].
    #[arg(long = "query.max-samples", value_name = "N")]
    pub query_max_samples: Option<usize>,
    /// Delete data older than this, e.g. 30d [default: 15d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, visible_alias = "storage.tsdb.retention.time")]
    pub retention: Option<std::time::Duration>,
    /// Keep the database under this size, oldest data deleted first, e.g. 10GB [default: no limit].
    #[arg(long, value_name = "SIZE", value_parser = csoc_common::duration::parse_bytes, visible_alias = "storage.tsdb.retention.size")]
    pub retention_size: Option<u64>,
    /// Memory for decoded chunks reused by repeated queries, e.g. 1GiB; 0 disables [default: 256MiB].
    #[arg(long = "storage.chunk-cache-size", value_name = "SIZE", value_parser = csoc_common::duration::parse_bytes)]
    pub chunk_cache_size: Option<u64>,
    /// Enable the admin endpoints (POST /api/v1/admin/tsdb/flush, DELETE /api/v1/admin/agents/{commons}/{agent}).
    #[arg(long = "web.enable-admin-api")]
    pub enable_admin_api: bool,
    /// Serve the public status page /status without authentication (commons × service up or
    /// down and uptime; nothing else).
    #[arg(long = "web.public-status")]
    pub public_status: bool,
    /// Prometheus rule file or glob (repeatable; added to the file's rule_files).
    #[arg(long = "rules", value_name = "GLOB")]
    pub rules: Vec<String>,
    /// Alertmanager base URL that receives the alerts (repeatable).
    #[arg(long = "alertmanager", value_name = "URL")]
    pub alertmanagers: Vec<String>,
    /// Also send everything stored to this Prometheus remote-write endpoint
    /// (repeatable; e.g. http://vm:8428/api/v1/write). Authentication, TLS,
    /// headers and queue settings go in the config file's remote_write list.
    #[arg(long = "remote-write", value_name = "URL")]
    pub remote_write: Vec<String>,
    /// Evaluation interval of rule groups that set none [default: 1m].
    #[arg(long = "evaluation-interval", value_name = "DURATION", value_parser = parse_duration)]
    pub evaluation_interval: Option<std::time::Duration>,
    /// Minimum time before re-sending a firing alert to Alertmanager [default: 1m].
    #[arg(long = "rules.alert.resend-delay", value_name = "DURATION", value_parser = parse_duration)]
    pub alert_resend_delay: Option<std::time::Duration>,
    /// The URL users reach the collector at (alert links) [default: http://<http-listen>].
    #[arg(long = "web.external-url", value_name = "URL")]
    pub external_url: Option<String>,
    /// Base URL of the rule pack's runbook: alerts' runbook_url annotations are rebased onto it [default: the repository's deploy/rules/RUNBOOK.md].
    #[arg(long = "rules.runbook-base-url", value_name = "URL")]
    pub runbook_base_url: Option<String>,
    /// A label added to every alert sent, NAME=VALUE (repeatable).
    #[arg(long = "external-label", value_name = "NAME=VALUE")]
    pub external_labels: Vec<String>,
    /// How often the collector stores its own metrics (job csoc-collector); 0 disables [default: 15s].
    #[arg(long = "self-scrape-interval", value_name = "DURATION", value_parser = parse_duration)]
    pub self_scrape_interval: Option<std::time::Duration>,
    /// Forget an agent silent (no stream open) for longer than this: no longer listed, its
    /// csoc_collector_agent_* series end, CsocAgentSilent stops paging for it; 0 = never [default: 7d].
    #[arg(long = "agent-forget-after", value_name = "DURATION", value_parser = parse_duration)]
    pub agent_forget_after: Option<std::time::Duration>,
    /// Central agent config directory (_default.yml, <commons>.yml, <commons>/<agent>.yml), pushed to
    /// the agents over their streams; re-read on change, SIGHUP and POST /-/reload.
    #[arg(long = "agent-config-dir", value_name = "DIR")]
    pub agent_config_dir: Option<PathBuf>,
    /// Run the rule unit tests in FILE (promtool's test format) and exit.
    #[arg(long = "test-rules", value_name = "FILE")]
    pub test_rules: Vec<PathBuf>,
    /// Set an ingest limit, NAME=VALUE (repeatable), e.g. max_series_per_agent=500000;
    /// names as under `limits:` in the config file.
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    pub limits: Vec<String>,
    /// Log format: text, logfmt or json [default: text].
    #[arg(long, value_enum, visible_alias = "log.format")]
    pub log_format: Option<LogFormat>,
    /// Log level (Prometheus's --log.level); overrides RUST_LOG [default: RUST_LOG, else info].
    #[arg(long = "log.level", value_enum, value_name = "LEVEL")]
    pub log_level: Option<csoc_common::log::LogLevel>,
    /// TLS on the gRPC ingest: the collector's certificate chain, PEM (with --grpc-tls-key).
    #[arg(long = "grpc-tls-cert", value_name = "FILE")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// TLS on the gRPC ingest: the private key of --grpc-tls-cert, PEM.
    #[arg(long = "grpc-tls-key", value_name = "FILE")]
    pub grpc_tls_key: Option<PathBuf>,
    /// CA certificate(s), PEM, that issue agent client certificates: asks agents for one and verifies it.
    #[arg(long = "grpc-tls-client-ca", value_name = "FILE")]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// Whether agents must present a client certificate (optional: a certificate or a token) [default: optional].
    #[arg(long = "grpc-tls-client-auth", value_name = "MODE", value_enum)]
    pub grpc_tls_client_auth: Option<crate::tls::ClientAuth>,
    /// An agent whose verified certificate has NAME as subject CN, DNS or URI name is commons COMMONS (repeatable; added to the file's agent_certs).
    #[arg(long = "agent-cert", value_name = "COMMONS=NAME", value_parser = crate::tls::names::parse_agent_cert_flag)]
    pub agent_certs: Vec<crate::tls::AgentCert>,
    /// HTTPS for the HTTP API: the certificate chain, PEM (with --http-tls-key).
    #[arg(long = "http-tls-cert", value_name = "FILE")]
    pub http_tls_cert: Option<PathBuf>,
    /// HTTPS for the HTTP API: the private key of --http-tls-cert, PEM.
    #[arg(long = "http-tls-key", value_name = "FILE")]
    pub http_tls_key: Option<PathBuf>,
    /// How often the TLS certificate, key and client CA files are checked for changes (new
    /// connections then use the new certificate; a broken file keeps the old one); 0 = never [default: 5s].
    #[arg(long = "tls-reload-interval", value_name = "DURATION", value_parser = parse_duration)]
    pub tls_reload_interval: Option<std::time::Duration>,
}

impl Args {
    /// The file's config with the flags applied.
    pub fn resolve(&self) -> anyhow::Result<CollectorConfig> {
        let mut cfg = match &self.config {
            Some(p) => CollectorConfig::from_file(p)?,
            None => CollectorConfig::default(),
        };
        if let Some(v) = &self.data_dir {
            cfg.data_dir = v.clone();
        }
        if let Some(v) = self.http_listen {
            cfg.http_listen = v;
        }
        if let Some(v) = self.grpc_listen {
            cfg.grpc_listen = v;
        }
        for t in &self.agent_tokens {
            let (commons, token) = t
                .split_once('=')
                .filter(|(c, t)| !c.is_empty() && !t.is_empty())
                .context("--agent-token: expected COMMONS=TOKEN")?;
            cfg.agent_tokens.push(AgentToken {
                commons: commons.to_string(),
                token: Some(token.to_string()),
                token_sha256: None,
                token_file: None,
            });
        }
        for t in &self.api_tokens {
            cfg.api_tokens
                .push(crate::config::ApiToken::parse_flag(t).map_err(anyhow::Error::msg)?);
        }
        if self.local_agent {
            cfg.local_agent = true;
        }
        if let Some(v) = self.local_agent_interval {
            cfg.local_agent_interval = v;
        }
        if let Some(v) = self.lookback_delta {
            cfg.lookback_delta = v;
        }
        if let Some(v) = self.query_timeout {
            cfg.query_timeout = v;
        }
        if let Some(v) = self.query_max_samples {
            cfg.query_max_samples = v;
        }
        if let Some(v) = self.retention {
            cfg.retention = v;
        }
        if let Some(v) = self.retention_size {
            cfg.retention_size = v;
        }
        if let Some(v) = self.chunk_cache_size {
            cfg.chunk_cache_size = v;
        }
        if self.enable_admin_api {
            cfg.enable_admin_api = true;
        }
        if self.public_status {
            cfg.public_status = true;
        }
        cfg.rule_files.extend(self.rules.iter().cloned());
        cfg.alertmanagers.extend(self.alertmanagers.iter().cloned());
        cfg.remote_write
            .extend(self.remote_write.iter().map(|u| crate::remote::RemoteWriteConfig::with_url(u)));
        if let Some(v) = self.evaluation_interval {
            cfg.evaluation_interval = v;
        }
        if let Some(v) = self.alert_resend_delay {
            cfg.alert_resend_delay = v;
        }
        if let Some(v) = self.self_scrape_interval {
            cfg.self_scrape_interval = v;
        }
        if let Some(v) = self.agent_forget_after {
            cfg.agent_forget_after = v;
        }
        if let Some(v) = &self.agent_config_dir {
            cfg.agent_config_dir = Some(v.clone());
        }
        if let Some(v) = &self.external_url {
            cfg.external_url = Some(v.clone());
        }
        if let Some(v) = &self.runbook_base_url {
            cfg.runbook_base_url = Some(v.clone());
        }
        for l in &self.external_labels {
            let (k, v) = l
                .split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .context("--external-label: expected NAME=VALUE")?;
            cfg.external_labels.insert(k.to_string(), v.to_string());
        }
        for l in &self.limits {
            cfg.limits.set(l).map_err(anyhow::Error::msg)?;
        }
        if let Some(v) = self.log_format {
            cfg.log_format = v;
        }
        self.apply_tls(&mut cfg);
        Ok(cfg)
    }

    /// The TLS flags over the file's `grpc_tls`, `http_tls` and `agent_certs`.
    fn apply_tls(&self, cfg: &mut CollectorConfig) {
        if self.grpc_tls_cert.is_some()
            || self.grpc_tls_key.is_some()
            || self.grpc_tls_client_ca.is_some()
            || self.grpc_tls_client_auth.is_some()
        {
            let t = cfg.grpc_tls.get_or_insert_with(Default::default);
            if let Some(v) = &self.grpc_tls_cert {
                t.cert_file = Some(v.clone());
            }
            if let Some(v) = &self.grpc_tls_key {
                t.key_file = Some(v.clone());
            }
            if let Some(v) = &self.grpc_tls_client_ca {
                t.client_ca_file = Some(v.clone());
            }
            if let Some(v) = self.grpc_tls_client_auth {
                t.client_auth = v;
            }
        }
        cfg.agent_certs.extend(self.agent_certs.iter().cloned());
        if let Some(v) = self.tls_reload_interval {
            cfg.tls_reload_interval = v;
        }
        if self.http_tls_cert.is_some() || self.http_tls_key.is_some() {
            let t = cfg.http_tls.get_or_insert_with(Default::default);
            if let Some(v) = &self.http_tls_cert {
                t.cert_file = Some(v.clone());
            }
            if let Some(v) = &self.http_tls_key {
                t.key_file = Some(v.clone());
            }
        }
    }
}

/// Runs the collector binary; returns when it has shut down.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    if !args.test_rules.is_empty() {
        let ok = crate::rules::unittest::run_files(&args.test_rules, &mut std::io::stdout())?;
        if !ok {
            anyhow::bail!("rule unit tests failed");
        }
        return Ok(());
    }
    if args.check_config {
        cfg.validate()?;
        let (paths, files) = crate::rules::load(&cfg.rule_files)?;
        for (p, f) in paths.iter().zip(&files) {
            let n: usize = f.groups.iter().map(|g| g.rules.len()).sum();
            println!("{}: {n} rules found", p.display());
        }
        println!("config OK");
        return Ok(());
    }
    csoc_common::log::init_logging_with(cfg.log_format, args.log_level);
    let path = args.config.clone();
    let args = std::sync::Arc::new(args);
    let source = crate::reload::ConfigSource {
        path,
        load: std::sync::Arc::new(move || args.resolve()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let s2 = shutdown.clone();
        tokio::spawn(async move {
            csoc_common::shutdown::shutdown_signal().await;
            s2.cancel();
        });
        crate::run_with(cfg, Some(source), shutdown, |_| {}).await
    })
}
