//! The `gen3_status` source: probes each Gen3 service's health endpoint and
//! version endpoint (shared/gen3/SERVICES.md), concurrently, once per
//! interval, with a timeout, and reports whether each service is up, how
//! long it took to answer, with which HTTP status, which version it runs,
//! and when the commons' TLS certificate expires.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `gen3_service_up` | job, service | 1 when the health endpoint answered as a healthy service does, else 0 |
//! | `gen3_probe_duration_seconds` | job, service | time from sending the health request to the end of its answer (or to the failure) |
//! | `gen3_probe_http_status_code` | job, service | status of the health answer; 0 when there was none (connection refused, timeout, TLS failure) |
//! | `gen3_service_info` | job, service, version, commit | 1, from the version endpoint; `commit` only when the service reports one; absent when the version is unknown |
//! | `gen3_tls_cert_expiry_timestamp_seconds` | job, host | `notAfter` of the certificate `base_url` presents (https only) |
//!
//! Every sample is stamped with the completion time of the request it comes
//! from. `instance` is added by the pipeline (the agent's name).
//!
//! **Healthy** means: a 2xx answer (gen3-user-data-library answers 201) whose
//! body is not an HTML page. Services answer `Healthy`, `"Healthy"` or a JSON
//! object; an HTML page in a 2xx answer comes from something else, such as a
//! catch-all location sending the path to the portal, so it counts as down
//! (the portal itself, whose health *is* its HTML page, is exempt). Through
//! revproxy, every 500–504 body is replaced by revproxy's own JSON, and a
//! service that is not deployed answers 502, so the status code is what
//! tells. Redirects are not followed: hatchery's and sower's public paths
//! redirect or refuse anonymous callers, which is not health.
//!
//! **Where each service is probed.** Built-in services (the [`BUILTIN_SERVICES`]
//! table, from SERVICES.md) are probed, in this order of preference: at the
//! service's own `url` when one is configured; in-cluster at
//! `http://<Service>.<namespace>.svc.cluster.local` when `namespace` is set
//! (real bodies, and arborist, presigned-url-fence, hatchery, sower,
//! ssjdispatcher and ambassador, which revproxy does not expose, become
//! reachable); else through revproxy at `base_url` + the public path
//! (`/user/_status`, `/index/_status`, ...). A built-in service with none of
//! these is skipped (logged once at start). Services can be removed
//! (`enabled: false`), given other paths, or added (a commons' own service
//! behind revproxy: `health_path`, optionally `url` and `version_path`).
//!
//! **Versions.** Flask and Go services answer `{"commit","version"}` (sheepdog
//! and peregrine add a `dictionary` object, ignored here); FastAPI services
//! `{"version"}`; metadata-service a bare JSON string (`"4.3.0"`). Content
//! types vary and are not relied on.
//!
//! **TLS.** Probes verify certificates (the Mozilla roots, plus `ca_file`). A
//! self-signed, expired or wrong-host certificate makes the probes fail (up 0,
//! status 0, error kind `tls`), and the expiry is still reported: it is read
//! from a verified probe's connection when there is one, otherwise from a
//! second, non-verifying request to `base_url` + `/_status` (revproxy's own
//! health path, which revproxy never logs) whose answer is not used.
//!
//! **Errors** are counted in `csoc_agent_source_errors_total{source="gen3_status",kind}`
//! (one per failed probe and cycle), kinds: `timeout`, `connect` (refused,
//! DNS), `tls`, `request` (other transport errors), `http_status` (non-2xx),
//! `unexpected_body` (2xx with an HTML page), `version` (version endpoint
//! failed or unreadable while the service is up), `cert` (no certificate
//! could be read). Up/down transitions are logged, not every failure.
//!
//! **Revproxy's access log.** Probes through revproxy are logged by revproxy
//! like any request (except `/_status` itself) and so show up in the
//! `revproxy_log` source's counts; revproxy skips user agents starting with
//! `Uptime-Kuma` or `kube-probe`, which `user_agent` can be set to if that is
//! preferred.
//!
//! Files: `services.rs` (the built-in service table), `config.rs` (the
//! settings, their validation and the resolved probe targets), `probe.rs`
//! (one service's health and version requests), `cert.rs` (the expiry of the
//! commons' certificate), `round.rs` (one round of probes and its frame); this
//! one holds the source, its construction and its run loop.

mod cert;
mod config;
mod probe;
mod round;
mod services;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::gen3_http::{client_builder, join};
use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;
use csoc_common::tls::{CaError, read_ca_roots};

use cert::CertProbe;
use config::FIELD;
pub use config::{DEFAULT_TIMEOUT, Gen3StatusConfig, ServiceConfig, Target, effective_timeout};
pub use probe::ProbeOutcome;
pub use round::Round;
pub use services::{BUILTIN_SERVICES, BuiltinService};

/// Errors building the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Gen3StatusError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `ca_file` could not be read.
    #[error("invalid {FIELD}.ca_file: cannot read {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `ca_file` holds no usable certificate.
    #[error("invalid {FIELD}.ca_file: {path}: {message}")]
    CaPem {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("gen3_status: cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The gen3_status source.
pub struct Gen3StatusSource {
    targets: Vec<Target>,
    skipped: Vec<&'static str>,
    client: reqwest::Client,
    cert: Option<CertProbe>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    job: String,
}

impl Gen3StatusSource {
    /// Validates the config and builds the source and its HTTP clients.
    pub fn new(cfg: &Gen3StatusConfig) -> Result<Self, Gen3StatusError> {
        let (targets, skipped) = cfg.targets()?;
        let mut roots = Vec::new();
        if let Some(p) = &cfg.ca_file {
            roots = read_ca_roots(p).map_err(|e| match e {
                CaError::Read(source) => Gen3StatusError::CaFile { path: p.clone(), source },
                CaError::Pem(message) => Gen3StatusError::CaPem { path: p.clone(), message },
            })?;
        }
        let builder = || client_builder(&cfg.user_agent);
        let mut b = builder();
        for r in roots {
            b = b.add_root_certificate(r);
        }
        let client = b.build().map_err(Gen3StatusError::Client)?;
        let cert = match Url::parse(cfg.base_url.trim()) {
            Ok(u) if u.scheme() == "https" => Some(CertProbe {
                client: builder()
                    .danger_accept_invalid_certs(true)
                    .build()
                    .map_err(Gen3StatusError::Client)?,
                url: join(u.as_str(), "/_status"),
                host: u.host_str().unwrap_or_default().to_string(),
            }),
            _ => None,
        };
        Ok(Gen3StatusSource {
            targets,
            skipped,
            client,
            cert,
            interval: cfg.interval,
            timeout: cfg.timeout,
            job: cfg.job.clone(),
        })
    }

    /// The services probed, in order.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }
}

impl Source for Gen3StatusSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            let interval = self.interval.unwrap_or(cx.interval);
            let timeout = effective_timeout(self.timeout, interval);
            tracing::info!(
                source = %cx.name,
                services = ?self.targets.iter().map(|t| t.service.as_str()).collect::<Vec<_>>(),
                interval = ?interval,
                timeout = ?timeout,
                "gen3_status probing"
            );
            if !self.skipped.is_empty() {
                tracing::info!(
                    source = %cx.name,
                    skipped = ?self.skipped,
                    "gen3_status: built-in services not probed (revproxy does not expose them; set namespace or a url per service)"
                );
            }
            let mut last_up: HashMap<String, bool> = HashMap::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let round = tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    r = self.collect(&cx.name, timeout) => r,
                };
                for o in &round.outcomes {
                    if let Some((kind, msg)) = &o.error {
                        cx.error(kind);
                        if last_up.get(&o.service) != Some(&false) {
                            tracing::warn!(source = %cx.name, service = %o.service, kind, error = %msg, "Gen3 service is down");
                        }
                    } else {
                        if last_up.get(&o.service) == Some(&false) {
                            tracing::info!(source = %cx.name, service = %o.service, "Gen3 service is up again");
                        }
                        if let Some(e) = &o.version_error {
                            cx.error("version");
                            tracing::debug!(source = %cx.name, service = %o.service, error = %e, "version endpoint");
                        }
                    }
                    last_up.insert(o.service.clone(), o.up);
                }
                if let Some(e) = &round.cert_error {
                    cx.error("cert");
                    tracing::debug!(source = %cx.name, error = %e, "cannot read the commons' TLS certificate");
                }
                if !cx.emit(round.frame).await {
                    break;
                }
            }
        })
    }
}
