//! gRPC ingest: the collector's side of the agent stream (see
//! `proto/proto/csoc/v1/ingest.proto`).
//!
//! Authentication happens before any message is read: a stream without a
//! known bearer token is refused with `UNAUTHENTICATED`, the refusal is
//! logged with the peer's address (never the token), and nothing is stored.
//! The commons of every series is the one the token maps to; whatever label
//! the agent sent is overwritten.
//!
//! With `grpc_tls` and a client CA, a verified client certificate mapped to
//! a commons authenticates a stream too, alone or with a token that must
//! agree with it (`peer.rs`; semantics in `crate::tls`).
//!
//! Each batch is validated as a whole before anything of it is written; an
//! invalid batch gets a `Nack` and changes nothing (not even the stream's
//! ref table). A valid batch is committed with its seq in one transaction
//! and acknowledged only after the commit returned.
//!
//! **Re-used seqs.** A batch whose seq is already applied is acknowledged
//! without being stored again (exactly-once: the agent re-sends what it was
//! not sure of). Its content is compared with what was applied under that
//! seq: the service keeps, per agent (commons, name, spool epoch), a digest
//! of the last [`APPLIED_DIGESTS`] batches it applied — a hash of every
//! sample's series labels (not the stream's refs, which change between
//! streams), timestamp and value bits. A re-sent seq whose digest differs
//! gets a final `Nack` with code `OUT_OF_ORDER` naming the seq, and nothing
//! is stored. The digests are in memory only: after a restart (or for a seq
//! older than the window) a re-sent seq is acknowledged as before, without
//! a comparison — the durable ledger keeps only the highest applied seq.
//!
//! `remote_write.rs` is the same for Prometheus remote write 1.0 over HTTP.

#[doc(hidden)]
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod limits;
mod peer;
pub mod remote_write;

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use csoc_proto::v1::agent_message::Msg as AgentMsg;
use csoc_proto::v1::collector_message::Msg as CollectorMsg;
use csoc_proto::v1::ingest_server::{Ingest, IngestServer};
use csoc_proto::v1::{
    Ack, AgentMessage, CollectorMessage, ConfigPush, ConfigStatus, Heartbeat, Hello, Nack, NackCode, Welcome, WriteBatch,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::AgentAuth;
use crate::config::Limits;
use crate::ingest::limits::{LimitError, Limiter, StreamSlot, series_hash};
use crate::metadata::MetadataStore;
use crate::metrics::IngestMetrics;
use crate::tsdb::{AgentKey, CommitOutcome, Labels, SeriesRef, Tsdb};
use csoc_common::labels::{valid_label_name, valid_metric_name};

/// A stream ref's series: its storage ref once known (then its labels are
/// not kept), else its labels.
/// Each with the hash the series limit counts it by.
#[derive(Debug, Clone)]
enum StreamSeries {
    Known(SeriesRef, u64),
    Pending(Arc<Labels>, u64),
}

/// How many applied batches' digests are kept per agent.
pub const APPLIED_DIGESTS: usize = 1024;

/// (commons, agent) → (spool epoch, (seq, digest) oldest first).
type DigestMap = HashMap<(String, String), (u64, VecDeque<(u64, u64)>)>;

/// Digests of the last applied batches, per agent.
#[derive(Default)]
struct AppliedDigests {
    agents: std::sync::Mutex<DigestMap>,
}

impl AppliedDigests {
    fn lock(&self) -> std::sync::MutexGuard<'_, DigestMap> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The digest applied under `seq`, if still known.
    fn get(&self, key: &AgentKey, seq: u64) -> Option<u64> {
        let agents = self.lock();
        let (epoch, d) = agents.get(&(key.commons.clone(), key.agent.clone()))?;
        if *epoch != key.epoch {
            return None;
        }
        d.iter().rev().find(|(s, _)| *s == seq).map(|(_, h)| *h)
    }

    /// Drops what is kept of an agent (forgotten by the registry).
    fn forget(&self, commons: &str, agent: &str) {
        self.lock().remove(&(commons.to_string(), agent.to_string()));
    }

    fn record(&self, key: &AgentKey, seq: u64, digest: u64) {
        let mut agents = self.lock();
        let e = agents
            .entry((key.commons.clone(), key.agent.clone()))
            .or_insert_with(|| (key.epoch, VecDeque::new()));
        if e.0 != key.epoch {
            *e = (key.epoch, VecDeque::new());
        }
        if e.1.len() >= APPLIED_DIGESTS {
            e.1.pop_front();
        }
        e.1.push_back((seq, digest));
    }
}

/// The content digest of a batch: its samples' series hashes, timestamps
/// and value bits, in order.
fn batch_digest(used: &[u64], ts: &[i64], vs: &[f64]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    used.len().hash(&mut h);
    for ((s, t), v) in used.iter().zip(ts).zip(vs) {
        (s, t, v.to_bits()).hash(&mut h);
    }
    h.finish()
}

/// The gRPC service.
#[derive(Clone)]
pub struct IngestService {
    tsdb: Tsdb,
    auth: crate::live::Live<AgentAuth>,
    limits: crate::live::Live<Limits>,
    heartbeat: Duration,
    metrics: IngestMetrics,
    shutdown: CancellationToken,
    metadata: Arc<MetadataStore>,
    peer_policy: Arc<crate::tls::PeerPolicy>,
    limiter: Arc<Limiter>,
    digests: Arc<AppliedDigests>,
    agents: Arc<crate::agents::AgentRegistry>,
}

impl IngestService {
    /// Creates the service.
    pub fn new(
        tsdb: Tsdb,
        auth: Arc<AgentAuth>,
        limits: Limits,
        heartbeat: Duration,
        metrics: IngestMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        let limiter = Arc::new(Limiter::new(limits.clone(), Default::default()));
        let agents = Arc::new(crate::agents::AgentRegistry::new(Duration::ZERO, metrics.agent_last_seen.clone()));
        IngestService {
            tsdb,
            auth: crate::live::Live::from_arc(auth),
            limits: limits.into(),
            heartbeat,
            metrics,
            shutdown,
            metadata: Arc::default(),
            peer_policy: Arc::default(),
            limiter,
            digests: Arc::default(),
            agents,
        }
    }

    /// The agent registry that records each agent's contacts (by default
    /// one of its own, in memory, never forgetting). The digests of the
    /// batches an agent applied are dropped when the registry forgets it.
    pub fn with_agents(mut self, agents: Arc<crate::agents::AgentRegistry>) -> Self {
        let digests = self.digests.clone();
        agents.on_forget(Box::new(move |c, a| digests.forget(c, a)));
        self.agents = agents;
        self
    }

    /// The limiter enforcing the per-agent limits (by default one of its
    /// own with unregistered metrics).
    pub fn with_limiter(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Where the metadata of applied batches is recorded (by default a
    /// store of its own).
    pub fn with_metadata(mut self, metadata: Arc<MetadataStore>) -> Self {
        self.metadata = metadata;
        self
    }

    /// The agent tokens as a reload replaces them (instead of the fixed
    /// table given to [`IngestService::new`]).
    pub fn with_live_auth(mut self, auth: crate::live::Live<AgentAuth>) -> Self {
        self.auth = auth;
        self
    }

    /// The limits as a reload replaces them.
    pub fn with_live_limits(mut self, limits: crate::live::Live<Limits>) -> Self {
        self.limits = limits;
        self
    }

    /// How client certificates authenticate streams (by default: they do
    /// not; see `crate::tls`).
    pub fn with_peer_policy(mut self, policy: crate::tls::PeerPolicy) -> Self {
        self.peer_policy = Arc::new(policy);
        self
    }

    /// The tonic server wrapping this service.
    pub fn into_server(self) -> IngestServer<Self> {
        // Batches up to twice the limit are decoded so that the Nack can name
        // the limit; past that, tonic refuses the frame.
        let max = (self.limits.load().max_batch_bytes as usize).saturating_mul(2) + 4096;
        IngestServer::new(self).max_decoding_message_size(max)
    }
}

fn peer_str(p: Option<SocketAddr>) -> String {
    p.map(|a| a.to_string()).unwrap_or_else(|| "unknown".into())
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type ConnectStream = ReceiverStream<Result<CollectorMessage, Status>>;

    async fn connect(&self, req: Request<Streaming<AgentMessage>>) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = peer_str(req.remote_addr());
        let header = req.metadata().get(csoc_proto::AUTHORIZATION_HEADER).and_then(|v| v.to_str().ok());
        let cert = self.cert_identity(req.peer_certs().as_deref().map(Vec::as_slice), header, &peer)?;
        let commons = match header.and_then(crate::auth::bearer) {
            None if cert.is_some() => cert.as_ref().map(|c| c.commons.clone()).unwrap_or_default(),
            None => {
                self.metrics.refused("no_token");
                tracing::warn!(peer = %peer, "refused an agent stream: no bearer token (the agent needs --token; map it here with --agent-token COMMONS=TOKEN)");
                return Err(Status::unauthenticated(
                    "no bearer token: start the agent with --token (the collector maps tokens to commons with --agent-token COMMONS=TOKEN)",
                ));
            }
            Some(tok) => match self.auth.load().authenticate(tok).map(str::to_string) {
                Some(c) => c,
                None => {
                    self.metrics.refused("unknown_token");
                    if self.auth.load().is_empty() {
                        tracing::warn!(peer = %peer, "refused an agent stream: no agent tokens are configured; add one with --agent-token COMMONS=TOKEN or agent_tokens in the config file");
                    } else {
                        tracing::warn!(peer = %peer, "refused an agent stream: token not recognised (an agent's token is mapped to its commons with --agent-token COMMONS=TOKEN or agent_tokens in the config file)");
                    }
                    return Err(Status::unauthenticated("token not recognised by the collector"));
                }
            },
        };
        self.check_cert_token(cert.as_ref(), header, &commons, &peer)?;
        let slot = match self.limiter.open_stream(&commons) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(peer = %peer, commons = %commons, "refused an agent stream: {}", e.message);
                return Err(Status::resource_exhausted(e.message));
            }
        };
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let session = Session {
            svc: self.clone(),
            commons,
            peer,
            tx,
            _slot: slot,
            applied: Default::default(),
        };
        tokio::spawn(session.run(inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Session {
    svc: IngestService,
    commons: String,
    peer: String,
    tx: mpsc::Sender<Result<CollectorMessage, Status>>,
    _slot: StreamSlot,
    /// The highest seq applied for this agent identity (from Welcome, then
    /// each applied batch).
    applied: std::sync::atomic::AtomicU64,
}

/// A rejected batch.
#[derive(Debug)]
struct Reject {
    code: NackCode,
    message: String,
    retryable: bool,
}

impl Reject {
    fn invalid(message: String) -> Self {
        Reject {
            code: NackCode::Invalid,
            message,
            retryable: false,
        }
    }
    fn limit(message: String) -> Self {
        Reject {
            code: NackCode::Limit,
            message,
            retryable: false,
        }
    }
}

impl From<LimitError> for Reject {
    fn from(e: LimitError) -> Self {
        Reject {
            code: NackCode::Limit,
            message: e.message,
            retryable: e.retryable,
        }
    }
}

impl Session {
    async fn send(&self, msg: CollectorMsg) -> bool {
        self.tx.send(Ok(CollectorMessage { msg: Some(msg) })).await.is_ok()
    }

    /// A frame that could not be read: a frame that does not decode
    /// (not protobuf, invalid UTF-8 in a string, oversized) is refused with
    /// `INVALID_ARGUMENT` naming the problem, logged and counted; a stream
    /// the agent dropped is only logged at debug level.
    async fn frame_error(&self, e: &Status) {
        let undecodable = matches!(
            e.code(),
            tonic::Code::Internal | tonic::Code::OutOfRange | tonic::Code::InvalidArgument
        );
        if undecodable {
            self.svc.metrics.refused("bad_frame");
            tracing::warn!(peer = %self.peer, commons = %self.commons, "closed an agent stream: undecodable frame: {}", e.message());
            let _ = self
                .tx
                .send(Err(Status::invalid_argument(format!("undecodable frame: {}", e.message()))))
                .await;
        } else {
            tracing::debug!(peer = %self.peer, error = %e, "agent stream failed");
        }
    }

    async fn run(self, mut inbound: Streaming<AgentMessage>) {
        let hello = match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                msg: Some(AgentMsg::Hello(h)),
            }))) => h,
            Ok(Ok(Some(_))) => {
                tracing::warn!(peer = %self.peer, commons = %self.commons, "agent stream did not start with Hello; closed");
                let _ = self.tx.send(Err(Status::invalid_argument("the first message must be Hello"))).await;
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                self.frame_error(&e).await;
                return;
            }
            Err(_) => {
                tracing::warn!(peer = %self.peer, commons = %self.commons, "no Hello within 15s; closed");
                let _ = self.tx.send(Err(Status::deadline_exceeded("no Hello within 15s"))).await;
                return;
            }
        };
        let agent = agent_name(&hello);
        let key = AgentKey {
            commons: self.commons.clone(),
            agent: agent.clone(),
            epoch: hello.spool_epoch,
        };
        let last_applied = match self.svc.tsdb.applied_seq(&key) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the applied seq; refusing the stream");
                let _ = self.tx.send(Err(Status::unavailable(format!("storage: {e}")))).await;
                return;
            }
        };
        self.applied.store(last_applied, std::sync::atomic::Ordering::Relaxed);
        // Central config (--agent-config-dir): the version held for this agent.
        let store = self.svc.agents.config_store().cloned();
        let mut config_rx = store.as_ref().map(|s| s.subscribe());
        let held = store.as_ref().map(|s| s.config_for(&self.commons, &agent));
        let welcome = Welcome {
            last_applied_seq: last_applied,
            config_version: match &held {
                Some(Ok(h)) => h.version,
                _ => 0,
            },
            commons: self.commons.clone(),
            heartbeat_interval_ms: self.svc.heartbeat.as_millis() as u32,
            max_batch_bytes: self.svc.limits.load().max_batch_bytes,
            collector_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        if !self.send(CollectorMsg::Welcome(welcome)).await {
            return;
        }
        if !hello.claimed_commons.is_empty() && hello.claimed_commons != self.commons {
            tracing::info!(peer = %self.peer, agent = %agent, claimed = %hello.claimed_commons, commons = %self.commons, "agent claimed another commons; using the one its token maps to");
        }
        tracing::info!(peer = %self.peer, commons = %self.commons, agent = %agent, version = %hello.version, epoch = hello.spool_epoch, last_applied, "agent connected");
        let m = self.svc.metrics.clone();
        m.agents_connected.inc();
        let agents = self.svc.agents.clone();
        agents.connected(&self.commons, &agent, &hello.hostname, &hello.version);
        let mut cfg = ConfigPushState {
            running_sha256: hello.config_sha256.clone(),
            pushed_sha256: String::new(),
        };
        agents.update_config(&self.commons, &agent, |c| {
            c.running_version = hello.config_version;
            c.running_sha256 = hello.config_sha256.clone();
            c.spool_batches = hello.spool_batches;
            c.status.clear();
            c.error.clear();
        });
        if let Some(held) = held
            && !self.push_config(&agent, held, &mut cfg).await
        {
            m.agents_connected.dec();
            agents.disconnected(&self.commons, &agent);
            return;
        }

        let mut refs: HashMap<u64, StreamSeries> = HashMap::new();
        let mut last_in = Instant::now();
        let mut last_out = Instant::now();
        let hb = self.svc.heartbeat;
        let mut tick = tokio::time::interval(hb.min(Duration::from_secs(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end: String = loop {
            tokio::select! {
                msg = inbound.message() => {
                    last_in = Instant::now();
                    let msg = match msg {
                        Ok(Some(m)) => m,
                        Ok(None) => break "agent closed the stream".into(),
                        Err(e) => {
                            self.frame_error(&e).await;
                            break format!("stream error: {}", e.message());
                        }
                    };
                    agents.seen(&self.commons, &agent);
                    match msg.msg {
                        Some(AgentMsg::Batch(b)) => {
                            let seq = b.seq;
                            let reply = match self.apply(&key, &mut refs, b).await {
                                Ok((CommitOutcome::Applied, n)) => {
                                    m.batch(&self.commons, "acked");
                                    m.stored(&self.commons, n);
                                    CollectorMsg::Ack(Ack { seq })
                                }
                                Ok((CommitOutcome::AlreadyApplied, _)) => {
                                    m.batch(&self.commons, "duplicate");
                                    CollectorMsg::Ack(Ack { seq })
                                }
                                Err(r) => {
                                    m.batch(&self.commons, "nacked");
                                    tracing::warn!(peer = %self.peer, commons = %self.commons, agent = %agent, seq, code = r.code.as_str_name(), "rejected a batch: {}", r.message);
                                    CollectorMsg::Nack(Nack { seq, code: r.code as i32, message: r.message, retryable: r.retryable })
                                }
                            };
                            if !self.send(reply).await {
                                break "agent went away".into();
                            }
                            last_out = Instant::now();
                        }
                        Some(AgentMsg::Heartbeat(h)) => {
                            agents.update_config(&self.commons, &agent, |c| c.spool_batches = h.spool_batches);
                        }
                        Some(AgentMsg::ConfigStatus(s)) => self.config_status(&agent, s, &mut cfg),
                        Some(AgentMsg::Hello(_)) => {
                            tracing::warn!(peer = %self.peer, "second Hello on a stream; ignored");
                        }
                        None => {}
                    }
                }
                _ = tick.tick() => {
                    if last_in.elapsed() > hb * 3 {
                        break format!("agent silent for {:?}", hb * 3);
                    }
                    if last_out.elapsed() >= hb {
                        if !self.send(CollectorMsg::Heartbeat(Heartbeat { timestamp_ms: csoc_common::time::now_ms(), spool_batches: 0 })).await {
                            break "agent went away".into();
                        }
                        last_out = Instant::now();
                    }
                }
                _ = config_changed(&mut config_rx) => {
                    if let Some(s) = &store {
                        let held = s.config_for(&self.commons, &agent);
                        if !self.push_config(&agent, held, &mut cfg).await {
                            break "agent went away".into();
                        }
                        last_out = Instant::now();
                    }
                }
                _ = self.svc.shutdown.cancelled() => {
                    let _ = self.tx.send(Err(Status::unavailable("collector shutting down"))).await;
                    break "collector shutting down".into();
                }
            }
        };
        m.agents_connected.dec();
        agents.disconnected(&self.commons, &agent);
        tracing::info!(peer = %self.peer, commons = %self.commons, agent = %agent, reason = %end, "agent disconnected");
    }

    /// Pushes `held` unless the agent runs it already or it was pushed on
    /// this stream; false when the stream is gone.
    async fn push_config(&self, agent: &str, held: Result<crate::agent_config::Held, String>, st: &mut ConfigPushState) -> bool {
        let agents = &self.svc.agents;
        let h = match held {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(commons = %self.commons, agent = %agent, "{e}");
                return true;
            }
        };
        let runs_it = h.sha256 == st.running_sha256 || (h.body.is_empty() && st.running_sha256.is_empty());
        if runs_it {
            agents.update_config(&self.commons, agent, |c| {
                c.status = "applied".into();
                c.error.clear();
            });
            return true;
        }
        if h.sha256 == st.pushed_sha256 {
            return true;
        }
        tracing::info!(commons = %self.commons, agent = %agent, version = h.version, bytes = h.body.len(), "pushing central config");
        st.pushed_sha256 = h.sha256.clone();
        let version = h.version;
        let ok = self
            .send(CollectorMsg::ConfigPush(ConfigPush {
                version,
                sha256: h.sha256,
                body: h.body,
            }))
            .await;
        if ok {
            agents.update_config(&self.commons, agent, |c| {
                c.status = "pending".into();
                c.error.clear();
            });
        }
        ok
    }

    /// The agent's answer to a push.
    fn config_status(&self, agent: &str, s: ConfigStatus, st: &mut ConfigPushState) {
        let applied = s.status == "applied";
        let error: String = s.error.chars().filter(|c| !c.is_control() || *c == '\n').take(2048).collect();
        if applied {
            st.running_sha256 = s.sha256.clone();
            tracing::info!(commons = %self.commons, agent = %agent, version = s.version, "agent applied its central config");
        } else {
            tracing::warn!(commons = %self.commons, agent = %agent, version = s.version, error = %error, "agent rejected its central config; it keeps its last good one");
        }
        self.svc.agents.update_config(&self.commons, agent, |c| {
            c.answered_version = s.version;
            c.status = if applied { "applied" } else { "rejected" }.into();
            c.error = if applied { String::new() } else { error };
            if applied {
                c.running_version = s.version;
                c.running_sha256 = s.sha256;
            }
        });
    }

    /// Validates, converts and commits one batch.
    async fn apply(&self, key: &AgentKey, refs: &mut HashMap<u64, StreamSeries>, b: WriteBatch) -> Result<(CommitOutcome, u64), Reject> {
        let limits = self.svc.limits.load();
        let limits = &*limits;
        let size = prost::Message::encoded_len(&b) as u64;
        if size > limits.max_batch_bytes {
            self.svc.limiter.metrics().rejected("max_batch_bytes", &self.commons);
            return Err(Reject::limit(format!(
                "batch of {size} bytes exceeds max_batch_bytes {}",
                limits.max_batch_bytes
            )));
        }
        let n = b.refs.len();
        if b.timestamps_ms.len() != n || b.values.len() != n {
            return Err(Reject::invalid(format!(
                "column lengths differ: {} refs, {} timestamps, {} values",
                n,
                b.timestamps_ms.len(),
                b.values.len()
            )));
        }
        let mut defs: HashMap<u64, StreamSeries> = HashMap::with_capacity(b.new_series.len());
        for (i, d) in b.new_series.into_iter().enumerate() {
            let labels =
                validate_series(d.labels.into_iter().map(|l| (l.name, l.value)), &self.commons, limits).map_err(|(lim, msg)| {
                    let msg = format!("new_series[{i}] (ref {}): {msg}", d.r#ref);
                    match lim {
                        Some(name) => {
                            self.svc.limiter.metrics().rejected(name, &self.commons);
                            Reject::limit(msg)
                        }
                        None => Reject::invalid(msg),
                    }
                })?;
            let h = series_hash(&labels);
            defs.insert(d.r#ref, StreamSeries::Pending(Arc::new(labels), h));
        }
        let mut app = self.svc.tsdb.appender();
        // Refs of pending series the appender found in storage; they join
        // the stream's table once the batch is valid.
        let mut found: HashMap<u64, SeriesRef> = HashMap::new();
        let mut pending: Vec<u64> = Vec::new();
        let mut used: Vec<u64> = Vec::with_capacity(n);
        for i in 0..n {
            let r = b.refs[i];
            let series = defs
                .get(&r)
                .or_else(|| refs.get(&r))
                .ok_or_else(|| Reject::invalid(format!("sample {i} uses ref {r}, which no SeriesDef on this stream defines")))?;
            let (t, v) = (b.timestamps_ms[i], b.values[i]);
            match series {
                StreamSeries::Known(sr, h) => {
                    app.append_ref(*sr, t, v);
                    used.push(*h);
                }
                StreamSeries::Pending(labels, h) => {
                    used.push(*h);
                    if let Some(sr) = found.get(&r) {
                        app.append_ref(*sr, t, v);
                    } else if let Some(sr) = app.append(labels.clone(), t, v) {
                        found.insert(r, sr);
                    } else {
                        pending.push(r);
                    }
                }
            }
        }
        // A seq applied before with other content: refused, nothing stored.
        let digest = batch_digest(&used, &b.timestamps_ms, &b.values);
        if let Some(d) = self.svc.digests.get(key, b.seq)
            && d != digest
        {
            return Err(Reject {
                code: NackCode::OutOfOrder,
                message: format!(
                    "seq {} was already applied with different content (a re-used seq: the agent's spool was reset without a new spool_epoch); this batch was not stored",
                    b.seq
                ),
                retryable: false,
            });
        }
        // A batch already applied (a re-send after a crash) is acknowledged
        // without counting against the limits again.
        if b.seq > self.applied.load(std::sync::atomic::Ordering::Relaxed) {
            self.svc.limiter.admit(&key.commons, &key.agent, &used)?;
        }
        app.set_applied_seq(key.clone(), b.seq);
        // The batch is valid: its definitions join the stream's table even if
        // storage fails (the agent re-sends the batch, maybe without them).
        refs.extend(defs);
        let res = app.commit().await.map(|c| {
            // Series created by this commit are now known too.
            pending.dedup();
            for r in pending {
                if let Some(StreamSeries::Pending(labels, _)) = refs.get(&r)
                    && let Some(sr) = c.series_ref(labels)
                {
                    found.insert(r, sr);
                }
            }
            c.outcome
        });
        // Keep only the refs of the series now known.
        for (r, sr) in found {
            if let Some(StreamSeries::Pending(_, h)) = refs.get(&r) {
                let h = *h;
                refs.insert(r, StreamSeries::Known(sr, h));
            }
        }
        if res.is_ok() {
            let md = b.metadata.iter();
            self.svc.metadata.record_all(
                &key.commons,
                md.map(|m| (m.metric_family_name.as_str(), m.r#type, m.help.as_str(), m.unit.as_str())),
            );
        }
        if let Ok(CommitOutcome::Applied) = res {
            self.applied.fetch_max(b.seq, std::sync::atomic::Ordering::Relaxed);
            self.svc.digests.record(key, b.seq, digest);
        }
        match res {
            Ok(o) => Ok((o, n as u64)),
            Err(e) => Err(Reject {
                code: NackCode::Unavailable,
                message: format!("storage: {e}"),
                retryable: true,
            }),
        }
    }
}

/// What a stream knows of its agent's central config.
struct ConfigPushState {
    /// SHA-256 of the central config the agent runs ("" none).
    running_sha256: String,
    /// SHA-256 of the last config pushed on this stream.
    pushed_sha256: String,
}

/// Resolves when the central config changed (never without a store).
async fn config_changed(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

fn agent_name(h: &Hello) -> String {
    let n = if h.agent_name.is_empty() { &h.hostname } else { &h.agent_name };
    let n: String = n.chars().filter(|c| !c.is_control()).take(128).collect();
    if n.is_empty() { "unnamed".into() } else { n }
}

/// Checks a series' labels, sorts them and stamps `commons`. The error
/// names the limit broken, if it was a limit rather than invalid labels.
pub(crate) fn validate_series(
    labels: impl IntoIterator<Item = (String, String)>,
    commons: &str,
    limits: &Limits,
) -> Result<Labels, (Option<&'static str>, String)> {
    let labels = labels.into_iter();
    let mut out: Labels = Vec::with_capacity(labels.size_hint().0 + 1);
    for (name, value) in labels {
        let l = csoc_proto::v1::Label { name, value };
        if l.name == "commons" {
            continue;
        }
        if l.name.len() > limits.max_label_name_length {
            return Err((
                Some("max_label_name_length"),
                format!(
                    "label name of {} bytes exceeds max_label_name_length {}",
                    l.name.len(),
                    limits.max_label_name_length
                ),
            ));
        }
        if l.value.len() > limits.max_label_value_length {
            return Err((
                Some("max_label_value_length"),
                format!(
                    "label {:?} has a value of {} bytes, over max_label_value_length {}",
                    l.name,
                    l.value.len(),
                    limits.max_label_value_length
                ),
            ));
        }
        if l.name != "__name__" && !valid_label_name(&l.name) {
            return Err((None, format!("invalid label name {:?}", l.name)));
        }
        if l.value.is_empty() {
            // An empty label value is the same as no label.
            continue;
        }
        out.push((l.name, l.value));
    }
    out.push(("commons".into(), commons.into()));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    for w in out.windows(2) {
        if w[0].0 == w[1].0 {
            return Err((None, format!("duplicate label name {:?}", w[0].0)));
        }
    }
    match out.iter().find(|(k, _)| k == "__name__") {
        None => return Err((None, "no __name__ label".into())),
        Some((_, v)) if !valid_metric_name(v) => return Err((None, format!("invalid metric name {v:?}"))),
        _ => {}
    }
    if out.len() > limits.max_labels_per_series {
        return Err((
            Some("max_labels_per_series"),
            format!("{} labels exceed max_labels_per_series {}", out.len(), limits.max_labels_per_series),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use csoc_proto::v1::Label;

    fn l(k: &str, v: &str) -> Label {
        Label {
            name: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn applied_digests_tell_a_reused_seq_from_a_resend() {
        let d = AppliedDigests::default();
        let key = AgentKey {
            commons: "c".into(),
            agent: "a".into(),
            epoch: 1,
        };
        let one = batch_digest(&[7, 7], &[1, 2], &[1.0, 2.0]);
        assert_eq!(one, batch_digest(&[7, 7], &[1, 2], &[1.0, 2.0]));
        assert_ne!(one, batch_digest(&[7, 7], &[1, 2], &[1.0, 3.0]));
        assert_ne!(one, batch_digest(&[7, 8], &[1, 2], &[1.0, 2.0]));
        d.record(&key, 5, one);
        assert_eq!(d.get(&key, 5), Some(one));
        assert_eq!(d.get(&key, 4), None);
        assert_eq!(d.get(&AgentKey { epoch: 2, ..key.clone() }, 5), None, "another spool epoch");
        for s in 6..6 + APPLIED_DIGESTS as u64 {
            d.record(&key, s, s);
        }
        assert_eq!(d.get(&key, 5), None, "older than the window");
    }

    #[test]
    fn commons_is_stamped_over_what_the_agent_sent() {
        let out = validate_series(
            [l("__name__", "up"), l("commons", "evil"), l("job", "x")].map(|l| (l.name, l.value)),
            "good",
            &Limits::default(),
        )
        .expect("valid");
        assert_eq!(
            out,
            vec![
                ("__name__".into(), "up".into()),
                ("commons".into(), "good".into()),
                ("job".into(), "x".into())
            ]
        );
    }

    #[test]
    fn invalid_series_are_named() {
        let lim = Limits::default();
        let pairs = |labels: Vec<Label>| labels.into_iter().map(|l| (l.name, l.value)).collect::<Vec<_>>();
        let f = |labels: Vec<Label>| validate_series(pairs(labels), "c", &lim).expect_err("invalid").1;
        assert!(f(vec![l("job", "x")]).contains("no __name__"));
        assert!(f(vec![l("__name__", "1up")]).contains("invalid metric name"));
        assert!(f(vec![l("__name__", "up"), l("a-b", "x")]).contains("invalid label name"));
        assert!(f(vec![l("__name__", "up"), l("a", "x"), l("a", "y")]).contains("duplicate"));
        let many: Vec<Label> = (0..70).map(|i| l(&format!("l{i}"), "v")).chain([l("__name__", "m")]).collect();
        let (limit, msg) = validate_series(pairs(many), "c", &lim).expect_err("limit");
        assert!(
            limit == Some("max_labels_per_series") && msg.contains("max_labels_per_series"),
            "{msg}"
        );
    }
}
