//! csoc-agent: runs inside a Gen3 commons, gathers service health and usage,
//! and streams it to the csoc-watch collector over gRPC.
//!
//! ```text
//! sources ──Frame──► pipeline ──WriteBatch──► spool (disk) ──► shipper ──gRPC──► collector
//! ```
//! Sources (`sources/`) produce frames; the pipeline (`pipeline.rs`) stamps
//! labels and encodes batches; the spool (`spool/`) keeps each batch on disk
//! until the collector acknowledges it; the shipper (`shipper/`) keeps one
//! stream to the collector. The binary (`main.rs`) only parses flags and
//! calls [`cli::run`]; the collector embeds an [`Agent`] for `--local-agent`.

pub mod central;
pub mod cli;
pub mod config;
pub mod http;
pub mod k8s;
pub mod manager;
pub mod metrics;
pub mod model;
pub mod once;
pub mod pipeline;
pub mod shipper;
pub mod sources;
pub mod spool;
pub mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::metrics::AgentMetrics;
use crate::model::Frame;
use crate::pipeline::Pipeline;
use crate::shipper::{Shipper, ShipperConfig};
use crate::sources::Source;
use crate::spool::Spool;

/// Why an agent cannot start. Each names what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The spool directory cannot be used.
    #[error("opening the spool in {}", path.display())]
    Spool {
        /// The spool directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: spool::SpoolError,
    },
    /// A source's settings cannot be used.
    #[error("source {name}")]
    Source {
        /// The source.
        name: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn source_error<E: std::error::Error + Send + Sync + 'static>(name: &'static str) -> impl FnOnce(E) -> AgentError {
    move |e| AgentError::Source { name, source: Box::new(e) }
}

/// Sources by name.
pub type NamedSources = Vec<(String, Box<dyn Source>)>;

/// The enabled sources of `cfg`, by name.
pub fn build_sources(cfg: &AgentConfig) -> Result<NamedSources, AgentError> {
    let mut sources: NamedSources = Vec::new();
    if cfg.sources.host.enabled {
        sources.push((
            "host".into(),
            Box::new(sources::host::HostSource::new(&cfg.sources.host).map_err(source_error("host"))?),
        ));
    }
    if cfg.sources.gen3_status.enabled {
        sources.push((
            "gen3_status".into(),
            Box::new(sources::gen3_status::Gen3StatusSource::new(&cfg.sources.gen3_status).map_err(source_error("gen3_status"))?),
        ));
    }
    if cfg.sources.gen3_usage.active(&cfg.sources.gen3_status) {
        sources.push((
            "gen3_usage".into(),
            Box::new(
                sources::gen3_usage::Gen3UsageSource::new(&cfg.sources.gen3_usage, &cfg.sources.gen3_status)
                    .map_err(source_error("gen3_usage"))?,
            ),
        ));
    }
    if cfg.sources.revproxy_log.enabled {
        sources.push((
            "revproxy_log".into(),
            Box::new(
                sources::revproxy_log::RevproxyLogSource::new(&cfg.sources.revproxy_log, &cfg.spool_dir)?
                    .with_kubeconfig(cfg.kubeconfig.clone()),
            ),
        ));
    }
    if !cfg.sources.scrape.jobs.is_empty() {
        sources.push((
            "scrape".into(),
            Box::new(sources::scrape::ScrapeSource::new(&cfg.sources.scrape, cfg.interval)?.with_kubeconfig(cfg.kubeconfig.clone())),
        ));
    }
    if cfg.sources.kubernetes.enabled {
        sources.push((
            "kubernetes".into(),
            Box::new(sources::kubernetes::KubernetesSource::new(
                &cfg.sources.kubernetes,
                cfg.kubeconfig.clone(),
            )?),
        ));
        if !cfg.sources.kubernetes.log_counters.is_empty() {
            sources.push((
                "log_counters".into(),
                Box::new(sources::pod_logs::LogCountersSource::new(
                    cfg.sources.kubernetes.namespaces.clone(),
                    cfg.sources.kubernetes.log_counters.clone(),
                    cfg.kubeconfig.clone(),
                    &cfg.spool_dir,
                )?),
            ));
        }
    }
    // -- backends --
    if cfg.sources.elasticsearch.active() {
        sources.push((
            "elasticsearch".into(),
            Box::new(
                sources::elasticsearch::ElasticsearchSource::new(&cfg.sources.elasticsearch, cfg.interval)
                    .map_err(source_error("elasticsearch"))?,
            ),
        ));
    }
    if cfg.sources.postgres.active() {
        sources.push((
            "postgres".into(),
            Box::new(sources::postgres::PostgresSource::new(&cfg.sources.postgres, cfg.interval).map_err(source_error("postgres"))?),
        ));
    }
    Ok(sources)
}

/// A configured agent, ready to run.
pub struct Agent {
    cfg: AgentConfig,
    token: Option<String>,
    tls: Option<tls::ClientTls>,
    agent_name: String,
    metrics: AgentMetrics,
    spool: Arc<Mutex<Spool>>,
    sources: NamedSources,
    // --- central config (cfgpush): see `central` ---
    loader: Option<Arc<dyn central::ConfigLoader>>,
    no_central: bool,
    central: Option<central::Central>,
    running: central::Running,
    commands: (mpsc::Sender<central::Command>, mpsc::Receiver<central::Command>),
}

impl Agent {
    /// Validates `cfg`, opens the spool and builds the sources. Metrics are
    /// registered in `registry`.
    pub fn new(cfg: AgentConfig, registry: &mut Registry) -> Result<Self, AgentError> {
        cfg.validate()?;
        let token = cfg.resolve_token()?;
        let tls = cfg.client_tls()?;
        let metrics = AgentMetrics::new(registry);
        let spool =
            Spool::open(&cfg.spool_dir, cfg.spool_max_bytes, Some(metrics.shipper.clone())).map_err(|source| AgentError::Spool {
                path: cfg.spool_dir.clone(),
                source,
            })?;
        let sources = build_sources(&cfg)?;
        let agent_name = cfg.agent_name.clone().unwrap_or_else(config::hostname);
        metrics.config.last_reload_successful.set(1);
        Ok(Agent {
            cfg,
            token,
            tls,
            agent_name,
            metrics,
            spool: Arc::new(Mutex::new(spool)),
            sources,
            loader: None,
            no_central: true,
            central: None,
            running: Arc::default(),
            commands: mpsc::channel(4),
        })
    }

    /// Takes central config: `loader` re-reads the local configuration (for
    /// pushes and reloads). Unless `no_central`, the last good central
    /// config kept in the spool directory is merged in now, so the agent
    /// runs it even when the collector cannot be reached.
    pub fn with_loader(mut self, loader: Arc<dyn central::ConfigLoader>, no_central: bool) -> Result<Self, AgentError> {
        self.no_central = no_central;
        if !no_central {
            match central::load(&self.cfg.spool_dir) {
                Ok(None) => {}
                Ok(Some(c)) => match central::effective(loader.as_ref(), Some(&c)) {
                    Ok(mut cfg) => {
                        central::keep_local_only(&self.cfg, &mut cfg);
                        self.sources = build_sources(&cfg)?;
                        self.cfg = cfg;
                        tracing::info!(
                            version = c.version,
                            "running the last good central config kept in the spool directory"
                        );
                        self.metrics.config.version.set(c.version as i64);
                        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = (c.version, c.sha256.clone());
                        self.central = Some(c);
                    }
                    Err(e) => {
                        tracing::error!(version = c.version, error = %e, "the kept central config does not apply to the local file now; running the local file alone until the collector pushes again");
                        self.metrics.config.last_reload_successful.set(0);
                    }
                },
                Err(e) => tracing::error!(error = %e, "cannot read the kept central config; running the local file alone"),
            }
        }
        self.loader = Some(loader);
        Ok(self)
    }

    /// Sends reloads and pushes to this agent once it runs.
    pub fn reload_handle(&self) -> central::ReloadHandle {
        central::ReloadHandle(self.commands.0.clone())
    }

    /// Overrides the token (the collector's `--local-agent` uses an internal
    /// one).
    pub fn set_token(&mut self, token: String) {
        self.token = Some(token);
    }

    /// Overrides the TLS settings (the collector's `--local-agent` pins the
    /// certificate its collector serves).
    pub fn set_tls(&mut self, tls: tls::ClientTls) {
        self.tls = Some(tls);
    }

    /// Runs until `shutdown` is cancelled; then stops the sources, spools what
    /// they collected and sends it (within the flush timeout).
    pub async fn run(self, shutdown: CancellationToken) {
        let Agent {
            cfg,
            token,
            tls,
            agent_name,
            metrics,
            spool,
            sources,
            loader,
            no_central,
            central: kept_central,
            running,
            commands: (cmd_tx, mut cmd_rx),
        } = self;
        let hostname = config::hostname();
        tracing::info!(
            agent = %agent_name,
            collector = %cfg.collector,
            interval = ?cfg.interval,
            spool = %cfg.spool_dir.display(),
            sources = ?sources.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            "csoc-agent starting"
        );
        if token.is_none() && !tls.as_ref().is_some_and(tls::ClientTls::has_client_cert) {
            tracing::warn!(
                "no token (--token, CSOC_AGENT_TOKEN or token_file) and no client certificate (--tls-cert, --tls-key) configured: the collector will refuse this agent"
            );
        }
        let wake = Arc::new(Notify::new());
        let (tx, mut rx) = mpsc::channel::<Frame>(64);
        let mut source_set = manager::SourceSet::new(tx, metrics.source.clone(), shutdown.child_token());
        source_set.apply(&cfg, sources).await;

        // Pipeline: frames → spool. Ends when every source has stopped.
        let pipeline = Pipeline::new(&cfg, &agent_name);
        let p_spool = spool.clone();
        let p_wake = wake.clone();
        let pipeline_task = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                for batch in pipeline.encode(frame) {
                    let res = p_spool.lock().unwrap_or_else(|p| p.into_inner()).push(batch);
                    if let Err(e) = res {
                        tracing::error!(error = %e, "cannot write a batch to the spool; it is lost");
                    }
                }
                p_wake.notify_one();
            }
        });

        let drain = CancellationToken::new();
        let shipper = Shipper::new(
            ShipperConfig {
                collector: cfg.collector.clone(),
                token,
                tls,
                agent_name,
                hostname,
                claimed_commons: cfg.commons_name.clone().unwrap_or_default(),
                window: 8,
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
                flush_timeout: Duration::from_secs(5),
                central: Some(shipper::CentralLink {
                    handle: central::ReloadHandle(cmd_tx.clone()),
                    running: running.clone(),
                }),
            },
            spool,
            wake,
            metrics.shipper.clone(),
        );
        let shipper_task = tokio::spawn(shipper.run(drain.clone()));

        drop(cmd_tx);
        let mut mgr = ConfigManager {
            cfg,
            loader,
            no_central,
            central: kept_central,
            running,
            metrics: metrics.clone(),
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = cmd_rx.recv() => match cmd {
                    Some(c) => mgr.handle(c, &mut source_set).await,
                    None => { shutdown.cancelled().await; break; }
                },
            }
        }
        source_set.stop_all().await;
        let _ = pipeline_task.await;
        drain.cancel();
        let _ = shipper_task.await;
        let m = &metrics.shipper;
        tracing::info!(
            samples_spooled = m.spooled_samples.get(),
            samples_acked = m.samples_acked.get(),
            samples_dropped = m.spool_dropped_samples.get(),
            spool_batches_left = m.spool_batches.get(),
            "csoc-agent stopped"
        );
    }
}

/// Applies central pushes and local reloads to the running agent (see
/// `central` and `manager`).
struct ConfigManager {
    cfg: AgentConfig,
    loader: Option<Arc<dyn central::ConfigLoader>>,
    no_central: bool,
    central: Option<central::Central>,
    running: central::Running,
    metrics: AgentMetrics,
}

impl ConfigManager {
    async fn handle(&mut self, cmd: central::Command, set: &mut manager::SourceSet) {
        match cmd {
            central::Command::Push { push, reply } => {
                let version = push.version;
                let res = self.push(push, set).await;
                match &res {
                    Ok(()) => tracing::info!(version, "central config applied"),
                    Err(e) => tracing::error!(version, error = %e, "central config rejected; the last good configuration keeps running"),
                }
                let _ = reply.send(res);
            }
            central::Command::ReloadLocal { reply } => {
                let res = self.reload_local(set).await;
                match &res {
                    Ok(s) => tracing::info!("local config reloaded: {s}"),
                    Err(e) => tracing::error!(error = %e, "local config reload failed; the running configuration is kept"),
                }
                let _ = reply.send(res);
            }
        }
    }

    fn loader(&self) -> Result<Arc<dyn central::ConfigLoader>, String> {
        self.loader
            .clone()
            .ok_or_else(|| "this agent has no local config file to re-read (the collector's --local-agent)".to_string())
    }

    async fn push(&mut self, push: central::Central, set: &mut manager::SourceSet) -> Result<(), String> {
        let loader = self.loader()?;
        if self.no_central {
            return Err("this agent runs with --no-central-config: central config is refused".into());
        }
        central::check_push(&push)?;
        let res = self.apply(loader.as_ref(), Some(&push), set).await;
        self.metrics.config.last_reload_successful.set(i64::from(res.is_ok()));
        res?;
        if let Err(e) = central::persist(&self.cfg.spool_dir, &push) {
            tracing::error!(error = %e, spool = %self.cfg.spool_dir.display(), "central config applied but not kept: a restart without the collector runs the previous one");
        }
        self.metrics.config.version.set(push.version as i64);
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = (push.version, push.sha256.clone());
        self.central = Some(push);
        Ok(())
    }

    async fn reload_local(&mut self, set: &mut manager::SourceSet) -> Result<String, String> {
        let loader = self.loader()?;
        let kept = self.central.clone();
        let res = self.apply(loader.as_ref(), kept.as_ref(), set).await;
        self.metrics.config.last_reload_successful.set(i64::from(res.is_ok()));
        res
    }

    /// Builds the effective configuration and its sources, then swaps them
    /// in; nothing changes on an error.
    async fn apply(
        &mut self,
        loader: &dyn central::ConfigLoader,
        c: Option<&central::Central>,
        set: &mut manager::SourceSet,
    ) -> Result<String, String> {
        let mut cfg = central::effective(loader, c)?;
        let held = central::keep_local_only(&self.cfg, &mut cfg);
        if !held.is_empty() {
            tracing::warn!(settings = ?held, "local-only settings changed in the local file; they take effect at the next restart");
        }
        let built = build_sources(&cfg).map_err(|e| csoc_common::error::error_chain(&e))?;
        let changes = set.apply(&cfg, built).await;
        self.cfg = cfg;
        Ok(changes.to_string())
    }
}
