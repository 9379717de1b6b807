//! The writer thread: the only code that writes to the database or the
//! head.
//!
//! Per group commit (every write request waiting in the queue, up to a
//! limit): in one SQLite transaction, persist the head's pending closed
//! chunks, create new series, write one WAL record
//! with every sample of the group and the agents' applied batch seqs; commit
//! (durable on return: `synchronous=FULL`); only then append the samples to
//! the head, drop the persisted chunks from memory and answer the callers.
//! So an acknowledged sample is always in the WAL, in a persisted chunk, or
//! both, and what queries see in memory is always durable.
//!
//! Between groups, on a timer: close chunks that are idle for long, persist
//! pending chunks, truncate the WAL below the oldest row still needed by
//! the head (the checkpoint), and apply retention.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, params};
use tokio::sync::oneshot;

use super::blockdir;
use super::chunkenc::encode_block;
use super::compact::{self, CompactStats};
use super::head::MAX_CHUNK_SPAN_MS;
use super::pack::{self, BlockRef};
use super::record::RecordEncoder;
use super::retention::{age_cutoff, size_excess};
use super::symbols::Symbols;
use super::{AgentKey, CommitOutcome, FlushStats, Labels, Shared, TsdbOptions, sqlite, wal_tail};
use csoc_common::time::now_ms;

/// A sample's series: known by id (resolved by the appender) or new.
pub enum Key {
    /// An existing series.
    Id(i64),
    /// Not in the index when the appender looked: created here unless a
    /// concurrent commit created it first.
    New(Arc<Labels>),
}

/// The ids of a request's `Key::New` series, as written.
pub type NewRefs = Vec<(Arc<Labels>, i64)>;

/// A batch of samples to commit.
pub struct WriteReq {
    /// The samples.
    pub samples: Vec<(Key, i64, f64)>,
    /// The agent batch this applies, if any.
    pub seq: Option<(AgentKey, u64)>,
    /// Where the outcome goes, with the ids of the `Key::New` series
    /// written.
    pub reply: oneshot::Sender<Result<(CommitOutcome, NewRefs), String>>,
}

impl WriteReq {
    /// Samples of series not in the index when the appender looked (an
    /// upper bound of the series this request creates).
    fn new_series(&self) -> usize {
        self.samples.iter().filter(|(k, _, _)| matches!(k, Key::New(..))).count()
    }
}

/// Messages to the writer.
pub enum Msg {
    /// Commit samples.
    Write(WriteReq),
    /// Close and persist everything in memory.
    Flush(oneshot::Sender<Result<FlushStats, String>>),
    /// Apply retention now; answers the chunks deleted.
    Retention(oneshot::Sender<Result<usize, String>>),
    /// Persist what is pending and stop.
    Stop,
}

const MAX_GROUP: usize = 512;
/// Series to create in one group commit, about: a group stops taking
/// requests once it holds this many new series. When 200 agents connect
/// together, each defining 1,000 series, one group could otherwise create
/// 200,000 series in one transaction and hold every ack behind it for
/// seconds; in slices, the early ones are acknowledged as they are done.
const MAX_GROUP_NEW_SERIES: usize = 10_000;
const TICK: Duration = Duration::from_millis(500);
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
const CLOSE_IDLE_EVERY: Duration = Duration::from_secs(60);
const RETENTION_EVERY: Duration = Duration::from_secs(300);
const COMPACT_EVERY: Duration = Duration::from_secs(30);
/// Windows merged per compaction transaction (bounds the pause of ingest).
const COMPACT_BATCH: usize = 256;
/// Most closed head chunks persisted by one transaction while ingesting.
/// Series that started together close their chunks together (200,000
/// series at one sample per second close 200,000 chunks in the same
/// second); persisting them all in the next group commit held every ack
/// behind one multi-second transaction. In slices, the backlog drains over
/// the following commits and ticks while acks keep flowing. (Flush and
/// shutdown persist everything.)
const PERSIST_BUDGET: usize = 8192;

/// The writer's state.
pub struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    opts: TsdbOptions,
    next_series_id: i64,
    /// The label names and values series rows refer to.
    symbols: Symbols,
    applied: HashMap<AgentKey, u64>,
    last_wal_id: u64,
    /// The WAL row of the transaction in flight: (id, samples, bytes).
    wal_row: Option<(u64, u64, usize)>,
    /// The `wal_replay_from` last written to meta.
    replay_from_saved: u64,
    last_checkpoint: Instant,
    last_close_idle: Instant,
    last_retention: Instant,
    last_compact: Instant,
    compact_behind: bool,
}

type Applied = Vec<(i64, i64, f64)>;

impl Writer {
    /// A writer over an open connection; `next_series_id` is one past the
    /// highest id in the series table, `symbols` the symbol table as
    /// loaded, `last_wal_id` the highest WAL row.
    pub fn new(conn: Connection, shared: Arc<Shared>, opts: TsdbOptions, next_series_id: i64, symbols: Symbols, last_wal_id: u64) -> Self {
        let now = Instant::now();
        Writer {
            conn,
            shared,
            opts,
            next_series_id,
            symbols,
            applied: HashMap::new(),
            last_wal_id,
            wal_row: None,
            replay_from_saved: 0,
            last_checkpoint: now,
            last_close_idle: now,
            last_retention: now - RETENTION_EVERY + Duration::from_secs(10),
            last_compact: now,
            compact_behind: false,
        }
    }

    /// Runs until `Stop` or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Msg>) {
        let mut deferred: Option<Msg> = None;
        loop {
            let msg = match deferred.take() {
                Some(m) => Some(m),
                None => match rx.recv_timeout(TICK) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Msg::Stop),
                },
            };
            match msg {
                Some(Msg::Write(first)) => {
                    let mut new_series = first.new_series();
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP && new_series < MAX_GROUP_NEW_SERIES {
                        match rx.try_recv() {
                            Ok(Msg::Write(w)) => {
                                new_series += w.new_series();
                                group.push(w);
                            }
                            Ok(other) => {
                                deferred = Some(other);
                                break;
                            }
                            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                        }
                    }
                    self.commit_group(group);
                }
                Some(Msg::Flush(reply)) => {
                    let r = self.flush().map_err(|e| e.to_string());
                    if let Err(e) = &r {
                        tracing::error!(error = %e, "flush failed");
                    }
                    let _ = reply.send(r);
                }
                Some(Msg::Retention(reply)) => {
                    self.last_retention = Instant::now();
                    let _ = reply.send(self.retention().map_err(|e| e.to_string()));
                }
                Some(Msg::Stop) => {
                    if let Err(e) = self.persist_only(usize::MAX) {
                        tracing::error!(error = %e, "persisting pending chunks at shutdown failed; the WAL still holds them");
                    }
                    return;
                }
                None => {}
            }
            self.maintenance();
        }
    }

    fn commit_group(&mut self, group: Vec<WriteReq>) {
        let started = Instant::now();
        let n = group.len();
        let res = self.write_group(&group);
        let m = &self.shared.metrics;
        m.commit_seconds.observe(started.elapsed().as_secs_f64());
        m.commit_batches.observe(n as f64);
        match res {
            Ok((outcomes, applied, new_series, persisted, wal_id, pending_seq)) => {
                self.symbols.commit();
                m.commits.inc();
                self.applied.extend(pending_seq);
                if wal_id > 0 {
                    self.last_wal_id = wal_id;
                    if let Some((id, count, bytes)) = self.wal_row.take() {
                        self.shared
                            .wal_rows
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id, count, bytes);
                    }
                }
                if !new_series.is_empty() {
                    let mut idx = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
                    for (id, l) in &new_series {
                        idx.insert(*id, l.clone());
                    }
                    m.series.set(idx.len() as i64);
                }
                {
                    let mut head = self.shared.head.write().unwrap_or_else(|p| p.into_inner());
                    head.drop_pending(persisted);
                    for (id, _) in &new_series {
                        head.ensure(*id);
                    }
                    for (id, t, v) in &applied {
                        head.append(*id, *t, *v, wal_id);
                    }
                    m.head_samples.set(head.samples_in_memory() as i64);
                }
                if wal_id > 0 {
                    self.shared.wal_last.send_replace(wal_id);
                }
                m.samples_appended.inc_by(applied.len() as u64);
                m.chunks_persisted.inc_by(persisted as u64);
                for (req, (o, refs)) in group.into_iter().zip(outcomes) {
                    if o == CommitOutcome::AlreadyApplied {
                        m.duplicate_batches.inc();
                    }
                    let _ = req.reply.send(Ok((o, refs)));
                }
            }
            Err(e) => {
                m.commit_failures.inc();
                tracing::error!(error = %e, appenders = n, "storage commit failed; nothing of these batches was applied");
                // Series ids handed out in the failed transaction are simply
                // skipped; its symbols are forgotten (their rows are gone).
                self.symbols.rollback();
                self.applied.clear();
                self.wal_row = None;
                for req in group {
                    let _ = req.reply.send(Err(e.to_string()));
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn write_group(
        &mut self,
        group: &[WriteReq],
    ) -> Result<
        (
            Vec<(CommitOutcome, NewRefs)>,
            Applied,
            Vec<(i64, Arc<Labels>)>,
            usize,
            u64,
            HashMap<AgentKey, u64>,
        ),
        rusqlite::Error,
    > {
        let shared = self.shared.clone();
        let tx = self.conn.transaction()?;
        let persisted = persist_pending(&tx, &shared, PERSIST_BUDGET)?;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut applied: Applied = Vec::new();
        let mut new_series: Vec<(i64, Arc<Labels>)> = Vec::new();
        let mut local: HashMap<Arc<Labels>, i64> = HashMap::new();
        let mut pending_seq: HashMap<AgentKey, u64> = HashMap::new();
        let mut rec = RecordEncoder::new();
        {
            let mut ins_series = tx.prepare_cached(sqlite::INSERT_SERIES)?;
            let mut ins_symbol = tx.prepare_cached(sqlite::INSERT_SYMBOL)?;
            let mut row = Vec::new();
            let mut sel_seq = tx.prepare_cached(sqlite::SELECT_AGENT_SEQ)?;
            let mut upd_seq = tx.prepare_cached(sqlite::UPSERT_AGENT_SEQ)?;
            let idx = shared.index.read().unwrap_or_else(|p| p.into_inner());
            let now = now_ms();
            for req in group {
                if let Some((key, seq)) = &req.seq {
                    let last = match pending_seq.get(key).or_else(|| self.applied.get(key)) {
                        Some(s) => *s,
                        None => match sel_seq.query_row(params![key.commons, key.agent, key.epoch as i64], |r| r.get::<_, i64>(0)) {
                            Ok(s) => s as u64,
                            Err(rusqlite::Error::QueryReturnedNoRows) => 0,
                            Err(e) => return Err(e),
                        },
                    };
                    if *seq <= last {
                        pending_seq.insert(key.clone(), last);
                        outcomes.push((CommitOutcome::AlreadyApplied, Vec::new()));
                        continue;
                    }
                    let n = req.samples.len() as i64;
                    upd_seq.execute(params![key.commons, key.agent, key.epoch as i64, *seq as i64, now, n])?;
                    pending_seq.insert(key.clone(), *seq);
                }
                applied.reserve(req.samples.len());
                let mut refs: NewRefs = Vec::new();
                for (key, t, v) in &req.samples {
                    let labels = match key {
                        Key::Id(id) => {
                            rec.push(*id, *t, *v);
                            applied.push((*id, *t, *v));
                            continue;
                        }
                        Key::New(l) => l,
                    };
                    let id = match idx.id_of(labels).or_else(|| local.get(labels).copied()) {
                        Some(id) => id,
                        None => {
                            let id = self.next_series_id;
                            self.next_series_id += 1;
                            row.clear();
                            self.symbols.encode_row(labels, &mut ins_symbol, &mut row)?;
                            ins_series.execute(params![id, &row])?;
                            local.insert(labels.clone(), id);
                            new_series.push((id, labels.clone()));
                            id
                        }
                    };
                    if !refs.last().is_some_and(|(l, _)| Arc::ptr_eq(l, labels)) {
                        refs.push((labels.clone(), id));
                    }
                    rec.push(id, *t, *v);
                    applied.push((id, *t, *v));
                }
                outcomes.push((CommitOutcome::Applied, refs));
            }
        }
        let wal_id = if rec.is_empty() {
            0
        } else {
            // Ids chosen here, not by SQLite: they must never repeat, even
            // after a checkpoint emptied the table.
            let id = self.last_wal_id + 1;
            let count = rec.len();
            let data = rec.finish();
            tx.execute(sqlite::INSERT_WAL, params![id as i64, &data])?;
            self.wal_row = Some((id, count, data.len()));
            id
        };
        tx.commit()?;
        self.shared.metrics.series_created.inc_by(new_series.len() as u64);
        Ok((outcomes, applied, new_series, persisted, wal_id, pending_seq))
    }

    /// Persists up to `limit` pending chunks, oldest first, in a
    /// transaction of their own.
    fn persist_only(&mut self, limit: usize) -> Result<usize, rusqlite::Error> {
        let has_pending = !self.shared.head.read().unwrap_or_else(|p| p.into_inner()).pending.is_empty();
        if !has_pending {
            return Ok(0);
        }
        let shared = self.shared.clone();
        let tx = self.conn.transaction()?;
        let n = persist_pending(&tx, &shared, limit)?;
        tx.commit()?;
        let mut head = shared.head.write().unwrap_or_else(|p| p.into_inner());
        head.drop_pending(n);
        shared.metrics.head_samples.set(head.samples_in_memory() as i64);
        shared.metrics.chunks_persisted.inc_by(n as u64);
        Ok(n)
    }

    /// Deletes WAL rows that nothing in memory and no WAL consumer (remote
    /// write, within its backlog limit) needs any more.
    fn checkpoint(&mut self) -> Result<usize, rusqlite::Error> {
        let watermark = self.shared.head.read().unwrap_or_else(|p| p.into_inner()).wal_watermark();
        let head_needs = watermark.unwrap_or(self.last_wal_id + 1);
        let mut below = head_needs;
        let holds = self.opts.wal_holds.snapshot();
        {
            let rows = self.shared.wal_rows.lock().unwrap_or_else(|p| p.into_inner());
            for h in &holds {
                rows.enforce(h, head_needs);
            }
        }
        if let Some(needed) = wal_tail::WalRows::needed_from(&holds) {
            below = below.min(needed);
        }
        let tx = self.conn.transaction()?;
        let n = tx.execute(sqlite::TRUNCATE_WAL_BELOW, params![below as i64])?;
        if n > 0 {
            tx.execute(sqlite::UPSERT_WAL_LAST_ID, params![self.last_wal_id as i64])?;
        }
        // Rows kept below what the head needs are for remote write only: a
        // restart does not replay them.
        if below < head_needs && self.replay_from_saved != head_needs {
            tx.execute(sqlite::UPSERT_WAL_REPLAY_FROM, params![head_needs as i64])?;
            self.replay_from_saved = head_needs;
        }
        tx.commit()?;
        self.shared.wal_rows.lock().unwrap_or_else(|p| p.into_inner()).remove_below(below);
        self.shared.metrics.wal_truncated.inc_by(n as u64);
        let m = &self.shared.metrics;
        let wal: i64 = self.conn.query_row(sqlite::WAL_BYTES, [], |r| r.get(0))?;
        m.wal_bytes.set(wal);
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let journal = self
            .conn
            .path()
            .and_then(|p| std::fs::metadata(format!("{p}-wal")).ok())
            .map(|md| md.len() as i64)
            .unwrap_or(0);
        m.storage_bytes.set(page_size * pages + journal);
        if let Some(dir) = self.shared.path.parent()
            && let Ok(st) = rustix::fs::statvfs(dir)
        {
            let bs = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            m.fs_avail_bytes.set(clamp(st.f_bavail.saturating_mul(bs)));
            m.fs_size_bytes.set(clamp(st.f_blocks.saturating_mul(bs)));
        }
        Ok(n)
    }

    fn maintenance(&mut self) {
        if self.last_close_idle.elapsed() >= CLOSE_IDLE_EVERY {
            self.last_close_idle = Instant::now();
            let mut head = self.shared.head.write().unwrap_or_else(|p| p.into_inner());
            let cutoff = head.max_t.saturating_sub(MAX_CHUNK_SPAN_MS);
            let n = head.close_older_than(cutoff);
            if n > 0 {
                tracing::debug!(series = n, "closed idle head chunks");
            }
        }
        if let Err(e) = self.persist_only(PERSIST_BUDGET) {
            tracing::error!(error = %e, "persisting head chunks failed; will retry");
        }
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            self.last_checkpoint = Instant::now();
            if let Err(e) = self.checkpoint() {
                tracing::error!(error = %e, "WAL checkpoint failed; will retry");
            }
        }
        if self.compact_behind || self.last_compact.elapsed() >= COMPACT_EVERY {
            self.last_compact = Instant::now();
            // Windows that ended before the newest sample minus the span of
            // an open chunk are complete.
            let max_t = self.shared.head.read().unwrap_or_else(|p| p.into_inner()).max_t;
            let before = compact::window_start(max_t.saturating_sub(MAX_CHUNK_SPAN_MS));
            match self.compact_once(before) {
                Ok(st) => self.compact_behind = st.windows >= COMPACT_BATCH,
                Err(e) => {
                    self.compact_behind = false;
                    tracing::error!(error = %e, "compaction failed; will retry");
                }
            }
        }
        if self.last_retention.elapsed() >= RETENTION_EVERY {
            self.last_retention = Instant::now();
            if let Err(e) = self.retention().map(|_| ()) {
                tracing::error!(error = %e, "retention failed; will retry");
            }
        }
    }

    /// One bounded compaction transaction.
    fn compact_once(&mut self, before: i64) -> Result<CompactStats, rusqlite::Error> {
        let tx = self.conn.transaction()?;
        let st = compact::compact(&tx, before, COMPACT_BATCH)?;
        tx.commit()?;
        if st.windows > 0 {
            self.shared.metrics.compactions.inc_by(st.windows as u64);
            tracing::debug!(?st, "compacted chunks");
        }
        Ok(st)
    }

    /// Applies retention by age and by size, deleting whole chunks; returns
    /// how many.
    pub fn retention(&mut self) -> Result<usize, rusqlite::Error> {
        let r = self.opts.retention;
        let cutoff = age_cutoff(now_ms(), r.age);
        let by_age = {
            let tx = self.conn.transaction()?;
            let packs: BTreeSet<i64> = tx
                .prepare_cached(sqlite::PACKS_OF_CHUNKS_BEFORE)?
                .query_map(params![cutoff], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let n = tx.execute(sqlite::DELETE_CHUNKS_BEFORE, params![cutoff])?;
            pack::collect(&tx, &packs)?;
            let blocks = blockdir::delete_before(&tx, cutoff)?;
            tx.commit()?;
            n + blocks
        };
        if by_age > 0 {
            tracing::info!(chunks = by_age, older_than = ?r.age, "retention: deleted chunks past the age limit");
        }
        let mut by_size = 0usize;
        loop {
            let used = self.used_bytes()?;
            let excess = size_excess(used, r.size_bytes);
            if excess == 0 {
                break;
            }
            // The oldest chunk rows and directory blocks, by their newest
            // sample: (maxt, bytes, what).
            let mut oldest: Vec<(i64, u64, Victim)> = {
                let mut st = self.conn.prepare_cached(sqlite::OLDEST_CHUNKS)?;
                st.query_map(params![1000], |row| {
                    let data = row.get_ref(1)?.as_blob()?;
                    let len = match BlockRef::parse(data) {
                        Some(Ok(r)) => r.len,
                        _ => data.len() as u64,
                    };
                    Ok((row.get(3)?, len, Victim::Chunk(row.get(0)?, row.get(2)?)))
                })?
                .collect::<Result<_, _>>()?
            };
            for (window, e) in blockdir::oldest(&self.conn, 16)? {
                oldest.push((e.maxt, e.at.len, Victim::Block(window, e)));
            }
            oldest.sort_by_key(|v| v.0);
            if oldest.is_empty() {
                break;
            }
            let tx = self.conn.transaction()?;
            let mut freed = 0u64;
            let mut packs = BTreeSet::new();
            let mut blocks: BTreeMap<(i64, i64), Vec<blockdir::Entry>> = BTreeMap::new();
            {
                let mut del = tx.prepare_cached(sqlite::DELETE_CHUNK)?;
                for (_, len, victim) in oldest {
                    match victim {
                        Victim::Chunk(id, pack) => {
                            del.execute(params![id])?;
                            packs.extend(pack);
                            freed += len + 48;
                        }
                        Victim::Block(window, e) => {
                            blocks.entry((blockdir::group_of(e.series), window)).or_default().push(e);
                            freed += len + 8;
                        }
                    }
                    by_size += 1;
                    if freed >= excess {
                        break;
                    }
                }
            }
            let mut ed = blockdir::Editor::default();
            for ((grp, window), gone) in blocks {
                ed.edit(&tx, grp, window, |v| v.retain(|e| !gone.contains(e)))?;
            }
            ed.finish(&tx)?;
            // A pack's bytes are freed with its last chunk.
            pack::collect(&tx, &packs)?;
            tx.commit()?;
            sqlite::incremental_vacuum(&self.conn)?;
        }
        if by_age > 0 || by_size > 0 {
            sqlite::incremental_vacuum(&self.conn)?;
        }
        if by_size > 0 {
            tracing::info!(
                chunks = by_size,
                limit_bytes = r.size_bytes,
                "retention: deleted the oldest chunks to stay under the size limit"
            );
        }
        self.shared.metrics.retention_deleted.inc_by((by_age + by_size) as u64);
        Ok(by_age + by_size)
    }

    fn used_bytes(&self) -> Result<u64, rusqlite::Error> {
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self.conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * page_size) as u64)
    }

    /// Closes every head chunk, persists it, empties the WAL, rewrites the
    /// database file compactly (`VACUUM`) and folds SQLite's own journal
    /// into it.
    fn flush(&mut self) -> Result<FlushStats, rusqlite::Error> {
        let started = Instant::now();
        let (closed, samples) = {
            let mut head = self.shared.head.write().unwrap_or_else(|p| p.into_inner());
            let n = head.close_older_than(i64::MAX);
            (n, head.pending.iter().map(|p| p.samples.len()).sum::<usize>())
        };
        let chunks = self.persist_only(usize::MAX)?;
        let wal_rows = self.checkpoint()?;
        let mut compacted = CompactStats::default();
        loop {
            let st = self.compact_once(i64::MAX)?;
            compacted.windows += st.windows;
            compacted.chunks_in += st.chunks_in;
            compacted.blocks_out += st.blocks_out;
            if st.windows < COMPACT_BATCH {
                break;
            }
        }
        // (No incremental vacuum first: the VACUUM below drops the free
        // pages anyway, while an incremental vacuum of the pages compaction
        // freed moved most of the file's pages one by one, through
        // SQLite's WAL: 700 MB of WAL for a 26 MB database at 24 h.)
        // Rewrite the file compactly: compaction deletes small chunk rows
        // and appends large ones, which leaves B-tree pages part-empty (15 %
        // of the chunks table at 24 h). Like VictoriaMetrics' force merge,
        // this costs time in proportion to the database and, for the
        // duration, free disk of about twice its size (the copy and
        // SQLite's journal). Ingest waits meanwhile, as for the rest of the
        // flush.
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        self.conn.execute_batch("VACUUM")?;
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let stats = FlushStats {
            series_closed: closed,
            chunks_written: chunks,
            samples_written: samples,
            wal_records_removed: wal_rows,
            windows_compacted: compacted.windows,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(?stats, "head flushed");
        Ok(stats)
    }
}

/// Writes the oldest `limit` of the head's pending chunks in `tx`; returns how many (the caller
/// drops exactly that many from the head after the commit).
fn persist_pending(tx: &Transaction<'_>, shared: &Shared, limit: usize) -> Result<usize, rusqlite::Error> {
    let head = shared.head.read().unwrap_or_else(|p| p.into_inner());
    let n = head.pending.len().min(limit);
    if n == 0 {
        return Ok(0);
    }
    let mut ins = tx.prepare_cached(sqlite::INSERT_CHUNK)?;
    let mut buf = Vec::new();
    for p in &head.pending[..n] {
        let (Some(first), Some(last)) = (p.samples.first(), p.samples.last()) else {
            continue;
        };
        buf.clear();
        encode_block(&p.samples, &mut buf);
        ins.execute(params![p.series_id, first.0, last.0, &buf])?;
    }
    Ok(n)
}

/// What retention by size deletes: a chunk row (id, its schema-3 pack),
/// or a directory block (window, entry).
enum Victim {
    Chunk(i64, Option<i64>),
    Block(i64, blockdir::Entry),
}
