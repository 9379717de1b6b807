//! `sources.gen3_status`: the settings, their validation, and the probe
//! targets they resolve to (where each service is probed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::services::BUILTIN_SERVICES;
use crate::config::ConfigError;
use crate::sources::gen3_http::{de_opt_duration, invalid, join, parse_http_url};

/// Configuration of the `gen3_status` source (`sources.gen3_status`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gen3StatusConfig {
    /// Probe at all (default false; `--gen3-url` turns it on).
    pub enabled: bool,
    /// The commons' public URL, `https://data.example.org`: services are
    /// probed through revproxy there, and its certificate's expiry is
    /// reported. Needed unless `namespace` is set.
    pub base_url: String,
    /// The commons' Kubernetes namespace: when set, built-in services are
    /// probed in-cluster (`http://<Service>.<namespace>.svc.cluster.local`).
    pub namespace: String,
    /// Probe interval (default: the agent's `interval`).
    #[serde(deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
    /// Time limit of one request: connection, TLS and answer (default 5s,
    /// or 80% of the interval when that is shorter); must be below the
    /// interval.
    #[serde(deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// User-Agent of the probes (default `csoc-agent/<version>`).
    pub user_agent: String,
    /// PEM file of extra CA certificates to trust (an internal CA).
    pub ca_file: Option<PathBuf>,
    /// Start from the built-in service list (default true). When false,
    /// only the services named in `services` are probed (a built-in name
    /// with `{}` gets the built-in paths).
    pub default_services: bool,
    /// Per-service settings, by `service` label: override a built-in
    /// service, remove it (`enabled: false`) or add one.
    pub services: BTreeMap<String, ServiceConfig>,
    /// Value of the `job` label (default `gen3`).
    pub job: String,
}

impl Default for Gen3StatusConfig {
    fn default() -> Self {
        Gen3StatusConfig {
            enabled: false,
            base_url: String::new(),
            namespace: String::new(),
            interval: None,
            timeout: None,
            user_agent: format!("csoc-agent/{}", env!("CARGO_PKG_VERSION")),
            ca_file: None,
            default_services: true,
            services: BTreeMap::new(),
            job: "gen3".into(),
        }
    }
}

/// Settings of one service (`sources.gen3_status.services.<name>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Probe this service (default true; false removes a built-in one).
    pub enabled: bool,
    /// The service's own base URL (`http://fence-service.gen3.svc.cluster.local`);
    /// paths are then the in-cluster ones. Default: in-cluster when
    /// `namespace` is set, else `base_url`.
    pub url: Option<String>,
    /// Health path, e.g. `/user/_status` (required for a service that is not
    /// built in).
    pub health_path: Option<String>,
    /// Version path; `""` for none.
    pub version_path: Option<String>,
    /// Whether a 2xx HTML page counts as healthy (default false, true for the
    /// portal).
    pub html_ok: Option<bool>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            enabled: true,
            url: None,
            health_path: None,
            version_path: None,
            html_ok: None,
        }
    }
}

/// One resolved probe target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The `service` label.
    pub service: String,
    /// Full URL of the health endpoint.
    pub health_url: String,
    /// Full URL of the version endpoint, if any.
    pub version_url: Option<String>,
    /// Whether a 2xx HTML page is healthy.
    pub html_ok: bool,
    /// Whether the target is reached through `base_url` (its connection
    /// carries the certificate to report).
    pub via_base: bool,
}

pub(super) const FIELD: &str = "sources.gen3_status";

fn check_path(field: &str, p: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            format!("{p:?} must be a path starting with / (example: /user/_status)"),
        ));
    }
    Ok(())
}

impl Gen3StatusConfig {
    /// Checks every value (`agent_interval`: the agent's interval, used when
    /// the source has none of its own). Errors name the field.
    pub fn validate(&self, agent_interval: Duration) -> Result<(), ConfigError> {
        let interval = self.interval.unwrap_or(agent_interval);
        if let Some(i) = self.interval
            && i < Duration::from_millis(100)
        {
            return Err(invalid(format!("{FIELD}.interval"), format!("{i:?} is below the minimum of 100ms")));
        }
        if let Some(t) = self.timeout {
            if t < Duration::from_millis(10) {
                return Err(invalid(format!("{FIELD}.timeout"), format!("{t:?} is below the minimum of 10ms")));
            }
            if t >= interval {
                return Err(invalid(
                    format!("{FIELD}.timeout"),
                    format!("{t:?} must be shorter than the interval ({interval:?}), or probes of one round overlap the next"),
                ));
            }
        }
        if self.job.is_empty() {
            return Err(invalid(format!("{FIELD}.job"), "must not be empty"));
        }
        if self.user_agent.is_empty() || reqwest::header::HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(invalid(
                format!("{FIELD}.user_agent"),
                format!("{:?} is not a valid header value", self.user_agent),
            ));
        }
        self.targets().map(|_| ())
    }

    /// The services to probe, and the built-in ones skipped because nothing
    /// says where they can be reached.
    pub fn targets(&self) -> Result<(Vec<Target>, Vec<&'static str>), ConfigError> {
        let base = if self.base_url.trim().is_empty() {
            None
        } else {
            Some(parse_http_url(&format!("{FIELD}.base_url"), &self.base_url)?)
        };
        let ns = self.namespace.trim();
        let valid_ns = ns.len() <= 63 && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_ns {
            return Err(invalid(
                format!("{FIELD}.namespace"),
                format!("{ns:?} is not a Kubernetes namespace name (lower-case letters, digits, -)"),
            ));
        }
        if base.is_none() && ns.is_empty() && self.services.values().all(|s| s.url.is_none()) {
            return Err(invalid(
                format!("{FIELD}.base_url"),
                "required: the commons' URL (or set namespace, or a url per service)",
            ));
        }
        let base_str = base.as_ref().map(|u| u.as_str().trim_end_matches('/').to_string());
        let mut targets = Vec::new();
        let mut skipped = Vec::new();
        for (name, sc) in &self.services {
            let f = format!("{FIELD}.services.{name}");
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return Err(invalid(f, "a service name is letters, digits, '-', '_' or '.'"));
            }
            if let Some(u) = &sc.url {
                parse_http_url(&format!("{f}.url"), u)?;
            }
            if let Some(p) = &sc.health_path {
                check_path(&format!("{f}.health_path"), p)?;
            }
            if let Some(p) = sc.version_path.as_deref().filter(|p| !p.is_empty()) {
                check_path(&format!("{f}.version_path"), p)?;
            }
        }
        for b in BUILTIN_SERVICES {
            let over = self.services.get(b.name);
            if !self.default_services && over.is_none() {
                continue;
            }
            let over = over.cloned().unwrap_or_default();
            if !over.enabled {
                continue;
            }
            let direct = over.url.as_deref().map(|u| u.trim().to_string()).or_else(|| {
                (!ns.is_empty()).then(|| match b.port {
                    80 => format!("http://{}.{ns}.svc.cluster.local", b.k8s_service),
                    p => format!("http://{}.{ns}.svc.cluster.local:{p}", b.k8s_service),
                })
            });
            let (root, health, version, via_base) = match (direct, &base_str) {
                (Some(u), _) => (u, Some(b.health), b.version, false),
                (None, Some(bu)) => (bu.clone(), b.public_health, b.public_version, true),
                (None, None) => {
                    skipped.push(b.name);
                    continue;
                }
            };
            let Some(health) = over.health_path.as_deref().or(health) else {
                skipped.push(b.name);
                continue;
            };
            let version = match over.version_path.as_deref() {
                Some("") => None,
                Some(p) => Some(p),
                None => version,
            };
            targets.push(Target {
                service: b.name.to_string(),
                health_url: join(&root, health),
                version_url: version.map(|v| join(&root, v)),
                html_ok: over.html_ok.unwrap_or(b.html_ok),
                via_base,
            });
        }
        for (name, sc) in &self.services {
            if !sc.enabled || BUILTIN_SERVICES.iter().any(|b| b.name == name) {
                continue;
            }
            let f = format!("{FIELD}.services.{name}");
            let Some(health) = &sc.health_path else {
                return Err(invalid(
                    format!("{f}.health_path"),
                    format!(
                        "required for a service that is not built in (built in: {})",
                        BUILTIN_SERVICES.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            let (root, via_base) = match (&sc.url, &base_str) {
                (Some(u), _) => (u.trim().to_string(), false),
                (None, Some(b)) => (b.clone(), true),
                (None, None) => return Err(invalid(format!("{f}.url"), "required when base_url is not set")),
            };
            targets.push(Target {
                service: name.clone(),
                health_url: join(&root, health),
                version_url: sc.version_path.as_deref().filter(|p| !p.is_empty()).map(|v| join(&root, v)),
                html_ok: sc.html_ok.unwrap_or(false),
                via_base,
            });
        }
        if targets.is_empty() {
            return Err(invalid(
                format!("{FIELD}.services"),
                format!(
                    "no service to probe (skipped for want of a reachable URL: {}; set namespace or a url per service)",
                    skipped.join(", ")
                ),
            ));
        }
        Ok((targets, skipped))
    }
}

/// Default time limit of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The time limit of one request: `configured`, else 5s or 80% of the
/// interval when that is shorter.
pub fn effective_timeout(configured: Option<Duration>, interval: Duration) -> Duration {
    configured.unwrap_or_else(|| DEFAULT_TIMEOUT.min(interval.mul_f64(0.8)))
}
