//! `sources.kubernetes`: the settings, their defaults and their validation.

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::sources::gen3_http::de_opt_duration;
use csoc_common::config::invalid;
use csoc_common::duration::de_duration;

pub(super) const FIELD: &str = "sources.kubernetes";

/// What the source watches, by the names `disable` takes: the Kubernetes
/// resource names (`metrics` is the metrics API's PodMetrics).
pub const KINDS: &[&str] = &[
    "pods",
    "deployments",
    "statefulsets",
    "daemonsets",
    "replicasets",
    "jobs",
    "cronjobs",
    "persistentvolumeclaims",
    "events",
    "nodes",
    "metrics",
    "applications",
];

/// Event types Kubernetes knows.
pub const EVENT_TYPES: &[&str] = &["Normal", "Warning"];

/// Configuration of the `kubernetes` source (`sources.kubernetes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Watch the namespaces at all (default false; `--kubernetes-namespace
    /// NS` turns it on and adds NS).
    pub enabled: bool,
    /// The commons' namespaces (those gen3-helm deployed), each watched for
    /// pods, deployments, statefulsets, daemonsets, replicasets, jobs,
    /// cronjobs, persistentvolumeclaims and events. Nodes are cluster-wide.
    pub namespaces: Vec<String>,
    /// Value of the `job` label (default `kubernetes`). kube-prometheus's
    /// alert rules select `job="kube-state-metrics"`: set that to use them
    /// unchanged.
    pub job: String,
    /// What not to watch (names in [`KINDS`]), e.g. `[nodes, metrics]` for
    /// an agent without the optional ClusterRole.
    pub disable: Vec<String>,
    /// How often the state is reported and the metrics API polled (default:
    /// the agent's `interval`). Watches run continuously whatever this is;
    /// each report costs in proportion to the series (2,000 pods: about
    /// 30,000), so a large namespace may be reported every 30s.
    #[serde(deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
    /// How long a kind that answered 403 Forbidden is left alone before it
    /// is tried again (default 10m), so that a fixed Role heals without a
    /// restart.
    #[serde(deserialize_with = "de_duration")]
    pub forbidden_retry: Duration,
    /// How long the metrics API is left alone after answering 404 (not
    /// served: no metrics-server) (default 30m).
    #[serde(deserialize_with = "de_duration")]
    pub metrics_api_retry: Duration,
    /// How long the first report waits for the initial lists to finish
    /// (default 30s); what has not been listed by then comes in later
    /// reports.
    #[serde(deserialize_with = "de_duration")]
    pub sync_timeout: Duration,
    /// Counting of events (`kube_events_total`).
    pub events: EventsConfig,
    /// Most samples handed to the pipeline at once (default 5000): a report
    /// larger than that (2,000 pods make about 30,000 series) is sent in
    /// several frames, one after the other, which bounds the agent's
    /// memory. 0: one frame per report (what `--once` uses).
    pub frame_samples: usize,
    /// Log-pattern counters over the logs of these namespaces' pods (see
    /// [`crate::sources::pod_logs`]); they run, as the source
    /// `log_counters`, when the source is enabled and the list is not empty.
    pub log_counters: Vec<crate::sources::pod_logs::LogCounterConfig>,
    /// Argo CD Applications (`argocd_app_info`, see
    /// the `argocd` module of this source); `disable: [applications]` turns them off.
    pub argocd: ArgoCdConfig,
}

/// Where Argo CD Applications are read (`sources.kubernetes.argocd`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArgoCdConfig {
    /// Namespaces holding Application objects (default `[argocd]`); the
    /// agent needs get, list, watch on `applications` (apiGroups
    /// `argoproj.io`) there.
    pub namespaces: Vec<String>,
    /// Report every Application found there (default false: only those
    /// whose `spec.destination.namespace` is one of `namespaces` above, the
    /// commons' own, so that a shared cluster's other commons stay out).
    pub all_destinations: bool,
}

impl Default for ArgoCdConfig {
    fn default() -> Self {
        ArgoCdConfig {
            namespaces: vec!["argocd".into()],
            all_destinations: false,
        }
    }
}

/// Counting of events (`sources.kubernetes.events`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Event types counted (default `[Warning]`; `Normal` too for every
    /// event).
    pub types: Vec<String>,
    /// Most `kube_events_total` series kept (default 10000); past it, the
    /// series bumped least recently is dropped (a staleness marker ends it)
    /// and `csoc_agent_kubernetes_event_series_evicted_total` counts it.
    pub max_series: usize,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: false,
            namespaces: Vec::new(),
            job: "kubernetes".into(),
            disable: Vec::new(),
            interval: None,
            forbidden_retry: Duration::from_secs(600),
            metrics_api_retry: Duration::from_secs(1800),
            sync_timeout: Duration::from_secs(30),
            events: EventsConfig::default(),
            frame_samples: 5000,
            log_counters: Vec::new(),
            argocd: ArgoCdConfig::default(),
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            types: vec!["Warning".into()],
            max_series: 10_000,
        }
    }
}

/// Whether `s` is a namespace name (an RFC 1123 label: at most 63
/// lower-case letters, digits and `-`, starting and ending with a letter or
/// digit).
pub fn valid_namespace(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl KubernetesConfig {
    /// Whether `kind` (a name in [`KINDS`]) is watched.
    pub fn watches(&self, kind: &str) -> bool {
        !self.disable.iter().any(|d| d == kind)
    }

    /// Checks every value; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.namespaces.is_empty() {
            return Err(invalid(
                format!("{FIELD}.namespaces"),
                "the source is enabled but watches no namespace: list the commons' namespaces (or give --kubernetes-namespace NS)",
            ));
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if !valid_namespace(ns) {
                return Err(invalid(
                    format!("{FIELD}.namespaces"),
                    format!("{ns:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"),
                ));
            }
            if self.namespaces[..i].contains(ns) {
                return Err(invalid(format!("{FIELD}.namespaces"), format!("{ns:?} is listed twice")));
            }
        }
        if self.job.is_empty() {
            return Err(invalid(format!("{FIELD}.job"), "must not be empty"));
        }
        for d in &self.disable {
            if !KINDS.contains(&d.as_str()) {
                return Err(invalid(
                    format!("{FIELD}.disable"),
                    format!("unknown kind {d:?} (one of: {})", KINDS.join(", ")),
                ));
            }
        }
        if let Some(d) = self.interval
            && d < Duration::from_secs(1)
        {
            return Err(invalid(format!("{FIELD}.interval"), format!("{d:?} is below the minimum of 1s")));
        }
        for (field, d) in [
            ("forbidden_retry", self.forbidden_retry),
            ("metrics_api_retry", self.metrics_api_retry),
            ("sync_timeout", self.sync_timeout),
        ] {
            if d < Duration::from_secs(1) {
                return Err(invalid(format!("{FIELD}.{field}"), format!("{d:?} is below the minimum of 1s")));
            }
        }
        if self.events.types.is_empty() && self.watches("events") {
            return Err(invalid(
                format!("{FIELD}.events.types"),
                "empty: no event would be counted (add events to disable instead)",
            ));
        }
        for t in &self.events.types {
            if !EVENT_TYPES.contains(&t.as_str()) {
                return Err(invalid(
                    format!("{FIELD}.events.types"),
                    format!("unknown event type {t:?} (Normal or Warning)"),
                ));
            }
        }
        if !(1..=1_000_000).contains(&self.events.max_series) {
            return Err(invalid(
                format!("{FIELD}.events.max_series"),
                format!("{} is outside 1..=1000000", self.events.max_series),
            ));
        }
        if self.frame_samples != 0 && self.frame_samples < 100 {
            return Err(invalid(
                format!("{FIELD}.frame_samples"),
                format!("{} is below the minimum of 100 (0: one frame per report)", self.frame_samples),
            ));
        }
        for (i, ns) in self.argocd.namespaces.iter().enumerate() {
            if !valid_namespace(ns) {
                return Err(invalid(
                    format!("{FIELD}.argocd.namespaces"),
                    format!("{ns:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"),
                ));
            }
            if self.argocd.namespaces[..i].contains(ns) {
                return Err(invalid(format!("{FIELD}.argocd.namespaces"), format!("{ns:?} is listed twice")));
            }
        }
        crate::sources::pod_logs::validate_counters(&self.log_counters, crate::sources::pod_logs::COUNTERS_FIELD)?;
        Ok(())
    }

    /// The server-side field selector of the event watch (`type=Warning`
    /// when only one type is counted).
    pub(super) fn event_field_selector(&self) -> Option<String> {
        match self.events.types.as_slice() {
            [t] => Some(format!("type={t}")),
            _ => None,
        }
    }
}
