//! Pods' logs and pod discovery through the Kubernetes API, against the fake
//! API server (`csoc_tests::fakekube`):
//! - revproxy_log in kubernetes mode (the agent's library, in process):
//!   replicas logging, streams cut, a pod deleted (drained) and recreated
//!   under its name, the source restarted: every line counted exactly once;
//! - the same end to end: the real csoc-agent (`--revproxy-log-pods`) →
//!   csoc-collector, the agent restarted mid-way;
//! - log counters (usersync errors, hatchery panics, fence's signed-URL
//!   bytes) over pods' logs;
//! - kubernetes_sd_configs: each annotated replica scraped on its own, a
//!   deleted pod's target removed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csoc_agent::model::Frame;
use csoc_agent::sources::pod_logs::{LogCounterConfig, LogCountersSource, PodLogSelector};
use csoc_agent::sources::revproxy_log::{RevproxyLogConfig, RevproxyLogSource};
use csoc_agent::sources::{Source, SourceContext};
use csoc_tests::fakekube::{FakeKube, objects};
use csoc_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

/// A revproxy access-log record (the JSON format of revproxy-log.md).
fn rec(i: usize, svc: &str) -> String {
    format!(
        "{{\"gen3log\": \"nginx\", \"date_access\": \"2026-08-21T14:00:17+00:00\", \"user_id\": \"uid:{i},u{i}@x\", \"request_id\": \"r{i}\", \"session_id\": \"s\", \"visitor_id\": \"v\", \"network_client_ip\": \"1.2.3.4\", \"network_bytes_write\": 10, \"response_secs\": 0.020, \"http_status_code\": 200, \"http_request\": \"/user/user\", \"http_verb\": \"GET\", \"http_referer\": \"-\", \"http_useragent\": \"-\", \"http_upstream\": \"http://{svc}-service.gen3.svc.cluster.local\", \"proxy_service\": \"{svc}\", \"message\": \"GET /user/user HTTP/1.1\" }}"
    )
}

/// Runs `src` in process; the latest value of each series (by its sorted
/// `name{k=v,...}` text) is kept in the returned map.
struct Running {
    stop: Box<dyn Fn() + Send>,
    task: tokio::task::JoinHandle<()>,
    drain: tokio::task::JoinHandle<()>,
    latest: Arc<Mutex<BTreeMap<String, f64>>>,
}

fn series_key(s: &csoc_agent::model::Sample) -> String {
    let name = s
        .labels
        .iter()
        .find(|(k, _)| k == "__name__")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let rest: Vec<String> = s
        .labels
        .iter()
        .filter(|(k, _)| k != "__name__")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

fn run(src: Box<dyn Source>, name: &str) -> Running {
    let (cx, mut rx) = SourceContext::for_test(name, Duration::from_millis(200));
    let token = cx.shutdown.clone();
    let stop: Box<dyn Fn() + Send> = Box::new(move || token.cancel());
    let task = tokio::spawn(src.run(cx));
    let latest = Arc::new(Mutex::new(BTreeMap::new()));
    let l = latest.clone();
    let drain = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            let f: Frame = f;
            let mut g = l.lock().expect("lock");
            for s in &f.samples {
                g.insert(series_key(s), s.value);
            }
        }
    });
    Running { stop, task, drain, latest }
}

impl Running {
    fn get(&self, key: &str) -> Option<f64> {
        self.latest.lock().expect("lock").get(key).copied()
    }

    async fn wait(&self, what: &str, key: &str, want: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.get(key);
            if v == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {key} is {v:?}, want {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the source (as the agent does at shutdown) and waits for it.
    async fn stop(self) {
        (self.stop)();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("source stops promptly")
            .expect("no panic");
        let _ = self.drain.await;
    }
}

const OK: &str = "gen3_revproxy_log_lines_total{job=gen3,result=ok}";

fn revproxy_cfg(state: &Path) -> RevproxyLogConfig {
    RevproxyLogConfig {
        enabled: true,
        kubernetes: Some(PodLogSelector {
            namespace: "gen3".into(),
            selector: "app=revproxy".into(),
            container: Some("revproxy".into()),
        }),
        interval: Some(Duration::from_millis(200)),
        state_file: Some(state.to_path_buf()),
        ..Default::default()
    }
}

fn log_n(kube: &FakeKube, pod: &str, from: usize, n: usize) {
    for i in from..from + n {
        kube.log("gen3", pod, "revproxy", &rec(i, "fence"));
    }
}

#[tokio::test]
async fn revproxy_pods_log_counts_exactly_across_cuts_deletion_recreation_and_restarts() {
    let kube = FakeKube::start().expect("fake kube");
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kc, "gen3").expect("kubeconfig");
    let state = dir.path().join("revproxy_log.state");
    for p in ["revproxy-a", "revproxy-b"] {
        kube.apply(objects::pod("gen3", p, "revproxy", "Running"));
    }
    kube.apply(objects::pod("gen3", "fence-x", "fence", "Running"));
    log_n(&kube, "revproxy-a", 0, 10);
    log_n(&kube, "revproxy-b", 100, 5);
    kube.log("gen3", "fence-x", "fence", &rec(999, "fence")); // not selected

    let start = |kc: &Path| {
        let src = RevproxyLogSource::new(&revproxy_cfg(&state), dir.path())
            .expect("valid")
            .with_kubeconfig(Some(kc.to_path_buf()));
        run(Box::new(src), "revproxy_log")
    };
    let r = start(&kc);
    r.wait("both replicas read", OK, 15.0).await;

    // Streams cut mid-flight: resumed, nothing lost or doubled.
    kube.cut_log_streams();
    log_n(&kube, "revproxy-a", 10, 3);
    r.wait("after a cut", OK, 18.0).await;
    kube.cut_log_streams();
    kube.cut_log_streams();
    log_n(&kube, "revproxy-b", 105, 2);
    r.wait("after more cuts", OK, 20.0).await;

    // b writes its last lines and is deleted: drained; recreated under its
    // name (a new uid): read from its beginning.
    log_n(&kube, "revproxy-b", 107, 2);
    kube.delete("pods", Some("gen3"), "revproxy-b");
    r.wait("deleted pod drained", OK, 22.0).await;
    kube.apply(objects::pod("gen3", "revproxy-b", "revproxy", "Running"));
    log_n(&kube, "revproxy-b", 200, 4);
    r.wait("recreated pod", OK, 26.0).await;

    // The agent stops; lines keep coming; it starts again from its state.
    r.stop().await;
    log_n(&kube, "revproxy-a", 13, 2);
    let r = start(&kc);
    r.wait("after a restart", OK, 28.0).await;
    log_n(&kube, "revproxy-c", 300, 0);
    kube.apply(objects::pod("gen3", "revproxy-c", "revproxy", "Running"));
    log_n(&kube, "revproxy-c", 300, 3);
    r.wait("a new replica", OK, 31.0).await;
    // Nothing more arrives late (a double count would show up here).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.get(OK), Some(31.0));
    assert_eq!(
        r.get("gen3_http_requests_total{code=200,job=gen3,method=GET,service=fence}"),
        Some(31.0)
    );
    r.stop().await;
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("json");
    let pods = saved["pods"].as_object().expect("pods");
    assert_eq!(pods.len(), 3, "cursors of a, the new b and c only: {pods:?}");
}

/// A context whose metrics are in `reg` (to read the error counters).
fn context(name: &str, reg: &mut prometheus_client::registry::Registry) -> (SourceContext, tokio::sync::mpsc::Receiver<Frame>) {
    let (mut cx, rx) = SourceContext::for_test(name, Duration::from_millis(200));
    cx.metrics = csoc_agent::metrics::AgentMetrics::new(reg).source;
    (cx, rx)
}

fn exposition(reg: &prometheus_client::registry::Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, reg).expect("encode");
    s
}

/// 403 on pods/log, then on listing pods: counted as forbidden, the
/// counters keep being sent, the source stops promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revproxy_pods_log_forbidden_is_counted_and_the_source_keeps_going() {
    let kube = FakeKube::start().expect("fake kube");
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kc, "gen3").expect("kubeconfig");
    kube.apply(objects::pod("gen3", "revproxy-a", "revproxy", "Running"));
    log_n(&kube, "revproxy-a", 0, 4);
    for resource in ["pods/log", "pods"] {
        kube.forbid(resource);
        let src = RevproxyLogSource::new(
            &revproxy_cfg(&dir.path().join(format!("{}.state", resource.replace('/', "_")))),
            dir.path(),
        )
        .expect("valid")
        .with_kubeconfig(Some(kc.clone()));
        let mut reg = prometheus_client::registry::Registry::default();
        let (cx, mut rx) = context("revproxy_log", &mut reg);
        let stop = cx.shutdown.clone();
        let task = tokio::spawn(Box::new(src).run(cx));
        let want = "csoc_agent_source_errors_total{source=\"revproxy_log\",kind=\"forbidden\"} 1";
        let deadline = Instant::now() + WAIT;
        let mut frames = 0;
        while !exposition(&reg).contains(want) || frames < 2 {
            assert!(Instant::now() < deadline, "{resource}: {}", exposition(&reg));
            if let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                assert!(!f.samples.is_empty());
                frames += 1;
            }
        }
        stop.cancel();
        while rx.recv().await.is_some() {}
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops")
            .expect("no panic");
        kube.allow(resource);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_counters_count_usersync_errors_hatchery_panics_and_signed_url_bytes() {
    let kube = FakeKube::start().expect("fake kube");
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kc, "gen3").expect("kubeconfig");
    let counters: Vec<LogCounterConfig> = counters_yaml(
        r#"
- metric: gen3_download_bytes_total
  selector: app=fence
  container: fence
  regex: 'Signed URL Generated\. action=(?P<action>\w+) size_in_kibibytes=(?P<kib>[0-9.eE+-]+)'
  value: kib
  scale: 1024
- metric: gen3_log_errors_total
  labels: {pattern: hatchery_panic}
  selector: app=hatchery
  regex: panic
- metric: gen3_log_errors_total
  labels: {pattern: usersync_revoke}
  selector: app=gen3job
  pod_name: ^usersync-
  regex: 'ERROR - could not revoke policies from user `N/A`'
"#,
    );
    kube.apply(objects::pod("gen3", "fence-1", "fence", "Running"));
    kube.apply(objects::pod("gen3", "hatchery-1", "hatchery", "Running"));
    kube.apply(objects::pod("gen3", "usersync-2901", "gen3job", "Succeeded"));
    kube.apply(objects::pod("gen3", "gitops-1", "gen3job", "Running"));
    let fence = |kib: &str| {
        format!(
            "[2025-09-24 10:00:00,000][fence.blueprints.data.indexd][   INFO] Signed URL Generated. action=download size_in_kibibytes={kib} acl=None authz=['/programs/a'] bucket=s3://b user_sub=1 client_id=Unknown Client"
        )
    };
    kube.log("gen3", "fence-1", "fence", &fence("1.5"));
    kube.log("gen3", "fence-1", "fence", &fence("1024.0"));
    kube.log("gen3", "fence-1", "fence", "User logged in. user.id=1");
    kube.log("gen3", "hatchery-1", "hatchery", "panic: runtime error");
    kube.log(
        "gen3",
        "usersync-2901",
        "gen3job",
        "[ERROR] ERROR - could not revoke policies from user `N/A`",
    );
    kube.log(
        "gen3",
        "usersync-2901",
        "gen3job",
        "[ERROR] ERROR - could not revoke policies from user `N/A`",
    );
    kube.log("gen3", "gitops-1", "gen3job", "ERROR - could not revoke policies from user `N/A`");
    let src = LogCountersSource::new(vec!["gen3".into()], counters.clone(), Some(kc.clone()), dir.path()).expect("valid");
    let r = run(Box::new(src), "log_counters");
    r.wait(
        "signed URL bytes",
        "gen3_download_bytes_total{action=download,namespace=gen3,service=fence}",
        (1.5 + 1024.0) * 1024.0,
    )
    .await;
    r.wait(
        "hatchery panic",
        "gen3_log_errors_total{namespace=gen3,pattern=hatchery_panic,service=hatchery}",
        1.0,
    )
    .await;
    r.wait(
        "usersync errors",
        "gen3_log_errors_total{namespace=gen3,pattern=usersync_revoke,service=gen3job}",
        2.0,
    )
    .await;
    kube.log("gen3", "hatchery-1", "hatchery", "goroutine panic again");
    r.wait(
        "hatchery panic 2",
        "gen3_log_errors_total{namespace=gen3,pattern=hatchery_panic,service=hatchery}",
        2.0,
    )
    .await;
    r.stop().await;
    // Restarted: the finished usersync pod is not read twice, live pods
    // resume after their last counted line.
    kube.log("gen3", "hatchery-1", "hatchery", "panic 3");
    let src = LogCountersSource::new(vec!["gen3".into()], counters, Some(kc), dir.path()).expect("valid");
    let r = run(Box::new(src), "log_counters");
    r.wait(
        "hatchery panic 3",
        "gen3_log_errors_total{namespace=gen3,pattern=hatchery_panic,service=hatchery}",
        3.0,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        r.get("gen3_log_errors_total{namespace=gen3,pattern=usersync_revoke,service=gen3job}"),
        Some(2.0)
    );
    assert_eq!(
        r.get("gen3_download_bytes_total{action=download,namespace=gen3,service=fence}"),
        Some((1.5 + 1024.0) * 1024.0)
    );
    r.stop().await;
}

fn counters_yaml(y: &str) -> Vec<LogCounterConfig> {
    csoc_common::config::parse_yaml::<Vec<LogCounterConfig>>(y, Path::new("counters.yml")).expect("counters yaml")
}

/// The real binaries: csoc-agent `--revproxy-log-pods` against the fake,
/// shipping to csoc-collector; a replica deleted and recreated, the agent
/// restarted mid-way; the collector's sum is exact.
#[test]
fn agent_revproxy_log_pods_end_to_end_exact_across_a_restart() -> anyhow::Result<()> {
    const TOKEN: &str = "k8s-logs-token-0123456789abcdef";
    let kube = FakeKube::start()?;
    let dir = tempfile::tempdir()?;
    let kc = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kc, "gen3")?;
    for p in ["revproxy-a", "revproxy-b"] {
        kube.apply(objects::pod("gen3", p, "revproxy", "Running"));
    }
    log_n(&kube, "revproxy-a", 0, 50);
    log_n(&kube, "revproxy-b", 100, 30);
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN}")])?;
    let cfg = dir.path().join("agent.yml");
    std::fs::write(&cfg, "sources:\n  host: {enabled: false}\n")?;
    let (cfg_s, kc_s) = (cfg.display().to_string(), kc.display().to_string());
    let args = [
        "--token",
        TOKEN,
        "--config",
        &cfg_s,
        "--interval",
        "1s",
        "--kubeconfig",
        &kc_s,
        "--revproxy-log-pods",
        "app=revproxy",
        "--revproxy-log-namespace",
        "gen3",
    ];
    let (mut agent, metrics) = start_agent(dir.path(), "agent", &c.grpc, &args)?;
    let total = |c: &Collector| -> Option<u64> {
        c.query("sum(gen3_http_requests_total)")
            .ok()
            .and_then(|r| r.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok()))
            .map(|v| v as u64)
    };
    let wait_total = |c: &Collector, n: u64, agent: &Proc| {
        wait_for(&format!("sum(gen3_http_requests_total) == {n}"), WAIT, || {
            (total(c) == Some(n)).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}: the sum is {:?}; agent log:\n{}", total(c), agent.log_text()))
    };
    wait_total(&c, 80, &agent)?;

    // b writes its last lines and is deleted: drained. (A stream cut at the
    // very moment its pod disappears loses what it had not delivered: the
    // API serves no logs of a deleted pod.)
    log_n(&kube, "revproxy-b", 130, 5);
    kube.delete("pods", Some("gen3"), "revproxy-b");
    wait_total(&c, 85, &agent)?;
    // Recreated under its name, then every stream is cut.
    kube.apply(objects::pod("gen3", "revproxy-b", "revproxy", "Running"));
    log_n(&kube, "revproxy-b", 200, 7);
    kube.cut_log_streams();
    log_n(&kube, "revproxy-a", 50, 3);
    wait_total(&c, 95, &agent)?;
    let m = get_text(&metrics)?.1;
    assert!(m.contains("csoc_agent_source_samples_total{source=\"revproxy_log\"}"), "{m}");

    // Restart mid-way: lines written while it is down are counted once.
    agent.terminate()?;
    log_n(&kube, "revproxy-a", 53, 4);
    let (agent, _) = start_agent(dir.path(), "agent", &c.grpc, &args)?;
    wait_total(&c, 99, &agent)?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(total(&c), Some(99), "no double count after the restart");
    Ok(())
}

/// kubernetes_sd_configs (role pod, the annotation job): two annotated
/// replicas on 127.0.0.1 with different ports are two targets; deleting one
/// removes its target (its `up` goes stale).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_sd_scrapes_each_annotated_replica() {
    use axum::Router;
    use axum::routing::get;
    let kube = FakeKube::start().expect("fake kube");
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kc, "gen3").expect("kubeconfig");
    let mut ports = Vec::new();
    for i in 0..2 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ports.push(l.local_addr().expect("addr").port());
        let body = format!("# TYPE fence_requests_total counter\nfence_requests_total {}\n", 10 * (i + 1));
        let app = Router::new().route("/fence/metrics", get(move || async move { body }));
        tokio::spawn(async move { axum::serve(l, app).await.ok() });
    }
    for (i, port) in ports.iter().enumerate() {
        let mut p = objects::pod("gen3", &format!("fence-{i}"), "fence", "Running");
        p["status"]["podIP"] = Value::from("127.0.0.1");
        p["spec"]["containers"][0]["ports"] = serde_json::json!([{"containerPort": port, "protocol": "TCP"}]);
        objects::set_annotations(
            &mut p,
            &[
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/path", "/fence/metrics"),
                ("prometheus.io/port", &port.to_string()),
            ],
        );
        kube.apply(p);
    }
    let mut not_annotated = objects::pod("gen3", "indexd-0", "indexd", "Running");
    not_annotated["status"]["podIP"] = Value::from("127.0.0.1");
    kube.apply(not_annotated);
    let y = r#"
jobs:
- job_name: kubernetes-pods
  scrape_interval: 200ms
  scrape_timeout: 150ms
  kubernetes_sd_configs:
  - role: pod
    namespaces: {names: [gen3]}
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: "true"
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
    target_label: __metrics_path__
    regex: (.+)
  - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
    regex: ([^:]+)(?::\d+)?;(\d+)
    replacement: $1:$2
    target_label: __address__
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
"#;
    let cfg: csoc_agent::sources::scrape::ScrapeConfig = csoc_common::config::parse_yaml(y, Path::new("s.yml")).expect("yaml");
    let src = csoc_agent::sources::scrape::ScrapeSource::new(&cfg, Duration::from_millis(200))
        .expect("valid")
        .with_kubeconfig(Some(kc));
    let r = run(Box::new(src), "scrape");
    for (i, port) in ports.iter().enumerate() {
        let key = format!("fence_requests_total{{instance=127.0.0.1:{port},job=kubernetes-pods,pod=fence-{i}}}");
        r.wait("each replica", &key, 10.0 * (i as f64 + 1.0)).await;
    }
    let ups = r.latest.lock().expect("lock").keys().filter(|k| k.starts_with("up{")).count();
    assert_eq!(ups, 2, "two targets, indexd not kept");
    kube.delete("pods", Some("gen3"), "fence-1");
    let key = format!("up{{instance=127.0.0.1:{},job=kubernetes-pods,pod=fence-1}}", ports[1]);
    let deadline = Instant::now() + WAIT;
    while !r.get(&key).is_some_and(f64::is_nan) {
        assert!(
            Instant::now() < deadline,
            "the deleted pod's up never went stale: {:?}",
            r.get(&key)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.stop().await;
}

/// kubernetes_sd_configs with role endpoints: the Service's annotations
/// select it, each address behind it (a pod) is a target with the pod's
/// labels; a pod leaving the Endpoints loses its target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_sd_endpoints_role_scrapes_the_pods_behind_an_annotated_service() {
    use axum::Router;
    use axum::routing::get;
    let kube = FakeKube::start().expect("fake kube");
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kc, "gen3").expect("kubeconfig");
    let mut ports = Vec::new();
    for i in 0..2 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ports.push(l.local_addr().expect("addr").port());
        let body = format!("indexd_up {}\n", i + 1);
        let app = Router::new().route("/metrics", get(move || async move { body }));
        tokio::spawn(async move { axum::serve(l, app).await.ok() });
    }
    for (i, port) in ports.iter().enumerate() {
        let mut p = objects::pod("gen3", &format!("indexd-{i}"), "indexd", "Running");
        p["status"]["podIP"] = Value::from("127.0.0.1");
        p["spec"]["containers"][0]["ports"] = serde_json::json!([{"name": "http", "containerPort": port, "protocol": "TCP"}]);
        kube.apply(p);
    }
    kube.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "indexd-service", "namespace": "gen3", "labels": {"app": "indexd"},
                     "annotations": {"prometheus.io/scrape": "true"}},
        "spec": {"selector": {"app": "indexd"}, "ports": [{"port": 80, "targetPort": 80}]}
    }));
    let endpoints = |n: usize| {
        let subsets: Vec<Value> = ports
            .iter()
            .enumerate()
            .take(n)
            .map(|(i, port)| {
                serde_json::json!({
                    "addresses": [{"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": format!("indexd-{i}"), "namespace": "gen3"}}],
                    "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
                })
            })
            .collect();
        serde_json::json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "indexd-service", "namespace": "gen3", "labels": {"app": "indexd"}},
            "subsets": subsets
        })
    };
    kube.apply(endpoints(2));
    let y = r#"
jobs:
- job_name: kubernetes-service-endpoints
  scrape_interval: 200ms
  scrape_timeout: 150ms
  kubernetes_sd_configs:
  - role: endpoints
    namespaces: {names: [gen3]}
  relabel_configs:
  - source_labels: [__meta_kubernetes_service_annotation_prometheus_io_scrape]
    action: keep
    regex: "true"
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
  - source_labels: [__meta_kubernetes_service_name]
    target_label: kubernetes_service
  - source_labels: [__meta_kubernetes_endpoint_ready]
    target_label: ready
"#;
    let cfg: csoc_agent::sources::scrape::ScrapeConfig = csoc_common::config::parse_yaml(y, Path::new("s.yml")).expect("yaml");
    let src = csoc_agent::sources::scrape::ScrapeSource::new(&cfg, Duration::from_millis(200))
        .expect("valid")
        .with_kubeconfig(Some(kc));
    let r = run(Box::new(src), "scrape");
    for (i, port) in ports.iter().enumerate() {
        let key = format!(
            "indexd_up{{instance=127.0.0.1:{port},job=kubernetes-service-endpoints,kubernetes_service=indexd-service,pod=indexd-{i},ready=true}}"
        );
        r.wait("each pod behind the service", &key, i as f64 + 1.0).await;
    }
    // indexd-1 leaves the Endpoints: its target goes, its up is marked stale.
    kube.apply(endpoints(1));
    let key = format!(
        "up{{instance=127.0.0.1:{},job=kubernetes-service-endpoints,kubernetes_service=indexd-service,pod=indexd-1,ready=true}}",
        ports[1]
    );
    let deadline = Instant::now() + WAIT;
    while !r.get(&key).is_some_and(f64::is_nan) {
        assert!(Instant::now() < deadline, "up of the removed address: {:?}", r.get(&key));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.stop().await;
}
