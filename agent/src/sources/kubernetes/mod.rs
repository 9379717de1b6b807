//! The `kubernetes` source: watches the commons' namespaces (pods,
//! deployments, statefulsets, daemonsets, replicasets, jobs, cronjobs,
//! persistentvolumeclaims, events) and the cluster's nodes through the
//! Kubernetes API, and reports them every interval under
//! kube-state-metrics' names and labels, so that the community's Kubernetes
//! dashboards and kube-prometheus's alert rules work unchanged.
//!
//! Credentials: [`crate::k8s::client`] (`--kubeconfig`, else the in-cluster
//! service account, `KUBECONFIG`, `~/.kube/config`). One client; per
//! namespace and kind a kube-runtime watcher (see [`watch`]): list (pages of
//! 200), then watch from the list's resourceVersion, resumed after a cut,
//! relisted on 410 Gone, with backoff after errors. Objects are never polled.
//! Each watch event is reduced at once to a compact summary (see [`state`]);
//! the report renders the summaries, with staleness markers for series gone
//! since the last report (a deleted pod, a phase left).
//!
//! Every series has `job` (`sources.kubernetes.job`, default `kubernetes`;
//! set `kube-state-metrics` for kube-prometheus's rules) and, for pods and
//! workloads, `service` = the `app` label of the pod (or pod template):
//! gen3-helm's service name, so that Kubernetes state joins
//! `gen3_service_up{service}`. Labels with an empty value are left out.
//!
//! | kind | metrics (kube-state-metrics' labels) |
//! |---|---|
//! | pods | `kube_pod_info`{pod,uid,host_ip,pod_ip,node,created_by_kind,created_by_name,priority_class,host_network}, `kube_pod_status_phase`{phase} (one per phase, 1 for the current), `kube_pod_status_ready`{condition=true\|false\|unknown}, `kube_pod_owner`{owner_kind,owner_name,owner_is_controller}, `kube_pod_container_status_restarts_total`{container}, `kube_pod_container_status_waiting_reason`, `_terminated_reason`, `_last_terminated_reason`{container,reason}, `kube_pod_container_resource_requests`, `_limits`{container,node,resource=cpu\|memory,unit=core\|byte} |
//! | deployments | `kube_deployment_spec_replicas`, `kube_deployment_status_replicas`, `_ready`, `_available`, `_unavailable`, `_updated`, `kube_deployment_status_observed_generation`, `kube_deployment_metadata_generation` {deployment} |
//! | statefulsets | `kube_statefulset_replicas`, `kube_statefulset_status_replicas`, `_ready`, `_available`, `_current`, `_updated`, `_observed_generation`, `kube_statefulset_metadata_generation` {statefulset} |
//! | daemonsets | `kube_daemonset_status_current_number_scheduled`, `_desired_number_scheduled`, `_number_available`, `_number_misscheduled`, `_number_ready`, `_number_unavailable`, `_updated_number_scheduled`, `_observed_generation`, `kube_daemonset_metadata_generation` {daemonset} |
//! | replicasets | `kube_replicaset_owner`{replicaset,owner_kind,owner_name,owner_is_controller}, `kube_replicaset_spec_replicas`, `kube_replicaset_status_replicas`, `_ready_replicas` |
//! | jobs | `kube_job_info`, `kube_job_owner`, `kube_job_status_succeeded`, `_failed`{reason}, `_active`, `kube_job_complete`, `kube_job_failed`{condition}, `kube_job_status_start_time`, `_completion_time` {job_name} |
//! | cronjobs | `kube_cronjob_info`{schedule,concurrency_policy,timezone}, `kube_cronjob_spec_suspend`, `kube_cronjob_status_active`, `kube_cronjob_status_last_schedule_time`, `kube_cronjob_status_last_successful_time`, `kube_cronjob_next_schedule_time` (schedules in UTC only) {cronjob} |
//! | persistentvolumeclaims | `kube_persistentvolumeclaim_info`{storageclass,volumename}, `kube_persistentvolumeclaim_status_phase`{phase}, `kube_persistentvolumeclaim_resource_requests_storage_bytes` {persistentvolumeclaim} |
//! | nodes (cluster-wide, optional) | `kube_node_status_condition`{node,condition,status}, `kube_node_spec_unschedulable`, `kube_node_status_allocatable`{resource,unit} |
//! | events | `kube_events_total`{namespace,kind,name,reason,type} (see [`events`]) |
//! | metrics (optional) | `kube_pod_container_cpu_usage_cores`, `container_memory_working_set_bytes` (see [`usage`]) |
//! | applications (argoproj.io, in `argocd.namespaces`) | `argocd_app_info`{namespace,name,project,autosync_enabled,repo,dest_server,dest_namespace,sync_status,health_status,operation}, Argo CD's own names (see [`argocd`]); a cluster without Argo CD answers 404: skipped quietly, retried every `forbidden_retry` |
//!
//! The source's own series (same `job`): `csoc_agent_kubernetes_objects{kind}`
//! (objects held, all namespaces), `csoc_agent_kubernetes_watch_relists_total{kind}`
//! (lists after the first: 410 Gone, errors, retries),
//! `csoc_agent_kubernetes_forbidden{namespace,kind}` (1 while refused),
//! `csoc_agent_kubernetes_event_series` and
//! `csoc_agent_kubernetes_event_series_evicted_total`.
//!
//! The first report waits for the initial lists (at most `sync_timeout`).
//! Until something has been listed (no credentials, API server unreachable,
//! everything forbidden) reports are empty, so that `--once` fails; errors are counted in `csoc_agent_source_errors_total` with
//! `kind` = `client`, `forbidden`, `watch` or `metrics_api`.
//!
//! Missing permissions cost: pods → every `kube_pod_*` series and the
//! `service` label of usage; replicasets → the Deployment of a pod (through
//! `kube_replicaset_owner`); events → `kube_events_total`; nodes (ClusterRole)
//! → `kube_node_*`; the metrics API (ClusterRole on `pods` in
//! `metrics.k8s.io`) → usage. Each kind is independent.

mod argocd;
pub mod config;
pub mod cron;
pub mod quantity;

mod cluster;
mod events;
mod jobs;
mod pods;
mod state;
mod usage;
mod watch;
mod workloads;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::{BoxFuture, Source, SourceContext};
use crate::model::{Frame, MetricKind};
pub use config::{ArgoCdConfig, EventsConfig, KubernetesConfig};
use events::EventCounter;
use state::{Out, Progress, Store, Summary};
use usage::UsageStore;
use watch::{EventsHandle, KindInfo, TaskCx, lock};

/// Objects per list page.
const PAGE_SIZE: u32 = 200;

/// How long to wait before trying again to build a client.
const CLIENT_RETRY: Duration = Duration::from_secs(60);

/// A store of some kind, as the report sees it.
trait Rendered: Send {
    fn render_some(&mut self, out: &mut Out<'_>, limit: usize) -> bool;
    fn len(&self) -> usize;
    fn progress(&self) -> Progress;
    fn namespace(&self) -> &str;
}

impl<S: Summary> Rendered for Store<S> {
    fn render_some(&mut self, out: &mut Out<'_>, limit: usize) -> bool {
        Store::render_some(self, out, limit)
    }
    fn len(&self) -> usize {
        Store::len(self)
    }
    fn progress(&self) -> Progress {
        self.progress
    }
    fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// One watched kind in one namespace.
struct Slot {
    kind: &'static str,
    store: Arc<Mutex<dyn Rendered>>,
}

/// A namespace's pods.
type PodStore = Arc<Mutex<Store<pods::PodSummary>>>;

/// Everything the report reads.
struct Model {
    slots: Vec<Slot>,
    /// Per namespace (same order as the config), its pod store (for the
    /// `service` of usage) and its usage store.
    usage: Vec<(Option<PodStore>, Arc<Mutex<UsageStore>>)>,
    events: Option<Arc<Mutex<EventCounter>>>,
    namespaces: Vec<String>,
    max_event_series: usize,
    /// A report with content has been sent: from then on reports are never
    /// empty (staleness markers must follow a kind that became forbidden).
    reported: std::sync::atomic::AtomicBool,
}

impl Model {
    /// Whether every watch has finished, failed or been refused its first
    /// list.
    fn settled(&self) -> bool {
        self.slots.iter().all(|s| lock(&s.store).progress().settled)
            && self.usage.iter().all(|(_, u)| lock(u).progress.settled)
            && self.events.as_ref().is_none_or(|e| {
                let e = lock(e);
                (0..self.namespaces.len()).all(|i| e.progress(i).settled)
            })
    }

    /// Whether anything has been listed at all.
    fn any_synced(&self) -> bool {
        self.slots.iter().any(|s| lock(&s.store).progress().synced)
            || self.usage.iter().any(|(_, u)| lock(u).progress.synced)
            || self.events.as_ref().is_some_and(|e| {
                let e = lock(e);
                (0..self.namespaces.len()).any(|i| e.progress(i).synced)
            })
    }

    /// Sends the report at `ts` through `sink`, in frames of about
    /// `frame_samples` samples (0: one frame). Returns false when the
    /// pipeline is gone.
    async fn report<F, Fut>(&self, ts: i64, job: &str, source: &str, frame_samples: usize, mut sink: F) -> bool
    where
        F: FnMut(Frame) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let limit = if frame_samples == 0 { usize::MAX } else { frame_samples };
        let mut frame = Frame::new(source);
        use std::sync::atomic::Ordering::Relaxed;
        if !self.reported.load(Relaxed) && !self.any_synced() {
            return sink(frame).await;
        }
        self.reported.store(true, Relaxed);
        self.declare(&mut Out {
            frame: &mut frame,
            ts,
            job,
        });
        // Sends the frame once full; the yield lets the pipeline take it
        // before the next is built, which bounds the memory of a report.
        macro_rules! flush_if_full {
            () => {
                if frame.samples.len() >= limit {
                    let full = std::mem::replace(&mut frame, Frame::new(source));
                    if !sink(full).await {
                        return false;
                    }
                    tokio::task::yield_now().await;
                }
            };
        }
        // kind → (objects, relists), in config order.
        let mut per_kind: Vec<(&str, usize, u64)> = Vec::new();
        let mut tally = |kind: &'static str, n: usize, relists: u64| match per_kind.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(e) => {
                e.1 += n;
                e.2 += relists;
            }
            None => per_kind.push((kind, n, relists)),
        };
        let mut forbidden: Vec<(String, &str, bool)> = Vec::new();
        for s in &self.slots {
            loop {
                let done = lock(&s.store).render_some(
                    &mut Out {
                        frame: &mut frame,
                        ts,
                        job,
                    },
                    limit,
                );
                flush_if_full!();
                if done {
                    break;
                }
            }
            let st = lock(&s.store);
            let p = st.progress();
            tally(s.kind, st.len(), p.relists);
            forbidden.push((st.namespace().to_string(), s.kind, p.forbidden));
        }
        for (pods, u) in &self.usage {
            {
                let pods = pods.as_ref().map(|p| lock(p));
                let mut u = lock(u);
                u.render(
                    pods.as_deref(),
                    &mut Out {
                        frame: &mut frame,
                        ts,
                        job,
                    },
                );
                tally("metrics", u.len(), 0);
                forbidden.push((u.namespace.clone(), "metrics", u.progress.forbidden));
            }
            flush_if_full!();
        }
        if let Some(e) = &self.events {
            loop {
                let done = lock(e).render_some(
                    &mut Out {
                        frame: &mut frame,
                        ts,
                        job,
                    },
                    limit,
                );
                flush_if_full!();
                if done {
                    break;
                }
            }
            let e = lock(e);
            for (i, ns) in self.namespaces.iter().enumerate() {
                let p = e.progress(i);
                tally("events", e.watched(i), p.relists);
                forbidden.push((ns.clone(), "events", p.forbidden));
            }
            let mut out = Out {
                frame: &mut frame,
                ts,
                job,
            };
            out.push("csoc_agent_kubernetes_event_series", &[], e.series_len() as f64);
            out.push("csoc_agent_kubernetes_event_series_limit", &[], self.max_event_series as f64);
            out.push("csoc_agent_kubernetes_event_series_evicted_total", &[], e.evicted_total() as f64);
        }
        let mut out = Out {
            frame: &mut frame,
            ts,
            job,
        };
        for (kind, n, relists) in per_kind {
            out.push("csoc_agent_kubernetes_objects", &[("kind", kind)], n as f64);
            if kind != "metrics" {
                out.push("csoc_agent_kubernetes_watch_relists_total", &[("kind", kind)], relists as f64);
            }
        }
        for (ns, kind, f) in forbidden {
            out.push(
                "csoc_agent_kubernetes_forbidden",
                &[("namespace", &ns), ("kind", kind)],
                state::b(f),
            );
        }
        sink(frame).await
    }

    /// Declares every family the report may hold (in its first frame).
    fn declare(&self, out: &mut Out<'_>) {
        let mut declared: Vec<&str> = Vec::new();
        for s in &self.slots {
            if !declared.contains(&s.kind) {
                declared.push(s.kind);
                declare(s.kind, out);
            }
        }
        if !self.usage.is_empty() {
            UsageStore::meta(out);
        }
        if self.events.is_some() {
            EventCounter::meta(out);
            out.meta(
                "csoc_agent_kubernetes_event_series",
                MetricKind::Gauge,
                "kube_events_total series kept (at most sources.kubernetes.events.max_series).",
            );
            out.meta(
                "csoc_agent_kubernetes_event_series_limit",
                MetricKind::Gauge,
                "sources.kubernetes.events.max_series.",
            );
            out.meta(
                "csoc_agent_kubernetes_event_series_evicted_total",
                MetricKind::Counter,
                "kube_events_total series dropped, least recently bumped first, to stay within max_series.",
            );
        }
        out.meta(
            "csoc_agent_kubernetes_objects",
            MetricKind::Gauge,
            "Kubernetes objects the agent holds, by kind, all namespaces (metrics: containers with usage; events: Events remembered).",
        );
        out.meta(
            "csoc_agent_kubernetes_watch_relists_total",
            MetricKind::Counter,
            "Lists after the first of each watch (410 Gone, errors, retries after 403), by kind.",
        );
        out.meta(
            "csoc_agent_kubernetes_forbidden",
            MetricKind::Gauge,
            "1 while the API server refuses (403) to list this kind in this namespace (\"\" for cluster-wide kinds).",
        );
    }
}

/// Declares the families of `kind`.
fn declare(kind: &str, out: &mut Out<'_>) {
    match kind {
        "pods" => pods::PodSummary::meta(out),
        "deployments" => workloads::DeploymentSummary::meta(out),
        "statefulsets" => workloads::StatefulSetSummary::meta(out),
        "daemonsets" => workloads::DaemonSetSummary::meta(out),
        "replicasets" => workloads::ReplicaSetSummary::meta(out),
        "jobs" => jobs::JobSummary::meta(out),
        "cronjobs" => jobs::CronJobSummary::meta(out),
        "persistentvolumeclaims" => cluster::PvcSummary::meta(out),
        "nodes" => cluster::NodeSummary::meta(out),
        "applications" => argocd::AppSummary::meta(out),
        _ => {}
    }
}

/// The `kubernetes` source.
pub struct KubernetesSource {
    cfg: KubernetesConfig,
    kubeconfig: Option<PathBuf>,
}

impl KubernetesSource {
    /// Validates `cfg`; `kubeconfig` is the agent's `kubeconfig` setting.
    pub fn new(cfg: &KubernetesConfig, kubeconfig: Option<PathBuf>) -> Result<Self, crate::config::ConfigError> {
        cfg.validate()?;
        Ok(KubernetesSource {
            cfg: cfg.clone(),
            kubeconfig,
        })
    }
}

/// Starts a watch of `S`'s kind in `ns` ("" for cluster-wide) and returns
/// its store.
fn start<S>(
    tasks: &mut JoinSet<()>,
    api: Api<S::Object>,
    wc: &watcher::Config,
    kind: KindInfo,
    ns: &str,
    t: &TaskCx,
) -> Arc<Mutex<Store<S>>>
where
    S: Summary,
{
    let store = Arc::new(Mutex::new(Store::<S>::new(ns)));
    tasks.spawn(watch::run_watch(api, wc.clone(), kind, ns.to_string(), store.clone(), t.clone()));
    store
}

impl KubernetesSource {
    /// Starts every watch and poller; returns what the report reads.
    fn start_all(&self, client: &Client, tasks: &mut JoinSet<()>, t: &TaskCx) -> Model {
        let cfg = &self.cfg;
        let wc = watcher::Config::default().page_size(PAGE_SIZE);
        let mut slots = Vec::new();
        let mut usage = Vec::new();
        let events = cfg.watches("events").then(|| {
            Arc::new(Mutex::new(EventCounter::new(
                &cfg.events.types,
                cfg.events.max_series,
                cfg.namespaces.len(),
            )))
        });
        macro_rules! watch_kind {
            ($ns:expr, $kind:literal, $group:literal, $summary:ty) => {
                if cfg.watches($kind) {
                    let info = KindInfo {
                        resource: $kind,
                        group: $group,
                    };
                    let store = start::<$summary>(tasks, Api::namespaced(client.clone(), $ns), &wc, info, $ns, t);
                    slots.push(Slot { kind: $kind, store });
                }
            };
        }
        for (i, ns) in cfg.namespaces.iter().enumerate() {
            let ns = ns.as_str();
            let mut pod_store = None;
            if cfg.watches("pods") {
                let info = KindInfo {
                    resource: "pods",
                    group: "",
                };
                let store = start::<pods::PodSummary>(tasks, Api::namespaced(client.clone(), ns), &wc, info, ns, t);
                pod_store = Some(store.clone());
                slots.push(Slot { kind: "pods", store });
            }
            watch_kind!(ns, "deployments", "apps", workloads::DeploymentSummary);
            watch_kind!(ns, "statefulsets", "apps", workloads::StatefulSetSummary);
            watch_kind!(ns, "daemonsets", "apps", workloads::DaemonSetSummary);
            watch_kind!(ns, "replicasets", "apps", workloads::ReplicaSetSummary);
            watch_kind!(ns, "jobs", "batch", jobs::JobSummary);
            watch_kind!(ns, "cronjobs", "batch", jobs::CronJobSummary);
            watch_kind!(ns, "persistentvolumeclaims", "", cluster::PvcSummary);
            if let Some(counter) = &events {
                let mut ewc = wc.clone();
                if let Some(sel) = cfg.event_field_selector() {
                    ewc = ewc.fields(&sel);
                }
                let info = KindInfo {
                    resource: "events",
                    group: "",
                };
                let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
                tasks.spawn(watch::run_watch(
                    api,
                    ewc,
                    info,
                    ns.to_string(),
                    EventsHandle(counter.clone(), i),
                    t.clone(),
                ));
            }
            if cfg.watches("metrics") {
                let store = Arc::new(Mutex::new(UsageStore::new(ns)));
                tasks.spawn(watch::run_usage(client.clone(), store.clone(), t.interval, t.clone()));
                usage.push((pod_store, store));
            }
        }
        if cfg.watches("nodes") {
            let info = KindInfo {
                resource: "nodes",
                group: "",
            };
            let store = start::<cluster::NodeSummary>(tasks, Api::all(client.clone()), &wc, info, "", t);
            slots.push(Slot { kind: "nodes", store });
        }
        if cfg.watches("applications") {
            let ar = argocd::api_resource();
            let destinations: Option<Arc<[String]>> = (!cfg.argocd.all_destinations).then(|| Arc::from(cfg.namespaces.clone()));
            let info = KindInfo {
                resource: "applications",
                group: "argoproj.io",
            };
            for ns in &cfg.argocd.namespaces {
                let store = Arc::new(Mutex::new(Store::<argocd::AppSummary>::new(ns)));
                let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
                let handle = argocd::AppHandle {
                    store: store.clone(),
                    destinations: destinations.clone(),
                };
                tasks.spawn(watch::run_watch(api, wc.clone(), info, ns.clone(), handle, t.clone()));
                slots.push(Slot {
                    kind: "applications",
                    store,
                });
            }
        }
        Model {
            slots,
            usage,
            events,
            namespaces: cfg.namespaces.clone(),
            max_event_series: cfg.events.max_series,
            reported: Default::default(),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Source for KubernetesSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            let client = loop {
                match crate::k8s::client(self.kubeconfig.as_deref()).await {
                    Ok(c) => break c,
                    Err(e) => {
                        cx.error("client");
                        tracing::error!(
                            error = %csoc_common::error::error_chain(&e),
                            retry_in = ?CLIENT_RETRY,
                            "kubernetes: cannot build a Kubernetes client"
                        );
                        // An empty report, so that --once ends at once.
                        if !cx.emit(Frame::new(&cx.name)).await {
                            return;
                        }
                        tokio::select! {
                            _ = cx.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(CLIENT_RETRY) => {}
                        }
                    }
                }
            };
            let settled = Arc::new(Notify::new());
            let interval = self.cfg.interval.unwrap_or(cx.interval);
            let t = TaskCx {
                interval,
                cx: cx.clone(),
                settled: settled.clone(),
                forbidden_retry: self.cfg.forbidden_retry,
                metrics_api_retry: self.cfg.metrics_api_retry,
            };
            // Dropped on return: aborts every watch.
            let mut tasks = JoinSet::new();
            let model = self.start_all(&client, &mut tasks, &t);
            tracing::info!(
                namespaces = ?self.cfg.namespaces,
                disabled = ?self.cfg.disable,
                "kubernetes: watching"
            );
            let deadline = Instant::now() + self.cfg.sync_timeout;
            while !model.settled() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::warn!(timeout = ?self.cfg.sync_timeout, "kubernetes: initial lists not finished; reporting what is known");
                    break;
                }
                tokio::select! {
                    _ = cx.shutdown.cancelled() => return,
                    _ = settled.notified() => {}
                    _ = tokio::time::sleep(left) => {}
                }
            }
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let sent = model
                    .report(now_ms(), &self.cfg.job, &cx.name, self.cfg.frame_samples, |f| cx.emit(f))
                    .await;
                if !sent {
                    return;
                }
            }
        })
    }
}
