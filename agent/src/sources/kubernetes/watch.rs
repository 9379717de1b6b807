//! The watch tasks: one per namespace and kind (and one for nodes), each a
//! kube-runtime `watcher` (list, then watch from the resourceVersion;
//! resumed after a cut; relisted after 410 Gone) with its default backoff
//! (0.8s doubling to 30s, jittered) after errors; plus one metrics-API
//! poller per namespace.
//!
//! Errors never stop the source:
//! - 403 Forbidden: the kind is skipped (its objects forgotten, so their
//!   series go stale), logged once as a warning naming the kind, the
//!   namespace and the permission needed, counted as
//!   `csoc_agent_source_errors_total{source="kubernetes",kind="forbidden"}`,
//!   and tried again every `forbidden_retry` so that a fixed Role heals.
//! - 410 Gone (the resourceVersion was compacted away): routine; the
//!   watcher relists (counted in `csoc_agent_kubernetes_watch_relists_total`).
//! - anything else: counted (`kind="watch"`, `"metrics_api"`), logged (a
//!   warning for the first of a run of failures, then debug), retried with
//!   backoff; what is known is kept.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, watcher::Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_stream::StreamExt;

use super::events::EventCounter;
use super::state::{Store, Summary};
use super::usage::{PodMetricsList, UsageStore};
use crate::sources::SourceContext;

/// Locks `m`, even if a panicking holder poisoned it (the state stays
/// usable: every update is a single assignment).
pub(super) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a watch task's events go.
pub(super) trait Handler<K>: Send + 'static {
    /// One watch event.
    fn event(&self, ev: Event<K>);
    /// The kind answered 403.
    fn forbidden(&self);
    /// A list or watch failed (retried).
    fn failed(&self);
    /// The kind is not served (404: a custom resource whose CRD is not
    /// installed); retried after `forbidden_retry`.
    fn not_served(&self) {
        self.failed();
    }
}

impl<S: Summary> Handler<S::Object> for Arc<Mutex<Store<S>>> {
    fn event(&self, ev: Event<S::Object>) {
        lock(self).apply(ev);
    }
    fn forbidden(&self) {
        lock(self).forbidden();
    }
    fn failed(&self) {
        lock(self).failed();
    }
}

/// The event counter, seen from namespace `.1`'s watch.
pub(super) struct EventsHandle(pub(super) Arc<Mutex<EventCounter>>, pub(super) usize);

impl Handler<k8s_openapi::api::core::v1::Event> for EventsHandle {
    fn event(&self, ev: Event<k8s_openapi::api::core::v1::Event>) {
        lock(&self.0).apply(self.1, ev);
    }
    fn forbidden(&self) {
        lock(&self.0).forbidden(self.1);
    }
    fn failed(&self) {
        lock(&self.0).failed(self.1);
    }
}

/// What every task needs besides its own target.
#[derive(Clone)]
pub(super) struct TaskCx {
    pub(super) cx: SourceContext,
    /// The source's report interval (and the metrics API's poll interval).
    pub(super) interval: std::time::Duration,
    /// Told whenever a first list settles (done, refused or failed).
    pub(super) settled: Arc<Notify>,
    pub(super) forbidden_retry: Duration,
    pub(super) metrics_api_retry: Duration,
}

impl TaskCx {
    /// Sleeps `d`; false when the source is stopping.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cx.shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// What a kind is, for logs: its resource, API group and scope.
#[derive(Debug, Clone, Copy)]
pub(super) struct KindInfo {
    /// The resource (`pods`).
    pub(super) resource: &'static str,
    /// The API group ("" for core).
    pub(super) group: &'static str,
}

impl KindInfo {
    /// The RBAC rule that grants it.
    fn permission(&self, namespace: &str) -> String {
        let scope = if namespace.is_empty() {
            "a ClusterRole".to_string()
        } else {
            format!("a Role in namespace {namespace}")
        };
        format!("get, list, watch on {} (apiGroups: [\"{}\"]) in {scope}", self.resource, self.group)
    }
}

/// The HTTP status of a watcher error, when the API server gave one.
pub(super) fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(k) | watcher::Error::WatchStartFailed(k) | watcher::Error::WatchFailed(k) => match k {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        },
        watcher::Error::WatchError(s) => Some(s.code),
        watcher::Error::NoResourceVersion => None,
    }
}

/// Runs one watch until the source stops.
pub(super) async fn run_watch<K, H>(api: Api<K>, wc: watcher::Config, kind: KindInfo, namespace: String, handler: H, t: TaskCx)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    H: Handler<K>,
{
    let mut refused = false;
    let mut failing = false;
    let mut not_served = false;
    loop {
        let stream = watcher(api.clone(), wc.clone()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let pause = loop {
            let item = tokio::select! {
                _ = t.cx.shutdown.cancelled() => return,
                item = stream.next() => item,
            };
            match item {
                // The watcher's stream does not end; if it did, start anew.
                None => break Duration::from_secs(1),
                Some(Ok(ev)) => {
                    let done = matches!(ev, Event::InitDone);
                    if done && (refused || failing || not_served) {
                        tracing::info!(kind = kind.resource, namespace = %namespace, "kubernetes: listing works again");
                        refused = false;
                        failing = false;
                        not_served = false;
                    }
                    handler.event(ev);
                    if done {
                        t.settled.notify_one();
                    }
                }
                Some(Err(e)) => match status_code(&e) {
                    Some(403) => {
                        t.cx.error("forbidden");
                        if !refused {
                            tracing::warn!(
                                kind = kind.resource,
                                namespace = %namespace,
                                permission = %kind.permission(&namespace),
                                retry_in = ?t.forbidden_retry,
                                "kubernetes: forbidden (403); this kind is skipped until the agent's service account is granted the permission"
                            );
                        }
                        refused = true;
                        handler.forbidden();
                        t.settled.notify_one();
                        break t.forbidden_retry;
                    }
                    // 404 Not Found: the kind is not served (a custom
                    // resource whose CRD is not installed, e.g. a cluster
                    // without Argo CD). Normal: logged once, not counted as
                    // an error, tried again after forbidden_retry.
                    Some(404) => {
                        if !not_served {
                            tracing::info!(
                                kind = kind.resource,
                                group = kind.group,
                                namespace = %namespace,
                                retry_in = ?t.forbidden_retry,
                                "kubernetes: this kind is not served (404: its CRD is not installed); skipped"
                            );
                        }
                        not_served = true;
                        handler.not_served();
                        t.settled.notify_one();
                        break t.forbidden_retry;
                    }
                    // 410 Gone: the resourceVersion was compacted away;
                    // routine (the watcher relists, counted in relists).
                    Some(410) => {
                        tracing::debug!(kind = kind.resource, namespace = %namespace, "kubernetes: resourceVersion expired (410 Gone); relisting");
                        if matches!(e, watcher::Error::WatchStartFailed(_)) {
                            // kube-runtime would retry the same version: relist.
                            break Duration::from_secs(1);
                        }
                    }
                    _ => {
                        t.cx.error("watch");
                        if failing {
                            tracing::debug!(kind = kind.resource, namespace = %namespace, error = %e, "kubernetes: watch failed again");
                        } else {
                            tracing::warn!(kind = kind.resource, namespace = %namespace, error = %e, "kubernetes: watch failed; retrying with backoff");
                        }
                        failing = true;
                        handler.failed();
                        t.settled.notify_one();
                    }
                },
            }
        };
        if !t.sleep(pause).await {
            return;
        }
    }
}

/// Polls the metrics API for namespace `ns` every `interval`.
pub(super) async fn run_usage(client: kube::Client, store: Arc<Mutex<UsageStore>>, interval: Duration, t: TaskCx) {
    let ns = lock(&store).namespace.clone();
    let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods");
    let kind = KindInfo {
        resource: "pods",
        group: "metrics.k8s.io",
    };
    let mut refused = false;
    let mut failing = false;
    let mut not_served = false;
    loop {
        let req = kube::core::Request::new(path.clone()).list(&kube::api::ListParams::default());
        let res = match req {
            Ok(req) => tokio::time::timeout(interval.max(Duration::from_secs(10)), client.request::<PodMetricsList>(req))
                .await
                .unwrap_or_else(|_| Err(kube::Error::Service("metrics API request timed out".into()))),
            Err(e) => Err(kube::Error::BuildRequest(e)),
        };
        let pause = match res {
            Ok(list) => {
                if refused || failing || not_served {
                    tracing::info!(namespace = %ns, "kubernetes: the metrics API answers again");
                }
                refused = false;
                failing = false;
                not_served = false;
                lock(&store).set(list);
                interval
            }
            Err(e) if crate::k8s::is_not_found(&e) => {
                if !not_served {
                    tracing::info!(
                        namespace = %ns,
                        retry_in = ?t.metrics_api_retry,
                        "kubernetes: the metrics API (metrics.k8s.io) is not served (no metrics-server?): no pod CPU and memory usage"
                    );
                }
                not_served = true;
                lock(&store).failed(true, false);
                t.metrics_api_retry
            }
            Err(e) if crate::k8s::is_forbidden(&e) => {
                t.cx.error("forbidden");
                if !refused {
                    tracing::warn!(
                        kind = "metrics",
                        namespace = %ns,
                        permission = %kind.permission(""),
                        retry_in = ?t.forbidden_retry,
                        "kubernetes: forbidden (403) reading pod usage from the metrics API; skipped until granted"
                    );
                }
                refused = true;
                lock(&store).failed(false, true);
                t.forbidden_retry
            }
            Err(e) => {
                t.cx.error("metrics_api");
                if failing {
                    tracing::debug!(namespace = %ns, error = %e, "kubernetes: metrics API failed again");
                } else {
                    tracing::warn!(namespace = %ns, error = %e, "kubernetes: metrics API request failed; retrying next interval");
                }
                failing = true;
                lock(&store).failed(false, false);
                interval
            }
        };
        t.settled.notify_one();
        if !t.sleep(pause).await {
            return;
        }
    }
}
