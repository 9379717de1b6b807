//! Compaction: merges a series' small level-0 chunks (closed head chunks of
//! ~120 samples) into level-1 blocks per time window, so that most data is
//! stored in few large blocks: the block codec compresses long runs far
//! better, and the per-row overhead of SQLite (row and index entries, ~50
//! bytes) is paid once per window instead of once per 120 samples.
//!
//! A window is `WINDOW_MS` long, aligned to the epoch. The writer compacts a
//! window once it is complete (ended before the newest sample minus a
//! margin), and a flush compacts everything. Late samples that arrive for an
//! already compacted window create new level-0 chunks there, which the next
//! pass merges in. Merging keeps the last write for equal timestamps
//! (chunks are read in persistence order). A merged window of more than
//! `MAX_BLOCK_SAMPLES` samples is split into several blocks. The blocks are
//! written into packs, one window per pack (pack.rs), and listed in the
//! block directory (blockdir.rs); a block it replaces frees its pack once
//! the pack's other blocks are gone.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Transaction, params};

use super::blockdir;
use super::chunkenc::{decode_block, encode_block};
use super::head::merge_last_write_wins;
use super::pack::{self, Packer};
use super::sqlite;

/// Length of a compaction window (ms): 24 hours, 5,760 samples at 15 s.
pub const WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Largest number of samples in one compacted block (a day at 15 s fits).
pub const MAX_BLOCK_SAMPLES: usize = 8192;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    /// (series, window) pairs merged.
    pub windows: usize,
    /// Chunks read and deleted.
    pub chunks_in: usize,
    /// Blocks written.
    pub blocks_out: usize,
}

/// The start of the window holding `t`.
pub fn window_start(t: i64) -> i64 {
    // (Saturating: i64::MIN, an open lower bound, stays itself.)
    t.saturating_sub(t.rem_euclid(WINDOW_MS))
}

/// Merges up to `limit` (series, window) pairs whose level-0 chunks start
/// before `before`. Returns what it did; fewer windows than `limit` means
/// nothing more is due.
pub fn compact(tx: &Transaction<'_>, before: i64, limit: usize) -> Result<CompactStats, rusqlite::Error> {
    let candidates: Vec<(i64, i64)> = {
        let mut st = tx.prepare_cached(sqlite::COMPACT_CANDIDATES)?;
        st.query_map(params![before, WINDOW_MS, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut stats = CompactStats::default();
    let mut sel = tx.prepare_cached(sqlite::CHUNKS_IN_WINDOW)?;
    let mut del = tx.prepare_cached(sqlite::DELETE_CHUNK)?;
    let mut packer = Packer::default();
    // Schema-3 packs that held a chunk row merged here: collected once the
    // pass is done.
    let mut touched = BTreeSet::new();
    // Directory rows whose series were rewritten: (grp, window) → series.
    let mut replaced: BTreeMap<(i64, i64), BTreeSet<i64>> = BTreeMap::new();
    let mut buf = Vec::new();
    'candidates: for (series_id, start) in candidates {
        // The window's block(s) from an earlier pass come first: every chunk
        // row of the window was written after it.
        let mut samples = Vec::new();
        let old = blockdir::entries_of(tx, series_id, start)?;
        for e in &old {
            match e.at.read(tx).and_then(|b| decode_block(&b).map_err(|e| e.to_string())) {
                Ok(s) => samples.extend(s),
                Err(err) => {
                    // Leave the window as it is (queries report the block).
                    tracing::error!(series = series_id, window = start, pack = e.at.pack, error = %err, "compaction: cannot read a block; window left as it is");
                    continue 'candidates;
                }
            }
        }
        let rows: Vec<(i64, Vec<u8>, Option<i64>)> = sel
            .query_map(params![series_id, start, start.saturating_add(WINDOW_MS)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut ids = Vec::with_capacity(rows.len());
        for (id, data, in_pack) in rows {
            match pack::block_of(tx, &data).and_then(|b| decode_block(&b).map_err(|e| e.to_string())) {
                Ok(s) => samples.extend(s),
                Err(e) => {
                    // Leave an undecodable chunk where it is (queries report
                    // it); merge the rest.
                    tracing::error!(chunk = id, series = series_id, error = %e, "compaction: cannot decode a chunk; left in place");
                    continue;
                }
            }
            ids.push(id);
            touched.extend(in_pack);
        }
        merge_last_write_wins(&mut samples);
        for id in &ids {
            del.execute(params![id])?;
        }
        if !old.is_empty() {
            replaced
                .entry((blockdir::group_of(series_id), start))
                .or_default()
                .insert(series_id);
        }
        for part in samples.chunks(MAX_BLOCK_SAMPLES) {
            let (Some(first), Some(last)) = (part.first(), part.last()) else {
                continue;
            };
            buf.clear();
            encode_block(part, &mut buf);
            packer.add(tx, start, series_id, first.0, last.0, &buf)?;
            stats.blocks_out += 1;
        }
        stats.windows += 1;
        stats.chunks_in += ids.len() + old.len();
    }
    packer.finish(tx)?;
    // The directory: per row, the rewritten series' old entries out, the
    // new blocks in.
    let mut added: BTreeMap<(i64, i64), Vec<blockdir::Entry>> = BTreeMap::new();
    for (window, e) in packer.take_written() {
        added.entry((blockdir::group_of(e.series), window)).or_default().push(e);
    }
    let keys: BTreeSet<(i64, i64)> = replaced.keys().chain(added.keys()).copied().collect();
    let mut ed = blockdir::Editor::default();
    for key in keys {
        let gone = replaced.remove(&key).unwrap_or_default();
        let new = added.remove(&key).unwrap_or_default();
        ed.edit(tx, key.0, key.1, |v| {
            v.retain(|e| !gone.contains(&e.series));
            v.extend(new);
        })?;
    }
    ed.finish(tx)?;
    pack::collect(tx, &touched)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_the_epoch() {
        assert_eq!(window_start(0), 0);
        assert_eq!(window_start(WINDOW_MS + 5), WINDOW_MS);
        assert_eq!(window_start(-1), -WINDOW_MS);
    }

    #[test]
    fn merges_chunks_of_a_window_with_last_write_winning() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut conn = sqlite::open_writer(&d.path().join("c.db")).expect("open");
        let tx = conn.transaction().expect("tx");
        let put = |s: &[(i64, f64)]| {
            let mut b = Vec::new();
            encode_block(s, &mut b);
            tx.execute(sqlite::INSERT_CHUNK, params![1, s[0].0, s[s.len() - 1].0, b])
                .expect("insert");
        };
        put(&[(1000, 1.0), (2000, 2.0)]);
        put(&[(3000, 3.0)]);
        put(&[(2000, 9.0)]); // a later rewrite
        put(&[(WINDOW_MS + 1, 4.0)]); // next window
        let st = compact(&tx, WINDOW_MS, 100).expect("compact");
        assert_eq!(
            st,
            CompactStats {
                windows: 1,
                chunks_in: 3,
                blocks_out: 1
            }
        );
        let blocks = blockdir::entries_of(&tx, 1, 0).expect("directory");
        assert_eq!(blocks.len(), 1);
        let read = |e: &blockdir::Entry| decode_block(&e.at.read(&tx).expect("block")).expect("decode");
        assert_eq!(read(&blocks[0]), vec![(1000, 1.0), (2000, 9.0), (3000, 3.0)]);
        assert_eq!((blocks[0].mint, blocks[0].maxt), (1000, 3000));
        let levels: Vec<i64> = tx
            .prepare("SELECT level FROM chunks WHERE series_id = 1")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(levels, vec![0], "the incomplete window is left alone");
        assert_eq!(compact(&tx, WINDOW_MS, 100).expect("again").windows, 0, "nothing more is due");
        // A late sample for the compacted window: merged with the packed
        // block, whose pack then goes (nothing else refers to it).
        put(&[(2500, 2.5)]);
        let st = compact(&tx, WINDOW_MS, 100).expect("late");
        assert_eq!((st.windows, st.chunks_in, st.blocks_out), (1, 2, 1));
        let blocks = blockdir::entries_of(&tx, 1, 0).expect("directory");
        assert_eq!(blocks.len(), 1, "the new block replaced the old");
        assert_eq!(read(&blocks[0]), vec![(1000, 1.0), (2000, 9.0), (2500, 2.5), (3000, 3.0)]);
        let packs: i64 = tx.query_row("SELECT count(*) FROM packs", [], |r| r.get(0)).expect("packs");
        assert_eq!(packs, 1, "the replaced block's pack is gone");
        blockdir::check(&tx).expect("reference counts");
        // A schema-3 chunk row of a compacted block (a reference into a
        // pack) is merged too, and its pack collected.
        let late = blocks[0];
        let mut data = Vec::new();
        late.at.encode(&mut data);
        tx.execute(sqlite::INSERT_CHUNK_PACKED, params![2, late.mint, late.maxt, &data, late.at.pack])
            .expect("legacy row");
        put(&[(3500, 3.5)]);
        let mut b = Vec::new();
        encode_block(&[(3600, 3.6)], &mut b);
        tx.execute(sqlite::INSERT_CHUNK, params![2, 3600, 3600, b])
            .expect("late for series 2");
        let st = compact(&tx, WINDOW_MS, 100).expect("legacy");
        assert_eq!(st.windows, 2, "series 1 and series 2, each with a late sample");
        let b2 = blockdir::entries_of(&tx, 2, 0).expect("directory");
        assert_eq!(read(&b2[0]), vec![(1000, 1.0), (2000, 9.0), (2500, 2.5), (3000, 3.0), (3600, 3.6)]);
        let legacy: i64 = tx
            .query_row("SELECT count(*) FROM chunks WHERE level = 1", [], |r| r.get(0))
            .expect("rows");
        assert_eq!(legacy, 0);
        blockdir::check(&tx).expect("reference counts");
    }
}
