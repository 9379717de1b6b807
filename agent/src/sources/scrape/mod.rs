//! The `scrape` source: scrapes Prometheus text-format and OpenMetrics
//! targets (fence's `/metrics`, node_exporter, any exporter) with
//! Prometheus's scrape semantics, configured as `sources.scrape.jobs` in the
//! agent's YAML (field names as in Prometheus's `scrape_configs`) or with
//! `--scrape [JOB=]URL`.
//!
//! Targets come from `static_configs`, `file_sd_configs` (Prometheus's
//! file_sd JSON/YAML, re-read when a file changes, checked every second, and
//! every `refresh_interval`) and `kubernetes_sd_configs` (roles `pod` and
//! `endpoints`, watched; see [`kubernetes_sd`]). Each target's labels start as its group's
//! labels plus `__address__`, `__scheme__`, `__metrics_path__`,
//! `__scrape_interval__`, `__scrape_timeout__`, `__param_<name>`, `job` (and
//! `__meta_filepath` for file_sd); `relabel_configs` run on them; then
//! `instance` defaults to `__address__` and every `__`-prefixed label is
//! dropped. The URL is built from `__scheme__`, `__address__`,
//! `__metrics_path__` and `params` overridden by `__param_*`.
//!
//! One loop per target runs at the job's `scrape_interval`, offset by a
//! stable per-target jitter, each scrape limited to `scrape_timeout`, with the
//! `Accept` header Prometheus sends. Every scrape yields `up`,
//! `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling` and `scrape_series_added`. The
//! target's labels are attached to each sample: with `honor_labels: false` (the
//! default) a clashing exposed label is kept as `exported_<name>`; with
//! `honor_labels: true` the exposed one wins. `metric_relabel_configs` then
//! run on each sample; more than `sample_limit` samples after it fails the
//! whole scrape (`up` 0). Exposed timestamps are used when
//! `honor_timestamps` (default true).
//!
//! Staleness: a series present in one scrape and absent from the next gets a
//! staleness marker (`csoc_proto::STALE_NAN_BITS`) at the new scrape's time;
//! when a scrape fails every series of the previous one does; when a target
//! disappears (relabelling or service discovery change) all its series,
//! `up` and the other report series do. Series exposed with their own
//! timestamp are not tracked, as in Prometheus. The agent shutting down writes
//! no markers (as Prometheus).
//!
//! The pipeline only adds `instance` when a sample has none, so the target's
//! `instance` reaches the collector unchanged.
//!
//! Files: `config.rs` (the YAML and `--scrape` flags, validation),
//! `discovery.rs` (static and file_sd targets, target relabelling),
//! `scrape_one.rs` (the HTTP scrape of one target, its samples' labels),
//! `target_loop.rs` (one loop per target: schedule, staleness markers, the
//! `up`/`scrape_*` series); this one holds the source and the loop that
//! starts and stops the target loops as targets come and go.

mod config;
mod discovery;
pub mod kubernetes_sd;
#[cfg(test)]
mod kubernetes_sd_tests;
mod scrape_one;
mod target_loop;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;

use config::invalid;
pub use config::{BasicAuth, FileSdConfig, ScrapeConfig, ScrapeJobConfig, StaticConfig, TlsConfig, jobs_from_flags};
use discovery::{Discovery, Target};
pub use kubernetes_sd::KubernetesSdConfig;
use target_loop::target_loop;

/// A job ready to scrape.
struct Job {
    cfg: ScrapeJobConfig,
    client: reqwest::Client,
    interval: Duration,
    timeout: Duration,
}

/// The scrape source.
pub struct ScrapeSource {
    jobs: Vec<Arc<Job>>,
    default_interval: Duration,
    kubeconfig: Option<PathBuf>,
}

impl ScrapeSource {
    /// Builds the jobs' HTTP clients; `default_interval` is the agent's
    /// `interval` (for jobs without `scrape_interval`).
    pub fn new(cfg: &ScrapeConfig, default_interval: Duration) -> Result<Self, ConfigError> {
        cfg.validate(default_interval)?;
        let mut jobs = Vec::new();
        for (i, j) in cfg.jobs.iter().enumerate() {
            let builder = reqwest::Client::builder()
                .user_agent(concat!("csoc-agent/", env!("CARGO_PKG_VERSION")))
                .pool_max_idle_per_host(2);
            let client = j
                .tls_config
                .apply(builder)
                .map_err(|e| invalid(format!("sources.scrape.jobs[{i}].tls_config"), e))?
                .build()
                .map_err(|e| invalid(format!("sources.scrape.jobs[{i}]"), format!("cannot build the HTTP client: {e}")))?;
            jobs.push(Arc::new(Job {
                interval: j.interval(default_interval),
                timeout: j.timeout(default_interval),
                cfg: j.clone(),
                client,
            }));
        }
        Ok(ScrapeSource {
            jobs,
            default_interval,
            kubeconfig: None,
        })
    }

    /// The agent's kubeconfig, for `kubernetes_sd_configs` without their own
    /// `kubeconfig_file` (None: in-cluster, then `KUBECONFIG`).
    pub fn with_kubeconfig(mut self, kubeconfig: Option<PathBuf>) -> Self {
        self.kubeconfig = kubeconfig;
        self
    }
}

impl Source for ScrapeSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            let mut discovery: Vec<Discovery> = self.jobs.iter().map(|_| Discovery::default()).collect();
            // kubernetes_sd_configs: watchers filling one store per config.
            let mut sd_tasks = tokio::task::JoinSet::new();
            for (i, job) in self.jobs.iter().enumerate() {
                for sd in &job.cfg.kubernetes_sd_configs {
                    let store = discovery[i].add_kubernetes(sd.role.clone());
                    sd_tasks.spawn(kubernetes_sd::run_discovery(
                        sd.clone(),
                        self.kubeconfig.clone(),
                        store,
                        cx.clone(),
                        job.cfg.job_name.clone(),
                    ));
                }
            }
            let mut running: HashMap<(usize, u64), (CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
            loop {
                let mut want: HashMap<(usize, u64), Target> = HashMap::new();
                for (i, job) in self.jobs.iter().enumerate() {
                    for t in discovery[i].targets(&job.cfg, self.default_interval, &cx.name) {
                        want.insert((i, t.key()), t);
                    }
                }
                running.retain(|k, (stop, _)| {
                    if want.contains_key(k) {
                        true
                    } else {
                        stop.cancel();
                        false
                    }
                });
                for (k, t) in want {
                    if running.contains_key(&k) {
                        continue;
                    }
                    tracing::info!(source = %cx.name, job = %self.jobs[k.0].cfg.job_name, url = %t.url, "scrape target added");
                    let stop = CancellationToken::new();
                    let h = tokio::spawn(target_loop(self.jobs[k.0].clone(), t, cx.clone(), stop.clone()));
                    running.insert(k, (stop, h));
                }
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            for (_, (_, h)) in running {
                let _ = h.await;
            }
            while sd_tasks.join_next().await.is_some() {}
        })
    }
}
