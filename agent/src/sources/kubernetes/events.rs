//! `kube_events_total{namespace,kind,name,reason,type}`: occurrences of
//! events (core/v1 Events; `Warning` only unless `events.types` says
//! otherwise), a counter per involved object (`kind`, `name`), `reason` and
//! `type`.
//!
//! An Event object stands for repeated occurrences: the API server bumps its
//! `count` (or `series.count`, for events.k8s.io events) instead of creating
//! a new one. Each Event's last count is remembered by UID hash; a new Event
//! adds its count, a MODIFIED one adds the increase. Events already there
//! when the agent starts are its baseline: their series appear at 0 and only
//! later occurrences count, so the counter means "since the agent started"
//! and a restart is a counter reset. After a relist (410 Gone, a broken
//! watch) the counts are compared with what was remembered, so nothing is
//! counted twice; events created and expired during the gap are lost.
//!
//! A new series is first sent at 0 and its increments from the next report
//! on, so that `increase()` and `rate()` see the first occurrence.
//!
//! At most `max_series` series are kept; past it the one bumped least
//! recently is dropped (a staleness marker ends it) and counted in
//! `csoc_agent_kubernetes_event_series_evicted_total`. The remembered counts
//! are 16 bytes per Event and go when the API server deletes the Event
//! (after its TTL, 1h by default).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;
use kube::runtime::watcher;

use super::state::{Out, Progress, push_stale};
use crate::model::{Labels, MetricKind};

/// The labels of one series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct EventKey {
    pub(super) namespace: String,
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) reason: String,
    pub(super) type_: String,
}

impl EventKey {
    fn labels(&self, job: &str) -> Labels {
        let mut l: Labels = Vec::with_capacity(11);
        l.push(("__name__".into(), "kube_events_total".into()));
        l.push(("job".into(), job.into()));
        for (k, v) in [
            ("namespace", &self.namespace),
            ("kind", &self.kind),
            ("name", &self.name),
            ("reason", &self.reason),
            ("type", &self.type_),
        ] {
            if !v.is_empty() {
                l.push((k.into(), v.clone()));
            }
        }
        crate::model::sort_labels(&mut l);
        l
    }
}

#[derive(Debug)]
struct Counter {
    value: f64,
    /// Occurrences not yet in `value` (a new series is first sent at 0).
    pending: f64,
    emitted: bool,
    /// Sequence number of the last bump (the LRU order).
    bumped: u64,
}

/// The events of one namespace.
#[derive(Debug, Default)]
struct NsEvents {
    /// Last count of each Event, by UID hash.
    seen: HashMap<u64, u32>,
    relist: Option<HashMap<u64, u32>>,
    /// A list finished once: later events are occurrences, not baseline.
    ever_synced: bool,
    progress: Progress,
}

/// The counters of every watched namespace.
#[derive(Debug)]
pub(super) struct EventCounter {
    types: Vec<String>,
    max_series: usize,
    namespaces: Vec<NsEvents>,
    series: HashMap<Arc<EventKey>, Counter>,
    /// Bump sequence → series: the first entry is the least recently bumped.
    lru: BTreeMap<u64, Arc<EventKey>>,
    seq: u64,
    /// Evicted series sent before, to be ended with a staleness marker.
    evicted: Vec<Arc<EventKey>>,
    evicted_total: u64,
    /// The report in progress: the series when it began, the next one.
    cursor: Option<(Vec<Arc<EventKey>>, usize)>,
}

fn uid_hash(e: &Event) -> u64 {
    let mut h = DefaultHasher::new();
    e.metadata.uid.as_deref().or(e.metadata.name.as_deref()).unwrap_or("").hash(&mut h);
    h.finish()
}

/// How many times the Event has occurred: the larger of `count` and
/// `series.count`, at least 1.
pub(super) fn occurrences(e: &Event) -> u32 {
    let c = e.count.unwrap_or(0).max(e.series.as_ref().and_then(|s| s.count).unwrap_or(0));
    u32::try_from(c).unwrap_or(0).max(1)
}

impl EventCounter {
    /// Counters for events of `types` in `namespaces` (watcher `i` feeds
    /// namespace `i`), at most `max_series` series.
    pub(super) fn new(types: &[String], max_series: usize, namespaces: usize) -> Self {
        EventCounter {
            types: types.to_vec(),
            max_series: max_series.max(1),
            namespaces: (0..namespaces).map(|_| NsEvents::default()).collect(),
            series: HashMap::new(),
            lru: BTreeMap::new(),
            seq: 0,
            evicted: Vec::new(),
            evicted_total: 0,
            cursor: None,
        }
    }

    fn key(&self, e: &Event) -> Option<EventKey> {
        let t = e.type_.as_deref()?;
        if !self.types.iter().any(|x| x == t) {
            return None;
        }
        let o = &e.involved_object;
        Some(EventKey {
            namespace: o.namespace.clone().or_else(|| e.metadata.namespace.clone()).unwrap_or_default(),
            kind: o.kind.clone().unwrap_or_default(),
            name: o.name.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            type_: t.to_string(),
        })
    }

    /// Adds `by` occurrences to `key`'s series (0: only makes sure it
    /// exists, without counting as a bump).
    fn bump(&mut self, key: EventKey, by: u32) {
        self.seq += 1;
        let seq = self.seq;
        if let Some((k, _)) = self.series.get_key_value(&key) {
            if by > 0 {
                let k = k.clone();
                if let Some(c) = self.series.get_mut(&k) {
                    c.pending += f64::from(by);
                    self.lru.remove(&c.bumped);
                    c.bumped = seq;
                }
                self.lru.insert(seq, k);
            }
            return;
        }
        while self.series.len() >= self.max_series {
            let Some((_, old)) = self.lru.pop_first() else { break };
            if let Some(c) = self.series.remove(&old) {
                self.evicted_total += 1;
                if c.emitted {
                    self.evicted.push(old);
                }
            }
        }
        let key = Arc::new(key);
        self.lru.insert(seq, key.clone());
        self.series.insert(
            key,
            Counter {
                value: 0.0,
                pending: f64::from(by),
                emitted: false,
                bumped: seq,
            },
        );
    }

    /// One watch event of namespace `ns` (an index given to [`Self::new`]).
    pub(super) fn apply(&mut self, ns: usize, ev: watcher::Event<Event>) {
        if ns >= self.namespaces.len() {
            return;
        }
        match ev {
            watcher::Event::Init => {
                let n = &mut self.namespaces[ns];
                n.progress.list_started();
                n.relist = Some(HashMap::with_capacity(n.seen.len()));
            }
            watcher::Event::InitApply(e) => self.observe(ns, &e, true),
            watcher::Event::InitDone => {
                let n = &mut self.namespaces[ns];
                if let Some(m) = n.relist.take() {
                    n.seen = m;
                }
                n.ever_synced = true;
                n.progress.list_done();
            }
            watcher::Event::Apply(e) => self.observe(ns, &e, false),
            watcher::Event::Delete(e) => {
                self.namespaces[ns].seen.remove(&uid_hash(&e));
            }
        }
    }

    fn observe(&mut self, ns: usize, e: &Event, listing: bool) {
        let Some(key) = self.key(e) else { return };
        let h = uid_hash(e);
        let n = occurrences(e);
        let state = &mut self.namespaces[ns];
        let prev = state.seen.get(&h).copied();
        let baseline = !state.ever_synced;
        match (&mut state.relist, listing) {
            (Some(m), true) => m.insert(h, n),
            _ => state.seen.insert(h, n),
        };
        if baseline {
            self.bump(key, 0);
        } else {
            let by = n.saturating_sub(prev.unwrap_or(0));
            if by > 0 {
                self.bump(key, by);
            }
        }
    }

    /// Namespace `ns` answered 403: its Events are forgotten (its series stay).
    pub(super) fn forbidden(&mut self, ns: usize) {
        if let Some(n) = self.namespaces.get_mut(ns) {
            n.seen.clear();
            n.relist = None;
            n.progress.forbidden = true;
            n.progress.synced = false;
            n.progress.settled = true;
        }
    }

    /// A list or watch of namespace `ns` failed.
    pub(super) fn failed(&mut self, ns: usize) {
        if let Some(n) = self.namespaces.get_mut(ns) {
            n.progress.settled = true;
        }
    }

    /// Progress of namespace `ns`'s watch.
    pub(super) fn progress(&self, ns: usize) -> Progress {
        self.namespaces.get(ns).map(|n| n.progress).unwrap_or_default()
    }

    /// Events remembered in namespace `ns`.
    pub(super) fn watched(&self, ns: usize) -> usize {
        self.namespaces.get(ns).map_or(0, |n| n.seen.len())
    }

    /// Series kept.
    pub(super) fn series_len(&self) -> usize {
        self.series.len()
    }

    /// Series dropped for the limit so far.
    pub(super) fn evicted_total(&self) -> u64 {
        self.evicted_total
    }

    /// Renders counters into `out` until its frame holds `limit` samples or
    /// every series is rendered; returns true when the report of the
    /// counters is complete (then with staleness markers for evicted
    /// series). Called again after false, it goes on where it stopped.
    pub(super) fn render_some(&mut self, out: &mut Out<'_>, limit: usize) -> bool {
        let series = &self.series;
        let cur = self.cursor.get_or_insert_with(|| (series.keys().cloned().collect(), 0));
        while cur.1 < cur.0.len() {
            if out.frame.samples.len() >= limit {
                return false;
            }
            let key = &cur.0[cur.1];
            cur.1 += 1;
            // Evicted since the report began.
            let Some(c) = self.series.get_mut(key) else { continue };
            if c.emitted {
                c.value += c.pending;
                c.pending = 0.0;
            }
            c.emitted = true;
            out.frame.samples.push(crate::model::Sample {
                labels: key.labels(out.job),
                timestamp_ms: out.ts,
                value: c.value,
            });
        }
        self.cursor = None;
        // An evicted series bumped again since is back (from 0): no marker.
        let gone: Vec<Labels> = self
            .evicted
            .drain(..)
            .filter(|k| !self.series.contains_key(k))
            .map(|k| k.labels(out.job))
            .collect();
        push_stale(out, gone);
        true
    }

    /// Renders every counter at once (tests).
    #[cfg(test)]
    pub(super) fn render(&mut self, out: &mut Out<'_>) {
        while !self.render_some(out, usize::MAX) {}
    }

    /// Declares `kube_events_total`.
    pub(super) fn meta(out: &mut Out<'_>) {
        out.meta(
            "kube_events_total",
            MetricKind::Counter,
            "Occurrences of Kubernetes events (count increments included) since the agent started, by involved object, reason and type.",
        );
    }
}
