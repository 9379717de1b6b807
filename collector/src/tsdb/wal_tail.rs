//! Reading the WAL from the outside: the feed of remote write.
//!
//! A consumer (one per remote-write target) registers a [`WalHold`] when the
//! storage opens. The hold is its position: the last WAL record it has
//! fully handled. The writer's checkpoint never deletes a record above a
//! hold's position, so records wait in the WAL while a remote is down, up
//! to the hold's `max_backlog` bytes; past that the oldest unsent records
//! are given up (the hold jumps forward) and counted in `dropped_samples`.
//!
//! WAL record ids only grow, also across restarts and a WAL emptied by a
//! checkpoint (the highest id is kept in `meta`), so a saved position
//! stays meaningful.
//!
//! [`WalRows`] is the writer's ledger of the records in the table (samples
//! and bytes per id), so backlogs are summed without reading blobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::params;

use super::{Labels, Shared, TsdbError, record, sqlite};

/// "Not positioned yet": the hold keeps nothing.
pub const UNSET: u64 = u64::MAX;

/// A consumer's position in the WAL.
#[derive(Debug)]
pub struct WalHold {
    name: String,
    pos: AtomicU64,
    /// The last record of the batch being sent (0: none).
    inflight: AtomicU64,
    max_backlog: u64,
    dropped_samples: AtomicU64,
    dropped_records: AtomicU64,
}

impl WalHold {
    /// "Not positioned yet": the hold keeps nothing.
    pub const UNSET: u64 = UNSET;

    /// A hold at `pos` (the last record handled; [`UNSET`] to position it
    /// later with [`WalHold::advance`]). `max_backlog`: bytes of records
    /// above the position kept at most.
    pub fn new(name: &str, pos: u64, max_backlog: u64) -> Self {
        WalHold {
            name: name.to_string(),
            pos: AtomicU64::new(pos),
            inflight: AtomicU64::new(0),
            max_backlog,
            dropped_samples: AtomicU64::new(0),
            dropped_records: AtomicU64::new(0),
        }
    }

    /// The consumer's name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last record handled ([`UNSET`] when not positioned).
    pub fn position(&self) -> u64 {
        self.pos.load(Ordering::Acquire)
    }

    /// Moves the position forward to `id` (never back).
    pub fn advance(&self, id: u64) {
        let _ = self
            .pos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| (p == UNSET || id > p).then_some(id));
    }

    /// Marks records up to `id` as being sent (0: none): the backlog limit
    /// does not count them.
    pub fn set_inflight(&self, id: u64) {
        self.inflight.store(id, Ordering::Release);
    }

    /// Sets the position, also backwards (a saved position that is past
    /// the end of the WAL).
    pub fn reset_to(&self, id: u64) {
        self.pos.store(id, Ordering::Release);
    }

    /// Samples and records given up because the backlog exceeded the limit,
    /// since the hold was made.
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.dropped_samples.load(Ordering::Acquire),
            self.dropped_records.load(Ordering::Acquire),
        )
    }
}

/// Samples and bytes of each record in the WAL table, by id.
#[derive(Debug, Default)]
pub struct WalRows {
    rows: BTreeMap<u64, (u32, u32)>,
}

impl WalRows {
    /// Records a row.
    pub fn insert(&mut self, id: u64, samples: u64, bytes: usize) {
        self.rows.insert(
            id,
            (u32::try_from(samples).unwrap_or(u32::MAX), u32::try_from(bytes).unwrap_or(u32::MAX)),
        );
    }

    /// Forgets rows below `id` (deleted by a checkpoint).
    pub fn remove_below(&mut self, id: u64) {
        self.rows = self.rows.split_off(&id);
    }

    /// Forgets rows from `id` on (a torn tail).
    #[cfg(test)]
    pub fn remove_from(&mut self, id: u64) {
        let _ = self.rows.split_off(&id);
    }

    /// (samples, bytes) of the rows above `pos`.
    pub fn above(&self, pos: u64) -> (u64, u64) {
        if pos == UNSET {
            return (0, 0);
        }
        self.rows
            .range(pos.saturating_add(1)..)
            .fold((0, 0), |(s, b), (_, (rs, rb))| (s + u64::from(*rs), b + u64::from(*rb)))
    }

    /// Enforces a hold's backlog limit. What the hold costs is the rows it
    /// keeps that nothing else needs: those above its position (and above
    /// the batch it is sending) and below `head_needs`, the first row the
    /// head still needs. When they exceed `max_backlog` bytes, the position
    /// moves past the oldest of them until the rest fits, and what was given
    /// up is counted. Returns the records given up.
    pub fn enforce(&self, hold: &WalHold, head_needs: u64) -> u64 {
        let pos = hold.position();
        if pos == UNSET {
            return 0;
        }
        let from = pos.max(hold.inflight.load(Ordering::Acquire)).saturating_add(1);
        if from >= head_needs {
            return 0;
        }
        let range = || self.rows.range(from..head_needs);
        let mut bytes: u64 = range().map(|(_, (_, b))| u64::from(*b)).sum();
        if bytes <= hold.max_backlog {
            return 0;
        }
        let (mut to, mut samples, mut records) = (pos, 0u64, 0u64);
        for (id, (s, b)) in range() {
            if bytes <= hold.max_backlog {
                break;
            }
            bytes -= u64::from(*b);
            samples += u64::from(*s);
            records += 1;
            to = *id;
        }
        // Only if the consumer did not move meanwhile (it re-checks).
        if hold.pos.compare_exchange(pos, to, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            hold.dropped_samples.fetch_add(samples, Ordering::AcqRel);
            hold.dropped_records.fetch_add(records, Ordering::AcqRel);
            tracing::warn!(
                consumer = hold.name(),
                records,
                samples,
                max_backlog = hold.max_backlog,
                "WAL backlog over the limit: the oldest unsent records were given up"
            );
            records
        } else {
            0
        }
    }

    /// The id below which the holds need nothing (rows at or above it are
    /// kept for some hold).
    pub fn needed_from(holds: &[std::sync::Arc<WalHold>]) -> Option<u64> {
        holds
            .iter()
            .map(|h| h.position())
            .filter(|p| *p != UNSET)
            .map(|p| p.saturating_add(1))
            .min()
    }
}

/// One WAL record's samples, with their series' labels.
#[derive(Debug, Clone)]
pub struct WalRecord {
    /// The record id.
    pub id: u64,
    /// (series id, timestamp ms, value), in append order.
    pub samples: Vec<(i64, i64, f64)>,
}

impl super::Tsdb {
    /// Remote write's reader of the WAL.
    pub fn wal_reader(&self) -> WalReader {
        WalReader {
            shared: self.shared.clone(),
        }
    }
}

/// Remote write's view of the storage (see `wal_tail`): the WAL records
/// after a position, and the labels of the series they name. Cheap to
/// clone; it cannot write.
#[derive(Clone)]
pub struct WalReader {
    shared: Arc<Shared>,
}

impl WalReader {
    /// WAL records with ids in `(after, upto]`, in order (for remote write;
    /// see `wal_tail`): at most `max_records`, and no more once
    /// `max_samples` are reached (at least one record). Pass
    /// [`WalReader::last_wal_id`] (or the value of [`WalReader::wal_watch`]) as
    /// `upto`: a record is published there only once its new series are in
    /// the index. A record that does not decode is an error naming it.
    pub fn read_wal(&self, after: u64, upto: u64, max_records: usize, max_samples: usize) -> Result<Vec<WalRecord>, TsdbError> {
        let conn = self.shared.reader()?;
        let out = (|| {
            let mut st = conn.prepare_cached(sqlite::SELECT_WAL_AFTER)?;
            let mut rows = st.query(params![
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(upto).unwrap_or(i64::MAX),
                max_records as i64
            ])?;
            let mut out = Vec::new();
            let mut total = 0usize;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let data = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                let mut samples = Vec::new();
                record::decode(data, |sid, t, v| samples.push((sid, t, v)))
                    .map_err(|e| TsdbError::Corrupt(format!("wal record {id}: {e}")))?;
                total += samples.len();
                out.push(WalRecord { id: id as u64, samples });
                if total >= max_samples {
                    break;
                }
            }
            Ok::<_, TsdbError>(out)
        })();
        self.shared.put_reader(conn);
        out
    }

    /// The labels of a series id.
    pub fn series_labels(&self, id: i64) -> Option<Arc<Labels>> {
        self.shared.read_index().labels(id)
    }

    /// The last WAL record id committed.
    pub fn last_wal_id(&self) -> u64 {
        *self.shared.wal_last.borrow()
    }

    /// Changes whenever a WAL record is committed (the value is its id).
    pub fn wal_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.wal_last.subscribe()
    }

    /// (samples, bytes) of the WAL records after `pos`.
    pub fn wal_backlog(&self, pos: u64) -> (u64, u64) {
        self.shared.wal_rows.lock().unwrap_or_else(|p| p.into_inner()).above(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_limit_gives_up_the_oldest_and_counts_them() {
        let mut rows = WalRows::default();
        for id in 1..=10u64 {
            rows.insert(id, 100, 1000);
        }
        let hold = WalHold::new("r", 2, 5000);
        assert_eq!(rows.above(2), (800, 8000));
        assert_eq!(rows.enforce(&hold, 11), 3);
        assert_eq!(hold.position(), 5);
        assert_eq!(hold.dropped(), (300, 3));
        assert_eq!(rows.above(5), (500, 5000));
        assert_eq!(rows.enforce(&hold, 11), 0, "within the limit now");
        // Rows the head needs anyway cost nothing: not counted.
        let h2 = WalHold::new("h", 0, 3000);
        assert_eq!(rows.enforce(&h2, 4), 0, "rows 1-3 (3000 bytes) fit; rows 4-10 do not count");
        assert_eq!(h2.position(), 0);
        let h3 = WalHold::new("h3", 0, 1500);
        assert_eq!(rows.enforce(&h3, 4), 2, "rows 1-3 over 1500 bytes: 1 and 2 go");
        assert_eq!(h3.position(), 2);
        // The batch being sent is not counted or given up.
        let h4 = WalHold::new("h4", 0, 1500);
        h4.set_inflight(2);
        assert_eq!(rows.enforce(&h4, 4), 0, "only row 3 counts");
        assert_eq!(h4.position(), 0);
        hold.advance(4);
        assert_eq!(hold.position(), 5, "never moves back");
        hold.advance(9);
        assert_eq!(WalRows::needed_from(&[std::sync::Arc::new(hold)]), Some(10));
        rows.remove_below(7);
        assert_eq!(rows.above(0), (400, 4000));
        rows.remove_from(9);
        assert_eq!(rows.above(0), (200, 2000));
        let unset = WalHold::new("u", UNSET, 0);
        assert_eq!(rows.enforce(&unset, 11), 0);
        assert_eq!(WalRows::needed_from(&[std::sync::Arc::new(unset)]), None);
    }
}
