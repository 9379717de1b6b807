//! Pods, under kube-state-metrics' names and labels (its
//! `docs/metrics/workload/pod-metrics.md`), each series also carrying
//! `service` = the pod's `app` label when it has one.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};

use super::quantity::Quantity;
use super::state::{Cond, Out, Owner, Summary, app_label, b, lbl};
use crate::model::MetricKind;

/// The phases, in kube-state-metrics' order; one series each.
const PHASES: [&str; 5] = ["Pending", "Succeeded", "Failed", "Unknown", "Running"];

/// CPU (cores) and memory (bytes) of a container's requests or limits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Resources {
    pub(super) cpu: Option<f64>,
    pub(super) memory: Option<f64>,
}

impl Resources {
    fn of(map: Option<&std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Self {
        let get = |k: &str| map.and_then(|m| m.get(k)).and_then(|q| Quantity::parse(&q.0));
        Resources {
            cpu: get("cpu").map(|q| q.cores()),
            memory: get("memory").map(|q| q.integer()),
        }
    }
}

/// What a container contributes.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct ContainerSummary {
    pub(super) name: String,
    /// From the spec (none when the container is only in the status).
    pub(super) requests: Resources,
    pub(super) limits: Resources,
    /// From the status (None: no status yet).
    pub(super) restarts: Option<i32>,
    pub(super) waiting_reason: Option<String>,
    pub(super) terminated_reason: Option<String>,
    pub(super) last_terminated_reason: Option<String>,
}

/// A pod's summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct PodSummary {
    pub(super) name: String,
    pub(super) uid: String,
    pub(super) node: String,
    pub(super) host_ip: String,
    pub(super) pod_ip: String,
    pub(super) created_by_kind: String,
    pub(super) created_by_name: String,
    pub(super) priority_class: String,
    pub(super) host_network: bool,
    /// The `app` label.
    pub(super) service: String,
    /// "" when the API has not set one.
    pub(super) phase: String,
    /// The Ready condition.
    pub(super) ready: Option<Cond>,
    pub(super) owners: Vec<Owner>,
    pub(super) containers: Vec<ContainerSummary>,
}

fn status_of(c: &mut ContainerSummary, s: &ContainerStatus) {
    c.restarts = Some(s.restart_count);
    let state = s.state.as_ref();
    c.waiting_reason = state
        .and_then(|st| st.waiting.as_ref())
        .map(|w| w.reason.clone().unwrap_or_default());
    c.terminated_reason = state
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.reason.clone().unwrap_or_default());
    c.last_terminated_reason = s
        .last_state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.reason.clone().unwrap_or_default());
}

fn spec_of(c: &Container) -> ContainerSummary {
    let r = c.resources.as_ref();
    ContainerSummary {
        name: c.name.clone(),
        requests: Resources::of(r.and_then(|r| r.requests.as_ref())),
        limits: Resources::of(r.and_then(|r| r.limits.as_ref())),
        ..Default::default()
    }
}

impl Summary for PodSummary {
    type Object = Pod;

    fn from_object(p: &Pod) -> Self {
        let meta = &p.metadata;
        let spec = p.spec.as_ref();
        let status = p.status.as_ref();
        let owners = Owner::of(meta);
        let (created_by_kind, created_by_name) = owners
            .iter()
            .find(|o| o.controller)
            .map(|o| (o.kind.clone(), o.name.clone()))
            .unwrap_or_default();
        let mut containers: Vec<ContainerSummary> = spec.map(|s| s.containers.iter().map(spec_of).collect()).unwrap_or_default();
        for cs in status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
            match containers.iter_mut().find(|c| c.name == cs.name) {
                Some(c) => status_of(c, cs),
                None => {
                    let mut c = ContainerSummary {
                        name: cs.name.clone(),
                        ..Default::default()
                    };
                    status_of(&mut c, cs);
                    containers.push(c);
                }
            }
        }
        PodSummary {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            host_ip: status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
            pod_ip: status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
            created_by_kind,
            created_by_name,
            priority_class: spec.and_then(|s| s.priority_class_name.clone()).unwrap_or_default(),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            service: app_label(meta.labels.as_ref()),
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| Cond::parse(&c.status)),
            owners,
            containers,
        }
    }

    fn meta(out: &mut Out<'_>) {
        use MetricKind::{Counter, Gauge};
        out.meta("kube_pod_info", Gauge, "Information about pod.");
        out.meta("kube_pod_status_phase", Gauge, "The pods current phase.");
        out.meta(
            "kube_pod_status_ready",
            Gauge,
            "Describes whether the pod is ready to serve requests.",
        );
        out.meta("kube_pod_owner", Gauge, "Information about the Pod's owner.");
        out.meta(
            "kube_pod_container_status_restarts_total",
            Counter,
            "The number of container restarts per container.",
        );
        out.meta(
            "kube_pod_container_status_waiting_reason",
            Gauge,
            "Describes the reason the container is currently in waiting state.",
        );
        out.meta(
            "kube_pod_container_status_terminated_reason",
            Gauge,
            "Describes the reason the container is currently in terminated state.",
        );
        out.meta(
            "kube_pod_container_status_last_terminated_reason",
            Gauge,
            "Describes the last reason the container was in terminated state.",
        );
        out.meta(
            "kube_pod_container_resource_requests",
            Gauge,
            "The number of requested request resource by a container (cpu in cores, memory in bytes).",
        );
        out.meta(
            "kube_pod_container_resource_limits",
            Gauge,
            "The number of requested limit resource by a container (cpu in cores, memory in bytes).",
        );
    }

    fn render(&self, ns: &str, out: &mut Out<'_>) {
        let base = [
            ("namespace", ns),
            ("pod", self.name.as_str()),
            ("uid", self.uid.as_str()),
            ("service", self.service.as_str()),
        ];
        out.push(
            "kube_pod_info",
            &lbl(
                &base,
                &[
                    ("host_ip", &self.host_ip),
                    ("pod_ip", &self.pod_ip),
                    ("node", &self.node),
                    ("created_by_kind", &self.created_by_kind),
                    ("created_by_name", &self.created_by_name),
                    ("priority_class", &self.priority_class),
                    ("host_network", if self.host_network { "true" } else { "false" }),
                ],
            ),
            1.0,
        );
        if !self.phase.is_empty() {
            for p in PHASES {
                out.push("kube_pod_status_phase", &lbl(&base, &[("phase", p)]), b(self.phase == p));
            }
        }
        if let Some(r) = self.ready {
            for (c, name) in Cond::ALL {
                out.push("kube_pod_status_ready", &lbl(&base, &[("condition", name)]), b(r == c));
            }
        }
        Owner::render(&self.owners, "kube_pod_owner", &base, out);
        for c in &self.containers {
            let cl = lbl(&base, &[("container", &c.name)]);
            if let Some(n) = c.restarts {
                out.push("kube_pod_container_status_restarts_total", &cl, f64::from(n));
            }
            let mut reason = |name: &str, r: &Option<String>| {
                if let Some(r) = r {
                    out.push(name, &lbl(&base, &[("container", &c.name), ("reason", r)]), 1.0);
                }
            };
            reason("kube_pod_container_status_waiting_reason", &c.waiting_reason);
            reason("kube_pod_container_status_terminated_reason", &c.terminated_reason);
            reason("kube_pod_container_status_last_terminated_reason", &c.last_terminated_reason);
            for (name, res) in [
                ("kube_pod_container_resource_requests", &c.requests),
                ("kube_pod_container_resource_limits", &c.limits),
            ] {
                if let Some(v) = res.cpu {
                    let l = lbl(
                        &base,
                        &[("container", &c.name), ("node", &self.node), ("resource", "cpu"), ("unit", "core")],
                    );
                    out.push(name, &l, v);
                }
                if let Some(v) = res.memory {
                    let l = lbl(
                        &base,
                        &[
                            ("container", &c.name),
                            ("node", &self.node),
                            ("resource", "memory"),
                            ("unit", "byte"),
                        ],
                    );
                    out.push(name, &l, v);
                }
            }
        }
    }
}
