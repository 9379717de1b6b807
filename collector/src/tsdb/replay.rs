//! WAL replay at start, and its progress as the rest of the collector sees
//! it while it runs.
//!
//! Replay reads the WAL rows from `wal_replay_from` (rows below it are kept
//! for remote write only) in batches of 256, decodes each record and
//! appends its samples to the head. A record that does not decode ends the
//! replay: it and every later row are deleted with a warning (a torn tail:
//! its samples were never acknowledged), never a refusal to start.
//!
//! [`ReplayProgress`] is shared with the HTTP listener, which serves
//! `/-/healthy` and `/-/ready` (503, with the progress) while replay runs:
//! after every record the counts are updated, the
//! `csoc_collector_tsdb_wal_replay_*` metrics follow, and a log line says
//! how far it is every 2 seconds. Replay can be cancelled between records
//! (a shutdown signal during a long replay): nothing is written by replay
//! but the torn-tail truncation, so stopping half-way loses nothing.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::head::Head;
use super::metrics::TsdbMetrics;
use super::wal_tail::WalRows;
use super::{TsdbError, record, sqlite};

/// How often replay logs its progress.
const LOG_EVERY: Duration = Duration::from_secs(2);

/// Where an opening storage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayPhase {
    /// Opening the database and loading the series.
    Loading,
    /// Replaying the WAL into the head.
    Replaying,
    /// Open: replay is over.
    Done,
}

/// The progress of a storage's opening, shared between the thread that
/// opens it and whoever reports on it (cheap to clone).
#[derive(Clone, Default)]
pub struct ReplayProgress(Arc<Inner>);

#[derive(Default)]
struct Inner {
    phase: AtomicU8,
    records_total: AtomicU64,
    records_done: AtomicU64,
    samples: AtomicU64,
    started: OnceLock<Instant>,
    /// Set when replay ends (the duration is then fixed).
    elapsed: Mutex<Option<Duration>>,
    cancelled: AtomicBool,
}

/// A copy of the progress at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplaySnapshot {
    /// The phase.
    pub phase: ReplayPhase,
    /// WAL records to replay (known once replay has started).
    pub records_total: u64,
    /// WAL records replayed so far.
    pub records_done: u64,
    /// Samples appended to the head so far.
    pub samples: u64,
    /// Time since the storage began to open (fixed once open).
    pub elapsed: Duration,
}

impl ReplaySnapshot {
    /// Records replayed over records to replay, in [0, 1] (1 when there is
    /// nothing to replay, or once done).
    pub fn ratio(&self) -> f64 {
        match self.phase {
            ReplayPhase::Done => 1.0,
            _ if self.records_total == 0 => 0.0,
            _ => (self.records_done as f64 / self.records_total as f64).min(1.0),
        }
    }
}

impl fmt::Display for ReplaySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.phase {
            ReplayPhase::Loading => write!(f, "opening the storage ({:.1}s)", self.elapsed.as_secs_f64()),
            ReplayPhase::Replaying => write!(
                f,
                "replaying the WAL: {} of {} records ({:.0}%), {} samples, {:.1}s",
                self.records_done,
                self.records_total,
                self.ratio() * 100.0,
                self.samples,
                self.elapsed.as_secs_f64()
            ),
            ReplayPhase::Done => write!(
                f,
                "storage open: {} WAL records, {} samples replayed in {:.1}s",
                self.records_done,
                self.samples,
                self.elapsed.as_secs_f64()
            ),
        }
    }
}

impl fmt::Debug for ReplayProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReplayProgress").field(&self.snapshot()).finish()
    }
}

impl ReplayProgress {
    /// The progress now.
    pub fn snapshot(&self) -> ReplaySnapshot {
        let i = &self.0;
        let phase = match i.phase.load(Ordering::Acquire) {
            0 => ReplayPhase::Loading,
            1 => ReplayPhase::Replaying,
            _ => ReplayPhase::Done,
        };
        let fixed = *i.elapsed.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = fixed.unwrap_or_else(|| i.started.get().map(Instant::elapsed).unwrap_or_default());
        ReplaySnapshot {
            phase,
            records_total: i.records_total.load(Ordering::Relaxed),
            records_done: i.records_done.load(Ordering::Relaxed),
            samples: i.samples.load(Ordering::Relaxed),
            elapsed,
        }
    }

    /// Asks the replay to stop at the next batch; the opening then fails
    /// with [`TsdbError::Interrupted`].
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    pub(super) fn start(&self) {
        let _ = self.0.started.set(Instant::now());
    }

    fn replaying(&self, total: u64) {
        self.0.records_total.store(total, Ordering::Relaxed);
        self.0.phase.store(1, Ordering::Release);
    }

    fn advance(&self, records: u64, samples: u64) {
        self.0.records_done.store(records, Ordering::Relaxed);
        self.0.samples.store(samples, Ordering::Relaxed);
    }

    pub(super) fn done(&self) {
        let elapsed = self.0.started.get().map(Instant::elapsed).unwrap_or_default();
        *self.0.elapsed.lock().unwrap_or_else(|p| p.into_inner()) = Some(elapsed);
        self.0.phase.store(2, Ordering::Release);
    }
}

/// Replays the WAL into the head; returns the last WAL row id. See the
/// module doc.
pub(super) fn replay_wal(
    conn: &Connection,
    head: &mut Head,
    metrics: &TsdbMetrics,
    wal_rows: &mut WalRows,
    progress: &ReplayProgress,
) -> Result<u64, TsdbError> {
    let (rows, max_id): (i64, i64) = conn.query_row(sqlite::COUNT_WAL, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // Ids never repeat: a checkpoint that emptied the WAL left the last one in meta.
    let kept: i64 = conn.query_row(sqlite::SELECT_WAL_LAST_ID, [], |r| r.get(0)).unwrap_or(0);
    // Rows below this are kept only for remote write: their samples are in
    // persisted chunks, so the head does not replay them.
    let replay_from: i64 = conn.query_row(sqlite::SELECT_WAL_REPLAY_FROM, [], |r| r.get(0)).unwrap_or(0);
    let mut skipped = 0u64;
    if rows == 0 {
        metrics.wal_replay_progress.set(1.0);
        return Ok(max_id.max(kept).max(0) as u64);
    }
    progress.replaying(rows as u64);
    tracing::info!(records = rows, "replaying the WAL");
    let started = Instant::now();
    let mut last_log = Instant::now();
    let (mut done, mut samples, mut unknown) = (0i64, 0u64, 0u64);
    let mut counted = 0u64;
    let mut from = 0i64;
    let mut stmt = conn.prepare(sqlite::SELECT_WAL_FROM)?;
    'outer: loop {
        let batch: Vec<(i64, Vec<u8>)> = stmt
            .query_map(params![from], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if batch.is_empty() {
            break;
        }
        for (id, data) in batch {
            if progress.is_cancelled() {
                tracing::info!(records = done, of = rows, samples, elapsed = ?started.elapsed(), "WAL replay stopped: shutting down");
                return Err(TsdbError::Interrupted);
            }
            from = id + 1;
            if id < replay_from
                && let Ok(n) = record::count(&data)
            {
                wal_rows.insert(id as u64, n, data.len());
                skipped += 1;
                done += 1;
                continue;
            }
            let res = record::decode(&data, |sid, t, v| {
                if head.append(sid, t, v, id as u64) {
                    samples += 1;
                } else {
                    unknown += 1;
                }
            });
            let count = match res {
                Ok(n) => n,
                Err(e) => {
                    let dropped: i64 = conn.execute(sqlite::TRUNCATE_WAL_FROM, params![id])? as i64;
                    tracing::warn!(record = id, error = %e, dropped_records = dropped, "torn WAL tail: truncated it (samples in it were never acknowledged)");
                    break 'outer;
                }
            };
            wal_rows.insert(id as u64, count, data.len());
            done += 1;
            // After every record (a record holds a whole group commit, up
            // to hundreds of thousands of samples): the progress, the
            // metrics, and a log line every LOG_EVERY.
            progress.advance(done as u64, samples);
            metrics.wal_replayed_samples.inc_by(samples - counted);
            counted = samples;
            let snap = progress.snapshot();
            metrics.wal_replay_progress.set(snap.ratio());
            metrics.wal_replay_seconds.set(snap.elapsed.as_secs_f64());
            if last_log.elapsed() >= LOG_EVERY {
                last_log = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                tracing::info!(
                    records = done,
                    of = rows,
                    percent = format_args!("{:.0}", snap.ratio() * 100.0),
                    samples,
                    samples_per_second = (samples as f64 / secs) as u64,
                    elapsed = ?started.elapsed(),
                    "replaying the WAL"
                );
            }
        }
    }
    if unknown > 0 {
        tracing::warn!(samples = unknown, "WAL samples of unknown series skipped");
    }
    progress.advance(done as u64, samples);
    metrics.wal_replayed_samples.inc_by(samples - counted);
    metrics.wal_replay_progress.set(1.0);
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    tracing::info!(
        records = done - skipped as i64,
        samples,
        samples_per_second = (samples as f64 / secs) as u64,
        kept_for_remote_write = skipped,
        elapsed = ?started.elapsed(),
        "WAL replayed"
    );
    let max: i64 = conn.query_row(sqlite::COUNT_WAL, [], |r| r.get(1))?;
    Ok(max.max(kept).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reports_phase_counts_and_ratio() {
        let p = ReplayProgress::default();
        let s = p.snapshot();
        assert_eq!(s.phase, ReplayPhase::Loading);
        assert_eq!(s.ratio(), 0.0);
        assert!(s.to_string().starts_with("opening the storage"), "{s}");
        p.start();
        p.replaying(200);
        p.advance(50, 1_000_000);
        let s = p.snapshot();
        assert_eq!(
            (s.phase, s.records_total, s.records_done, s.samples),
            (ReplayPhase::Replaying, 200, 50, 1_000_000)
        );
        assert_eq!(s.ratio(), 0.25);
        assert!(s.to_string().contains("50 of 200 records (25%), 1000000 samples"), "{s}");
        p.done();
        let s = p.snapshot();
        assert_eq!(s.phase, ReplayPhase::Done);
        assert_eq!(s.ratio(), 1.0);
        let fixed = s.elapsed;
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(p.snapshot().elapsed, fixed, "the duration is fixed once done");
        assert!(!p.is_cancelled());
        p.clone().cancel();
        assert!(p.is_cancelled(), "clones share the flag");
    }

    #[tokio::test]
    async fn opening_reports_the_replayed_samples_and_a_cancelled_replay_stops() {
        use super::super::{Labels, Queryable, Tsdb, TsdbOptions};
        use prometheus_client::registry::Registry;
        let d = tempfile::tempdir().expect("tempdir");
        {
            let db = Tsdb::open(d.path(), &TsdbOptions::default(), &mut Registry::default()).expect("open");
            for round in 0..50i64 {
                let mut a = db.appender();
                for s in 0..10 {
                    let l: Labels = vec![("__name__".into(), "m".into()), ("s".into(), s.to_string())];
                    a.append(Arc::new(l), round * 15_000, round as f64);
                }
                a.commit().await.expect("commit");
            }
            db.close(); // the open chunks live only in the WAL
        }
        let opening = Tsdb::prepare(d.path(), &TsdbOptions::default(), &mut Registry::default());
        let p = opening.progress();
        p.cancel();
        assert!(matches!(opening.open(), Err(TsdbError::Interrupted)), "a cancelled replay stops");

        let mut reg = Registry::default();
        let opening = Tsdb::prepare(d.path(), &TsdbOptions::default(), reg.sub_registry_with_prefix("csoc_collector"));
        let p = opening.progress();
        assert_eq!(p.snapshot().phase, ReplayPhase::Loading);
        let db = opening.open().expect("open after the interrupted replay");
        let s = p.snapshot();
        assert_eq!(
            (s.phase, s.records_total, s.records_done, s.samples),
            (ReplayPhase::Done, 50, 50, 500)
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        assert!(text.contains("csoc_collector_tsdb_wal_replayed_samples_total 500"), "{text}");
        assert!(text.contains("csoc_collector_tsdb_wal_replay_progress_ratio 1.0"), "{text}");
        assert!(text.contains("csoc_collector_tsdb_wal_replay_duration_seconds "), "{text}");
        let n: usize = db
            .querier(i64::MIN, i64::MAX)
            .select(&[super::super::Matcher::equal("__name__", "m")])
            .expect("select")
            .iter()
            .map(|s| s.samples.len())
            .sum();
        assert_eq!(n, 500, "every sample is back");
        db.close();
    }
}
