//! The fake Kubernetes API server (`csoc_tests::fakekube`) against real
//! clients, to show it answers as they expect:
//!
//! - kubectl (where installed): `get pods -o json`, the human table,
//!   `get pods --watch -o json`, `logs -f POD -c CONTAINER`, and
//!   `get nodes` refused with the apiserver's Forbidden message. A missing
//!   kubectl skips these with a message, and fails them under
//!   `CSOC_REQUIRE_INTEROP=1` (as in CI). kubectl's discovery cache goes to
//!   the test's own directory (`--cache-dir`).
//! - kube-rs (always): `kube::runtime::watcher` lists in pages then
//!   watches, resumes after `cut_watches()` from its resourceVersion
//!   without a relist, and relists after `compact()` (410 Expired); 403s
//!   reach it as `kube::Error::Api` with code 403; `Api::log_stream`
//!   follows a pod's log until the pod is deleted.
//!
//! Everything runs on 127.0.0.1, every wait is bounded, every process is
//! stopped by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use csoc_tests::fakekube::{FakeKube, Options, objects};
use csoc_tests::wait_for;
use serde_json::Value;

/// kubectl from PATH; `None` (with a message) when missing, or a panic
/// under `CSOC_REQUIRE_INTEROP=1`.
fn kubectl_program() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join("kubectl")).find(|f| f.is_file()));
    if found.is_none() {
        let msg = "kubectl not found in PATH (Debian/Ubuntu: apt-get install kubernetes-client)";
        if std::env::var("CSOC_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("{msg}, and CSOC_REQUIRE_INTEROP=1 forbids skipping");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// A fake with a kubeconfig for it in a temporary directory.
struct Setup {
    kube: FakeKube,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

fn setup(opts: Options) -> anyhow::Result<Setup> {
    let kube = FakeKube::start_with(opts)?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "gen3")?;
    Ok(Setup { kube, dir, kubeconfig })
}

impl Setup {
    /// kubectl's common arguments, then `args`.
    fn args(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            "--kubeconfig".to_string(),
            self.kubeconfig.display().to_string(),
            "--cache-dir".to_string(),
            self.dir.path().join("cache").display().to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Starts kubectl with stdout and stderr to files named after `name`.
    fn spawn(&self, kubectl: &Path, name: &str, args: &[&str]) -> anyhow::Result<(Child, PathBuf, PathBuf)> {
        let out = self.dir.path().join(format!("{name}.stdout"));
        let err = self.dir.path().join(format!("{name}.stderr"));
        let child = Command::new(kubectl)
            .args(self.args(args))
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .with_context(|| format!("starting {}", kubectl.display()))?;
        Ok((child, out, err))
    }

    /// Runs kubectl to its end (killed by PID after 30s): status, stdout,
    /// stderr.
    fn run(&self, kubectl: &Path, name: &str, args: &[&str]) -> anyhow::Result<(ExitStatus, String, String)> {
        let (mut child, out, err) = self.spawn(kubectl, name, args)?;
        let status = wait_exit(&mut child, Duration::from_secs(30)).with_context(|| format!("kubectl {args:?}"))?;
        Ok((status, std::fs::read_to_string(out)?, std::fs::read_to_string(err)?))
    }
}

/// Waits for a child to exit; kills it (by PID) and fails after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a child by its PID and reaps it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The JSON documents of a stream of them (kubectl's `--watch -o json`
/// prints one indented object per event), ignoring a partial last one.
fn json_stream(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

fn gen3_pods(kube: &FakeKube) {
    for (name, app) in [
        ("fence-deployment-6f7c9d8b5-x2x9q", "fence"),
        ("indexd-deployment-5d8f7c6b4-k8gdc", "indexd"),
        ("revproxy-deployment-7b9c8d6f5-mr874", "revproxy"),
    ] {
        kube.apply(objects::pod("gen3", name, app, "Running"));
    }
    kube.apply(objects::pod("other", "fence-elsewhere", "fence", "Running"));
}

#[test]
fn kubectl_get_pods_json_lists_the_applied_pods() -> anyhow::Result<()> {
    let Some(kubectl) = kubectl_program() else { return Ok(()) };
    let s = setup(Options::default())?;
    gen3_pods(&s.kube);
    let mut p = objects::pod("gen3", "sheepdog-deployment-8c7d6b5f4-tm5ww", "sheepdog", "Running");
    objects::set_waiting(&mut p, "sheepdog", "CrashLoopBackOff", "back-off 5m0s restarting failed container");
    objects::set_restarts(&mut p, "sheepdog", 7);
    s.kube.apply(p);

    let (status, out, err) = s.run(&kubectl, "get-json", &["get", "pods", "-n", "gen3", "-o", "json"])?;
    assert!(status.success(), "{status}: {err}");
    assert_eq!(err, "", "kubectl complained");
    let list: Value = serde_json::from_str(&out).context("kubectl's output is JSON")?;
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().context("items")?;
    let mut names: Vec<&str> = items.iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fence-deployment-6f7c9d8b5-x2x9q",
            "indexd-deployment-5d8f7c6b4-k8gdc",
            "revproxy-deployment-7b9c8d6f5-mr874",
            "sheepdog-deployment-8c7d6b5f4-tm5ww",
        ]
    );
    assert!(items.iter().all(|i| i["kind"] == "Pod" && i["apiVersion"] == "v1"));
    let sheepdog = items
        .iter()
        .find(|i| i["metadata"]["labels"]["app"] == "sheepdog")
        .context("sheepdog")?;
    assert_eq!(sheepdog["status"]["containerStatuses"][0]["restartCount"], 7);
    assert_eq!(
        sheepdog["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "CrashLoopBackOff"
    );
    assert!(sheepdog["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));

    // The human table (server-side printing).
    let (status, out, err) = s.run(&kubectl, "get-table", &["get", "pods"])?;
    assert!(status.success(), "{status}: {err}");
    assert_eq!(err, "", "kubectl complained");
    let header = out.lines().next().unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let row = out.lines().find(|l| l.starts_with("sheepdog-")).context("sheepdog row")?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..4], ["0/1", "CrashLoopBackOff", "7"], "{row}");
    Ok(())
}

#[test]
fn kubectl_get_pods_watch_json_sees_a_change() -> anyhow::Result<()> {
    let Some(kubectl) = kubectl_program() else { return Ok(()) };
    let s = setup(Options::default())?;
    gen3_pods(&s.kube);
    let (mut child, out, err) = s.spawn(&kubectl, "watch", &["get", "pods", "-n", "gen3", "--watch", "-o", "json"])?;
    let result = (|| -> anyhow::Result<()> {
        wait_for("kubectl to print the three pods", Duration::from_secs(20), || {
            let docs = json_stream(&std::fs::read_to_string(&out).unwrap_or_default());
            (docs.len() >= 3).then_some(())
        })?;
        wait_for("kubectl's watch request", Duration::from_secs(10), || {
            s.kube
                .requests()
                .iter()
                .any(|r| r.watch && r.path == "/api/v1/namespaces/gen3/pods")
                .then_some(())
        })?;
        let mut p = objects::pod("gen3", "fence-deployment-6f7c9d8b5-x2x9q", "fence", "Running");
        objects::set_restarts(&mut p, "fence", 4);
        objects::set_last_terminated(&mut p, "fence", "OOMKilled", 137);
        s.kube.apply(p);
        s.kube
            .apply(objects::pod("gen3", "portal-deployment-9f8e7d6c5-abcde", "portal", "Pending"));
        let docs = wait_for("the change in kubectl's output", Duration::from_secs(20), || {
            let docs = json_stream(&std::fs::read_to_string(&out).unwrap_or_default());
            let changed = docs.iter().any(|d| {
                d["metadata"]["name"] == "fence-deployment-6f7c9d8b5-x2x9q" && d["status"]["containerStatuses"][0]["restartCount"] == 4
            });
            let added = docs.iter().any(|d| d["metadata"]["name"] == "portal-deployment-9f8e7d6c5-abcde");
            (changed && added).then_some(docs)
        })?;
        let fence = docs
            .iter()
            .rev()
            .find(|d| d["metadata"]["name"] == "fence-deployment-6f7c9d8b5-x2x9q")
            .context("fence")?;
        assert_eq!(
            fence["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"],
            "OOMKilled"
        );
        Ok(())
    })();
    stop(&mut child);
    let err = std::fs::read_to_string(&err)?;
    result.with_context(|| format!("kubectl stderr: {err}"))?;
    assert_eq!(err, "", "kubectl complained");
    // It listed once, then watched from that list's resourceVersion.
    let reqs = s.kube.requests();
    let pods: Vec<_> = reqs.iter().filter(|r| r.path == "/api/v1/namespaces/gen3/pods").collect();
    assert_eq!(pods.iter().filter(|r| !r.watch).count(), 1, "{pods:?}");
    assert!(pods.iter().any(|r| r.watch && r.query.contains("resourceVersion=")), "{pods:?}");
    Ok(())
}

#[test]
fn kubectl_logs_follow_gets_old_and_new_lines_and_ends_with_the_pod() -> anyhow::Result<()> {
    let Some(kubectl) = kubectl_program() else { return Ok(()) };
    let s = setup(Options::default())?;
    let name = "revproxy-deployment-7b9c8d6f5-mr874";
    let mut p = objects::pod("gen3", name, "revproxy", "Running");
    objects::add_container(&mut p, "nginx-exporter");
    s.kube.apply(p);
    s.kube.log("gen3", name, "revproxy", "before-1");
    s.kube.log("gen3", name, "nginx-exporter", "not this container");
    s.kube.log("gen3", name, "revproxy", "before-2");

    // Without -c, kubectl 1.21 and later pick the pod's first container
    // themselves; older ones send no container and print the server's 400.
    let (status, out, err) = s.run(&kubectl, "logs-no-c", &["logs", name])?;
    if status.success() {
        assert_eq!(out, "before-1\nbefore-2\n");
        assert!(
            err.contains("Defaulted container \"revproxy\" out of: revproxy, nginx-exporter"),
            "{err}"
        );
    } else {
        assert!(
            err.contains(
                "a container name must be specified for pod revproxy-deployment-7b9c8d6f5-mr874, choose one of: [revproxy nginx-exporter]"
            ),
            "{err}"
        );
    }

    let (mut child, out, err) = s.spawn(&kubectl, "logs", &["logs", "-f", name, "-c", "revproxy"])?;
    let result = (|| -> anyhow::Result<ExitStatus> {
        wait_for("the lines logged before", Duration::from_secs(20), || {
            std::fs::read_to_string(&out).ok().filter(|o| o.contains("before-2"))
        })?;
        s.kube.log("gen3", name, "revproxy", "after-1");
        wait_for("a line logged after the start", Duration::from_secs(10), || {
            std::fs::read_to_string(&out).ok().filter(|o| o.contains("after-1"))
        })?;
        s.kube.log("gen3", name, "revproxy", "after-2");
        assert!(s.kube.delete("Pod", Some("gen3"), name));
        wait_exit(&mut child, Duration::from_secs(10)).context("kubectl logs -f after the pod's deletion")
    })();
    stop(&mut child);
    let err = std::fs::read_to_string(&err)?;
    let status = result.with_context(|| format!("kubectl stderr: {err}"))?;
    assert!(status.success(), "{status}: {err}");
    assert_eq!(err, "", "kubectl complained");
    assert_eq!(std::fs::read_to_string(&out)?, "before-1\nbefore-2\nafter-1\nafter-2\n");
    Ok(())
}

#[test]
fn kubectl_get_nodes_when_forbidden_fails_with_the_forbidden_message() -> anyhow::Result<()> {
    let Some(kubectl) = kubectl_program() else { return Ok(()) };
    let s = setup(Options::default())?;
    s.kube.apply(objects::node("node-1", true));
    let (status, out, err) = s.run(&kubectl, "nodes-ok", &["get", "nodes", "-o", "name"])?;
    assert!(status.success(), "{err}");
    assert_eq!(out, "node/node-1\n");
    s.kube.forbid("nodes");
    let (status, _, err) = s.run(&kubectl, "nodes-forbidden", &["get", "nodes"])?;
    assert!(!status.success());
    assert!(
        err.contains(
            "Error from server (Forbidden): nodes is forbidden: User \"system:serviceaccount:gen3:csoc-agent\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        ),
        "{err}"
    );
    Ok(())
}

mod kube_rs {
    //! kube-rs, the agent's client, against the fake.

    use std::time::Duration;

    use anyhow::{Context, bail};
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Api, LogParams};
    use kube::runtime::watcher::{self, Event};
    use tokio_stream::{Stream, StreamExt};

    use super::*;

    async fn client(s: &Setup) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// The next event (watcher errors skipped: a cut or a 410 shows as one
    /// before the watcher recovers), within 10s.
    async fn next<S: Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin>(w: &mut S) -> anyhow::Result<Event<Pod>> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
                Err(_) => bail!("no watcher event within 10s"),
                Ok(None) => bail!("the watcher stream ended"),
                Ok(Some(Err(_))) => continue,
                Ok(Some(Ok(e))) => return Ok(e),
            }
        }
    }

    fn name(p: &Pod) -> String {
        p.metadata.name.clone().unwrap_or_default()
    }

    /// Init, InitApply per object, InitDone: the names listed.
    async fn initial<S: Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin>(w: &mut S) -> anyhow::Result<Vec<String>> {
        match next(w).await? {
            Event::Init => {}
            other => bail!("expected Init, got {other:?}"),
        }
        let mut names = Vec::new();
        loop {
            match next(w).await? {
                Event::InitApply(p) => names.push(name(&p)),
                Event::InitDone => return Ok(names),
                other => bail!("expected InitApply or InitDone, got {other:?}"),
            }
        }
    }

    async fn applied<S: Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin>(w: &mut S) -> anyhow::Result<String> {
        match next(w).await? {
            Event::Apply(p) => Ok(name(&p)),
            other => bail!("expected Apply, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watcher_lists_in_pages_resumes_after_a_cut_and_relists_after_410() -> anyhow::Result<()> {
        let s = setup(Options {
            bookmark_interval: Duration::from_millis(200),
            ..Options::default()
        })?;
        for i in 0..5 {
            s.kube.apply(objects::pod("gen3", &format!("fence-{i}"), "fence", "Running"));
        }
        s.kube.apply(objects::pod("other", "elsewhere", "fence", "Running"));
        let api: Api<Pod> = Api::namespaced(client(&s).await?, "gen3");
        let mut w = Box::pin(watcher::watcher(api, watcher::Config::default().page_size(2)));

        let mut names = initial(&mut w).await?;
        names.sort();
        assert_eq!(names, ["fence-0", "fence-1", "fence-2", "fence-3", "fence-4"]);
        let lists: Vec<_> = s
            .kube
            .requests()
            .into_iter()
            .filter(|r| !r.watch && r.path.ends_with("/pods"))
            .collect();
        assert_eq!(lists.len(), 3, "three pages of two: {lists:?}");
        assert!(lists[1].query.contains("continue="), "{lists:?}");

        s.kube.apply(objects::pod("gen3", "fence-5", "fence", "Running"));
        assert_eq!(applied(&mut w).await?, "fence-5");
        let mut p = objects::pod("gen3", "fence-0", "fence", "Running");
        objects::set_waiting(&mut p, "fence", "CrashLoopBackOff", "back-off");
        s.kube.apply(p);
        assert_eq!(applied(&mut w).await?, "fence-0");
        assert!(s.kube.delete("Pod", Some("gen3"), "fence-1"));
        match next(&mut w).await? {
            Event::Delete(p) => assert_eq!(name(&p), "fence-1"),
            other => bail!("expected Delete, got {other:?}"),
        }

        // A cut: the watcher resumes from its resourceVersion, no relist.
        s.kube.clear_requests();
        s.kube.cut_watches();
        s.kube.apply(objects::pod("gen3", "fence-6", "fence", "Running"));
        assert_eq!(applied(&mut w).await?, "fence-6");
        let reqs = s.kube.requests();
        assert!(reqs.iter().all(|r| r.watch), "no list after a cut: {reqs:?}");
        assert!(
            reqs.iter()
                .any(|r| r.query.contains("resourceVersion=") && !r.query.contains("resourceVersion=0")),
            "resumed from a resourceVersion: {reqs:?}"
        );

        // Compaction: the resumed watch gets 410, the watcher relists.
        s.kube.clear_requests();
        s.kube.compact();
        let mut names = initial(&mut w).await?;
        names.sort();
        assert_eq!(names, ["fence-0", "fence-2", "fence-3", "fence-4", "fence-5", "fence-6"]);
        let reqs = s.kube.requests();
        assert!(reqs.iter().any(|r| !r.watch && r.path.ends_with("/pods")), "relisted: {reqs:?}");
        s.kube.apply(objects::pod("gen3", "fence-7", "fence", "Running"));
        assert_eq!(applied(&mut w).await?, "fence-7");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streaming_list_watcher_gets_initial_events_then_changes() -> anyhow::Result<()> {
        let s = setup(Options::default())?;
        for i in 0..3 {
            s.kube.apply(objects::pod("gen3", &format!("indexd-{i}"), "indexd", "Running"));
        }
        let api: Api<Pod> = Api::namespaced(client(&s).await?, "gen3");
        let mut w = Box::pin(watcher::watcher(api, watcher::Config::default().streaming_lists()));
        let mut names = initial(&mut w).await?;
        names.sort();
        assert_eq!(names, ["indexd-0", "indexd-1", "indexd-2"]);
        s.kube.apply(objects::pod("gen3", "indexd-3", "indexd", "Running"));
        assert_eq!(applied(&mut w).await?, "indexd-3");
        let reqs = s.kube.requests();
        assert!(reqs.iter().all(|r| r.watch), "no list: {reqs:?}");
        assert!(reqs[0].query.contains("sendInitialEvents=true"), "{reqs:?}");
        Ok(())
    }

    /// Every builder's JSON deserializes into k8s-openapi's types, as the
    /// agent will read it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_builders_objects_deserialize_into_k8s_openapi_types() -> anyhow::Result<()> {
        use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
        use k8s_openapi::api::batch::v1::{CronJob, Job};
        use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, PersistentVolumeClaim, Service};
        use k8s_openapi::api::discovery::v1::EndpointSlice;

        let s = setup(Options::default())?;
        let k = &s.kube;
        k.apply(objects::namespace("gen3"));
        k.apply(objects::node("node-1", true));
        let mut n2 = objects::node("node-2", false);
        objects::set_node_condition(&mut n2, "MemoryPressure", "True", "KubeletHasInsufficientMemory");
        k.apply(n2);
        let dep = k.apply(objects::deployment("gen3", "fence-deployment", 3, 2));
        let rs = k.apply(objects::replicaset(
            "gen3",
            "fence-deployment",
            dep["metadata"]["uid"].as_str().context("uid")?,
            3,
            2,
        ));
        let mut p = objects::pod("gen3", "fence-deployment-1", "fence", "Running");
        objects::add_container(&mut p, "sidecar");
        objects::set_resources(&mut p, "fence", &[("cpu", "250m"), ("memory", "512Mi")], &[("memory", "1Gi")]);
        objects::set_last_terminated(&mut p, "fence", "OOMKilled", 137);
        objects::set_waiting(&mut p, "sidecar", "CrashLoopBackOff", "back-off");
        objects::set_owner(
            &mut p,
            "ReplicaSet",
            rs["metadata"]["name"].as_str().context("name")?,
            rs["metadata"]["uid"].as_str().context("uid")?,
        );
        let p1 = k.apply(p);
        let mut p2 = objects::pod("gen3", "fence-deployment-2", "fence", "Pending");
        objects::set_terminated(&mut p2, "fence", "Error", 1);
        let p2 = k.apply(p2);
        k.apply(objects::statefulset("gen3", "esproxy", 1, 0));
        k.apply(objects::daemonset("gen3", "node-exporter", 3, 2));
        let cj = k.apply(objects::cronjob("gen3", "usersync", "*/30 * * * *"));
        let mut cj2 = objects::cronjob("gen3", "useryaml", "*/15 * * * *");
        objects::set_cronjob_times(&mut cj2, Some("2025-09-24T10:00:00Z"), Some("2025-09-24T09:30:00Z"));
        objects::set_suspend(&mut cj2, true);
        k.apply(cj2);
        for (name, outcome) in [("usersync-1", "ok"), ("usersync-2", "failed"), ("usersync-3", "active")] {
            let mut j = objects::job("gen3", name);
            objects::set_owner(&mut j, "CronJob", "usersync", cj["metadata"]["uid"].as_str().context("uid")?);
            match outcome {
                "ok" => objects::job_succeeded(&mut j),
                "failed" => objects::job_failed(&mut j, "BackoffLimitExceeded"),
                _ => {}
            }
            k.apply(j);
        }
        k.apply(objects::persistentvolumeclaim("gen3", "data-esproxy-0", "Bound"));
        k.apply(objects::persistentvolumeclaim("gen3", "data-postgres-0", "Pending"));
        let mut ev = objects::event("gen3", "Pod", "fence-deployment-1", "Warning", "BackOff", "Back-off restarting");
        objects::set_event_count(&mut ev, 5);
        k.apply(ev);
        k.apply(objects::event_with_event_time(
            "gen3",
            "Pod",
            "fence-deployment-2",
            "Warning",
            "FailedScheduling",
            "0/3 nodes",
        ));
        k.apply(objects::service("gen3", "fence-service", 80, 8000));
        let p3 = k.apply(objects::pod("gen3", "fence-deployment-3", "fence", "Running"));
        // p1 is not ready (its sidecar crash-loops), p2 is pending, p3 ready.
        let pods = [p1, p2, p3];
        k.apply(objects::endpoints("gen3", "fence-service", &pods, "http", 8000));
        k.apply(objects::endpointslice("gen3", "fence-service", &pods, "http", 8000));

        let c = client(&s).await?;
        let lp = kube::api::ListParams::default();
        macro_rules! count {
            ($t:ty, $api:expr) => {{
                let api: Api<$t> = $api;
                api.list(&lp).await.with_context(|| stringify!($t))?.items.len()
            }};
        }
        assert_eq!(count!(Namespace, Api::all(c.clone())), 1);
        assert_eq!(count!(Node, Api::all(c.clone())), 2);
        assert_eq!(count!(Pod, Api::namespaced(c.clone(), "gen3")), 3);
        assert_eq!(count!(Deployment, Api::namespaced(c.clone(), "gen3")), 1);
        assert_eq!(count!(ReplicaSet, Api::all(c.clone())), 1);
        assert_eq!(count!(StatefulSet, Api::all(c.clone())), 1);
        assert_eq!(count!(DaemonSet, Api::all(c.clone())), 1);
        assert_eq!(count!(Job, Api::namespaced(c.clone(), "gen3")), 3);
        assert_eq!(count!(CronJob, Api::namespaced(c.clone(), "gen3")), 2);
        assert_eq!(count!(PersistentVolumeClaim, Api::namespaced(c.clone(), "gen3")), 2);
        assert_eq!(count!(Event, Api::namespaced(c.clone(), "gen3")), 2);
        assert_eq!(count!(Service, Api::namespaced(c.clone(), "gen3")), 1);
        assert_eq!(count!(Endpoints, Api::namespaced(c.clone(), "gen3")), 1);
        assert_eq!(count!(EndpointSlice, Api::namespaced(c.clone(), "gen3")), 1);

        let pod = Api::<Pod>::namespaced(c.clone(), "gen3").get("fence-deployment-1").await?;
        let st = pod.status.context("status")?;
        let cs = st.container_statuses.context("container statuses")?;
        let last = cs[0].last_state.as_ref().and_then(|l| l.terminated.as_ref()).context("lastState")?;
        assert_eq!((last.reason.as_deref(), last.exit_code), (Some("OOMKilled"), 137));
        let waiting = cs[1].state.as_ref().and_then(|s| s.waiting.as_ref()).context("waiting")?;
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(st.qos_class.as_deref(), Some("Burstable"));
        let ep = Api::<Endpoints>::namespaced(c.clone(), "gen3").get("fence-service").await?;
        let subset = &ep.subsets.context("subsets")?[0];
        assert_eq!(subset.addresses.as_ref().map(Vec::len), Some(1), "the ready pod");
        assert_eq!(subset.not_ready_addresses.as_ref().map(Vec::len), Some(2), "the others");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forbidden_kinds_reach_kube_rs_as_api_errors_403() -> anyhow::Result<()> {
        let s = setup(Options::default())?;
        s.kube.apply(objects::node("node-1", true));
        let nodes: Api<Node> = Api::all(client(&s).await?);
        assert_eq!(nodes.list(&Default::default()).await?.items.len(), 1);
        s.kube.forbid("nodes");
        match nodes.list(&Default::default()).await {
            Err(kube::Error::Api(st)) => {
                assert_eq!(st.code, 403);
                assert_eq!(st.reason, "Forbidden");
            }
            other => bail!("expected a 403, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_stream_follows_until_the_pod_is_deleted() -> anyhow::Result<()> {
        use futures::AsyncBufReadExt;
        let s = setup(Options::default())?;
        s.kube.apply(objects::pod("gen3", "revproxy-1", "revproxy", "Running"));
        s.kube.log("gen3", "revproxy-1", "revproxy", "first");
        let api: Api<Pod> = Api::namespaced(client(&s).await?, "gen3");
        let lp = LogParams {
            follow: true,
            timestamps: true,
            ..LogParams::default()
        };
        let mut lines = api.log_stream("revproxy-1", &lp).await?.lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await?
            .context("a line")??;
        let (stamp, text) = first.split_once(' ').context("timestamped")?;
        assert_eq!(text, "first");
        assert!(csoc_tests::fakekube::parse_rfc3339(stamp).is_ok(), "{stamp}");
        s.kube.log("gen3", "revproxy-1", "revproxy", "second");
        let second = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await?
            .context("a line")??;
        assert!(second.ends_with(" second"), "{second}");
        s.kube.delete("Pod", Some("gen3"), "revproxy-1");
        let end = tokio::time::timeout(Duration::from_secs(10), lines.next()).await?;
        assert!(end.is_none(), "the stream ends with the pod: {end:?}");
        Ok(())
    }
}
