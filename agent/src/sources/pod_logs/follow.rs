//! The follower: watches the pods of one namespace (kube-runtime watcher:
//! list, watch from the resourceVersion, relist on 410) and follows
//! `pods/log?follow=true&timestamps=true` of each wanted container of each
//! pod, one task per stream, feeding complete lines to a [`LogSink`].
//!
//! - A stream starts when its container has logs (running, terminated or
//!   restarted); the sink says which containers of a pod are wanted.
//! - Resume is exact (see [`super::resume`]): each stream's [`Cursor`] lives
//!   in the [`Shared`] state next to the sink's counters and both change under
//!   one lock, so a snapshot of them is consistent.
//! - A stream that ends (EOF, error, idle for `idle_reconnect`) is reopened
//!   after a backoff (`backoff_base` doubling to `backoff_max`, back to the
//!   base once lines flow), unless its pod is gone: before each reconnection
//!   the pod is read by name and must still have the same uid (a pod deleted
//!   and recreated under its name is another stream). A pod that finished
//!   (Succeeded/Failed), or an init container that completed, is read to its
//!   end once more, then marked done (not reopened, also after a restart).
//! - A deleted pod's open stream is drained: read until EOF, or until no data
//!   came for `drain_idle`.
//! - 403 on `pods/log` or on listing pods is logged once per follower,
//!   counted as `forbidden` each time, and retried every `forbidden_retry`.
//! - Memory: one pending line per stream, at most `max_line_bytes` plus one
//!   read; longer lines are passed on flagged `too_long` with their content
//!   cut.
//! - Shutdown (the source's token) stops every task within one read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::io::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kube::runtime::watcher;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::resume::{Cursor, Gate, split_line};
use crate::sources::SourceContext;

/// What receives the lines of the followed streams.
pub trait LogSink: Send + 'static {
    /// What a stream's lines are routed with (computed once per stream).
    type Route: Clone + Send + Sync + 'static;

    /// The containers of `pod` to follow, each with its route. Empty: the pod
    /// is not followed.
    fn routes(&mut self, pod: &Pod) -> Vec<(String, Self::Route)>;

    /// One complete line (timestamp removed). `too_long`: the line was longer
    /// than allowed and `content` is cut.
    fn line(&mut self, route: &Self::Route, content: &[u8], too_long: bool);
}

/// The sink and the streams' cursors, changed together under one lock.
pub struct Shared<S> {
    /// The sink (counters).
    pub sink: S,
    /// Cursor per stream key (`<namespace>/<pod>/<uid>/<container>`).
    pub cursors: BTreeMap<String, Cursor>,
}

/// The shared state of a source's followers.
pub type SharedRef<S> = Arc<Mutex<Shared<S>>>;

/// Locks the shared state (a poisoned lock is taken over: the counters are
/// plain data and stay usable).
pub fn lock<S>(s: &Mutex<Shared<S>>) -> MutexGuard<'_, Shared<S>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key of one stream.
pub fn stream_key(namespace: &str, pod: &str, uid: &str, container: &str) -> String {
    format!("{namespace}/{pod}/{uid}/{container}")
}

/// Settings of one follower (one namespace).
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// The namespace whose pods are followed.
    pub namespace: String,
    /// Server-side label selector of the pod watch (None: every pod).
    pub selector: Option<String>,
    /// Pods of the first list without a cursor count only lines from now
    /// (`start_at: end` with no state file).
    pub start_at_end: bool,
    /// Longest line kept whole.
    pub max_line_bytes: usize,
    /// First reconnection delay.
    pub backoff_base: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// Delay before retrying after a 403.
    pub forbidden_retry: Duration,
    /// A stream silent this long is reopened (guards against half-open
    /// connections; resume makes it harmless).
    pub idle_reconnect: Duration,
    /// A deleted pod's stream is given up after this long without data.
    pub drain_idle: Duration,
}

impl FollowOptions {
    /// Defaults for `namespace`.
    pub fn new(namespace: &str, selector: Option<String>, max_line_bytes: usize) -> Self {
        FollowOptions {
            namespace: namespace.to_string(),
            selector,
            start_at_end: false,
            max_line_bytes,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            forbidden_retry: Duration::from_secs(300),
            idle_reconnect: Duration::from_secs(300),
            drain_idle: Duration::from_secs(5),
        }
    }
}

/// Whether `container` of `pod` has (had) a log: started, finished or
/// restarted.
pub fn container_has_logs(pod: &Pod, container: &str) -> bool {
    let Some(st) = &pod.status else { return false };
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .filter(|c| c.name == container)
        .any(|c| {
            let s = c.state.as_ref();
            s.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                || c.restart_count > 0
                || c.last_state.as_ref().is_some_and(|l| l.terminated.is_some())
        })
}

/// Whether the pod has finished (Succeeded or Failed): its logs are final.
pub fn pod_finished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// Whether `container`'s log is final: the pod finished, or it is an init
/// container that completed (exit 0; it does not run again).
pub fn container_finished(pod: &Pod, container: &str) -> bool {
    pod_finished(pod)
        || pod
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.name == container)
            .any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0)
            })
}

fn uid_of(pod: &Pod) -> Option<&str> {
    pod.metadata.uid.as_deref()
}

/// What a watch error means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchErrorKind {
    /// 403: RBAC denies list or watch.
    Forbidden,
    /// 410 Gone: the resourceVersion expired; the watcher relists.
    Expired,
    /// Anything else (network, server errors).
    Other,
}

/// Classifies a kube-runtime watcher error.
pub(crate) fn classify_watch_error(e: &watcher::Error) -> WatchErrorKind {
    let code = match e {
        watcher::Error::InitialListFailed(k) | watcher::Error::WatchStartFailed(k) | watcher::Error::WatchFailed(k) => match k {
            kube::Error::Api(s) => s.code,
            _ => 0,
        },
        watcher::Error::WatchError(s) => s.code,
        _ => 0,
    };
    match code {
        403 => WatchErrorKind::Forbidden,
        410 => WatchErrorKind::Expired,
        _ => WatchErrorKind::Other,
    }
}

/// How a stream task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The pod is gone (deleted or replaced): its cursor can go.
    Gone,
    /// The pod finished and its log was read to the end.
    Done,
    /// The agent is stopping.
    Shutdown,
}

/// How one connection ended.
#[derive(Debug)]
enum ReadEnd {
    Eof,
    Error(std::io::Error),
    Idle,
    Drained,
    Shutdown,
}

/// Line splitting and routing of one connection (pure; unit-tested).
pub(crate) struct LineReader {
    pending: Vec<u8>,
    overflow: bool,
    limit: usize,
    gate: Gate,
    /// Lines counted on this connection.
    pub(crate) counted: u64,
}

/// Bytes kept for a too-long line: room for the timestamp before the cut.
const TS_ROOM: usize = 64;

impl LineReader {
    pub(crate) fn new(cursor: &Cursor, max_line_bytes: usize) -> Self {
        LineReader {
            pending: Vec::new(),
            overflow: false,
            limit: max_line_bytes + TS_ROOM,
            gate: Gate::new(cursor),
            counted: 0,
        }
    }

    /// Takes `chunk`, hands the complete lines new to this stream to `sink`
    /// and advances `cursor`; an incomplete last line waits for more.
    pub(crate) fn feed<S: LogSink>(&mut self, chunk: &[u8], route: &S::Route, sink: &mut S, cursor: &mut Cursor) {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[start..start + nl];
            let too_long = std::mem::take(&mut self.overflow) || line.len() > self.limit;
            match split_line(line) {
                Some((ts, content)) => {
                    if self.gate.admit(ts) {
                        let content = if too_long {
                            &content[..content.len().min(self.limit)]
                        } else {
                            content
                        };
                        sink.line(route, content, too_long);
                        cursor.record(ts);
                        self.counted += 1;
                    }
                }
                None => {
                    // No timestamp: cannot be placed; passed on once the
                    // connection is past the saved point.
                    if self.gate.is_open() {
                        sink.line(route, &line[..line.len().min(self.limit)], too_long);
                        self.counted += 1;
                    }
                }
            }
            start += nl + 1;
        }
        self.pending.drain(..start);
        if self.pending.len() > self.limit {
            self.pending.truncate(self.limit);
            self.overflow = true;
        }
    }
}

struct Stream<S: LogSink> {
    api: Api<Pod>,
    key: String,
    pod: String,
    uid: String,
    container: String,
    route: S::Route,
    shared: SharedRef<S>,
    cx: SourceContext,
    gone: CancellationToken,
    opts: Arc<FollowOptions>,
    forbidden_logged: Arc<AtomicBool>,
}

async fn sleep_or_stop(cx: &SourceContext, d: Duration) -> bool {
    tokio::select! {
        _ = cx.shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

impl<S: LogSink> Stream<S> {
    async fn run(self) -> End {
        let mut backoff = self.opts.backoff_base;
        let mut first = true;
        let mut finishing = false;
        loop {
            if self.cx.shutdown.is_cancelled() {
                return End::Shutdown;
            }
            if !first {
                if self.gone.is_cancelled() {
                    return End::Gone;
                }
                if !sleep_or_stop(&self.cx, backoff).await {
                    return End::Shutdown;
                }
                backoff = (backoff * 2).min(self.opts.backoff_max);
                // Same pod still there? (Never follow a successor by name.)
                match self.api.get_opt(&self.pod).await {
                    Ok(None) => return End::Gone,
                    Ok(Some(p)) if uid_of(&p) != Some(self.uid.as_str()) => return End::Gone,
                    Ok(Some(p)) => {
                        if finishing {
                            // The finished pod's log was read to its end.
                            let mut g = lock(&self.shared);
                            g.cursors.entry(self.key.clone()).or_default().done = true;
                            return End::Done;
                        }
                        if container_finished(&p, &self.container) {
                            finishing = true;
                        } else if !container_has_logs(&p, &self.container) {
                            continue;
                        }
                    }
                    Err(e) => {
                        if crate::k8s::is_forbidden(&e) {
                            self.forbidden(&e, "get pod");
                            backoff = self.opts.forbidden_retry;
                        } else {
                            self.cx.error("kubernetes_api");
                            tracing::debug!(source = %self.cx.name, pod = %self.pod, error = %e, "cannot read the pod");
                        }
                        continue;
                    }
                }
            }
            first = false;
            let cursor = lock(&self.shared).cursors.get(&self.key).cloned().unwrap_or_default();
            let lp = LogParams {
                container: Some(self.container.clone()),
                follow: true,
                timestamps: true,
                since_time: cursor.since_time(),
                ..Default::default()
            };
            let reader = match self.api.log_stream(&self.pod, &lp).await {
                Ok(r) => r,
                Err(e) => {
                    if crate::k8s::is_forbidden(&e) {
                        self.forbidden(&e, "pods/log");
                        backoff = self.opts.forbidden_retry;
                    } else if crate::k8s::is_not_found(&e) {
                        if self.gone.is_cancelled() {
                            return End::Gone;
                        }
                    } else if !matches!(&e, kube::Error::Api(s) if s.code == 400) {
                        // 400: the container is not running yet; anything else
                        // is an error.
                        self.cx.error("pods_log");
                        tracing::debug!(source = %self.cx.name, pod = %self.pod, container = %self.container, error = %e, "cannot open the log");
                    }
                    continue;
                }
            };
            tracing::debug!(source = %self.cx.name, pod = %self.pod, container = %self.container, since = ?lp.since_time, "log stream opened");
            let (end, counted) = self.read(Box::pin(reader), cursor).await;
            tracing::debug!(source = %self.cx.name, pod = %self.pod, container = %self.container, ?end, counted, gone = self.gone.is_cancelled(), "log stream ended");
            if counted > 0 {
                backoff = self.opts.backoff_base;
            }
            match end {
                ReadEnd::Shutdown => return End::Shutdown,
                ReadEnd::Drained => return End::Gone,
                ReadEnd::Eof if self.gone.is_cancelled() => return End::Gone,
                ReadEnd::Error(e) => {
                    self.cx.error("pods_log");
                    tracing::debug!(source = %self.cx.name, pod = %self.pod, container = %self.container, error = %e, "log stream broken; resuming");
                }
                ReadEnd::Eof | ReadEnd::Idle => {}
            }
        }
    }

    fn forbidden(&self, e: &kube::Error, what: &str) {
        self.cx.error("forbidden");
        if !self.forbidden_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                source = %self.cx.name,
                namespace = %self.opts.namespace,
                pod = %self.pod,
                error = %e,
                "{what} is forbidden (the Role needs get on pods and pods/log); retrying every {:?}",
                self.opts.forbidden_retry
            );
        }
    }

    /// Reads one connection until it ends; returns how it ended and how many
    /// lines it counted.
    async fn read<R: AsyncBufRead + Unpin>(&self, mut r: R, cursor: Cursor) -> (ReadEnd, u64) {
        let mut lr = LineReader::new(&cursor, self.opts.max_line_bytes);
        loop {
            let idle = if self.gone.is_cancelled() {
                self.opts.drain_idle
            } else {
                self.opts.idle_reconnect
            };
            let n = tokio::select! {
                _ = self.cx.shutdown.cancelled() => return (ReadEnd::Shutdown, lr.counted),
                _ = tokio::time::sleep(idle) => {
                    return (if self.gone.is_cancelled() { ReadEnd::Drained } else { ReadEnd::Idle }, lr.counted);
                }
                res = r.fill_buf() => match res {
                    Ok([]) => return (ReadEnd::Eof, lr.counted),
                    Ok(b) => {
                        let mut g = lock(&self.shared);
                        let Shared { sink, cursors } = &mut *g;
                        let c = cursors.entry(self.key.clone()).or_default();
                        lr.feed(b, &self.route, sink, c);
                        b.len()
                    }
                    Err(e) => return (ReadEnd::Error(e), lr.counted),
                },
            };
            r.consume_unpin(n);
        }
    }
}

struct Running {
    gone: CancellationToken,
    uid: String,
}

/// Follows the pods of `opts.namespace` until the source stops.
pub async fn follow_namespace<S: LogSink>(client: kube::Client, opts: FollowOptions, shared: SharedRef<S>, cx: SourceContext) {
    let opts = Arc::new(opts);
    let api: Api<Pod> = Api::namespaced(client, &opts.namespace);
    let mut wc = watcher::Config::default();
    if let Some(s) = &opts.selector {
        wc = wc.labels(s);
    }
    let mut events = Box::pin(watcher(api.clone(), wc));
    let mut tasks: JoinSet<(String, End)> = JoinSet::new();
    let mut running: HashMap<String, Running> = HashMap::new();
    // Streams that ended because their pod is gone (not restarted on a late
    // event about that pod).
    let mut ended: HashSet<String> = HashSet::new();
    let mut listing: Option<HashSet<String>> = None;
    let mut first_list = true;
    let forbidden_logged = Arc::new(AtomicBool::new(false));
    let mut watch_backoff = opts.backoff_base;
    let mut last_watch_err = String::new();
    let prefix = format!("{}/", opts.namespace);

    loop {
        tokio::select! {
            _ = cx.shutdown.cancelled() => break,
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((key, end)) = res else {
                    cx.error("panic");
                    continue;
                };
                running.remove(&key);
                if end == End::Gone {
                    lock(&shared).cursors.remove(&key);
                    ended.insert(key);
                }
            }
            ev = events.next() => {
                let Some(ev) = ev else { break };
                let ev = match ev {
                    Ok(ev) => {
                        watch_backoff = opts.backoff_base;
                        last_watch_err.clear();
                        ev
                    }
                    Err(e) => {
                        let kind = classify_watch_error(&e);
                        if kind == WatchErrorKind::Expired {
                            // 410 Gone: the watcher relists by itself.
                            tracing::debug!(source = %cx.name, namespace = %opts.namespace, "pod watch expired; relisting");
                            continue;
                        }
                        let wait = if kind == WatchErrorKind::Forbidden {
                            cx.error("forbidden");
                            if !forbidden_logged.swap(true, Ordering::Relaxed) {
                                tracing::warn!(source = %cx.name, namespace = %opts.namespace, error = %e, "listing pods is forbidden (the Role needs list and watch on pods); retrying every {:?}", opts.forbidden_retry);
                            }
                            opts.forbidden_retry
                        } else {
                            cx.error("watch");
                            let msg = e.to_string();
                            if msg != last_watch_err {
                                tracing::warn!(source = %cx.name, namespace = %opts.namespace, error = %msg, "pod watch failed; retrying");
                                last_watch_err = msg;
                            }
                            let w = watch_backoff;
                            watch_backoff = (watch_backoff * 2).min(opts.backoff_max);
                            w
                        };
                        if !sleep_or_stop(&cx, wait).await {
                            break;
                        }
                        continue;
                    }
                };
                match ev {
                    watcher::Event::Init => listing = Some(HashSet::new()),
                    watcher::Event::InitApply(pod) => {
                        if let (Some(l), Some(uid)) = (listing.as_mut(), uid_of(&pod)) {
                            l.insert(uid.to_string());
                        }
                        start_streams(&pod, first_list, &opts, &api, &shared, &cx, &mut tasks, &mut running, &ended, &forbidden_logged);
                    }
                    watcher::Event::InitDone => {
                        first_list = false;
                        if let Some(present) = listing.take() {
                            // Pods gone while no watch was running.
                            for r in running.values() {
                                if !present.contains(&r.uid) {
                                    r.gone.cancel();
                                }
                            }
                            let mut g = lock(&shared);
                            g.cursors.retain(|k, _| {
                                !k.starts_with(&prefix)
                                    || running.contains_key(k)
                                    || k.split('/').nth(2).is_some_and(|uid| present.contains(uid))
                            });
                            ended.retain(|k| k.split('/').nth(2).is_some_and(|uid| present.contains(uid)));
                        }
                    }
                    watcher::Event::Apply(pod) => {
                        start_streams(&pod, false, &opts, &api, &shared, &cx, &mut tasks, &mut running, &ended, &forbidden_logged);
                    }
                    watcher::Event::Delete(pod) => {
                        let Some(uid) = uid_of(&pod) else { continue };
                        let pfx = format!("{}/{}/{uid}/", opts.namespace, pod.metadata.name.as_deref().unwrap_or_default());
                        for (k, r) in &running {
                            if k.starts_with(&pfx) {
                                r.gone.cancel();
                            }
                        }
                        lock(&shared).cursors.retain(|k, _| !k.starts_with(&pfx) || running.contains_key(k));
                        ended.retain(|k| !k.starts_with(&pfx));
                    }
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

#[allow(clippy::too_many_arguments)]
fn start_streams<S: LogSink>(
    pod: &Pod,
    first_list: bool,
    opts: &Arc<FollowOptions>,
    api: &Api<Pod>,
    shared: &SharedRef<S>,
    cx: &SourceContext,
    tasks: &mut JoinSet<(String, End)>,
    running: &mut HashMap<String, Running>,
    ended: &HashSet<String>,
    forbidden_logged: &Arc<AtomicBool>,
) {
    let (Some(name), Some(uid)) = (pod.metadata.name.as_deref(), uid_of(pod)) else {
        return;
    };
    let mut g = lock(shared);
    let routes = g.sink.routes(pod);
    for (container, route) in routes {
        let key = stream_key(&opts.namespace, name, uid, &container);
        if running.contains_key(&key) || ended.contains(&key) || !container_has_logs(pod, &container) {
            continue;
        }
        let c = g.cursors.entry(key.clone()).or_insert_with(|| {
            if first_list && opts.start_at_end {
                Cursor::at(csoc_common::time::now_ms() as i128 * 1_000_000)
            } else {
                Cursor::default()
            }
        });
        if c.done {
            continue;
        }
        let gone = CancellationToken::new();
        running.insert(
            key.clone(),
            Running {
                gone: gone.clone(),
                uid: uid.to_string(),
            },
        );
        let s = Stream {
            api: api.clone(),
            key: key.clone(),
            pod: name.to_string(),
            uid: uid.to_string(),
            container,
            route,
            shared: shared.clone(),
            cx: cx.clone(),
            gone,
            opts: opts.clone(),
            forbidden_logged: forbidden_logged.clone(),
        };
        tasks.spawn(async move { (key, s.run().await) });
    }
}
