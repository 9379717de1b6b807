//! Tests of the kubernetes source's pure parts: metrics from k8s-openapi
//! objects (built from Kubernetes' JSON), staleness, event counting, the
//! report and the configuration. The watch plumbing is tested end to end
//! against the fake API server in `tests/`.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::runtime::watcher::Event as Ev;
use serde_json::json;

use super::events::EventCounter;
use super::state::{Out, Store, Summary};
use super::*;
use crate::model::{Frame, Sample};

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid Kubernetes JSON")
}

fn is_stale(v: f64) -> bool {
    v.to_bits() == csoc_proto::STALE_NAN_BITS
}

/// The labels of a sample without `__name__` and `job`, sorted.
fn plain(s: &Sample) -> Vec<(String, String)> {
    s.labels.iter().filter(|(k, _)| k != "__name__" && k != "job").cloned().collect()
}

fn name(s: &Sample) -> &str {
    s.labels.iter().find(|(k, _)| k == "__name__").map_or("", |(_, v)| v.as_str())
}

/// The value of the series `metric{labels}` (exactly those labels besides
/// `job`), if the frame has it.
fn val(f: &Frame, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
    want.sort();
    let hits: Vec<f64> = f
        .samples
        .iter()
        .filter(|s| name(s) == metric && plain(s) == want)
        .map(|s| s.value)
        .collect();
    assert!(hits.len() <= 1, "{metric}{labels:?} appears {} times", hits.len());
    hits.first().copied()
}

/// Every sample of `metric`.
fn all<'a>(f: &'a Frame, metric: &str) -> Vec<&'a Sample> {
    f.samples.iter().filter(|s| name(s) == metric).collect()
}

fn render<S: Summary>(s: &S, ns: &str) -> Frame {
    let mut f = Frame::new("kubernetes");
    let mut out = Out {
        frame: &mut f,
        ts: 1000,
        job: "kubernetes",
    };
    s.render(ns, &mut out);
    assert!(
        f.samples
            .iter()
            .all(|s| s.labels.iter().any(|(k, v)| k == "job" && v == "kubernetes")),
        "every series has the job label"
    );
    f
}

fn crashloop_pod() -> Pod {
    obj(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "fence-deployment-7d9f8b6c5-x2x4z", "namespace": "gen3", "uid": "0b7f3c1e-aaaa-bbbb-cccc-000000000001",
            "resourceVersion": "101", "labels": {"app": "fence", "release": "gen3"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "fence-deployment-7d9f8b6c5",
                                 "uid": "rs-1", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1"}]
        },
        "spec": {
            "nodeName": "node-1", "priorityClassName": "gen3-high",
            "containers": [{
                "name": "fence", "image": "quay.io/cdis/fence:2024.10",
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1.5", "memory": "1G"}}
            }]
        },
        "status": {
            "phase": "Running", "hostIP": "10.0.0.5", "podIP": "10.244.1.7",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "PodScheduled", "status": "True"}
            ],
            "containerStatuses": [{
                "name": "fence", "image": "quay.io/cdis/fence:2024.10", "imageID": "sha256:abc", "ready": false,
                "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                              "startedAt": "2025-03-01T10:00:00Z", "finishedAt": "2025-03-01T10:00:05Z"}}
            }]
        }
    }))
}

#[test]
fn crashlooping_pod_gives_waiting_reason_restarts_and_requests() {
    let s = pods::PodSummary::from_object(&crashloop_pod());
    let f = render(&s, "gen3");
    let pod = [
        ("namespace", "gen3"),
        ("pod", "fence-deployment-7d9f8b6c5-x2x4z"),
        ("uid", "0b7f3c1e-aaaa-bbbb-cccc-000000000001"),
        ("service", "fence"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut l = pod.to_vec();
        l.extend_from_slice(extra);
        l
    };
    assert_eq!(
        val(
            &f,
            "kube_pod_container_status_waiting_reason",
            &with(&[("container", "fence"), ("reason", "CrashLoopBackOff")])
        ),
        Some(1.0)
    );
    assert_eq!(
        val(&f, "kube_pod_container_status_restarts_total", &with(&[("container", "fence")])),
        Some(5.0)
    );
    assert_eq!(
        val(
            &f,
            "kube_pod_container_status_last_terminated_reason",
            &with(&[("container", "fence"), ("reason", "Error")])
        ),
        Some(1.0)
    );
    assert!(all(&f, "kube_pod_container_status_terminated_reason").is_empty());
    // One series per phase, 1 for the current.
    for (p, v) in [
        ("Running", 1.0),
        ("Pending", 0.0),
        ("Succeeded", 0.0),
        ("Failed", 0.0),
        ("Unknown", 0.0),
    ] {
        assert_eq!(val(&f, "kube_pod_status_phase", &with(&[("phase", p)])), Some(v), "{p}");
    }
    for (c, v) in [("true", 0.0), ("false", 1.0), ("unknown", 0.0)] {
        assert_eq!(val(&f, "kube_pod_status_ready", &with(&[("condition", c)])), Some(v), "{c}");
    }
    assert_eq!(
        val(
            &f,
            "kube_pod_info",
            &with(&[
                ("host_ip", "10.0.0.5"),
                ("pod_ip", "10.244.1.7"),
                ("node", "node-1"),
                ("created_by_kind", "ReplicaSet"),
                ("created_by_name", "fence-deployment-7d9f8b6c5"),
                ("priority_class", "gen3-high"),
                ("host_network", "false"),
            ])
        ),
        Some(1.0)
    );
    assert_eq!(
        val(
            &f,
            "kube_pod_owner",
            &with(&[
                ("owner_kind", "ReplicaSet"),
                ("owner_name", "fence-deployment-7d9f8b6c5"),
                ("owner_is_controller", "true")
            ])
        ),
        Some(1.0)
    );
    let res = |r: &'static str, u: &'static str| with(&[("container", "fence"), ("node", "node-1"), ("resource", r), ("unit", u)]);
    assert_eq!(val(&f, "kube_pod_container_resource_requests", &res("cpu", "core")), Some(0.25));
    assert_eq!(
        val(&f, "kube_pod_container_resource_requests", &res("memory", "byte")),
        Some(67_108_864.0)
    );
    assert_eq!(val(&f, "kube_pod_container_resource_limits", &res("cpu", "core")), Some(1.5));
    assert_eq!(val(&f, "kube_pod_container_resource_limits", &res("memory", "byte")), Some(1e9));
    assert_eq!(f.samples.len(), 1 + 5 + 3 + 1 + 1 + 1 + 1 + 4, "no other series: {:#?}", f.samples);
}

#[test]
fn oomkilled_last_state_and_a_pod_without_status() {
    let mut p = crashloop_pod();
    let st = p.status.as_mut().expect("status");
    let cs = &mut st.container_statuses.as_mut().expect("statuses")[0];
    cs.last_state = Some(obj(json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})));
    cs.state = Some(obj(json!({"running": {"startedAt": "2025-03-01T10:01:00Z"}})));
    let f = render(&pods::PodSummary::from_object(&p), "gen3");
    let oom: Vec<_> = all(&f, "kube_pod_container_status_last_terminated_reason")
        .iter()
        .map(|s| (plain(s), s.value))
        .collect();
    assert_eq!(oom.len(), 1);
    assert!(oom[0].0.contains(&("reason".into(), "OOMKilled".into())), "{oom:?}");
    assert!(
        all(&f, "kube_pod_container_status_waiting_reason").is_empty(),
        "running: no waiting reason"
    );

    // A pod just created: no phase, no conditions, no statuses, no owner, no app.
    let bare: Pod = obj(json!({"metadata": {"name": "lone", "uid": "u1"}, "spec": {"containers": [{"name": "c"}]}}));
    let f = render(&pods::PodSummary::from_object(&bare), "gen3");
    assert!(
        all(&f, "kube_pod_status_phase").is_empty(),
        "no phase, no phase series (as kube-state-metrics)"
    );
    assert!(all(&f, "kube_pod_status_ready").is_empty());
    assert!(all(&f, "kube_pod_container_status_restarts_total").is_empty());
    assert!(all(&f, "kube_pod_container_resource_requests").is_empty());
    // The owner series with empty labels (left out), and no empty `service`.
    assert_eq!(
        val(&f, "kube_pod_owner", &[("namespace", "gen3"), ("pod", "lone"), ("uid", "u1")]),
        Some(1.0)
    );
    assert!(f.samples.iter().all(|s| s.labels.iter().all(|(_, v)| !v.is_empty())));
}

#[test]
fn deployment_short_of_replicas() {
    let d: k8s_openapi::api::apps::v1::Deployment = obj(json!({
        "metadata": {"name": "fence-deployment", "namespace": "gen3", "generation": 4},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "fence"}},
                 "template": {"metadata": {"labels": {"app": "fence"}}, "spec": {"containers": [{"name": "fence"}]}}},
        "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "unavailableReplicas": 1,
                   "updatedReplicas": 3, "observedGeneration": 4}
    }));
    let f = render(&workloads::DeploymentSummary::from_object(&d), "gen3");
    let l = [("namespace", "gen3"), ("deployment", "fence-deployment"), ("service", "fence")];
    assert_eq!(val(&f, "kube_deployment_spec_replicas", &l), Some(3.0));
    assert_eq!(val(&f, "kube_deployment_status_replicas_available", &l), Some(2.0));
    assert_eq!(val(&f, "kube_deployment_status_replicas_unavailable", &l), Some(1.0));
    assert_eq!(val(&f, "kube_deployment_status_replicas_ready", &l), Some(2.0));
    assert_eq!(val(&f, "kube_deployment_status_replicas_updated", &l), Some(3.0));
    assert_eq!(val(&f, "kube_deployment_status_replicas", &l), Some(3.0));
    assert_eq!(val(&f, "kube_deployment_metadata_generation", &l), Some(4.0));
    assert_eq!(val(&f, "kube_deployment_status_observed_generation", &l), Some(4.0));

    let s: k8s_openapi::api::apps::v1::StatefulSet = obj(json!({
        "metadata": {"name": "es", "namespace": "gen3"},
        "spec": {"replicas": 2, "serviceName": "es", "selector": {}, "template": {"metadata": {"labels": {"app": "esproxy"}}}},
        "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1, "currentReplicas": 2, "updatedReplicas": 2}
    }));
    let f = render(&workloads::StatefulSetSummary::from_object(&s), "gen3");
    let l = [("namespace", "gen3"), ("statefulset", "es"), ("service", "esproxy")];
    assert_eq!(val(&f, "kube_statefulset_replicas", &l), Some(2.0));
    assert_eq!(val(&f, "kube_statefulset_status_replicas_ready", &l), Some(1.0));
    assert_eq!(val(&f, "kube_statefulset_status_replicas_available", &l), Some(1.0));

    let ds: k8s_openapi::api::apps::v1::DaemonSet = obj(json!({
        "metadata": {"name": "fluentd", "namespace": "gen3"},
        "spec": {"selector": {}, "template": {}},
        "status": {"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0,
                   "numberReady": 2, "numberUnavailable": 1}
    }));
    let f = render(&workloads::DaemonSetSummary::from_object(&ds), "gen3");
    let l = [("namespace", "gen3"), ("daemonset", "fluentd")];
    assert_eq!(val(&f, "kube_daemonset_status_desired_number_scheduled", &l), Some(3.0));
    assert_eq!(val(&f, "kube_daemonset_status_number_ready", &l), Some(2.0));
    assert_eq!(val(&f, "kube_daemonset_status_number_unavailable", &l), Some(1.0));
    assert_eq!(
        val(&f, "kube_daemonset_status_number_available", &l),
        Some(0.0),
        "unset counts as 0"
    );

    // A Deployment without spec.replicas: no spec series (as kube-state-metrics).
    let d: k8s_openapi::api::apps::v1::Deployment = obj(json!({"metadata": {"name": "x"}, "spec": {"selector": {}, "template": {}}}));
    let f = render(&workloads::DeploymentSummary::from_object(&d), "gen3");
    assert!(all(&f, "kube_deployment_spec_replicas").is_empty());
    assert_eq!(
        val(
            &f,
            "kube_deployment_status_replicas_available",
            &[("namespace", "gen3"), ("deployment", "x")]
        ),
        Some(0.0)
    );
}

#[test]
fn replicaset_owner_maps_pods_to_deployments() {
    let rs: k8s_openapi::api::apps::v1::ReplicaSet = obj(json!({
        "metadata": {"name": "fence-deployment-7d9f8b6c5", "namespace": "gen3",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "fence-deployment", "uid": "d1", "controller": true}]},
        "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {"labels": {"app": "fence"}}}},
        "status": {"replicas": 2, "readyReplicas": 2}
    }));
    let f = render(&workloads::ReplicaSetSummary::from_object(&rs), "gen3");
    assert_eq!(
        val(
            &f,
            "kube_replicaset_owner",
            &[
                ("namespace", "gen3"),
                ("replicaset", "fence-deployment-7d9f8b6c5"),
                ("service", "fence"),
                ("owner_kind", "Deployment"),
                ("owner_name", "fence-deployment"),
                ("owner_is_controller", "true")
            ]
        ),
        Some(1.0)
    );
}

#[test]
fn failed_job_owned_by_a_cronjob() {
    let j: k8s_openapi::api::batch::v1::Job = obj(json!({
        "metadata": {"name": "usersync-29012345", "namespace": "gen3",
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "usersync", "uid": "c1", "controller": true}]},
        "spec": {"template": {"metadata": {"labels": {"app": "gen3job"}}, "spec": {"containers": [{"name": "usersync"}]}}},
        "status": {"failed": 2, "startTime": "2025-03-01T10:00:00Z",
                   "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                   "message": "Job has reached the specified backoff limit"}]}
    }));
    let f = render(&jobs::JobSummary::from_object(&j), "gen3");
    let base = [("namespace", "gen3"), ("job_name", "usersync-29012345"), ("service", "gen3job")];
    let with = |k: &'static str, v: &'static str| {
        let mut l = base.to_vec();
        l.push((k, v));
        l
    };
    assert_eq!(
        val(
            &f,
            "kube_job_owner",
            &[
                ("namespace", "gen3"),
                ("job_name", "usersync-29012345"),
                ("service", "gen3job"),
                ("owner_kind", "CronJob"),
                ("owner_name", "usersync"),
                ("owner_is_controller", "true")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(val(&f, "kube_job_failed", &with("condition", "true")), Some(1.0));
    assert_eq!(val(&f, "kube_job_failed", &with("condition", "false")), Some(0.0));
    assert!(all(&f, "kube_job_complete").is_empty(), "no Complete condition");
    assert_eq!(
        val(&f, "kube_job_status_failed", &with("reason", "BackoffLimitExceeded")),
        Some(1.0)
    );
    assert_eq!(val(&f, "kube_job_status_failed", &with("reason", "DeadlineExceeded")), Some(0.0));
    assert_eq!(
        val(&f, "kube_job_status_failed", &base),
        None,
        "a known reason: no count without reason"
    );
    assert_eq!(val(&f, "kube_job_status_succeeded", &base), Some(0.0));
    assert_eq!(val(&f, "kube_job_status_active", &base), Some(0.0));
    assert_eq!(val(&f, "kube_job_status_start_time", &base), Some(1_740_823_200.0));

    // An unknown reason: the count under no reason.
    let mut j2 = j.clone();
    j2.status.as_mut().expect("status").conditions.as_mut().expect("conds")[0].reason = Some("PodFailurePolicy".into());
    let f = render(&jobs::JobSummary::from_object(&j2), "gen3");
    assert_eq!(val(&f, "kube_job_status_failed", &base), Some(2.0));
    assert_eq!(
        val(&f, "kube_job_status_failed", &with("reason", "BackoffLimitExceeded")),
        Some(0.0)
    );

    let cj: k8s_openapi::api::batch::v1::CronJob = obj(json!({
        "metadata": {"name": "usersync", "namespace": "gen3", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"schedule": "*/30 * * * *", "concurrencyPolicy": "Forbid",
                 "jobTemplate": {"spec": {"template": {"metadata": {"labels": {"app": "gen3job"}}}}}},
        "status": {"lastScheduleTime": "2025-03-01T10:00:00Z", "lastSuccessfulTime": "2025-03-01T09:30:07Z",
                   "active": [{"kind": "Job", "name": "usersync-29012345"}]}
    }));
    let f = render(&jobs::CronJobSummary::from_object(&cj), "gen3");
    let base = [("namespace", "gen3"), ("cronjob", "usersync"), ("service", "gen3job")];
    assert_eq!(val(&f, "kube_cronjob_status_last_schedule_time", &base), Some(1_740_823_200.0));
    assert_eq!(val(&f, "kube_cronjob_status_last_successful_time", &base), Some(1_740_821_407.0));
    assert_eq!(val(&f, "kube_cronjob_spec_suspend", &base), Some(0.0));
    assert_eq!(val(&f, "kube_cronjob_status_active", &base), Some(1.0));
    assert_eq!(val(&f, "kube_cronjob_next_schedule_time", &base), Some(1_740_825_000.0), "10:30Z");
    let mut info = base.to_vec();
    info.extend([
        ("schedule", "*/30 * * * *"),
        ("concurrency_policy", "Forbid"),
        ("timezone", "local"),
    ]);
    assert_eq!(val(&f, "kube_cronjob_info", &info), Some(1.0));

    // Suspended, or in a time zone: no next time.
    let mut c2 = cj.clone();
    c2.spec.as_mut().expect("spec").suspend = Some(true);
    let f = render(&jobs::CronJobSummary::from_object(&c2), "gen3");
    assert_eq!(val(&f, "kube_cronjob_spec_suspend", &base), Some(1.0));
    assert!(all(&f, "kube_cronjob_next_schedule_time").is_empty());
    let mut c3 = cj.clone();
    c3.spec.as_mut().expect("spec").time_zone = Some("America/Chicago".into());
    assert!(
        all(
            &render(&jobs::CronJobSummary::from_object(&c3), "gen3"),
            "kube_cronjob_next_schedule_time"
        )
        .is_empty()
    );
}

#[test]
fn pvc_pending_and_node_not_ready() {
    let pvc: k8s_openapi::api::core::v1::PersistentVolumeClaim = obj(json!({
        "metadata": {"name": "data-es-0", "namespace": "gen3"},
        "spec": {"storageClassName": "gp3", "resources": {"requests": {"storage": "10Gi"}}},
        "status": {"phase": "Pending"}
    }));
    let f = render(&cluster::PvcSummary::from_object(&pvc), "gen3");
    let l = |p: &'static str| vec![("namespace", "gen3"), ("persistentvolumeclaim", "data-es-0"), ("phase", p)];
    assert_eq!(val(&f, "kube_persistentvolumeclaim_status_phase", &l("Pending")), Some(1.0));
    assert_eq!(val(&f, "kube_persistentvolumeclaim_status_phase", &l("Bound")), Some(0.0));
    assert_eq!(val(&f, "kube_persistentvolumeclaim_status_phase", &l("Lost")), Some(0.0));
    assert_eq!(
        val(
            &f,
            "kube_persistentvolumeclaim_resource_requests_storage_bytes",
            &[("namespace", "gen3"), ("persistentvolumeclaim", "data-es-0")]
        ),
        Some(10_737_418_240.0)
    );

    let node: k8s_openapi::api::core::v1::Node = obj(json!({
        "metadata": {"name": "node-2"},
        "spec": {"unschedulable": true},
        "status": {
            "allocatable": {"cpu": "3920m", "memory": "15Gi", "pods": "110"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "False", "reason": "KubeletNotReady"}
            ]
        }
    }));
    let f = render(&cluster::NodeSummary::from_object(&node), "");
    let c = |cond: &'static str, st: &'static str| vec![("node", "node-2"), ("condition", cond), ("status", st)];
    assert_eq!(val(&f, "kube_node_status_condition", &c("Ready", "false")), Some(1.0));
    assert_eq!(val(&f, "kube_node_status_condition", &c("Ready", "true")), Some(0.0));
    assert_eq!(val(&f, "kube_node_status_condition", &c("Ready", "unknown")), Some(0.0));
    assert_eq!(val(&f, "kube_node_status_condition", &c("MemoryPressure", "false")), Some(1.0));
    assert_eq!(val(&f, "kube_node_spec_unschedulable", &[("node", "node-2")]), Some(1.0));
    assert_eq!(
        val(
            &f,
            "kube_node_status_allocatable",
            &[("node", "node-2"), ("resource", "cpu"), ("unit", "core")]
        ),
        Some(3.92)
    );
    assert!(f.samples.iter().all(|s| !s.labels.iter().any(|(k, _)| k == "namespace")));
}

fn report(store: &mut Store<pods::PodSummary>, ts: i64) -> Frame {
    let mut f = Frame::new("kubernetes");
    store.render(&mut Out {
        frame: &mut f,
        ts,
        job: "kubernetes",
    });
    f
}

fn listed(store: &mut Store<pods::PodSummary>, pods: Vec<Pod>) {
    store.apply(Ev::Init);
    for p in pods {
        store.apply(Ev::InitApply(p));
    }
    store.apply(Ev::InitDone);
}

#[test]
fn deleted_pod_and_left_state_go_stale() {
    let mut store = Store::<pods::PodSummary>::new("gen3");
    let other: Pod = obj(json!({"metadata": {"name": "indexd-1", "uid": "u2", "labels": {"app": "indexd"}},
                                "spec": {"containers": [{"name": "indexd"}]}, "status": {"phase": "Running"}}));
    listed(&mut store, vec![crashloop_pod(), other]);
    assert!(store.progress.synced);
    let f1 = report(&mut store, 1000);
    assert!(f1.samples.iter().all(|s| !is_stale(s.value)));
    let n1 = f1.samples.len();

    // Unchanged: the same series, no marker.
    let f2 = report(&mut store, 2000);
    assert_eq!(f2.samples.len(), n1);
    assert!(f2.samples.iter().all(|s| !is_stale(s.value) && s.timestamp_ms == 2000));

    // The container recovers: the waiting reason goes stale, nothing else.
    let mut p = crashloop_pod();
    let cs = &mut p.status.as_mut().expect("status").container_statuses.as_mut().expect("cs")[0];
    cs.state = Some(obj(json!({"running": {}})));
    store.apply(Ev::Apply(p));
    let f3 = report(&mut store, 3000);
    let stale: Vec<_> = f3.samples.iter().filter(|s| is_stale(s.value)).collect();
    assert_eq!(stale.len(), 1, "{stale:#?}");
    assert_eq!(name(stale[0]), "kube_pod_container_status_waiting_reason");
    assert!(stale[0].labels.iter().any(|(k, v)| k == "reason" && v == "CrashLoopBackOff"));
    assert_eq!(stale[0].timestamp_ms, 3000);
    assert_eq!(f3.samples.len(), n1, "one series less, one marker");

    // Deleted: every one of its series gets a marker, the other pod's stay.
    store.apply(Ev::Delete(crashloop_pod()));
    let f4 = report(&mut store, 4000);
    let stale: Vec<_> = f4.samples.iter().filter(|s| is_stale(s.value)).collect();
    assert!(!stale.is_empty());
    assert!(
        stale
            .iter()
            .all(|s| s.labels.iter().any(|(k, v)| k == "pod" && v == "fence-deployment-7d9f8b6c5-x2x4z"))
    );
    let live: Vec<_> = f4.samples.iter().filter(|s| !is_stale(s.value)).collect();
    assert!(live.iter().all(|s| s.labels.iter().any(|(k, v)| k == "pod" && v == "indexd-1")));
    assert_eq!(stale.len() + live.len(), f3.samples.len() - 1, "the marker of f3 is not repeated");
    // Markers are sent once.
    let f5 = report(&mut store, 5000);
    assert!(f5.samples.iter().all(|s| !is_stale(s.value)));
    assert_eq!(store.len(), 1);
}

#[test]
fn relist_forgets_objects_deleted_during_the_gap() {
    let mut store = Store::<pods::PodSummary>::new("gen3");
    let a: Pod = obj(json!({"metadata": {"name": "a", "uid": "1"}, "status": {"phase": "Running"}}));
    let b: Pod = obj(json!({"metadata": {"name": "b", "uid": "2"}, "status": {"phase": "Running"}}));
    listed(&mut store, vec![a.clone(), b]);
    let _ = report(&mut store, 1000);
    // 410 Gone: a fresh list without b. Until it is done, b is still known.
    store.apply(Ev::Init);
    store.apply(Ev::InitApply(a));
    assert_eq!(store.len(), 2, "the old state serves until the list is complete");
    store.apply(Ev::InitDone);
    assert_eq!(store.len(), 1);
    assert_eq!(store.progress.relists, 1);
    let f = report(&mut store, 2000);
    let stale: Vec<_> = f.samples.iter().filter(|s| is_stale(s.value)).collect();
    assert!(!stale.is_empty() && stale.iter().all(|s| s.labels.iter().any(|(k, v)| k == "pod" && v == "b")));

    // Recreated under the same name with a new uid: the old uid's series end.
    let b2: Pod = obj(json!({"metadata": {"name": "a", "uid": "3"}, "status": {"phase": "Pending"}}));
    store.apply(Ev::Apply(b2));
    let f = report(&mut store, 3000);
    assert!(
        f.samples
            .iter()
            .filter(|s| is_stale(s.value))
            .all(|s| s.labels.iter().any(|(k, v)| k == "uid" && v == "1"))
    );
    assert_eq!(
        val(
            &f,
            "kube_pod_status_phase",
            &[("namespace", "gen3"), ("pod", "a"), ("uid", "3"), ("phase", "Pending")]
        ),
        Some(1.0)
    );

    // Forbidden: everything known is dropped, and so goes stale.
    store.forbidden();
    let f = report(&mut store, 4000);
    assert!(!f.samples.is_empty() && f.samples.iter().all(|s| is_stale(s.value)));
    assert!(store.progress.forbidden && !store.progress.synced && store.progress.settled);
}

fn event(uid: &str, kind: &str, name: &str, reason: &str, type_: &str, count: i32) -> Event {
    obj(json!({
        "metadata": {"name": format!("{name}.{uid}"), "namespace": "gen3", "uid": uid},
        "involvedObject": {"kind": kind, "name": name, "namespace": "gen3"},
        "reason": reason, "type": type_, "count": count, "message": "m",
    }))
}

fn event_report(c: &mut EventCounter, ts: i64) -> Frame {
    let mut f = Frame::new("kubernetes");
    c.render(&mut Out {
        frame: &mut f,
        ts,
        job: "kubernetes",
    });
    f
}

fn ev_labels<'a>(kind: &'a str, name: &'a str, reason: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("namespace", "gen3"),
        ("kind", kind),
        ("name", name),
        ("reason", reason),
        ("type", "Warning"),
    ]
}

#[test]
fn events_count_occurrences_since_start_without_double_counting() {
    let mut c = EventCounter::new(&["Warning".to_string()], 100, 1);
    let backoff = ev_labels("Pod", "fence-1", "BackOff");
    // Baseline: what is there at start is not counted, but the series exists.
    c.apply(0, Ev::Init);
    c.apply(0, Ev::InitApply(event("e1", "Pod", "fence-1", "BackOff", "Warning", 7)));
    c.apply(0, Ev::InitApply(event("e2", "Pod", "fence-1", "Scheduled", "Normal", 1)));
    c.apply(0, Ev::InitDone);
    let f = event_report(&mut c, 1000);
    assert_eq!(val(&f, "kube_events_total", &backoff), Some(0.0));
    assert_eq!(all(&f, "kube_events_total").len(), 1, "Normal events are not counted");

    // The same Event occurs 3 more times (count 7 → 10).
    c.apply(0, Ev::Apply(event("e1", "Pod", "fence-1", "BackOff", "Warning", 10)));
    assert_eq!(val(&event_report(&mut c, 2000), "kube_events_total", &backoff), Some(3.0));
    // A new Event for the same object and reason adds its count.
    c.apply(0, Ev::Apply(event("e3", "Pod", "fence-1", "BackOff", "Warning", 1)));
    assert_eq!(val(&event_report(&mut c, 3000), "kube_events_total", &backoff), Some(4.0));
    // A relist (410 Gone) brings e1 again with count 12: +2 only; e3 is gone.
    c.apply(0, Ev::Init);
    c.apply(0, Ev::InitApply(event("e1", "Pod", "fence-1", "BackOff", "Warning", 12)));
    c.apply(0, Ev::InitDone);
    assert_eq!(val(&event_report(&mut c, 4000), "kube_events_total", &backoff), Some(6.0));
    assert_eq!(c.watched(0), 1);
    assert_eq!(c.progress(0).relists, 1);
    // A MODIFIED event without a new occurrence (a message change): nothing.
    c.apply(0, Ev::Apply(event("e1", "Pod", "fence-1", "BackOff", "Warning", 12)));
    assert_eq!(val(&event_report(&mut c, 5000), "kube_events_total", &backoff), Some(6.0));
    // Deleting an Event (its TTL) does not lower the counter.
    c.apply(0, Ev::Delete(event("e1", "Pod", "fence-1", "BackOff", "Warning", 12)));
    assert_eq!(val(&event_report(&mut c, 6000), "kube_events_total", &backoff), Some(6.0));
    assert_eq!(c.watched(0), 0);
}

#[test]
fn a_new_event_series_starts_at_zero_and_series_are_bounded() {
    let mut c = EventCounter::new(&["Warning".to_string()], 2, 1);
    c.apply(0, Ev::Init);
    c.apply(0, Ev::InitDone);
    c.apply(0, Ev::Apply(event("a", "Pod", "p1", "BackOff", "Warning", 1)));
    let f = event_report(&mut c, 1000);
    assert_eq!(
        val(&f, "kube_events_total", &ev_labels("Pod", "p1", "BackOff")),
        Some(0.0),
        "first sent at 0"
    );
    let f = event_report(&mut c, 2000);
    assert_eq!(
        val(&f, "kube_events_total", &ev_labels("Pod", "p1", "BackOff")),
        Some(1.0),
        "then counted"
    );
    // series.count (events.k8s.io events) counts too.
    let mut e: Event = event("b", "Job", "usersync-1", "BackoffLimitExceeded", "Warning", 0);
    e.count = None;
    e.series = Some(obj(json!({"count": 4, "lastObservedTime": "2025-03-01T10:00:00.000000Z"})));
    c.apply(0, Ev::Apply(e));
    let _ = event_report(&mut c, 3000);
    let f = event_report(&mut c, 4000);
    assert_eq!(
        val(&f, "kube_events_total", &ev_labels("Job", "usersync-1", "BackoffLimitExceeded")),
        Some(4.0)
    );
    // p1 is bumped again, then a third series: the least recently bumped
    // (usersync-1) goes, with a staleness marker.
    c.apply(0, Ev::Apply(event("a", "Pod", "p1", "BackOff", "Warning", 2)));
    c.apply(
        0,
        Ev::Apply(event("c", "PersistentVolumeClaim", "data-es-0", "ProvisioningFailed", "Warning", 1)),
    );
    let f = event_report(&mut c, 5000);
    assert_eq!(c.series_len(), 2);
    assert_eq!(c.evicted_total(), 1);
    let gone = val(&f, "kube_events_total", &ev_labels("Job", "usersync-1", "BackoffLimitExceeded")).expect("marker");
    assert!(is_stale(gone));
    assert_eq!(val(&f, "kube_events_total", &ev_labels("Pod", "p1", "BackOff")), Some(2.0));
    assert_eq!(
        val(
            &f,
            "kube_events_total",
            &ev_labels("PersistentVolumeClaim", "data-es-0", "ProvisioningFailed")
        ),
        Some(0.0)
    );
    let f = event_report(&mut c, 6000);
    assert!(f.samples.iter().all(|s| !is_stale(s.value)), "the marker is sent once");
}

#[test]
fn normal_events_are_counted_when_configured() {
    let mut c = EventCounter::new(&["Normal".to_string(), "Warning".to_string()], 10, 2);
    c.apply(1, Ev::Init);
    c.apply(1, Ev::InitDone);
    c.apply(1, Ev::Apply(event("n", "Pod", "p", "Pulled", "Normal", 1)));
    let _ = event_report(&mut c, 1000);
    let f = event_report(&mut c, 2000);
    let l = [
        ("namespace", "gen3"),
        ("kind", "Pod"),
        ("name", "p"),
        ("reason", "Pulled"),
        ("type", "Normal"),
    ];
    assert_eq!(val(&f, "kube_events_total", &l), Some(1.0));
    // Namespace 0 has not listed yet.
    assert!(!c.progress(0).settled && c.progress(1).settled);
    c.failed(0);
    assert!(c.progress(0).settled && !c.progress(0).synced);
}

#[test]
fn usage_has_the_pods_service_and_goes_stale() {
    let mut pods_store = Store::<pods::PodSummary>::new("gen3");
    listed(&mut pods_store, vec![crashloop_pod()]);
    let mut u = usage::UsageStore::new("gen3");
    u.set(obj(json!({
        "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
        "items": [{
            "metadata": {"name": "fence-deployment-7d9f8b6c5-x2x4z", "namespace": "gen3"},
            "timestamp": "2025-03-01T10:00:00Z", "window": "15s",
            "containers": [{"name": "fence", "usage": {"cpu": "123456789n", "memory": "204800Ki"}}]
        }]
    })));
    let mut f = Frame::new("kubernetes");
    u.render(
        Some(&pods_store),
        &mut Out {
            frame: &mut f,
            ts: 1000,
            job: "kubernetes",
        },
    );
    let l = [
        ("namespace", "gen3"),
        ("pod", "fence-deployment-7d9f8b6c5-x2x4z"),
        ("container", "fence"),
        ("service", "fence"),
    ];
    assert_eq!(val(&f, "container_memory_working_set_bytes", &l), Some(209_715_200.0));
    let cpu = val(&f, "kube_pod_container_cpu_usage_cores", &l).expect("cpu");
    assert!((cpu - 0.123_456_789).abs() < 1e-12);
    // The API stops answering: both series end.
    u.failed(false, false);
    let mut f = Frame::new("kubernetes");
    u.render(
        Some(&pods_store),
        &mut Out {
            frame: &mut f,
            ts: 2000,
            job: "kubernetes",
        },
    );
    assert_eq!(f.samples.len(), 2);
    assert!(f.samples.iter().all(|s| is_stale(s.value)));
}

/// The report of `model` as one frame, and the number of frames it took.
async fn full_report(model: &Model, ts: i64, frame_samples: usize) -> (Frame, usize) {
    let frames = Arc::new(Mutex::new(Vec::new()));
    let sent = model
        .report(ts, "kubernetes", "kubernetes", frame_samples, |f| {
            let frames = frames.clone();
            async move {
                lock(&frames).push(f);
                true
            }
        })
        .await;
    assert!(sent);
    let frames = std::mem::take(&mut *lock(&frames));
    let n = frames.len();
    let mut all = Frame::new("kubernetes");
    for f in frames {
        all.samples.extend(f.samples);
        all.metadata.extend(f.metadata);
    }
    (all, n)
}

fn pods_model(pods: &Arc<Mutex<Store<pods::PodSummary>>>, nodes: &Arc<Mutex<Store<cluster::NodeSummary>>>) -> Model {
    Model {
        slots: vec![
            Slot {
                kind: "pods",
                store: pods.clone(),
            },
            Slot {
                kind: "nodes",
                store: nodes.clone(),
            },
        ],
        usage: Vec::new(),
        events: None,
        namespaces: vec!["gen3".into()],
        max_event_series: 10,
        reported: Default::default(),
    }
}

#[tokio::test]
async fn report_has_self_metrics_and_is_empty_until_something_is_listed() {
    let pods_store = Arc::new(Mutex::new(Store::<pods::PodSummary>::new("gen3")));
    let nodes = Arc::new(Mutex::new(Store::<cluster::NodeSummary>::new("")));
    let model = pods_model(&pods_store, &nodes);
    assert!(!model.settled());
    let (f, n) = full_report(&model, 1000, 0).await;
    assert!(f.samples.is_empty() && n == 1, "nothing listed yet: one empty report");
    // Nodes are refused; pods listed.
    lock(&nodes).forbidden();
    assert!(!model.settled());
    listed(&mut lock(&pods_store), vec![crashloop_pod()]);
    assert!(model.settled());
    let (f, _) = full_report(&model, 2000, 0).await;
    assert_eq!(val(&f, "csoc_agent_kubernetes_objects", &[("kind", "pods")]), Some(1.0));
    assert_eq!(val(&f, "csoc_agent_kubernetes_objects", &[("kind", "nodes")]), Some(0.0));
    assert_eq!(val(&f, "csoc_agent_kubernetes_watch_relists_total", &[("kind", "pods")]), Some(0.0));
    assert_eq!(
        val(&f, "csoc_agent_kubernetes_forbidden", &[("namespace", "gen3"), ("kind", "pods")]),
        Some(0.0)
    );
    assert_eq!(val(&f, "csoc_agent_kubernetes_forbidden", &[("kind", "nodes")]), Some(1.0));
    assert!(!all(&f, "kube_pod_info").is_empty());
    // Every family has its metadata.
    for s in &f.samples {
        assert!(f.metadata.iter().any(|m| m.name == name(s)), "no metadata for {}", name(s));
    }
    // The Role is withdrawn: the pods' series end with staleness markers.
    lock(&pods_store).forbidden();
    let (f, _) = full_report(&model, 3000, 0).await;
    let stale = all(&f, "kube_pod_info");
    assert!(stale.len() == 1 && is_stale(stale[0].value), "{stale:?}");
    assert_eq!(
        val(&f, "csoc_agent_kubernetes_forbidden", &[("namespace", "gen3"), ("kind", "pods")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_large_report_is_sent_in_frames_with_the_same_series() {
    let pods_store = Arc::new(Mutex::new(Store::<pods::PodSummary>::new("gen3")));
    let nodes = Arc::new(Mutex::new(Store::<cluster::NodeSummary>::new("")));
    let model = pods_model(&pods_store, &nodes);
    let many: Vec<Pod> = (0..300)
        .map(|i| {
            let mut p = crashloop_pod();
            p.metadata.name = Some(format!("fence-{i}"));
            p.metadata.uid = Some(format!("uid-{i}"));
            p
        })
        .collect();
    listed(&mut lock(&pods_store), many);
    lock(&nodes).forbidden();
    let (one, n1) = full_report(&model, 1000, 0).await;
    assert_eq!(n1, 1);
    let (split, n2) = full_report(&model, 2000, 500).await;
    assert!(n2 >= 300 * 17 / 500, "{n2} frames");
    let key = |f: &Frame| {
        let mut v: Vec<String> = f.samples.iter().map(|s| format!("{:?}={}", s.labels, s.value)).collect();
        v.sort();
        v
    };
    assert_eq!(key(&one), key(&split), "the same series either way");
    // Deletions during a split report are reported as gone, once.
    lock(&pods_store).apply(Ev::Delete(obj(json!({"metadata": {"name": "fence-7"}}))));
    let (f, _) = full_report(&model, 3000, 500).await;
    let stale: Vec<_> = f.samples.iter().filter(|s| is_stale(s.value)).collect();
    assert_eq!(stale.len(), 17, "every series of the pod: {stale:#?}");
    assert!(stale.iter().all(|s| s.labels.iter().any(|(k, v)| k == "pod" && v == "fence-7")));
    let (f, _) = full_report(&model, 4000, 500).await;
    assert!(f.samples.iter().all(|s| !is_stale(s.value)));
}

#[test]
fn a_store_report_resumes_where_it_stopped() {
    let mut store = Store::<pods::PodSummary>::new("gen3");
    let a: Pod = obj(json!({"metadata": {"name": "a", "uid": "1"}, "status": {"phase": "Running"}}));
    let b: Pod = obj(json!({"metadata": {"name": "b", "uid": "2"}, "status": {"phase": "Running"}}));
    let c: Pod = obj(json!({"metadata": {"name": "c", "uid": "3"}, "status": {"phase": "Running"}}));
    listed(&mut store, vec![a, b.clone()]);
    let mut f = Frame::new("k");
    let mut out = Out {
        frame: &mut f,
        ts: 1,
        job: "kubernetes",
    };
    assert!(!store.render_some(&mut out, 1), "stops at the limit");
    // Between two frames: b deleted, c added.
    store.apply(Ev::Delete(b));
    store.apply(Ev::Apply(c));
    let mut f2 = Frame::new("k");
    let mut out = Out {
        frame: &mut f2,
        ts: 1,
        job: "kubernetes",
    };
    assert!(store.render_some(&mut out, usize::MAX));
    let pods_in = |f: &Frame| {
        let mut p: Vec<String> = f
            .samples
            .iter()
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == "pod").map(|(_, v)| v.clone()))
            .collect();
        p.dedup();
        p
    };
    let mut seen = pods_in(&f);
    seen.extend(pods_in(&f2));
    seen.sort();
    seen.dedup();
    assert!(!seen.contains(&"c".to_string()), "c waits for the next report");
    assert!(
        f.samples.iter().chain(&f2.samples).all(|s| !is_stale(s.value)),
        "b was never sent: no marker"
    );
    let f3 = report(&mut store, 2);
    assert_eq!(pods_in(&f3).iter().filter(|p| *p == "c").count(), 1);
    assert!(
        f3.samples
            .iter()
            .all(|s| !is_stale(s.value) || s.labels.iter().any(|(k, v)| k == "pod" && v == "b"))
    );
}

#[test]
fn config_validation_names_the_field() {
    let ok = KubernetesConfig {
        enabled: true,
        namespaces: vec!["gen3".into(), "gen3-staging".into()],
        ..Default::default()
    };
    ok.validate().expect("valid");
    let bad = |c: KubernetesConfig, field: &str| {
        let e = c.validate().expect_err("invalid").to_string();
        assert!(e.contains(&format!("sources.kubernetes.{field}")), "{e}");
    };
    bad(
        KubernetesConfig {
            enabled: true,
            ..Default::default()
        },
        "namespaces",
    );
    for ns in ["Gen3", "-gen3", "gen3-", "gen_3", "", &"a".repeat(64)] {
        bad(
            KubernetesConfig {
                namespaces: vec![ns.to_string()],
                ..ok.clone()
            },
            "namespaces",
        );
    }
    bad(
        KubernetesConfig {
            namespaces: vec!["gen3".into(), "gen3".into()],
            ..ok.clone()
        },
        "namespaces",
    );
    bad(
        KubernetesConfig {
            job: String::new(),
            ..ok.clone()
        },
        "job",
    );
    bad(
        KubernetesConfig {
            disable: vec!["ingresses".into()],
            ..ok.clone()
        },
        "disable",
    );
    bad(
        KubernetesConfig {
            forbidden_retry: std::time::Duration::from_millis(10),
            ..ok.clone()
        },
        "forbidden_retry",
    );
    bad(
        KubernetesConfig {
            interval: Some(std::time::Duration::from_millis(500)),
            ..ok.clone()
        },
        "interval",
    );
    let mut c = ok.clone();
    c.events.types = vec!["Error".into()];
    bad(c, "events.types");
    let mut c = ok.clone();
    c.events.max_series = 0;
    bad(c, "events.max_series");
    let mut c = ok.clone();
    c.events.types.clear();
    bad(c.clone(), "events.types");
    c.disable.push("events".into());
    c.validate().expect("no types is fine when events are not watched");
    assert_eq!(ok.event_field_selector().as_deref(), Some("type=Warning"));
}

#[test]
fn yaml_config_parses_with_defaults() {
    let cfg = crate::config::AgentConfig::from_yaml(
        "sources:\n  kubernetes:\n    enabled: true\n    namespaces: [gen3]\n    disable: [nodes, metrics]\n    forbidden_retry: 1m\n    interval: 30s\n    events: {max_series: 500}\n",
        std::path::Path::new("a.yml"),
    )
    .expect("parse");
    let k = &cfg.sources.kubernetes;
    assert!(k.enabled);
    assert_eq!(k.namespaces, ["gen3"]);
    assert_eq!(k.forbidden_retry, std::time::Duration::from_secs(60));
    assert_eq!(k.interval, Some(std::time::Duration::from_secs(30)));
    assert_eq!(k.events.max_series, 500);
    assert_eq!(k.events.types, ["Warning"]);
    assert_eq!(k.job, "kubernetes");
    assert!(!k.watches("nodes") && k.watches("pods"));
    cfg.validate().expect("valid");
    let names: Vec<String> = crate::build_sources(&cfg).expect("sources").into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"kubernetes".to_string()), "{names:?}");

    let e = crate::config::AgentConfig::from_yaml("sources:\n  kubernetes:\n    namespace: gen3\n", std::path::Path::new("a.yml"))
        .expect_err("unknown field");
    assert!(e.to_string().contains("namespace"), "{e}");
    let cfg = crate::config::AgentConfig::from_yaml("sources:\n  kubernetes:\n    enabled: true\n", std::path::Path::new("a.yml"))
        .expect("parse");
    assert!(
        cfg.validate()
            .expect_err("no namespace")
            .to_string()
            .contains("sources.kubernetes.namespaces")
    );
}

#[tokio::test]
async fn without_credentials_the_source_reports_empty_and_counts_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-kubeconfig");
    let cfg = KubernetesConfig {
        enabled: true,
        namespaces: vec!["gen3".into()],
        ..Default::default()
    };
    let src = Box::new(KubernetesSource::new(&cfg, Some(missing)).expect("valid"));
    let (cx, mut rx) = SourceContext::for_test("kubernetes", std::time::Duration::from_millis(50));
    let stop = cx.shutdown.clone();
    let metrics = cx.metrics.clone();
    let task = tokio::spawn(src.run(cx));
    let f = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("a report in time")
        .expect("a frame");
    assert!(f.samples.is_empty());
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("stops on shutdown")
        .expect("no panic");
    assert_eq!(metrics.samples_for("kubernetes"), 0);
}

#[test]
fn flags_turn_the_source_on_and_name_the_agent() {
    use clap::{CommandFactory, Parser};
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agent.yml");
    std::fs::write(
        &file,
        "agent_name: from-file\nsources:\n  kubernetes:\n    namespaces: [gen3]\n    job: kube-state-metrics\n",
    )
    .expect("write");
    let args = crate::cli::Args::try_parse_from([
        "csoc-agent",
        "--config",
        file.to_str().expect("utf-8 path"),
        "--kubernetes-namespace",
        "gen3",
        "--kubernetes-namespace",
        "gen3-staging",
        "--agent-name",
        "alpha-agent",
    ])
    .expect("flags");
    let cfg = args.resolve().expect("resolve");
    let k = &cfg.sources.kubernetes;
    assert!(k.enabled);
    assert_eq!(k.namespaces, ["gen3", "gen3-staging"], "added once each, after the file's");
    assert_eq!(k.job, "kube-state-metrics");
    assert_eq!(cfg.agent_name.as_deref(), Some("alpha-agent"), "the flag wins over the file");
    cfg.validate().expect("valid");

    let args = crate::cli::Args::try_parse_from(["csoc-agent", "--kubernetes-namespace", "Gen3"]).expect("flags");
    let e = args.resolve().expect("resolve").validate().expect_err("bad namespace").to_string();
    assert!(e.contains("sources.kubernetes.namespaces") && e.contains("Gen3"), "{e}");

    // --agent-name reads CSOC_AGENT_NAME (clap env; the process environment
    // cannot be changed in a threaded test, so the declaration is checked).
    let cmd = crate::cli::Args::command();
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("agent-name"))
        .expect("--agent-name");
    assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some("CSOC_AGENT_NAME"));
    assert!(cmd.get_arguments().any(|a| a.get_long() == Some("kubernetes-namespace")));

    for bad in ["", "  ", "a\nb", " padded"] {
        let cfg = crate::config::AgentConfig {
            agent_name: Some(bad.to_string()),
            ..Default::default()
        };
        let e = cfg.validate().expect_err("bad agent name").to_string();
        assert!(e.contains("agent_name"), "{e}");
    }
    let long = crate::config::AgentConfig {
        agent_name: Some("x".repeat(129)),
        ..Default::default()
    };
    assert!(long.validate().is_err());
}

/// A minimal API server: pods in gen3 are listed (one pod) and then watched
/// (one more pod ADDED, then the stream stays open); deployments and nodes
/// answer 403, the metrics API 404; every other kind lists empty and
/// watches forever.
async fn mini_api_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::http::{StatusCode, Uri, header};
    use axum::response::IntoResponse;
    async fn handle(uri: Uri) -> axum::response::Response {
        let path = uri.path().to_string();
        let watch = uri.query().is_some_and(|q| q.contains("watch=true"));
        let json = |code: StatusCode, body: serde_json::Value| {
            (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        };
        if path.ends_with("/deployments") || path == "/api/v1/nodes" {
            return json(
                StatusCode::FORBIDDEN,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                       "message": "forbidden: User \"system:serviceaccount:gen3:csoc-agent\" cannot list resource"}),
            );
        }
        if path.starts_with("/apis/metrics.k8s.io") {
            return json(
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            );
        }
        if !watch {
            let items = if path == "/api/v1/namespaces/gen3/pods" {
                vec![serde_json::to_value(crashloop_pod()).expect("json")]
            } else {
                vec![]
            };
            return json(
                StatusCode::OK,
                json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "10"}, "items": items}),
            );
        }
        let mut lines = Vec::new();
        if path == "/api/v1/namespaces/gen3/pods" {
            let added = json!({"type": "ADDED", "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "indexd-1", "namespace": "gen3", "uid": "u-indexd", "resourceVersion": "11", "labels": {"app": "indexd"}},
                "status": {"phase": "Running"}}});
            lines.push(Ok::<_, std::io::Error>(format!("{added}\n")));
        }
        let body = tokio_stream::StreamExt::chain(tokio_stream::iter(lines), tokio_stream::pending());
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from_stream(body),
        )
            .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(handle);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

#[tokio::test]
async fn watches_through_the_api_and_degrades_on_403_and_404() {
    let (addr, server) = mini_api_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster: {{server: \"http://{addr}\"}}\nusers:\n- name: u\n  user: {{token: t0ken}}\ncontexts:\n- name: c\n  context: {{cluster: k, user: u, namespace: gen3}}\n"
        ),
    )
    .expect("write");
    let cfg = KubernetesConfig {
        enabled: true,
        namespaces: vec!["gen3".into()],
        sync_timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    };
    let src = Box::new(KubernetesSource::new(&cfg, Some(kubeconfig)).expect("valid"));
    let (cx, mut rx) = SourceContext::for_test("kubernetes", std::time::Duration::from_millis(100));
    let stop = cx.shutdown.clone();
    let task = tokio::spawn(src.run(cx));
    let mut seen_watched_pod = false;
    let mut first: Option<Frame> = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline && !seen_watched_pod {
        let f = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("a report in time")
            .expect("a frame");
        seen_watched_pod = f
            .samples
            .iter()
            .any(|s| name(s) == "kube_pod_info" && s.labels.iter().any(|(k, v)| k == "pod" && v == "indexd-1"));
        first.get_or_insert(f);
    }
    let first = first.expect("a report");
    assert!(seen_watched_pod, "the pod ADDED on the watch is reported");
    assert_eq!(
        val(
            &first,
            "kube_pod_container_status_waiting_reason",
            &[
                ("namespace", "gen3"),
                ("pod", "fence-deployment-7d9f8b6c5-x2x4z"),
                ("uid", "0b7f3c1e-aaaa-bbbb-cccc-000000000001"),
                ("service", "fence"),
                ("container", "fence"),
                ("reason", "CrashLoopBackOff")
            ]
        ),
        Some(1.0),
        "the listed pod is in the first report"
    );
    assert_eq!(
        val(
            &first,
            "csoc_agent_kubernetes_forbidden",
            &[("namespace", "gen3"), ("kind", "deployments")]
        ),
        Some(1.0)
    );
    assert_eq!(val(&first, "csoc_agent_kubernetes_forbidden", &[("kind", "nodes")]), Some(1.0));
    assert_eq!(
        val(
            &first,
            "csoc_agent_kubernetes_forbidden",
            &[("namespace", "gen3"), ("kind", "jobs")]
        ),
        Some(0.0)
    );
    assert!(all(&first, "kube_deployment_spec_replicas").is_empty());
    assert!(
        all(&first, "container_memory_working_set_bytes").is_empty(),
        "metrics API not served"
    );
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("stops on shutdown")
        .expect("no panic");
    server.abort();
}

#[test]
fn example_config_shows_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.yml");
    let cfg = crate::config::AgentConfig::from_file(&path).expect("example parses");
    let k = &cfg.sources.kubernetes;
    let d = KubernetesConfig::default();
    assert_eq!(
        (
            k.enabled,
            &k.namespaces,
            &k.job,
            &k.disable,
            k.forbidden_retry,
            k.metrics_api_retry,
            k.sync_timeout
        ),
        (
            d.enabled,
            &d.namespaces,
            &d.job,
            &d.disable,
            d.forbidden_retry,
            d.metrics_api_retry,
            d.sync_timeout
        )
    );
    assert_eq!((&k.events.types, k.events.max_series), (&d.events.types, d.events.max_series));
    assert_eq!(k.frame_samples, d.frame_samples);
    assert_eq!(
        (&k.argocd.namespaces, k.argocd.all_destinations),
        (&d.argocd.namespaces, d.argocd.all_destinations)
    );
    // Every field is in the example.
    let text = std::fs::read_to_string(&path).expect("read");
    for field in [
        "namespaces:",
        "job: kubernetes",
        "disable:",
        "forbidden_retry:",
        "metrics_api_retry:",
        "sync_timeout:",
        "frame_samples:",
        "types:",
        "max_series:",
        "all_destinations:",
    ] {
        assert!(text.contains(field), "{field} is not documented");
    }
}
