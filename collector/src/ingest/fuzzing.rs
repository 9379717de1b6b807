//! Entry points for the fuzz targets in `tests/fuzz/` (not a stable API).
//!
//! They reach the ingest path's private parts: the remote-write borrowing
//! decoder and a gRPC [`Session`]'s `apply`. Every call into those is in this
//! file, so a change of their signatures is adapted here only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use csoc_proto::v1::WriteBatch;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{IngestService, Session, StreamSeries};
use crate::auth::AgentAuth;
use crate::config::Limits;
use crate::metrics::IngestMetrics;
use crate::tsdb::{AgentKey, CommitOutcome, Tsdb, TsdbError};

/// One `TimeSeries` as the remote-write decoder yielded it, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedSeries {
    /// (name, value) in the order sent.
    pub labels: Vec<(String, String)>,
    /// (timestamp ms, value bits).
    pub samples: Vec<(i64, u64)>,
    /// Native histograms seen.
    pub histograms: u64,
    /// Exemplars seen.
    pub exemplars: u64,
}

/// Runs the remote-write `TimeSeries` decoder over a decompressed body.
pub fn remote_write_series(raw: &[u8]) -> Result<Vec<DecodedSeries>, String> {
    let mut out = Vec::new();
    super::remote_write::wire::for_each_series(raw, |_, ts| {
        out.push(DecodedSeries {
            labels: ts.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            samples: ts.samples.iter().map(|(t, v)| (*t, v.to_bits())).collect(),
            histograms: ts.histograms,
            exemplars: ts.exemplars,
        });
        Ok(())
    })?;
    Ok(out)
}

/// Runs the remote-write metadata decoder; (type, family, help, unit).
pub fn remote_write_metadata(raw: &[u8]) -> Result<Vec<(i32, String, String, String)>, String> {
    let md = super::remote_write::wire::metadata(raw)?;
    Ok(md
        .into_iter()
        .map(|m| (m.typ, m.family.to_string(), m.help.to_string(), m.unit.to_string()))
        .collect())
}

/// The receiver's snappy step (size check and decompression).
pub fn remote_write_decompress(body: &[u8]) -> Result<Vec<u8>, String> {
    super::remote_write::decompress(body).map_err(|(code, msg)| format!("{code}: {msg}"))
}

/// Validates a decoded remote-write series as the receiver does for a new
/// series (labels sorted, `commons` stamped).
pub fn validate_series(labels: Vec<(String, String)>, commons: &str) -> Result<Vec<(String, String)>, String> {
    super::validate_series(labels, commons, &Limits::default()).map_err(|(_, msg)| msg)
}

/// What [`SessionHarness::apply`] did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Committed (`n` samples).
    Applied(u64),
    /// Its seq had been applied before: nothing written.
    AlreadyApplied,
    /// Refused before anything was written (Nack code name and message).
    Rejected(&'static str, String),
    /// Valid, but storage failed (retryable Nack).
    StorageFailed(String),
}

/// One agent stream's session on a storage: feeds batches through the same
/// `apply` the gRPC stream uses.
pub struct SessionHarness {
    session: Session,
    key: AgentKey,
    refs: HashMap<u64, StreamSeries>,
    _replies: mpsc::Receiver<Result<csoc_proto::v1::CollectorMessage, tonic::Status>>,
}

impl SessionHarness {
    /// A session of agent `agent` (epoch `epoch`) authenticated as `commons`,
    /// with the default limits but no samples-per-second limit (it depends
    /// on the clock, and a fuzz input must replay the same way).
    pub fn new(tsdb: Tsdb, metrics: IngestMetrics, commons: &str, agent: &str, epoch: u64) -> Self {
        let limits = Limits {
            max_samples_per_second: 0,
            ..Limits::default()
        };
        let svc = IngestService::new(
            tsdb,
            Arc::new(AgentAuth::default()),
            limits,
            Duration::from_secs(10),
            metrics,
            CancellationToken::new(),
        );
        let key = AgentKey {
            commons: commons.to_string(),
            agent: agent.to_string(),
            epoch,
        };
        let applied = svc.tsdb.applied_seq(&key).unwrap_or(0);
        let slot = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel(1);
        SessionHarness {
            session: Session {
                svc,
                commons: commons.to_string(),
                peer: "fuzz".into(),
                tx,
                _slot: super::limits::StreamSlot::unlimited(slot),
                applied: std::sync::atomic::AtomicU64::new(applied),
            },
            key,
            refs: HashMap::new(),
            _replies: rx,
        }
    }

    /// Validates and commits one batch, as the stream does.
    pub async fn apply(&mut self, batch: WriteBatch) -> Outcome {
        match self.session.apply(&self.key, &mut self.refs, batch).await {
            Ok((CommitOutcome::Applied, n)) => Outcome::Applied(n),
            Ok((CommitOutcome::AlreadyApplied, _)) => Outcome::AlreadyApplied,
            Err(r) if r.retryable => Outcome::StorageFailed(r.message),
            Err(r) => Outcome::Rejected(r.code.as_str_name(), r.message),
        }
    }

    /// Number of stream refs the session knows.
    pub fn known_refs(&self) -> usize {
        self.refs.len()
    }

    /// The seq last applied for this session's agent.
    pub fn applied_seq(&self) -> Result<u64, TsdbError> {
        self.session.svc.tsdb.applied_seq(&self.key)
    }

    /// Number of series in the storage.
    pub fn series_count(&self) -> usize {
        self.session.svc.tsdb.series_count()
    }
}
