//! Storage metrics (`csoc_collector_tsdb_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Storage metrics (`csoc_collector_tsdb_*`).
#[derive(Clone)]
pub(super) struct TsdbMetrics {
    pub(super) samples_appended: Counter,
    pub(super) series_created: Counter,
    pub(super) series: Gauge,
    pub(super) head_samples: Gauge,
    pub(super) commits: Counter,
    pub(super) commit_batches: Histogram,
    pub(super) commit_seconds: Histogram,
    pub(super) duplicate_batches: Counter,
    pub(super) chunks_persisted: Counter,
    pub(super) wal_truncated: Counter,
    pub(super) retention_deleted: Counter,
    pub(super) wal_replayed_samples: Counter,
    pub(super) wal_replay_progress: Gauge<f64, AtomicU64>,
    pub(super) wal_replay_seconds: Gauge<f64, AtomicU64>,
    pub(super) compactions: Counter,
    pub(super) chunk_cache_bytes: Gauge,
    pub(super) storage_bytes: Gauge,
    pub(super) wal_bytes: Gauge,
    pub(super) chunk_cache_hits: Counter,
    pub(super) chunk_cache_misses: Counter,
    pub(super) commit_failures: Counter,
    pub(super) fs_avail_bytes: Gauge,
    pub(super) fs_size_bytes: Gauge,
}

impl TsdbMetrics {
    pub(super) fn new(reg: &mut Registry) -> Self {
        let m = TsdbMetrics {
            samples_appended: Counter::default(),
            series_created: Counter::default(),
            series: Gauge::default(),
            head_samples: Gauge::default(),
            commits: Counter::default(),
            commit_batches: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            commit_seconds: Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            duplicate_batches: Counter::default(),
            chunks_persisted: Counter::default(),
            wal_truncated: Counter::default(),
            retention_deleted: Counter::default(),
            wal_replayed_samples: Counter::default(),
            wal_replay_progress: Gauge::default(),
            wal_replay_seconds: Gauge::default(),
            compactions: Counter::default(),
            chunk_cache_bytes: Gauge::default(),
            storage_bytes: Gauge::default(),
            wal_bytes: Gauge::default(),
            chunk_cache_hits: Counter::default(),
            chunk_cache_misses: Counter::default(),
            commit_failures: Counter::default(),
            fs_avail_bytes: Gauge::default(),
            fs_size_bytes: Gauge::default(),
        };
        let r = reg.sub_registry_with_prefix("tsdb");
        r.register_with_unit(
            "storage_size",
            "Size of the database on disk (csoc.db and SQLite's -wal file), updated every 5 s",
            prometheus_client::registry::Unit::Bytes,
            m.storage_bytes.clone(),
        );
        r.register_with_unit(
            "wal_size",
            "Size of the write-ahead log records not yet truncated (samples not yet in persisted chunks, or not yet sent by remote write), updated every 5 s",
            prometheus_client::registry::Unit::Bytes,
            m.wal_bytes.clone(),
        );
        r.register_with_unit(
            "chunk_cache_size",
            "Decoded chunks held for repeated queries",
            prometheus_client::registry::Unit::Bytes,
            m.chunk_cache_bytes.clone(),
        );
        r.register(
            "chunk_cache_hits",
            "Chunk reads served decoded from the cache",
            m.chunk_cache_hits.clone(),
        );
        r.register("chunk_cache_misses", "Chunk reads that had to decode", m.chunk_cache_misses.clone());
        r.register("samples_appended", "Samples durably written", m.samples_appended.clone());
        r.register("series_created", "Series created", m.series_created.clone());
        r.register("series", "Series in the index", m.series.clone());
        r.register(
            "head_samples",
            "Samples held in memory (open, out-of-order and unpersisted chunks)",
            m.head_samples.clone(),
        );
        r.register("commits", "SQLite transactions committed (group commits)", m.commits.clone());
        r.register(
            "wal_commit_failures",
            "Group commits (WAL record and data) that failed and were rolled back: their batches were refused, nothing acknowledged",
            m.commit_failures.clone(),
        );
        r.register_with_unit(
            "filesystem_avail",
            "Space available to the collector on the data directory's file system, updated every 5 s",
            prometheus_client::registry::Unit::Bytes,
            m.fs_avail_bytes.clone(),
        );
        r.register_with_unit(
            "filesystem_size",
            "Size of the data directory's file system, updated every 5 s",
            prometheus_client::registry::Unit::Bytes,
            m.fs_size_bytes.clone(),
        );
        r.register("commit_appenders", "Appenders committed per transaction", m.commit_batches.clone());
        r.register_with_unit(
            "commit_duration",
            "Time of one group commit",
            prometheus_client::registry::Unit::Seconds,
            m.commit_seconds.clone(),
        );
        r.register(
            "duplicate_batches",
            "Agent batches skipped because their seq was already applied",
            m.duplicate_batches.clone(),
        );
        r.register(
            "chunks_persisted",
            "Closed chunks written to the database",
            m.chunks_persisted.clone(),
        );
        r.register(
            "wal_records_truncated",
            "WAL records removed after their samples were persisted",
            m.wal_truncated.clone(),
        );
        r.register(
            "retention_deleted_chunks",
            "Chunks deleted by retention",
            m.retention_deleted.clone(),
        );
        r.register(
            "wal_replayed_samples",
            "Samples replayed from the WAL at start (counted as the replay goes)",
            m.wal_replayed_samples.clone(),
        );
        r.register_with_unit(
            "wal_replay_progress",
            "Fraction of the WAL records replayed at start: 0 until replay begins, 1 once the storage is open",
            prometheus_client::registry::Unit::Other("ratio".into()),
            m.wal_replay_progress.clone(),
        );
        r.register_with_unit(
            "wal_replay_duration",
            "Time the storage has taken to open (loading series, WAL replay) so far; fixed once open",
            prometheus_client::registry::Unit::Seconds,
            m.wal_replay_seconds.clone(),
        );
        m
    }
}
