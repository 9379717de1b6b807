//! The `gen3_usage` source: how much a Gen3 commons holds and serves, from
//! the counts its services publish without authentication
//! (shared/gen3/SERVICES.md, table B), polled rarely.
//!
//! | metric | labels | endpoint (public path through revproxy; in-cluster path) | field |
//! |---|---|---|---|
//! | `gen3_indexd_files` | job | indexd `/index/_stats`; `/_stats` | `fileCount` |
//! | `gen3_indexd_size_bytes` | job | same | `totalFileSize` |
//! | `gen3_drs_objects` | job | indexd `/ga4gh/drs/v1/service-info` (indexd ≥ 2026.08) | `drs.objectCount` |
//! | `gen3_drs_size_bytes` | job | same | `drs.totalObjectSize` |
//! | `gen3_peregrine_projects` | job | peregrine `/api/search/datasets?nodes=…`; `/datasets?nodes=…` | number of projects in the answer |
//! | `gen3_peregrine_records` | job, project, node | same | records of each node type (`peregrine_nodes`, default case, file) per project |
//! | `gen3_discovery_studies` | job | metadata-service `/mds/metadata?_guid_type=discovery_metadata&limit=…&offset=…`; `/metadata?…` | studies listed (pages followed) |
//! | `gen3_mds_aggregate_commons` | job | metadata-service `/mds/aggregate/commons`; `/aggregate/commons` (aggregate MDS only) | number of commons in `commons` |
//! | `gen3_hatchery_workspaces` | job | hatchery `/allCosts`, in-cluster only (hatchery ≥ 2.6.0) | `total_pods` (running workspaces) |
//! | `gen3_hatchery_workspace_cost_dollars` | job | same | `total_cost`: what the workspaces running now have cost so far (see below) |
//!
//! **Workspace cost.** hatchery's `/allCosts` (hatchery/hatchery.go
//! `allCosts`) lists the `Running` pods of the workspace namespace and, for
//! each, the CPU cores and memory GiB its containers request × hatchery's
//! configured `pricing.cpu` / `pricing.memory` (dollars per core-hour,
//! GiB-hour) × the hours since the pod's creation; `total_cost` is their sum.
//! It grows while workspaces run and falls when one stops (its pod leaves the
//! list; what it cost is then only in hatchery's pay-model table), so it is
//! neither a counter nor a bill: `gen3_hatchery_workspace_cost_dollars` is a
//! gauge ("the running workspaces have cost this much so far"), not
//! `…_dollars_total`. Per-pod figures are not exported (pod names carry user
//! names).
//!
//! All are gauges in base units, stamped with the completion time of the
//! request they come from; `instance` and external labels are added by the
//! pipeline.
//!
//! **When it runs.** Whenever the agent knows a Gen3 base URL
//! (`sources.gen3_usage.base_url`, default `sources.gen3_status.base_url`,
//! which `--gen3-url` sets), or the commons' `namespace`; `enabled: false`
//! turns it off. Where each endpoint is fetched follows `gen3_status`: at the
//! service's own `url` (`sources.gen3_status.services.<service>.url`), else
//! in-cluster when `namespace` is set, else through revproxy at the base URL.
//! Hatchery's `/allCosts` is only reachable in-cluster (`hatchery_url`,
//! default from the hatchery service's `url` or `namespace`); without one it
//! is skipped.
//!
//! **Interval and timeout.** Default interval 5m, not the agent's: indexd
//! `_stats` up to indexd 6.1.x counts and sums every record on each call (slow
//! on large commons), and the counts move slowly. Default timeout 30s (or 80%
//! of a shorter interval); endpoints are fetched concurrently, each within the
//! timeout. Bodies above 4 MiB are not parsed (`parse` error).
//!
//! **Errors** count in `csoc_agent_source_errors_total{source="gen3_usage",kind}`,
//! one per failed endpoint and round: `unauthorized` (401), `forbidden`
//! (403), `not_found` (404), `http_status` (other non-2xx), `timeout`,
//! `connect`, `tls`, `request`, `parse` (the body is not what the endpoint
//! sends). A failed endpoint emits nothing for its metrics (they go stale at
//! the collector); the others are not affected. A commons where an endpoint
//! does not exist (no aggregate MDS, peregrine without `PUBLIC_DATASETS`)
//! can list it in `disable`.

//!
//! Files: `config.rs` (the settings, their validation and where each
//! endpoint is fetched), `endpoints.rs` (each endpoint's request and
//! parsing), `round.rs` (one round of polls and its frame); this one holds
//! the source, its construction and its run loop.

mod config;
mod endpoints;
mod round;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use super::gen3_http::{client_builder, invalid};
use super::gen3_status::Gen3StatusConfig;
use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;
use csoc_common::tls::{CaError, read_ca_roots};

pub use config::{DEFAULT_INTERVAL, DEFAULT_TIMEOUT, ENDPOINTS, Gen3UsageConfig};
use config::{FIELD, Plan};
pub use round::{EndpointError, UsageRound};

/// Errors building the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Gen3UsageError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error("gen3_usage: cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The gen3_usage source.
pub struct Gen3UsageSource {
    plan: Plan,
    client: reqwest::Client,
    interval: Duration,
    timeout: Duration,
    nodes: Vec<String>,
    page_size: u32,
    disabled: Vec<String>,
    job: String,
}

impl Gen3UsageSource {
    /// Validates the config (`status`: gen3_status's, for the defaults) and
    /// builds the source.
    pub fn new(cfg: &Gen3UsageConfig, status: &Gen3StatusConfig) -> Result<Self, Gen3UsageError> {
        cfg.validate(status)?;
        let plan = cfg.plan(status)?;
        let mut b = client_builder(&status.user_agent);
        let (ca, field) = match &cfg.ca_file {
            Some(p) => (Some(p), format!("{FIELD}.ca_file")),
            None => (status.ca_file.as_ref(), "sources.gen3_status.ca_file".to_string()),
        };
        if let Some(p) = ca {
            let roots = read_ca_roots(p).map_err(|e| match e {
                CaError::Read(e) => invalid(field.clone(), format!("cannot read {}: {e}", p.display())),
                CaError::Pem(m) => invalid(field.clone(), format!("{}: {m}", p.display())),
            })?;
            for r in roots {
                b = b.add_root_certificate(r);
            }
        }
        Ok(Gen3UsageSource {
            plan,
            client: b.build().map_err(Gen3UsageError::Client)?,
            interval: cfg.effective_interval(),
            timeout: cfg.effective_timeout(),
            nodes: cfg.peregrine_nodes.clone(),
            page_size: cfg.discovery_page_size,
            disabled: cfg.disable.clone(),
            job: cfg.job.clone().unwrap_or_else(|| status.job.clone()),
        })
    }
}

impl Source for Gen3UsageSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            tracing::info!(
                source = %cx.name,
                indexd = ?self.plan.indexd.as_ref().map(|p| p.root.as_str()),
                peregrine = ?self.plan.peregrine.as_ref().map(|p| p.root.as_str()),
                metadata = ?self.plan.metadata.as_ref().map(|p| p.root.as_str()),
                hatchery = ?self.plan.hatchery,
                interval = ?self.interval,
                timeout = ?self.timeout,
                "gen3_usage polling"
            );
            let mut failing: BTreeMap<&'static str, bool> = BTreeMap::new();
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let round = tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    r = self.collect(&cx.name) => r,
                };
                for ep in ENDPOINTS {
                    let err = round.errors.iter().find(|e| e.endpoint == *ep);
                    let was = failing.get(ep).copied().unwrap_or(false);
                    match err {
                        Some(e) => {
                            cx.error(e.kind);
                            if !was {
                                tracing::warn!(source = %cx.name, endpoint = ep, kind = e.kind, error = %e.message, "Gen3 usage endpoint unavailable");
                            }
                        }
                        None if was => tracing::info!(source = %cx.name, endpoint = ep, "Gen3 usage endpoint available again"),
                        None => {}
                    }
                    failing.insert(ep, err.is_some());
                }
                if !cx.emit(round.frame).await {
                    break;
                }
            }
        })
    }
}
