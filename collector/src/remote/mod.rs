//! Remote write out: everything the collector stores, sent to Mimir,
//! Thanos Receive, Cortex, VictoriaMetrics or a Prometheus with the remote
//! write receiver, with Prometheus's remote write protocol 1.0
//! (snappy-compressed protobuf `WriteRequest`).
//!
//! ```text
//! tsdb WAL ──read_wal──► queue (one per remote) ──shard by series──► N senders ──HTTP──► receiver
//!    ▲                      │
//!    └── WalHold ◄──────────┘ position: last WAL record fully handled
//! ```
//! The queue is the WAL itself: the storage keeps every record above a
//! remote's position (up to `max_backlog` bytes), so an unreachable
//! receiver loses nothing and a restart resumes from the position saved in
//! `<data_dir>/remote-write/<name>.json`. Delivery is at least once: a
//! crash between a send and saving the position sends that batch again,
//! which receivers take as duplicates of what they hold.
//!
//! A batch (a few WAL records) is split by series over `shards` senders
//! that send concurrently. Batches are pipelined: up to four are in flight,
//! and each shard's sender takes its parts in batch order, one request
//! after the other, so each series' samples leave in time order and a
//! series is never sent out of order; the position moves over a batch when
//! all its parts and every earlier batch are done. 5xx and 429 are
//! retried with exponential backoff (honouring `Retry-After`), a refused
//! connection at most every 500 ms (`CONNECT_RETRY_MAX`); any other
//! 4xx means the receiver will never take those samples: they are counted
//! as failed, logged, and the queue moves on.

pub mod config;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub use config::RemoteWriteConfig;
use csoc_common::error::error_chain;
use csoc_common::url::redact_url;
use csoc_proto::prometheus as pb;

use crate::tsdb::{Labels, WalHold, WalReader, WalRecord};

const UNSET: u64 = WalHold::UNSET;

/// WAL records read per round at most.
const READ_RECORDS: usize = 16;
/// Series labels cached per remote before the cache is cleared.
const LABEL_CACHE_MAX: usize = 1 << 20;

/// Remote write metrics (`csoc_collector_remote_storage_*`), by
/// `remote_name` and `url` (credentials removed).
#[derive(Clone)]
pub struct RemoteMetrics {
    samples: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    retried: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    pending: Family<Labels, Gauge>,
    bytes: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    highest_sent: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    position: Family<Labels, Gauge>,
    shards: Family<Labels, Gauge>,
    duration: Family<Labels, Histogram>,
}

impl RemoteMetrics {
    /// Registers the metrics.
    pub fn new(reg: &mut Registry) -> Self {
        let m = RemoteMetrics {
            samples: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dropped: Family::default(),
            pending: Family::default(),
            bytes: Family::default(),
            requests: Family::default(),
            highest_sent: Family::default(),
            position: Family::default(),
            shards: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
        };
        reg.register(
            "remote_storage_samples",
            "Samples sent and accepted by the receiver",
            m.samples.clone(),
        );
        reg.register(
            "remote_storage_samples_failed",
            "Samples the receiver refused with a non-retryable 4xx (not sent again)",
            m.failed.clone(),
        );
        reg.register(
            "remote_storage_samples_retried",
            "Samples of requests that failed with a retryable error (connection, 5xx, 429) and were sent again",
            m.retried.clone(),
        );
        reg.register(
            "remote_storage_samples_dropped",
            "Samples never sent, by reason: backlog_exceeded (over max_backlog while the receiver was unreachable), relabel (dropped by write_relabel_configs), unknown_series",
            m.dropped.clone(),
        );
        reg.register(
            "remote_storage_samples_pending",
            "Samples in the WAL not yet sent",
            m.pending.clone(),
        );
        reg.register(
            "remote_storage_bytes",
            "Compressed request bytes sent and accepted",
            m.bytes.clone(),
        );
        reg.register(
            "remote_storage_requests",
            "Requests by outcome (ok, retry, failed)",
            m.requests.clone(),
        );
        reg.register(
            "remote_storage_highest_sent_timestamp_seconds",
            "Highest sample timestamp sent and accepted",
            m.highest_sent.clone(),
        );
        reg.register("remote_storage_wal_position", "Last WAL record fully handled", m.position.clone());
        reg.register("remote_storage_shards", "Concurrent senders", m.shards.clone());
        reg.register(
            "remote_storage_sent_batch_duration_seconds",
            "Time of one successful request",
            m.duration.clone(),
        );
        m
    }
}

/// The remotes, prepared before the storage opens (their holds go into the
/// storage options) and started after; [`Remotes::reconfigure`] changes
/// the set while the collector runs (a reload).
pub struct Remotes {
    dir: PathBuf,
    metrics: RemoteMetrics,
    holds: crate::tsdb::WalHolds,
    inner: std::sync::Mutex<RemotesInner>,
}

#[derive(Default)]
struct RemotesInner {
    queues: Vec<Running>,
    /// The WAL and the collector-wide stop and drain, once started.
    started: Option<(WalReader, CancellationToken, CancellationToken)>,
    /// Tasks to wait for at shutdown (running and stopping queues).
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Running {
    /// As configured (compared on reload).
    orig: RemoteWriteConfig,
    external_labels: std::collections::BTreeMap<String, String>,
    q: Arc<Queue>,
    /// Stops this queue alone (a child of the collector-wide stop).
    stop: Option<CancellationToken>,
}

/// One remote's queue.
struct Queue {
    cfg: RemoteWriteConfig,
    name: String,
    labels: Labels,
    hold: Arc<WalHold>,
    /// The in-flight batch ends found in the position file at start,
    /// oldest first.
    resume_inflight: Vec<u64>,
    state_path: PathBuf,
    client: reqwest::Client,
    endpoint: reqwest::Url,
    auth: Option<Auth>,
    external_labels: Vec<(String, String)>,
    metrics: RemoteMetrics,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedPosition {
    url: String,
    /// The last WAL record fully handled.
    wal_id: u64,
    /// The last record of the batch being sent when this was written: a
    /// restart sends exactly that batch again, so the requests are the
    /// same (a receiver that already took one refuses or ignores it whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inflight_to: Option<u64>,
    /// The last records of the batches in flight after that one (sent
    /// concurrently, see [`PIPELINE`]), each sent again as its own batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inflight_more: Vec<u64>,
}

/// Why remote write cannot start; the message names the target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// A target's configuration is invalid.
    #[error("remote_write[{index}]: {message}")]
    Config {
        /// The target's place in the list.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A target's settings cannot be used (a file unreadable, a bad header).
    #[error("remote_write[{index}] ({name})")]
    Target {
        /// The target's place in the list.
        index: usize,
        /// Its name.
        name: String,
        /// What failed.
        #[source]
        source: SettingError,
    },
    /// The directory of the saved positions.
    #[error("creating {}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One setting of a target that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct SettingError {
    what: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SettingError {
    fn new(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SettingError {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    fn msg(what: impl Into<String>) -> Self {
        SettingError {
            what: what.into(),
            source: None,
        }
    }
}

impl Remotes {
    /// Builds a queue per target: reads credentials and TLS files, loads the
    /// saved positions. Errors name the target.
    pub fn prepare(
        cfgs: &[RemoteWriteConfig],
        data_dir: &Path,
        external_labels: &std::collections::BTreeMap<String, String>,
        metrics: RemoteMetrics,
    ) -> Result<Self, RemoteError> {
        let r = Remotes {
            dir: data_dir.join("remote-write"),
            metrics,
            holds: Default::default(),
            inner: Default::default(),
        };
        let queues = r.build(cfgs, external_labels, &[])?;
        for q in &queues {
            r.holds.add(q.q.hold.clone());
        }
        r.lock().queues = queues;
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RemotesInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates every target and builds queues for those not in `keep`
    /// (which are reused as they are).
    fn build(
        &self,
        cfgs: &[RemoteWriteConfig],
        external_labels: &std::collections::BTreeMap<String, String>,
        keep: &[(String, RemoteWriteConfig, std::collections::BTreeMap<String, String>)],
    ) -> Result<Vec<Running>, RemoteError> {
        let mut out = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, cfg) in cfgs.iter().enumerate() {
            cfg.validate().map_err(|message| RemoteError::Config { index: i, message })?;
            let name = cfg.effective_name();
            if !names.insert(name.clone()) {
                return Err(RemoteError::Config {
                    index: i,
                    message: format!("the name {name:?} is used twice; give each target a distinct name"),
                });
            }
            if keep.iter().any(|(n, c, e)| *n == name && c == cfg && e == external_labels) {
                continue;
            }
            let q = Queue::new(cfg, &name, &self.dir, external_labels, self.metrics.clone()).map_err(|source| RemoteError::Target {
                index: i,
                name: name.clone(),
                source,
            })?;
            out.push(Running {
                orig: cfg.clone(),
                external_labels: external_labels.clone(),
                q: Arc::new(q),
                stop: None,
            });
        }
        if !cfgs.is_empty() {
            std::fs::create_dir_all(&self.dir).map_err(|source| RemoteError::Dir {
                path: self.dir.clone(),
                source,
            })?;
        }
        Ok(out)
    }

    /// The WAL holds, for [`crate::tsdb::TsdbOptions::wal_holds`].
    pub fn holds(&self) -> crate::tsdb::WalHolds {
        self.holds.clone()
    }

    /// Positions new remotes at the end of the WAL (they get data from now
    /// on). Call right after the storage opens, before anything writes.
    pub fn position(&self, wal: &WalReader) {
        for r in &self.lock().queues {
            position_one(&r.q, wal);
        }
    }

    /// Starts one task per remote; [`Remotes::take_tasks`] gives them back
    /// for the shutdown.
    pub fn start(&self, wal: &WalReader, stop: CancellationToken, drain: CancellationToken) {
        let mut inner = self.lock();
        inner.started = Some((wal.clone(), stop.clone(), drain.clone()));
        let mut tasks = Vec::new();
        for r in inner.queues.iter_mut() {
            tasks.push(spawn_one(r, wal, &stop, &drain));
        }
        inner.tasks.extend(tasks);
    }

    /// Replaces the set of targets: unchanged ones keep running, removed
    /// ones stop (their position saved), new and changed ones start (a
    /// changed one where its predecessor stood, a new one from now on or
    /// its saved position). Nothing changes when any target is invalid.
    /// Returns (kept, started, stopped).
    pub fn reconfigure(
        &self,
        cfgs: &[RemoteWriteConfig],
        external_labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(usize, usize, usize), RemoteError> {
        let keep: Vec<_> = self
            .lock()
            .queues
            .iter()
            .map(|r| (r.q.name.clone(), r.orig.clone(), r.external_labels.clone()))
            .collect();
        let mut fresh = self.build(cfgs, external_labels, &keep)?;
        let wanted: std::collections::HashSet<String> = cfgs.iter().map(|c| c.effective_name()).collect();
        let fresh_names: std::collections::HashSet<String> = fresh.iter().map(|r| r.q.name.clone()).collect();
        let mut inner = self.lock();
        let (mut kept, mut stopped) = (Vec::new(), 0);
        for r in std::mem::take(&mut inner.queues) {
            if wanted.contains(&r.q.name) && !fresh_names.contains(&r.q.name) {
                kept.push(r);
                continue;
            }
            // Removed or changed: stop it; a changed one's successor
            // starts where it stood.
            if let Some(s) = &r.stop {
                s.cancel();
            }
            self.holds.remove(&r.q.hold);
            if let Some(n) = fresh.iter().find(|n| n.q.name == r.q.name) {
                let pos = r.q.hold.position();
                if pos != UNSET {
                    n.q.hold.reset_to(pos);
                }
            }
            tracing::info!(remote = %r.q.name, url = %redact_url(&r.q.cfg.url), "remote write: target stopped (reload)");
            stopped += 1;
        }
        let started = fresh.len();
        let mut tasks = Vec::new();
        if let Some((wal, stop, drain)) = inner.started.clone() {
            for r in fresh.iter_mut() {
                position_one(&r.q, &wal);
                self.holds.add(r.q.hold.clone());
                tasks.push(spawn_one(r, &wal, &stop, &drain));
                tracing::info!(remote = %r.q.name, url = %redact_url(&r.q.cfg.url), "remote write: target started (reload)");
            }
        } else {
            for r in &fresh {
                self.holds.add(r.q.hold.clone());
            }
        }
        inner.tasks.extend(tasks);
        let n_kept = kept.len();
        kept.extend(fresh);
        inner.queues = kept;
        Ok((n_kept, started, stopped))
    }

    /// The tasks of every queue started (and of those stopped by a reload
    /// that may still be saving their position), for the shutdown.
    pub fn take_tasks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        std::mem::take(&mut self.lock().tasks)
    }

    /// Whether any remote is configured.
    pub fn is_empty(&self) -> bool {
        self.lock().queues.is_empty()
    }

    /// The targets now: (name, URL without credentials).
    pub fn targets(&self) -> Vec<(String, String)> {
        self.lock()
            .queues
            .iter()
            .map(|r| (r.q.name.clone(), redact_url(&r.q.cfg.url)))
            .collect()
    }
}

fn position_one(q: &Queue, wal: &WalReader) {
    let last = wal.last_wal_id();
    let pos = q.hold.position();
    if pos == UNSET {
        q.hold.advance(last);
        tracing::info!(remote = %q.name, url = %redact_url(&q.cfg.url), wal_id = last, "remote write: new target, sending from now on");
    } else if pos > last {
        tracing::warn!(remote = %q.name, saved = pos, wal_last = last, "remote write: saved position is past the end of the WAL (a different database?); sending from now on");
        q.hold.reset_to(last);
    } else {
        let (samples, _) = wal.wal_backlog(pos);
        tracing::info!(remote = %q.name, url = %redact_url(&q.cfg.url), wal_id = pos, pending_samples = samples, "remote write: resuming");
    }
}

fn spawn_one(r: &mut Running, wal: &WalReader, stop: &CancellationToken, drain: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let q = &r.q;
    q.metrics.shards.get_or_create(&q.labels).set(q.cfg.shards as i64);
    // Present from the start, so a rate() over them sees the first failure.
    for f in [&q.metrics.samples, &q.metrics.failed, &q.metrics.retried] {
        let _ = f.get_or_create(&q.labels);
    }
    let _ = q.metrics.dropped.get_or_create(&q.with_reason("backlog_exceeded"));
    let own = stop.child_token();
    r.stop = Some(own.clone());
    tokio::spawn(q.clone().run(wal.clone(), own, drain.clone()))
}

/// Credentials sent with each request.
enum Auth {
    Basic(String, String),
    Bearer(String),
    /// A whole `Authorization` header value (`authorization:`).
    Header(String),
}

/// One shard's part of a batch: series in first-seen order (with an index
/// by series id), each with its samples.
type ShardBatch = (HashMap<i64, usize>, Vec<(i64, Arc<[u8]>, Vec<(i64, f64)>)>);

/// Per series id: its labels as sent (None: dropped by relabelling) and the
/// newest timestamp sent.
#[derive(Default)]
struct SeriesCache(HashMap<i64, Cached>);

struct Cached {
    labels: Option<Arc<[u8]>>,
    last_sent: i64,
}

/// Batches in flight at once per remote (each split over the shards).
const PIPELINE: usize = 4;

/// One shard's part of a batch: the batch's number and its requests
/// (body, samples, highest timestamp).
type ShardJob = (u64, Vec<(Vec<u8>, usize, i64)>);

/// A batch being sent.
struct InFlight {
    seq: u64,
    /// Its last WAL record.
    last: u64,
    /// Shards not yet done with their part.
    parts: usize,
}

/// Counts a finished part; false when its sender stopped (shutdown).
/// The longest wait between retries of a connection the receiver refused
/// (it is down or restarting): asking again costs it nothing, and the
/// backlog starts draining within this of its return.
const CONNECT_RETRY_MAX: Duration = Duration::from_millis(500);

fn finish_part(inflight: &mut std::collections::VecDeque<InFlight>, (seq, ok): (u64, bool)) -> bool {
    if ok && let Some(b) = inflight.iter_mut().find(|b| b.seq == seq) {
        b.parts = b.parts.saturating_sub(1);
    }
    ok
}

/// How a request ended.
enum Sent {
    Ok,
    Failed,
    Stopped,
}

impl Queue {
    fn new(
        cfg: &RemoteWriteConfig,
        name: &str,
        dir: &Path,
        external_labels: &std::collections::BTreeMap<String, String>,
        metrics: RemoteMetrics,
    ) -> Result<Self, SettingError> {
        let cfg = &cfg.effective();
        let state_path = dir.join(format!("{name}.json"));
        let (pos, inflight_to) = match std::fs::read(&state_path) {
            Ok(b) => match serde_json::from_slice::<SavedPosition>(&b) {
                Ok(s) => {
                    let mut marks: Vec<u64> = s.inflight_to.into_iter().chain(s.inflight_more).filter(|t| *t > s.wal_id).collect();
                    // Batch ends only grow; anything else is not ours.
                    marks.dedup();
                    if !marks.is_sorted() {
                        marks.clear();
                    }
                    (s.wal_id, marks)
                }
                Err(e) => {
                    // Never a reason not to start: resend all the WAL holds
                    // (at least once) rather than lose it.
                    tracing::warn!(remote = name, path = %state_path.display(), error = %e, "remote write: the saved position is unreadable; sending everything the WAL still holds");
                    (0, Vec::new())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (UNSET, Vec::new()),
            Err(e) => return Err(SettingError::new(format!("reading {}", state_path.display()), e)),
        };
        let mut endpoint = reqwest::Url::parse(&cfg.url).map_err(|e| SettingError::new("url", e))?;
        // Credentials in the URL become basic auth, never part of logs.
        let mut auth = None;
        if !endpoint.username().is_empty() {
            let user = percent_decode(endpoint.username());
            let pass = endpoint.password().map(percent_decode).unwrap_or_default();
            auth = Some(Auth::Basic(user, pass));
            let _ = endpoint.set_username("");
            let _ = endpoint.set_password(None);
        }
        if let Some(b) = &cfg.basic_auth {
            let (user, pass) = b.resolve().map_err(SettingError::msg)?;
            auth = Some(Auth::Basic(user, pass));
        }
        if let Some(a) = &cfg.authorization {
            let h = a.header_value().map_err(SettingError::msg)?;
            reqwest::header::HeaderValue::from_str(&h)
                .map_err(|_| SettingError::msg("authorization: the credentials are not a valid header value"))?;
            auth = Some(Auth::Header(h));
        }
        if let Some(t) = &cfg.bearer_token {
            auth = Some(Auth::Bearer(t.clone()));
        }
        if let Some(f) = &cfg.bearer_token_file {
            auth = Some(Auth::Bearer(read_secret(f)?));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &cfg.headers {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| SettingError::new("header name", e))?,
                reqwest::header::HeaderValue::from_str(v).map_err(|e| SettingError::new("header value", e))?,
            );
        }
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("csoc-collector/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .pool_max_idle_per_host(cfg.shards);
        if let Some(t) = &cfg.tls {
            if t.insecure_skip_verify {
                tracing::warn!(
                    remote = name,
                    "remote write: tls_config.insecure_skip_verify is set; the receiver's certificate is not checked"
                );
            }
            b = t.apply(b).map_err(SettingError::msg)?;
        }
        if !cfg.follow_redirects {
            b = b.redirect(reqwest::redirect::Policy::none());
        }
        if !cfg.enable_http2 {
            b = b.http1_only();
        }
        let client = b.build().map_err(|e| SettingError::new("building the HTTP client", e))?;
        let labels = vec![
            ("remote_name".to_string(), name.to_string()),
            ("url".to_string(), redact_url(&cfg.url)),
        ];
        Ok(Queue {
            cfg: cfg.clone(),
            name: name.to_string(),
            labels,
            hold: Arc::new(WalHold::new(name, pos, cfg.max_backlog)),
            resume_inflight: inflight_to,
            state_path,
            client,
            endpoint,
            auth,
            external_labels: external_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            metrics,
        })
    }

    /// Reads the WAL from the position on and sends it, until `stop`; after
    /// `drain`, until caught up.
    ///
    /// Pipelined: up to [`PIPELINE`] batches are in flight at once. Each
    /// shard has one sender task taking its part of every batch in batch
    /// order, so a series' samples still leave in time order, and a slow
    /// request holds back only its own shard, not the others. The position
    /// advances over a batch once every shard has finished its part and
    /// every earlier batch is done; the position file names each batch in
    /// flight, so a restart sends exactly those batches again, one by one.
    async fn run(self: Arc<Self>, wal: WalReader, stop: CancellationToken, drain: CancellationToken) {
        let mut watch = wal.wal_watch();
        // The last record read (sent or in flight).
        let mut after = self.hold.position();
        let mut saved: (u64, Vec<u64>) = (after, Vec::new());
        let mut cache = SeriesCache::default();
        let mut resend: std::collections::VecDeque<u64> = self.resume_inflight.iter().copied().collect();
        let gauges = tokio::spawn(self.clone().report(wal.clone(), stop.clone()));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, bool)>();
        let mut senders = Vec::with_capacity(self.cfg.shards);
        let mut workers = Vec::with_capacity(self.cfg.shards);
        for _ in 0..self.cfg.shards {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ShardJob>();
            senders.push(tx);
            workers.push(tokio::spawn(self.clone().shard_sender(rx, done_tx.clone(), stop.clone())));
        }
        drop(done_tx);
        let mut inflight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
        let mut next_seq = 0u64;
        let mut broken = false;
        loop {
            if stop.is_cancelled() || broken {
                break;
            }
            // Finished parts, without waiting.
            while let Ok(d) = done_rx.try_recv() {
                broken |= !finish_part(&mut inflight, d);
            }
            self.complete_prefix(&mut inflight);
            if broken {
                break;
            }
            // The storage may have moved the hold past a backlog over the limit.
            let held = self.hold.position();
            if held != UNSET && held > after {
                after = held;
                resend.clear();
            }
            if inflight.len() >= PIPELINE {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    d = done_rx.recv() => match d {
                        Some(d) => broken |= !finish_part(&mut inflight, d),
                        None => break,
                    },
                }
                continue;
            }
            // Only published records: their series are in the index.
            let published = *watch.borrow_and_update();
            let t2 = wal.clone();
            // A batch of whole records, about 10 requests per shard; after a
            // restart, exactly the batches that were in flight.
            let (upto, target) = match resend.front() {
                Some(to) => ((*to).min(published), usize::MAX),
                None => (published, self.cfg.shards * self.cfg.max_samples_per_send * 10),
            };
            let read = tokio::task::spawn_blocking(move || t2.read_wal(after, upto, READ_RECORDS, target)).await;
            resend.pop_front();
            let records = match read {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(remote = %self.name, error = %e, "remote write: reading the WAL failed; retrying");
                    if sleep_or_stop(Duration::from_secs(1), &stop).await {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(remote = %self.name, error = %e, "remote write: WAL reader task failed");
                    break;
                }
            };
            if records.is_empty() {
                if !inflight.is_empty() {
                    // Nothing new to read: wait for what is in flight.
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        d = done_rx.recv() => match d {
                            Some(d) => broken |= !finish_part(&mut inflight, d),
                            None => break,
                        },
                        Ok(()) = watch.changed() => {},
                    }
                    continue;
                }
                // Caught up: the position alone (while sending, it goes with
                // the in-flight marks below: one write per batch).
                let pos = self.hold.position();
                if saved != (pos, Vec::new()) {
                    self.save(pos, &[]).await;
                    saved = (pos, Vec::new());
                }
                if drain.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = drain.cancelled() => {},
                    _ = watch.changed() => {},
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
                continue;
            }
            if let Some(first) = records.first()
                && first.id > after + 1
                && self.hold.position() <= after
            {
                tracing::warn!(
                    remote = %self.name,
                    from = after + 1,
                    to = first.id - 1,
                    "remote write: WAL records were removed before they were sent (the target was not configured while they were written)"
                );
            }
            let batch = &records[..];
            let last = batch[batch.len() - 1].id;
            self.hold.set_inflight(last);
            let mut marks: Vec<u64> = inflight.iter().map(|b| b.last).collect();
            marks.push(last);
            let pos = self.hold.position();
            self.save(pos, &marks).await;
            saved = (pos, marks);
            let shards = self.shard(&wal, batch, &mut cache);
            let seq = next_seq;
            next_seq += 1;
            let mut parts = 0usize;
            for (tx, reqs) in senders.iter().zip(shards) {
                if reqs.is_empty() {
                    continue;
                }
                if tx.send((seq, reqs)).is_err() {
                    broken = true;
                    break;
                }
                parts += 1;
            }
            inflight.push_back(InFlight { seq, last, parts });
            after = last;
            self.complete_prefix(&mut inflight);
        }
        // Stopped with batches in flight: the senders stop too; what they
        // finished is counted, the rest stays marked in flight, so the next
        // start sends those batches again, unchanged.
        drop(senders);
        for w in workers {
            let _ = w.await;
        }
        while let Ok(d) = done_rx.try_recv() {
            finish_part(&mut inflight, d);
        }
        self.complete_prefix(&mut inflight);
        if inflight.is_empty() {
            self.hold.set_inflight(0);
        }
        gauges.abort();
        let pos = self.hold.position();
        let marks: Vec<u64> = inflight.iter().map(|b| b.last).filter(|l| *l > pos).collect();
        if pos != UNSET && (pos, &marks) != (saved.0, &saved.1) && pos >= saved.0 {
            self.save(pos, &marks).await;
        }
        self.update_gauges(&wal);
        let (pending, _) = wal.wal_backlog(pos);
        tracing::info!(remote = %self.name, wal_id = pos, pending_samples = pending, "remote write stopped");
    }

    /// Advances the position over the batches at the front whose every
    /// part is done.
    fn complete_prefix(&self, inflight: &mut std::collections::VecDeque<InFlight>) {
        while inflight.front().is_some_and(|b| b.parts == 0) {
            if let Some(b) = inflight.pop_front() {
                self.hold.advance(b.last);
            }
        }
        if inflight.is_empty() {
            self.hold.set_inflight(0);
        }
    }

    /// One shard's sender: its parts of the batches, in batch order, each
    /// request after the previous one succeeded (or failed for good).
    async fn shard_sender(
        self: Arc<Self>,
        mut jobs: tokio::sync::mpsc::UnboundedReceiver<ShardJob>,
        done: tokio::sync::mpsc::UnboundedSender<(u64, bool)>,
        stop: CancellationToken,
    ) {
        while let Some((seq, reqs)) = jobs.recv().await {
            let mut ok = true;
            for (req, n, max_t) in reqs {
                match self.send(req, n, &stop).await {
                    Sent::Ok => {
                        let g = self.metrics.highest_sent.get_or_create(&self.labels);
                        if max_t as f64 / 1000.0 > g.get() {
                            g.set(max_t as f64 / 1000.0);
                        }
                    }
                    Sent::Failed => {}
                    Sent::Stopped => {
                        ok = false;
                        break;
                    }
                }
            }
            let _ = done.send((seq, ok));
            if !ok {
                return;
            }
        }
    }

    /// Keeps the gauges and the backlog-drop counter current, also while a
    /// batch is being retried.
    async fn report(self: Arc<Self>, wal: WalReader, stop: CancellationToken) {
        loop {
            self.update_gauges(&wal);
            if sleep_or_stop(Duration::from_secs(2), &stop).await {
                return;
            }
        }
    }

    fn update_gauges(&self, wal: &WalReader) {
        let m = &self.metrics;
        let pos = self.hold.position();
        if pos == UNSET {
            return;
        }
        let (pending, _) = wal.wal_backlog(pos);
        m.pending.get_or_create(&self.labels).set(pending as i64);
        m.position.get_or_create(&self.labels).set(pos as i64);
        let (dropped, _) = self.hold.dropped();
        let c = m.dropped.get_or_create(&self.with_reason("backlog_exceeded"));
        let reported = c.get();
        if dropped > reported {
            c.inc_by(dropped - reported);
        }
    }

    fn with_reason(&self, reason: &str) -> Labels {
        let mut l = self.labels.clone();
        l.push(("reason".into(), reason.into()));
        l
    }

    /// Splits a batch into per-shard lists of encoded requests
    /// (body, samples, highest timestamp).
    fn shard(&self, wal: &WalReader, batch: &[WalRecord], cache: &mut SeriesCache) -> Vec<Vec<(Vec<u8>, usize, i64)>> {
        if cache.0.len() > LABEL_CACHE_MAX {
            cache.0.clear();
        }
        let n = self.cfg.shards;
        // Per shard: series in first-seen order, with their samples.
        let mut per: Vec<ShardBatch> = (0..n).map(|_| Default::default()).collect();
        let (mut unknown, mut relabeled, mut late) = (0u64, 0u64, 0u64);
        for r in batch {
            for &(sid, t, v) in &r.samples {
                let entry = match cache.0.get_mut(&sid) {
                    Some(e) => e,
                    None => {
                        let Some(l) = wal.series_labels(sid) else {
                            unknown += 1;
                            continue;
                        };
                        cache.0.entry(sid).or_insert(Cached {
                            labels: self.wire_labels(&l),
                            last_sent: i64::MIN,
                        })
                    }
                };
                let Some(labels) = entry.labels.clone() else {
                    relabeled += 1;
                    continue;
                };
                // Receivers without an out-of-order window refuse a whole
                // request for one sample older than what they hold.
                if t <= entry.last_sent && !self.cfg.send_out_of_order_samples {
                    late += 1;
                    continue;
                }
                let shard = shard_of(sid, n);
                let (ix, list) = &mut per[shard];
                let i = *ix.entry(sid).or_insert_with(|| {
                    list.push((sid, labels, Vec::new()));
                    list.len() - 1
                });
                list[i].2.push((t, v));
            }
        }
        for (reason, n) in [("unknown_series", unknown), ("relabel", relabeled), ("out_of_order", late)] {
            if n > 0 {
                self.metrics.dropped.get_or_create(&self.with_reason(reason)).inc_by(n);
            }
        }
        // What goes out now is the newest each series has sent.
        for (_, list) in &per {
            for (sid, _, samples) in list {
                if let (Some(e), Some(max)) = (cache.0.get_mut(sid), samples.iter().map(|s| s.0).max()) {
                    e.last_sent = e.last_sent.max(max);
                }
            }
        }
        per.into_iter()
            .map(|(_, list)| {
                let mut reqs = Vec::new();
                let mut cur = RequestWriter::default();
                for (_, labels, mut samples) in list {
                    // Time order, the last write winning on equal timestamps.
                    samples.sort_by_key(|s| s.0);
                    let mut dedup: Vec<(i64, f64)> = Vec::with_capacity(samples.len());
                    for s in samples {
                        match dedup.last_mut() {
                            Some(l) if l.0 == s.0 => *l = s,
                            _ => dedup.push(s),
                        }
                    }
                    let mut rest = &dedup[..];
                    while !rest.is_empty() {
                        let room = self.cfg.max_samples_per_send - cur.samples;
                        let (now, later) = rest.split_at(rest.len().min(room));
                        cur.series(&labels, now);
                        rest = later;
                        if cur.samples == self.cfg.max_samples_per_send {
                            reqs.push(std::mem::take(&mut cur).finish());
                        }
                    }
                }
                if cur.samples > 0 {
                    reqs.push(cur.finish());
                }
                reqs
            })
            .collect()
    }

    /// The labels as sent: external labels added (the series' own win),
    /// then `write_relabel_configs`. None when relabelling drops the series.
    fn wire_labels(&self, l: &Labels) -> Option<Arc<[u8]>> {
        let mut labels: Labels = l.clone();
        let mut added = false;
        for (k, v) in &self.external_labels {
            if labels.binary_search_by(|(n, _)| n.as_str().cmp(k)).is_err() {
                labels.push((k.clone(), v.clone()));
                added = true;
            }
        }
        if added {
            labels.sort();
        }
        if !self.cfg.write_relabel_configs.is_empty() {
            if !csoc_common::relabel::relabel(&mut labels, &self.cfg.write_relabel_configs) {
                return None;
            }
            labels.retain(|(_, v)| !v.is_empty());
            labels.sort();
            if !labels.iter().any(|(k, _)| k == "__name__") {
                return None;
            }
        }
        Some(encode_labels(&labels))
    }

    /// Sends one request, retrying what may succeed later: HTTP 5xx and
    /// 429 with exponential backoff up to `max_backoff` (honouring
    /// `Retry-After`), a refused connection at most [`CONNECT_RETRY_MAX`]
    /// apart.
    async fn send(&self, body: Vec<u8>, samples: usize, stop: &CancellationToken) -> Sent {
        let m = &self.metrics;
        let body = axum::body::Bytes::from(body);
        let mut backoff = self.cfg.min_backoff;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let started = Instant::now();
            let mut req = self
                .client
                .post(self.endpoint.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .header(reqwest::header::CONTENT_ENCODING, "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body.clone());
            match &self.auth {
                Some(Auth::Basic(u, p)) => req = req.basic_auth(u, Some(p)),
                Some(Auth::Bearer(t)) => req = req.bearer_auth(t),
                Some(Auth::Header(h)) => req = req.header(reqwest::header::AUTHORIZATION, h),
                None => {}
            }
            let res = tokio::select! {
                _ = stop.cancelled() => return Sent::Stopped,
                r = req.send() => r,
            };
            // A receiver that refuses the connection (down, restarting) costs
            // nothing to ask again: its retries stay at most
            // CONNECT_RETRY_MAX apart, so the drain starts within that of it
            // coming back, however long it was away.
            let refused = matches!(&res, Err(e) if e.is_connect());
            let (why, retry_after) = match res {
                Ok(resp) if resp.status().is_success() => {
                    m.samples.get_or_create(&self.labels).inc_by(samples as u64);
                    m.bytes.get_or_create(&self.labels).inc_by(body.len() as u64);
                    m.requests.get_or_create(&self.with_outcome("ok")).inc();
                    m.duration.get_or_create(&self.labels).observe(started.elapsed().as_secs_f64());
                    if attempt > 1 {
                        tracing::info!(remote = %self.name, attempts = attempt, "remote write: delivered after retries");
                    }
                    return Sent::Ok;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = error_body(resp).await;
                    let retryable = status.is_server_error() || (status.as_u16() == 429 && self.cfg.retry_on_http_429);
                    if !retryable {
                        m.failed.get_or_create(&self.labels).inc_by(samples as u64);
                        m.requests.get_or_create(&self.with_outcome("failed")).inc();
                        tracing::warn!(
                            remote = %self.name,
                            status = status.as_u16(),
                            samples,
                            response = %text.trim(),
                            "remote write: the receiver refused a request; its samples are not sent again"
                        );
                        return Sent::Failed;
                    }
                    (format!("HTTP {}: {}", status.as_u16(), text.trim()), retry_after)
                }
                // Without the URL: its query string may hold a credential.
                Err(e) => (error_chain(&e.without_url()), None),
            };
            m.retried.get_or_create(&self.labels).inc_by(samples as u64);
            m.requests.get_or_create(&self.with_outcome("retry")).inc();
            let delay = match retry_after {
                Some(d) => d.clamp(backoff, Duration::from_secs(300)),
                None if refused => backoff.min(CONNECT_RETRY_MAX),
                None => backoff,
            };
            if attempt == 1 || attempt.is_multiple_of(20) {
                tracing::warn!(remote = %self.name, attempt, error = %why, retry_in = ?delay, "remote write: request failed; retrying");
            }
            if sleep_or_stop(delay, stop).await {
                return Sent::Stopped;
            }
            backoff = (backoff * 2).min(self.cfg.max_backoff);
        }
    }

    fn with_outcome(&self, outcome: &str) -> Labels {
        let mut l = self.labels.clone();
        l.push(("outcome".into(), outcome.into()));
        l
    }

    /// Saves the position and the end of the batch in flight (written,
    /// synced and renamed: a crash keeps a whole file, the new or the
    /// previous one). Once per batch, and once when caught up.
    async fn save(&self, wal_id: u64, inflight: &[u64]) {
        let path = self.state_path.clone();
        let body = serde_json::to_vec(&SavedPosition {
            url: redact_url(&self.cfg.url),
            wal_id,
            inflight_to: inflight.first().copied(),
            inflight_more: inflight.get(1..).unwrap_or_default().to_vec(),
        })
        .unwrap_or_default();
        let res = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let tmp = path.with_extension("json.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(remote = %self.name, path = %self.state_path.display(), error = %e, "remote write: cannot save the position")
            }
            Err(e) => tracing::error!(remote = %self.name, error = %e, "remote write: saving the position failed"),
        }
    }
}

/// The first 512 bytes of an error answer's body, as text.
async fn error_body(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < 512 {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    body.truncate(512);
    String::from_utf8_lossy(&body).into_owned()
}

fn shard_of(series: i64, shards: usize) -> usize {
    ((series as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % shards
}

/// A series' labels as the wire bytes of `TimeSeries.labels` (field 1,
/// repeated `Label`), encoded once per series and reused in every request.
fn encode_labels(labels: &Labels) -> Arc<[u8]> {
    let mut out = Vec::new();
    for (name, value) in labels {
        let l = pb::Label {
            name: name.clone(),
            value: value.clone(),
        };
        prost::encoding::message::encode(1, &l, &mut out);
    }
    out.into()
}

/// Builds a `WriteRequest` (field 1: repeated `TimeSeries`) from pre-encoded
/// labels, byte for byte what prost writes for the same message.
#[derive(Default)]
struct RequestWriter {
    buf: Vec<u8>,
    body: Vec<u8>,
    samples: usize,
    max_t: Option<i64>,
}

impl RequestWriter {
    /// Adds one `TimeSeries` with `labels` (from [`encode_labels`]) and samples.
    fn series(&mut self, labels: &[u8], samples: &[(i64, f64)]) {
        self.body.clear();
        self.body.extend_from_slice(labels);
        for &(t, v) in samples {
            prost::encoding::message::encode(2, &pb::Sample { value: v, timestamp: t }, &mut self.body);
        }
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut self.buf);
        prost::encoding::encode_varint(self.body.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(&self.body);
        self.samples += samples.len();
        if let Some(&(t, _)) = samples.last() {
            self.max_t = Some(self.max_t.map_or(t, |m| m.max(t)));
        }
    }

    /// The snappy-compressed request, its sample count and highest timestamp.
    fn finish(self) -> (Vec<u8>, usize, i64) {
        let body = snap::raw::Encoder::new().compress_vec(&self.buf).unwrap_or_default();
        (body, self.samples, self.max_t.unwrap_or(i64::MIN))
    }
}

fn read_secret(path: &Path) -> Result<String, SettingError> {
    let s = std::fs::read_to_string(path).map_err(|e| SettingError::new(format!("reading {}", path.display()), e))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Sleeps; true when `stop` fired first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        csoc_common::labels::from_pairs(pairs)
    }

    #[test]
    fn request_writer_matches_prost_byte_for_byte() {
        let a = labels(&[("__name__", "up"), ("job", "node"), ("instance", "h:9100")]);
        let b = labels(&[("__name__", "x"), ("commons", "é ü")]);
        let stale = f64::from_bits(csoc_proto::STALE_NAN_BITS);
        let mut w = RequestWriter::default();
        w.series(&encode_labels(&a), &[(1000, 1.0), (2000, -0.0)]);
        w.series(&encode_labels(&b), &[(1500, stale), (i64::MAX, f64::INFINITY)]);
        let (body, n, max_t) = w.finish();
        assert_eq!((n, max_t), (4, i64::MAX));
        let want = pb::WriteRequest {
            timeseries: [
                (&a, vec![(1000, 1.0), (2000, -0.0)]),
                (&b, vec![(1500, stale), (i64::MAX, f64::INFINITY)]),
            ]
            .into_iter()
            .map(|(l, s)| pb::TimeSeries {
                labels: l
                    .iter()
                    .map(|(k, v)| pb::Label {
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                samples: s.into_iter().map(|(t, v)| pb::Sample { value: v, timestamp: t }).collect(),
                ..Default::default()
            })
            .collect(),
            ..Default::default()
        };
        let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy");
        assert_eq!(raw, want.encode_to_vec());
        let back = pb::WriteRequest::decode(raw.as_slice()).expect("decodes");
        assert_eq!(
            back.timeseries[1].samples[0].value.to_bits(),
            csoc_proto::STALE_NAN_BITS,
            "staleness markers survive"
        );
    }

    #[test]
    fn shards_spread_series_and_keep_each_on_one() {
        let mut counts = [0usize; 4];
        for id in 1..=4000i64 {
            let s = shard_of(id, 4);
            assert_eq!(s, shard_of(id, 4));
            counts[s] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        assert_eq!(shard_of(42, 1), 0);
    }
}

#[cfg(test)]
mod position_tests {
    use super::*;

    fn prepare(dir: &Path) -> Remotes {
        let cfg = RemoteWriteConfig {
            name: Some("r".into()),
            ..RemoteWriteConfig::with_url("http://127.0.0.1:1/api/v1/write")
        };
        let mut reg = Registry::default();
        Remotes::prepare(&[cfg], dir, &Default::default(), RemoteMetrics::new(&mut reg)).expect("prepare")
    }

    #[test]
    fn saved_positions_are_read_and_an_unreadable_file_does_not_stop_the_start() {
        let d = tempfile::tempdir().expect("tempdir");
        let rw = d.path().join("remote-write");
        std::fs::create_dir_all(&rw).expect("mkdir");
        assert_eq!(prepare(d.path()).holds().snapshot()[0].position(), UNSET, "no file: a new target");

        std::fs::write(
            rw.join("r.json"),
            r#"{"url":"http://127.0.0.1:1/api/v1/write","wal_id":41,"inflight_to":57}"#,
        )
        .expect("write");
        let r = prepare(d.path());
        assert_eq!(r.holds().snapshot()[0].position(), 41);
        assert_eq!(
            r.lock().queues[0].q.resume_inflight,
            vec![57],
            "the batch in flight is sent again, whole"
        );

        std::fs::write(
            rw.join("r.json"),
            r#"{"url":"x","wal_id":41,"inflight_to":57,"inflight_more":[60,64]}"#,
        )
        .expect("write");
        assert_eq!(
            prepare(d.path()).lock().queues[0].q.resume_inflight,
            vec![57, 60, 64],
            "pipelined batches are sent again one by one, as they were"
        );

        std::fs::write(rw.join("r.json"), r#"{"url":"x","wal_id":41}"#).expect("write");
        assert!(prepare(d.path()).lock().queues[0].q.resume_inflight.is_empty());

        // A torn file (a crash of an older version, a full disk): resend what the WAL holds.
        std::fs::write(rw.join("r.json"), "{\"url\":").expect("write");
        assert_eq!(prepare(d.path()).holds().snapshot()[0].position(), 0);
    }
}
