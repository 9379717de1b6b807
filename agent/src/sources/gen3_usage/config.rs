//! `sources.gen3_usage`: the settings, their defaults (some from
//! `gen3_status`), their validation, and the plan of where each endpoint is
//! fetched.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::sources::gen3_http::{de_opt_duration, invalid, parse_http_url};
use crate::sources::gen3_status::{BUILTIN_SERVICES, Gen3StatusConfig};

pub(super) const FIELD: &str = "sources.gen3_usage";

/// Default poll interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// Default time limit of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The endpoints, by the names `disable` takes.
pub const ENDPOINTS: &[&str] = &[
    "indexd_stats",
    "drs_service_info",
    "peregrine_datasets",
    "mds_discovery",
    "mds_aggregate_commons",
    "hatchery_all_costs",
];

/// Configuration of the `gen3_usage` source (`sources.gen3_usage`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gen3UsageConfig {
    /// Poll when a base URL or namespace is known (default true).
    pub enabled: bool,
    /// The commons' public URL (default: `sources.gen3_status.base_url`).
    pub base_url: Option<String>,
    /// Poll interval (default 5m).
    #[serde(deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
    /// Time limit of one request (default 30s, or 80% of a shorter
    /// interval); must be below the interval.
    #[serde(deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// Extra CA certificates (PEM) to trust (default:
    /// `sources.gen3_status.ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Hatchery's in-cluster base URL for `/allCosts` (default: the hatchery
    /// service's `url` in gen3_status, else in-cluster from `namespace`).
    pub hatchery_url: Option<String>,
    /// Node types counted per project by peregrine (default case, file).
    pub peregrine_nodes: Vec<String>,
    /// Page size of the discovery metadata listing (default 1000).
    pub discovery_page_size: u32,
    /// Endpoints not polled (names in [`ENDPOINTS`]).
    pub disable: Vec<String>,
    /// Value of the `job` label (default: gen3_status's, `gen3`).
    pub job: Option<String>,
}

impl Default for Gen3UsageConfig {
    fn default() -> Self {
        Gen3UsageConfig {
            enabled: true,
            base_url: None,
            interval: None,
            timeout: None,
            ca_file: None,
            hatchery_url: None,
            peregrine_nodes: vec!["case".into(), "file".into()],
            discovery_page_size: 1000,
            disable: Vec::new(),
            job: None,
        }
    }
}

/// Where one endpoint is fetched: the URL before its query.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Place {
    pub(super) root: String,
    pub(super) in_cluster: bool,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) indexd: Option<Place>,
    pub(super) peregrine: Option<Place>,
    pub(super) metadata: Option<Place>,
    pub(super) hatchery: Option<String>,
}

impl Gen3UsageConfig {
    fn base_url<'a>(&'a self, status: &'a Gen3StatusConfig) -> &'a str {
        self.base_url.as_deref().unwrap_or(&status.base_url).trim()
    }

    /// Whether the source runs: enabled, and a base URL or namespace known.
    pub fn active(&self, status: &Gen3StatusConfig) -> bool {
        self.enabled && (!self.base_url(status).is_empty() || !status.namespace.trim().is_empty() || self.hatchery_url.is_some())
    }

    /// The interval in force.
    pub fn effective_interval(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }

    /// The request time limit in force.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.effective_interval().mul_f64(0.8)))
    }

    /// Checks every value (`status`: gen3_status's settings, for defaults).
    /// Errors name the field.
    pub fn validate(&self, status: &Gen3StatusConfig) -> Result<(), ConfigError> {
        let interval = self.effective_interval();
        if interval < Duration::from_millis(100) {
            return Err(invalid(
                format!("{FIELD}.interval"),
                format!("{interval:?} is below the minimum of 100ms"),
            ));
        }
        if let Some(t) = self.timeout {
            if t < Duration::from_millis(10) {
                return Err(invalid(format!("{FIELD}.timeout"), format!("{t:?} is below the minimum of 10ms")));
            }
            if t >= interval {
                return Err(invalid(
                    format!("{FIELD}.timeout"),
                    format!("{t:?} must be shorter than the interval ({interval:?})"),
                ));
            }
        }
        for n in &self.peregrine_nodes {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(invalid(
                    format!("{FIELD}.peregrine_nodes"),
                    format!("{n:?} is not a node type name"),
                ));
            }
        }
        if self.discovery_page_size == 0 {
            return Err(invalid(format!("{FIELD}.discovery_page_size"), "must be at least 1"));
        }
        for d in &self.disable {
            if !ENDPOINTS.contains(&d.as_str()) {
                return Err(invalid(
                    format!("{FIELD}.disable"),
                    format!("unknown endpoint {d:?} (one of: {})", ENDPOINTS.join(", ")),
                ));
            }
        }
        if self.job.as_deref() == Some("") {
            return Err(invalid(format!("{FIELD}.job"), "must not be empty"));
        }
        self.plan(status).map(|_| ())
    }

    pub(super) fn plan(&self, status: &Gen3StatusConfig) -> Result<Plan, ConfigError> {
        let base = match self.base_url(status) {
            "" => None,
            b => {
                let field = if self.base_url.is_some() {
                    format!("{FIELD}.base_url")
                } else {
                    "sources.gen3_status.base_url".to_string()
                };
                Some(parse_http_url(&field, b)?.as_str().trim_end_matches('/').to_string())
            }
        };
        let ns = status.namespace.trim();
        let place = |service: &str| -> Option<Place> {
            if let Some(u) = status.services.get(service).and_then(|s| s.url.as_deref()) {
                return Some(Place {
                    root: u.trim().trim_end_matches('/').to_string(),
                    in_cluster: true,
                });
            }
            if !ns.is_empty()
                && let Some(b) = BUILTIN_SERVICES.iter().find(|b| b.name == service)
            {
                return Some(Place {
                    root: format!("http://{}.{ns}.svc.cluster.local", b.k8s_service),
                    in_cluster: true,
                });
            }
            base.clone().map(|root| Place { root, in_cluster: false })
        };
        let hatchery = match &self.hatchery_url {
            Some(u) => Some(
                parse_http_url(&format!("{FIELD}.hatchery_url"), u)?
                    .as_str()
                    .trim_end_matches('/')
                    .to_string(),
            ),
            None => place("hatchery").filter(|p| p.in_cluster).map(|p| p.root),
        };
        Ok(Plan {
            indexd: place("indexd"),
            peregrine: place("peregrine"),
            metadata: place("metadata"),
            hatchery,
        })
    }
}
