//! The storage contract: what the rest of the collector reads through,
//! after Prometheus's `storage/interface.go`.
//!
//! A [`Queryable`] hands out [`Querier`]s scoped to a time range; a querier
//! selects series by label matchers. The PromQL engine, the rules and the
//! HTTP API depend on these traits only (`&dyn Queryable`,
//! `Arc<dyn Queryable>`), so they run as well over [`Tsdb`](super::Tsdb)
//! as over an in-memory store (`promql::MemStore`) or a view restricted to
//! one commons (`api::access::Scoped`). [`TsdbAdmin`] is the little more
//! the API's status and admin endpoints need (Prometheus's
//! `TSDBAdminStats`). Writers other than ingest take an [`Appendable`].

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Appender, FlushStats, IndexStats, Labels, Matcher, Series, StorageStats, TsdbError};

/// Where readers get series from: anything that can open a [`Querier`]
/// over a time range (Prometheus's `storage.Queryable`).
pub trait Queryable: Send + Sync {
    /// A querier over `[mint, maxt]` (ms, inclusive).
    fn querier(&self, mint: i64, maxt: i64) -> Box<dyn Querier + '_>;

    /// The series of `querier(mint, maxt)`'s [`Querier::select`] (with
    /// `without_stale`, [`Querier::select_without_stale`]), not yet read:
    /// for readers that look at one series at a time (functions over range
    /// vectors), so that no query holds every series' samples at once and
    /// several threads can read. `None`: this store only reads all at once.
    fn select_lazy(
        &self,
        mint: i64,
        maxt: i64,
        matchers: &[Matcher],
        without_stale: bool,
    ) -> Result<Option<Box<dyn LazySelection + '_>>, TsdbError> {
        let _ = (mint, maxt, matchers, without_stale);
        Ok(None)
    }
}

/// Selected series to read one at a time ([`Queryable::select_lazy`]), from
/// as many threads as the caller likes, each with its own
/// [`SeriesReader`].
pub trait LazySelection: Sync {
    /// The labels of the selected series, sorted. Unlike
    /// [`Querier::select`]'s, the list may hold series that turn out to have
    /// no samples in range (they read as empty).
    fn labels(&self) -> &[Arc<Labels>];

    /// A reader for one thread.
    fn reader(&self) -> Result<Box<dyn SeriesReader + '_>, TsdbError>;
}

/// Reads series of a [`LazySelection`].
pub trait SeriesReader: Send {
    /// The samples of series `i` (an index into [`LazySelection::labels`])
    /// into `buf`, which is cleared first: what the selection's
    /// [`Querier::select`] (or `select_without_stale`) would give for it.
    fn read(&mut self, i: usize, buf: &mut Vec<(i64, f64)>) -> Result<(), TsdbError>;
}

/// Whether `samples` include a staleness marker.
pub fn has_stale_marker(samples: &[(i64, f64)]) -> bool {
    samples.iter().any(|p| csoc_proto::is_stale_nan(p.1))
}

/// Reads the series of one time range (Prometheus's `storage.Querier`).
/// Matchers are ANDed; a missing label matches as the empty string.
pub trait Querier {
    /// Series matching every matcher with their samples in the querier's
    /// range (staleness markers included; last write wins on equal
    /// timestamps), sorted by labels. Series without samples in range are
    /// omitted.
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<Series>, TsdbError>;

    /// [`Querier::select`] without the staleness markers (for range
    /// functions, which ignore them), series left without samples omitted.
    /// A store that knows where its markers are can skip looking at every
    /// sample.
    fn select_without_stale(&self, matchers: &[Matcher]) -> Result<Vec<Series>, TsdbError> {
        let mut out = self.select(matchers)?;
        for s in &mut out {
            if has_stale_marker(&s.samples) {
                s.samples.retain(|p| !csoc_proto::is_stale_nan(p.1));
            }
        }
        out.retain(|s| !s.samples.is_empty());
        Ok(out)
    }

    /// Labels of the series matching every matcher that have data in the
    /// querier's range, sorted; no samples are decoded. Like Prometheus's
    /// series and label APIs, a store may answer at chunk granularity (a
    /// series whose chunk overlaps the range counts).
    fn series(&self, matchers: &[Matcher]) -> Result<Vec<Arc<Labels>>, TsdbError>;

    /// Label names of the series [`Querier::series`] returns, sorted.
    fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>, TsdbError> {
        let all = self.series(matchers)?;
        let names: BTreeSet<&str> = all.iter().flat_map(|l| l.iter().map(|(k, _)| k.as_str())).collect();
        Ok(names.into_iter().map(str::to_string).collect())
    }

    /// Values of label `name` among the series [`Querier::series`]
    /// returns, sorted.
    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Result<Vec<String>, TsdbError> {
        let all = self.series(matchers)?;
        let values: BTreeSet<&str> = all
            .iter()
            .filter_map(|l| l.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str()))
            .collect();
        Ok(values.into_iter().map(str::to_string).collect())
    }
}

/// Where writers get appenders from (Prometheus's `storage.Appendable`):
/// rule results and self-monitoring write through this. An [`Appender`]
/// batches samples and is committed (durably, in one transaction) or
/// rolled back as a whole.
pub trait Appendable: Send + Sync {
    /// A new, empty appender.
    fn appender(&self) -> Appender;
}

/// A boxed future, for [`TsdbAdmin::flush`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Statistics and maintenance for the HTTP API's status and admin
/// endpoints (Prometheus's `TSDBAdminStats`).
pub trait TsdbAdmin: Send + Sync {
    /// Closes and persists every head chunk and empties the WAL.
    fn flush(&self) -> BoxFuture<'_, Result<FlushStats, TsdbError>>;

    /// Cardinality statistics of the label index; lists hold the `limit`
    /// largest entries.
    fn index_stats(&self, limit: usize) -> IndexStats;

    /// Chunks and time bounds of everything stored, in memory and on disk.
    fn storage_stats(&self) -> Result<StorageStats, TsdbError>;

    /// A consistent copy of the database under
    /// `<data-dir>/snapshots/<name>/` (without the WAL's records with
    /// `skip_head`), taken while writes go on.
    fn snapshot(&self, name: String, skip_head: bool) -> BoxFuture<'_, Result<super::SnapshotStats, TsdbError>>;
}
