//! The kubernetes source end to end: the fake Kubernetes API server
//! (`csoc_tests::fakekube`, in this process) → csoc-agent
//! (`--kubernetes-namespace gen3 --kubeconfig FILE`) → `--once --print`, or
//! gRPC → csoc-collector → /api/v1/query.

use std::path::Path;
use std::time::Duration;

use csoc_tests::fakekube::{FakeKube, objects};
use csoc_tests::*;
use serde_json::Value;

const TOKEN: &str = "kube-token-0123456789abcdef";
/// Time limit of each wait.
const WAIT: Duration = Duration::from_secs(40);

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// Waits until `q` returns exactly one sample whose value satisfies `pred`.
fn wait_value(c: &Collector, q: &str, pred: impl Fn(f64) -> bool) -> anyhow::Result<Value> {
    wait_for(q, WAIT, || {
        c.query(q)
            .ok()
            .and_then(|r| (r.len() == 1 && pred(value(&r[0]))).then(|| r[0].clone()))
    })
}

/// Waits until `q` returns nothing.
fn wait_empty(c: &Collector, q: &str) -> anyhow::Result<()> {
    wait_for(&format!("{q} to be empty"), WAIT, || c.query(q).ok().filter(Vec::is_empty)).map(|_| ())
}

/// A crash-looping fence pod (5 restarts, last run OOMKilled), owned by
/// fence-deployment's ReplicaSet.
fn crashlooping_fence() -> Value {
    let mut p = objects::pod("gen3", "fence-deployment-5d8c9-abcde", "fence", "Running");
    objects::set_owner(&mut p, "ReplicaSet", "fence-deployment-5d8c9", "rs-uid-1");
    objects::set_resources(&mut p, "fence", &[("cpu", "250m"), ("memory", "512Mi")], &[("memory", "1Gi")]);
    objects::set_restarts(&mut p, "fence", 5);
    objects::set_waiting(&mut p, "fence", "CrashLoopBackOff", "back-off 2m40s restarting failed container");
    objects::set_last_terminated(&mut p, "fence", "OOMKilled", 137);
    p
}

/// A commons in trouble: a crash-looping pod, a Deployment short of a
/// replica, a CronJob's failed Job, a pending PVC, a node not ready.
fn troubled_commons(kube: &FakeKube) {
    kube.apply(objects::namespace("gen3"));
    kube.apply(objects::node("node-1", true));
    kube.apply(objects::node("node-2", false));
    kube.apply(crashlooping_fence());
    kube.apply(objects::pod("gen3", "indexd-deployment-7f6b-xyz12", "indexd", "Running"));
    kube.apply(objects::deployment("gen3", "fence-deployment", 3, 2));
    let cj = kube.apply(objects::cronjob("gen3", "usersync", "*/30 * * * *"));
    let mut job = objects::job("gen3", "usersync-29012345");
    objects::set_owner(&mut job, "CronJob", "usersync", cj["metadata"]["uid"].as_str().unwrap_or("cj-uid"));
    objects::job_failed(&mut job, "BackoffLimitExceeded");
    kube.apply(job);
    kube.apply(objects::persistentvolumeclaim("gen3", "data-esproxy-0", "Pending"));
    kube.set_pod_metrics("gen3", "indexd-deployment-7f6b-xyz12", &[("indexd", "12345678n", "65536Ki")]);
}

fn once(dir: &Path, kubeconfig: &Path) -> anyhow::Result<String> {
    run(
        dir,
        &bin("csoc-agent"),
        &[
            "--once".into(),
            "--print".into(),
            "--kubernetes-namespace".into(),
            "gen3".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--agent-name".into(),
            "gen3-agent".into(),
        ],
        Duration::from_secs(60),
    )
}

/// The value of the one line of `text` starting with `metric{` and holding
/// every `label="value"` of `labels`.
fn line_value(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let prefix = format!("{metric}{{");
    let hits: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').nth(1).and_then(|v| v.parse().ok()))
        .collect();
    assert!(hits.len() <= 1, "{metric}{labels:?} matches {} lines", hits.len());
    hits.first().copied()
}

#[test]
fn once_prints_kube_state_metrics_of_a_troubled_commons() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kube = FakeKube::start()?;
    troubled_commons(&kube);
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "gen3")?;
    let text = once(dir.path(), &kubeconfig)?;

    let fence = [("pod", "fence-deployment-5d8c9-abcde"), ("service", "fence"), ("job", "kubernetes")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut l = fence.to_vec();
        l.extend_from_slice(extra);
        l
    };
    assert_eq!(
        line_value(
            &text,
            "kube_pod_container_status_waiting_reason",
            &with(&[("reason", "CrashLoopBackOff")])
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(line_value(&text, "kube_pod_container_status_restarts_total", &with(&[])), Some(5.0));
    assert_eq!(
        line_value(
            &text,
            "kube_pod_container_status_last_terminated_reason",
            &with(&[("reason", "OOMKilled")])
        ),
        Some(1.0)
    );
    assert_eq!(
        line_value(
            &text,
            "kube_pod_container_resource_requests",
            &with(&[("resource", "memory"), ("unit", "byte")])
        ),
        Some(536_870_912.0)
    );
    assert_eq!(
        line_value(&text, "kube_pod_status_phase", &with(&[("phase", "Running")])),
        Some(1.0)
    );
    assert_eq!(
        line_value(&text, "kube_pod_owner", &with(&[("owner_kind", "ReplicaSet")])),
        Some(1.0)
    );
    assert!(text.contains("instance=\"gen3-agent\""), "the agent name is the instance");
    let dep = [("deployment", "fence-deployment")];
    assert_eq!(line_value(&text, "kube_deployment_spec_replicas", &dep), Some(3.0));
    assert_eq!(line_value(&text, "kube_deployment_status_replicas_available", &dep), Some(2.0));
    assert_eq!(line_value(&text, "kube_deployment_status_replicas_unavailable", &dep), Some(1.0));
    let job = [("job_name", "usersync-29012345")];
    assert_eq!(line_value(&text, "kube_job_failed", &[job[0], ("condition", "true")]), Some(1.0));
    assert_eq!(
        line_value(
            &text,
            "kube_job_owner",
            &[job[0], ("owner_kind", "CronJob"), ("owner_name", "usersync")]
        ),
        Some(1.0)
    );
    assert_eq!(
        line_value(
            &text,
            "kube_persistentvolumeclaim_status_phase",
            &[("persistentvolumeclaim", "data-esproxy-0"), ("phase", "Pending")]
        ),
        Some(1.0)
    );
    // node-2 stopped posting its status: Ready is Unknown, not True.
    let ready = |status: &'static str| [("node", "node-2"), ("condition", "Ready"), ("status", status)];
    assert_eq!(line_value(&text, "kube_node_status_condition", &ready("unknown")), Some(1.0));
    assert_eq!(line_value(&text, "kube_node_status_condition", &ready("true")), Some(0.0));
    assert_eq!(
        line_value(
            &text,
            "container_memory_working_set_bytes",
            &[("pod", "indexd-deployment-7f6b-xyz12"), ("service", "indexd")]
        ),
        Some(67_108_864.0)
    );
    assert!(text.contains("# TYPE kube_pod_container_status_restarts_total counter"));

    // Without the ClusterRole: nodes and the metrics API answer 403, the
    // rest is still reported and the round succeeds.
    kube.forbid("nodes");
    kube.forbid("pods.metrics.k8s.io");
    let text = once(dir.path(), &kubeconfig)?;
    assert!(!text.contains("kube_node_status_condition{"), "{text}");
    assert_eq!(
        line_value(&text, "csoc_agent_kubernetes_forbidden", &[("kind", "nodes")]),
        Some(1.0)
    );
    assert_eq!(
        line_value(&text, "csoc_agent_kubernetes_forbidden", &[("kind", "pods"), ("namespace", "gen3")]),
        Some(0.0)
    );
    assert_eq!(line_value(&text, "kube_pod_container_status_restarts_total", &with(&[])), Some(5.0));
    Ok(())
}

#[test]
fn once_fails_when_nothing_can_be_listed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kube = FakeKube::start()?;
    for r in [
        "pods",
        "events",
        "persistentvolumeclaims",
        "deployments",
        "statefulsets",
        "daemonsets",
        "replicasets",
        "jobs",
        "cronjobs",
        "nodes",
    ] {
        kube.forbid(r);
    }
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "gen3")?;
    let e = once(dir.path(), &kubeconfig).expect_err("exit 1: nothing listed");
    let msg = format!("{e:#}");
    assert!(msg.contains("source kubernetes"), "{msg}");
    assert!(msg.contains("forbidden"), "the 403s are logged: {msg}");
    Ok(())
}

#[test]
fn kubernetes_state_reaches_the_collector_through_cuts_relists_and_403s() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kube = FakeKube::start()?;
    troubled_commons(&kube);
    kube.forbid("nodes");
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "gen3")?;
    let cfg = dir.path().join("agent.yml");
    std::fs::write(
        &cfg,
        "sources:\n  host: {enabled: false}\n  kubernetes:\n    forbidden_retry: 1s\n    sync_timeout: 10s\n",
    )?;
    // The Gen3 rule pack, as shipped but evaluated every second and with
    // every `for:` at 0s, so that its Kubernetes alerts fire within the test.
    let pack = std::fs::read_to_string(workspace().join("deploy/rules/gen3.yml"))?;
    let pack = regex::Regex::new(r"(?m)^(\s+)for: \S+$")?.replace_all(&pack, "${1}for: 0s");
    let pack = regex::Regex::new(r"(?m)^(\s+)interval: \S+$")?.replace_all(&pack, "${1}interval: 1s");
    let rules = dir.path().join("gen3.yml");
    std::fs::write(&rules, pack.as_bytes())?;
    let c = Collector::start(
        dir.path(),
        &["--agent-token", &format!("alpha={TOKEN}"), "--rules", &rules.display().to_string()],
    )?;
    let (_agent, agent_metrics) = start_agent(
        dir.path(),
        "agent",
        &c.grpc,
        &[
            "--token",
            TOKEN,
            "--config",
            &cfg.display().to_string(),
            "--interval",
            "1s",
            "--kubernetes-namespace",
            "gen3",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--agent-name",
            "gen3-agent",
        ],
    )?;

    // The crash loop, under kube-state-metrics' names, with the service.
    let s = wait_value(
        &c,
        r#"kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff",service="fence"}"#,
        |v| v == 1.0,
    )?;
    assert_eq!(s["metric"]["commons"], "alpha");
    assert_eq!(s["metric"]["instance"], "gen3-agent");
    wait_value(&c, r#"csoc_agent_kubernetes_forbidden{kind="nodes"}"#, |v| v == 1.0)?;

    // Restarts climb.
    let mut p = crashlooping_fence();
    objects::set_restarts(&mut p, "fence", 8);
    kube.apply(p);
    wait_value(&c, r#"kube_pod_container_status_restarts_total{service="fence"}"#, |v| v == 8.0)?;

    // The rule pack's Kubernetes alerts fire for this commons: the crash
    // loop, the Deployment short of a replica, the CronJob's failed Job, the
    // pending PVC, the OOMKilled container.
    for alert in [
        "KubePodCrashLooping",
        "KubeDeploymentReplicasMismatch",
        "KubeJobFailed",
        "KubePersistentVolumeClaimPending",
        "KubeContainerOOMKilled",
    ] {
        let q = format!(r#"ALERTS{{alertname="{alert}",alertstate="firing",commons="alpha"}}"#);
        wait_for(&q, WAIT, || c.query(&q).ok().filter(|r| !r.is_empty()))?;
    }

    // A Warning event after the start is counted (the series first at 0).
    kube.apply(objects::event(
        "gen3",
        "Pod",
        "fence-deployment-5d8c9-abcde",
        "Warning",
        "BackOff",
        "Back-off restarting failed container fence",
    ));
    wait_value(&c, r#"kube_events_total{kind="Pod",reason="BackOff"}"#, |v| v == 1.0)?;

    // The watch is cut: resumed from its resourceVersion, nothing missed.
    kube.cut_watches();
    kube.apply(objects::pod("gen3", "sheepdog-deployment-1a2b-qqqqq", "sheepdog", "Running"));
    wait_value(&c, r#"kube_pod_status_phase{service="sheepdog",phase="Running"}"#, |v| v == 1.0)?;

    // History compacted: 410 Gone, a relist.
    kube.compact();
    kube.apply(objects::pod("gen3", "peregrine-deployment-3c4d-rrrrr", "peregrine", "Pending"));
    wait_value(&c, r#"kube_pod_status_phase{service="peregrine",phase="Pending"}"#, |v| v == 1.0)?;
    wait_value(&c, r#"csoc_agent_kubernetes_watch_relists_total{kind="pods"}"#, |v| v >= 1.0)?;

    // A deleted pod's series go stale at once.
    assert!(kube.delete("Pod", Some("gen3"), "indexd-deployment-7f6b-xyz12"));
    wait_empty(&c, r#"kube_pod_info{pod="indexd-deployment-7f6b-xyz12"}"#)?;

    // The ClusterRole is granted: nodes heal without a restart.
    kube.allow("nodes");
    wait_value(
        &c,
        r#"kube_node_status_condition{node="node-2",condition="Ready",status="unknown"}"#,
        |v| v == 1.0,
    )?;
    wait_value(&c, r#"csoc_agent_kubernetes_forbidden{kind="nodes"}"#, |v| v == 0.0)?;
    let errors = wait_for("forbidden counted", WAIT, || {
        let (_, text) = get_text(&agent_metrics).ok()?;
        metric_value(&text, r#"csoc_agent_source_errors_total{source="kubernetes",kind="forbidden"}"#)
    })?;
    assert!(errors >= 1.0);
    Ok(())
}
