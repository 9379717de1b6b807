//! The agent's on-disk spool: every batch is written here before it is sent
//! and stays until the collector acknowledges it, so an outage of the
//! collector or a crash of the agent loses nothing that was collected (up to
//! the size limit).
//!
//! # Invariants
//! - A batch file exists on disk, complete, before the batch is sent.
//!   (Written to `*.tmp`, fsynced, then renamed: a crash never leaves a torn
//!   batch file, at worst a stray `*.tmp`, removed at open.)
//! - Sequence numbers are strictly increasing within an epoch and never
//!   reused: `next_seq = max(highest file seq, acked_seq) + 1`, and the state
//!   file is updated before acknowledged files are deleted.
//! - When the spool would exceed its size limit, the oldest batches are
//!   dropped (counted in `csoc_agent_spool_dropped_*` and logged), never the
//!   newest.
//! - A spool directory is used by one agent at a time (an exclusive `flock`
//!   on `lock`).
//!
//! # Layout
//! ```text
//! <dir>/lock                          flock'ed while the agent runs
//! <dir>/state                         "epoch <u64>\nacked <u64>\n"
//! <dir>/<seq:020>-<samples>.batch     one encoded csoc.v1.WriteBatch
//! ```
//! A spooled batch is self-contained: its `new_series` define every ref its
//! samples use (refs local to the batch). The shipper maps them to the
//! stream's refs when it sends.
//!
//! # Hot copies
//! A batch just pushed is also kept in memory, and its first [`Spool::read`]
//! hands that copy over instead of reading and decoding the file again. The
//! file is written and fsynced first all the same; a later read of the same
//! seq (after a reconnect, say) comes from the file. The copies are bounded
//! by [`HOT_MAX_BYTES`] of encoded bytes; the newest win, so that while the
//! collector is away the spool holds at most that much in memory.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use csoc_proto::v1::WriteBatch;
use prost::Message;

use crate::metrics::ShipperMetrics;

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// An I/O error on a spool file.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another agent holds the spool.
    #[error("spool {0} is in use by another csoc-agent process (give each agent its own --spool-dir)")]
    Locked(PathBuf),
    /// A spool file could not be decoded.
    #[error("spool file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encoded bytes of the batches the spool keeps in memory as well as on
/// disk, waiting for their first read (see the module docs). A scrape of
/// 10,000 series is a batch of about 1 MiB; the shipper normally reads each
/// batch right after it is pushed.
pub const HOT_MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    bytes: u64,
    samples: u64,
    /// The batch as pushed, until its first read.
    hot: Option<WriteBatch>,
}

/// What [`Spool::ack_through`] or the size limit removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Batches removed.
    pub batches: u64,
    /// Samples in them.
    pub samples: u64,
}

/// The on-disk spool. See the module docs for its invariants.
pub struct Spool {
    dir: PathBuf,
    epoch: u64,
    acked: u64,
    next_seq: u64,
    max_bytes: u64,
    total_bytes: u64,
    entries: BTreeMap<u64, Entry>,
    /// Encoded bytes of the entries that hold a hot copy.
    hot_bytes: u64,
    /// Budget of `hot_bytes` ([`HOT_MAX_BYTES`]).
    hot_max: u64,
    /// Seqs pushed with a hot copy, oldest first (some may have been read
    /// or removed since).
    hot_seqs: std::collections::VecDeque<u64>,
    _lock: File,
    metrics: Option<ShipperMetrics>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Option<ShipperMetrics>) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| SpoolError::Locked(dir.to_path_buf()))?;

        let state_path = dir.join("state");
        let (epoch, acked, fresh) = match fs::read_to_string(&state_path) {
            Ok(s) => {
                let (e, a) = parse_state(&s).ok_or_else(|| SpoolError::Corrupt {
                    path: state_path.clone(),
                    reason: "expected \"epoch <n>\\nacked <n>\"".into(),
                })?;
                (e, a, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (csoc_common::retry::random_u64() >> 1 | 1, 0, true),
            Err(e) => return Err(io(&state_path)(e)),
        };
        let mut entries = BTreeMap::new();
        let mut total_bytes = 0;
        for de in fs::read_dir(dir).map_err(io(dir))? {
            let de = de.map_err(io(dir))?;
            let path = de.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(".batch") else { continue };
            let Some((seq, samples)) = stem
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            else {
                tracing::warn!(file = %path.display(), "ignoring a file in the spool that is not a batch");
                continue;
            };
            if seq <= acked {
                // Acknowledged before a crash, deletion did not happen.
                let _ = fs::remove_file(&path);
                continue;
            }
            let bytes = de.metadata().map_err(io(&path))?.len();
            total_bytes += bytes;
            entries.insert(
                seq,
                Entry {
                    path,
                    bytes,
                    samples,
                    hot: None,
                },
            );
        }
        let next_seq = entries.keys().next_back().copied().unwrap_or(0).max(acked) + 1;
        let spool = Spool {
            dir: dir.to_path_buf(),
            epoch,
            acked,
            next_seq,
            max_bytes,
            total_bytes,
            entries,
            hot_bytes: 0,
            hot_max: HOT_MAX_BYTES,
            hot_seqs: std::collections::VecDeque::new(),
            _lock: lock,
            metrics,
        };
        if let Some(m) = &spool.metrics {
            m.spool_max_bytes.set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        }
        if fresh {
            spool.write_state()?;
        }
        if !spool.entries.is_empty() {
            tracing::info!(
                dir = %dir.display(),
                batches = spool.entries.len(),
                bytes = spool.total_bytes,
                "spool holds batches from an earlier run; they will be sent first"
            );
        }
        spool.update_gauges();
        Ok(spool)
    }

    /// The spool's epoch (sent in Hello).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of batches waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The highest acknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    fn write_state(&self) -> Result<(), SpoolError> {
        let path = self.dir.join("state");
        let tmp = self.dir.join("state.tmp");
        fs::write(&tmp, format!("epoch {}\nacked {}\n", self.epoch, self.acked)).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    fn update_gauges(&self) {
        if let Some(m) = &self.metrics {
            m.spool_batches.set(self.entries.len() as i64);
            m.spool_bytes.set(self.total_bytes as i64);
        }
    }

    /// Assigns the next sequence number to `batch`, writes it durably and
    /// returns the seq. Drops the oldest batches first if the spool would
    /// exceed its limit.
    pub fn push(&mut self, mut batch: WriteBatch) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        batch.seq = seq;
        let samples = batch.refs.len() as u64;
        let buf = batch.encode_to_vec();
        let bytes = buf.len() as u64;
        let dropped = self.make_room(bytes);
        if dropped.batches > 0 {
            tracing::warn!(
                dropped_batches = dropped.batches,
                dropped_samples = dropped.samples,
                max_bytes = self.max_bytes,
                "spool full: dropped the oldest batches (raise spool_max_bytes or restore the collector link)"
            );
            if let Some(m) = &self.metrics {
                m.spool_dropped_batches.inc_by(dropped.batches);
                m.spool_dropped_samples.inc_by(dropped.samples);
            }
        }
        let path = self.dir.join(format!("{seq:020}-{samples}.batch"));
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&buf).map_err(io(&tmp))?;
            f.sync_data().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        self.next_seq += 1;
        self.total_bytes += bytes;
        let hot = self.make_hot_room(bytes).then(|| {
            self.hot_bytes += bytes;
            self.hot_seqs.push_back(seq);
            batch
        });
        self.entries.insert(seq, Entry { path, bytes, samples, hot });
        self.update_gauges();
        if let Some(m) = &self.metrics {
            m.spooled_samples.inc_by(samples);
        }
        Ok(seq)
    }

    /// Drops the oldest hot copies until `incoming` more bytes fit in the
    /// budget; false when they cannot (a batch larger than the budget).
    fn make_hot_room(&mut self, incoming: u64) -> bool {
        if incoming > self.hot_max {
            return false;
        }
        while let Some(&seq) = self.hot_seqs.front() {
            let is_hot = self.entries.get(&seq).is_some_and(|e| e.hot.is_some());
            if is_hot && self.hot_bytes + incoming <= self.hot_max {
                break;
            }
            self.hot_seqs.pop_front();
            if let Some(e) = self.entries.get_mut(&seq)
                && e.hot.take().is_some()
            {
                self.hot_bytes -= e.bytes;
            }
        }
        true
    }

    fn make_room(&mut self, incoming: u64) -> Removed {
        let mut removed = Removed::default();
        while self.total_bytes + incoming > self.max_bytes {
            let Some((&seq, _)) = self.entries.iter().next() else { break };
            if let Some(e) = self.remove_entry(seq) {
                removed.batches += 1;
                removed.samples += e.samples;
            }
        }
        removed
    }

    fn remove_entry(&mut self, seq: u64) -> Option<Entry> {
        let e = self.entries.remove(&seq)?;
        self.total_bytes -= e.bytes;
        if e.hot.is_some() {
            self.hot_bytes -= e.bytes;
        }
        if let Err(err) = fs::remove_file(&e.path) {
            tracing::warn!(file = %e.path.display(), error = %err, "cannot delete spool file");
        }
        Some(e)
    }

    /// The first waiting seq greater than `after`.
    pub fn next_after(&self, after: u64) -> Option<u64> {
        self.entries.range(after + 1..).next().map(|(s, _)| *s)
    }

    /// Reads batch `seq`; `Ok(None)` when it is no longer in the spool.
    /// The first read of a batch pushed by this process takes its hot copy;
    /// other reads decode the file. A corrupt file is removed and reported
    /// as an error.
    pub fn read(&mut self, seq: u64) -> Result<Option<WriteBatch>, SpoolError> {
        let Some(e) = self.entries.get_mut(&seq) else { return Ok(None) };
        if let Some(b) = e.hot.take() {
            self.hot_bytes -= e.bytes;
            return Ok(Some(b));
        }
        let path = e.path.clone();
        let buf = fs::read(&path).map_err(io(&path))?;
        match WriteBatch::decode(buf.as_slice()) {
            Ok(mut b) => {
                b.seq = seq;
                Ok(Some(b))
            }
            Err(err) => {
                self.remove_entry(seq);
                self.update_gauges();
                Err(SpoolError::Corrupt {
                    path,
                    reason: err.to_string(),
                })
            }
        }
    }

    /// Everything up to and including `seq` is durably stored by the
    /// collector: forget it.
    pub fn ack_through(&mut self, seq: u64) -> Result<Removed, SpoolError> {
        let mut removed = Removed::default();
        if seq > self.acked {
            self.acked = seq;
            self.next_seq = self.next_seq.max(seq + 1);
            // State first, then delete: a crash in between leaves files that
            // open() recognises as acknowledged.
            self.write_state()?;
        }
        let done: Vec<u64> = self.entries.range(..=seq).map(|(s, _)| *s).collect();
        for s in done {
            if let Some(e) = self.remove_entry(s) {
                removed.batches += 1;
                removed.samples += e.samples;
            }
        }
        self.update_gauges();
        Ok(removed)
    }

    /// Forgets one batch the collector rejected for good.
    pub fn discard(&mut self, seq: u64) -> Option<u64> {
        let e = self.remove_entry(seq);
        self.update_gauges();
        e.map(|e| e.samples)
    }
}

fn parse_state(s: &str) -> Option<(u64, u64)> {
    let mut epoch = None;
    let mut acked = None;
    for line in s.lines() {
        match line.split_once(' ') {
            Some(("epoch", v)) => epoch = v.trim().parse().ok(),
            Some(("acked", v)) => acked = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some((epoch?, acked?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> WriteBatch {
        WriteBatch {
            refs: vec![0; n],
            timestamps_ms: vec![1; n],
            values: vec![1.0; n],
            ..Default::default()
        }
    }

    #[test]
    fn push_read_ack_and_reopen() {
        let d = tempfile::tempdir().expect("tempdir");
        let epoch;
        {
            let mut s = Spool::open(d.path(), 1 << 20, None).expect("open");
            epoch = s.epoch();
            assert_eq!(s.push(batch(3)).expect("push"), 1);
            assert_eq!(s.push(batch(4)).expect("push"), 2);
            assert_eq!(s.push(batch(5)).expect("push"), 3);
            assert_eq!(s.read(2).expect("read").expect("present").refs.len(), 4);
            assert_eq!(s.ack_through(1).expect("ack"), Removed { batches: 1, samples: 3 });
            assert_eq!(s.next_after(0), Some(2));
        }
        // A restart keeps the epoch, the waiting batches and the numbering.
        let mut s = Spool::open(d.path(), 1 << 20, None).expect("reopen");
        assert_eq!(s.epoch(), epoch);
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_after(0), Some(2));
        assert_eq!(s.push(batch(1)).expect("push"), 4);
        assert_eq!(s.ack_through(4).expect("ack"), Removed { batches: 3, samples: 10 });
        assert!(s.is_empty());
        drop(s);
        // Numbering continues after everything was acknowledged.
        let mut s = Spool::open(d.path(), 1 << 20, None).expect("reopen");
        assert_eq!(s.push(batch(1)).expect("push"), 5);
    }

    #[test]
    fn the_first_read_takes_the_hot_copy_and_later_reads_decode_the_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(d.path(), 1 << 20, None).expect("open");
        let seq = s.push(batch(7)).expect("push");
        let file = s.entries[&seq].path.clone();
        let on_disk = WriteBatch::decode(fs::read(&file).expect("file").as_slice()).expect("decodes");
        // The file is written before the batch can be read; the first read
        // does not touch it (garbage in the file goes unnoticed)...
        fs::write(&file, b"\xff\xff\xff").expect("overwrite");
        let hot = s.read(seq).expect("read").expect("present");
        assert_eq!(hot, on_disk, "the hot copy is the batch as written");
        assert_eq!(s.hot_bytes, 0);
        // ...the second one reads the file.
        assert!(matches!(s.read(seq), Err(SpoolError::Corrupt { .. })));
        // Beyond the budget, batches are kept on disk only.
        drop(s);
        let mut s = Spool::open(d.path(), u64::MAX, None).expect("reopen");
        s.hot_max = 2 * batch(2000).encode_to_vec().len() as u64 + 8;
        let hot: Vec<bool> = (0..4)
            .map(|_| {
                let seq = s.push(batch(2000)).expect("push");
                s.entries[&seq].hot.is_some()
            })
            .collect();
        assert_eq!(hot, [true; 4]);
        let hot_now: Vec<u64> = s.entries.iter().filter(|(_, e)| e.hot.is_some()).map(|(q, _)| *q).collect();
        assert_eq!(hot_now, [3, 4], "the newest two are kept");
        assert!(s.hot_bytes <= s.hot_max);
        assert!(s.hot_seqs.len() <= 2, "read or dropped seqs do not pile up");
        let first = s.read(1).expect("read").expect("present");
        assert_eq!(first.refs.len(), 2000, "an evicted copy is read from its file");
        // A batch larger than the whole budget is not kept.
        let big = s.push(batch(10_000)).expect("push");
        assert!(s.entries[&big].hot.is_none());
        assert_eq!(s.ack_through(u64::MAX - 1).expect("ack").batches, 5);
        assert_eq!(s.hot_bytes, 0, "acknowledged batches give their budget back");
    }

    #[test]
    fn full_spool_drops_oldest() {
        let d = tempfile::tempdir().expect("tempdir");
        let one = batch(10).encode_to_vec().len() as u64 + 2;
        let mut s = Spool::open(d.path(), one * 3, None).expect("open");
        for _ in 0..5 {
            s.push(batch(10)).expect("push");
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.next_after(0), Some(3), "the two oldest went");
        assert!(s.bytes() <= one * 3);
    }

    #[test]
    fn second_agent_on_same_spool_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let _a = Spool::open(d.path(), 1 << 20, None).expect("open");
        let err = Spool::open(d.path(), 1 << 20, None).err().expect("locked");
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn corrupt_batch_is_reported_and_removed() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(d.path(), 1 << 20, None).expect("open");
        s.push(batch(1)).expect("push");
        drop(s);
        let path = d.path().join(format!("{:020}-1.batch", 1));
        fs::write(&path, [0xff, 0xff, 0xff]).expect("corrupt");
        // Read after a restart, from the file (no hot copy).
        let mut s = Spool::open(d.path(), 1 << 20, None).expect("reopen");
        let err = s.read(1).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert!(s.is_empty());
        assert!(!path.exists());
    }
}
