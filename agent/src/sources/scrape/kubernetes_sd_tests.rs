//! Tests of `kubernetes_sd_configs`: the `__meta_kubernetes_*` labels of pod
//! and endpoints objects (k8s-openapi types from Kubernetes' JSON), the
//! annotation relabelling job over them, configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use serde_json::json;

use super::ScrapeConfig;
use super::discovery::Discovery;
use super::kubernetes_sd::*;

/// A fence replica as a Deployment makes it: two containers, one port on
/// fence, annotations for the usual scrape job, a label with a '/' and '.'.
fn fence_pod(name: &str, ip: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "gen3", "uid": format!("uid-{name}"),
            "labels": {"app": "fence", "app.kubernetes.io/name": "fence", "pod-template-hash": "7d9f"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "6567", "prometheus.io/path": "/metrics"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "fence-deployment-7d9f", "uid": "rs1", "controller": true},
                {"apiVersion": "v1", "kind": "Other", "name": "not-the-controller", "uid": "x"}
            ],
            "managedFields": [{"manager": "kubelet"}]
        },
        "spec": {
            "nodeName": "node-1",
            "initContainers": [{"name": "fence-init", "image": "quay.io/cdis/fence:2025.01"}],
            "containers": [
                {"name": "fence", "image": "quay.io/cdis/fence:2025.01",
                 "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}, {"containerPort": 6567, "protocol": "TCP"}],
                 "env": [{"name": "SECRET", "value": "hunter2"}]},
                {"name": "sidecar", "image": "busybox"}
            ],
            "volumes": [{"name": "v", "emptyDir": {}}]
        },
        "status": {
            "phase": "Running", "podIP": ip, "hostIP": "10.0.0.1",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "fence", "containerID": "containerd://abc", "image": "i", "imageID": "", "ready": true, "restartCount": 0},
                {"name": "sidecar", "containerID": "containerd://def", "image": "i", "imageID": "", "ready": true, "restartCount": 0}
            ],
            "initContainerStatuses": [
                {"name": "fence-init", "containerID": "containerd://ini", "image": "i", "imageID": "", "ready": false, "restartCount": 0}
            ]
        }
    }))
    .expect("pod json")
}

fn get<'a>(t: &'a LabelMap, k: &str) -> Option<&'a str> {
    t.get(&format!("__meta_kubernetes_{k}")).map(String::as_str)
}

#[test]
fn pod_role_labels_are_prometheus_s() {
    let p = fence_pod("fence-deployment-7d9f-abcde", "10.1.2.3");
    let ts = pod_targets(&p);
    // fence: 2 ports; sidecar: no port; fence-init: no port.
    let addrs: Vec<&str> = ts.iter().map(|t| t["__address__"].as_str()).collect();
    assert_eq!(addrs, ["10.1.2.3:80", "10.1.2.3:6567", "10.1.2.3", "10.1.2.3"]);
    let t = &ts[1];
    for (k, v) in [
        ("namespace", "gen3"),
        ("pod_name", "fence-deployment-7d9f-abcde"),
        ("pod_ip", "10.1.2.3"),
        ("pod_ready", "true"),
        ("pod_phase", "Running"),
        ("pod_node_name", "node-1"),
        ("pod_host_ip", "10.0.0.1"),
        ("pod_uid", "uid-fence-deployment-7d9f-abcde"),
        ("pod_controller_kind", "ReplicaSet"),
        ("pod_controller_name", "fence-deployment-7d9f"),
        ("pod_label_app", "fence"),
        ("pod_labelpresent_app", "true"),
        ("pod_label_app_kubernetes_io_name", "fence"),
        ("pod_labelpresent_app_kubernetes_io_name", "true"),
        ("pod_annotation_prometheus_io_scrape", "true"),
        ("pod_annotationpresent_prometheus_io_port", "true"),
        ("pod_container_name", "fence"),
        ("pod_container_id", "containerd://abc"),
        ("pod_container_image", "quay.io/cdis/fence:2025.01"),
        ("pod_container_port_name", ""),
        ("pod_container_port_number", "6567"),
        ("pod_container_port_protocol", "TCP"),
        ("pod_container_init", "false"),
    ] {
        assert_eq!(get(t, k), Some(v), "{k}");
    }
    assert_eq!(get(&ts[0], "pod_container_port_name"), Some("http"));
    // A container without ports: the pod IP, no port labels.
    assert_eq!(get(&ts[2], "pod_container_name"), Some("sidecar"));
    assert_eq!(get(&ts[2], "pod_container_port_number"), None);
    assert_eq!(get(&ts[3], "pod_container_init"), Some("true"));
    assert_eq!(get(&ts[3], "pod_container_id"), Some("containerd://ini"));
    // Every label name is valid.
    for t in &ts {
        for k in t.keys() {
            assert!(csoc_common::labels::valid_label_name(k), "{k}");
        }
    }
    // No IP yet: no target (Prometheus's buildPod).
    let mut pending = p.clone();
    pending.status.as_mut().expect("status").pod_ip = None;
    assert!(pod_targets(&pending).is_empty());
    // Not ready, no Ready condition: "unknown".
    let mut nocond = p.clone();
    nocond.status.as_mut().expect("status").conditions = None;
    assert_eq!(get(&pod_targets(&nocond)[0], "pod_ready"), Some("unknown"));
    // IPv6 addresses are bracketed.
    assert_eq!(pod_targets(&fence_pod("x", "fd00::1"))[0]["__address__"], "[fd00::1]:80");
}

#[test]
fn slim_pods_keep_every_label_the_targets_need() {
    let p = fence_pod("fence-1", "10.1.2.3");
    let slim = slim_pod(p.clone());
    assert_eq!(pod_targets(&slim), pod_targets(&p));
    let text = serde_json::to_string(&slim).expect("ser");
    assert!(
        !text.contains("hunter2") && !text.contains("managedFields") && !text.contains("volumes"),
        "{text}"
    );
}

#[test]
fn label_names_are_sanitised_as_prometheus_does() {
    assert_eq!(sanitize_label_name("app.kubernetes.io/name"), "app_kubernetes_io_name");
    assert_eq!(sanitize_label_name("prometheus.io/scrape"), "prometheus_io_scrape");
    assert_eq!(sanitize_label_name("a-b_c9"), "a_b_c9");
    // One `_` per character (rune), as Go's regexp replacement.
    assert_eq!(sanitize_label_name("ünï"), "_n_");
}

fn endpoints() -> (Endpoints, Service, Pod, Pod) {
    let eps: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "fence-service", "namespace": "gen3", "labels": {"app": "fence"}, "annotations": {"a.b/c": "d"}},
        "subsets": [{
            "addresses": [
                {"ip": "10.1.2.3", "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": "fence-1", "namespace": "gen3"}},
                {"ip": "10.9.9.9", "hostname": "ext"}
            ],
            "notReadyAddresses": [
                {"ip": "10.1.2.4", "targetRef": {"kind": "Pod", "name": "fence-2", "namespace": "gen3"}}
            ],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
        }]
    }))
    .expect("endpoints");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "fence-service", "namespace": "gen3", "labels": {"app": "fence", "release": "production"},
                     "annotations": {"prometheus.io/scrape": "true"}},
        "spec": {"ports": [{"port": 80}]}
    }))
    .expect("service");
    (eps, svc, fence_pod("fence-1", "10.1.2.3"), fence_pod("fence-2", "10.1.2.4"))
}

#[test]
fn endpoints_role_labels_are_prometheus_s() {
    let (eps, svc, p1, p2) = endpoints();
    let lookup = |ns: &str, name: &str| match (ns, name) {
        ("gen3", "fence-1") => Some(&p1),
        ("gen3", "fence-2") => Some(&p2),
        _ => None,
    };
    let ts = endpoints_targets(&eps, Some(&svc), &lookup);
    let mut addrs: Vec<&str> = ts.iter().map(|t| t["__address__"].as_str()).collect();
    addrs.sort();
    // 3 addresses on port 80, plus port 6567 of each pod (no service port covers it).
    assert_eq!(
        addrs,
        ["10.1.2.3:6567", "10.1.2.3:80", "10.1.2.4:6567", "10.1.2.4:80", "10.9.9.9:80"]
    );
    let by = |a: &str| ts.iter().find(|t| t["__address__"] == a).expect("target");
    let t = by("10.1.2.3:80");
    for (k, v) in [
        ("namespace", "gen3"),
        ("endpoints_name", "fence-service"),
        ("endpoints_label_app", "fence"),
        ("endpoints_labelpresent_app", "true"),
        ("endpoints_annotation_a_b_c", "d"),
        ("service_name", "fence-service"),
        ("service_label_release", "production"),
        ("service_annotation_prometheus_io_scrape", "true"),
        ("service_annotationpresent_prometheus_io_scrape", "true"),
        ("endpoint_ready", "true"),
        ("endpoint_port_name", "http"),
        ("endpoint_port_protocol", "TCP"),
        ("endpoint_address_target_kind", "Pod"),
        ("endpoint_address_target_name", "fence-1"),
        ("endpoint_node_name", "node-1"),
        ("pod_name", "fence-1"),
        ("pod_ip", "10.1.2.3"),
        ("pod_container_name", "fence"),
        ("pod_container_port_name", "http"),
        ("pod_container_port_number", "80"),
        ("pod_container_init", "false"),
        ("pod_annotation_prometheus_io_port", "6567"),
    ] {
        assert_eq!(get(t, k), Some(v), "{k}");
    }
    assert_eq!(get(by("10.1.2.4:80"), "endpoint_ready"), Some("false"));
    let ext = by("10.9.9.9:80");
    assert_eq!(get(ext, "endpoint_hostname"), Some("ext"));
    assert_eq!(get(ext, "pod_name"), None);
    assert_eq!(get(ext, "service_name"), Some("fence-service"));
    let extra = by("10.1.2.3:6567");
    assert_eq!(get(extra, "pod_container_port_number"), Some("6567"));
    assert_eq!(get(extra, "endpoint_ready"), None, "a pod port no service port covers");
    assert_eq!(get(extra, "endpoints_name"), Some("fence-service"));
    // Without its Service: no service labels.
    let ts = endpoints_targets(&eps, None, &lookup);
    assert!(ts.iter().all(|t| get(t, "service_name").is_none()));
}

fn store_with(pods: &[Pod]) -> SdStoreRef {
    let s = SdStoreRef::default();
    {
        let mut g = lock(&s);
        for p in pods {
            g.pods.insert(
                format!("gen3/{}", p.metadata.name.as_deref().unwrap_or_default()),
                slim_pod(p.clone()),
            );
        }
        g.generation += 1;
    }
    s
}

/// The usual annotation job of Prometheus's example config: keep pods with
/// prometheus.io/scrape=true, take the port and the path from annotations.
const ANNOTATION_JOB: &str = r#"
jobs:
- job_name: kubernetes-pods
  kubernetes_sd_configs:
  - role: pod
    namespaces: {names: [gen3]}
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: "true"
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
    action: replace
    target_label: __metrics_path__
    regex: (.+)
  - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
    action: replace
    regex: ([^:]+)(?::\d+)?;(\d+)
    replacement: $1:$2
    target_label: __address__
  - action: labelmap
    regex: __meta_kubernetes_pod_label_(.+)
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
"#;

#[test]
fn annotation_job_scrapes_each_replica_and_follows_changes() {
    let cfg: ScrapeConfig = serde_yaml_ng::from_str(ANNOTATION_JOB).expect("yaml");
    cfg.validate(Duration::from_secs(15)).expect("valid");
    let job = &cfg.jobs[0];
    let mut not_scraped = fence_pod("indexd-1", "10.1.2.9");
    not_scraped.metadata.annotations = None;
    let store = store_with(&[fence_pod("fence-1", "10.1.2.3"), fence_pod("fence-2", "10.1.2.4"), not_scraped]);
    let mut d = Discovery::default();
    let s2 = d.add_kubernetes("pod".into());
    *lock(&s2) = std::mem::take(&mut *lock(&store));
    let ts = d.targets(job, Duration::from_secs(15), "scrape");
    let mut urls: Vec<&str> = ts.iter().map(|t| t.url.as_str()).collect();
    urls.sort();
    urls.dedup();
    // Every container/port of a kept pod becomes podIP:6567 after the port
    // rewrite, with equal final labels: one target per pod (Prometheus also
    // de-duplicates targets by their final labels and URL).
    assert_eq!(urls, ["http://10.1.2.3:6567/metrics", "http://10.1.2.4:6567/metrics"]);
    let mut keys: Vec<u64> = ts.iter().map(|t| t.key()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 2, "one target per replica: {ts:?}");
    let one = ts.iter().find(|t| t.url.contains("10.1.2.3")).expect("fence-1");
    let l: BTreeMap<&str, &str> = one.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(l.get("job"), Some(&"kubernetes-pods"));
    assert_eq!(l.get("instance"), Some(&"10.1.2.3:6567"));
    assert_eq!(l.get("pod"), Some(&"fence-1"));
    assert_eq!(l.get("namespace"), Some(&"gen3"));
    assert_eq!(l.get("app"), Some(&"fence"));
    assert!(l.keys().all(|k| !k.starts_with("__")), "{l:?}");

    // A replica goes away: its target disappears at the next look.
    {
        let mut g = lock(&s2);
        g.pods.remove("gen3/fence-2");
        g.generation += 1;
    }
    let ts = d.targets(job, Duration::from_secs(15), "scrape");
    assert!(ts.iter().all(|t| t.url.contains("10.1.2.3")), "{ts:?}");
    // The annotation changes the path: new URL.
    {
        let mut g = lock(&s2);
        let p = g.pods.get_mut("gen3/fence-1").expect("pod");
        p.metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert("prometheus.io/path".into(), "/fence/metrics".into());
        g.generation += 1;
    }
    let ts = d.targets(job, Duration::from_secs(15), "scrape");
    assert!(ts.iter().all(|t| t.url == "http://10.1.2.3:6567/fence/metrics"), "{ts:?}");
}

#[test]
fn store_builds_endpoints_targets_from_its_three_kinds() {
    let (eps, svc, p1, p2) = endpoints();
    let s = SdStore {
        pods: [("gen3/fence-1".to_string(), p1), ("gen3/fence-2".to_string(), p2)]
            .into_iter()
            .collect(),
        endpoints: [("gen3/fence-service".to_string(), eps)].into_iter().collect(),
        services: [("gen3/fence-service".to_string(), svc)].into_iter().collect(),
        generation: 1,
    };
    let ts = s.targets("endpoints");
    assert_eq!(ts.len(), 5);
    assert!(ts.iter().filter(|t| get(t, "pod_name").is_some()).count() == 4);
    assert_eq!(s.targets("pod").len(), 8, "two pods × 4 targets");
}

#[test]
fn kubernetes_sd_config_errors_name_the_field() {
    let parse = |y: &str| serde_yaml_ng::from_str::<ScrapeConfig>(y);
    let base = "jobs:\n- job_name: k\n  kubernetes_sd_configs:\n";
    let cases = [
        ("  - role: node\n", "kubernetes_sd_configs[0].role"),
        (
            "  - role: pod\n    namespaces: {names: [Gen3]}\n",
            "kubernetes_sd_configs[0].namespaces.names",
        ),
        (
            "  - role: pod\n    selectors: [{role: service, label: a=b}]\n",
            "kubernetes_sd_configs[0].selectors[0].role",
        ),
        (
            "  - role: endpoints\n    selectors: [{role: pod, label: a=b}, {role: pod, label: c=d}]\n",
            "kubernetes_sd_configs[0].selectors[1].role",
        ),
        (
            "  - role: pod\n    selectors: [{role: pod, label: 'a in b'}]\n",
            "kubernetes_sd_configs[0].selectors[0].label",
        ),
        (
            "  - role: pod\n    selectors: [{role: pod, field: 'status.phase'}]\n",
            "kubernetes_sd_configs[0].selectors[0].field",
        ),
    ];
    for (y, field) in cases {
        let c = parse(&format!("{base}{y}")).expect("parses");
        let e = c.validate(Duration::from_secs(15)).expect_err(y);
        assert!(e.to_string().contains(&format!("sources.scrape.jobs[0].{field}")), "{y}: {e}");
    }
    assert!(
        parse(&format!("{base}  - role: pod\n    api_server: x\n")).is_err(),
        "unknown fields rejected"
    );
    let ok = parse(&format!(
        "{base}  - role: endpoints\n    namespaces: {{names: [gen3], own_namespace: true}}\n    selectors: [{{role: service, label: 'app in (fence)'}}, {{role: pod, field: 'status.phase=Running'}}]\n    kubeconfig_file: /etc/kubeconfig\n"
    ))
    .expect("parses");
    ok.validate(Duration::from_secs(15)).expect("valid: kubernetes_sd alone is enough");
}
