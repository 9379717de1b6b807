//! The fake's store: objects by type and key, the global resourceVersion,
//! the bounded change history that watches and consistent paging read,
//! pods' logs, metrics and the switches tests flip.
//!
//! Invariants:
//! - `rv` is the resourceVersion of the last change (a global counter, as
//!   etcd's revision); every stored object's `metadata.resourceVersion` is
//!   the `rv` of its last change.
//! - `history` holds every change with `rv > oldest`, oldest first, so the
//!   state at any `r` in `oldest..=rv` can be rebuilt by undoing the changes
//!   after `r`, and a watch from any such `r` can be served. A watch or an
//!   exact list from `r < oldest` answers 410 Gone (reason `Expired`).
//! - Keys order as etcd's do: `namespace/name`, or `name` for
//!   cluster-scoped types.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::resources::{RESOURCES, by_kind};

/// One request the fake answered (for asserting that clients watch rather
/// than poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// HTTP method (`GET`).
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// The raw query string (`""` when none).
    pub query: String,
    /// Whether it was a watch (`watch=true` or `watch=1`).
    pub watch: bool,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as the watch cache keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The resourceVersion this change made.
    pub rv: u64,
    /// Index of the type in `RESOURCES`.
    pub res: usize,
    /// The object's key.
    pub key: String,
    /// Namespace (`""` for cluster-scoped types).
    pub namespace: String,
    pub kind: ChangeKind,
    /// The object after the change (for a deletion: its last state with
    /// the deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before the change (none for an addition).
    pub prev: Option<Arc<Value>>,
}

/// Why an object cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// `apiVersion`, `kind` or `metadata.name` is missing.
    #[error("object has no {0}")]
    Missing(&'static str),
    /// The fake does not serve this kind.
    #[error("kind {kind} in {api_version} is not served by the fake")]
    UnknownKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
}

/// One container's log: lines with their times, bounded.
#[derive(Debug, Default)]
pub(crate) struct LogBuf {
    /// (time, line without its newline), oldest first.
    pub lines: VecDeque<(SystemTime, String)>,
    /// Index (since the container started) of `lines[0]`.
    pub first: u64,
    /// The pod is gone: followers end once they have read every line.
    pub closed: bool,
}

/// A container's log and the signal followers wait on.
#[derive(Debug)]
pub(crate) struct LogStream {
    pub buf: Mutex<LogBuf>,
    /// Bumped on every new line and on close.
    pub notify: watch::Sender<u64>,
}

impl LogStream {
    fn new() -> LogStream {
        LogStream {
            buf: Mutex::new(LogBuf::default()),
            notify: watch::Sender::new(0),
        }
    }
}

/// A container's usage as the metrics API reports it.
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    pub container: String,
    pub cpu: String,
    pub memory: String,
}

/// Most requests remembered by `requests()`.
const MAX_REQUESTS: usize = 100_000;

/// The fake's state, behind one mutex.
#[derive(Debug)]
pub(crate) struct State {
    /// resourceVersion of the last change.
    pub rv: u64,
    /// Changes after this resourceVersion are all in `history`.
    pub oldest: u64,
    /// Objects per type (index into `RESOURCES`), by key.
    pub objects: Vec<BTreeMap<String, Arc<Value>>>,
    pub history: VecDeque<Change>,
    history_cap: usize,
    /// Forbidden resources, as given to `forbid` (`nodes`, `pods/log`,
    /// `pods.metrics.k8s.io`).
    pub forbidden: BTreeSet<String>,
    pub requests: VecDeque<Request>,
    /// Logs by (namespace, pod, container).
    pub logs: HashMap<(String, String, String), Arc<LogStream>>,
    pub log_cap: usize,
    /// Pod usage by (namespace, pod).
    pub pod_metrics: BTreeMap<(String, String), Vec<Usage>>,
    /// Node usage by node: (cpu, memory).
    pub node_metrics: BTreeMap<String, (String, String)>,
    /// Whether metrics.k8s.io is served.
    pub metrics_api: bool,
    /// Whether Argo CD's CRDs (argoproj.io) are installed.
    pub argocd_crd: bool,
    uid_seed: u64,
    uid_seq: u64,
}

/// The object's key in the store.
pub(crate) fn key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// RFC 3339 with seconds, UTC (`creationTimestamp`, `lastTimestamp`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 with nanoseconds, UTC, nine digits (the kubelet's log time
/// format, and `eventTime`'s microseconds are a prefix of it).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Parses an RFC 3339 time (`Z` or a numeric offset, fraction optional).
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("parsing time {s:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse");
    let s = s.trim();
    // A numeric offset: parse the local part as UTC, then shift.
    let (local, offset_s): (&str, i64) = if let Some(base) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        (base, 0)
    } else if s.len() > 6 && matches!(s.as_bytes()[s.len() - 6], b'+' | b'-') && s.as_bytes()[s.len() - 3] == b':' {
        let (base, off) = s.split_at(s.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let h: i64 = off[1..3].parse().map_err(|_| bad())?;
        let m: i64 = off[4..6].parse().map_err(|_| bad())?;
        (base, sign * (h * 3600 + m * 60))
    } else {
        return Err(bad());
    };
    if local.len() < 19 || local.as_bytes()[10] != b'T' && local.as_bytes()[10] != b't' {
        return Err(bad());
    }
    let t = humantime::parse_rfc3339(&format!("{}T{}Z", &local[..10], &local[11..])).map_err(|_| bad())?;
    let shift = std::time::Duration::from_secs(offset_s.unsigned_abs());
    if offset_s >= 0 {
        t.checked_sub(shift).ok_or_else(bad)
    } else {
        t.checked_add(shift).ok_or_else(bad)
    }
}

/// Types whose `metadata.generation` counts spec changes.
fn has_generation(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "CronJob" | "Application"
    )
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl State {
    pub fn new(history_cap: usize, log_cap: usize) -> State {
        use std::hash::{BuildHasher, RandomState};
        State {
            rv: 1,
            oldest: 1,
            objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            forbidden: BTreeSet::new(),
            requests: VecDeque::new(),
            logs: HashMap::new(),
            log_cap: log_cap.max(1),
            pod_metrics: BTreeMap::new(),
            node_metrics: BTreeMap::new(),
            metrics_api: true,
            argocd_crd: false,
            uid_seed: RandomState::new().hash_one(0x5eed_u64),
            uid_seq: 0,
        }
    }

    /// A fresh RFC 4122 version-4-shaped uid.
    pub fn new_uid(&mut self) -> String {
        self.uid_seq += 1;
        let a = splitmix(self.uid_seed ^ self.uid_seq);
        let b = splitmix(a ^ 0xdead_beef);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    pub fn record(&mut self, r: Request) {
        if self.requests.len() >= MAX_REQUESTS {
            self.requests.pop_front();
        }
        self.requests.push_back(r);
    }

    fn push_change(&mut self, c: Change) {
        self.history.push_back(c);
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.oldest = old.rv;
            }
        }
    }

    /// Creates or replaces an object; returns it as stored and whether
    /// anything changed (an identical object is a no-op, as an update that
    /// changes nothing is for the apiserver).
    pub fn apply(&mut self, mut obj: Value) -> Result<(Arc<Value>, bool), ApplyError> {
        let api_version = obj["apiVersion"].as_str().ok_or(ApplyError::Missing("apiVersion"))?.to_string();
        let kind = obj["kind"].as_str().ok_or(ApplyError::Missing("kind"))?.to_string();
        let res = by_kind(&api_version, &kind).ok_or_else(|| ApplyError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
        let name = obj["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or(ApplyError::Missing("metadata.name"))?
            .to_string();
        let namespace = if RESOURCES[res].namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let k = key(&namespace, &name);
        let existing = self.objects[res].get(&k).cloned();
        let uid = match &existing {
            Some(e) => e["metadata"]["uid"].clone(),
            None => match obj["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
                Some(u) => json!(u),
                None => json!(self.new_uid()),
            },
        };
        let created = match &existing {
            Some(e) => e["metadata"]["creationTimestamp"].clone(),
            None => match &obj["metadata"]["creationTimestamp"] {
                Value::String(s) => json!(s),
                _ => json!(rfc3339(SystemTime::now())),
            },
        };
        let Some(meta) = obj["metadata"].as_object_mut() else {
            return Err(ApplyError::Missing("metadata"));
        };
        if namespace.is_empty() {
            meta.remove("namespace");
        } else {
            meta.insert("namespace".into(), json!(namespace));
        }
        meta.insert("uid".into(), uid);
        meta.insert("creationTimestamp".into(), created);
        if has_generation(&kind) {
            let generation = match &existing {
                Some(e) => {
                    let g = e["metadata"]["generation"].as_i64().unwrap_or(1);
                    if e.get("spec") != obj.get("spec") { g + 1 } else { g }
                }
                None => obj["metadata"]["generation"].as_i64().unwrap_or(1),
            };
            obj["metadata"]["generation"] = json!(generation);
        }
        if let Some(e) = &existing {
            obj["metadata"]["resourceVersion"] = e["metadata"]["resourceVersion"].clone();
            if **e == obj {
                return Ok((e.clone(), false));
            }
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let obj = Arc::new(obj);
        self.objects[res].insert(k.clone(), obj.clone());
        let change = Change {
            rv: self.rv,
            res,
            key: k,
            namespace,
            kind: if existing.is_some() {
                ChangeKind::Modified
            } else {
                ChangeKind::Added
            },
            object: obj.clone(),
            prev: existing,
        };
        self.push_change(change);
        Ok((obj, true))
    }

    /// Deletes an object; `false` when there is none. A pod's logs are
    /// closed (followers drain them and end) and its metrics dropped.
    pub fn delete(&mut self, res: usize, namespace: &str, name: &str) -> bool {
        let ns = if RESOURCES[res].namespaced { namespace } else { "" };
        let k = key(ns, name);
        let Some(prev) = self.objects[res].remove(&k) else {
            return false;
        };
        self.rv += 1;
        let mut last = (*prev).clone();
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let change = Change {
            rv: self.rv,
            res,
            key: k,
            namespace: ns.to_string(),
            kind: ChangeKind::Deleted,
            object: Arc::new(last),
            prev: Some(prev),
        };
        self.push_change(change);
        if RESOURCES[res].kind == "Pod" {
            let gone: Vec<_> = self.logs.keys().filter(|(n, p, _)| n == ns && p == name).cloned().collect();
            for k in gone {
                if let Some(s) = self.logs.remove(&k) {
                    if let Ok(mut b) = s.buf.lock() {
                        b.closed = true;
                    }
                    s.notify.send_modify(|n| *n += 1);
                }
            }
            self.pod_metrics.remove(&(ns.to_string(), name.to_string()));
        }
        true
    }

    /// Forgets the history: the resourceVersion moves on (as other writes in
    /// a cluster move it) and nothing before it can be watched or listed
    /// exactly any more.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.oldest = self.rv;
    }

    /// The objects of type `res` as they were at `at` (`oldest <= at <= rv`).
    pub fn snapshot(&self, res: usize, at: u64) -> BTreeMap<String, Arc<Value>> {
        let mut m = self.objects[res].clone();
        for c in self.history.iter().rev().take_while(|c| c.rv > at) {
            if c.res != res {
                continue;
            }
            match (&c.kind, &c.prev) {
                (ChangeKind::Added, _) => {
                    m.remove(&c.key);
                }
                (_, Some(p)) => {
                    m.insert(c.key.clone(), p.clone());
                }
                (_, None) => {}
            }
        }
        m
    }

    /// The log of a container, created empty when none exists yet.
    pub fn log_stream(&mut self, namespace: &str, pod: &str, container: &str) -> Arc<LogStream> {
        self.logs
            .entry((namespace.to_string(), pod.to_string(), container.to_string()))
            .or_insert_with(|| Arc::new(LogStream::new()))
            .clone()
    }

    /// Appends a line to a container's log.
    pub fn append_log(&mut self, namespace: &str, pod: &str, container: &str, time: SystemTime, line: &str) {
        let cap = self.log_cap;
        let s = self.log_stream(namespace, pod, container);
        if let Ok(mut b) = s.buf.lock() {
            b.lines.push_back((time, line.trim_end_matches(['\n', '\r']).to_string()));
            while b.lines.len() > cap {
                b.lines.pop_front();
                b.first += 1;
            }
        }
        s.notify.send_modify(|n| *n += 1);
    }
}
