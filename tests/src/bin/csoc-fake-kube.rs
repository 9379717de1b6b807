//! csoc-fake-kube: the fake Kubernetes API server of `csoc_tests::fakekube`
//! as a process, for benchmarks and manual runs, with a synthetic Gen3
//! workload in one namespace.
//!
//! ```text
//! csoc-fake-kube [--listen 127.0.0.1:0] [--kubeconfig-out FILE] [--namespace gen3]
//!                [--pods N] [--deployments N] [--statefulsets N] [--jobs N] [--cronjobs N]
//!                [--nodes N] [--events-per-second R] [--churn-per-second R]
//!                [--log-lines-per-second R] [--max-events N] [--duration 10m]
//!                [--bookmark-interval 1s] [--history N]
//! ```
//!
//! The workload, as gen3-helm deploys it: Deployments `<service>-deployment`
//! labelled `app: <service>` (fence, indexd, sheepdog, peregrine, revproxy,
//! arborist, metadata, portal, ...; past the list, `svc-N`), each with a
//! ReplicaSet, a Service, Endpoints and an EndpointSlice; `--pods` spread
//! over the Deployments (owned by their ReplicaSets); StatefulSets with one
//! pod and one bound PVC each; CronJobs (usersync, useryaml, ...) and Jobs
//! owned by them (one in ten failed, the newest active, the rest
//! succeeded); `--nodes` nodes. Every second `--churn-per-second` pods
//! change (in turn: a restart with lastState Error, a readiness flip, a
//! phase flip Running/Pending), `--events-per-second` Warning events are
//! recorded (the oldest deleted past `--max-events`, as the events TTL
//! does), and revproxy pods log `--log-lines-per-second` access lines.
//!
//! The first line on stdout is `listening on http://ADDR`. The token is
//! written only to the `--kubeconfig-out` file (mode 0600). Listens on
//! loopback only. Stops after `--duration`, or on SIGINT or SIGTERM.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use csoc_tests::fakekube::{FakeKube, Options, objects};
use serde_json::Value;

/// Gen3 services as gen3-helm names them (the `app` label).
const SERVICES: &[&str] = &[
    "fence",
    "indexd",
    "sheepdog",
    "peregrine",
    "revproxy",
    "arborist",
    "metadata",
    "portal",
    "presigned-url-fence",
    "audit-service",
    "manifestservice",
    "wts",
    "hatchery",
    "ambassador",
    "guppy",
    "requestor",
    "ssjdispatcher",
    "gen3-user-data-library",
    "argo-wrapper",
    "access-backend",
    "cohort-middleware",
    "dicom-server",
    "frontend-framework",
    "sower",
];

/// Gen3 jobs run on a schedule.
const CRONJOBS: &[(&str, &str)] = &[
    ("usersync", "*/30 * * * *"),
    ("useryaml", "*/15 * * * *"),
    ("gitops-sync", "*/5 * * * *"),
    ("fence-delete-expired-clients", "0 7 * * *"),
    ("google-manage-keys", "0 */12 * * *"),
    ("etl", "0 0 * * 0"),
];

const STATEFULSETS: &[&str] = &["esproxy", "postgres", "elasticsearch", "mq"];

const WARNINGS: &[(&str, &str)] = &[
    ("BackOff", "Back-off restarting failed container {c} in pod {p}"),
    (
        "Unhealthy",
        "Readiness probe failed: Get \"http://10.244.1.2:80/_status\": dial tcp 10.244.1.2:80: connect: connection refused",
    ),
    (
        "FailedScheduling",
        "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
    ),
    (
        "FailedMount",
        "MountVolume.SetUp failed for volume \"config-volume\" : configmap \"manifest-{c}\" not found",
    ),
];

/// Fake Kubernetes API server with a synthetic Gen3 workload.
#[derive(Debug, Parser)]
#[command(name = "csoc-fake-kube", about)]
struct Args {
    /// Address to listen on (loopback only; port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for this server (and its token) to FILE.
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: Option<PathBuf>,
    /// Namespace of the workload (and of the kubeconfig's context).
    #[arg(long, default_value = "gen3")]
    namespace: String,
    /// Pods, spread over the Deployments (standalone when there are none).
    #[arg(long, default_value_t = 0)]
    pods: usize,
    /// Deployments (each with a ReplicaSet, Service, Endpoints, EndpointSlice).
    #[arg(long, default_value_t = 0)]
    deployments: usize,
    /// StatefulSets (one pod and one PVC each).
    #[arg(long, default_value_t = 0)]
    statefulsets: usize,
    /// Jobs, owned in turn by the CronJobs.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// CronJobs.
    #[arg(long, default_value_t = 0)]
    cronjobs: usize,
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Warning events recorded per second.
    #[arg(long, default_value_t = 0.0)]
    events_per_second: f64,
    /// Pods changed per second.
    #[arg(long, default_value_t = 0.0)]
    churn_per_second: f64,
    /// revproxy access-log lines per second (over the revproxy pods).
    #[arg(long, default_value_t = 0.0)]
    log_lines_per_second: f64,
    /// Events kept; older ones are deleted (the events TTL).
    #[arg(long, default_value_t = 1000)]
    max_events: usize,
    /// Stop after this long (e.g. 90s, 10m); runs until a signal by default.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Period of watch BOOKMARK events.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    bookmark_interval: Duration,
    /// Changes kept for watches (older resumes get 410 Gone).
    #[arg(long, default_value_t = 10_000)]
    history: usize,
}

/// A pod of the workload and its churn state.
struct WorkPod {
    obj: Value,
    container: String,
    step: u64,
}

struct Workload {
    ns: String,
    pods: Vec<WorkPod>,
    churn_next: usize,
    events: VecDeque<String>,
    event_seq: u64,
    log_seq: u64,
}

fn suffix(i: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = i.wrapping_mul(2_654_435_761) ^ 0x5bd1e995;
    (0..5)
        .map(|_| {
            let c = ALPHA[x % ALPHA.len()] as char;
            x /= ALPHA.len();
            c
        })
        .collect()
}

fn service_name(i: usize) -> String {
    SERVICES.get(i).map(|s| s.to_string()).unwrap_or_else(|| format!("svc-{i}"))
}

fn build(kube: &FakeKube, a: &Args) -> Workload {
    let ns = a.namespace.as_str();
    kube.apply(objects::namespace(ns));
    for n in 0..a.nodes {
        kube.apply(objects::node(&format!("node-{}", n + 1), true));
    }
    let node_of = |i: usize| format!("node-{}", i % a.nodes.max(1) + 1);
    let mut pods = Vec::new();
    let mut add_pod = |kube: &FakeKube, mut p: Value, owner: Option<(&str, &str, &str)>, app: &str| {
        let i = pods.len();
        objects::set_node(&mut p, &node_of(i));
        objects::set_resources(&mut p, app, &[("cpu", "100m"), ("memory", "256Mi")], &[("memory", "512Mi")]);
        if let Some((kind, name, uid)) = owner {
            objects::set_owner(&mut p, kind, name, uid);
        }
        let stored = kube.apply(p);
        pods.push(WorkPod {
            obj: stored.clone(),
            container: app.to_string(),
            step: i as u64,
        });
        stored
    };
    if a.deployments == 0 {
        for i in 0..a.pods {
            let app = service_name(i % SERVICES.len());
            add_pod(kube, objects::pod(ns, &format!("{app}-{}", suffix(i)), &app, "Running"), None, &app);
        }
    }
    let mut placed = 0;
    for d in 0..a.deployments {
        let app = service_name(d);
        let name = format!("{app}-deployment");
        let replicas = a.pods / a.deployments + usize::from(d < a.pods % a.deployments);
        let mut dep = objects::deployment(ns, &name, replicas as i64, replicas as i64);
        objects::set_labels(&mut dep, &[("app", &app)]);
        dep["spec"]["selector"]["matchLabels"]["app"] = app.clone().into();
        dep["spec"]["template"]["metadata"]["labels"]["app"] = app.clone().into();
        let dep = kube.apply(dep);
        let dep_uid = dep["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let rs = kube.apply(objects::replicaset(ns, &name, &dep_uid, replicas as i64, replicas as i64));
        let rs_name = rs["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let rs_uid = rs["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let mut members = Vec::new();
        for _ in 0..replicas {
            let p = objects::pod(ns, &format!("{rs_name}-{}", suffix(placed)), &app, "Running");
            members.push(add_pod(kube, p, Some(("ReplicaSet", &rs_name, &rs_uid)), &app));
            placed += 1;
        }
        let svc_name = format!("{app}-service");
        let mut svc = objects::service(ns, &svc_name, 80, 80);
        svc["spec"]["selector"] = serde_json::json!({"app": app});
        kube.apply(svc);
        kube.apply(objects::endpoints(ns, &svc_name, &members, "http", 80));
        kube.apply(objects::endpointslice(ns, &svc_name, &members, "http", 80));
    }
    for s in 0..a.statefulsets {
        let name = STATEFULSETS.get(s).map(|n| n.to_string()).unwrap_or_else(|| format!("sts-{s}"));
        let sts = kube.apply(objects::statefulset(ns, &name, 1, 1));
        let uid = sts["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        add_pod(
            kube,
            objects::pod(ns, &format!("{name}-0"), &name, "Running"),
            Some(("StatefulSet", &name, &uid)),
            &name,
        );
        kube.apply(objects::persistentvolumeclaim(ns, &format!("data-{name}-0"), "Bound"));
    }
    let mut cronjobs: Vec<(String, String)> = Vec::new();
    for c in 0..a.cronjobs {
        let (name, schedule) = CRONJOBS
            .get(c)
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .unwrap_or_else(|| (format!("job-{c}"), "0 * * * *".to_string()));
        let mut cj = objects::cronjob(ns, &name, &schedule);
        let t = csoc_tests::fakekube::rfc3339(std::time::SystemTime::now());
        objects::set_cronjob_times(&mut cj, Some(&t), Some(&t));
        let cj = kube.apply(cj);
        cronjobs.push((name, cj["metadata"]["uid"].as_str().unwrap_or_default().to_string()));
    }
    for j in 0..a.jobs {
        let (owner, uid) = cronjobs
            .get(j % cronjobs.len().max(1))
            .cloned()
            .unwrap_or_else(|| ("batch".to_string(), String::new()));
        let mut job = objects::job(ns, &format!("{owner}-{}", 29_000_000 + j));
        if !uid.is_empty() {
            objects::set_owner(&mut job, "CronJob", &owner, &uid);
        }
        if j + cronjobs.len().max(1) >= a.jobs {
            // The newest job of each cronjob is still running.
        } else if j % 10 == 9 {
            objects::job_failed(&mut job, "BackoffLimitExceeded");
        } else {
            objects::job_succeeded(&mut job);
        }
        kube.apply(job);
    }
    Workload {
        ns: ns.to_string(),
        pods,
        churn_next: 0,
        events: VecDeque::new(),
        event_seq: 0,
        log_seq: 0,
    }
}

impl Workload {
    fn churn(&mut self, kube: &FakeKube, n: usize) {
        if self.pods.is_empty() {
            return;
        }
        for _ in 0..n {
            let i = self.churn_next % self.pods.len();
            self.churn_next += 1;
            let p = &mut self.pods[i];
            let c = p.container.clone();
            match p.step % 3 {
                0 => {
                    let r = p.obj["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0);
                    objects::set_restarts(&mut p.obj, &c, r + 1);
                    objects::set_last_terminated(&mut p.obj, &c, "Error", 1);
                }
                1 => {
                    let ready = p.obj["status"]["containerStatuses"][0]["ready"] == true;
                    objects::set_ready(&mut p.obj, &c, !ready);
                }
                _ => {
                    let running = p.obj["status"]["phase"] == "Running";
                    objects::set_phase(&mut p.obj, if running { "Pending" } else { "Running" });
                }
            }
            p.step += 1;
            p.obj = kube.apply(p.obj.clone());
        }
    }

    fn events(&mut self, kube: &FakeKube, n: usize, max: usize) {
        for _ in 0..n {
            self.event_seq += 1;
            let (reason, template) = WARNINGS[(self.event_seq as usize) % WARNINGS.len()];
            let (pod, container) = match self.pods.get(self.event_seq as usize % self.pods.len().max(1)) {
                Some(p) => (p.obj["metadata"]["name"].as_str().unwrap_or("pod").to_string(), p.container.clone()),
                None => ("pod".to_string(), "main".to_string()),
            };
            let message = template.replace("{c}", &container).replace("{p}", &pod);
            let ev = kube.apply(objects::event(&self.ns, "Pod", &pod, "Warning", reason, &message));
            self.events
                .push_back(ev["metadata"]["name"].as_str().unwrap_or_default().to_string());
            while self.events.len() > max {
                if let Some(old) = self.events.pop_front() {
                    kube.delete("Event", Some(&self.ns), &old);
                }
            }
        }
    }

    fn log_lines(&mut self, kube: &FakeKube, n: usize) {
        let revproxies: Vec<String> = self
            .pods
            .iter()
            .filter(|p| p.container == "revproxy")
            .filter_map(|p| p.obj["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        if revproxies.is_empty() {
            return;
        }
        let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace('Z', "+00:00");
        for _ in 0..n {
            self.log_seq += 1;
            let pod = &revproxies[self.log_seq as usize % revproxies.len()];
            let (path, service, status) = match self.log_seq % 4 {
                0 => ("/user/user", "fence", 200),
                1 => ("/index/index?limit=10", "indexd", 200),
                2 => ("/api/v0/submission/graphql", "peregrine", 200),
                _ => ("/user/data/download/dg.4503%2F0001", "presigned-url-fence", 302),
            };
            let id = format!(
                "{:032x}",
                u128::from(self.log_seq).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            );
            let line = format!(
                "{{\"gen3log\": \"nginx\", \"date_access\": \"{date}\", \"user_id\": \"uid:null,unknown@unknown\", \"request_id\": \"{id}\", \"session_id\": \"{id}\", \"visitor_id\": \"{id}\", \"network_client_ip\": \"198.51.100.7\", \"network_bytes_write\": 512, \"response_secs\": 0.012, \"http_status_code\": {status}, \"http_request\": \"{path}\", \"http_verb\": \"GET\", \"http_referer\": \"-\", \"http_useragent\": \"python-requests/2.32.3\", \"http_upstream\": \"http://{service}-service.{ns}.svc.cluster.local\", \"proxy_service\": \"{service}\", \"message\": \"GET {path} HTTP/1.1\" }}",
                ns = self.ns
            );
            kube.log(&self.ns, pod, "revproxy", &line);
        }
    }
}

/// Spreads a rate over whole units per tick, carrying the remainder.
#[derive(Default)]
struct Rate {
    carry: f64,
}

impl Rate {
    fn take(&mut self, per_second: f64, secs: f64) -> usize {
        self.carry += per_second * secs;
        let n = self.carry.floor();
        self.carry -= n;
        n as usize
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    if !a.listen.ip().is_loopback() {
        bail!(
            "--listen must be a loopback address (the fake has no real authentication), not {}",
            a.listen
        );
    }
    for (name, rate) in [
        ("--events-per-second", a.events_per_second),
        ("--churn-per-second", a.churn_per_second),
        ("--log-lines-per-second", a.log_lines_per_second),
    ] {
        if !rate.is_finite() || !(0.0..=100_000.0).contains(&rate) {
            bail!("{name} must be between 0 and 100000, not {rate}");
        }
    }
    if a.pods > 200_000 || a.deployments > 20_000 || a.jobs > 200_000 || a.cronjobs > 10_000 || a.statefulsets > 10_000 {
        bail!("workload too large for a fake (at most 200000 pods and jobs, 20000 deployments, 10000 cronjobs and statefulsets)");
    }
    let opts = Options {
        bookmark_interval: a.bookmark_interval,
        history: a.history.max(1),
        ..Options::default()
    };
    let kube = FakeKube::start_on(a.listen, opts)?;
    if let Some(path) = &a.kubeconfig_out {
        kube.write_kubeconfig(path, &a.namespace)?;
    }
    let started = Instant::now();
    let mut w = build(&kube, &a);
    eprintln!(
        "workload: {} pods, {} objects in total, built in {:?} (resourceVersion {})",
        w.pods.len(),
        kube.resource_version(),
        started.elapsed(),
        kube.resource_version()
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", kube.url())?;
        out.flush()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let deadline = a.duration.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let (mut churn, mut events, mut logs) = (Rate::default(), Rate::default(), Rate::default());
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
                _ = tick.tick() => {
                    w.churn(&kube, churn.take(a.churn_per_second, 0.1));
                    w.events(&kube, events.take(a.events_per_second, 0.1), a.max_events);
                    w.log_lines(&kube, logs.take(a.log_lines_per_second, 0.1));
                }
            }
        }
        anyhow::Ok(())
    })?;
    drop(kube);
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csoc-fake-kube: {e:#}");
            ExitCode::from(2)
        }
    }
}
