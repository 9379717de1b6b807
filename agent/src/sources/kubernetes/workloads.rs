//! Deployments, StatefulSets, DaemonSets and ReplicaSets under
//! kube-state-metrics' names and labels (its `docs/metrics/workload/`),
//! each series also carrying `service` = the pod template's `app` label.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::state::{Out, Owner, Summary, app_label};
use crate::model::MetricKind::Gauge;

fn template_app(t: Option<&PodTemplateSpec>) -> String {
    app_label(t.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref()))
}

/// Renders `(name, value)` gauges with `base` labels; `None` values are
/// left out (kube-state-metrics skips a field the API did not set).
fn gauges(out: &mut Out<'_>, base: &[(&str, &str)], values: &[(&str, Option<f64>)]) {
    for (name, v) in values {
        if let Some(v) = v {
            out.push(name, base, *v);
        }
    }
}

fn n(v: Option<i32>) -> Option<f64> {
    Some(f64::from(v.unwrap_or(0)))
}

fn g(v: Option<i64>) -> Option<f64> {
    Some(v.unwrap_or(0) as f64)
}

/// A Deployment's summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct DeploymentSummary {
    pub(super) name: String,
    pub(super) service: String,
    pub(super) spec_replicas: Option<i32>,
    pub(super) replicas: Option<i32>,
    pub(super) ready: Option<i32>,
    pub(super) available: Option<i32>,
    pub(super) unavailable: Option<i32>,
    pub(super) updated: Option<i32>,
    pub(super) observed_generation: Option<i64>,
    pub(super) generation: Option<i64>,
}

impl Summary for DeploymentSummary {
    type Object = Deployment;

    fn from_object(d: &Deployment) -> Self {
        let spec = d.spec.as_ref();
        let st = d.status.as_ref();
        DeploymentSummary {
            name: d.metadata.name.clone().unwrap_or_default(),
            service: template_app(spec.map(|s| &s.template)),
            spec_replicas: spec.and_then(|s| s.replicas),
            replicas: st.and_then(|s| s.replicas),
            ready: st.and_then(|s| s.ready_replicas),
            available: st.and_then(|s| s.available_replicas),
            unavailable: st.and_then(|s| s.unavailable_replicas),
            updated: st.and_then(|s| s.updated_replicas),
            observed_generation: st.and_then(|s| s.observed_generation),
            generation: d.metadata.generation,
        }
    }

    fn meta(out: &mut Out<'_>) {
        out.meta("kube_deployment_spec_replicas", Gauge, "Number of desired pods for a deployment.");
        out.meta("kube_deployment_status_replicas", Gauge, "The number of replicas per deployment.");
        out.meta(
            "kube_deployment_status_replicas_ready",
            Gauge,
            "The number of ready replicas per deployment.",
        );
        out.meta(
            "kube_deployment_status_replicas_available",
            Gauge,
            "The number of available replicas per deployment.",
        );
        out.meta(
            "kube_deployment_status_replicas_unavailable",
            Gauge,
            "The number of unavailable replicas per deployment.",
        );
        out.meta(
            "kube_deployment_status_replicas_updated",
            Gauge,
            "The number of updated replicas per deployment.",
        );
        out.meta(
            "kube_deployment_status_observed_generation",
            Gauge,
            "The generation observed by the deployment controller.",
        );
        out.meta(
            "kube_deployment_metadata_generation",
            Gauge,
            "Sequence number representing a specific generation of the desired state.",
        );
    }

    fn render(&self, ns: &str, out: &mut Out<'_>) {
        let base = [
            ("namespace", ns),
            ("deployment", self.name.as_str()),
            ("service", self.service.as_str()),
        ];
        gauges(
            out,
            &base,
            &[
                ("kube_deployment_spec_replicas", self.spec_replicas.map(f64::from)),
                ("kube_deployment_status_replicas", n(self.replicas)),
                ("kube_deployment_status_replicas_ready", n(self.ready)),
                ("kube_deployment_status_replicas_available", n(self.available)),
                ("kube_deployment_status_replicas_unavailable", n(self.unavailable)),
                ("kube_deployment_status_replicas_updated", n(self.updated)),
                ("kube_deployment_status_observed_generation", g(self.observed_generation)),
                ("kube_deployment_metadata_generation", g(self.generation)),
            ],
        );
    }
}

/// A StatefulSet's summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct StatefulSetSummary {
    pub(super) name: String,
    pub(super) service: String,
    pub(super) spec_replicas: Option<i32>,
    pub(super) replicas: i32,
    pub(super) ready: Option<i32>,
    pub(super) available: Option<i32>,
    pub(super) current: Option<i32>,
    pub(super) updated: Option<i32>,
    pub(super) observed_generation: Option<i64>,
    pub(super) generation: Option<i64>,
}

impl Summary for StatefulSetSummary {
    type Object = StatefulSet;

    fn from_object(s: &StatefulSet) -> Self {
        let spec = s.spec.as_ref();
        let st = s.status.as_ref();
        StatefulSetSummary {
            name: s.metadata.name.clone().unwrap_or_default(),
            service: template_app(spec.map(|s| &s.template)),
            spec_replicas: spec.and_then(|s| s.replicas),
            replicas: st.map_or(0, |s| s.replicas),
            ready: st.and_then(|s| s.ready_replicas),
            available: st.and_then(|s| s.available_replicas),
            current: st.and_then(|s| s.current_replicas),
            updated: st.and_then(|s| s.updated_replicas),
            observed_generation: st.and_then(|s| s.observed_generation),
            generation: s.metadata.generation,
        }
    }

    fn meta(out: &mut Out<'_>) {
        out.meta("kube_statefulset_replicas", Gauge, "Number of desired pods for a StatefulSet.");
        out.meta("kube_statefulset_status_replicas", Gauge, "The number of replicas per StatefulSet.");
        out.meta(
            "kube_statefulset_status_replicas_ready",
            Gauge,
            "The number of ready replicas per StatefulSet.",
        );
        out.meta(
            "kube_statefulset_status_replicas_available",
            Gauge,
            "The number of available replicas per StatefulSet.",
        );
        out.meta(
            "kube_statefulset_status_replicas_current",
            Gauge,
            "The number of current replicas per StatefulSet.",
        );
        out.meta(
            "kube_statefulset_status_replicas_updated",
            Gauge,
            "The number of updated replicas per StatefulSet.",
        );
        out.meta(
            "kube_statefulset_status_observed_generation",
            Gauge,
            "The generation observed by the StatefulSet controller.",
        );
        out.meta(
            "kube_statefulset_metadata_generation",
            Gauge,
            "Sequence number representing a specific generation of the desired state for the StatefulSet.",
        );
    }

    fn render(&self, ns: &str, out: &mut Out<'_>) {
        let base = [
            ("namespace", ns),
            ("statefulset", self.name.as_str()),
            ("service", self.service.as_str()),
        ];
        gauges(
            out,
            &base,
            &[
                ("kube_statefulset_replicas", self.spec_replicas.map(f64::from)),
                ("kube_statefulset_status_replicas", Some(f64::from(self.replicas))),
                ("kube_statefulset_status_replicas_ready", n(self.ready)),
                ("kube_statefulset_status_replicas_available", n(self.available)),
                ("kube_statefulset_status_replicas_current", n(self.current)),
                ("kube_statefulset_status_replicas_updated", n(self.updated)),
                ("kube_statefulset_status_observed_generation", g(self.observed_generation)),
                ("kube_statefulset_metadata_generation", g(self.generation)),
            ],
        );
    }
}

/// A DaemonSet's summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct DaemonSetSummary {
    pub(super) name: String,
    pub(super) service: String,
    pub(super) current: i32,
    pub(super) desired: i32,
    pub(super) available: Option<i32>,
    pub(super) misscheduled: i32,
    pub(super) ready: i32,
    pub(super) unavailable: Option<i32>,
    pub(super) updated: Option<i32>,
    pub(super) observed_generation: Option<i64>,
    pub(super) generation: Option<i64>,
}

impl Summary for DaemonSetSummary {
    type Object = DaemonSet;

    fn from_object(d: &DaemonSet) -> Self {
        let st = d.status.as_ref();
        DaemonSetSummary {
            name: d.metadata.name.clone().unwrap_or_default(),
            service: template_app(d.spec.as_ref().map(|s| &s.template)),
            current: st.map_or(0, |s| s.current_number_scheduled),
            desired: st.map_or(0, |s| s.desired_number_scheduled),
            available: st.and_then(|s| s.number_available),
            misscheduled: st.map_or(0, |s| s.number_misscheduled),
            ready: st.map_or(0, |s| s.number_ready),
            unavailable: st.and_then(|s| s.number_unavailable),
            updated: st.and_then(|s| s.updated_number_scheduled),
            observed_generation: st.and_then(|s| s.observed_generation),
            generation: d.metadata.generation,
        }
    }

    fn meta(out: &mut Out<'_>) {
        out.meta(
            "kube_daemonset_status_current_number_scheduled",
            Gauge,
            "The number of nodes running at least one daemon pod and are supposed to.",
        );
        out.meta(
            "kube_daemonset_status_desired_number_scheduled",
            Gauge,
            "The number of nodes that should be running the daemon pod.",
        );
        out.meta(
            "kube_daemonset_status_number_available",
            Gauge,
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available",
        );
        out.meta(
            "kube_daemonset_status_number_misscheduled",
            Gauge,
            "The number of nodes running a daemon pod but are not supposed to.",
        );
        out.meta(
            "kube_daemonset_status_number_ready",
            Gauge,
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
        );
        out.meta(
            "kube_daemonset_status_number_unavailable",
            Gauge,
            "The number of nodes that should be running the daemon pod and have none of the daemon pod running and available",
        );
        out.meta(
            "kube_daemonset_status_updated_number_scheduled",
            Gauge,
            "The total number of nodes that are running updated daemon pod",
        );
        out.meta(
            "kube_daemonset_status_observed_generation",
            Gauge,
            "The most recent generation observed by the daemon set controller.",
        );
        out.meta(
            "kube_daemonset_metadata_generation",
            Gauge,
            "Sequence number representing a specific generation of the desired state.",
        );
    }

    fn render(&self, ns: &str, out: &mut Out<'_>) {
        let base = [
            ("namespace", ns),
            ("daemonset", self.name.as_str()),
            ("service", self.service.as_str()),
        ];
        gauges(
            out,
            &base,
            &[
                ("kube_daemonset_status_current_number_scheduled", Some(f64::from(self.current))),
                ("kube_daemonset_status_desired_number_scheduled", Some(f64::from(self.desired))),
                ("kube_daemonset_status_number_available", n(self.available)),
                ("kube_daemonset_status_number_misscheduled", Some(f64::from(self.misscheduled))),
                ("kube_daemonset_status_number_ready", Some(f64::from(self.ready))),
                ("kube_daemonset_status_number_unavailable", n(self.unavailable)),
                ("kube_daemonset_status_updated_number_scheduled", n(self.updated)),
                ("kube_daemonset_status_observed_generation", g(self.observed_generation)),
                ("kube_daemonset_metadata_generation", g(self.generation)),
            ],
        );
    }
}

/// A ReplicaSet's summary (for `kube_replicaset_owner`: which Deployment a
/// pod belongs to).
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct ReplicaSetSummary {
    pub(super) name: String,
    pub(super) service: String,
    pub(super) owners: Vec<Owner>,
    pub(super) spec_replicas: Option<i32>,
    pub(super) replicas: i32,
    pub(super) ready: Option<i32>,
}

impl Summary for ReplicaSetSummary {
    type Object = ReplicaSet;

    fn from_object(r: &ReplicaSet) -> Self {
        let spec = r.spec.as_ref();
        ReplicaSetSummary {
            name: r.metadata.name.clone().unwrap_or_default(),
            service: template_app(spec.and_then(|s| s.template.as_ref())),
            owners: Owner::of(&r.metadata),
            spec_replicas: spec.and_then(|s| s.replicas),
            replicas: r.status.as_ref().map_or(0, |s| s.replicas),
            ready: r.status.as_ref().and_then(|s| s.ready_replicas),
        }
    }

    fn meta(out: &mut Out<'_>) {
        out.meta("kube_replicaset_owner", Gauge, "Information about the ReplicaSet's owner.");
        out.meta("kube_replicaset_spec_replicas", Gauge, "Number of desired pods for a ReplicaSet.");
        out.meta("kube_replicaset_status_replicas", Gauge, "The number of replicas per ReplicaSet.");
        out.meta(
            "kube_replicaset_status_ready_replicas",
            Gauge,
            "The number of ready replicas per ReplicaSet.",
        );
    }

    fn render(&self, ns: &str, out: &mut Out<'_>) {
        let base = [
            ("namespace", ns),
            ("replicaset", self.name.as_str()),
            ("service", self.service.as_str()),
        ];
        Owner::render(&self.owners, "kube_replicaset_owner", &base, out);
        gauges(
            out,
            &base,
            &[
                ("kube_replicaset_spec_replicas", self.spec_replicas.map(f64::from)),
                ("kube_replicaset_status_replicas", Some(f64::from(self.replicas))),
                ("kube_replicaset_status_ready_replicas", n(self.ready)),
            ],
        );
    }
}
