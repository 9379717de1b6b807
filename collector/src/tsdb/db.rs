//! The database: open (loading the series and replaying the WAL), the
//! writer handle (flush, retention, close), the agents' applied-seq
//! ledger, statistics, and the pool of read connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use prometheus_client::registry::Registry;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::head::Head;
use super::index::{Index, IndexStats};
use super::metrics::TsdbMetrics;
use super::replay::{ReplayProgress, replay_wal};
use super::symbols::{Symbols, decode_row};
use super::wal_tail::WalRows;
use super::writer::{Msg, Writer};
use super::{
    AgentKey, BoxFuture, FlushStats, LedgerEntry, Shared, StorageStats, Tsdb, TsdbAdmin, TsdbError, TsdbOptions, chunk_cache, sqlite,
};

impl Tsdb {
    /// Opens (or creates) `<dir>/csoc.db`, loads the series, replays the
    /// WAL into the head (logging progress) and starts the writer thread.
    /// Blocking; [`Tsdb::prepare`] does the same in two steps, with the
    /// progress observable in between.
    pub fn open(dir: &Path, opts: &TsdbOptions, registry: &mut Registry) -> Result<Self, TsdbError> {
        Self::prepare(dir, opts, registry).open()
    }

    /// Registers the storage's metrics and returns an [`Opening`] whose
    /// [`Opening::open`] does the (possibly long) rest: so that the metrics
    /// exist, and the replay's progress can be served, while the WAL
    /// replays.
    pub fn prepare(dir: &Path, opts: &TsdbOptions, registry: &mut Registry) -> Opening {
        Opening {
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            metrics: TsdbMetrics::new(registry),
            progress: ReplayProgress::default(),
        }
    }

    /// Every agent identity's ledger: last seq applied and samples applied.
    pub fn agent_ledger(&self) -> Result<Vec<LedgerEntry>, TsdbError> {
        let conn = self.reader()?;
        let out = (|| {
            let mut st = conn.prepare_cached(sqlite::SELECT_AGENT_LEDGER)?;
            let rows = st.query_map([], |r| {
                Ok(LedgerEntry {
                    key: AgentKey {
                        commons: r.get(0)?,
                        agent: r.get(1)?,
                        epoch: r.get::<_, i64>(2)? as u64,
                    },
                    seq: r.get::<_, i64>(3)? as u64,
                    samples: r.get::<_, i64>(4)? as u64,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })();
        self.put_reader(conn);
        Ok(out?)
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

    /// Closes and persists every head chunk and empties the WAL; returns when
    /// done.
    pub async fn flush(&self) -> Result<FlushStats, TsdbError> {
        self.ask_writer(Msg::Flush).await
    }

    /// Applies retention now (it also runs every few minutes); returns the
    /// number of chunks deleted.
    pub async fn apply_retention(&self) -> Result<usize, TsdbError> {
        self.ask_writer(Msg::Retention).await
    }

    /// Builds a message carrying a reply channel (in a blocking task: the
    /// builder may do CPU work, and the queue is bounded, so a full queue
    /// blocks there as back-pressure on ingest), sends it to the writer and
    /// awaits the answer.
    pub(super) async fn ask_writer<T: Send + 'static>(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Msg + Send + 'static,
    ) -> Result<T, TsdbError> {
        let (reply, rx) = oneshot::channel();
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || writer.send(msg(reply)).map_err(|_| TsdbError::Closed))
            .await
            .map_err(|_| TsdbError::Closed)??;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(TsdbError::Write(e)),
            Err(_) => Err(TsdbError::Closed),
        }
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.read_index().len()
    }

    /// Cardinality statistics of the label index; lists hold the `limit`
    /// largest entries (read-only).
    pub fn index_stats(&self, limit: usize) -> IndexStats {
        self.read_index().stats(limit)
    }

    /// Chunks and time bounds of everything stored, in memory and on disk
    /// (read-only; scans the chunks table).
    pub fn storage_stats(&self) -> Result<StorageStats, TsdbError> {
        let head = self.shared.head.read().unwrap_or_else(|p| p.into_inner()).stats();
        let conn = self.reader()?;
        let stats = |sql: &str| {
            conn.query_row(sql, [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?, r.get::<_, Option<i64>>(2)?))
            })
        };
        let rows = stats(sqlite::CHUNK_STATS).and_then(|c| Ok((c, stats(sqlite::DIR_STATS)?)));
        self.put_reader(conn);
        let ((n, lo, hi), (blocks, dir_lo, dir_hi)) = rows?;
        let min = |a: Option<i64>, b: Option<i64>| a.into_iter().chain(b).min();
        let max = |a: Option<i64>, b: Option<i64>| a.into_iter().chain(b).max();
        Ok(StorageStats {
            chunks: n.max(0) as u64 + blocks.max(0) as u64 + head.chunks as u64,
            min_time: min(min(lo, dir_lo), head.min_time),
            max_time: max(max(hi, dir_hi), head.max_time),
        })
    }

    /// Stops the writer after it has committed everything queued and
    /// persisted pending chunks (what is still open stays in the WAL).
    pub fn close(&self) {
        let handle = self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = self.writer.send(Msg::Stop);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    pub(super) fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.shared.read_index()
    }

    pub(super) fn reader(&self) -> Result<Connection, TsdbError> {
        self.shared.reader()
    }

    pub(super) fn put_reader(&self, c: Connection) {
        self.shared.put_reader(c)
    }
}

/// A storage being opened: its metrics registered, nothing read yet
/// ([`Tsdb::prepare`]).
pub struct Opening {
    dir: PathBuf,
    opts: TsdbOptions,
    metrics: TsdbMetrics,
    progress: ReplayProgress,
}

impl Opening {
    /// The progress of [`Opening::open`], to watch from another thread.
    pub fn progress(&self) -> ReplayProgress {
        self.progress.clone()
    }

    /// Opens (or creates) `<dir>/csoc.db`, loads the series, replays the WAL
    /// into the head (updating the progress and logging it) and starts the
    /// writer thread. Blocking. Fails with [`TsdbError::Interrupted`] when
    /// the progress was cancelled during replay.
    pub fn open(self) -> Result<Tsdb, TsdbError> {
        let Opening {
            dir,
            opts,
            metrics,
            progress,
        } = self;
        let dir = dir.as_path();
        let opts = &opts;
        progress.start();
        std::fs::create_dir_all(dir).map_err(|source| TsdbError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("csoc.db");
        let started = Instant::now();
        let conn = sqlite::open_writer(&path)?;
        let mut index = Index::default();
        let mut head = Head::default();
        let (symbols, texts) = Symbols::load(&conn)?;
        {
            let mut stmt = conn.prepare(sqlite::SELECT_ALL_SERIES)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let value = row.get_ref(1)?;
                let labels = decode_row(value, &texts).ok_or_else(|| {
                    TsdbError::Corrupt(format!(
                        "series {id}: labels {:?} do not decode",
                        rusqlite::types::Value::from(value)
                    ))
                })?;
                index.insert(id, Arc::new(labels));
                head.ensure(id);
            }
        }
        drop(texts);
        let next_series_id: i64 = conn.query_row(sqlite::MAX_SERIES_ID, [], |r| r.get::<_, i64>(0))? + 1;
        let mut wal_rows = WalRows::default();
        let last_wal_id = replay_wal(&conn, &mut head, &metrics, &mut wal_rows, &progress)?;
        metrics.series.set(index.len() as i64);
        metrics.head_samples.set(head.samples_in_memory() as i64);
        progress.done();
        metrics.wal_replay_seconds.set(progress.snapshot().elapsed.as_secs_f64());
        tracing::info!(path = %path.display(), series = index.len(), elapsed = ?started.elapsed(), "storage opened");
        let shared = Arc::new(Shared {
            path,
            index: RwLock::new(index),
            head: RwLock::new(head),
            readers: Mutex::new(Vec::new()),
            chunk_cache: chunk_cache::ChunkCache::new(opts.chunk_cache_bytes),
            metrics,
            wal_rows: Mutex::new(wal_rows),
            wal_last: tokio::sync::watch::channel(last_wal_id).0,
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(256);
        let writer = Writer::new(conn, shared.clone(), opts.clone(), next_series_id, symbols, last_wal_id);
        let handle = std::thread::Builder::new()
            .name("tsdb-writer".into())
            .spawn(move || writer.run(rx))
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
}

impl Shared {
    pub(super) fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only connection from the pool (or a new one).
    pub(super) fn reader(&self) -> Result<Connection, TsdbError> {
        if let Some(c) = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        sqlite::open_reader(&self.path)
    }

    /// Gives a connection back to the pool.
    pub(super) fn put_reader(&self, c: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(c);
        }
    }
}

impl TsdbAdmin for Tsdb {
    fn flush(&self) -> BoxFuture<'_, Result<FlushStats, TsdbError>> {
        Box::pin(Tsdb::flush(self))
    }

    fn index_stats(&self, limit: usize) -> IndexStats {
        Tsdb::index_stats(self, limit)
    }

    fn storage_stats(&self) -> Result<StorageStats, TsdbError> {
        Tsdb::storage_stats(self)
    }

    fn snapshot(&self, name: String, skip_head: bool) -> BoxFuture<'_, Result<super::SnapshotStats, TsdbError>> {
        Box::pin(Tsdb::snapshot(self, name, skip_head))
    }
}
