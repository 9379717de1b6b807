//! Pod CPU and memory usage from the metrics API (metrics.k8s.io/v1beta1
//! PodMetrics, served by metrics-server), listed per namespace every
//! interval: the metrics API has no watch.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `kube_pod_container_cpu_usage_cores` | namespace, pod, container, service | CPU in cores, averaged by metrics-server over its window (15s-60s): a gauge, not cAdvisor's counter |
//! | `container_memory_working_set_bytes` | namespace, pod, container, service | working-set memory, the same quantity as cAdvisor's metric of that name (what the OOM killer and evictions look at) |
//!
//! `service` is the pod's `app` label (from the pod watch).

use std::collections::HashMap;

use serde::Deserialize;

use super::pods::PodSummary;
use super::quantity::Quantity;
use super::state::{Out, Progress, Store, push_stale};
use crate::model::{Labels, MetricKind};

/// The PodMetricsList the metrics API answers (only what is used).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct PodMetricsList {
    pub(super) items: Vec<PodMetrics>,
}

/// One pod's usage.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct PodMetrics {
    pub(super) metadata: Meta,
    pub(super) containers: Vec<ContainerMetrics>,
}

/// The part of the metadata used.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Meta {
    pub(super) name: String,
}

/// One container's usage.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ContainerMetrics {
    pub(super) name: String,
    pub(super) usage: HashMap<String, String>,
}

/// One container's usage, parsed.
#[derive(Debug, Clone, PartialEq)]
struct Usage {
    pod: String,
    container: String,
    cpu_cores: Option<f64>,
    memory_bytes: Option<f64>,
}

/// The latest usage of one namespace's pods.
#[derive(Debug, Default)]
pub(super) struct UsageStore {
    pub(super) namespace: String,
    usage: Vec<Usage>,
    /// (pod, container) → service label of what the last report sent.
    emitted: HashMap<(String, String), String>,
    pub(super) progress: Progress,
    /// The metrics API answered 404: not served.
    pub(super) not_served: bool,
}

const CPU: &str = "kube_pod_container_cpu_usage_cores";
const MEM: &str = "container_memory_working_set_bytes";

impl UsageStore {
    pub(super) fn new(namespace: &str) -> Self {
        UsageStore {
            namespace: namespace.to_string(),
            ..Default::default()
        }
    }

    /// Containers with usage.
    pub(super) fn len(&self) -> usize {
        self.usage.len()
    }

    /// A successful list.
    pub(super) fn set(&mut self, list: PodMetricsList) {
        let mut usage = Vec::new();
        for p in list.items {
            for c in p.containers {
                let get = |k: &str| c.usage.get(k).and_then(|q| Quantity::parse(q)).map(|q| q.as_f64());
                usage.push(Usage {
                    pod: p.metadata.name.clone(),
                    container: c.name.clone(),
                    cpu_cores: get("cpu"),
                    memory_bytes: get("memory"),
                });
            }
        }
        self.usage = usage;
        self.progress.list_done();
        self.not_served = false;
    }

    /// The list failed (`not_served`: 404); what was known is dropped, so
    /// its series go stale rather than repeat old values.
    pub(super) fn failed(&mut self, not_served: bool, forbidden: bool) {
        self.usage.clear();
        self.not_served = not_served;
        self.progress.forbidden = forbidden;
        self.progress.settled = true;
        if forbidden {
            self.progress.synced = false;
        }
    }

    /// Declares the usage families.
    pub(super) fn meta(out: &mut Out<'_>) {
        out.meta(
            CPU,
            MetricKind::Gauge,
            "CPU used by the container in cores, averaged over the metrics API's window (metrics-server).",
        );
        out.meta(
            MEM,
            MetricKind::Gauge,
            "Working-set memory of the container in bytes, from the metrics API (metrics-server).",
        );
    }

    /// The usage series; staleness markers for containers gone since the
    /// last report (or whose pod's service changed).
    pub(super) fn render(&mut self, pods: Option<&Store<PodSummary>>, out: &mut Out<'_>) {
        let ns = self.namespace.as_str();
        let mut now: HashMap<(String, String), String> = HashMap::with_capacity(self.usage.len());
        for u in &self.usage {
            let service = pods.and_then(|p| p.get(&u.pod)).map(|p| p.service.clone()).unwrap_or_default();
            let l = [
                ("namespace", ns),
                ("pod", u.pod.as_str()),
                ("container", u.container.as_str()),
                ("service", service.as_str()),
            ];
            if let Some(v) = u.cpu_cores {
                out.push(CPU, &l, v);
            }
            if let Some(v) = u.memory_bytes {
                out.push(MEM, &l, v);
            }
            now.insert((u.pod.clone(), u.container.clone()), service);
        }
        let mut gone: Vec<Labels> = Vec::new();
        for ((pod, container), service) in &self.emitted {
            if now.get(&(pod.clone(), container.clone())) == Some(service) {
                continue;
            }
            let mut f = crate::model::Frame::default();
            let mut o = Out {
                frame: &mut f,
                ts: out.ts,
                job: out.job,
            };
            let l = [
                ("namespace", ns),
                ("pod", pod.as_str()),
                ("container", container.as_str()),
                ("service", service.as_str()),
            ];
            o.push(CPU, &l, 0.0);
            o.push(MEM, &l, 0.0);
            gone.extend(f.samples.into_iter().map(|s| s.labels));
        }
        push_stale(out, gone);
        self.emitted = now;
    }
}
