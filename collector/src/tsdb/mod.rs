//! Time-series storage on SQLite.
//!
//! The rest of the collector reads and writes only through the seams this
//! module exports: an [`Appender`] (batched, ends with `commit` or
//! `rollback`) and a [`Querier`] (scoped to `[mint, maxt]`, `select` by
//! label matchers). This first engine stores one row per sample (see
//! `sqlite.rs` for the schema); the compressed-chunk engine of DESIGN.md
//! replaces it behind the same seams.
//!
//! Writes go to one writer thread that owns the write connection and commits
//! many appenders in one transaction (group commit). A commit returns only
//! after SQLite's commit returned with `synchronous=FULL`, so what is
//! acknowledged is durable. An appender may carry an agent's applied batch
//! seq; it is written in the same transaction as the samples, and an
//! appender whose seq was already applied is skipped (exactly-once effect).

mod index;
mod sqlite;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

pub use index::Index;

/// A label set sorted by name, including `__name__`.
pub type Labels = Vec<(String, String)>;

/// Errors of the storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TsdbError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be used.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by an incompatible version.
    #[error("incompatible database: {0}")]
    Schema(String),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The writer thread is gone (shutting down).
    #[error("storage is shut down")]
    Closed,
    /// A regex matcher does not compile.
    #[error("invalid regular expression {0:?}: {1}")]
    BadRegex(String, String),
}

/// How a label matcher compares.
#[derive(Debug, Clone)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    Re(regex::Regex),
    /// `!~` (fully anchored)
    NotRe(regex::Regex),
}

/// A label matcher. A missing label matches as the empty string, as in
/// Prometheus.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value or regex source.
    pub value: String,
}

impl Matcher {
    /// `name = value`.
    pub fn equal(name: &str, value: &str) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
        }
    }

    /// A regex matcher, anchored at both ends like Prometheus's
    /// (`^(?s:re)$`). `negate` makes it `!~`.
    pub fn regex(name: &str, re: &str, negate: bool) -> Result<Self, TsdbError> {
        let compiled = regex::Regex::new(&format!("^(?s:{re})$")).map_err(|e| TsdbError::BadRegex(re.into(), e.to_string()))?;
        Ok(Matcher {
            name: name.into(),
            op: if negate { MatchOp::NotRe(compiled) } else { MatchOp::Re(compiled) },
            value: re.into(),
        })
    }

    /// Whether a label set matches.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels
            .binary_search_by(|(k, _)| k.as_str().cmp(&self.name))
            .map(|i| labels[i].1.as_str())
            .unwrap_or("");
        match &self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Re(r) => r.is_match(v),
            MatchOp::NotRe(r) => !r.is_match(v),
        }
    }
}

/// A series with its samples in a time range.
#[derive(Debug, Clone)]
pub struct Series {
    /// The labels.
    pub labels: Arc<Labels>,
    /// (timestamp ms, value), ascending by time.
    pub samples: Vec<(i64, f64)>,
}

/// Identity of an agent's delivery stream, for exactly-once application.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentKey {
    /// The authenticated commons.
    pub commons: String,
    /// The agent's name.
    pub agent: String,
    /// The agent's spool epoch.
    pub epoch: u64,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The samples are durably stored.
    Applied,
    /// The appender's batch seq had already been applied: nothing written.
    AlreadyApplied,
}

/// Storage metrics (`csoc_collector_tsdb_*`).
#[derive(Clone)]
struct TsdbMetrics {
    samples_appended: Counter,
    series_created: Counter,
    series: Gauge,
    commits: Counter,
    commit_batches: Histogram,
    commit_seconds: Histogram,
    duplicate_batches: Counter,
}

impl TsdbMetrics {
    fn new(reg: &mut Registry) -> Self {
        let m = TsdbMetrics {
            samples_appended: Counter::default(),
            series_created: Counter::default(),
            series: Gauge::default(),
            commits: Counter::default(),
            commit_batches: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            commit_seconds: Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            duplicate_batches: Counter::default(),
        };
        let r = reg.sub_registry_with_prefix("tsdb");
        r.register("samples_appended", "Samples durably written", m.samples_appended.clone());
        r.register("series_created", "Series created", m.series_created.clone());
        r.register("series", "Series in the index", m.series.clone());
        r.register("commits", "SQLite transactions committed (group commits)", m.commits.clone());
        r.register("commit_appenders", "Appenders committed per transaction", m.commit_batches.clone());
        r.register_with_unit(
            "commit_duration",
            "Time of one group commit",
            prometheus_client::registry::Unit::Seconds,
            m.commit_seconds.clone(),
        );
        r.register(
            "duplicate_batches",
            "Agent batches skipped because their seq was already applied",
            m.duplicate_batches.clone(),
        );
        m
    }
}

struct WriteReq {
    samples: Vec<(Arc<Labels>, i64, f64)>,
    seq: Option<(AgentKey, u64)>,
    reply: oneshot::Sender<Result<CommitOutcome, String>>,
}

struct Shared {
    path: PathBuf,
    index: RwLock<Index>,
    readers: Mutex<Vec<Connection>>,
    metrics: TsdbMetrics,
}

/// The storage. Cheap to clone.
#[derive(Clone)]
pub struct Tsdb {
    shared: Arc<Shared>,
    writer: std::sync::mpsc::SyncSender<WriteReq>,
    writer_thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Tsdb {
    /// Opens (or creates) `<dir>/csoc.db`, loads the label index and starts
    /// the writer thread.
    pub fn open(dir: &Path, registry: &mut Registry) -> Result<Self, TsdbError> {
        std::fs::create_dir_all(dir).map_err(|source| TsdbError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("csoc.db");
        let started = Instant::now();
        let conn = sqlite::open_writer(&path)?;
        let mut index = Index::default();
        {
            let mut stmt = conn.prepare(sqlite::SELECT_ALL_SERIES)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let text: String = row.get(1)?;
                let labels = decode_labels(&text).ok_or_else(|| TsdbError::Corrupt(format!("series {id}: labels {text:?}")))?;
                index.insert(id, Arc::new(labels));
            }
        }
        let metrics = TsdbMetrics::new(registry);
        metrics.series.set(index.len() as i64);
        tracing::info!(path = %path.display(), series = index.len(), elapsed = ?started.elapsed(), "storage opened");
        let shared = Arc::new(Shared {
            path,
            index: RwLock::new(index),
            readers: Mutex::new(Vec::new()),
            metrics,
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<WriteReq>(1024);
        let s2 = shared.clone();
        let handle = std::thread::Builder::new()
            .name("tsdb-writer".into())
            .spawn(move || writer_loop(conn, rx, s2))
            .map_err(|source| TsdbError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Tsdb {
            shared,
            writer: tx,
            writer_thread: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// A new appender.
    pub fn appender(&self) -> Appender {
        Appender {
            tsdb: self.clone(),
            samples: Vec::new(),
            seq: None,
        }
    }

    /// A querier over `[mint, maxt]` (ms, inclusive).
    pub fn querier(&self, mint: i64, maxt: i64) -> Querier {
        Querier {
            tsdb: self.clone(),
            mint,
            maxt,
        }
    }

    /// The last batch seq applied for an agent identity (0 when none).
    pub fn applied_seq(&self, key: &AgentKey) -> Result<u64, TsdbError> {
        let conn = self.reader()?;
        let seq: Option<i64> = conn
            .query_row(sqlite::SELECT_AGENT_SEQ, params![key.commons, key.agent, key.epoch as i64], |r| {
                r.get(0)
            })
            .ok();
        self.put_reader(conn);
        Ok(seq.unwrap_or(0) as u64)
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.read_index().len()
    }

    /// All label names.
    pub fn label_names(&self) -> Vec<String> {
        self.read_index().label_names()
    }

    /// All values of a label.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.read_index().label_values(name)
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(&self) {
        let handle = self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Dropping our sender alone does not stop the thread while clones
        // exist; a request with no samples and a closed reply is the stop
        // signal.
        let (reply, _) = oneshot::channel();
        let _ = self.writer.send(WriteReq {
            samples: Vec::new(),
            seq: Some((
                AgentKey {
                    commons: String::new(),
                    agent: STOP.into(),
                    epoch: 0,
                },
                0,
            )),
            reply,
        });
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.shared.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> Result<Connection, TsdbError> {
        if let Some(c) = self.shared.readers.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        sqlite::open_reader(&self.shared.path)
    }

    fn put_reader(&self, c: Connection) {
        let mut pool = self.shared.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(c);
        }
    }
}

const STOP: &str = "\0stop";

/// Collects samples to write in one commit. Not shared between tasks.
pub struct Appender {
    tsdb: Tsdb,
    samples: Vec<(Arc<Labels>, i64, f64)>,
    seq: Option<(AgentKey, u64)>,
}

impl Appender {
    /// Adds a sample. `labels` must be sorted by name and include `__name__`.
    pub fn append(&mut self, labels: Arc<Labels>, t: i64, v: f64) {
        self.samples.push((labels, t, v));
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
    pub async fn commit(self) -> Result<CommitOutcome, TsdbError> {
        let (reply, rx) = oneshot::channel();
        let req = WriteReq {
            samples: self.samples,
            seq: self.seq,
            reply,
        };
        let writer = self.tsdb.writer.clone();
        // The channel is bounded: a full queue pushes back on ingest.
        tokio::task::spawn_blocking(move || writer.send(req))
            .await
            .map_err(|_| TsdbError::Closed)?
            .map_err(|_| TsdbError::Closed)?;
        match rx.await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(TsdbError::Corrupt(e)),
            Err(_) => Err(TsdbError::Closed),
        }
    }

    /// Drops everything pending.
    pub fn rollback(self) {}
}

/// Reads series in a time range.
pub struct Querier {
    tsdb: Tsdb,
    mint: i64,
    maxt: i64,
}

impl Querier {
    /// Series matching every matcher, with their samples in the querier's
    /// range, sorted by labels. Series without samples in range are omitted.
    pub fn select(&self, matchers: &[Matcher]) -> Result<Vec<Series>, TsdbError> {
        let ids: Vec<(i64, Arc<Labels>)> = {
            let idx = self.tsdb.read_index();
            idx.select(matchers)
                .into_iter()
                .filter_map(|id| idx.labels(id).map(|l| (id, l.clone())))
                .collect()
        };
        let conn = self.tsdb.reader()?;
        let mut out = Vec::with_capacity(ids.len());
        {
            let mut stmt = conn.prepare_cached(sqlite::SELECT_SAMPLES)?;
            for (id, labels) in ids {
                let samples: Vec<(i64, f64)> = stmt
                    .query_map(params![id, self.mint, self.maxt], |r| {
                        let t: i64 = r.get(0)?;
                        let bits: i64 = r.get(1)?;
                        Ok((t, f64::from_bits(bits as u64)))
                    })?
                    .collect::<Result<_, _>>()?;
                if !samples.is_empty() {
                    out.push(Series { labels, samples });
                }
            }
        }
        self.tsdb.put_reader(conn);
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Labels of the series matching every matcher (no samples read).
    pub fn select_labels(&self, matchers: &[Matcher]) -> Vec<Arc<Labels>> {
        let idx = self.tsdb.read_index();
        let mut v: Vec<Arc<Labels>> = idx.select(matchers).into_iter().filter_map(|id| idx.labels(id).cloned()).collect();
        v.sort();
        v
    }
}

fn encode_labels(l: &Labels) -> String {
    serde_json::to_string(l).unwrap_or_default()
}

fn decode_labels(s: &str) -> Option<Labels> {
    serde_json::from_str(s).ok()
}

fn writer_loop(mut conn: Connection, rx: std::sync::mpsc::Receiver<WriteReq>, shared: Arc<Shared>) {
    let mut applied: HashMap<AgentKey, u64> = HashMap::new();
    let mut ids: HashMap<Arc<Labels>, i64> = HashMap::new();
    loop {
        let Ok(first) = rx.recv() else { return };
        let mut group = vec![first];
        while group.len() < 256 {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let stop = group.iter().any(|r| r.seq.as_ref().is_some_and(|(k, _)| k.agent == STOP));
        group.retain(|r| r.seq.as_ref().is_none_or(|(k, _)| k.agent != STOP));
        if !group.is_empty() {
            let started = Instant::now();
            let n = group.len();
            let res = commit_group(&mut conn, &mut group, &mut applied, &mut ids, &shared);
            let m = &shared.metrics;
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            m.commit_batches.observe(n as f64);
            match res {
                Ok((outcomes, new_series)) => {
                    m.commits.inc();
                    if !new_series.is_empty() {
                        let mut idx = shared.index.write().unwrap_or_else(|p| p.into_inner());
                        for (id, l) in new_series {
                            idx.insert(id, l);
                        }
                        m.series.set(idx.len() as i64);
                    }
                    for (req, o) in group.into_iter().zip(outcomes) {
                        if o == CommitOutcome::Applied {
                            m.samples_appended.inc_by(req.samples.len() as u64);
                        } else {
                            m.duplicate_batches.inc();
                        }
                        let _ = req.reply.send(Ok(o));
                    }
                }
                Err(e) => {
                    // Nothing of the group was applied: forget cached state
                    // that the rolled-back transaction would have created.
                    ids.clear();
                    applied.clear();
                    tracing::error!(error = %e, appenders = n, "storage commit failed; nothing of these batches was applied");
                    for req in group {
                        let _ = req.reply.send(Err(e.to_string()));
                    }
                }
            }
        }
        if stop {
            return;
        }
    }
}

type GroupResult = (Vec<CommitOutcome>, Vec<(i64, Arc<Labels>)>);

fn commit_group(
    conn: &mut Connection,
    group: &mut [WriteReq],
    applied: &mut HashMap<AgentKey, u64>,
    ids: &mut HashMap<Arc<Labels>, i64>,
    shared: &Shared,
) -> Result<GroupResult, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut new_series = Vec::new();
    let mut pending_seq: HashMap<AgentKey, u64> = HashMap::new();
    {
        let mut ins_series = tx.prepare_cached(sqlite::INSERT_SERIES)?;
        let mut ins_sample = tx.prepare_cached(sqlite::UPSERT_SAMPLE)?;
        let mut sel_seq = tx.prepare_cached(sqlite::SELECT_AGENT_SEQ)?;
        let mut upd_seq = tx.prepare_cached(sqlite::UPSERT_AGENT_SEQ)?;
        for req in group.iter() {
            if let Some((key, seq)) = &req.seq {
                let last = match pending_seq.get(key).or_else(|| applied.get(key)) {
                    Some(s) => *s,
                    None => sel_seq
                        .query_row(params![key.commons, key.agent, key.epoch as i64], |r| r.get::<_, i64>(0))
                        .map(|s| s as u64)
                        .or_else(|e| {
                            if matches!(e, rusqlite::Error::QueryReturnedNoRows) {
                                Ok(0)
                            } else {
                                Err(e)
                            }
                        })?,
                };
                if *seq <= last {
                    pending_seq.insert(key.clone(), last);
                    outcomes.push(CommitOutcome::AlreadyApplied);
                    continue;
                }
                upd_seq.execute(params![key.commons, key.agent, key.epoch as i64, *seq as i64, now_ms()])?;
                pending_seq.insert(key.clone(), *seq);
            }
            for (labels, t, v) in &req.samples {
                let id = match ids.get(labels) {
                    Some(id) => *id,
                    None => {
                        let known = shared.index.read().unwrap_or_else(|p| p.into_inner()).id_of(labels);
                        let id = match known {
                            Some(id) => id,
                            None => {
                                ins_series.execute(params![encode_labels(labels)])?;
                                let id = tx.last_insert_rowid();
                                new_series.push((id, labels.clone()));
                                shared.metrics.series_created.inc();
                                id
                            }
                        };
                        ids.insert(labels.clone(), id);
                        id
                    }
                };
                ins_sample.execute(params![id, t, v.to_bits() as i64])?;
            }
            outcomes.push(CommitOutcome::Applied);
        }
    }
    tx.commit()?;
    applied.extend(pending_seq);
    Ok((outcomes, new_series))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str, extra: &[(&str, &str)]) -> Arc<Labels> {
        let mut l: Labels = vec![("__name__".into(), name.into())];
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l.sort();
        Arc::new(l)
    }

    #[tokio::test]
    async fn append_select_reopen() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let db = Tsdb::open(d.path(), &mut Registry::default()).expect("open");
            let mut a = db.appender();
            a.append(labels("up", &[("job", "a")]), 1000, 1.0);
            a.append(labels("up", &[("job", "b")]), 1000, 0.0);
            a.append(labels("up", &[("job", "a")]), 2000, 1.0);
            a.append(labels("other", &[]), 1000, 5.0);
            a.append(labels("stale", &[]), 1000, f64::from_bits(csoc_proto::STALE_NAN_BITS));
            assert_eq!(a.commit().await.expect("commit"), CommitOutcome::Applied);
            // Rewrite of the same (series, ts): last write wins.
            let mut a = db.appender();
            a.append(labels("up", &[("job", "a")]), 2000, 7.0);
            a.commit().await.expect("commit");
            db.close();
        }
        let db = Tsdb::open(d.path(), &mut Registry::default()).expect("reopen");
        let q = db.querier(0, 10_000);
        let s = q.select(&[Matcher::equal("__name__", "up")]).expect("select");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].samples, vec![(1000, 1.0), (2000, 7.0)]);
        let s = q
            .select(&[Matcher::equal("__name__", "up"), Matcher::regex("job", "b|c", false).expect("re")])
            .expect("select");
        assert_eq!(s.len(), 1);
        let s = q
            .select(&[Matcher::regex("__name__", ".+", false).expect("re"), Matcher::equal("job", "")])
            .expect("select");
        assert_eq!(s.len(), 2, "missing label matches the empty string");
        let s = q.select(&[Matcher::equal("__name__", "stale")]).expect("select");
        assert!(csoc_proto::is_stale_nan(s[0].samples[0].1), "staleness marker bits survive SQLite");
        assert_eq!(
            db.querier(1500, 10_000)
                .select(&[Matcher::equal("job", "b")])
                .expect("select")
                .len(),
            0
        );
        assert_eq!(db.label_values("job"), vec!["a", "b"]);
    }

    #[tokio::test]
    async fn agent_seq_is_applied_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = Tsdb::open(d.path(), &mut Registry::default()).expect("open");
        let key = AgentKey {
            commons: "c".into(),
            agent: "a".into(),
            epoch: 7,
        };
        for (seq, want) in [
            (1, CommitOutcome::Applied),
            (1, CommitOutcome::AlreadyApplied),
            (2, CommitOutcome::Applied),
        ] {
            let mut a = db.appender();
            a.append(labels("m", &[]), seq as i64, 1.0);
            a.set_applied_seq(key.clone(), seq);
            assert_eq!(a.commit().await.expect("commit"), want, "seq {seq}");
        }
        assert_eq!(db.applied_seq(&key).expect("seq"), 2);
        let other = AgentKey { epoch: 8, ..key.clone() };
        assert_eq!(db.applied_seq(&other).expect("seq"), 0);
    }
}
