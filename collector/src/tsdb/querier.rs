//! The read path (Prometheus's `head_read.go` and `querier.go`): the
//! [`Querier`] of [`Tsdb`] merges what the head holds in memory with the
//! persisted chunks, decoded through the chunk cache.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::params;

use super::head::merge_last_write_wins;
use super::storage::has_stale_marker;
use super::{Labels, LazySelection, Matcher, Querier, Queryable, Series, SeriesReader, Tsdb, TsdbError, chunk_cache, chunkenc, sqlite};
use super::{blockdir, pack};

impl Queryable for Tsdb {
    fn querier(&self, mint: i64, maxt: i64) -> Box<dyn Querier + '_> {
        Box::new(TsdbQuerier { tsdb: self, mint, maxt })
    }

    fn select_lazy(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        without_stale: bool,
    ) -> Result<Option<Box<dyn LazySelection + '_>>, TsdbError> {
        let mut all = TsdbQuerier { tsdb: self, mint, maxt }.matching(matchers);
        all.sort_by(|a, b| a.1.cmp(&b.1));
        let (ids, labels) = all.into_iter().unzip();
        Ok(Some(Box::new(Lazy {
            tsdb: self,
            mint,
            maxt,
            without_stale,
            ids,
            labels,
        })))
    }
}

/// The storage's [`Querier`]: the head (memory) merged with the persisted
/// chunks.
struct TsdbQuerier<'a> {
    tsdb: &'a Tsdb,
    mint: i64,
    maxt: i64,
}

impl Querier for TsdbQuerier<'_> {
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<Series>, TsdbError> {
        self.select_series(matchers, false)
    }

    /// Each cached chunk knows whether it holds staleness markers, so only
    /// the series that have some are filtered (after the merge, so that a
    /// marker that won on its timestamp still hides the sample it beat).
    fn select_without_stale(&self, matchers: &[Matcher]) -> Result<Vec<Series>, TsdbError> {
        self.select_series(matchers, true)
    }

    /// At chunk granularity, in memory and on disk.
    fn series(&self, matchers: &[Matcher]) -> Result<Vec<Arc<Labels>>, TsdbError> {
        let ids = self.matching(matchers);
        let mut in_memory = std::collections::HashSet::new();
        self.tsdb
            .shared
            .head
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .ids_overlapping(self.mint, self.maxt, &mut in_memory);
        let conn = self.tsdb.reader()?;
        let res = (|| -> Result<Vec<Arc<Labels>>, TsdbError> {
            // One read transaction: one shared lock for every lookup.
            let _snapshot = conn.unchecked_transaction()?;
            let mut stmt = conn.prepare_cached(sqlite::SERIES_HAS_CHUNK_IN)?;
            let mut out = Vec::new();
            for (id, labels) in ids {
                if in_memory.contains(&id) || stmt.exists(params![id, self.mint, self.maxt])? || has_block(&conn, id, self.mint, self.maxt)?
                {
                    out.push(labels);
                }
            }
            Ok(out)
        })();
        self.tsdb.put_reader(conn);
        let mut out = res?;
        out.sort();
        Ok(out)
    }
}

impl TsdbQuerier<'_> {
    /// The ids and labels of the series matching every matcher.
    fn matching(&self, matchers: &[Matcher]) -> Vec<(i64, Arc<Labels>)> {
        let idx = self.tsdb.read_index();
        idx.select(matchers)
            .into_iter()
            .filter_map(|id| idx.labels(id).map(|l| (id, l)))
            .collect()
    }

    /// [`Querier::select`], or with `without_stale` [`Querier::select_without_stale`].
    fn select_series(&self, matchers: &[Matcher], without_stale: bool) -> Result<Vec<Series>, TsdbError> {
        let ids = self.matching(matchers);
        // Memory first, then disk: a chunk persisted in between is then
        // seen twice (harmless), never missed.
        let mut in_memory: HashMap<i64, Vec<(i64, f64)>> = HashMap::with_capacity(ids.len());
        {
            let head = self.tsdb.shared.head.read().unwrap_or_else(|p| p.into_inner());
            for (id, _) in &ids {
                let mut v = Vec::new();
                head.collect(*id, self.mint, self.maxt, &mut v);
                if !v.is_empty() {
                    in_memory.insert(*id, v);
                }
            }
        }
        // (Reading on several cores, each worker with its own connection,
        // measured slower here: allocation and page faults in parallel
        // outweighed the split.)
        let mut out = self.read_series(&ids, &in_memory, without_stale)?;
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Reads the samples of `ids` from disk (through the decoded-chunk
    /// cache) and merges in what the head holds; `without_stale` then drops
    /// the staleness markers, and the series they leave empty.
    fn read_series(
        &self,
        ids: &[(i64, Arc<Labels>)],
        in_memory: &HashMap<i64, Vec<(i64, f64)>>,
        without_stale: bool,
    ) -> Result<Vec<Series>, TsdbError> {
        let conn = self.tsdb.reader()?;
        let mut out = Vec::with_capacity(ids.len());
        let res = (|| -> Result<(), TsdbError> {
            // One read transaction for all the series: SQLite then takes its
            // shared lock (fcntl calls) once, not per statement, and every
            // series is read from one snapshot. Dropped (ended) on return.
            let _snapshot = conn.unchecked_transaction()?;
            let mut parts = Vec::new();
            for (id, labels) in ids {
                let mem = in_memory.get(id).map_or(&[][..], |v| v.as_slice());
                let mut samples = Vec::new();
                read_one(
                    self.tsdb,
                    &conn,
                    (*id, self.mint, self.maxt),
                    mem,
                    without_stale,
                    &mut parts,
                    &mut samples,
                )?;
                if !samples.is_empty() {
                    out.push(Series {
                        labels: labels.clone(),
                        samples,
                    });
                }
            }
            Ok(())
        })();
        self.tsdb.put_reader(conn);
        res?;
        Ok(out)
    }
}

/// Whether the block directory has a block of `id` overlapping [mint, maxt].
fn has_block(conn: &rusqlite::Connection, id: i64, mint: i64, maxt: i64) -> Result<bool, TsdbError> {
    let mut found = false;
    blockdir::blocks_of(conn, id, mint, maxt, |_| found = true).map_err(|e| TsdbError::Corrupt(format!("series {id}: {e}")))?;
    Ok(found)
}

/// A part of a series being read: (chunk id, decoded chunk, range in it).
type Part = (i64, chunk_cache::Decoded, usize, usize);

/// Reads series `id`'s samples in [mint, maxt] from disk (through the
/// decoded-chunk cache), merges in `mem` (what the head holds, read
/// before), and with `without_stale` drops the staleness markers; into
/// `samples` (appended to, reserved once to the exact size).
fn read_one(
    tsdb: &Tsdb,
    conn: &rusqlite::Connection,
    (id, mint, maxt): (i64, i64, i64),
    mem: &[(i64, f64)],
    without_stale: bool,
    parts: &mut Vec<Part>,
    samples: &mut Vec<(i64, f64)>,
) -> Result<(), TsdbError> {
    // The parts of the series (decoded chunk, range), gathered first so that
    // its samples are copied once into a vector of exact size. (A chunk not
    // in time order, which is never written so but which the format allows,
    // is filtered into a part of its own.)
    parts.clear();
    // Whether a chunk read for this series holds staleness markers.
    let mut stale = false;
    let mut take = |chunk_id: i64, data: &[u8]| -> Result<(), TsdbError> {
        let shared = &tsdb.shared;
        let key = shared.chunk_cache.key_of(data);
        let decoded = match shared.chunk_cache.get(key, data) {
            Some((d, has_stale)) => {
                shared.metrics.chunk_cache_hits.inc();
                stale |= has_stale;
                d
            }
            None => {
                shared.metrics.chunk_cache_misses.inc();
                let corrupt = |e: String| TsdbError::Corrupt(format!("chunk {chunk_id} of series {id}: {e}"));
                // A compacted block is in a pack; the cache keys on the
                // reference (never reused, see pack.rs).
                let block = pack::block_of(conn, data).map_err(corrupt)?;
                let d = chunkenc::decode_block(&block).map_err(|e| corrupt(e.to_string()))?;
                if !d.windows(2).all(|w| w[0].0 <= w[1].0) {
                    // Not in time order (never written so, but the format
                    // allows it): filter, do not cache.
                    let kept: Vec<(i64, f64)> = d.into_iter().filter(|p| p.0 >= mint && p.0 <= maxt).collect();
                    stale |= has_stale_marker(&kept);
                    let n = kept.len();
                    parts.push((chunk_id, Arc::new(kept), 0, n));
                    return Ok(());
                }
                let has_stale = has_stale_marker(&d);
                stale |= has_stale;
                let d = Arc::new(d);
                shared.chunk_cache.put(key, data, d.clone(), has_stale);
                shared.metrics.chunk_cache_bytes.set(shared.chunk_cache.bytes() as i64);
                d
            }
        };
        // Samples are in time order within a chunk: copy only the range.
        let (lo, hi) = time_range(&decoded, mint, maxt);
        if lo < hi {
            parts.push((chunk_id, decoded, lo, hi));
        }
        Ok(())
    };
    // Chunk rows and the series' directory rows in one statement: one
    // snapshot (a compaction cannot move chunks between two reads) and,
    // outside a read transaction (the lazy reader), one shared lock.
    let (lo, hi) = blockdir::windows_for(mint, maxt);
    let mut refs = Vec::new();
    {
        let mut stmt = conn.prepare_cached(sqlite::SELECT_CHUNKS_AND_DIR)?;
        let mut rows = stmt.query(params![id, mint, maxt, blockdir::group_of(id), lo, hi])?;
        while let Some(row) = rows.next()? {
            let key: i64 = row.get(1)?;
            let data = row
                .get_ref(2)?
                .as_blob()
                .map_err(|e| TsdbError::Corrupt(format!("chunk of series {id}: {e}")))?;
            if row.get::<_, i64>(0)? == 0 {
                take(key, data)?;
            } else {
                blockdir::find(blockdir::group_of(id), key, data, id, mint, maxt, |e| refs.push((key, e.at)))
                    .map_err(|e| TsdbError::Corrupt(format!("series {id}: {e}")))?;
            }
        }
    }
    // Compacted blocks (the directory's) order before every chunk row: a
    // chunk row of a window was written after the window's last compaction;
    // by window among themselves (a stable sort keeps a row's order).
    refs.sort_by_key(|r| r.0);
    let mut data = Vec::with_capacity(16);
    for (k, (_, r)) in refs.iter().enumerate() {
        data.clear();
        r.encode(&mut data);
        take(i64::MIN + k as i64, &data)?;
    }
    // Persistence order: later chunks win on equal timestamps.
    parts.sort_by_key(|p| p.0);
    let len = parts.iter().map(|(_, _, lo, hi)| hi - lo).sum::<usize>() + mem.len();
    samples.reserve(len);
    for (_, d, lo, hi) in parts.iter() {
        samples.extend_from_slice(&d[*lo..*hi]);
    }
    samples.extend_from_slice(mem);
    if samples.is_empty() {
        return Ok(());
    }
    merge_last_write_wins(samples);
    if without_stale && (stale || has_stale_marker(mem)) {
        samples.retain(|p| !csoc_proto::is_stale_nan(p.1));
    }
    Ok(())
}

/// [`Queryable::select_lazy`] of the storage: the matching series, each
/// read (head, then disk) when a reader asks for it.
struct Lazy<'a> {
    tsdb: &'a Tsdb,
    mint: i64,
    maxt: i64,
    without_stale: bool,
    ids: Vec<i64>,
    labels: Vec<Arc<Labels>>,
}

impl LazySelection for Lazy<'_> {
    fn labels(&self) -> &[Arc<Labels>] {
        &self.labels
    }

    fn reader(&self) -> Result<Box<dyn SeriesReader + '_>, TsdbError> {
        // No read transaction across series: each series' chunks are read
        // in a snapshot taken after its head samples were (a transaction
        // begun before would keep a snapshot older than a later series'
        // head read, and a chunk persisted in between, gone from the head,
        // would be missed).
        let conn = self.tsdb.reader()?;
        Ok(Box::new(LazyReader {
            sel: self,
            conn: Some(conn),
            mem: Vec::new(),
            parts: Vec::new(),
        }))
    }
}

struct LazyReader<'a> {
    sel: &'a Lazy<'a>,
    /// Taken back to the pool on drop.
    conn: Option<rusqlite::Connection>,
    mem: Vec<(i64, f64)>,
    parts: Vec<Part>,
}

impl SeriesReader for LazyReader<'_> {
    fn read(&mut self, i: usize, buf: &mut Vec<(i64, f64)>) -> Result<(), TsdbError> {
        buf.clear();
        let sel = self.sel;
        let (Some(&id), Some(conn)) = (sel.ids.get(i), self.conn.as_ref()) else {
            return Ok(());
        };
        // Memory first, then disk (as `select`): a chunk persisted in
        // between is seen twice (harmless), never missed.
        self.mem.clear();
        sel.tsdb
            .shared
            .head
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .collect(id, sel.mint, sel.maxt, &mut self.mem);
        read_one(
            sel.tsdb,
            conn,
            (id, sel.mint, sel.maxt),
            &self.mem,
            sel.without_stale,
            &mut self.parts,
            buf,
        )
    }
}

impl Drop for LazyReader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.sel.tsdb.put_reader(conn);
        }
    }
}

/// The indexes `lo..hi` of the samples of `d` (in time order) within
/// `[mint, maxt]`. A query's range usually ends at or near a chunk's end
/// (instant queries, recent ranges): the search starts there and widens
/// (galloping), so that it touches the chunk's last cache lines rather than
/// probing the whole of a decoded day of samples.
fn time_range(d: &[(i64, f64)], mint: i64, maxt: i64) -> (usize, usize) {
    let hi = partition_from_end(d, |p| p.0 <= maxt);
    let before = &d[..hi];
    let lo = match (before.first(), before.last()) {
        // Nearer the start: a plain binary search.
        (Some(f), Some(l)) if mint.saturating_sub(f.0) < l.0.saturating_sub(mint) => before.partition_point(|p| p.0 < mint),
        _ => partition_from_end(before, |p| p.0 < mint),
    };
    (lo, hi)
}

/// `d.partition_point(is_before)`, searched from the end: probes 1, 2, 4, …
/// samples back until one is before, then a binary search in that last step.
fn partition_from_end(d: &[(i64, f64)], is_before: impl Fn(&(i64, f64)) -> bool) -> usize {
    let n = d.len();
    if n == 0 || is_before(&d[n - 1]) {
        return n;
    }
    // d[hi] is not before; the answer is at most hi.
    let mut hi = n - 1;
    let mut step = 1;
    loop {
        if step > hi {
            return d[..hi].partition_point(&is_before);
        }
        let probe = hi - step;
        if is_before(&d[probe]) {
            return probe + 1 + d[probe + 1..hi].partition_point(&is_before);
        }
        hi = probe;
        step *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::{Matcher, Queryable, TsdbOptions};

    fn open(dir: &std::path::Path) -> Tsdb {
        Tsdb::open(dir, &TsdbOptions::default(), &mut prometheus_client::registry::Registry::default()).expect("open")
    }

    /// Chunks come from the index in `maxt` order; a later chunk (higher
    /// id) must still win on equal timestamps when its `maxt` is lower.
    #[tokio::test]
    async fn a_later_chunk_wins_though_the_index_returns_it_first() {
        let d = tempfile::tempdir().expect("tempdir");
        let labels: Arc<Labels> = Arc::new(vec![("__name__".into(), "x".into())]);
        {
            let db = open(d.path());
            let mut a = db.appender();
            a.append(labels.clone(), 500, 0.5);
            a.commit().await.expect("commit");
            db.flush().await.expect("flush");
            db.close();
        }
        {
            let conn = sqlite::open_writer(&d.path().join("csoc.db")).expect("writer");
            let id: i64 = conn.query_row("SELECT id FROM series", [], |r| r.get(0)).expect("series id");
            let put = |s: &[(i64, f64)]| {
                let mut b = Vec::new();
                chunkenc::encode_block(s, &mut b);
                conn.execute(sqlite::INSERT_CHUNK, params![id, s[0].0, s[s.len() - 1].0, b])
                    .expect("insert");
            };
            put(&[(1000, 1.0), (2000, 2.0), (9000, 3.0)]);
            put(&[(2000, 7.0)]); // written later, ends earlier
        }
        let db = open(d.path());
        let s = db.querier(0, 10_000).select(&[Matcher::equal("__name__", "x")]).expect("select");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].samples, vec![(500, 0.5), (1000, 1.0), (2000, 7.0), (9000, 3.0)]);
        db.close();
    }

    /// A lazy reader reads each series from a snapshot taken after that
    /// series' head samples: a chunk persisted (and dropped from the head)
    /// between two series' reads is seen, not missed.
    #[tokio::test]
    async fn a_lazy_reader_sees_chunks_persisted_between_its_reads() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = open(d.path());
        let l = |n: &str| -> Arc<Labels> { Arc::new(vec![("__name__".into(), n.into())]) };
        let mut a = db.appender();
        for t in [1000, 2000, 3000] {
            a.append(l("a"), t, 1.0);
            a.append(l("b"), t, t as f64);
        }
        a.commit().await.expect("commit");
        let all = [Matcher::regex("__name__", ".+", false).expect("regex")];
        let lazy = db
            .select_lazy(0, 10_000, &all, false)
            .expect("lazy")
            .expect("the storage reads lazily");
        let mut reader = lazy.reader().expect("reader");
        let mut buf = Vec::new();
        reader.read(0, &mut buf).expect("read a");
        assert_eq!(buf, vec![(1000, 1.0), (2000, 1.0), (3000, 1.0)]);
        // Everything moves from the head to disk.
        db.flush().await.expect("flush");
        reader.read(1, &mut buf).expect("read b");
        assert_eq!(buf, vec![(1000, 1000.0), (2000, 2000.0), (3000, 3000.0)]);
        drop(reader);
        db.close();
    }

    /// `select_without_stale` equals `select` with the markers filtered out
    /// afterwards, for chunks on disk (read twice: decoded, then cached) and
    /// for the head.
    #[tokio::test]
    async fn select_without_stale_drops_markers_after_last_write_wins() {
        let stale = f64::from_bits(csoc_proto::STALE_NAN_BITS);
        let d = tempfile::tempdir().expect("tempdir");
        let l = |n: &str| -> Arc<Labels> { Arc::new(vec![("__name__".into(), n.into())]) };
        let db = open(d.path());
        let mut a = db.appender();
        for (t, v) in [(1000, 1.0), (2000, stale), (3000, 3.0)] {
            a.append(l("marked"), t, v);
        }
        a.append(l("plain"), 1000, 5.0);
        a.append(l("only_stale"), 1000, stale);
        a.commit().await.expect("commit");
        db.flush().await.expect("flush");
        // A later chunk whose marker wins on 3000 (and one for the head).
        {
            let conn = sqlite::open_writer(&d.path().join("csoc.db")).expect("writer");
            let id = db.read_index().id_of(&l("marked")).expect("series id");
            let mut b = Vec::new();
            chunkenc::encode_block(&[(3000, stale)], &mut b);
            conn.execute(sqlite::INSERT_CHUNK, params![id, 3000, 3000, b]).expect("insert");
        }
        let mut a = db.appender();
        a.append(l("plain"), 4000, stale);
        a.append(l("plain"), 5000, 6.0);
        a.commit().await.expect("commit");
        let all = [Matcher::regex("__name__", ".+", false).expect("regex")];
        let q = db.querier(0, 10_000);
        for round in 0..2 {
            let with = q.select(&all).expect("select");
            let without = q.select_without_stale(&all).expect("select");
            let mut want: Vec<(String, Vec<(i64, f64)>)> = with
                .iter()
                .map(|s| {
                    (
                        s.labels[0].1.clone(),
                        s.samples.iter().copied().filter(|p| !csoc_proto::is_stale_nan(p.1)).collect(),
                    )
                })
                .collect();
            want.retain(|(_, v): &(String, Vec<(i64, f64)>)| !v.is_empty());
            let got: Vec<(String, Vec<(i64, f64)>)> = without.iter().map(|s| (s.labels[0].1.clone(), s.samples.clone())).collect();
            assert_eq!(got, want, "round {round}");
            // Read lazily, series by series: the same, but for the series
            // left empty, which read as empty.
            for (stale_too, eager) in [(false, &with), (true, &without)] {
                let lazy = db
                    .select_lazy(0, 10_000, &all, stale_too)
                    .expect("lazy")
                    .expect("the storage reads lazily");
                let mut reader = lazy.reader().expect("reader");
                let mut buf = vec![(1, 1.0)];
                let mut read = Vec::new();
                for (i, l) in lazy.labels().iter().enumerate() {
                    reader.read(i, &mut buf).expect("read");
                    if !buf.is_empty() {
                        read.push(format!("{:?} {:?}", l, buf));
                    }
                }
                let eager: Vec<String> = eager.iter().map(|s| format!("{:?} {:?}", s.labels, s.samples)).collect();
                assert_eq!(read, eager, "round {round}, without_stale {stale_too}");
                assert_eq!(lazy.labels().len(), 3, "only_stale is still listed");
            }
            assert_eq!(
                got,
                vec![
                    ("marked".to_string(), vec![(1000, 1.0)]),
                    ("plain".to_string(), vec![(1000, 5.0), (5000, 6.0)]),
                ],
                "round {round}: the marker that won on 3000 hides 3.0; only_stale is gone"
            );
        }
        db.close();
    }

    #[test]
    fn time_range_equals_the_binary_search_everywhere() {
        for n in [0usize, 1, 2, 3, 7, 100, 1000] {
            // Timestamps 10 apart, with repeats, starting at 5.
            let d: Vec<(i64, f64)> = (0..n).map(|i| (5 + 10 * (i as i64 / 2) * 2, i as f64)).collect();
            let last = d.last().map_or(0, |p| p.0);
            for mint in (-20..last + 30).step_by(3) {
                for maxt in [mint - 1, mint, mint + 4, mint + 55, last - 1, last, last + 100] {
                    let want = (d.partition_point(|p| p.0 < mint), d.partition_point(|p| p.0 <= maxt));
                    let (lo, hi) = time_range(&d, mint, maxt);
                    if want.0 <= want.1 {
                        assert_eq!((lo, hi), want, "n {n} mint {mint} maxt {maxt}");
                    } else {
                        // An empty range (maxt < mint): nothing is copied.
                        assert!(lo >= hi || d[lo..hi].is_empty(), "n {n} mint {mint} maxt {maxt}");
                    }
                }
            }
        }
    }
}
