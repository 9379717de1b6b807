//! PersistentVolumeClaims and Nodes under kube-state-metrics' names and
//! labels (its `docs/metrics/storage/persistentvolumeclaim-metrics.md`,
//! `docs/metrics/cluster/node-metrics.md`).

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};

use super::quantity::Quantity;
use super::state::{Cond, Out, Summary, b};
use crate::model::MetricKind::Gauge;

/// The claim phases, in kube-state-metrics' order; one series each.
const PVC_PHASES: [&str; 3] = ["Lost", "Bound", "Pending"];

/// A PersistentVolumeClaim's summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct PvcSummary {
    pub(super) name: String,
    pub(super) storage_class: String,
    pub(super) volume: String,
    /// "" when the API has not set one.
    pub(super) phase: String,
    pub(super) requested_bytes: Option<f64>,
}

impl Summary for PvcSummary {
    type Object = PersistentVolumeClaim;

    fn from_object(p: &PersistentVolumeClaim) -> Self {
        let spec = p.spec.as_ref();
        PvcSummary {
            name: p.metadata.name.clone().unwrap_or_default(),
            storage_class: spec.and_then(|s| s.storage_class_name.clone()).unwrap_or_default(),
            volume: spec.and_then(|s| s.volume_name.clone()).unwrap_or_default(),
            phase: p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default(),
            requested_bytes: spec
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(|q| Quantity::parse(&q.0))
                .map(|q| q.integer()),
        }
    }

    fn meta(out: &mut Out<'_>) {
        out.meta(
            "kube_persistentvolumeclaim_info",
            Gauge,
            "Information about persistent volume claim.",
        );
        out.meta(
            "kube_persistentvolumeclaim_status_phase",
            Gauge,
            "The phase the persistent volume claim is currently in.",
        );
        out.meta(
            "kube_persistentvolumeclaim_resource_requests_storage_bytes",
            Gauge,
            "The capacity of storage requested by the persistent volume claim.",
        );
    }

    fn render(&self, ns: &str, out: &mut Out<'_>) {
        let base = [("namespace", ns), ("persistentvolumeclaim", self.name.as_str())];
        let mut info = base.to_vec();
        info.extend([("storageclass", self.storage_class.as_str()), ("volumename", self.volume.as_str())]);
        out.push("kube_persistentvolumeclaim_info", &info, 1.0);
        if !self.phase.is_empty() {
            for p in PVC_PHASES {
                let mut l = base.to_vec();
                l.push(("phase", p));
                out.push("kube_persistentvolumeclaim_status_phase", &l, b(self.phase == p));
            }
        }
        if let Some(v) = self.requested_bytes {
            out.push("kube_persistentvolumeclaim_resource_requests_storage_bytes", &base, v);
        }
    }
}

/// A Node's summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct NodeSummary {
    pub(super) name: String,
    /// (type, status) of each condition.
    pub(super) conditions: Vec<(String, Cond)>,
    pub(super) unschedulable: bool,
    pub(super) allocatable_cpu: Option<f64>,
    pub(super) allocatable_memory: Option<f64>,
    pub(super) allocatable_pods: Option<f64>,
}

impl Summary for NodeSummary {
    type Object = Node;

    fn from_object(n: &Node) -> Self {
        let st = n.status.as_ref();
        let alloc = |k: &str| {
            st.and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(k))
                .and_then(|q| Quantity::parse(&q.0))
        };
        NodeSummary {
            name: n.metadata.name.clone().unwrap_or_default(),
            conditions: st
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| Cond::parse(&c.status).map(|s| (c.type_.clone(), s)))
                .collect(),
            unschedulable: n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable_cpu: alloc("cpu").map(|q| q.cores()),
            allocatable_memory: alloc("memory").map(|q| q.integer()),
            allocatable_pods: alloc("pods").map(|q| q.integer()),
        }
    }

    fn meta(out: &mut Out<'_>) {
        out.meta("kube_node_status_condition", Gauge, "The condition of a cluster node.");
        out.meta("kube_node_spec_unschedulable", Gauge, "Whether a node can schedule new pods.");
        out.meta(
            "kube_node_status_allocatable",
            Gauge,
            "The allocatable for different resources of a node that are available for scheduling.",
        );
    }

    fn render(&self, _ns: &str, out: &mut Out<'_>) {
        let node = self.name.as_str();
        for (t, c) in &self.conditions {
            for (s, name) in Cond::ALL {
                out.push(
                    "kube_node_status_condition",
                    &[("node", node), ("condition", t.as_str()), ("status", name)],
                    b(*c == s),
                );
            }
        }
        out.push("kube_node_spec_unschedulable", &[("node", node)], b(self.unschedulable));
        for (res, unit, v) in [
            ("cpu", "core", self.allocatable_cpu),
            ("memory", "byte", self.allocatable_memory),
            ("pods", "integer", self.allocatable_pods),
        ] {
            if let Some(v) = v {
                out.push(
                    "kube_node_status_allocatable",
                    &[("node", node), ("resource", res), ("unit", unit)],
                    v,
                );
            }
        }
    }
}
