//! The shipper: one long-lived gRPC stream to the collector, fed from the
//! spool.
//!
//! Per stream: send `Hello`, wait for `Welcome` (which says which batches the
//! collector already applied; those are dropped from the spool), then send
//! the spooled batches in seq order with up to `window` unacknowledged at a
//! time, mapping each batch's local series refs to the stream's refs so that
//! a label set crosses the wire once per stream. `Ack` removes batches from
//! the spool; a retryable `Nack` or any stream error ends the stream and the
//! shipper reconnects with exponential backoff and jitter and resends from
//! the first unacknowledged batch. Heartbeats flow both ways when idle; a
//! collector that stays silent for three heartbeat intervals is treated as
//! gone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csoc_proto::v1::agent_message::Msg as AgentMsg;
use csoc_proto::v1::collector_message::Msg as CollectorMsg;
use csoc_proto::v1::ingest_client::IngestClient;
use csoc_proto::v1::{AgentMessage, ConfigPush, ConfigStatus, Heartbeat, Hello, Label, NackCode, SeriesDef, WriteBatch};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::metrics::ShipperMetrics;
use crate::spool::Spool;
use csoc_common::error::error_chain;

/// Settings of the shipper.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// Collector gRPC URL (`http://host:9301`).
    pub collector: String,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// TLS settings (for an `https://` collector URL; the Mozilla roots
    /// when None).
    pub tls: Option<crate::tls::ClientTls>,
    /// This agent's name (sent in Hello).
    pub agent_name: String,
    /// The host name (sent in Hello).
    pub hostname: String,
    /// The commons the agent believes it is (informational).
    pub claimed_commons: String,
    /// Unacknowledged batches allowed in flight.
    pub window: usize,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long to keep sending at shutdown before leaving the rest in the
    /// spool.
    pub flush_timeout: Duration,
    /// Where central config pushes go (None: they are rejected).
    pub central: Option<CentralLink>,
}

/// The shipper's link to the agent's config manager.
#[derive(Debug, Clone)]
pub struct CentralLink {
    /// Applies pushes.
    pub handle: crate::central::ReloadHandle,
    /// The central config running now (sent in Hello).
    pub running: crate::central::Running,
}

/// How long a push may take to apply before the agent answers `rejected`.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("cannot connect to the collector at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error(
        "the collector refused our token ({0}); check --token / token_file, and that the collector maps it with --agent-token COMMONS=TOKEN"
    )]
    Unauthenticated(String),
    #[error("the collector denied this agent: {0}")]
    PermissionDenied(String),
    #[error(
        "the collector did not accept this agent ({0}); check the client certificate (--tls-cert) and the token if any, and that the collector maps them (--agent-cert COMMONS=NAME, --agent-token COMMONS=TOKEN)"
    )]
    CertUnauthenticated(String),
    #[error("the collector's certificate is not trusted: {0}")]
    ServerUntrusted(String),
    #[error("the collector refused our client certificate: {0}")]
    ClientCertRefused(String),
    #[error("TLS with the collector failed: {0}")]
    Tls(String),
    #[error("collector stream failed: {0}")]
    Status(tonic::Status),
    #[error("the collector closed the stream")]
    Closed,
    #[error("the collector sent no Welcome within {0:?}")]
    NoWelcome(Duration),
    #[error("the collector was silent for {0:?}")]
    Silent(Duration),
    #[error("the collector rejected batch {seq} ({code}): {message}; will retry")]
    RetryableNack { seq: u64, code: String, message: String },
    #[error("the collector rejected batch {seq} ({code}) for good: {message}; it was dropped")]
    FinalNack { seq: u64, code: String, message: String },
    #[error("spool: {0}")]
    Spool(#[from] crate::spool::SpoolError),
    #[error("shutting down")]
    Shutdown,
}

impl StreamEnd {
    fn reason(&self) -> &'static str {
        match self {
            StreamEnd::Connect { .. } => "connect",
            StreamEnd::Unauthenticated(_) => "unauthenticated",
            StreamEnd::PermissionDenied(_) => "permission_denied",
            StreamEnd::CertUnauthenticated(_) => "unauthenticated",
            StreamEnd::ServerUntrusted(_) => "tls_server_untrusted",
            StreamEnd::ClientCertRefused(_) => "tls_client_cert_refused",
            StreamEnd::Tls(_) => "tls",
            StreamEnd::Status(_) => "stream_error",
            StreamEnd::Closed => "closed",
            StreamEnd::NoWelcome(_) => "no_welcome",
            StreamEnd::Silent(_) => "silent",
            StreamEnd::RetryableNack { .. } => "nack",
            StreamEnd::FinalNack { .. } => "nack",
            StreamEnd::Spool(_) => "spool",
            StreamEnd::Shutdown => "shutdown",
        }
    }
}

/// The shipper task.
pub struct Shipper {
    cfg: ShipperConfig,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    metrics: ShipperMetrics,
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    // A panic while holding the lock cannot leave the spool inconsistent on
    // disk (every change is a file operation), so keep going.
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shipper {
    /// Creates the shipper. `wake` is notified whenever a batch is spooled.
    pub fn new(cfg: ShipperConfig, spool: Arc<Mutex<Spool>>, wake: Arc<Notify>, metrics: ShipperMetrics) -> Self {
        Shipper { cfg, spool, wake, metrics }
    }

    /// Runs until `drain` is cancelled and the spool is flushed (or the
    /// flush timeout passes).
    pub async fn run(self, drain: CancellationToken) {
        let mut attempt: u32 = 0;
        let mut flush_deadline: Option<tokio::time::Instant> = None;
        loop {
            if drain.is_cancelled() {
                let d = *flush_deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.cfg.flush_timeout);
                if lock(&self.spool).is_empty() || tokio::time::Instant::now() >= d {
                    break;
                }
            }
            self.metrics.connect_attempts.inc();
            let started = Instant::now();
            let res = self.stream(&drain, flush_deadline).await;
            self.metrics.connected.set(0);
            let end = match res {
                Ok(()) => break,
                Err(StreamEnd::Shutdown) => break,
                Err(StreamEnd::Unauthenticated(m)) if self.cfg.tls.as_ref().is_some_and(crate::tls::ClientTls::has_client_cert) => {
                    StreamEnd::CertUnauthenticated(m)
                }
                Err(e) => e,
            };
            self.metrics.connect_failed(end.reason());
            // A stream that worked for a while resets the backoff.
            if started.elapsed() > Duration::from_secs(30) {
                attempt = 0;
            }
            let delay = match &end {
                StreamEnd::FinalNack { .. } => Duration::from_millis(100),
                _ => csoc_common::retry::backoff(attempt, self.cfg.backoff_base, self.cfg.backoff_max),
            };
            attempt = attempt.saturating_add(1);
            match &end {
                StreamEnd::Unauthenticated(_)
                | StreamEnd::CertUnauthenticated(_)
                | StreamEnd::PermissionDenied(_)
                | StreamEnd::ServerUntrusted(_)
                | StreamEnd::ClientCertRefused(_)
                | StreamEnd::FinalNack { .. } => {
                    tracing::error!(collector = %self.cfg.collector, retry_in = ?delay, "{end}")
                }
                _ => tracing::warn!(collector = %self.cfg.collector, retry_in = ?delay, "{end}"),
            }
            if drain.is_cancelled() {
                // Shutting down and the collector is unreachable: leave the rest
                // in the spool for the next start.
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = drain.cancelled() => {}
            }
        }
        let s = lock(&self.spool);
        if !s.is_empty() {
            tracing::info!(
                batches = s.len(),
                bytes = s.bytes(),
                "batches remain in the spool; they will be sent at the next start"
            );
        }
    }

    async fn stream(&self, drain: &CancellationToken, mut flush_deadline: Option<tokio::time::Instant>) -> Result<(), StreamEnd> {
        let url = self.cfg.collector.clone();
        let connect_err = |detail: String| StreamEnd::Connect { url: url.clone(), detail };
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| connect_err(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let endpoint = if url.starts_with("https://") {
            let tls = self
                .cfg
                .tls
                .clone()
                .map_or_else(|| crate::tls::ClientTls::from_config(&Default::default()), Ok);
            let tls = tls.map_err(|e| connect_err(e.to_string()))?;
            tls.apply(endpoint).map_err(|e| connect_err(error_chain(&e)))?
        } else {
            endpoint
        };
        let channel = tokio::select! {
            r = endpoint.connect() => r.map_err(|e| tls_end(&e).unwrap_or_else(|| connect_err(error_chain(&e))))?,
            _ = drain.cancelled() => return Err(StreamEnd::Shutdown),
        };
        let mut client = IngestClient::new(channel).max_decoding_message_size(16 << 20);

        let (tx, rx) = mpsc::channel::<AgentMessage>(self.cfg.window + 4);
        let (epoch, spool_batches) = {
            let s = lock(&self.spool);
            (s.epoch(), s.len() as u64)
        };
        let (config_version, config_sha256) = match &self.cfg.central {
            Some(c) => c.running.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => (0, String::new()),
        };
        let hello = Hello {
            agent_name: self.cfg.agent_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: self.cfg.hostname.clone(),
            capabilities: vec!["host".into(), "spool".into()],
            claimed_commons: self.cfg.claimed_commons.clone(),
            spool_epoch: epoch,
            config_version,
            config_sha256,
            spool_batches,
        };
        let _ = tx
            .send(AgentMessage {
                msg: Some(AgentMsg::Hello(hello)),
            })
            .await;
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(t) = &self.cfg.token {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| connect_err("the token contains characters not allowed in a header".into()))?;
            req.metadata_mut().insert(csoc_proto::AUTHORIZATION_HEADER, v);
        }
        let resp = client.connect(req).await.map_err(status_end)?;
        let mut inbound = resp.into_inner();

        let welcome_wait = Duration::from_secs(15);
        let welcome = match tokio::time::timeout(welcome_wait, inbound.message()).await {
            Err(_) => return Err(StreamEnd::NoWelcome(welcome_wait)),
            Ok(Err(s)) => return Err(status_end(s)),
            Ok(Ok(None)) => return Err(StreamEnd::Closed),
            Ok(Ok(Some(m))) => match m.msg {
                Some(CollectorMsg::Welcome(w)) => w,
                _ => return Err(StreamEnd::NoWelcome(welcome_wait)),
            },
        };
        let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms).clamp(1_000, 300_000));
        let silence_limit = heartbeat * 3;
        let mut last_sent = {
            let mut s = lock(&self.spool);
            let removed = s.ack_through(welcome.last_applied_seq)?;
            if removed.batches > 0 {
                tracing::info!(
                    batches = removed.batches,
                    "the collector had already applied spooled batches; dropped them"
                );
            }
            welcome.last_applied_seq.max(s.acked())
        };
        tracing::info!(
            collector = %self.cfg.collector,
            commons = %welcome.commons,
            last_applied_seq = welcome.last_applied_seq,
            "connected to the collector"
        );
        if !self.cfg.claimed_commons.is_empty() && self.cfg.claimed_commons != welcome.commons {
            tracing::warn!(
                claimed = %self.cfg.claimed_commons,
                assigned = %welcome.commons,
                "the collector assigned a different commons than --commons-name; its choice (from the token) wins"
            );
        }
        self.metrics.connected.set(1);

        let mut refs = RefMap::default();
        let mut inflight: VecDeque<(u64, Instant, u64)> = VecDeque::new();
        let mut last_out = Instant::now();
        let mut last_hb = Instant::now();
        let mut last_in = Instant::now();
        let mut tick = tokio::time::interval(heartbeat.min(Duration::from_secs(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_batch = if welcome.max_batch_bytes == 0 {
            u64::MAX
        } else {
            welcome.max_batch_bytes
        };

        loop {
            // Fill the window.
            while inflight.len() < self.cfg.window {
                let next = {
                    let mut s = lock(&self.spool);
                    match s.next_after(last_sent) {
                        None => None,
                        Some(seq) => Some((seq, s.read(seq)?)),
                    }
                };
                let Some((seq, batch)) = next else { break };
                last_sent = seq;
                let Some(batch) = batch else { continue };
                let samples = batch.refs.len() as u64;
                let wire = refs.map_batch(batch);
                if wire_len(&wire) > max_batch {
                    tracing::error!(seq, max_batch, "spooled batch exceeds the collector's max_batch_bytes; dropped");
                    lock(&self.spool).discard(seq);
                    continue;
                }
                if tx
                    .send(AgentMessage {
                        msg: Some(AgentMsg::Batch(wire)),
                    })
                    .await
                    .is_err()
                {
                    return Err(StreamEnd::Closed);
                }
                self.metrics.batches_sent.inc();
                inflight.push_back((seq, Instant::now(), samples));
                last_out = Instant::now();
            }
            if drain.is_cancelled() {
                let d = *flush_deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.cfg.flush_timeout);
                if inflight.is_empty() && lock(&self.spool).next_after(last_sent).is_none() {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= d {
                    tracing::warn!(
                        in_flight = inflight.len(),
                        "flush timeout at shutdown; unacknowledged batches stay in the spool"
                    );
                    return Ok(());
                }
            }
            let flush_wait = async {
                match flush_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = inbound.message() => {
                    last_in = Instant::now();
                    let msg = match msg {
                        Ok(Some(m)) => m,
                        Ok(None) => return Err(StreamEnd::Closed),
                        Err(s) => return Err(status_end(s)),
                    };
                    match msg.msg {
                        Some(CollectorMsg::Ack(a)) => {
                            while inflight.front().is_some_and(|f| f.0 <= a.seq) {
                                if let Some((_, sent_at, n)) = inflight.pop_front() {
                                    self.metrics.ack_latency.observe(sent_at.elapsed().as_secs_f64());
                                    self.metrics.samples_acked.inc_by(n);
                                    self.metrics.batches_acked.inc();
                                }
                            }
                            lock(&self.spool).ack_through(a.seq)?;
                        }
                        Some(CollectorMsg::Nack(n)) => {
                            let code = NackCode::try_from(n.code).map(|c| c.as_str_name()).unwrap_or("NACK_CODE_UNSPECIFIED").to_string();
                            self.metrics.nacked(&code);
                            if n.retryable {
                                return Err(StreamEnd::RetryableNack { seq: n.seq, code, message: n.message });
                            }
                            lock(&self.spool).discard(n.seq);
                            // The refs this batch defined may be unknown to the
                            // collector now: a new stream starts afresh.
                            return Err(StreamEnd::FinalNack { seq: n.seq, code, message: n.message });
                        }
                        Some(CollectorMsg::Heartbeat(_)) | Some(CollectorMsg::Welcome(_)) | None => {}
                        Some(CollectorMsg::ConfigPush(c)) => {
                            let status = self.apply_push(c).await;
                            if tx.send(AgentMessage { msg: Some(AgentMsg::ConfigStatus(status)) }).await.is_err() {
                                return Err(StreamEnd::Closed);
                            }
                            last_out = Instant::now();
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = tick.tick() => {
                    if last_in.elapsed() > silence_limit {
                        return Err(StreamEnd::Silent(silence_limit));
                    }
                    // At least one heartbeat per interval, busy or idle: it
                    // carries the spool backlog.
                    if last_out.elapsed() >= heartbeat || last_hb.elapsed() >= heartbeat {
                        let spool_batches = lock(&self.spool).len() as u64;
                        let hb = AgentMessage { msg: Some(AgentMsg::Heartbeat(Heartbeat { timestamp_ms: csoc_common::time::now_ms(), spool_batches })) };
                        if tx.send(hb).await.is_err() {
                            return Err(StreamEnd::Closed);
                        }
                        last_out = Instant::now();
                        last_hb = Instant::now();
                    }
                }
                _ = drain.cancelled(), if flush_deadline.is_none() => {}
                _ = flush_wait => {}
            }
        }
    }
}

impl Shipper {
    /// Hands a push to the config manager and returns the answer.
    async fn apply_push(&self, c: ConfigPush) -> ConfigStatus {
        let (version, sha256) = (c.version, c.sha256.clone());
        tracing::info!(version, bytes = c.body.len(), "central config received");
        let res = match &self.cfg.central {
            None => Err("this agent takes no central config (the collector's --local-agent)".to_string()),
            Some(link) => {
                let push = crate::central::Central {
                    version,
                    sha256: c.sha256,
                    body: c.body,
                };
                match tokio::time::timeout(APPLY_TIMEOUT, link.handle.push(push)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("not applied within {APPLY_TIMEOUT:?}")),
                }
            }
        };
        let (status, error) = match res {
            Ok(()) => ("applied", String::new()),
            Err(e) => ("rejected", e),
        };
        ConfigStatus {
            version,
            sha256,
            status: status.into(),
            error,
        }
    }
}

fn wire_len(b: &WriteBatch) -> u64 {
    prost::Message::encoded_len(b) as u64
}

/// A TLS failure as the stream's end, if `e` is one.
fn tls_end(e: &(dyn std::error::Error + 'static)) -> Option<StreamEnd> {
    crate::tls::classify(e).map(|f| match f {
        crate::tls::TlsFailure::ServerUntrusted(m) => StreamEnd::ServerUntrusted(m),
        crate::tls::TlsFailure::ClientCertRefused(m) => StreamEnd::ClientCertRefused(m),
        crate::tls::TlsFailure::Other(m) => StreamEnd::Tls(m),
    })
}

fn status_end(s: tonic::Status) -> StreamEnd {
    if let Some(t) = tls_end(&s) {
        return t;
    }
    // A plain-text HTTP/2 client reads a TLS server's alert record as a
    // frame header announcing a frame of over a megabyte.
    if s.to_string().contains("FRAME_SIZE_ERROR") {
        return StreamEnd::Tls(format!(
            "this http:// URL reaches a port that answers with something other than HTTP/2, likely TLS ({}: FRAME_SIZE_ERROR); if the collector has grpc_tls, use an https:// collector URL",
            s.message()
        ));
    }
    match s.code() {
        Code::Unauthenticated => StreamEnd::Unauthenticated(s.message().to_string()),
        Code::PermissionDenied => StreamEnd::PermissionDenied(s.message().to_string()),
        Code::Unavailable if s.message().contains("connect") || s.message().contains("transport") => StreamEnd::Connect {
            url: String::new(),
            detail: s.message().to_string(),
        },
        _ => StreamEnd::Status(s),
    }
}

/// Maps batch-local refs to stream refs.
///
/// A stream's series are known by a 128-bit keyed hash of their label set,
/// not by the labels themselves: at 37,000 series (a 2,000-pod namespace)
/// the label sets cost about 1 KiB each as owned strings, the hashes 32
/// bytes. The two SipHash keys are random per stream, so nobody who chooses
/// label values (pod names, say) can aim at a collision; by chance one is
/// about 2^-128 per pair.
struct RefMap {
    keys: (std::hash::RandomState, std::hash::RandomState),
    by_labels: HashMap<u128, u64>,
    /// Reused by [`RefMap::key`].
    scratch: Vec<u8>,
}

impl Default for RefMap {
    fn default() -> Self {
        RefMap {
            keys: (std::hash::RandomState::new(), std::hash::RandomState::new()),
            by_labels: HashMap::new(),
            scratch: Vec::new(),
        }
    }
}

impl RefMap {
    /// The key of a label set: both SipHash keys over its framed bytes
    /// ([`csoc_common::labels::frame_labels`]), one `write` each.
    fn key(&mut self, labels: &[Label]) -> u128 {
        use std::hash::{BuildHasher, Hasher};
        csoc_common::labels::frame_labels(&mut self.scratch, labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
        let mut a = self.keys.0.build_hasher();
        let mut b = self.keys.1.build_hasher();
        a.write(&self.scratch);
        b.write(&self.scratch);
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    fn map_batch(&mut self, mut b: WriteBatch) -> WriteBatch {
        let mut local: HashMap<u64, u64> = HashMap::with_capacity(b.new_series.len());
        let mut defs = Vec::new();
        for def in std::mem::take(&mut b.new_series) {
            let key = self.key(&def.labels);
            let next = self.by_labels.len() as u64;
            let (stream_ref, new) = match self.by_labels.get(&key) {
                Some(r) => (*r, false),
                None => {
                    self.by_labels.insert(key, next);
                    (next, true)
                }
            };
            local.insert(def.r#ref, stream_ref);
            if new {
                defs.push(SeriesDef {
                    r#ref: stream_ref,
                    labels: def
                        .labels
                        .into_iter()
                        .map(|l| Label {
                            name: l.name,
                            value: l.value,
                        })
                        .collect(),
                });
            }
        }
        for r in &mut b.refs {
            // A ref the batch does not define would be a bug in the pipeline;
            // u64::MAX makes the collector reject the batch with a clear error.
            *r = local.get(r).copied().unwrap_or(u64::MAX);
        }
        b.new_series = defs;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(r: u64, name: &str) -> SeriesDef {
        SeriesDef {
            r#ref: r,
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
        }
    }

    #[test]
    fn labels_cross_the_wire_once_per_stream() {
        let mut m = RefMap::default();
        let b1 = WriteBatch {
            new_series: vec![def(0, "a"), def(1, "b")],
            refs: vec![1, 0],
            ..Default::default()
        };
        let w1 = m.map_batch(b1);
        assert_eq!(w1.new_series.len(), 2);
        assert_eq!(w1.refs, vec![1, 0]);
        // Same series under different local refs, plus one new.
        let b2 = WriteBatch {
            new_series: vec![def(0, "b"), def(1, "c"), def(2, "a")],
            refs: vec![0, 1, 2],
            ..Default::default()
        };
        let w2 = m.map_batch(b2);
        assert_eq!(w2.new_series.len(), 1);
        assert_eq!(w2.new_series[0].r#ref, 2);
        assert_eq!(w2.refs, vec![1, 2, 0]);
    }
}
