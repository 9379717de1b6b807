//! The head: the in-memory part of the storage. Each series has an open
//! Gorilla chunk for in-order samples and a small sorted buffer for
//! out-of-order and rewritten samples. Full chunks are closed into the
//! `pending` list, which the writer persists to SQLite in its next
//! transaction and only then drops from memory.
//!
//! Ordering invariant (for last-write-wins): for one series, the sources
//! `persisted chunks (by rowid) → pending (in order) → open chunk → ooo
//! buffer` are ordered oldest write first for any shared timestamp. This
//! holds because (1) the open chunk only takes samples newer than its last,
//! so a rewrite or late sample goes to the ooo buffer, which is thus newer
//! than the open chunk at equal timestamps; (2) closing a series always
//! pushes the open chunk before the ooo buffer; (3) pending chunks are
//! persisted in order.

use super::chunkenc::XorChunk;

/// Samples per closed chunk.
pub const CHUNK_SAMPLES: usize = 120;
/// Out-of-order samples buffered per series before they are flushed.
pub const OOO_SAMPLES: usize = 32;
/// Longest time span of an open chunk (ms).
pub const MAX_CHUNK_SPAN_MS: i64 = 2 * 3600 * 1000;

/// One series in memory.
#[derive(Debug)]
pub struct MemSeries {
    open: XorChunk,
    ooo: Vec<(i64, f64)>,
    /// WAL row of the oldest sample not yet in a pending or persisted chunk
    /// (0: none).
    first_wal: u64,
}

/// A closed chunk waiting to be persisted.
#[derive(Debug)]
pub struct PendingChunk {
    /// Series id.
    pub series_id: i64,
    /// Samples, sorted by time, unique timestamps.
    pub samples: Vec<(i64, f64)>,
    /// WAL row of its oldest sample.
    pub first_wal: u64,
}

/// All series in memory.
#[derive(Debug, Default)]
pub struct Head {
    series: Vec<Option<MemSeries>>,
    /// Closed chunks, oldest first.
    pub pending: Vec<PendingChunk>,
    /// Highest timestamp appended.
    pub max_t: i64,
    samples_in_memory: usize,
}

impl Head {
    /// Registers a series (idempotent).
    pub fn ensure(&mut self, id: i64) {
        let i = id as usize;
        if self.series.len() <= i {
            self.series.resize_with(i + 1, || None);
        }
        if self.series[i].is_none() {
            self.series[i] = Some(MemSeries {
                open: XorChunk::new(),
                ooo: Vec::new(),
                first_wal: 0,
            });
        }
    }

    /// Appends one sample of a known series, written in WAL row `wal_id`.
    /// Returns false when the series is unknown.
    pub fn append(&mut self, id: i64, t: i64, v: f64, wal_id: u64) -> bool {
        let i = id as usize;
        let Some(Some(s)) = self.series.get_mut(i) else { return false };
        if s.first_wal == 0 {
            s.first_wal = wal_id;
        }
        let in_order = s.open.max_time().is_none_or(|m| t > m);
        if in_order {
            let full = s.open.len() >= CHUNK_SAMPLES || s.open.min_time().is_some_and(|m| t.saturating_sub(m) > MAX_CHUNK_SPAN_MS);
            if full {
                self.close(id);
                if let Some(Some(s)) = self.series.get_mut(i) {
                    s.first_wal = wal_id;
                    s.open.append(t, v);
                }
            } else {
                s.open.append(t, v);
            }
        } else {
            match s.ooo.binary_search_by_key(&t, |p| p.0) {
                Ok(j) => s.ooo[j].1 = v,
                Err(j) => s.ooo.insert(j, (t, v)),
            }
            if s.ooo.len() >= OOO_SAMPLES {
                self.close(id);
            }
        }
        self.samples_in_memory += 1;
        if t > self.max_t {
            self.max_t = t;
        }
        true
    }

    /// Closes series `id`'s open chunk, then its ooo buffer, into pending.
    pub fn close(&mut self, id: i64) {
        let Some(Some(s)) = self.series.get_mut(id as usize) else { return };
        let first_wal = s.first_wal;
        s.first_wal = 0;
        if !s.open.is_empty() {
            let samples: Vec<(i64, f64)> = s.open.iter().collect();
            s.open = XorChunk::new();
            self.pending.push(PendingChunk {
                series_id: id,
                samples,
                first_wal,
            });
        }
        if !s.ooo.is_empty() {
            let samples = std::mem::take(&mut s.ooo);
            self.pending.push(PendingChunk {
                series_id: id,
                samples,
                first_wal,
            });
        }
    }

    /// Closes every series whose open data starts before `cutoff` (all
    /// series with `i64::MAX`). Returns how many were closed.
    pub fn close_older_than(&mut self, cutoff: i64) -> usize {
        let ids: Vec<i64> = self
            .series
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                let min = match (s.open.min_time(), s.ooo.first()) {
                    (Some(a), Some(b)) => a.min(b.0),
                    (Some(a), None) => a,
                    (None, Some(b)) => b.0,
                    (None, None) => return None,
                };
                (min < cutoff).then_some(i as i64)
            })
            .collect();
        for id in &ids {
            self.close(*id);
        }
        ids.len()
    }

    /// Drops the first `n` pending chunks (they are persisted).
    pub fn drop_pending(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        let samples: usize = self.pending[..n].iter().map(|p| p.samples.len()).sum();
        self.samples_in_memory = self.samples_in_memory.saturating_sub(samples);
        self.pending.drain(..n);
    }

    /// The lowest WAL row still needed to rebuild what is only in memory
    /// (`None` when everything is persisted).
    pub fn wal_watermark(&self) -> Option<u64> {
        let series = self.series.iter().flatten().map(|s| s.first_wal).filter(|w| *w > 0);
        let pending = self.pending.iter().map(|p| p.first_wal).filter(|w| *w > 0);
        series.chain(pending).min()
    }

    /// Approximate samples held in memory (open, ooo and pending).
    pub fn samples_in_memory(&self) -> usize {
        self.samples_in_memory
    }

    /// Appends series `id`'s in-memory samples within `[mint, maxt]` to
    /// `out`, oldest write first (pending, open chunk, ooo buffer).
    pub fn collect(&self, id: i64, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        let in_range = |p: &(i64, f64)| p.0 >= mint && p.0 <= maxt;
        for p in self.pending.iter().filter(|p| p.series_id == id) {
            out.extend(p.samples.iter().copied().filter(in_range));
        }
        if let Some(Some(s)) = self.series.get(id as usize) {
            if s.open.max_time().is_some_and(|m| m >= mint) && s.open.min_time().is_some_and(|m| m <= maxt) {
                out.extend(s.open.iter().filter(in_range));
            }
            out.extend(s.ooo.iter().copied().filter(in_range));
        }
    }
}

/// What the head holds, for `/api/v1/status/tsdb`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadStats {
    /// Chunks in memory: open chunks, out-of-order buffers and closed
    /// chunks not yet persisted.
    pub chunks: usize,
    /// Lowest timestamp in memory.
    pub min_time: Option<i64>,
    /// Highest timestamp in memory.
    pub max_time: Option<i64>,
}

impl Head {
    /// Chunks and time bounds of what is in memory (read-only).
    pub fn stats(&self) -> HeadStats {
        let mut st = HeadStats::default();
        let mut see = |lo: i64, hi: i64| {
            st.chunks += 1;
            st.min_time = Some(st.min_time.map_or(lo, |m| m.min(lo)));
            st.max_time = Some(st.max_time.map_or(hi, |m| m.max(hi)));
        };
        for s in self.series.iter().flatten() {
            if let (Some(lo), Some(hi)) = (s.open.min_time(), s.open.max_time()) {
                see(lo, hi);
            }
            if let (Some(lo), Some(hi)) = (s.ooo.first(), s.ooo.last()) {
                see(lo.0, hi.0);
            }
        }
        for p in &self.pending {
            if let (Some(lo), Some(hi)) = (p.samples.first(), p.samples.last()) {
                see(lo.0, hi.0);
            }
        }
        st
    }

    /// Adds to `out` the ids of the series with data in memory that
    /// overlaps `[mint, maxt]` (chunk granularity for open and pending
    /// chunks, exact for out-of-order buffers). Read-only.
    pub fn ids_overlapping(&self, mint: i64, maxt: i64, out: &mut std::collections::HashSet<i64>) {
        let overlaps = |lo: i64, hi: i64| hi >= mint && lo <= maxt;
        for (i, s) in self.series.iter().enumerate() {
            let Some(s) = s else { continue };
            let open = matches!((s.open.min_time(), s.open.max_time()), (Some(lo), Some(hi)) if overlaps(lo, hi));
            if open || s.ooo.iter().any(|p| p.0 >= mint && p.0 <= maxt) {
                out.insert(i as i64);
            }
        }
        for p in &self.pending {
            if let (Some(lo), Some(hi)) = (p.samples.first(), p.samples.last())
                && overlaps(lo.0, hi.0)
            {
                out.insert(p.series_id);
            }
        }
    }
}

/// Sorts samples gathered oldest-write-first by time and keeps, for each
/// timestamp, the last write.
pub fn merge_last_write_wins(samples: &mut Vec<(i64, f64)>) {
    // The common case (one chunk, or chunks in order): nothing to do.
    if samples.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    // Stable: among equal timestamps the write order is kept.
    samples.sort_by_key(|p| p.0);
    let mut w = 0usize;
    for r in 0..samples.len() {
        if w > 0 && samples[w - 1].0 == samples[r].0 {
            samples[w - 1] = samples[r];
        } else {
            samples[w] = samples[r];
            w += 1;
        }
    }
    samples.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(id: i64) -> Head {
        let mut h = Head::default();
        h.ensure(id);
        h
    }

    fn read(h: &Head, id: i64) -> Vec<(i64, f64)> {
        let mut v = Vec::new();
        h.collect(id, i64::MIN, i64::MAX, &mut v);
        merge_last_write_wins(&mut v);
        v
    }

    /// Found with the `ingest_frames` fuzz harness: a series whose first
    /// sample is near `i64::MIN` and whose next is positive overflowed the
    /// chunk-span check (a panic of the writer thread where overflow checks
    /// are on). The span is now saturated: the chunk is closed as too long.
    #[test]
    fn extreme_timestamps_do_not_overflow_the_span_check() {
        let mut h = head_with(1);
        for (t, wal) in [(i64::MIN + 1, 1), (1000, 2), (i64::MAX, 3)] {
            assert!(h.append(1, t, 1.0, wal));
        }
        assert_eq!(read(&h, 1), vec![(i64::MIN + 1, 1.0), (1000, 1.0), (i64::MAX, 1.0)]);
        assert_eq!(h.pending.len(), 2, "each sample after a too-long span closes the open chunk");
    }

    #[test]
    fn in_order_late_and_rewritten_samples() {
        let mut h = head_with(1);
        for t in [10, 20, 30] {
            assert!(h.append(1, t, t as f64, 1));
        }
        h.append(1, 15, 1.5, 2); // late
        h.append(1, 20, 99.0, 2); // rewrite: last write wins
        assert_eq!(read(&h, 1), vec![(10, 10.0), (15, 1.5), (20, 99.0), (30, 30.0)]);
        assert!(!h.append(2, 1, 1.0, 1), "unknown series");
    }

    #[test]
    fn closing_keeps_order_and_tracks_the_wal_watermark() {
        let mut h = head_with(1);
        for i in 0..(CHUNK_SAMPLES as i64 + 5) {
            h.append(1, i * 1000, i as f64, 10 + i as u64);
        }
        assert_eq!(h.pending.len(), 1, "one full chunk closed");
        assert_eq!(h.pending[0].samples.len(), CHUNK_SAMPLES);
        assert_eq!(h.wal_watermark(), Some(10));
        h.drop_pending(1);
        assert_eq!(h.wal_watermark(), Some(10 + CHUNK_SAMPLES as u64));
        // A rewrite of a sample that is in a closed chunk: newer in the head.
        h.append(1, 0, -1.0, 500);
        assert_eq!(read(&h, 1)[0], (0, -1.0));
        assert_eq!(h.close_older_than(i64::MAX), 1);
        assert_eq!(h.wal_watermark(), Some(10 + CHUNK_SAMPLES as u64), "pending still holds it");
        h.drop_pending(h.pending.len());
        assert_eq!(h.wal_watermark(), None);
    }

    #[test]
    fn merge_keeps_last_write() {
        let mut v = vec![(2, 1.0), (1, 1.0), (2, 2.0), (3, 3.0), (2, 3.0)];
        merge_last_write_wins(&mut v);
        assert_eq!(v, vec![(1, 1.0), (2, 3.0), (3, 3.0)]);
    }

    #[test]
    fn stats_and_overlap_are_read_only_views() {
        let mut h = head_with(1);
        h.ensure(2);
        h.ensure(3);
        assert_eq!(h.stats(), HeadStats::default());
        for i in 0..(CHUNK_SAMPLES as i64 + 2) {
            h.append(1, 1_000 + i, 1.0, 1);
        }
        h.append(1, 5, 1.0, 2); // out of order
        h.append(2, 50_000, 1.0, 2);
        let st = h.stats();
        assert_eq!(st.chunks, 4, "one pending, two open, one ooo buffer: {st:?}");
        assert_eq!((st.min_time, st.max_time), (Some(5), Some(50_000)));
        let mut ids = std::collections::HashSet::new();
        h.ids_overlapping(0, 10, &mut ids);
        assert_eq!(ids, [1].into(), "the ooo sample");
        ids.clear();
        h.ids_overlapping(40_000, 60_000, &mut ids);
        assert_eq!(ids, [2].into());
        ids.clear();
        h.ids_overlapping(1_000, 1_001, &mut ids);
        assert_eq!(ids, [1].into(), "the pending chunk");
        assert_eq!(read(&h, 1).len(), CHUNK_SAMPLES + 3, "nothing changed");
    }

    #[test]
    fn chunk_span_is_bounded() {
        let mut h = head_with(1);
        h.append(1, 0, 1.0, 1);
        h.append(1, MAX_CHUNK_SPAN_MS + 1, 2.0, 2);
        assert_eq!(h.pending.len(), 1);
    }
}
