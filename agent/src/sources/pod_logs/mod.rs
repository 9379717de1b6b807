//! Pods' logs through the Kubernetes API: following `pods/log` of every pod
//! matching a selector, with exact resume, and the log-pattern counters
//! built on it.
//!
//! - [`follow`]: the follower (pod watch, one task per container stream,
//!   backoff, 403 handling, draining) feeding lines to a [`LogSink`].
//! - [`resume`]: the per-stream [`Cursor`] (last timestamp, lines at it) and
//!   the [`resume::Gate`] that skips what was already counted.
//! - [`counters`]: [`LogCounterConfig`] and the [`LogCounters`] sink.
//! - [`selector`]: Kubernetes label selectors, parsed and matched locally.
//!
//! [`LogCountersSource`] runs the counters as a source of their own: one
//! follower per namespace watching every pod (the counters' selectors are
//! matched locally, so a pod read by several counters is streamed once), the
//! counters and cursors saved atomically together in
//! `<state_dir>/log_counters.state` before each frame is sent, and sent every
//! interval as counters with metadata. `revproxy_log`'s Kubernetes mode uses
//! the same follower with its own sink and state.
//!
//! Permissions: `list` and `watch` on pods, `get` on pods and pods/log in the
//! namespaces read. A 403 is logged once, counted in
//! `csoc_agent_source_errors_total{kind="forbidden"}` and retried every 5
//! minutes; the counters keep being sent.

pub mod counters;
pub mod follow;
pub mod resume;
pub mod selector;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;
pub use counters::{LogCounterConfig, LogCounters, SavedCounter, validate_counters};
pub use follow::{FollowOptions, LogSink, Shared, SharedRef};
pub use resume::Cursor;
pub use selector::LabelSelector;

/// Which pods' logs to follow (`sources.revproxy_log.kubernetes`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PodLogSelector {
    /// The namespace of the pods (the commons' namespace).
    pub namespace: String,
    /// Label selector of the pods (Kubernetes syntax, e.g. `app=revproxy`).
    pub selector: String,
    /// Only this container of each pod (default: every container).
    #[serde(default)]
    pub container: Option<String>,
}

/// Whether `ns` is a valid namespace name (a DNS-1123 label).
pub fn valid_namespace(ns: &str) -> bool {
    let b = ns.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

impl PodLogSelector {
    /// Checks the fields; `field` names it in errors
    /// (`sources.revproxy_log.kubernetes`).
    pub fn validate(&self, field: &str) -> Result<LabelSelector, ConfigError> {
        if !valid_namespace(&self.namespace) {
            return Err(ConfigError::Invalid {
                field: format!("{field}.namespace"),
                message: format!("{:?} is not a namespace name (lower-case letters, digits, '-')", self.namespace),
            });
        }
        let sel = LabelSelector::parse(&self.selector).map_err(|message| ConfigError::Invalid {
            field: format!("{field}.selector"),
            message,
        })?;
        if sel.as_param().is_none() {
            return Err(ConfigError::Invalid {
                field: format!("{field}.selector"),
                message: "is required (e.g. app=revproxy)".into(),
            });
        }
        if self.container.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::Invalid {
                field: format!("{field}.container"),
                message: "must not be empty (leave it out for every container)".into(),
            });
        }
        Ok(sel)
    }
}

/// Writes `data` to `path` atomically: a temporary file, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Builds the client (retrying with backoff while it cannot be built), then
/// runs one follower per `follows` until the source stops.
pub(crate) async fn run_followers<S: LogSink>(
    kubeconfig: Option<PathBuf>,
    follows: Vec<FollowOptions>,
    shared: SharedRef<S>,
    cx: SourceContext,
) {
    let Some(client) = crate::k8s::client_with_retry(kubeconfig.as_deref(), &cx, "pod logs").await else {
        return;
    };
    let mut set = JoinSet::new();
    for f in follows {
        set.spawn(follow::follow_namespace(client.clone(), f, shared.clone(), cx.clone()));
    }
    while set.join_next().await.is_some() {}
}

/// Runs the followers and, every `interval` (and once more at shutdown),
/// takes a snapshot under the lock (`snapshot` returns the state file's bytes
/// and the frame), writes the state, then sends the frame.
pub(crate) async fn run_with_state<S, F>(
    kubeconfig: Option<PathBuf>,
    follows: Vec<FollowOptions>,
    shared: SharedRef<S>,
    cx: SourceContext,
    interval: Duration,
    state_path: PathBuf,
    snapshot: F,
) where
    S: LogSink,
    F: Fn(&mut Shared<S>, i64) -> (Result<Vec<u8>, serde_json::Error>, crate::model::Frame),
{
    let followers = tokio::spawn(run_followers(kubeconfig, follows, shared.clone(), cx.clone()));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let frame = save_state(&shared, &snapshot, &state_path, &cx).await;
        if !cx.emit(frame).await {
            break;
        }
    }
    // The followers stop within one read; then the last save.
    let _ = followers.await;
    let _ = save_state(&shared, &snapshot, &state_path, &cx).await;
}

/// Snapshot under the lock, then the write in a blocking task: what is sent
/// has been saved, so a restart never goes back below a sent value.
async fn save_state<S, F>(shared: &SharedRef<S>, snapshot: &F, state_path: &Path, cx: &SourceContext) -> crate::model::Frame
where
    S: LogSink,
    F: Fn(&mut Shared<S>, i64) -> (Result<Vec<u8>, serde_json::Error>, crate::model::Frame),
{
    let (bytes, frame) = {
        let mut g = follow::lock(shared);
        snapshot(&mut g, csoc_common::time::now_ms())
    };
    let path = state_path.to_path_buf();
    let res = match bytes {
        Ok(b) => tokio::task::spawn_blocking(move || write_atomic(&path, &b))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e))),
        Err(e) => Err(std::io::Error::other(e)),
    };
    if let Err(e) = res {
        cx.error("state");
        tracing::warn!(source = %cx.name, file = %state_path.display(), error = %e, "cannot save the state");
    }
    frame
}

/// What the log-counters source saves.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CountersState {
    /// Format version (1).
    pub version: u32,
    /// Cursor per stream.
    pub streams: BTreeMap<String, Cursor>,
    /// Counter values by counter identity.
    pub counters: BTreeMap<String, SavedCounter>,
}

/// Reads a JSON state file; None when absent.
pub fn load_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The log-pattern counters as a source: reads the pods of `namespaces`
/// (`sources.kubernetes.log_counters`).
pub struct LogCountersSource {
    namespaces: Vec<String>,
    counters: Vec<LogCounterConfig>,
    kubeconfig: Option<PathBuf>,
    state_path: PathBuf,
    max_line_bytes: usize,
}

/// Where the counters are named in errors.
pub const COUNTERS_FIELD: &str = "sources.kubernetes.log_counters";

impl LogCountersSource {
    /// Validates the counters and namespaces; the state goes to
    /// `<state_dir>/log_counters.state`.
    pub fn new(
        namespaces: Vec<String>,
        counters: Vec<LogCounterConfig>,
        kubeconfig: Option<PathBuf>,
        state_dir: &Path,
    ) -> Result<Self, ConfigError> {
        validate_counters(&counters, COUNTERS_FIELD)?;
        if namespaces.is_empty() {
            return Err(ConfigError::Invalid {
                field: COUNTERS_FIELD.into(),
                message: "log counters need at least one namespace (sources.kubernetes.namespaces)".into(),
            });
        }
        if let Some(ns) = namespaces.iter().find(|n| !valid_namespace(n)) {
            return Err(ConfigError::Invalid {
                field: "sources.kubernetes.namespaces".into(),
                message: format!("{ns:?} is not a namespace name"),
            });
        }
        Ok(LogCountersSource {
            namespaces,
            counters,
            kubeconfig,
            state_path: state_dir.join("log_counters.state"),
            max_line_bytes: 64 << 10,
        })
    }

    /// Overrides the state file (tests).
    pub fn with_state_file(mut self, path: PathBuf) -> Self {
        self.state_path = path;
        self
    }
}

impl Source for LogCountersSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            let state: CountersState = match load_json(&self.state_path) {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => {
                    cx.error("state");
                    tracing::warn!(source = %cx.name, file = %self.state_path.display(), error = %e, "unreadable state file: starting over");
                    CountersState::default()
                }
            };
            let sink = match LogCounters::new(&self.counters, COUNTERS_FIELD, &state.counters) {
                Ok(s) => s,
                Err(e) => {
                    // Validated in new(); kept for safety.
                    cx.error("config");
                    tracing::error!(source = %cx.name, error = %e, "log counters not usable");
                    return;
                }
            };
            let shared = Arc::new(Mutex::new(Shared {
                sink,
                cursors: state.streams,
            }));
            let follows = self
                .namespaces
                .iter()
                .map(|ns| FollowOptions::new(ns, None, self.max_line_bytes))
                .collect();
            tracing::info!(source = %cx.name, namespaces = ?self.namespaces, counters = self.counters.len(), state = %self.state_path.display(), "log counters following pods' logs");
            let interval = cx.interval;
            let name = cx.name.clone();
            run_with_state(
                self.kubeconfig.clone(),
                follows,
                shared,
                cx,
                interval,
                self.state_path.clone(),
                move |g, now| {
                    let st = CountersState {
                        version: 1,
                        streams: g.cursors.clone(),
                        counters: g.sink.save(),
                    };
                    (serde_json::to_vec(&st), g.sink.frame(&name, now))
                },
            )
            .await;
        })
    }
}
