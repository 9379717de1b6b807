//! csoc-collector: receives the agents' streams, stores the time series in
//! SQLite and serves them with Prometheus's HTTP API.
//!
//! ```text
//! ingest (gRPC) ──Appender──► tsdb (SQLite) ◄──Querier── promql ◄── api (HTTP)
//!                                ▲    └──────Querier── rules ──► notify
//!                                └──── results, ALERTS ──┘
//! ```
//! `main.rs` parses flags; [`run`] starts everything in dependency order and
//! stops it in reverse.

pub mod agent_config;
pub mod agents;
pub mod alert;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod ingest;
pub mod live;
pub mod metadata;
pub mod metrics;
pub mod notify;
pub mod promql;
pub mod reload;
pub mod remote;
pub mod rules;
pub mod selfmon;
pub mod tls;
pub mod tsdb;
pub mod ui;
pub mod varint;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "local-agent")]
use csoc_common::retry::random_u64;

use crate::config::CollectorConfig;

/// The commons name of the in-process agent (`--local-agent`).
pub const LOCAL_COMMONS: &str = "local";

/// How long a stopping collector keeps sending to remote-write targets.
const REMOTE_FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a listener actually bound (useful with port 0 in tests).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// HTTP address.
    pub http: SocketAddr,
    /// gRPC address.
    pub grpc: SocketAddr,
}

fn loopback_for(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

/// The metrics of every component, registered under `csoc_collector_`.
struct Telemetry {
    collector: metrics::CollectorMetrics,
    remote_write_in: ingest::remote_write::RemoteWriteMetrics,
    rules: rules::RuleMetrics,
    notify: notify::NotifyMetrics,
    limits: ingest::limits::LimitMetrics,
    remote_write_out: remote::RemoteMetrics,
    tls: tls::TlsMetrics,
    reload: reload::ReloadMetrics,
}

impl Telemetry {
    fn register(registry: &mut Registry, cfg: &CollectorConfig) -> Telemetry {
        let sub = registry.sub_registry_with_prefix("csoc_collector");
        Telemetry {
            collector: metrics::CollectorMetrics::new(sub),
            remote_write_in: ingest::remote_write::RemoteWriteMetrics::new(sub),
            rules: rules::RuleMetrics::new(sub),
            notify: notify::NotifyMetrics::new(sub),
            limits: ingest::limits::LimitMetrics::new(sub, &cfg.limits),
            remote_write_out: remote::RemoteMetrics::new(sub),
            tls: tls::TlsMetrics::new(sub),
            reload: reload::ReloadMetrics::new(sub),
        }
    }
}

/// Step 1: the storage's metrics, and the remote-write queues' WAL holds
/// in place before the WAL is replayed; nothing of the database is read
/// yet ([`open_storage`] does that, once HTTP answers).
fn prepare_storage(
    cfg: &CollectorConfig,
    registry: &mut Registry,
    remote_metrics: remote::RemoteMetrics,
) -> anyhow::Result<(tsdb::Opening, remote::Remotes)> {
    let remotes = remote::Remotes::prepare(&cfg.remote_write, &cfg.data_dir, &cfg.external_labels, remote_metrics)?;
    let tsdb_opts = tsdb::TsdbOptions {
        retention: tsdb::Retention {
            age: cfg.retention,
            size_bytes: cfg.retention_size,
        },
        chunk_cache_bytes: usize::try_from(cfg.chunk_cache_size).unwrap_or(usize::MAX),
        wal_holds: remotes.holds(),
    };
    let sub = registry.sub_registry_with_prefix("csoc_collector");
    Ok((tsdb::Tsdb::prepare(&cfg.data_dir, &tsdb_opts, sub), remotes))
}

/// Step 5: opens the storage (loading the series, replaying the WAL) on a
/// blocking thread while the HTTP listener reports the progress. `None`:
/// `shutdown` came during the replay, which stopped (nothing lost: replay
/// only reads).
async fn open_storage(
    cfg: &CollectorConfig,
    opening: tsdb::Opening,
    remotes: &remote::Remotes,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tsdb::Tsdb>> {
    let progress = opening.progress();
    let mut task = tokio::task::spawn_blocking(move || opening.open());
    let res = tokio::select! {
        r = &mut task => r,
        _ = shutdown.cancelled() => {
            progress.cancel();
            task.await
        }
    };
    let db = match res {
        Ok(Ok(db)) => db,
        Ok(Err(tsdb::TsdbError::Interrupted)) => return Ok(None),
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context(format!("opening storage in {}", cfg.data_dir.display()))),
        Err(e) => anyhow::bail!("opening storage in {}: the task failed: {e}", cfg.data_dir.display()),
    };
    remotes.position(&db.wal_reader());
    Ok(Some(db))
}

/// Who may write and read: tokens, certificates and the listeners' TLS.
struct Security {
    api_auth: auth::ApiAuth,
    agent_auth: auth::AgentAuth,
    /// The gRPC TLS as built at start (the local agent pins its leaf), and
    /// the configuration handshakes use (swapped on reload).
    grpc_tls: Option<(tls::GrpcTls, Arc<tls::ServerTls>)>,
    http_tls: Option<Arc<tls::ServerTls>>,
    /// The watchers of the TLS files.
    tls_reloaders: Vec<tls::Reloader>,
    peer_policy: tls::PeerPolicy,
}

/// Step 2: reads every credential and certificate, and says what it found.
fn load_security(cfg: &CollectorConfig, tls_metrics: &tls::TlsMetrics) -> anyhow::Result<Security> {
    let api_auth = cfg.api_auth()?;
    if api_auth.is_empty() {
        tracing::info!(listen = %cfg.http_listen, "no API tokens configured: the HTTP API is open to whoever reaches its address");
    } else {
        tracing::info!(tokens = api_auth.len(), "API tokens loaded: every API request needs one");
    }
    let agent_auth = cfg.agent_auth()?;
    let mut tls_reloaders = Vec::new();
    let grpc_tls = match &cfg.grpc_tls {
        Some(t) => {
            let (built, server, reloader) = tls::Reloader::grpc(t, tls_metrics)?;
            tls_reloaders.push(reloader);
            Some((built, server))
        }
        None => None,
    };
    let http_tls = match &cfg.http_tls {
        Some(t) => {
            let (server, reloader) = tls::Reloader::http(t, tls_metrics)?;
            tls_reloaders.push(reloader);
            Some(server)
        }
        None => None,
    };
    let peer_policy = tls::PeerPolicy {
        certs: tls::CertMap::new(&cfg.agent_certs)?,
        require_cert: cfg.grpc_tls.as_ref().is_some_and(|t| t.client_auth == tls::ClientAuth::Require),
        internal_token: None,
    };
    if !peer_policy.certs.is_empty() {
        tracing::info!(names = peer_policy.certs.len(), "agent certificate names loaded");
    }
    if agent_auth.is_empty() && peer_policy.certs.is_empty() {
        tracing::warn!(
            "no agent tokens configured: every remote agent will be refused. Add one with --agent-token COMMONS=TOKEN (repeatable) or agent_tokens in the config file"
        );
    } else {
        tracing::info!(tokens = agent_auth.len(), "agent tokens loaded");
    }
    Ok(Security {
        api_auth,
        agent_auth,
        grpc_tls,
        http_tls,
        tls_reloaders,
        peer_policy,
    })
}

/// Step 3: both listeners, bound before anything is served so that a port
/// in use stops the start with a clear error.
async fn bind(cfg: &CollectorConfig) -> anyhow::Result<(tokio::net::TcpListener, tokio::net::TcpListener, Bound)> {
    let grpc = tokio::net::TcpListener::bind(cfg.grpc_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for gRPC ingest: {e} (change --grpc-listen)", cfg.grpc_listen))?;
    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for HTTP: {e} (change --http-listen)", cfg.http_listen))?;
    let bound = Bound {
        http: http.local_addr()?,
        grpc: grpc.local_addr()?,
    };
    Ok((grpc, http, bound))
}

/// The in-process agent of `--local-agent`, not yet running.
#[cfg(feature = "local-agent")]
type LocalAgent = csoc_agent::Agent;
#[cfg(not(feature = "local-agent"))]
type LocalAgent = std::convert::Infallible;

/// Step 4: the local agent goes through the real gRPC path with an
/// internal token (and, with TLS, pins this collector's certificate).
#[cfg(feature = "local-agent")]
fn prepare_local_agent(
    cfg: &CollectorConfig,
    sec: &mut Security,
    bound: Bound,
    registry: &mut Registry,
) -> anyhow::Result<Option<LocalAgent>> {
    if !cfg.local_agent {
        return Ok(None);
    }
    let token = format!("{:016x}{:016x}", random_u64(), random_u64());
    sec.agent_auth.add_token(LOCAL_COMMONS, &token);
    sec.peer_policy.internal_token = Some(auth::digest(&token));
    let scheme = if sec.grpc_tls.is_some() { "https" } else { "http" };
    let acfg = csoc_agent::config::AgentConfig {
        collector: format!("{scheme}://{}", loopback_for(bound.grpc)),
        commons_name: Some(LOCAL_COMMONS.into()),
        interval: cfg.local_agent_interval,
        spool_dir: cfg.data_dir.join("local-agent-spool"),
        ..Default::default()
    };
    let mut agent = csoc_agent::Agent::new(acfg, registry).context("starting the local agent")?;
    agent.set_token(token);
    if let Some((t, _)) = &sec.grpc_tls {
        // In-process: trust exactly the certificate this collector serves.
        agent.set_tls(csoc_agent::tls::ClientTls::pinned(t.leaf.clone()));
        if !cfg.tls_reload_interval.is_zero() {
            tracing::info!(
                "--local-agent pins the gRPC certificate the collector starts with: after grpc_tls files are reloaded, the local agent cannot reconnect until the collector restarts"
            );
        }
    }
    Ok(Some(agent))
}

#[cfg(not(feature = "local-agent"))]
fn prepare_local_agent(cfg: &CollectorConfig, _: &mut Security, _: Bound, _: &mut Registry) -> anyhow::Result<Option<LocalAgent>> {
    anyhow::ensure!(
        !cfg.local_agent,
        "--local-agent: this csoc-collector was built without the local-agent feature"
    );
    Ok(None)
}

#[cfg(feature = "local-agent")]
fn spawn_local_agent(agent: Option<LocalAgent>, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    agent.map(|a| tokio::spawn(a.run(stop)))
}

#[cfg(not(feature = "local-agent"))]
fn spawn_local_agent(agent: Option<LocalAgent>, _: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    agent.map(|never| match never {})
}

/// Runs the collector until `shutdown` is cancelled. `on_bound` is called
/// once start-up is complete (the listeners are bound earlier).
///
/// Start-up runs in dependency order — metrics, credentials and TLS (with
/// its file watchers), listeners, the local agent, the HTTP listener (health,
/// readiness and metrics only), the storage (WAL replay, with its progress
/// on `/-/ready` and `/metrics`), ingest, rules and notifications, the full
/// HTTP API, remote write and self-monitoring — and shutdown in reverse.
pub async fn run(cfg: CollectorConfig, shutdown: CancellationToken, on_bound: impl FnOnce(Bound) + Send) -> anyhow::Result<()> {
    run_with(cfg, None, shutdown, on_bound).await
}

/// [`run`], with where the configuration comes from: `/-/reload` and
/// SIGHUP read it again (see [`reload`]); without a source they re-read
/// the rule files only.
pub async fn run_with(
    cfg: CollectorConfig,
    source: Option<reload::ConfigSource>,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(Bound) + Send,
) -> anyhow::Result<()> {
    let started = Instant::now();
    cfg.validate()?;
    let mut registry = Registry::default();
    // process_* (selfmon), on the root registry.
    registry.register_collector(Box::new(csoc_common::process::ProcessCollector::default()));
    let tm = Telemetry::register(&mut registry, &cfg);
    let limiter = Arc::new(ingest::limits::Limiter::new(cfg.limits.clone(), tm.limits.clone()));
    let (opening, remotes) = prepare_storage(&cfg, &mut registry, tm.remote_write_out.clone())?;
    let remotes = Arc::new(remotes);

    let mut sec = load_security(&cfg, &tm.tls)?;
    let (grpc_listener, http_listener, bound) = bind(&cfg).await?;
    let local_agent = prepare_local_agent(&cfg, &mut sec, bound, &mut registry)?;
    let registry = Arc::new(registry);
    let api_auth = live::Live::new(sec.api_auth);
    let local_agent_digest = sec.peer_policy.internal_token;
    let limits = live::Live::new(cfg.limits.clone());

    // The servers and the TLS watchers stop on every way out of here.
    let servers_stop = CancellationToken::new();
    let _servers_stop_guard = servers_stop.clone().drop_guard();
    spawn_tls_reload(sec.tls_reloaders, cfg.tls_reload_interval, &servers_stop);

    // HTTP first, so that probes get an answer while the WAL replays.
    let phased = api::startup::Phased::new(api::startup::router(api::startup::StartupState {
        registry: registry.clone(),
        api_auth: api_auth.load(),
        metrics: tm.collector.http.clone(),
        progress: opening.progress(),
    }));
    let replay_progress = opening.progress(); // selfmon: /api/v1/status/walreplay
    let http_task = start_http(&cfg, &phased, http_listener, sec.http_tls, &servers_stop)?;
    tracing::info!(http = %bound.http, "HTTP listening: /-/healthy answers; /-/ready says 503 until the storage is open");

    let Some(db) = open_storage(&cfg, opening, &remotes, &shutdown).await? else {
        servers_stop.cancel();
        let _ = http_task.await;
        tracing::info!(elapsed = ?started.elapsed(), "csoc-collector stopped during WAL replay");
        return Ok(());
    };

    let agents = open_agent_registry(&cfg, &db, &tm.collector, &limiter);
    // Central agent configuration (--agent-config-dir): read, watched, pushed by ingest.
    agent_config::start(cfg.agent_config_dir.as_ref(), &agents, &servers_stop);

    // Ingest: gRPC from agents and the remote-write receiver.
    let agent_auth = live::Live::new(sec.agent_auth);
    let metadata = Arc::new(metadata::MetadataStore::new(cfg.limits.max_metadata_per_commons, tm.limits.clone()));
    let remote_write = ingest::remote_write::router(ingest::remote_write::RemoteWriteState {
        tsdb: db.clone(),
        auth: agent_auth.clone(),
        limits: limits.clone(),
        ingest_metrics: tm.collector.ingest.clone(),
        metrics: tm.remote_write_in,
        metadata: metadata.clone(),
        limit_metrics: tm.limits.clone(),
        limiter: limiter.clone(),
    });
    let grpc_task = start_grpc(
        &cfg,
        &db,
        &agents,
        (agent_auth.clone(), limits.clone()),
        sec.peer_policy,
        limiter.clone(),
        &metadata,
        &tm.collector,
        sec.grpc_tls.as_ref(),
        grpc_listener,
        &servers_stop,
    )?;

    // Rules and notifications.
    let ready = Arc::new(AtomicBool::new(false));
    let engine = promql::Engine {
        timeout: cfg.query_timeout,
        max_samples: cfg.query_max_samples,
        default_subquery_step: cfg.evaluation_interval,
        ..promql::Engine::new(cfg.lookback_delta)
    };
    let external_url = cfg.external_url();
    let rules_stop = CancellationToken::new();
    let notifier = notify::Notifier::start(
        &notify::NotifyConfig {
            alertmanagers: cfg.resolved_alertmanagers().map_err(anyhow::Error::msg)?,
            receivers: cfg.receivers.clone(),
            external_url: external_url.clone(),
            state_path: cfg.data_dir.join("notify-state.json"),
            silences_path: Some(cfg.data_dir.join("silences.json")),
            inhibit_rules: cfg.inhibit_rules.clone(),
        },
        tm.notify,
        rules_stop.clone(),
    )?;
    let rule_manager = rules::RuleManager::new(
        rules::RulesConfig {
            patterns: cfg.rule_files.clone(),
            default_interval: cfg.evaluation_interval,
            resend_delay: cfg.alert_resend_delay,
            external_labels: cfg.external_labels.clone(),
            // Default: this collector's own copy of the runbook (GET /runbook).
            runbook_base_url: cfg
                .runbook_base_url
                .clone()
                .unwrap_or_else(|| format!("{}/runbook", external_url.trim_end_matches('/'))),
            external_url,
            state_path: cfg.data_dir.join("rules-state.json"),
        },
        engine.clone(),
        db.clone(),
        notifier.clone(),
        tm.rules,
        rules_stop.clone(),
    )
    .context("loading rule files")?;

    // The one place a reload of everything goes through (/-/reload, SIGHUP).
    let receiver_names = live::Live::new(cfg.receivers.iter().map(|r| r.name.clone()).collect::<Vec<_>>());
    let reloader = Arc::new(reload::Reloader {
        source,
        rules: rule_manager.clone(),
        notifier: notifier.clone(),
        remotes: remotes.clone(),
        agent_auth,
        local_agent_digest,
        api_auth: api_auth.clone(),
        limits: limits.clone(),
        limiter: limiter.clone(),
        limit_metrics: tm.limits.clone(),
        receiver_names: receiver_names.clone(),
        config_yaml: Default::default(),
        metrics: tm.reload,
        serial: Default::default(),
        agents: agents.clone(),
    });
    reloader.started();

    // The HTTP API, in place of the start-up answers.
    let self_registry = registry.clone();
    let state = api::AppState {
        storage: Arc::new(db.clone()),
        tsdb_admin: Arc::new(db.clone()),
        status: Arc::new(api::StatusInfo::new(&cfg, &engine).with_replay(replay_progress)),
        engine,
        registry,
        metrics: tm.collector.http.clone(),
        ready: ready.clone(),
        admin_enabled: cfg.enable_admin_api,
        metadata,
        rules: rule_manager.clone(),
        api_auth: api_auth.clone(),
        limits: limits.clone(),
        limit_metrics: tm.limits.clone(),
        agents: agents.clone(),
        muter: notifier.muter().clone(),
        receiver_names: receiver_names.clone(),
        console: Arc::new(ui::Console::new(cfg.public_status).with_https(cfg.http_tls.is_some())),
        reloader: reloader.clone(),
    };
    phased.install(api::router(state, remote_write));

    let agent_stop = CancellationToken::new();
    let agent_task = spawn_local_agent(local_agent, agent_stop.clone());

    // Started once nothing below can fail (each task holds the storage).
    let remote_stop = CancellationToken::new();
    let remote_drain = CancellationToken::new();
    remotes.start(&db.wal_reader(), remote_stop.clone(), remote_drain.clone());
    let agents_stop = CancellationToken::new();
    let agents_task = tokio::spawn(agents.clone().run(agents_stop.clone()));
    // The first self-scrape precedes the first rule evaluation, so that the
    // agents' restored last contacts are there for CsocAgentSilent.
    let self_instance = loopback_for(bound.http).to_string();
    let mut self_scrape = selfmon::SelfScrape::default();
    if !cfg.self_scrape_interval.is_zero()
        && let Err(e) = self_scrape
            .scrape_once(&db, &self_registry, &self_instance, csoc_common::time::now_ms())
            .await
    {
        tracing::warn!(error = %e, "storing the collector's own metrics failed");
    }
    rule_manager.start();
    // SIGHUP reloads the whole configuration, as Prometheus does
    // (reload_all logs the outcome, part by part).
    let hup_reloader = reloader.clone();
    csoc_common::shutdown::spawn_on_sighup("reloading the configuration", rules_stop.clone().cancelled_owned(), move || {
        let r = hup_reloader.clone();
        async move {
            let _ = r.reload_all().await;
        }
    });
    let selfmon_task = (!cfg.self_scrape_interval.is_zero()).then(|| {
        tokio::spawn(selfmon::run(
            self_scrape,
            Arc::new(db.clone()),
            self_registry,
            self_instance,
            cfg.self_scrape_interval,
            rules_stop.clone(),
        ))
    });

    ready.store(true, Ordering::Release);
    tracing::info!(
        http = %bound.http,
        grpc = %bound.grpc,
        data_dir = %cfg.data_dir.display(),
        local_agent = cfg.local_agent,
        elapsed = ?started.elapsed(),
        "csoc-collector ready"
    );
    on_bound(bound);

    shutdown.cancelled().await;
    let stopping = Instant::now();
    // Reverse order: the local agent flushes through the still-running
    // ingest, then the servers stop, then storage commits what is queued.
    agent_stop.cancel();
    if let Some(t) = agent_task {
        let _ = t.await;
    }
    rules_stop.cancel();
    if let Some(t) = selfmon_task {
        let _ = t.await;
    }
    rule_manager.save_state();
    servers_stop.cancel();
    let _ = grpc_task.await;
    let _ = http_task.await;
    // After ingest: the last contacts are final.
    agents_stop.cancel();
    let _ = agents_task.await;
    let remote_tasks = remotes.take_tasks();
    if !remote_tasks.is_empty() {
        drain_remote_write(remote_tasks, &remote_stop, &remote_drain).await;
    }
    remote_stop.cancel();
    let db2 = db.clone();
    let _ = tokio::task::spawn_blocking(move || db2.close()).await;
    tracing::info!(elapsed = ?stopping.elapsed(), "csoc-collector stopped");
    Ok(())
}

/// Step 1b: the agent registry, restored from its file and storage; the
/// ingest limiter forgets what the registry forgets.
fn open_agent_registry(
    cfg: &CollectorConfig,
    db: &tsdb::Tsdb,
    metrics: &metrics::CollectorMetrics,
    limiter: &Arc<ingest::limits::Limiter>,
) -> Arc<agents::AgentRegistry> {
    let registry = agents::AgentRegistry::new(cfg.agent_forget_after, metrics.ingest.agent_last_seen.clone())
        .with_config_status(metrics.ingest.agent_config_status.clone())
        .with_file(cfg.data_dir.join(agents::STATE_FILE));
    let lim = limiter.clone();
    registry.on_forget(Box::new(move |c, a| lim.forget(c, a)));
    // Without the registry file, storage is asked for the agents heard from
    // within agent_forget_after (the retention when they are never forgotten).
    let window = if cfg.agent_forget_after.is_zero() {
        cfg.retention
    } else {
        cfg.agent_forget_after.min(cfg.retention)
    };
    let known = registry.restore(csoc_common::time::now_ms(), window, |mint| selfmon::last_seen_in_storage(db, mint));
    if known > 0 {
        tracing::info!(agents = known, forget_after = ?cfg.agent_forget_after, "agent registry restored");
    }
    Arc::new(registry)
}

/// Step 5: the gRPC ingest server.
#[allow(clippy::too_many_arguments)]
fn start_grpc(
    cfg: &CollectorConfig,
    db: &tsdb::Tsdb,
    agents: &Arc<agents::AgentRegistry>,
    (agent_auth, limits): (live::Live<auth::AgentAuth>, live::Live<config::Limits>),
    peer_policy: tls::PeerPolicy,
    limiter: Arc<ingest::limits::Limiter>,
    metadata: &Arc<metadata::MetadataStore>,
    metrics: &metrics::CollectorMetrics,
    grpc_tls: Option<&(tls::GrpcTls, Arc<tls::ServerTls>)>,
    listener: tokio::net::TcpListener,
    servers_stop: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ingest = ingest::IngestService::new(
        db.clone(),
        agent_auth.load(),
        cfg.limits.clone(),
        cfg.heartbeat_interval,
        metrics.ingest.clone(),
        servers_stop.clone(),
    )
    .with_metadata(metadata.clone())
    .with_agents(agents.clone())
    .with_peer_policy(peer_policy)
    .with_live_auth(agent_auth)
    .with_live_limits(limits)
    .with_limiter(limiter);
    if let Some((t, _)) = grpc_tls {
        tracing::info!(client_certs = t.client_certs_mode(), "gRPC ingest uses TLS");
    }
    let incoming = tls::accept::incoming(
        listener,
        grpc_tls.map(|(_, server)| server.clone()),
        tls::accept::Role::Grpc,
        Some(metrics.ingest.clone()),
        tls::accept::ConnLimits::from(&cfg.limits),
        servers_stop.clone(),
    )?;
    let stop = servers_stop.clone();
    Ok(tokio::spawn(async move {
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(ingest.into_server());
        if let Err(e) = tls::accept::serve_grpc(server, incoming, stop).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }))
}

/// Step 4b: the HTTP server, answering from `phased`'s current router
/// (start-up answers, then the API).
fn start_http(
    cfg: &CollectorConfig,
    phased: &api::startup::Phased,
    listener: tokio::net::TcpListener,
    http_tls: Option<Arc<tls::ServerTls>>,
    servers_stop: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if http_tls.is_some() {
        tracing::info!("HTTP API uses TLS");
    }
    let conn_limits = tls::accept::ConnLimits::from(&cfg.limits);
    let incoming = tls::accept::incoming(listener, http_tls, tls::accept::Role::Http, None, conn_limits, servers_stop.clone())?;
    let app = phased.router();
    let stop = servers_stop.clone();
    Ok(tokio::spawn(async move {
        if let Err(e) = tls::accept::serve_http(app, incoming, conn_limits, stop).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }))
}

/// Step 4a: re-reads the TLS files every `interval` until `stop` (see
/// `tls::reload`); 0 turns it off.
fn spawn_tls_reload(reloaders: Vec<tls::Reloader>, interval: std::time::Duration, stop: &CancellationToken) {
    if reloaders.is_empty() {
        return;
    }
    if interval.is_zero() {
        tracing::info!("TLS files are not re-read (tls_reload_interval 0): a new certificate needs a restart");
        return;
    }
    tracing::info!(every = ?interval, "TLS certificate, key and client CA files are re-read when they change");
    for r in reloaders {
        tokio::spawn(r.run(interval, stop.clone()));
    }
}

/// At shutdown: a few seconds to send what is left; the rest waits in the WAL.
async fn drain_remote_write(tasks: Vec<tokio::task::JoinHandle<()>>, stop: &CancellationToken, drain: &CancellationToken) {
    drain.cancel();
    let deadline = tokio::time::Instant::now() + REMOTE_FLUSH_DEADLINE;
    for mut t in tasks {
        if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
            // Past the deadline: stop retrying; the queue saves its position.
            stop.cancel();
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}
