//! Builders of Kubernetes objects in their real JSON shapes (as
//! `kubectl get -o json` shows them), for [`super::FakeKube::apply`].
//!
//! Builders return a `serde_json::Value`; helpers named `set_*` change one
//! in place (a pod's container states, restart counts, resources, owners).
//! `uid`, `resourceVersion` and `creationTimestamp` are left to the fake,
//! which sets them on apply: to point an ownerReference or a targetRef at
//! an object, apply it first and use the returned object's uid.
//!
//! ```
//! use csoc_tests::fakekube::objects::{self, pod, set_waiting, set_restarts};
//! let mut p = pod("gen3", "fence-6f7c9-x2x9q", "fence", "Running");
//! set_waiting(&mut p, "fence", "CrashLoopBackOff", "back-off 5m0s restarting failed container");
//! set_restarts(&mut p, "fence", 7);
//! assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 7);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::resources::RESOURCES;
use super::state::{rfc3339, rfc3339_nanos};

fn now() -> String {
    rfc3339(SystemTime::now())
}

fn hash(s: &str) -> u64 {
    // FNV-1a: stable across runs (addresses and suffixes stay the same).
    s.bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A stable pod IP for a pod name (10.244.x.y).
pub fn pod_ip(name: &str) -> String {
    let h = hash(name);
    format!("10.244.{}.{}", (h >> 8) % 250 + 1, h % 250 + 2)
}

fn api_version_of(kind: &str) -> String {
    RESOURCES
        .iter()
        .find(|r| !r.metrics && r.kind == kind)
        .map(|r| r.api_version())
        .unwrap_or_else(|| "v1".into())
}

/// The image gen3-helm deploys for a service.
fn image(app: &str) -> String {
    format!("quay.io/cdis/{app}:2025.09")
}

/// A namespace (phase Active).
pub fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

fn container_spec(name: &str, app: &str) -> Value {
    json!({
        "name": name,
        "image": image(app),
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    })
}

fn container_state(phase: &str) -> (Value, bool) {
    match phase {
        "Running" => (json!({"running": {"startedAt": now()}}), true),
        "Succeeded" => (
            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now(), "finishedAt": now(), "containerID": "containerd://0"}}),
            false,
        ),
        "Failed" => (
            json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now(), "finishedAt": now(), "containerID": "containerd://0"}}),
            false,
        ),
        _ => (json!({"waiting": {"reason": "ContainerCreating"}}), false),
    }
}

fn container_status(name: &str, app: &str, phase: &str) -> Value {
    let (state, running) = container_state(phase);
    json!({
        "name": name,
        "state": state,
        "lastState": {},
        "ready": running,
        "restartCount": 0,
        "image": image(app),
        "imageID": format!("quay.io/cdis/{app}@sha256:{:016x}{:016x}", hash(app), hash(name)),
        "containerID": format!("containerd://{:016x}{:016x}", hash(name), hash(app)),
        "started": running,
    })
}

fn condition(kind: &str, ok: bool) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now(),
    })
}

/// A pod with one container named after its app, labelled `app: <app>`
/// (gen3-helm's label, which the agent turns into `service`), in `phase`
/// (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`). A Running
/// pod's container is ready; a Pending one waits (`ContainerCreating`).
pub fn pod(ns: &str, name: &str, app: &str, phase: &str) -> Value {
    let running = phase == "Running";
    let scheduled = phase != "Pending";
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": app, "release": "production"},
            "annotations": {},
        },
        "spec": {
            "containers": [container_spec(app, app)],
            "nodeName": "node-1",
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
        },
        "status": {
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", scheduled),
                condition("Initialized", true),
                condition("Ready", running),
                condition("ContainersReady", running),
                condition("PodScheduled", true),
            ],
            "hostIP": "192.168.0.11",
            "hostIPs": [{"ip": "192.168.0.11"}],
            "podIP": pod_ip(name),
            "podIPs": [{"ip": pod_ip(name)}],
            "startTime": now(),
            "qosClass": "BestEffort",
            "containerStatuses": [container_status(app, app, phase)],
        },
    })
}

/// Adds a container (spec and status consistent with the pod's phase).
pub fn add_container(pod: &mut Value, name: &str) {
    let app = pod["metadata"]["labels"]["app"].as_str().unwrap_or(name).to_string();
    let phase = pod["status"]["phase"].as_str().unwrap_or("Running").to_string();
    if let Some(cs) = pod["spec"]["containers"].as_array_mut() {
        cs.push(container_spec(name, &app));
    }
    if let Some(cs) = pod["status"]["containerStatuses"].as_array_mut() {
        cs.push(container_status(name, &app, &phase));
    }
    sync_ready(pod);
}

fn status_of<'a>(pod: &'a mut Value, container: &str) -> Option<&'a mut Value> {
    pod["status"]["containerStatuses"]
        .as_array_mut()?
        .iter_mut()
        .find(|c| c["name"] == container)
}

/// The Ready and ContainersReady conditions follow the containers.
fn sync_ready(pod: &mut Value) {
    let all_ready = pod["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["ready"] == true));
    if let Some(conds) = pod["status"]["conditions"].as_array_mut() {
        for c in conds.iter_mut() {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                let want = if all_ready { "True" } else { "False" };
                if c["status"] != want {
                    c["status"] = json!(want);
                    c["lastTransitionTime"] = json!(now());
                }
            }
        }
    }
}

/// Sets the pod's phase (container states are left as they are).
pub fn set_phase(pod: &mut Value, phase: &str) {
    pod["status"]["phase"] = json!(phase);
}

/// Sets a container's readiness (and the pod's Ready condition).
pub fn set_ready(pod: &mut Value, container: &str, ready: bool) {
    if let Some(c) = status_of(pod, container) {
        c["ready"] = json!(ready);
    }
    sync_ready(pod);
}

/// Sets a container's restart count.
pub fn set_restarts(pod: &mut Value, container: &str, restarts: i64) {
    if let Some(c) = status_of(pod, container) {
        c["restartCount"] = json!(restarts);
    }
}

/// The container waits (`CrashLoopBackOff`, `ImagePullBackOff`,
/// `ErrImagePull`, `CreateContainerConfigError`, `ContainerCreating`): not
/// ready, not started.
pub fn set_waiting(pod: &mut Value, container: &str, reason: &str, message: &str) {
    if let Some(c) = status_of(pod, container) {
        c["state"] = json!({"waiting": {"reason": reason, "message": message}});
        c["ready"] = json!(false);
        c["started"] = json!(false);
    }
    sync_ready(pod);
}

/// The container runs (started now), ready or not.
pub fn set_running(pod: &mut Value, container: &str, ready: bool) {
    if let Some(c) = status_of(pod, container) {
        c["state"] = json!({"running": {"startedAt": now()}});
        c["ready"] = json!(ready);
        c["started"] = json!(true);
    }
    sync_ready(pod);
}

/// The container's current state is terminated (`Completed`, `Error`,
/// `OOMKilled`) with `exit_code`.
pub fn set_terminated(pod: &mut Value, container: &str, reason: &str, exit_code: i64) {
    if let Some(c) = status_of(pod, container) {
        c["state"] = json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "startedAt": now(), "finishedAt": now(),
            "containerID": c["containerID"].clone(),
        }});
        c["ready"] = json!(false);
        c["started"] = json!(false);
    }
    sync_ready(pod);
}

/// The container's previous run ended with `reason` (`OOMKilled` with 137,
/// `Error` with 1, `Completed` with 0): its `lastState.terminated`.
pub fn set_last_terminated(pod: &mut Value, container: &str, reason: &str, exit_code: i64) {
    if let Some(c) = status_of(pod, container) {
        c["lastState"] = json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "startedAt": now(), "finishedAt": now(),
            "containerID": c["containerID"].clone(),
        }});
    }
}

/// Sets a container's resources, e.g. requests `[("cpu", "250m"),
/// ("memory", "512Mi")]`, limits `[("memory", "1Gi")]`; the pod's qosClass
/// follows (Guaranteed, Burstable, BestEffort).
pub fn set_resources(pod: &mut Value, container: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) {
    let to_map =
        |pairs: &[(&str, &str)]| -> Value { Value::Object(pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>()) };
    if let Some(cs) = pod["spec"]["containers"].as_array_mut()
        && let Some(c) = cs.iter_mut().find(|c| c["name"] == container)
    {
        let mut r = json!({});
        if !limits.is_empty() {
            r["limits"] = to_map(limits);
        }
        if !requests.is_empty() {
            r["requests"] = to_map(requests);
        }
        c["resources"] = r;
    }
    let cs = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let any = cs.iter().any(|c| c["resources"].as_object().is_some_and(|r| !r.is_empty()));
    let guaranteed = !cs.is_empty()
        && cs.iter().all(|c| {
            let r = &c["resources"];
            ["cpu", "memory"].iter().all(|k| !r["limits"][k].is_null())
                && (r["requests"].is_null() || ["cpu", "memory"].iter().all(|k| r["requests"][k] == r["limits"][k]))
        });
    pod["status"]["qosClass"] = json!(if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    });
}

/// Sets the node a pod runs on.
pub fn set_node(pod: &mut Value, node: &str) {
    pod["spec"]["nodeName"] = json!(node);
}

/// Adds labels to an object's metadata.
pub fn set_labels(obj: &mut Value, labels: &[(&str, &str)]) {
    for (k, v) in labels {
        obj["metadata"]["labels"][*k] = json!(v);
    }
}

/// Adds annotations to an object's metadata (e.g. `prometheus.io/scrape`).
pub fn set_annotations(obj: &mut Value, annotations: &[(&str, &str)]) {
    for (k, v) in annotations {
        obj["metadata"]["annotations"][*k] = json!(v);
    }
}

/// Makes `owner` (kind, name, uid) the object's controller
/// (`ownerReferences` with `controller: true`), replacing earlier owners.
pub fn set_owner(obj: &mut Value, kind: &str, name: &str, uid: &str) {
    obj["metadata"]["ownerReferences"] = json!([{
        "apiVersion": api_version_of(kind),
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
}

fn pod_template(app: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [container_spec(app, app)], "restartPolicy": "Always"},
    })
}

/// A Deployment of `replicas` pods labelled `app: <name>`, `available` of
/// them available (`unavailableReplicas` is the rest; the Available
/// condition is False when any is missing).
pub fn deployment(ns: &str, name: &str, replicas: i64, available: i64) -> Value {
    let mut status = json!({
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": available,
        "availableReplicas": available,
        "conditions": [
            {"type": "Available", "status": if available >= replicas { "True" } else { "False" },
             "reason": if available >= replicas { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": if available >= replicas { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
             "lastUpdateTime": now(), "lastTransitionTime": now()},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{name}-6f7c9d8b5\" has successfully progressed."),
             "lastUpdateTime": now(), "lastTransitionTime": now()},
        ],
    });
    if replicas > available {
        status["unavailableReplicas"] = json!(replicas - available);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": status,
    })
}

/// A ReplicaSet owned by Deployment `deployment` (its uid), `ready` of
/// `replicas` ready; its name is `<deployment>-<hash>`.
pub fn replicaset(ns: &str, deployment: &str, deployment_uid: &str, replicas: i64, ready: i64) -> Value {
    let hash = format!("{:x}", hash(deployment) % 0xfff_ffff);
    let mut rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{deployment}-{hash}"),
            "namespace": ns,
            "labels": {"app": deployment, "pod-template-hash": hash},
            "annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string(), "deployment.kubernetes.io/revision": "1"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": deployment, "pod-template-hash": hash}},
            "template": pod_template(deployment),
        },
        "status": {"replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready, "observedGeneration": 1},
    });
    set_owner(&mut rs, "Deployment", deployment, deployment_uid);
    rs
}

/// A StatefulSet of `replicas`, `ready` of them ready.
pub fn statefulset(ns: &str, name: &str, replicas: i64, ready: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "readyReplicas": ready,
            "currentReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": ready,
            "currentRevision": format!("{name}-5d4f8c7b9"),
            "updateRevision": format!("{name}-5d4f8c7b9"),
            "collisionCount": 0,
        },
    })
}

/// A DaemonSet scheduled on `desired` nodes, `ready` of them ready.
pub fn daemonset(ns: &str, name: &str, desired: i64, ready: i64) -> Value {
    let mut status = json!({
        "observedGeneration": 1,
        "currentNumberScheduled": desired,
        "desiredNumberScheduled": desired,
        "numberMisscheduled": 0,
        "numberReady": ready,
        "numberAvailable": ready,
        "updatedNumberScheduled": desired,
    });
    if desired > ready {
        status["numberUnavailable"] = json!(desired - ready);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
        },
        "status": status,
    })
}

/// A Job (one completion, backoffLimit 6) that has started and is active.
/// Use [`set_owner`] with `CronJob` for a CronJob's job, and
/// [`job_succeeded`] / [`job_failed`] for its outcome.
pub fn job(ns: &str, name: &str) -> Value {
    let app = name.rsplit_once('-').map(|(a, _)| a).unwrap_or(name);
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": app, "batch.kubernetes.io/job-name": name, "job-name": name},
        },
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 6,
            "completionMode": "NonIndexed",
            "suspend": false,
            "template": {
                "metadata": {"labels": {"app": app, "job-name": name}},
                "spec": {"containers": [container_spec(app, app)], "restartPolicy": "Never"},
            },
        },
        "status": {"startTime": now(), "active": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}},
    })
}

/// Sets a Job's active, succeeded and failed pod counts (zeros omitted, as
/// the API does).
pub fn set_job_counts(job: &mut Value, active: i64, succeeded: i64, failed: i64) {
    for (k, v) in [("active", active), ("succeeded", succeeded), ("failed", failed)] {
        if v > 0 {
            job["status"][k] = json!(v);
        } else if let Some(s) = job["status"].as_object_mut() {
            s.remove(k);
        }
    }
}

/// The Job completed: succeeded 1, conditions SuccessCriteriaMet and
/// Complete, completionTime set.
pub fn job_succeeded(job: &mut Value) {
    set_job_counts(job, 0, 1, 0);
    let t = now();
    job["status"]["completionTime"] = json!(t);
    job["status"]["conditions"] = json!([
        {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t},
        {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t},
    ]);
}

/// The Job failed (`reason` as `BackoffLimitExceeded` or
/// `DeadlineExceeded`): failed = backoffLimit + 1, conditions
/// FailureTarget and Failed.
pub fn job_failed(job: &mut Value, reason: &str) {
    let failed = job["spec"]["backoffLimit"].as_i64().unwrap_or(6) + 1;
    set_job_counts(job, 0, 0, failed);
    let t = now();
    let message = match reason {
        "BackoffLimitExceeded" => "Job has reached the specified backoff limit",
        "DeadlineExceeded" => "Job was active longer than specified deadline",
        _ => "Job failed",
    };
    job["status"]["conditions"] = json!([
        {"type": "FailureTarget", "status": "True", "reason": reason, "message": message, "lastProbeTime": t, "lastTransitionTime": t},
        {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastProbeTime": t, "lastTransitionTime": t},
    ]);
}

/// A CronJob on `schedule` (e.g. usersync's `*/30 * * * *`), not
/// suspended, with an empty status.
pub fn cronjob(ns: &str, name: &str, schedule: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "schedule": schedule,
            "suspend": false,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {}, "spec": {
                "backoffLimit": 6,
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [container_spec(name, name)], "restartPolicy": "OnFailure"},
                },
            }},
        },
        "status": {},
    })
}

/// Sets a CronJob's `status.lastScheduleTime` and
/// `status.lastSuccessfulTime` (RFC 3339; `None` removes).
pub fn set_cronjob_times(cj: &mut Value, last_schedule: Option<&str>, last_successful: Option<&str>) {
    for (k, v) in [("lastScheduleTime", last_schedule), ("lastSuccessfulTime", last_successful)] {
        match v {
            Some(t) => cj["status"][k] = json!(t),
            None => {
                if let Some(s) = cj["status"].as_object_mut() {
                    s.remove(k);
                }
            }
        }
    }
}

/// Suspends or resumes a CronJob.
pub fn set_suspend(cj: &mut Value, suspend: bool) {
    cj["spec"]["suspend"] = json!(suspend);
}

/// A PersistentVolumeClaim of 10Gi in `phase` (`Pending`, `Bound`, `Lost`).
pub fn persistentvolumeclaim(ns: &str, name: &str, phase: &str) -> Value {
    let mut pvc = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name.split('-').next().unwrap_or(name)}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "10Gi"}},
            "storageClassName": "standard",
            "volumeMode": "Filesystem",
        },
        "status": {"phase": phase},
    });
    if phase == "Bound" {
        pvc["spec"]["volumeName"] = json!(format!("pvc-{:08x}", hash(name) as u32));
        pvc["status"]["accessModes"] = json!(["ReadWriteOnce"]);
        pvc["status"]["capacity"] = json!({"storage": "10Gi"});
    }
    pvc
}

/// A node, Ready or not, with the usual pressure conditions False.
pub fn node(name: &str, ready: bool) -> Value {
    let cond = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now(), "lastTransitionTime": now()})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m5.2xlarge",
            },
            "annotations": {},
        },
        "spec": {"podCIDR": "10.244.0.0/24", "providerID": format!("aws:///us-east-1a/i-{:017x}", hash(name) >> 4)},
        "status": {
            "capacity": {"cpu": "8", "memory": "32386524Ki", "pods": "110", "ephemeral-storage": "104845292Ki"},
            "allocatable": {"cpu": "7910m", "memory": "31369692Ki", "pods": "110", "ephemeral-storage": "95551679124"},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                if ready {
                    cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
                } else {
                    cond("Ready", "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
                },
            ],
            "addresses": [{"type": "InternalIP", "address": "192.168.0.11"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "containerRuntimeVersion": "containerd://1.7.27",
                "operatingSystem": "linux", "architecture": "amd64", "osImage": "Amazon Linux 2023",
                "kernelVersion": "6.1.0", "machineID": format!("{:032x}", u128::from(hash(name))),
                "systemUUID": format!("{:032x}", u128::from(hash(name)) << 1), "bootID": format!("{:032x}", u128::from(hash(name)) << 2),
            },
        },
    })
}

/// Sets a node condition (`Ready`, `MemoryPressure`, `DiskPressure`,
/// `PIDPressure`, `NetworkUnavailable`) to `status` (`True`, `False`,
/// `Unknown`), adding it when absent.
pub fn set_node_condition(node: &mut Value, kind: &str, status: &str, reason: &str) {
    let t = now();
    let Some(conds) = node["status"]["conditions"].as_array_mut() else {
        return;
    };
    match conds.iter_mut().find(|c| c["type"] == kind) {
        Some(c) => {
            if c["status"] != status {
                c["lastTransitionTime"] = json!(t);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["lastHeartbeatTime"] = json!(t);
        }
        None => conds.push(json!({"type": kind, "status": status, "reason": reason, "message": "",
                                  "lastHeartbeatTime": t, "lastTransitionTime": t})),
    }
}

static EVENT_SEQ: AtomicU64 = AtomicU64::new(0);

/// An event name as the recorder makes them: `<involved>.<16 hex>`.
fn event_name(involved: &str) -> String {
    let n = EVENT_SEQ.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{involved}.{:016x}", t.wrapping_add(n))
}

/// A core/v1 Event as the kubelet records it (`firstTimestamp`,
/// `lastTimestamp`, `count` 1, `eventTime` null), about object
/// `involved_kind`/`involved_name` in `ns`; `kind` is `Warning` or
/// `Normal` (e.g. `Warning`, `BackOff`, "Back-off restarting failed
/// container fence in pod fence-...").
pub fn event(ns: &str, involved_kind: &str, involved_name: &str, kind: &str, reason: &str, message: &str) -> Value {
    let t = now();
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(involved_name), "namespace": ns},
        "involvedObject": {
            "kind": involved_kind,
            "namespace": ns,
            "name": involved_name,
            "apiVersion": api_version_of(involved_kind),
        },
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": t,
        "lastTimestamp": t,
        "count": 1,
        "type": kind,
        "eventTime": null,
        "reportingComponent": "kubelet",
        "reportingInstance": "node-1",
    })
}

/// A core/v1 Event as components using the events.k8s.io API write it
/// (the scheduler: `eventTime` with microseconds, `firstTimestamp` and
/// `lastTimestamp` null, no `count`, `action` set).
pub fn event_with_event_time(ns: &str, involved_kind: &str, involved_name: &str, kind: &str, reason: &str, message: &str) -> Value {
    let nanos = rfc3339_nanos(SystemTime::now());
    // MicroTime: six fractional digits.
    let micro = format!("{}Z", &nanos[..nanos.len().saturating_sub(4)]);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(involved_name), "namespace": ns},
        "involvedObject": {
            "kind": involved_kind,
            "namespace": ns,
            "name": involved_name,
            "apiVersion": api_version_of(involved_kind),
        },
        "reason": reason,
        "message": message,
        "source": {},
        "firstTimestamp": null,
        "lastTimestamp": null,
        "type": kind,
        "eventTime": micro,
        "action": "Scheduling",
        "reportingComponent": "default-scheduler",
        "reportingInstance": "default-scheduler-node-1",
    })
}

/// The event happened again: `count` and `lastTimestamp` (now) move on.
pub fn set_event_count(event: &mut Value, count: i64) {
    event["count"] = json!(count);
    event["lastTimestamp"] = json!(now());
}

/// A ClusterIP Service selecting `app: <name>` on `port` → `target_port`.
pub fn service(ns: &str, name: &str, port: i64, target_port: i64) -> Value {
    let h = hash(name);
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, "annotations": {}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "clusterIP": format!("10.96.{}.{}", (h >> 8) % 250 + 1, h % 250 + 2),
            "clusterIPs": [format!("10.96.{}.{}", (h >> 8) % 250 + 1, h % 250 + 2)],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": target_port}],
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    })
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn target_ref(pod: &Value) -> Value {
    let mut r = json!({
        "kind": "Pod",
        "namespace": pod["metadata"]["namespace"],
        "name": pod["metadata"]["name"],
    });
    if let Some(uid) = pod["metadata"]["uid"].as_str() {
        r["uid"] = json!(uid);
    }
    r
}

/// The Endpoints of Service `name` over `pods` (as stored: their uids go in
/// `targetRef`): ready pods in `addresses`, the others in
/// `notReadyAddresses`, one port (`port_name`, `port`).
pub fn endpoints(ns: &str, name: &str, pods: &[Value], port_name: &str, port: i64) -> Value {
    let address = |p: &Value| {
        json!({
            "ip": p["status"]["podIP"],
            "nodeName": p["spec"]["nodeName"],
            "targetRef": target_ref(p),
        })
    };
    let ready: Vec<Value> = pods.iter().filter(|p| pod_ready(p)).map(address).collect();
    let not_ready: Vec<Value> = pods.iter().filter(|p| !pod_ready(p)).map(address).collect();
    let mut subset = json!({"ports": [{"name": port_name, "port": port, "protocol": "TCP"}]});
    if !ready.is_empty() {
        subset["addresses"] = json!(ready);
    }
    if !not_ready.is_empty() {
        subset["notReadyAddresses"] = json!(not_ready);
    }
    let subsets = if pods.is_empty() { json!([]) } else { json!([subset]) };
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "subsets": subsets,
    })
}

/// The discovery.k8s.io/v1 EndpointSlice of Service `service` over `pods`
/// (ready, serving and terminating conditions from the pods).
pub fn endpointslice(ns: &str, service: &str, pods: &[Value], port_name: &str, port: i64) -> Value {
    let eps: Vec<Value> = pods
        .iter()
        .map(|p| {
            let ready = pod_ready(p);
            json!({
                "addresses": [p["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": p["spec"]["nodeName"],
                "targetRef": target_ref(p),
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-{:05x}", hash(service) & 0xfffff),
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    })
}

/// An Argo CD Application (argoproj.io/v1alpha1) in `ns` (Argo CD's
/// namespace, usually `argocd`) deploying gen3-helm's chart `name` into
/// `dest_ns`, auto-synced, with `status.health.status` = `health` and
/// `status.sync.status` = `sync` (as Argo CD's controller writes them).
pub fn application(ns: &str, name: &str, dest_ns: &str, health: &str, sync: &str) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": name,
            "namespace": ns,
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
            "labels": {"app.kubernetes.io/part-of": "gen3"},
        },
        "spec": {
            "project": "gen3",
            "source": {
                "repoURL": "https://github.com/uc-cdis/gen3-helm.git",
                "targetRevision": "master",
                "path": format!("helm/{name}"),
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": dest_ns},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
        "status": {
            "sync": {
                "status": sync,
                "revision": "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
                "comparedTo": {
                    "source": {"repoURL": "https://github.com/uc-cdis/gen3-helm.git", "targetRevision": "master", "path": format!("helm/{name}")},
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": dest_ns},
                },
            },
            "health": {"status": health},
            "reconciledAt": now(),
            "sourceType": "Helm",
        },
    })
}

/// Sets an Application's health and sync status (`None` removes the
/// field, as before the controller's first reconciliation).
pub fn set_app_status(app: &mut Value, health: Option<&str>, sync: Option<&str>) {
    match health {
        Some(h) => app["status"]["health"] = json!({"status": h}),
        None => {
            if let Some(s) = app["status"].as_object_mut() {
                s.remove("health");
            }
        }
    }
    match sync {
        Some(s) => app["status"]["sync"]["status"] = json!(s),
        None => {
            if let Some(s) = app["status"].as_object_mut() {
                s.remove("sync");
            }
        }
    }
}

/// Marks a sync operation in progress (`operation.sync`), as `argocd app
/// sync` requests one.
pub fn set_app_operation(app: &mut Value, syncing: bool) {
    if syncing {
        app["operation"] = json!({"sync": {"revision": "master"}, "initiatedBy": {"username": "admin"}});
    } else if let Some(o) = app.as_object_mut() {
        o.remove("operation");
    }
}
