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

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::gen3_http::{client_builder, de_opt_duration, fetch, invalid, join, parse_http_url};
use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;
use crate::model::{Frame, MetricKind};
use csoc_common::tls::{CaError, read_ca_roots};

/// A Gen3 service the source knows how to probe (SERVICES.md, tables A and B).
#[derive(Debug, Clone, Copy)]
pub struct BuiltinService {
    /// The chart name, used as the `service` label.
    pub name: &'static str,
    /// Health path through revproxy; `None` when revproxy does not expose it
    /// to anonymous callers.
    pub public_health: Option<&'static str>,
    /// Version path through revproxy.
    pub public_version: Option<&'static str>,
    /// The Kubernetes Service name.
    pub k8s_service: &'static str,
    /// The Service's port.
    pub port: u16,
    /// Health path in-cluster.
    pub health: &'static str,
    /// Version path in-cluster.
    pub version: Option<&'static str>,
    /// Whether a 2xx HTML page is a healthy answer (the portal's).
    pub html_ok: bool,
}

const fn svc(
    name: &'static str,
    public_health: Option<&'static str>,
    public_version: Option<&'static str>,
    k8s_service: &'static str,
    health: &'static str,
    version: Option<&'static str>,
) -> BuiltinService {
    BuiltinService {
        name,
        public_health,
        public_version,
        k8s_service,
        port: 80,
        health,
        version,
        html_ok: false,
    }
}

/// The default service set: every Gen3 service of SERVICES.md with a health
/// endpoint (frontend-framework, argo-wrapper, gen3-analysis and
/// cohort-middleware can be added through `services`).
pub const BUILTIN_SERVICES: &[BuiltinService] = &[
    svc("revproxy", Some("/_status"), None, "revproxy-service", "/_status", None),
    BuiltinService {
        html_ok: true,
        ..svc("portal", Some("/"), None, "portal-service", "/", None)
    },
    svc(
        "fence",
        Some("/user/_status"),
        Some("/user/_version"),
        "fence-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "presigned-url-fence",
        None,
        None,
        "presigned-url-fence-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "indexd",
        Some("/index/_status"),
        Some("/index/_version"),
        "indexd-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "sheepdog",
        Some("/api/_status"),
        Some("/api/_version"),
        "sheepdog-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "peregrine",
        Some("/peregrine/_status"),
        Some("/peregrine/_version"),
        "peregrine-service",
        "/_status",
        Some("/_version"),
    ),
    svc("arborist", None, None, "arborist-service", "/health", None),
    svc(
        "metadata",
        Some("/mds/_status"),
        Some("/mds/version"),
        "metadata-service",
        "/_status",
        Some("/version"),
    ),
    svc(
        "guppy",
        Some("/guppy/_status"),
        Some("/guppy/_version"),
        "guppy-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "audit",
        Some("/audit/_status"),
        Some("/audit/_version"),
        "audit-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "requestor",
        Some("/requestor/_status"),
        Some("/requestor/_version"),
        "requestor-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "manifestservice",
        Some("/manifests/_status"),
        None,
        "manifestservice-service",
        "/_status",
        None,
    ),
    svc(
        "wts",
        Some("/wts/_status"),
        Some("/wts/_version"),
        "workspace-token-service",
        "/_status",
        Some("/_version"),
    ),
    // Public /lw-workspace/ and /job/ need arborist access: in-cluster only.
    svc("hatchery", None, None, "hatchery-service", "/_status", Some("/_version")),
    BuiltinService {
        port: 8877,
        ..svc("ambassador", None, None, "ambassador-admin", "/ambassador/v0/check_alive", None)
    },
    svc("sower", None, None, "sower-service", "/_status", Some("/_version")),
    svc("ssjdispatcher", None, None, "ssjdispatcher-service", "/_status", None),
    svc(
        "gen3-workflow",
        Some("/workflows/_status"),
        Some("/workflows/_version"),
        "gen3-workflow-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "gen3-user-data-library",
        Some("/library/_status"),
        Some("/library/_version"),
        "gen3-user-data-library-service",
        "/_status",
        Some("/_version"),
    ),
];

/// Largest part of an answer body that is read (health bodies are short;
/// guppy's lists its indices).
const BODY_LIMIT: usize = 64 * 1024;
/// Longest version or commit label value kept.
const MAX_LABEL_LEN: usize = 128;

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

const FIELD: &str = "sources.gen3_status";

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

/// Where the certificate of `base_url` is read when no probe brought it.
struct CertProbe {
    client: reqwest::Client,
    /// `base_url` + `/_status`.
    url: String,
    /// The `host` label.
    host: String,
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

/// What one health probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutcome {
    /// The `service` label.
    pub service: String,
    /// Healthy?
    pub up: bool,
    /// HTTP status, 0 without an answer.
    pub status: u16,
    /// Seconds the health request took.
    pub duration: f64,
    /// Completion time of the health request (ms).
    pub ts_ms: i64,
    /// Why it is down: error kind and detail.
    pub error: Option<(&'static str, String)>,
    /// Version and commit, when the version endpoint told; with its
    /// completion time.
    pub version: Option<(String, Option<String>, i64)>,
    /// Why the version is unknown although the service is up.
    pub version_error: Option<String>,
}

/// One round of probes.
#[derive(Debug, Default)]
pub struct Round {
    /// The frame to emit.
    pub frame: Frame,
    /// Every probe's outcome, in target order.
    pub outcomes: Vec<ProbeOutcome>,
    /// Why the certificate expiry is missing (https only).
    pub cert_error: Option<String>,
}

/// Whether a body is an HTML page (leading whitespace and BOM skipped).
fn looks_like_html(body: &[u8]) -> bool {
    let b = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    b.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'<')
}

fn label_value(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || s.chars().any(char::is_control) {
        return None;
    }
    Some(s.chars().take(MAX_LABEL_LEN).collect())
}

/// Reads version and commit from a version endpoint's body: a JSON object
/// with `version` (and `commit`), or a bare JSON string. `None` when the
/// body tells no version.
pub fn parse_version(body: &[u8]) -> Option<(String, Option<String>)> {
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::String(v) => Some((label_value(&v)?, None)),
        serde_json::Value::Object(m) => {
            let version = label_value(m.get("version")?.as_str()?)?;
            let commit = m.get("commit").and_then(|c| c.as_str()).and_then(label_value);
            Some((version, commit))
        }
        _ => None,
    }
}

/// The `notAfter` of a DER certificate, in seconds since the epoch.
pub fn cert_not_after(der: &[u8]) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot parse the certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

async fn probe(client: reqwest::Client, t: Target, timeout: Duration) -> (ProbeOutcome, Option<Vec<u8>>) {
    let version = async {
        match &t.version_url {
            Some(u) => Some(fetch(&client, u, timeout, BODY_LIMIT).await),
            None => None,
        }
    };
    let (h, v) = tokio::join!(fetch(&client, &t.health_url, timeout, BODY_LIMIT), version);
    let error = if let Some(e) = h.error {
        Some(e)
    } else if !(200..300).contains(&h.status) {
        Some(("http_status", format!("HTTP {} from {}", h.status, t.health_url)))
    } else if !t.html_ok && looks_like_html(&h.body) {
        Some((
            "unexpected_body",
            format!(
                "HTTP {} from {} is an HTML page, not the service's health answer (a catch-all route?)",
                h.status, t.health_url
            ),
        ))
    } else {
        None
    };
    let up = error.is_none();
    let (version, version_error) = match v {
        None => (None, None),
        Some(v) => match (&v.error, v.status) {
            (Some((_, e)), _) => (None, Some(e.clone())),
            (None, s) if !(200..300).contains(&s) => (None, Some(format!("HTTP {s}"))),
            (None, _) => match parse_version(&v.body) {
                Some((ver, commit)) => (Some((ver, commit, v.ts_ms)), None),
                None => (None, Some("no version in the answer".to_string())),
            },
        },
    };
    let cert = if t.via_base { h.cert } else { None };
    (
        ProbeOutcome {
            service: t.service,
            up,
            status: h.status,
            duration: h.duration,
            ts_ms: h.ts_ms,
            error,
            version,
            version_error,
        },
        cert,
    )
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

    /// Probes every target once, concurrently, each request within
    /// `timeout`, and builds the frame.
    pub async fn collect(&self, source: &str, timeout: Duration) -> Round {
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let client = self.client.clone();
            let t = t.clone();
            set.spawn(async move { (i, probe(client, t, timeout).await) });
        }
        let mut results: Vec<Option<(ProbeOutcome, Option<Vec<u8>>)>> = vec![None; self.targets.len()];
        while let Some(r) = set.join_next().await {
            match r {
                Ok((i, res)) => results[i] = Some(res),
                Err(e) => tracing::error!(source, error = %e, "gen3_status probe task failed"),
            }
        }
        let mut round = Round {
            frame: Frame::new(source),
            ..Default::default()
        };
        let f = &mut round.frame;
        let job = self.job.as_str();
        f.meta(
            "gen3_service_up",
            MetricKind::Gauge,
            "1 if the Gen3 service's health endpoint answered as a healthy service does (2xx, not an HTML page), else 0.",
            "",
        );
        f.meta(
            "gen3_probe_duration_seconds",
            MetricKind::Gauge,
            "Duration of the health probe of the Gen3 service.",
            "seconds",
        );
        f.meta(
            "gen3_probe_http_status_code",
            MetricKind::Gauge,
            "HTTP status of the health probe of the Gen3 service; 0 when there was no HTTP answer.",
            "",
        );
        f.meta(
            "gen3_service_info",
            MetricKind::Gauge,
            "Version and commit the Gen3 service reports at its version endpoint.",
            "",
        );
        let mut cert_der = None;
        for (res, t) in results.into_iter().zip(&self.targets) {
            let (o, cert) = match res {
                Some(r) => r,
                None => (
                    ProbeOutcome {
                        service: t.service.clone(),
                        up: false,
                        status: 0,
                        duration: timeout.as_secs_f64(),
                        ts_ms: csoc_common::time::now_ms(),
                        error: Some(("request", "probe task failed".into())),
                        version: None,
                        version_error: None,
                    },
                    None,
                ),
            };
            if cert_der.is_none() {
                cert_der = cert;
            }
            let l = [("job", job), ("service", o.service.as_str())];
            f.push("gen3_service_up", &l, o.ts_ms, if o.up { 1.0 } else { 0.0 });
            f.push("gen3_probe_duration_seconds", &l, o.ts_ms, o.duration);
            f.push("gen3_probe_http_status_code", &l, o.ts_ms, f64::from(o.status));
            if let Some((v, c, ts)) = &o.version {
                let mut il = vec![("job", job), ("service", o.service.as_str()), ("version", v.as_str())];
                if let Some(c) = c {
                    il.push(("commit", c.as_str()));
                }
                f.push("gen3_service_info", &il, *ts, 1.0);
            }
            round.outcomes.push(o);
        }
        if let Some(cp) = &self.cert {
            let der = match cert_der {
                Some(d) => Ok((d, csoc_common::time::now_ms())),
                None => {
                    let r = fetch(&cp.client, &cp.url, timeout, BODY_LIMIT).await;
                    match (r.cert, r.error) {
                        (Some(d), _) => Ok((d, r.ts_ms)),
                        (None, Some((_, e))) => Err(e),
                        (None, None) => Err("the connection presented no certificate".to_string()),
                    }
                }
            };
            match der.and_then(|(d, ts)| cert_not_after(&d).map(|t| (t, ts))) {
                Ok((not_after, ts)) => {
                    f.meta(
                        "gen3_tls_cert_expiry_timestamp_seconds",
                        MetricKind::Gauge,
                        "Expiry (notAfter) of the TLS certificate the commons' base URL presents.",
                        "seconds",
                    );
                    f.push(
                        "gen3_tls_cert_expiry_timestamp_seconds",
                        &[("job", job), ("host", cp.host.as_str())],
                        ts,
                        not_after as f64,
                    );
                }
                Err(e) => round.cert_error = Some(e),
            }
        }
        round
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Arc;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use std::time::Instant;

    use super::*;

    /// Time limit of the tests' probes.
    const T: Duration = Duration::from_secs(5);

    fn fixtures_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/gen3/fixtures/status")
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = fixtures_dir().join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("reading fixture {}: {e}", p.display()))
    }

    /// The fixtures' index.json entries.
    fn index() -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&fixture("index.json")).expect("index.json is JSON");
        v.as_array().cloned().expect("index.json is an array")
    }

    #[derive(Clone)]
    struct Route {
        status: u16,
        body: Vec<u8>,
        delay: Duration,
        location: Option<&'static str>,
    }

    fn route(status: u16, body: Vec<u8>) -> Route {
        Route {
            status,
            body,
            delay: Duration::ZERO,
            location: None,
        }
    }

    /// The public (through-revproxy) answers of a healthy commons, from
    /// index.json: every `healthy` entry with a public path, plus the portal.
    fn healthy_commons() -> HashMap<String, Route> {
        let mut routes = HashMap::new();
        for e in index() {
            let (Some(variant), Some(public), Some(status), Some(file)) = (
                e["variant"].as_str(),
                e["public_path"].as_str(),
                e["status"].as_u64(),
                e["body_file"].as_str(),
            ) else {
                continue;
            };
            let Some(path) = public.split_whitespace().next().filter(|p| p.starts_with('/')) else {
                continue;
            };
            if variant == "healthy" {
                routes.insert(path.to_string(), route(status as u16, fixture(file)));
            }
        }
        routes.insert("/".into(), route(200, b"<!doctype html><html><body>portal</body></html>".to_vec()));
        routes
    }

    async fn answer(State(routes): State<Arc<HashMap<String, Route>>>, uri: Uri) -> Response {
        let Some(r) = routes.get(uri.path()).cloned() else {
            return (StatusCode::NOT_FOUND, "not found").into_response();
        };
        tokio::time::sleep(r.delay).await;
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match r.location {
            Some(l) => (status, [(header::LOCATION, l)], r.body).into_response(),
            None => (status, r.body).into_response(),
        }
    }

    /// Serves `routes` on a loopback port; returns the base URL.
    async fn serve(routes: HashMap<String, Route>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(answer).with_state(Arc::new(routes));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    fn config(base: &str) -> Gen3StatusConfig {
        Gen3StatusConfig {
            enabled: true,
            base_url: base.to_string(),
            ..Default::default()
        }
    }

    fn outcome<'a>(r: &'a Round, service: &str) -> &'a ProbeOutcome {
        r.outcomes
            .iter()
            .find(|o| o.service == service)
            .unwrap_or_else(|| panic!("no outcome for {service}"))
    }

    fn sample(f: &Frame, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        f.samples
            .iter()
            .find(|s| {
                s.labels.iter().any(|(k, v)| k == "__name__" && v == name)
                    && labels.iter().all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
    }

    fn info_labels(f: &Frame, service: &str) -> Option<Vec<(String, String)>> {
        f.samples
            .iter()
            .find(|s| {
                s.labels.iter().any(|(k, v)| k == "__name__" && v == "gen3_service_info")
                    && s.labels.iter().any(|(k, v)| k == "service" && v == service)
            })
            .map(|s| s.labels.clone())
    }

    const PUBLIC: [&str; 15] = [
        "revproxy",
        "portal",
        "fence",
        "indexd",
        "sheepdog",
        "peregrine",
        "metadata",
        "guppy",
        "audit",
        "requestor",
        "manifestservice",
        "wts",
        "gen3-workflow",
        "gen3-user-data-library",
        "custom",
    ];

    #[tokio::test]
    async fn healthy_commons_every_public_service_is_up_with_its_version() {
        let mut routes = healthy_commons();
        routes.insert("/custom/health".into(), route(200, b"ok".to_vec()));
        let base = serve(routes).await;
        let mut cfg = config(&base);
        cfg.services.insert(
            "custom".into(),
            ServiceConfig {
                health_path: Some("/custom/health".into()),
                ..Default::default()
            },
        );
        let src = Gen3StatusSource::new(&cfg).expect("valid");
        let names: Vec<&str> = src.targets().iter().map(|t| t.service.as_str()).collect();
        assert_eq!(names, PUBLIC, "services probed through revproxy by default");
        assert_eq!(
            src.skipped,
            [
                "presigned-url-fence",
                "arborist",
                "hatchery",
                "ambassador",
                "sower",
                "ssjdispatcher"
            ]
        );
        let before = csoc_common::time::now_ms();
        let r = src.collect("gen3_status", T).await;
        for o in &r.outcomes {
            assert!(o.up, "{} is down: {:?}", o.service, o.error);
            assert!(o.ts_ms >= before && o.duration < 5.0);
        }
        let f = &r.frame;
        assert_eq!(sample(f, "gen3_service_up", &[("service", "fence"), ("job", "gen3")]), Some(1.0));
        assert_eq!(sample(f, "gen3_probe_http_status_code", &[("service", "fence")]), Some(200.0));
        assert_eq!(
            sample(f, "gen3_probe_http_status_code", &[("service", "gen3-user-data-library")]),
            Some(201.0),
            "201 is healthy"
        );
        assert!(sample(f, "gen3_probe_duration_seconds", &[("service", "indexd")]).is_some_and(|d| d > 0.0));
        // Versions: {"commit","version"}, {"version"}, a bare string, sheepdog's dictionary.
        let l = |pairs: &[(&str, &str)]| -> Option<Vec<(String, String)>> {
            let mut v: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            v.push(("__name__".into(), "gen3_service_info".into()));
            v.push(("job".into(), "gen3".into()));
            v.sort();
            Some(v)
        };
        assert_eq!(
            info_labels(f, "fence"),
            l(&[
                ("service", "fence"),
                ("version", "2026.08"),
                ("commit", "87b2219b0055fcbf278ca42d9751a0c2ab2442bc")
            ])
        );
        assert_eq!(info_labels(f, "metadata"), l(&[("service", "metadata"), ("version", "4.3.0")]));
        assert_eq!(info_labels(f, "audit"), l(&[("service", "audit"), ("version", "2.2.1")]));
        assert_eq!(
            info_labels(f, "sheepdog"),
            l(&[
                ("service", "sheepdog"),
                ("version", "2026.05"),
                ("commit", "727de14d025113d2225bffeb12740060ca4fda0b")
            ])
        );
        assert_eq!(info_labels(f, "manifestservice"), None, "no version endpoint");
        assert_eq!(info_labels(f, "revproxy"), None);
        assert_eq!(
            sample(f, "gen3_tls_cert_expiry_timestamp_seconds", &[]),
            None,
            "no certificate over http"
        );
        // Every sample has metadata.
        for s in &f.samples {
            assert!(
                f.metadata.iter().any(|m| m.name == s.labels[0].1),
                "no metadata for {}",
                s.labels[0].1
            );
        }
    }

    #[tokio::test]
    async fn unhealthy_services_500_and_revproxy_502() {
        let mut routes = healthy_commons();
        // In-cluster style: the service's own error page; through revproxy: its JSON, status kept.
        routes.insert("/user/_status".into(), route(500, fixture("fence._status.unhealthy.html")));
        routes.insert("/index/_status".into(), route(500, fixture("revproxy.5xx-body.json")));
        routes.insert("/guppy/_status".into(), route(502, fixture("revproxy.5xx-body.json")));
        routes.insert("/guppy/_version".into(), route(502, fixture("revproxy.5xx-body.json")));
        // A catch-all route answering the portal's page for a service path.
        routes.insert("/requestor/_status".into(), route(200, b"\n<!DOCTYPE html><html></html>".to_vec()));
        // hatchery's public path sends anonymous callers away.
        let mut redirect = route(302, Vec::new());
        redirect.location = Some("/no-workspace-access");
        routes.insert("/wts/_status".into(), redirect);
        let base = serve(routes).await;
        let r = Gen3StatusSource::new(&config(&base))
            .expect("valid")
            .collect("gen3_status", T)
            .await;
        for (svc, status, kind) in [
            ("fence", 500, "http_status"),
            ("indexd", 500, "http_status"),
            ("guppy", 502, "http_status"),
            ("requestor", 200, "unexpected_body"),
            ("wts", 302, "http_status"),
        ] {
            let o = outcome(&r, svc);
            assert!(!o.up, "{svc}");
            assert_eq!(o.status, status, "{svc}");
            assert_eq!(o.error.as_ref().map(|e| e.0), Some(kind), "{svc}: {:?}", o.error);
            assert_eq!(sample(&r.frame, "gen3_service_up", &[("service", svc)]), Some(0.0));
            assert_eq!(
                sample(&r.frame, "gen3_probe_http_status_code", &[("service", svc)]),
                Some(f64::from(status))
            );
        }
        // A 500 health with a working version endpoint still reports the version.
        assert!(info_labels(&r.frame, "fence").is_some());
        assert!(info_labels(&r.frame, "guppy").is_none());
        assert!(outcome(&r, "portal").up, "the portal's HTML is its health");
        assert!(outcome(&r, "audit").up);
    }

    #[tokio::test]
    async fn refused_connection_is_down_with_status_0() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let base = serve(healthy_commons()).await;
        let mut cfg = config(&base);
        cfg.services.insert(
            "fence".into(),
            ServiceConfig {
                url: Some(format!("http://{closed}")),
                ..Default::default()
            },
        );
        let src = Gen3StatusSource::new(&cfg).expect("valid");
        let fence = src.targets().iter().find(|t| t.service == "fence").expect("fence");
        assert_eq!(fence.health_url, format!("http://{closed}/_status"), "own url: in-cluster path");
        let r = src.collect("gen3_status", T).await;
        let o = outcome(&r, "fence");
        assert!(!o.up);
        assert_eq!(o.status, 0);
        assert_eq!(o.error.as_ref().map(|e| e.0), Some("connect"), "{:?}", o.error);
        assert_eq!(sample(&r.frame, "gen3_probe_http_status_code", &[("service", "fence")]), Some(0.0));
        assert!(info_labels(&r.frame, "fence").is_none(), "version unknown");
        assert!(outcome(&r, "indexd").up, "one service down does not affect the others");
    }

    #[tokio::test]
    async fn slow_service_times_out_and_others_are_not_held_up() {
        let mut routes = healthy_commons();
        if let Some(r) = routes.get_mut("/index/_status") {
            r.delay = Duration::from_secs(5);
        }
        let base = serve(routes).await;
        let src = Gen3StatusSource::new(&config(&base)).expect("valid");
        let start = Instant::now();
        let r = src.collect("gen3_status", Duration::from_millis(300)).await;
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "a round is bounded by the timeout, not the slowest service: {took:?}"
        );
        let o = outcome(&r, "indexd");
        assert!(!o.up);
        assert_eq!(o.status, 0);
        assert_eq!(o.error.as_ref().map(|e| e.0), Some("timeout"), "{:?}", o.error);
        assert!(o.duration >= 0.25 && o.duration < 2.0, "{}", o.duration);
        assert!(outcome(&r, "fence").up);
    }

    #[test]
    fn versions_of_every_fixture() {
        let mut n = 0;
        for e in index() {
            let path = e["path"].as_str().unwrap_or_default();
            if !(path.ends_with("_version") || path == "/version") {
                continue;
            }
            let file = e["body_file"].as_str().expect("body_file");
            let (v, _) = parse_version(&fixture(file)).unwrap_or_else(|| panic!("no version in {file}"));
            assert!(!v.is_empty());
            n += 1;
        }
        assert_eq!(n, 12, "version fixtures");
        let p = |s: &str| parse_version(s.as_bytes());
        assert_eq!(p("\"4.3.0\"\n"), Some(("4.3.0".into(), None)));
        assert_eq!(p(r#"{"version":"1.7.1"}"#), Some(("1.7.1".into(), None)));
        assert_eq!(
            p(r#"{"commit":"82da7d9","dictionary":{"commit":"","version":"3.2.6"},"version":"2026.04"}"#),
            Some(("2026.04".into(), Some("82da7d9".into())))
        );
        assert_eq!(p(r#"{"version":"2026.08","commit":""}"#), Some(("2026.08".into(), None)));
        for bad in [
            "",
            "Healthy",
            "{}",
            "[]",
            "3",
            r#"{"version":3}"#,
            r#"{"version":"  "}"#,
            r#""a\nb""#,
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        let long = format!("\"{}\"", "x".repeat(500));
        assert_eq!(p(&long).map(|(v, _)| v.len()), Some(MAX_LABEL_LEN));
    }

    #[test]
    fn html_detection() {
        assert!(looks_like_html(b"<!doctype html>"));
        assert!(looks_like_html(b"\xEF\xBB\xBF  \n<html>"));
        assert!(!looks_like_html(b"Healthy"));
        assert!(!looks_like_html(b"{\"status\":\"OK\"}"));
        assert!(!looks_like_html(b""));
    }

    #[test]
    fn config_targets_and_errors_name_the_field() {
        let err = |c: &Gen3StatusConfig| c.validate(Duration::from_secs(15)).expect_err("invalid").to_string();
        let e = err(&Gen3StatusConfig {
            enabled: true,
            ..Default::default()
        });
        assert!(e.contains("sources.gen3_status.base_url") && e.contains("required"), "{e}");
        let e = err(&config("data.example.org"));
        assert!(e.contains("sources.gen3_status.base_url"), "{e}");
        let e = err(&config("ftp://data.example.org"));
        assert!(e.contains("base_url") && e.contains("http"), "{e}");
        let mut c = config("https://data.example.org");
        c.timeout = Some(Duration::from_secs(15));
        let e = err(&c);
        assert!(
            e.contains("sources.gen3_status.timeout") && e.contains("shorter than the interval"),
            "{e}"
        );
        c.interval = Some(Duration::from_secs(30));
        c.validate(Duration::from_secs(15)).expect("own interval longer than the timeout");
        // Without a timeout, the default follows a short interval.
        assert_eq!(effective_timeout(None, Duration::from_secs(15)), DEFAULT_TIMEOUT);
        assert_eq!(effective_timeout(None, Duration::from_secs(2)), Duration::from_millis(1600));
        assert_eq!(
            effective_timeout(Some(Duration::from_secs(1)), Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        config("https://data.example.org")
            .validate(Duration::from_secs(2))
            .expect("default timeout, short interval");
        let mut c = config("https://data.example.org");
        c.services.insert("mine".into(), ServiceConfig::default());
        let e = err(&c);
        assert!(e.contains("sources.gen3_status.services.mine.health_path"), "{e}");
        c.services.insert(
            "mine".into(),
            ServiceConfig {
                health_path: Some("health".into()),
                ..Default::default()
            },
        );
        let e = err(&c);
        assert!(e.contains("services.mine.health_path") && e.contains("starting with /"), "{e}");
        let mut c = config("https://data.example.org");
        c.namespace = "Gen3_Prod".into();
        assert!(err(&c).contains("sources.gen3_status.namespace"));

        // In-cluster: every built-in service, in-cluster paths and ports.
        let mut c = config("https://data.example.org/");
        c.namespace = "gen3".into();
        c.services.insert(
            "guppy".into(),
            ServiceConfig {
                enabled: false,
                ..Default::default()
            },
        );
        c.services.insert(
            "metadata".into(),
            ServiceConfig {
                version_path: Some(String::new()),
                ..Default::default()
            },
        );
        let (t, skipped) = c.targets().expect("valid");
        assert!(skipped.is_empty());
        assert_eq!(t.len(), BUILTIN_SERVICES.len() - 1);
        assert!(!t.iter().any(|t| t.service == "guppy"), "disabled");
        let get = |n: &str| t.iter().find(|t| t.service == n).cloned().expect(n);
        assert_eq!(get("arborist").health_url, "http://arborist-service.gen3.svc.cluster.local/health");
        assert_eq!(
            get("ambassador").health_url,
            "http://ambassador-admin.gen3.svc.cluster.local:8877/ambassador/v0/check_alive"
        );
        assert_eq!(
            get("wts").version_url.as_deref(),
            Some("http://workspace-token-service.gen3.svc.cluster.local/_version")
        );
        assert_eq!(get("metadata").version_url, None, "version_path \"\" turns it off");
        assert!(!get("fence").via_base);

        // Only the services named, with built-in paths through revproxy.
        let mut c = config("https://data.example.org");
        c.default_services = false;
        c.services.insert("fence".into(), ServiceConfig::default());
        c.services.insert(
            "orthanc".into(),
            ServiceConfig {
                health_path: Some("/orthanc/system".into()),
                ..Default::default()
            },
        );
        let (t, _) = c.targets().expect("valid");
        assert_eq!(
            t,
            vec![
                Target {
                    service: "fence".into(),
                    health_url: "https://data.example.org/user/_status".into(),
                    version_url: Some("https://data.example.org/user/_version".into()),
                    html_ok: false,
                    via_base: true,
                },
                Target {
                    service: "orthanc".into(),
                    health_url: "https://data.example.org/orthanc/system".into(),
                    version_url: None,
                    html_ok: false,
                    via_base: true,
                }
            ]
        );
        let mut c = config("https://data.example.org");
        c.default_services = false;
        c.services.insert("arborist".into(), ServiceConfig::default());
        let e = err(&c);
        assert!(e.contains("sources.gen3_status.services") && e.contains("arborist"), "{e}");
    }

    #[test]
    fn yaml_example_and_flag() {
        let y = "sources:\n  gen3_status:\n    enabled: true\n    base_url: https://data.example.org\n    interval: 30s\n    timeout: 3s\n    services:\n      guppy: {enabled: false}\n      fence: {url: 'http://fence-service.gen3'}\n";
        let c = crate::config::AgentConfig::from_yaml(y, Path::new("a.yml")).expect("parse");
        assert_eq!(c.sources.gen3_status.interval, Some(Duration::from_secs(30)));
        assert_eq!(c.sources.gen3_status.timeout, Some(Duration::from_secs(3)));
        c.validate().expect("valid");
        let e = crate::config::AgentConfig::from_yaml("sources:\n  gen3_status:\n    base_ur: x\n", Path::new("a.yml"))
            .expect_err("unknown field");
        assert!(e.to_string().contains("base_ur"), "{e}");
        let mut c = crate::config::AgentConfig::default();
        c.sources.gen3_status.enabled = true;
        c.sources.gen3_status.timeout = Some(Duration::from_secs(20));
        c.sources.gen3_status.base_url = "https://x.org".into();
        assert!(
            c.validate()
                .expect_err("timeout")
                .to_string()
                .contains("sources.gen3_status.timeout")
        );
        // The shipped example parses and validates.
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.yml");
        let c = crate::config::AgentConfig::from_file(&example).expect("example parses");
        c.validate().expect("example is valid");
        use clap::Parser;
        let args = crate::cli::Args::try_parse_from(["csoc-agent", "--gen3-url", "https://data.example.org"]).expect("flags");
        let c = args.resolve().expect("resolve");
        assert!(c.sources.gen3_status.enabled);
        assert_eq!(c.sources.gen3_status.base_url, "https://data.example.org");
        c.validate().expect("valid");
    }

    #[tokio::test]
    async fn source_compliance_against_the_fixture_commons() {
        let base = serve(healthy_commons()).await;
        let src = Gen3StatusSource::new(&config(&base)).expect("valid");
        let frame = crate::sources::test_util::run_and_assert_source_compliance(Box::new(src), "gen3_status").await;
        assert_eq!(frame.source, "gen3_status");
        assert_eq!(sample(&frame, "gen3_service_up", &[("service", "peregrine")]), Some(1.0));
    }

    /// A CA and a leaf for 127.0.0.1 valid until `not_after`: (CA PEM, leaf
    /// DER, leaf key DER).
    fn certs(not_after: (i32, u8, u8)) -> (String, Vec<u8>, Vec<u8>, i64) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "csoc test CA");
        let ca = ca.self_signed(&ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        leaf.not_before = rcgen::date_time_ymd(2019, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let expiry = leaf.not_after.unix_timestamp();
        let leaf = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
        (ca.pem(), leaf.der().to_vec(), key.serialize_der(), expiry)
    }

    /// A TLS server answering every request `200 Healthy`.
    async fn serve_tls(cert: Vec<u8>, key: Vec<u8>) -> String {
        use tokio_rustls::rustls;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nHealthy")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        format!("https://{addr}")
    }

    fn tls_config(base: &str) -> Gen3StatusConfig {
        let mut c = config(base);
        c.default_services = false;
        c.services.insert("revproxy".into(), ServiceConfig::default());
        c
    }

    #[tokio::test]
    async fn untrusted_or_expired_certificate_is_down_but_its_expiry_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (not_after, trusted, want_up) in [
            ((2099, 1, 1), false, false),
            ((2099, 1, 1), true, true),
            ((2021, 1, 1), true, false),
        ] {
            let (ca_pem, leaf, key, expiry) = certs(not_after);
            let base = serve_tls(leaf, key).await;
            let mut cfg = tls_config(&base);
            if trusted {
                let p = dir.path().join("ca.pem");
                std::fs::write(&p, &ca_pem).expect("write CA");
                cfg.ca_file = Some(p);
            }
            let r = Gen3StatusSource::new(&cfg).expect("valid").collect("gen3_status", T).await;
            let o = outcome(&r, "revproxy");
            let case = format!("not_after {not_after:?}, trusted {trusted}");
            assert_eq!(o.up, want_up, "{case}: {:?}", o.error);
            if want_up {
                assert_eq!(o.status, 200, "{case}");
            } else {
                assert_eq!(o.status, 0, "{case}");
                assert_eq!(o.error.as_ref().map(|e| e.0), Some("tls"), "{case}: {:?}", o.error);
            }
            assert_eq!(r.cert_error, None, "{case}");
            assert_eq!(
                sample(
                    &r.frame,
                    "gen3_tls_cert_expiry_timestamp_seconds",
                    &[("host", "127.0.0.1"), ("job", "gen3")]
                ),
                Some(expiry as f64),
                "{case}"
            );
        }
    }

    #[test]
    fn bad_ca_file_is_a_config_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = tls_config("https://data.example.org");
        c.ca_file = Some(dir.path().join("missing.pem"));
        let e = Gen3StatusSource::new(&c).err().expect("missing file").to_string();
        assert!(e.contains("sources.gen3_status.ca_file") && e.contains("missing.pem"), "{e}");
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not a certificate\n").expect("write");
        c.ca_file = Some(p);
        let e = Gen3StatusSource::new(&c).err().expect("no PEM").to_string();
        assert!(e.contains("sources.gen3_status.ca_file"), "{e}");
    }
}
