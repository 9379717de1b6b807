//! Time-series storage on SQLite, after Prometheus's TSDB.
//!
//! The rest of the collector reads and writes only through the seams this
//! module exports (`storage.rs`, after Prometheus's
//! `storage/interface.go`): an [`Appender`] (batched, ends with `commit` or
//! `rollback`; `append` returns the series' [`SeriesRef`] to cache), a
//! [`Queryable`] handing out [`Querier`]s (scoped to `[mint, maxt]`,
//! `select` by label [`Matcher`]s), [`TsdbAdmin`] for statistics and the
//! admin flush, and a [`WalReader`] for remote write. The PromQL engine,
//! the rules and the HTTP API see the traits only.
//!
//! Inside: an in-memory head (`head.rs`: an open Gorilla chunk and an
//! out-of-order buffer per series, plus closed chunks waiting to be
//! persisted), an inverted label index (`index.rs`), a write-ahead log of
//! records (`record.rs`) stored as rows of the same SQLite database and
//! committed before any acknowledgement, with group commit (`writer.rs`),
//! closed chunks compressed (`chunkenc/`) and stored as BLOB rows keyed by
//! series and time, merged per 24 h window into large blocks by compaction
//! (`compact.rs`), a series table (`sqlite.rs`), WAL replay at
//! start with progress logged, and retention by age and size
//! (`retention.rs`). One SQLite file in WAL journal mode.
//!
//! Files, by role (as Prometheus's `head.go`, `head_append.go`,
//! `head_read.go`):
//!
//! - `mod.rs`: the types ([`Tsdb`], options, errors, series, stats) and
//!   this overview;
//! - `storage.rs`: the contract ([`Queryable`], [`Querier`], [`TsdbAdmin`]);
//! - `db.rs`: open ([`Tsdb::open`], or [`Tsdb::prepare`] then
//!   [`Opening::open`]), flush, retention, close, the applied-seq ledger,
//!   statistics, the read-connection pool;
//! - `replay.rs`: WAL replay and its [`ReplayProgress`];
//! - `appender.rs`: [`Appender`] and [`Committed`]; `writer.rs`: the writer
//!   thread behind it;
//! - `querier.rs`: the read path, head and persisted chunks merged;
//! - `matcher.rs`: [`Matcher`] and [`MatchOp`];
//! - `metrics.rs`: the `csoc_collector_tsdb_*` metrics;
//! - `snapshot.rs`: consistent copies under `snapshots/` (`VACUUM INTO`);
//! - `wal_tail.rs`: the WAL as remote write reads it ([`WalReader`],
//!   [`WalHold`]);
//! - `head.rs`, `index.rs`, `record.rs`, `chunkenc/`, `chunk_cache.rs`,
//!   `compact.rs`, `retention.rs`, `sqlite.rs`: the internals above.
//!
//! Semantics: out-of-order and late samples are accepted (also for time
//! ranges whose chunks are already persisted); rewriting a (series,
//! timestamp) is idempotent, the last write wins; staleness markers are
//! stored bit-exactly.

mod appender;
mod blockdir;
mod chunk_cache;
// Storage writes and reads blocks; the XOR chunk's own serialized form and
// iterator (Prometheus's chunk API) are exercised by the chunk tests only.
#[cfg_attr(not(test), allow(dead_code))]
mod chunkenc;
mod compact;
mod db;
mod head;
mod index;
mod matcher;
mod metrics;
mod pack;
mod querier;
mod record;
mod replay;
mod retention;
mod snapshot;
mod sqlite;
mod storage;
mod symbols;
mod wal_tail;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::Connection;

use head::Head;
use index::Index;
use metrics::TsdbMetrics;
use wal_tail::WalRows;
use writer::Msg;

pub use appender::{Appender, Committed, SeriesLookup};
pub use csoc_common::labels::Labels;
pub use db::Opening;
pub use index::IndexStats;
pub use matcher::{MatchOp, Matcher};
pub use replay::{ReplayPhase, ReplayProgress, ReplaySnapshot};
pub use retention::Retention;
pub use snapshot::{SNAPSHOTS_DIR, SnapshotStats, snapshot_name};
pub use storage::{Appendable, BoxFuture, LazySelection, Querier, Queryable, SeriesReader, TsdbAdmin};
pub use wal_tail::{WalHold, WalReader, WalRecord};

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
    /// A write failed (the transaction was rolled back).
    #[error("write failed: {0}")]
    Write(String),
    /// A regex matcher does not compile.
    #[error("invalid regular expression {0:?}: {1}")]
    BadRegex(String, String),
    /// Opening was cancelled during WAL replay (shutting down).
    #[error("WAL replay interrupted by shutdown")]
    Interrupted,
}

/// A series with its samples in a time range.
#[derive(Debug, Clone)]
pub struct Series {
    /// The labels.
    pub labels: Arc<Labels>,
    /// (timestamp ms, value), ascending by time.
    pub samples: Vec<(i64, f64)>,
}

/// A series' id in this storage, for appenders that cache it (as
/// Prometheus's `SeriesRef`): valid for the life of the process and across
/// restarts, since series are never renumbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesRef(i64);

/// What has been applied for one agent identity (`Tsdb::agent_ledger`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The identity.
    pub key: AgentKey,
    /// The last batch seq applied.
    pub seq: u64,
    /// Samples applied, ever, committed in the same transactions as the
    /// samples themselves: a batch applied twice would count twice.
    pub samples: u64,
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

/// Storage settings.
#[derive(Debug, Clone)]
pub struct TsdbOptions {
    /// Retention by age and size.
    pub retention: Retention,
    /// Bytes of decoded chunks kept for repeated queries (0: none).
    pub chunk_cache_bytes: usize,
    /// Consumers of the WAL (remote write): records they have not handled
    /// are kept (see `wal_tail`).
    pub wal_holds: WalHolds,
}

/// The WAL's consumers, a list that remote-write reloads change while the
/// storage runs.
#[derive(Debug, Clone, Default)]
pub struct WalHolds(Arc<std::sync::RwLock<Vec<Arc<WalHold>>>>);

impl WalHolds {
    /// The holds now.
    pub fn snapshot(&self) -> Vec<Arc<WalHold>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds a hold (positioned: it keeps what is above its position).
    pub fn add(&self, h: Arc<WalHold>) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).push(h);
    }

    /// Removes a hold (its consumer stopped).
    pub fn remove(&self, h: &Arc<WalHold>) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).retain(|x| !Arc::ptr_eq(x, h));
    }
}

impl From<Vec<Arc<WalHold>>> for WalHolds {
    fn from(v: Vec<Arc<WalHold>>) -> Self {
        WalHolds(Arc::new(std::sync::RwLock::new(v)))
    }
}

/// The default decoded-chunk cache: 256 MiB.
pub const DEFAULT_CHUNK_CACHE_BYTES: usize = 256 << 20;

impl Default for TsdbOptions {
    fn default() -> Self {
        TsdbOptions {
            retention: Retention::default(),
            chunk_cache_bytes: DEFAULT_CHUNK_CACHE_BYTES,
            wal_holds: WalHolds::default(),
        }
    }
}

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FlushStats {
    /// Series whose open data was closed.
    pub series_closed: usize,
    /// Chunks written.
    pub chunks_written: usize,
    /// Samples in them.
    pub samples_written: usize,
    /// WAL records no longer needed, removed.
    pub wal_records_removed: usize,
    /// (series, window) pairs compacted into large blocks.
    pub windows_compacted: usize,
    /// Time taken.
    pub seconds: f64,
}

/// Chunks and time bounds of everything stored (memory and disk), for
/// `/api/v1/status/tsdb`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Chunks in memory and in the database.
    pub chunks: u64,
    /// Lowest sample timestamp (chunk granularity), if any data.
    pub min_time: Option<i64>,
    /// Highest sample timestamp (chunk granularity), if any data.
    pub max_time: Option<i64>,
}

struct Shared {
    path: PathBuf,
    index: RwLock<Index>,
    head: RwLock<Head>,
    readers: Mutex<Vec<Connection>>,
    chunk_cache: chunk_cache::ChunkCache,
    metrics: TsdbMetrics,
    /// Samples and bytes of each WAL row.
    wal_rows: Mutex<WalRows>,
    /// The last WAL id committed, for consumers waiting for more.
    wal_last: tokio::sync::watch::Sender<u64>,
}

/// The storage. Cheap to clone.
#[derive(Clone)]
pub struct Tsdb {
    shared: Arc<Shared>,
    writer: std::sync::mpsc::SyncSender<Msg>,
    writer_thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// A series row's labels as schema 2 wrote them (JSON text); rows are
/// written as symbol ids since schema 3 (symbols.rs).
#[cfg(test)]
fn encode_labels(l: &Labels) -> String {
    serde_json::to_string(l).unwrap_or_default()
}

/// Reads a series row's labels written as JSON text (before schema 3).
fn decode_labels(s: &str) -> Option<Labels> {
    serde_json::from_str(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    use csoc_common::time::now_ms;
    use prometheus_client::registry::Registry;

    fn labels(name: &str, extra: &[(&str, &str)]) -> Arc<Labels> {
        let mut l: Labels = vec![("__name__".into(), name.into())];
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l.sort();
        Arc::new(l)
    }

    fn open(d: &Path) -> Tsdb {
        Tsdb::open(d, &TsdbOptions::default(), &mut Registry::default()).expect("open")
    }

    async fn write(db: &Tsdb, samples: &[(&Arc<Labels>, i64, f64)]) {
        let mut a = db.appender();
        for (l, t, v) in samples {
            a.append((*l).clone(), *t, *v);
        }
        assert_eq!(a.commit().await.expect("commit").outcome, CommitOutcome::Applied);
    }

    fn read(db: &Tsdb, m: &[Matcher]) -> Vec<Series> {
        db.querier(i64::MIN, i64::MAX).select(m).expect("select")
    }

    #[tokio::test]
    async fn append_select_reopen_with_replay_and_flush() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = labels("up", &[("job", "a")]);
        let b = labels("up", &[("job", "b")]);
        let stale = labels("stale", &[]);
        {
            let db = open(d.path());
            // More than one chunk's worth for `a`, so some of it is persisted.
            let mut s: Vec<(&Arc<Labels>, i64, f64)> = (0..300).map(|i| (&a, i * 15_000, i as f64)).collect();
            s.push((&b, 0, 0.0));
            s.push((&stale, 0, f64::from_bits(csoc_proto::STALE_NAN_BITS)));
            write(&db, &s).await;
            write(&db, &[(&a, 15_000, 7.0)]).await; // rewrite of a persisted sample
            db.close(); // no flush: the open chunks live only in the WAL
        }
        let db = open(d.path());
        let s = read(&db, &[Matcher::equal("__name__", "up")]);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].samples.len(), 300);
        assert_eq!(s[0].samples[1], (15_000, 7.0), "last write wins across persisted chunk and WAL");
        assert_eq!(s[0].samples[299], (299 * 15_000, 299.0));
        let st = read(&db, &[Matcher::equal("__name__", "stale")]);
        assert!(csoc_proto::is_stale_nan(st[0].samples[0].1), "staleness marker bits survive");
        // Flush: everything persisted, the WAL emptied; still all there after reopen.
        let f = db.flush().await.expect("flush");
        assert!(f.chunks_written >= 2, "{f:?}");
        assert!(f.windows_compacted >= 2, "both series compacted: {f:?}");
        db.close();
        let db = open(d.path());
        let conn = sqlite::open_reader(&d.path().join("csoc.db")).expect("reader");
        let wal: i64 = conn.query_row("SELECT count(*) FROM wal", [], |r| r.get(0)).expect("count");
        assert_eq!(wal, 0, "flush leaves nothing to replay");
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).expect("freelist");
        assert_eq!(free, 0, "flush gives free pages back to the file system");
        let s = read(&db, &[Matcher::equal("job", "a")]);
        assert_eq!(s[0].samples.len(), 300);
        assert_eq!(s[0].samples[1], (15_000, 7.0));
        let s = db
            .querier(15_000, 30_000)
            .select(&[Matcher::regex("job", "a|b", false).expect("re")])
            .expect("select");
        assert_eq!(s.len(), 1, "b has nothing in range");
        assert_eq!(s[0].samples, vec![(15_000, 7.0), (30_000, 2.0)]);
    }

    #[tokio::test]
    async fn stats_and_series_in_range_cover_memory_and_disk() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = open(d.path());
        let a = labels("m", &[("k", "a")]);
        let b = labels("m", &[("k", "b")]);
        write(&db, &[(&a, 1_000, 1.0), (&a, 2_000, 1.0)]).await;
        db.flush().await.expect("flush"); // a is on disk only
        write(&db, &[(&b, 50_000, 1.0)]).await; // b in memory only
        let st = db.storage_stats().expect("stats");
        assert_eq!((st.min_time, st.max_time), (Some(1_000), Some(50_000)));
        assert!(st.chunks >= 2, "{st:?}");
        assert_eq!(db.index_stats(10).num_series, 2);
        let m = [Matcher::equal("__name__", "m")];
        let names = |v: Vec<Arc<Labels>>| v.iter().map(|l| l[1].1.clone()).collect::<Vec<_>>();
        assert_eq!(names(db.querier(0, 1_500).series(&m).expect("in range")), ["a"]);
        assert_eq!(names(db.querier(40_000, 60_000).series(&m).expect("in range")), ["b"]);
        assert_eq!(names(db.querier(i64::MIN, i64::MAX).series(&m).expect("all")), ["a", "b"]);
        assert!(db.querier(3_000, 4_000).series(&m).expect("none").is_empty());
    }

    #[tokio::test]
    async fn append_returns_known_refs_and_commit_the_new_ones() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = open(d.path());
        let a = labels("m", &[("k", "a")]);
        let mut app = db.appender();
        assert_eq!(app.append(a.clone(), 1, 1.0), None, "a new series has no ref yet");
        let c = app.commit().await.expect("commit");
        let r = c.series_ref(&a).expect("the commit created it");
        let mut app = db.appender();
        assert_eq!(app.append(a.clone(), 2, 2.0), Some(r));
        app.append_ref(r, 3, 3.0);
        let pairs: Vec<(&str, &str)> = a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(app.get_ref(&pairs), Some(r));
        let c = app.commit().await.expect("commit");
        assert_eq!(c.series_ref(&a), None, "appended with its ref");
        let got = read(&db, &[Matcher::equal("k", "a")]);
        assert_eq!(got[0].samples, vec![(1, 1.0), (2, 2.0), (3, 3.0)]);
    }

    #[tokio::test]
    async fn late_samples_for_persisted_chunks_are_kept() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = open(d.path());
        let a = labels("m", &[]);
        let s: Vec<(&Arc<Labels>, i64, f64)> = (0..500).map(|i| (&a, 1_000 + i * 1000, 1.0)).collect();
        write(&db, &s).await;
        db.flush().await.expect("flush");
        // Late: before everything, and in the middle of a persisted chunk.
        write(&db, &[(&a, 0, 5.0), (&a, 1_500, 6.0), (&a, 2_000, 9.0)]).await;
        let got = read(&db, &[Matcher::equal("__name__", "m")]);
        assert_eq!(got[0].samples.len(), 502);
        assert_eq!(&got[0].samples[..4], &[(0, 5.0), (1_000, 1.0), (1_500, 6.0), (2_000, 9.0)]);
        db.flush().await.expect("flush");
        let got = read(&db, &[Matcher::equal("__name__", "m")]);
        assert_eq!(&got[0].samples[..4], &[(0, 5.0), (1_000, 1.0), (1_500, 6.0), (2_000, 9.0)]);
    }

    #[tokio::test]
    async fn agent_seq_is_applied_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = open(d.path());
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
            assert_eq!(a.commit().await.expect("commit").outcome, want, "seq {seq}");
        }
        assert_eq!(db.applied_seq(&key).expect("seq"), 2);
        assert_eq!(db.applied_seq(&AgentKey { epoch: 8, ..key.clone() }).expect("seq"), 0);
        assert_eq!(read(&db, &[Matcher::equal("__name__", "m")])[0].samples.len(), 2);
        // The ledger counts what was applied, not what was re-sent.
        let ledger = db.agent_ledger().expect("ledger");
        assert_eq!(ledger.len(), 1);
        assert_eq!((ledger[0].seq, ledger[0].samples), (2, 2));
    }

    /// A data dir whose database holds one sample of `l` (at 1 ms, 1.0),
    /// closed again: the starting point of the upgrade tests.
    async fn closed_with_one_sample(l: &Arc<Labels>) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let db = open(d.path());
        write(&db, &[(l, 1, 1.0)]).await;
        db.close();
        d
    }

    #[tokio::test]
    async fn the_old_unread_postings_table_is_dropped_and_series_still_resolve() {
        let m = labels("m", &[("job", "a")]);
        let d = closed_with_one_sample(&m).await;
        {
            // As databases written before this version have it.
            let conn = sqlite::open_writer(&d.path().join("csoc.db")).expect("open");
            conn.execute_batch(
                "CREATE TABLE postings (name TEXT NOT NULL, value TEXT NOT NULL, series_id INTEGER NOT NULL, \
                 PRIMARY KEY (name, value, series_id)) WITHOUT ROWID; \
                 INSERT INTO postings VALUES ('job', 'a', 1);",
            )
            .expect("old table");
        }
        let db = open(d.path());
        let conn = sqlite::open_reader(&d.path().join("csoc.db")).expect("reader");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'postings'", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 0, "dropped at open");
        write(&db, &[(&m, 2, 2.0), (&labels("m", &[("job", "b")]), 2, 3.0)]).await;
        let got = read(&db, &[Matcher::equal("__name__", "m")]);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].samples,
            vec![(1, 1.0), (2, 2.0)],
            "the existing series, found by the in-memory index"
        );
    }

    #[tokio::test]
    async fn a_schema_2_database_is_upgraded_and_its_json_rows_still_read() {
        let old = labels("m", &[("job", "a")]);
        let d = closed_with_one_sample(&old).await;
        {
            // As schema 2 wrote it: JSON labels, no symbols table.
            let conn = sqlite::open_writer(&d.path().join("csoc.db")).expect("open");
            conn.execute_batch("DROP TABLE symbols; UPDATE meta SET value = '2' WHERE key = 'schema_version'")
                .expect("downgrade");
            conn.execute("UPDATE series SET labels = ?1", [encode_labels(&old)])
                .expect("json row");
        }
        let db = open(d.path());
        let new = labels("m", &[("job", "b")]);
        write(&db, &[(&old, 2, 2.0), (&new, 2, 3.0)]).await;
        db.close();
        let conn = sqlite::open_reader(&d.path().join("csoc.db")).expect("reader");
        let version: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, sqlite::SCHEMA_VERSION.to_string());
        let types: Vec<String> = conn
            .prepare("SELECT typeof(labels) FROM series ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(types, ["text", "blob"], "the old row stays JSON, the new one is symbol ids");
        let db = open(d.path());
        let got = read(&db, &[Matcher::equal("__name__", "m")]);
        assert_eq!(got.len(), 2);
        assert_eq!((&*got[0].labels, &got[0].samples), (&*old, &vec![(1, 1.0), (2, 2.0)]));
        assert_eq!((&*got[1].labels, &got[1].samples), (&*new, &vec![(2, 3.0)]));
    }

    /// Schema 3 listed compacted blocks as level-1 chunk rows that refer
    /// into packs: such rows are still read after the upgrade to schema 4,
    /// and merged into the directory when late samples come for their
    /// window.
    #[tokio::test]
    async fn a_schema_3_database_keeps_its_packed_chunk_rows_readable() {
        let d = tempfile::tempdir().expect("tempdir");
        let m = labels("m", &[]);
        let other = labels("other", &[]);
        {
            let db = open(d.path());
            write(&db, &[(&m, 1000, 1.0), (&m, 2000, 2.0), (&other, 1000, 5.0)]).await;
            db.flush().await.expect("flush");
            db.close();
        }
        {
            // As schema 3 wrote it: chunk rows, no directory.
            let mut conn = sqlite::open_writer(&d.path().join("csoc.db")).expect("open");
            let tx = conn.transaction().expect("tx");
            let rows: Vec<(i64, i64, Vec<u8>)> = tx
                .prepare("SELECT grp, window, entries FROM blockdir")
                .expect("prepare")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            assert!(!rows.is_empty(), "the flush compacted into the directory");
            for (grp, window, data) in rows {
                let mut entries = Vec::new();
                blockdir::decode(grp, window, &data, &mut entries).expect("decode");
                for e in entries {
                    let mut r = Vec::new();
                    e.at.encode(&mut r);
                    tx.execute(
                        sqlite::INSERT_CHUNK_PACKED,
                        rusqlite::params![e.series, e.mint, e.maxt, r, e.at.pack],
                    )
                    .expect("chunk row");
                }
            }
            tx.execute_batch("DELETE FROM blockdir; DELETE FROM pack_refs; UPDATE meta SET value = '3' WHERE key = 'schema_version'")
                .expect("downgrade");
            tx.commit().expect("commit");
        }
        let db = open(d.path());
        assert_eq!(
            read(&db, &[Matcher::equal("__name__", "m")])[0].samples,
            vec![(1000, 1.0), (2000, 2.0)]
        );
        // A late sample: the window is compacted anew, into the directory.
        write(&db, &[(&m, 1500, 1.5)]).await;
        db.flush().await.expect("flush");
        assert_eq!(
            read(&db, &[Matcher::equal("__name__", "m")])[0].samples,
            vec![(1000, 1.0), (1500, 1.5), (2000, 2.0)]
        );
        assert_eq!(read(&db, &[Matcher::equal("__name__", "other")])[0].samples, vec![(1000, 5.0)]);
        db.close();
        let conn = sqlite::open_reader(&d.path().join("csoc.db")).expect("reader");
        let version: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, "4");
        let legacy: i64 = conn
            .query_row("SELECT count(*) FROM chunks WHERE level = 1", [], |r| r.get(0))
            .expect("count");
        assert_eq!(legacy, 1, "the other series' row is left as it was");
        // Its pack is shared with m's old block: kept while the row needs it.
        assert_eq!(unused_packs(d.path()).1, 0);
        let db = open(d.path());
        assert_eq!(read(&db, &[Matcher::equal("__name__", "other")])[0].samples, vec![(1000, 5.0)]);
    }

    #[tokio::test]
    async fn torn_wal_tail_is_truncated_not_fatal() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let db = open(d.path());
            write(&db, &[(&labels("m", &[]), 1, 1.0)]).await;
            db.close();
        }
        {
            let conn = sqlite::open_writer(&d.path().join("csoc.db")).expect("open");
            conn.execute("INSERT INTO wal(data) VALUES (x'01ff')", []).expect("torn record");
        }
        let db = open(d.path());
        assert_eq!(read(&db, &[Matcher::equal("__name__", "m")])[0].samples, vec![(1, 1.0)]);
        let conn = sqlite::open_reader(&d.path().join("csoc.db")).expect("reader");
        let wal: i64 = conn.query_row("SELECT count(*) FROM wal", [], |r| r.get(0)).expect("count");
        assert_eq!(wal, 1, "the torn record was deleted, the good one kept");
    }

    #[tokio::test]
    async fn wal_holds_keep_unsent_records_and_ids_never_repeat() {
        let d = tempfile::tempdir().expect("tempdir");
        let m = labels("m", &[]);
        // No hold: a flush empties the WAL; the ids go on after a reopen.
        {
            let db = open(d.path());
            write(&db, &[(&m, 1, 1.0)]).await;
            write(&db, &[(&m, 2, 2.0)]).await;
            assert_eq!(db.wal_reader().last_wal_id(), 2);
            db.flush().await.expect("flush");
            assert!(db.wal_reader().read_wal(0, u64::MAX, 10, usize::MAX).expect("read").is_empty());
            db.close();
        }
        let hold = Arc::new(WalHold::new("r", 2, 1 << 20));
        let opts = TsdbOptions {
            wal_holds: vec![hold.clone()].into(),
            ..TsdbOptions::default()
        };
        let db = Tsdb::open(d.path(), &opts, &mut Registry::default()).expect("open");
        assert_eq!(db.wal_reader().last_wal_id(), 2, "the emptied WAL's last id is remembered");
        let watch = db.wal_reader().wal_watch();
        write(&db, &[(&m, 3, 3.0), (&m, 4, 4.0)]).await;
        write(&db, &[(&m, 5, 5.0)]).await;
        assert!(watch.has_changed().expect("watch"), "consumers are told");
        // A flush persists everything, but the hold keeps what it has not read.
        db.flush().await.expect("flush");
        let recs = db.wal_reader().read_wal(2, u64::MAX, 10, usize::MAX).expect("read");
        assert_eq!(recs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3, 4]);
        let sid = recs[0].samples[0].0;
        assert_eq!(recs[0].samples, vec![(sid, 3, 3.0), (sid, 4, 4.0)]);
        assert_eq!(db.wal_reader().series_labels(sid).as_deref(), Some(&*m));
        assert_eq!(db.wal_reader().wal_backlog(2), (3, db.wal_reader().wal_backlog(2).1));
        assert_eq!(db.wal_reader().read_wal(3, u64::MAX, 10, usize::MAX).expect("read").len(), 1);
        // Handled up to 3: record 3 goes at the next checkpoint, 4 stays.
        hold.advance(3);
        db.flush().await.expect("flush");
        assert_eq!(
            db.wal_reader()
                .read_wal(0, u64::MAX, 10, usize::MAX)
                .expect("read")
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec![4]
        );
        assert_eq!(db.wal_reader().wal_backlog(3).0, 1);
        db.close();

        // A backlog over the limit gives up the oldest records, counted.
        let tiny = Arc::new(WalHold::new("tiny", 3, 1));
        let opts = TsdbOptions {
            wal_holds: vec![tiny.clone()].into(),
            ..TsdbOptions::default()
        };
        let mut reg = Registry::default();
        let db = Tsdb::open(d.path(), &opts, &mut reg).expect("reopen");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        assert!(
            text.lines().any(|l| l.starts_with("tsdb_head_samples ") && l.ends_with(" 0")),
            "record 4, kept for remote write only, is not replayed into the head:\n{text}"
        );
        assert_eq!(db.wal_reader().wal_backlog(3).0, 1, "but it is still there to send");
        write(&db, &[(&m, 6, 6.0)]).await;
        db.flush().await.expect("flush");
        assert_eq!(tiny.position(), 5, "moved past everything over 1 byte");
        assert_eq!(tiny.dropped(), (2, 2));
        assert!(db.wal_reader().read_wal(0, u64::MAX, 10, usize::MAX).expect("read").is_empty());
        assert_eq!(
            read(&db, &[Matcher::equal("__name__", "m")])[0].samples.len(),
            6,
            "storage itself lost nothing"
        );
    }

    #[tokio::test]
    async fn retention_by_age_removes_whole_old_chunks() {
        let d = tempfile::tempdir().expect("tempdir");
        let opts = TsdbOptions {
            retention: Retention {
                age: Duration::from_secs(3600),
                size_bytes: 0,
            },
            ..TsdbOptions::default()
        };
        let db = Tsdb::open(d.path(), &opts, &mut Registry::default()).expect("open");
        let now = now_ms();
        let old = labels("old", &[]);
        let new = labels("new", &[]);
        write(&db, &[(&old, now - 7_200_000, 1.0), (&new, now, 1.0)]).await;
        db.flush().await.expect("flush");
        // One pack per window: two, or one when both samples fall in the
        // same day.
        let (packs, unused) = unused_packs(d.path());
        assert!((1..=2).contains(&packs) && unused == 0, "{packs} packs, {unused} unused");
        assert_eq!(db.apply_retention().await.expect("retention"), 1);
        assert!(read(&db, &[Matcher::equal("__name__", "old")]).is_empty());
        assert_eq!(read(&db, &[Matcher::equal("__name__", "new")]).len(), 1);
        assert_eq!(unused_packs(d.path()).1, 0, "a pack left only by the old block went with it");
    }

    /// (packs, packs that no chunk refers to) in a data dir's database.
    fn unused_packs(dir: &Path) -> (i64, i64) {
        let conn = sqlite::open_reader(&dir.join("csoc.db")).expect("reader");
        blockdir::check(&conn).expect("the directory's reference counts");
        conn.query_row(
            "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM chunks WHERE chunks.pack = packs.id)
                AND NOT EXISTS (SELECT 1 FROM pack_refs WHERE pack_refs.pack = packs.id)) FROM packs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("packs")
    }

    #[tokio::test]
    async fn retention_by_size_drops_the_oldest_chunks_and_shrinks_the_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let limit = 2 * 1024 * 1024;
        let opts = TsdbOptions {
            retention: Retention {
                age: Duration::from_secs(365 * 86_400),
                size_bytes: limit,
            },
            ..TsdbOptions::default()
        };
        let db = Tsdb::open(d.path(), &opts, &mut Registry::default()).expect("open");
        // Two whole past days' windows, whatever the time of day the test
        // runs at (data that ran into today's window compacted differently
        // and made the test depend on the clock).
        let now = now_ms().div_euclid(86_400_000) * 86_400_000 + 2 * 3_600_000;
        // 200 series x 2 days of noisy samples: several MB, several windows.
        let series: Vec<Arc<Labels>> = (0..200).map(|i| labels("m", &[("i", &i.to_string())])).collect();
        let mut x = 1u64;
        for day in 0..2i64 {
            let mut batch = Vec::new();
            for s in &series {
                for k in 0..2000i64 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    batch.push((s, now - (2 - day) * 86_400_000 + k * 30_000, (x >> 11) as f64));
                }
            }
            write(&db, &batch).await;
        }
        db.flush().await.expect("flush");
        let path = d.path().join("csoc.db");
        // May delete nothing when the writer's own periodic retention (first
        // run 10 s after open) got there first on a slow machine; the oldest
        // sample left and the size below show that data was deleted either
        // way. (The data is about 2.9 MB once the flush has rewritten the
        // file compactly, 1.4 times the limit.)
        db.apply_retention().await.expect("retention");
        db.flush().await.expect("checkpoint");
        let after = std::fs::metadata(&path).expect("size").len();
        assert!(after <= limit + 256 * 1024, "file {after} bytes, limit {limit}");
        // What is left is the newest data.
        let s = read(&db, &[Matcher::equal("__name__", "m")]);
        let newest = s.iter().filter_map(|s| s.samples.last()).map(|p| p.0).max().expect("data left");
        assert!(newest >= now - 86_400_000, "the newest data was kept");
        let oldest = s.iter().filter_map(|s| s.samples.first()).map(|p| p.0).min().expect("data left");
        assert!(oldest > now - 2 * 86_400_000, "the oldest data was deleted (oldest left {oldest})");
        let (packs, unused) = unused_packs(d.path());
        assert!(packs > 0, "the data left is packed");
        assert_eq!(unused, 0, "no pack outlives its chunks");
    }
}
