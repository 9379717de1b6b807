//! The write path's front: [`Appender`] collects samples (by labels or by
//! [`SeriesRef`]) and hands them to the writer thread in one commit
//! (Prometheus's `head_append.go`).

use std::collections::HashMap;
use std::sync::Arc;

use super::writer::{Key, Msg, WriteReq};
use super::{AgentKey, CommitOutcome, Labels, SeriesRef, Tsdb, TsdbError};

impl super::Appendable for Tsdb {
    fn appender(&self) -> Appender {
        Tsdb::appender(self)
    }
}

impl Tsdb {
    /// A new appender.
    pub fn appender(&self) -> Appender {
        Appender {
            tsdb: self.clone(),
            samples: Vec::new(),
            seq: None,
            last: None,
        }
    }

    /// Series ids for labels the index knows; consecutive samples of one
    /// series (the same `Arc`) are looked up once.
    fn resolve(&self, samples: Vec<(Key, i64, f64)>) -> Vec<(Key, i64, f64)> {
        if samples.iter().all(|(k, _, _)| matches!(k, Key::Id(_))) {
            return samples;
        }
        let idx = self.read_index();
        let mut out = Vec::with_capacity(samples.len());
        // The last labels looked up, and their id if they have one.
        let mut last: Option<(Arc<Labels>, Option<i64>)> = None;
        for (key, t, v) in samples {
            let labels = match key {
                Key::Id(id) => {
                    out.push((Key::Id(id), t, v));
                    continue;
                }
                Key::New(l) => l,
            };
            let found = match &last {
                Some((l, found)) if Arc::ptr_eq(l, &labels) => *found,
                _ => {
                    let found = idx.id_of(&labels);
                    last = Some((labels.clone(), found));
                    found
                }
            };
            let key = match found {
                Some(id) => Key::Id(id),
                None => Key::New(labels),
            };
            out.push((key, t, v));
        }
        out
    }
}

/// How many lookups a [`SeriesLookup`] makes under one hold of the index's
/// read lock: enough to amortise the lock's atomic operations (which two
/// cores contend for), few enough that the writer, which needs the write
/// lock to create series, waits at most a few microseconds.
const LOOKUPS_PER_LOCK: u32 = 256;

/// Finds existing series by borrowed label pairs for one request
/// (Prometheus's `GetRef`), without allocating: the remote-write receiver
/// resolves each series of a request through it. The index's read lock is
/// held across at most [`LOOKUPS_PER_LOCK`] lookups, and released by
/// [`SeriesLookup::release`] (call it before appending a new series, which
/// takes the lock itself).
pub struct SeriesLookup<'a> {
    tsdb: &'a Tsdb,
    guard: Option<std::sync::RwLockReadGuard<'a, super::index::Index>>,
    uses: u32,
}

impl<'a> SeriesLookup<'a> {
    /// The ref of the series with exactly these (name, value) pairs, sorted
    /// by name; `None` if storage does not have it yet.
    pub fn get_ref(&mut self, pairs: &[(&str, &str)]) -> Option<SeriesRef> {
        if self.uses >= LOOKUPS_PER_LOCK {
            self.release();
        }
        self.uses += 1;
        let tsdb = self.tsdb;
        let idx = self.guard.get_or_insert_with(|| tsdb.read_index());
        idx.id_of_pairs(pairs).map(SeriesRef)
    }

    /// Lets go of the index lock until the next lookup.
    pub fn release(&mut self) {
        self.guard = None;
        self.uses = 0;
    }
}

impl Tsdb {
    /// A lookup of existing series for one request.
    pub fn series_lookup(&self) -> SeriesLookup<'_> {
        SeriesLookup {
            tsdb: self,
            guard: None,
            uses: 0,
        }
    }
}

/// Collects samples to write in one commit (Prometheus's
/// `storage.Appender`). Not shared between tasks.
pub struct Appender {
    tsdb: Tsdb,
    samples: Vec<(Key, i64, f64)>,
    seq: Option<(AgentKey, u64)>,
    /// The labels of the last `append` and what the index said of them.
    last: Option<(Arc<Labels>, Option<i64>)>,
}

/// What a commit did, with the refs of the series it wrote that were
/// appended without one.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Applied, or skipped as a batch already applied.
    pub outcome: CommitOutcome,
    refs: HashMap<Arc<Labels>, SeriesRef>,
}

impl Committed {
    /// The ref of a series for which [`Appender::append`] returned `None`,
    /// now that the commit wrote it (created it, or found it created by a
    /// concurrent commit). `None` for other series, and when nothing was
    /// written (`AlreadyApplied`).
    pub fn series_ref(&self, labels: &Labels) -> Option<SeriesRef> {
        self.refs.get(labels).copied()
    }
}

impl Appender {
    /// Adds a sample. `labels` must be sorted by name and include
    /// `__name__`. Returns the series' ref when the series exists (cache it
    /// and add later samples with [`Appender::append_ref`]); `None` for a
    /// series the commit will create, whose ref
    /// [`Committed::series_ref`] gives after the commit.
    pub fn append(&mut self, labels: Arc<Labels>, t: i64, v: f64) -> Option<SeriesRef> {
        let id = match &self.last {
            Some((l, id)) if Arc::ptr_eq(l, &labels) => *id,
            _ => {
                let id = self.tsdb.read_index().id_of(&labels);
                self.last = Some((labels.clone(), id));
                id
            }
        };
        match id {
            Some(id) => {
                self.samples.push((Key::Id(id), t, v));
                Some(SeriesRef(id))
            }
            None => {
                self.samples.push((Key::New(labels), t, v));
                None
            }
        }
    }

    /// Adds a sample of a series known by its ref (no label lookup).
    pub fn append_ref(&mut self, r: SeriesRef, t: i64, v: f64) {
        self.samples.push((Key::Id(r.0), t, v));
    }

    /// The ref of an existing series given as borrowed (name, value) pairs
    /// sorted by name (Prometheus's `GetRef`): no allocation.
    pub fn get_ref(&self, pairs: &[(&str, &str)]) -> Option<SeriesRef> {
        self.tsdb.read_index().id_of_pairs(pairs).map(SeriesRef)
    }

    /// Records that this commit applies batch `seq` of `key`: if it was
    /// already applied, the commit writes nothing and says so.
    pub fn set_applied_seq(&mut self, key: AgentKey, seq: u64) {
        self.seq = Some((key, seq));
    }

    /// Number of samples pending.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Writes everything durably (in a group commit with other appenders).
    pub async fn commit(self) -> Result<Committed, TsdbError> {
        let Appender { tsdb, samples, seq, .. } = self;
        let t2 = tsdb.clone();
        // Series created since they were appended are resolved in the
        // blocking task, in parallel with other committers, so the single
        // writer thread only creates new series.
        let (outcome, refs) = tsdb
            .ask_writer(move |reply| {
                let samples = t2.resolve(samples);
                Msg::Write(WriteReq { samples, seq, reply })
            })
            .await?;
        let refs = refs.into_iter().map(|(l, id)| (l, SeriesRef(id))).collect();
        Ok(Committed { outcome, refs })
    }

    /// Drops everything pending.
    pub fn rollback(self) {}
}
