//! The watched objects, kept as compact summaries, and how they become
//! series with staleness markers.
//!
//! A watch event's object is turned at once into a small summary of the
//! fields the metrics need ([`Summary::from_object`]), and the full object is
//! dropped: 2,000 pods cost a few hundred kilobytes, not the tens of
//! megabytes of their JSON. Summaries are reference-counted and compared on
//! every update: an update that changes nothing the metrics show (most pod
//! status updates) keeps the old summary.
//!
//! Staleness without remembering label sets: the store keeps, per object,
//! the summary it rendered last time (`emitted`, sharing the `Arc`). At the
//! next report (which may span several frames, see [`Store::render_some`])
//! an object whose summary is the same `Arc` is rendered as is;
//! one that changed is rendered twice, old and new, and every old series the
//! new rendering lacks gets a staleness marker; an object that is gone has
//! all its old series marked. The series are a pure function of the summary
//! (and the source's `job`), so rendering the old summary gives exactly the
//! series sent then.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::model::{Frame, Labels, MetricKind, Sample};

/// The staleness marker.
pub(super) fn stale_nan() -> f64 {
    f64::from_bits(csoc_proto::STALE_NAN_BITS)
}

/// Where rendered series go: the frame of one report.
pub(super) struct Out<'a> {
    /// The frame.
    pub(super) frame: &'a mut Frame,
    /// Timestamp of every sample (ms).
    pub(super) ts: i64,
    /// The `job` label.
    pub(super) job: &'a str,
}

impl Out<'_> {
    /// Adds a sample with `labels` (plus `job`); labels with an empty value
    /// are left out, as Prometheus treats them as absent.
    pub(super) fn push(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        // Room for the labels the pipeline stamps (instance, external labels).
        let mut l: Labels = Vec::with_capacity(labels.len() + 4);
        l.push(("__name__".to_string(), name.to_string()));
        l.push(("job".to_string(), self.job.to_string()));
        for (k, v) in labels {
            if !v.is_empty() {
                l.push(((*k).to_string(), (*v).to_string()));
            }
        }
        crate::model::sort_labels(&mut l);
        self.frame.samples.push(Sample {
            labels: l,
            timestamp_ms: self.ts,
            value,
        });
    }

    /// Declares a family's type and help.
    pub(super) fn meta(&mut self, name: &str, kind: MetricKind, help: &str) {
        self.frame.meta(name, kind, help, "");
    }
}

/// `base` followed by `extra`.
pub(super) fn lbl<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = Vec::with_capacity(base.len() + extra.len());
    l.extend_from_slice(base);
    l.extend_from_slice(extra);
    l
}

/// `1.0` for true.
pub(super) fn b(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

/// The status of a Kubernetes condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cond {
    True,
    False,
    Unknown,
}

impl Cond {
    /// From the API's `"True"`, `"False"`, `"Unknown"`; None otherwise.
    pub(super) fn parse(s: &str) -> Option<Cond> {
        match s {
            "True" => Some(Cond::True),
            "False" => Some(Cond::False),
            "Unknown" => Some(Cond::Unknown),
            _ => None,
        }
    }

    /// kube-state-metrics' three series of a condition: `true`, `false`,
    /// `unknown`, 1 for the current status.
    pub(super) const ALL: [(Cond, &'static str); 3] = [(Cond::True, "true"), (Cond::False, "false"), (Cond::Unknown, "unknown")];
}

/// An owner reference, as kube-state-metrics reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner {
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) controller: bool,
}

impl Owner {
    /// The owners of an object.
    pub(super) fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<Owner> {
        meta.owner_references
            .iter()
            .flatten()
            .map(|o| Owner {
                kind: o.kind.clone(),
                name: o.name.clone(),
                controller: o.controller.unwrap_or(false),
            })
            .collect()
    }

    /// `kube_<kind>_owner` series: one per owner, or one with empty labels
    /// when there is none (as kube-state-metrics).
    pub(super) fn render(owners: &[Owner], name: &str, base: &[(&str, &str)], out: &mut Out<'_>) {
        let mut l: Vec<(&str, &str)> = base.to_vec();
        if owners.is_empty() {
            out.push(name, &l, 1.0);
            return;
        }
        let n = l.len();
        for o in owners {
            l.truncate(n);
            l.extend([
                ("owner_kind", o.kind.as_str()),
                ("owner_name", o.name.as_str()),
                ("owner_is_controller", if o.controller { "true" } else { "false" }),
            ]);
            out.push(name, &l, 1.0);
        }
    }
}

/// The `app` label of an object or pod template (gen3-helm's service name),
/// the `service` label of its series.
pub(super) fn app_label(labels: Option<&std::collections::BTreeMap<String, String>>) -> String {
    labels.and_then(|l| l.get("app")).cloned().unwrap_or_default()
}

/// Seconds since the epoch of a Kubernetes timestamp.
pub(super) fn secs(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<i64> {
    t.map(|t| t.0.as_second())
}

/// One kind's compact summary of an object.
pub(super) trait Summary: PartialEq + Send + Sync + Sized + 'static {
    /// The Kubernetes type watched.
    type Object: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static;

    /// The summary of `o`.
    fn from_object(o: &Self::Object) -> Self;

    /// Declares the families `render` emits (type and help).
    fn meta(out: &mut Out<'_>);

    /// The object's series; a pure function of the summary, the namespace
    /// and `out.job`.
    fn render(&self, namespace: &str, out: &mut Out<'_>);
}

/// Watch progress of one store, read by the report loop.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Progress {
    /// The list finished at least once since the last forbidden answer.
    pub(super) synced: bool,
    /// The first list finished, failed or was refused: the first report
    /// need not wait for it any more.
    pub(super) settled: bool,
    /// The last answer was 403 Forbidden.
    pub(super) forbidden: bool,
    /// Lists after the first (after 410 Gone, an error, a retry).
    pub(super) relists: u64,
    /// Lists started.
    lists: u64,
}

impl Progress {
    /// A list begins.
    pub(super) fn list_started(&mut self) {
        self.lists += 1;
        if self.lists > 1 {
            self.relists += 1;
        }
    }

    /// A list finished.
    pub(super) fn list_done(&mut self) {
        self.synced = true;
        self.settled = true;
        self.forbidden = false;
    }
}

/// The objects of one kind in one namespace (or cluster-wide).
pub(super) struct Store<S> {
    /// The namespace ("" for cluster-scoped kinds).
    pub(super) namespace: String,
    objects: HashMap<Arc<str>, Arc<S>>,
    /// What the last report rendered.
    emitted: HashMap<Arc<str>, Arc<S>>,
    /// Objects of a list in progress; they replace `objects` when it ends.
    relist: Option<HashMap<Arc<str>, Arc<S>>>,
    /// The report in progress.
    cursor: Option<Cursor<S>>,
    pub(super) progress: Progress,
}

/// Where a report of a store stands.
struct Cursor<S> {
    /// The objects when it began.
    keys: Vec<Arc<str>>,
    /// The next one to render.
    next: usize,
    /// What has been rendered (becomes `emitted`).
    rendered: HashMap<Arc<str>, Arc<S>>,
}

impl<S: Summary> Store<S> {
    pub(super) fn new(namespace: &str) -> Self {
        Store {
            namespace: namespace.to_string(),
            objects: HashMap::new(),
            emitted: HashMap::new(),
            relist: None,
            cursor: None,
            progress: Progress::default(),
        }
    }

    /// Objects held.
    pub(super) fn len(&self) -> usize {
        self.objects.len()
    }

    /// The summary of the object named `name`.
    pub(super) fn get(&self, name: &str) -> Option<&S> {
        self.objects.get(name).map(|s| &**s)
    }

    fn key(o: &S::Object) -> Option<Arc<str>> {
        kube::Resource::meta(o).name.as_deref().map(Arc::from)
    }

    /// Inserts `s` under `key` in `map`, keeping the old summary when equal
    /// (so that the report need not diff it).
    fn upsert(map: &mut HashMap<Arc<str>, Arc<S>>, old: Option<&Arc<S>>, key: Arc<str>, s: S) {
        match old {
            Some(o) if **o == s => {
                map.insert(key, o.clone());
            }
            _ => {
                map.insert(key, Arc::new(s));
            }
        }
    }

    /// Applies one watch event.
    pub(super) fn apply(&mut self, ev: kube::runtime::watcher::Event<S::Object>) {
        use kube::runtime::watcher::Event;
        match ev {
            Event::Init => {
                self.progress.list_started();
                self.relist = Some(HashMap::with_capacity(self.objects.len()));
            }
            Event::InitApply(o) => {
                let Some(key) = Self::key(&o) else { return };
                let s = S::from_object(&o);
                drop(o);
                let old = self.objects.get(&key);
                match &mut self.relist {
                    Some(buf) => Self::upsert(buf, old, key, s),
                    // InitApply without Init: cannot happen; keep it anyway.
                    None => {
                        let old = old.cloned();
                        Self::upsert(&mut self.objects, old.as_ref(), key, s);
                    }
                }
            }
            Event::InitDone => {
                if let Some(buf) = self.relist.take() {
                    self.objects = buf;
                }
                self.progress.list_done();
            }
            Event::Apply(o) => {
                let Some(key) = Self::key(&o) else { return };
                let s = S::from_object(&o);
                drop(o);
                let old = self.objects.get(&key).cloned();
                Self::upsert(&mut self.objects, old.as_ref(), key, s);
            }
            Event::Delete(o) => {
                if let Some(key) = Self::key(&o) {
                    self.objects.remove(&key);
                }
            }
        }
    }

    /// The kind answered 403: nothing of it is known any more.
    pub(super) fn forbidden(&mut self) {
        self.objects.clear();
        self.relist = None;
        self.progress.forbidden = true;
        self.progress.synced = false;
        self.progress.settled = true;
    }

    /// The kind is not served (404): nothing of it is known.
    pub(super) fn not_served(&mut self) {
        self.objects.clear();
        self.relist = None;
        self.progress.forbidden = false;
        self.progress.synced = false;
        self.progress.settled = true;
    }

    /// A list or watch failed (it is retried with backoff): the first report
    /// need not wait for it.
    pub(super) fn failed(&mut self) {
        self.progress.settled = true;
    }

    /// Renders objects into `out` until its frame holds `limit` samples or
    /// every object is rendered; returns true when this store's part of the
    /// report is complete (then with staleness markers for the series of
    /// objects gone since the last report). Called again after false, it
    /// goes on where it stopped: the report can be sent in several frames.
    /// Objects that arrive during a report wait for the next one.
    pub(super) fn render_some(&mut self, out: &mut Out<'_>, limit: usize) -> bool {
        let ns = self.namespace.as_str();
        let objects = &self.objects;
        let cur = self.cursor.get_or_insert_with(|| Cursor {
            keys: objects.keys().cloned().collect(),
            next: 0,
            rendered: HashMap::with_capacity(objects.len()),
        });
        let mut old_buf = Frame::default();
        while cur.next < cur.keys.len() {
            if out.frame.samples.len() >= limit {
                return false;
            }
            let k = &cur.keys[cur.next];
            cur.next += 1;
            // Deleted since the report began: handled below, as gone.
            let Some(s) = self.objects.get(k) else { continue };
            match self.emitted.get(k) {
                Some(old) if Arc::ptr_eq(old, s) => s.render(ns, out),
                Some(old) => {
                    let start = out.frame.samples.len();
                    s.render(ns, out);
                    old_buf.samples.clear();
                    old.render(
                        ns,
                        &mut Out {
                            frame: &mut old_buf,
                            ts: out.ts,
                            job: out.job,
                        },
                    );
                    let now: HashSet<&Labels> = out.frame.samples[start..].iter().map(|s| &s.labels).collect();
                    let gone: Vec<Labels> = old_buf
                        .samples
                        .drain(..)
                        .filter(|o| !now.contains(&o.labels))
                        .map(|o| o.labels)
                        .collect();
                    push_stale(out, gone);
                }
                None => s.render(ns, out),
            }
            cur.rendered.insert(k.clone(), s.clone());
        }
        for (k, old) in &self.emitted {
            if !cur.rendered.contains_key(k) {
                old_buf.samples.clear();
                old.render(
                    ns,
                    &mut Out {
                        frame: &mut old_buf,
                        ts: out.ts,
                        job: out.job,
                    },
                );
                let gone: Vec<Labels> = old_buf.samples.drain(..).map(|o| o.labels).collect();
                push_stale(out, gone);
            }
        }
        self.emitted = std::mem::take(&mut cur.rendered);
        self.cursor = None;
        true
    }

    /// Renders every object at once (tests).
    #[cfg(test)]
    pub(super) fn render(&mut self, out: &mut Out<'_>) {
        while !self.render_some(out, usize::MAX) {}
    }
}

/// Staleness markers for `gone` at the report's time.
pub(super) fn push_stale(out: &mut Out<'_>, gone: Vec<Labels>) {
    for labels in gone {
        out.frame.samples.push(Sample {
            labels,
            timestamp_ms: out.ts,
            value: stale_nan(),
        });
    }
}
