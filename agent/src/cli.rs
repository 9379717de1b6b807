//! Command line of `csoc-agent`: flags override the YAML file given with
//! `--config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::Agent;
use crate::config::AgentConfig;
use csoc_common::duration::{parse_bytes, parse_duration};
use csoc_common::log::LogFormat;

/// csoc-agent: gathers a Gen3 commons' health and usage and streams it to the
/// csoc-watch collector.
#[derive(Debug, Parser)]
#[command(name = "csoc-agent", version, about)]
pub struct Args {
    /// YAML config file (see deploy/examples/agent.yml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit (non-zero with the reason if invalid).
    #[arg(long)]
    pub check_config: bool,
    /// gRPC URL of the collector [default: http://127.0.0.1:9301].
    #[arg(long, value_name = "URL")]
    pub collector: Option<String>,
    /// Bearer token the collector maps to this commons. Visible in `ps`:
    /// prefer CSOC_AGENT_TOKEN or --token-file.
    #[arg(long, value_name = "TOKEN", env = "CSOC_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The commons this agent watches (informational: the collector decides from the token).
    #[arg(long, value_name = "NAME")]
    pub commons_name: Option<String>,
    /// This agent's name at the collector and its default `instance`
    /// [default: agent_name in the config, else the host name]. In a pod the
    /// host name changes at every rollout: set this (the Helm chart sets
    /// CSOC_AGENT_NAME from the release).
    #[arg(long, value_name = "NAME", env = "CSOC_AGENT_NAME")]
    pub agent_name: Option<String>,
    /// Collection interval, e.g. 15s, 1m [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<std::time::Duration>,
    /// Address of the agent's own /metrics [default: 127.0.0.1:9302].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Spool directory for batches not yet acknowledged [default: ./csoc-agent-spool].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Largest spool size, e.g. 256MiB; the oldest batches go first when full [default: 256MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub spool_max_bytes: Option<u64>,
    /// Label added to every series, NAME=VALUE (repeatable).
    #[arg(long = "external-label", value_name = "NAME=VALUE")]
    pub external_labels: Vec<String>,
    /// Log format: text, logfmt or json [default: text].
    #[arg(long, value_enum, visible_alias = "log.format")]
    pub log_format: Option<LogFormat>,
    /// Log level (Prometheus's --log.level); overrides RUST_LOG [default: RUST_LOG, else info].
    #[arg(long = "log.level", value_enum, value_name = "LEVEL")]
    pub log_level: Option<csoc_common::log::LogLevel>,
    /// Probe the Gen3 commons at this URL (https://data.example.org): turns on
    /// the gen3_status source with this base_url (and so gen3_usage).
    #[arg(long, value_name = "URL")]
    pub gen3_url: Option<String>,
    /// Run one round of every enabled source and exit (with --print); no
    /// collector connection, no spool.
    #[arg(long, requires = "print")]
    pub once: bool,
    /// With --once: print what would be sent, labels stamped, in the
    /// Prometheus text format to stdout. Exit 1 if a source failed entirely.
    #[arg(long, requires = "once")]
    pub print: bool,
    /// Tail revproxy's JSON access log at this path (nginx's file or the
    /// kubelet's CRI file): turns on the revproxy_log source with this path.
    #[arg(long, value_name = "PATH")]
    pub revproxy_log: Option<PathBuf>,
    /// Follow revproxy's access log through the Kubernetes API: pods/log of
    /// every pod matching this label selector (e.g. app=revproxy), in
    /// --revproxy-log-namespace, else the first --kubernetes-namespace.
    /// Turns on the revproxy_log source in kubernetes mode.
    #[arg(long, value_name = "SELECTOR", conflicts_with = "revproxy_log")]
    pub revproxy_log_pods: Option<String>,
    /// The namespace of --revproxy-log-pods [default: the first
    /// --kubernetes-namespace, else sources.revproxy_log.kubernetes.namespace].
    #[arg(long, value_name = "NS", requires = "revproxy_log_pods")]
    pub revproxy_log_namespace: Option<String>,
    /// Scrape a Prometheus/OpenMetrics endpoint, [JOB=]URL (repeatable; job
    /// "scrape" unless given): adds a static target to sources.scrape.
    #[arg(long = "scrape", value_name = "[JOB=]URL")]
    pub scrape: Vec<String>,
    /// Watch this Kubernetes namespace (repeatable): turns on the kubernetes
    /// source (kube-state-metrics' metrics of its pods, workloads, jobs,
    /// PVCs and events) and adds NS to sources.kubernetes.namespaces.
    #[arg(long = "kubernetes-namespace", value_name = "NS")]
    pub kubernetes_namespaces: Vec<String>,
    /// Kubernetes credentials: this kubeconfig's current context [default: the
    /// in-cluster service account, else KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// With an https:// collector: CA certificate(s), PEM, the collector's certificate must chain to [default: the Mozilla roots].
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// With an https:// collector: this agent's client certificate, PEM (mutual TLS; with --tls-key). The token becomes optional.
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM.
    #[arg(long = "tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The name the collector's certificate must be issued for [default: the host of --collector].
    #[arg(long = "tls-server-name", value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Where the host's procfs is mounted, for the host source (node_exporter's
    /// flag) [default: /proc; /host/proc in the Helm chart's DaemonSet].
    #[arg(long = "path.procfs", value_name = "DIR")]
    pub path_procfs: Option<PathBuf>,
    /// Where the host's sysfs is mounted, for the host source [default: /sys].
    #[arg(long = "path.sysfs", value_name = "DIR")]
    pub path_sysfs: Option<PathBuf>,
    /// Where the host's root filesystem is mounted, for the host source:
    /// filesystems are measured there and labelled with the host's mount
    /// points [default: /].
    #[arg(long = "path.rootfs", value_name = "DIR")]
    pub path_rootfs: Option<PathBuf>,
    // -- backends --
    /// Poll this Elasticsearch or OpenSearch base URL (guppy's cluster, e.g.
    /// http://gen3-elasticsearch:9200): turns on the elasticsearch source
    /// with this url (credentials and TLS go in sources.elasticsearch).
    #[arg(long, value_name = "URL")]
    pub elasticsearch_url: Option<String>,
    /// Poll this PostgreSQL database, NAME=DSN (repeatable; NAME is the
    /// `database` label, DSN a libpq connection string such as
    /// "host=db user=monitor dbname=fence_db"). Visible in `ps`: keep the
    /// password out of it (sources.postgres.databases[].password_file).
    #[arg(long = "postgres-dsn", value_name = "NAME=DSN")]
    pub postgres_dsns: Vec<String>,
    /// Refuse central config pushed by the collector (and ignore the one kept in the spool
    /// directory): run the local file and flags alone.
    #[arg(long)]
    pub no_central_config: bool,
}

impl Args {
    /// The file's config with the flags applied.
    pub fn resolve(&self) -> anyhow::Result<AgentConfig> {
        let mut cfg = match &self.config {
            Some(p) => AgentConfig::from_file(p)?,
            None => AgentConfig::default(),
        };
        self.apply_flags(&mut cfg)?;
        Ok(cfg)
    }

    /// The paths the flags name (a central push may use them; see
    /// `crate::central`).
    pub fn flag_paths(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            &self.token_file,
            &self.revproxy_log,
            &self.kubeconfig,
            &self.tls_ca,
            &self.tls_cert,
            &self.tls_key,
            &self.path_procfs,
            &self.path_sysfs,
            &self.path_rootfs,
            &self.spool_dir,
        ]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
        out.retain(|p| !p.is_empty());
        out
    }

    /// Applies the flags to `cfg` (they override the file and central
    /// settings).
    pub fn apply_flags(&self, cfg: &mut AgentConfig) -> anyhow::Result<()> {
        if let Some(v) = &self.collector {
            cfg.collector = v.clone();
        }
        if let Some(v) = &self.token {
            cfg.token = Some(v.clone());
            cfg.token_file = None;
        }
        if let Some(v) = &self.token_file {
            cfg.token_file = Some(v.clone());
            cfg.token = None;
        }
        if let Some(v) = &self.commons_name {
            cfg.commons_name = Some(v.clone());
        }
        if let Some(v) = &self.agent_name {
            cfg.agent_name = Some(v.clone());
        }
        if let Some(v) = self.interval {
            cfg.interval = v;
        }
        if let Some(v) = self.http_listen {
            cfg.http_listen = v;
        }
        if let Some(v) = &self.spool_dir {
            cfg.spool_dir = v.clone();
        }
        if let Some(v) = self.spool_max_bytes {
            cfg.spool_max_bytes = v;
        }
        for kv in &self.external_labels {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--external-label {kv:?}: expected NAME=VALUE"))?;
            if !csoc_common::labels::valid_label_name(k) || k.starts_with("__") {
                anyhow::bail!("--external-label {kv:?}: {k:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)");
            }
            if k == "commons" {
                anyhow::bail!("--external-label {kv:?}: \"commons\" is set by the collector from the agent's token");
            }
            cfg.external_labels.insert(k.to_string(), v.to_string());
        }
        if let Some(v) = self.log_format {
            cfg.log_format = v;
        }
        if let Some(v) = &self.gen3_url {
            cfg.sources.gen3_status.enabled = true;
            cfg.sources.gen3_status.base_url = v.clone();
        }
        if let Some(v) = &self.revproxy_log {
            cfg.sources.revproxy_log.enabled = true;
            cfg.sources.revproxy_log.path = v.clone();
        }
        if let Some(sel) = &self.revproxy_log_pods {
            // The namespace: --revproxy-log-namespace, else the first
            // --kubernetes-namespace (or the config's first
            // sources.kubernetes.namespaces), else the config file's
            // sources.revproxy_log.kubernetes.namespace.
            let file_has_ns = cfg
                .sources
                .revproxy_log
                .kubernetes
                .as_ref()
                .is_some_and(|k| !k.namespace.is_empty());
            let first_ns = self.kubernetes_namespaces.first().cloned().or_else(|| {
                if file_has_ns {
                    None
                } else {
                    cfg.sources.kubernetes.namespaces.first().cloned()
                }
            });
            apply_revproxy_log_pods(cfg, sel, self.revproxy_log_namespace.as_deref(), first_ns.as_deref())?;
        }
        if let Some(v) = &self.kubeconfig {
            cfg.kubeconfig = Some(v.clone());
        }
        for ns in &self.kubernetes_namespaces {
            cfg.sources.kubernetes.enabled = true;
            if !cfg.sources.kubernetes.namespaces.contains(ns) {
                cfg.sources.kubernetes.namespaces.push(ns.clone());
            }
        }
        if let Some(v) = &self.tls_ca {
            cfg.tls.ca_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_cert {
            cfg.tls.cert_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            cfg.tls.key_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_server_name {
            cfg.tls.server_name = Some(v.clone());
        }
        for job in crate::sources::scrape::jobs_from_flags(&self.scrape).map_err(anyhow::Error::msg)? {
            match cfg.sources.scrape.jobs.iter_mut().find(|j| j.job_name == job.job_name) {
                Some(j) => j.static_configs.extend(job.static_configs),
                None => cfg.sources.scrape.jobs.push(job),
            }
        }
        if let Some(v) = &self.path_procfs {
            cfg.sources.host.procfs_path = v.clone();
        }
        if let Some(v) = &self.path_sysfs {
            cfg.sources.host.sysfs_path = v.clone();
        }
        if let Some(v) = &self.path_rootfs {
            cfg.sources.host.rootfs_path = v.clone();
        }
        // -- backends --
        if let Some(v) = &self.elasticsearch_url {
            cfg.sources.elasticsearch.enabled = true;
            cfg.sources.elasticsearch.url = Some(v.clone());
        }
        for kv in &self.postgres_dsns {
            let (name, dsn) = kv
                .split_once('=')
                .filter(|(n, d)| !n.trim().is_empty() && !d.trim().is_empty())
                .with_context(|| {
                    format!(
                        "--postgres-dsn {:?}: expected NAME=DSN, e.g. fence=\"host=db user=monitor dbname=fence_db\"",
                        crate::sources::postgres::redacted(kv.split_once('=').map_or("", |(_, d)| d))
                    )
                })?;
            cfg.sources.postgres.enabled = true;
            let db = crate::sources::postgres::PostgresDatabase {
                name: name.trim().to_string(),
                dsn: dsn.to_string(),
                password_file: None,
            };
            match cfg.sources.postgres.databases.iter_mut().find(|d| d.name == db.name) {
                Some(d) => {
                    d.dsn = db.dsn;
                }
                None => cfg.sources.postgres.databases.push(db),
            }
        }
        Ok(())
    }
}

impl crate::central::ConfigLoader for Args {
    fn local(&self) -> Result<crate::central::LocalConfig, String> {
        match &self.config {
            None => Ok(crate::central::LocalConfig::from_text(
                "",
                std::path::Path::new("(no --config)"),
                self.flag_paths(),
            )?),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
                // The typed parse first: its errors name the line.
                AgentConfig::from_yaml(&text, p).map_err(|e| e.to_string())?;
                crate::central::LocalConfig::from_text(&text, p, self.flag_paths())
            }
        }
    }

    fn finish(&self, cfg: &mut AgentConfig) -> Result<(), String> {
        self.apply_flags(cfg).map_err(|e| format!("{e:#}"))
    }
}

/// `--revproxy-log-pods SELECTOR`: turns on `revproxy_log` in kubernetes
/// mode with `selector`, in `namespace` (`--revproxy-log-namespace`), else
/// `kubernetes_namespace` (the first `--kubernetes-namespace`), else the
/// namespace already in the config file. Any `path` from the file is
/// replaced (the flag wins).
pub fn apply_revproxy_log_pods(
    cfg: &mut AgentConfig,
    selector: &str,
    namespace: Option<&str>,
    kubernetes_namespace: Option<&str>,
) -> anyhow::Result<()> {
    let r = &mut cfg.sources.revproxy_log;
    let from_file = r.kubernetes.as_ref().map(|k| k.namespace.clone()).filter(|n| !n.is_empty());
    let ns = namespace
        .map(str::to_string)
        .or_else(|| kubernetes_namespace.map(str::to_string))
        .or(from_file)
        .with_context(|| {
            format!("--revproxy-log-pods {selector:?}: no namespace; give --revproxy-log-namespace NS or --kubernetes-namespace NS")
        })?;
    let container = r.kubernetes.as_ref().and_then(|k| k.container.clone());
    r.enabled = true;
    r.path = PathBuf::new();
    r.kubernetes = Some(crate::sources::pod_logs::PodLogSelector {
        namespace: ns,
        selector: selector.to_string(),
        container,
    });
    Ok(())
}

/// Runs the agent binary; returns when it has shut down.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    if args.check_config {
        cfg.validate()?;
        cfg.resolve_token()?;
        println!("config OK");
        return Ok(());
    }
    csoc_common::log::init_logging_with(cfg.log_format, args.log_level);
    if args.once {
        // --once prints one frame per source: the kubernetes report whole.
        let mut cfg = cfg;
        cfg.sources.kubernetes.frame_samples = 0;
        return run_once(&cfg);
    }
    // One thread is plenty for the agent's work and keeps its footprint small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()
        .context("starting the runtime")?;
    let no_central = args.no_central_config;
    let args: Arc<Args> = Arc::new(args);
    rt.block_on(async move {
        let mut registry = Registry::default();
        // process_* (selfmon): on the root registry, by the binary (not in
        // Agent::new, which --local-agent also runs inside the collector).
        registry.register_collector(Box::new(csoc_common::process::ProcessCollector::default()));
        let http_listen = cfg.http_listen;
        let agent = Agent::new(cfg, &mut registry)?.with_loader(args, no_central)?;
        let reload = agent.reload_handle();
        let shutdown = CancellationToken::new();
        let readiness = crate::http::Readiness::new();
        let http = crate::http::serve_with_reload(
            http_listen,
            Arc::new(registry),
            readiness.clone(),
            Some(reload.clone()),
            shutdown.clone(),
        )
        .await?;
        // SIGHUP re-reads the local config file (its `interval` and
        // `sources` apply at once; see `crate::central`); the agent logs the outcome.
        csoc_common::shutdown::spawn_on_sighup("re-reading the local config file", shutdown.clone().cancelled_owned(), move || {
            let reload = reload.clone();
            async move {
                let _ = reload.reload_local().await;
            }
        });
        let run = tokio::spawn(agent.run(shutdown.clone()));
        // Config checked, spool open, sources built: /-/ready answers 200.
        readiness.set_running();
        csoc_common::shutdown::shutdown_signal().await;
        readiness.set_stopping();
        shutdown.cancel();
        run.await.context("agent task")?;
        let _ = http.await;
        Ok(())
    })
}

/// `--once --print`: one round of every source to stdout.
fn run_once(cfg: &AgentConfig) -> anyhow::Result<()> {
    use std::io::Write;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let res = rt.block_on(crate::once::collect_once(cfg))?;
    let text = crate::once::exposition(&res.frames);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    drop(out);
    if !res.failures.is_empty() {
        for f in &res.failures {
            eprintln!("csoc-agent: {f}");
        }
        // 1: a source failed entirely (2 is kept for errors before any round).
        std::process::exit(1);
    }
    Ok(())
}
