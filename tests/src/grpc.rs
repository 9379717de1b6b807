//! The agent protocol at the frame level, for tests: raw sessions that send
//! exactly the frames a test wants (including ones no correct agent sends:
//! garbage, invalid UTF-8, batches before Hello), and simulated agents for
//! load (`csoc-agentsim`).
//!
//! Frames are sent as raw protobuf bytes through a codec of our own, so a
//! test controls every byte; replies are decoded as `CollectorMessage`.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BufMut;
use csoc_proto::v1::{AgentMessage, CollectorMessage, Hello, Label, SeriesDef, WriteBatch, agent_message, collector_message};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends `Vec<u8>` frames as they are; decodes replies with prost.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawCodec;

/// The encoder of [`RawCodec`].
#[derive(Debug, Default)]
pub struct RawEncoder;

/// The decoder of [`RawCodec`].
#[derive(Debug, Default)]
pub struct ReplyDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ReplyDecoder {
    type Item = CollectorMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CollectorMessage>, Status> {
        CollectorMessage::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("bad reply: {e}")))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = CollectorMessage;
    type Encoder = RawEncoder;
    type Decoder = ReplyDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ReplyDecoder {
        ReplyDecoder
    }
}

/// An encoded `Hello`.
pub fn hello(agent: &str, epoch: u64) -> Vec<u8> {
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            agent_name: agent.into(),
            version: "test".into(),
            hostname: agent.into(),
            spool_epoch: epoch,
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

/// A `WriteBatch`: `defs` are (ref, labels), `samples` (ref, ts ms, value).
pub fn batch_msg(seq: u64, defs: &[(u64, Vec<(String, String)>)], samples: &[(u64, i64, f64)]) -> WriteBatch {
    WriteBatch {
        seq,
        new_series: defs
            .iter()
            .map(|(r, labels)| SeriesDef {
                r#ref: *r,
                labels: labels
                    .iter()
                    .map(|(k, v)| Label {
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            })
            .collect(),
        refs: samples.iter().map(|s| s.0).collect(),
        timestamps_ms: samples.iter().map(|s| s.1).collect(),
        values: samples.iter().map(|s| s.2).collect(),
        metadata: Vec::new(),
    }
}

/// An encoded batch message.
pub fn batch(seq: u64, defs: &[(u64, Vec<(String, String)>)], samples: &[(u64, i64, f64)]) -> Vec<u8> {
    encode_batch(batch_msg(seq, defs, samples))
}

/// Wraps a batch in an `AgentMessage` and encodes it.
pub fn encode_batch(b: WriteBatch) -> Vec<u8> {
    AgentMessage {
        msg: Some(agent_message::Msg::Batch(b)),
    }
    .encode_to_vec()
}

/// Owned labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// What a session got back.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Replies in order (Welcome first on an accepted stream).
    pub replies: Vec<CollectorMessage>,
    /// How the stream ended, if it ended with an error (or was refused).
    pub status: Option<Status>,
}

impl Outcome {
    /// The acknowledged seqs.
    pub fn acks(&self) -> Vec<u64> {
        self.replies
            .iter()
            .filter_map(|m| match &m.msg {
                Some(collector_message::Msg::Ack(a)) => Some(a.seq),
                _ => None,
            })
            .collect()
    }

    /// The Nacks: (seq, code name, message, retryable).
    pub fn nacks(&self) -> Vec<(u64, String, String, bool)> {
        self.replies
            .iter()
            .filter_map(|m| match &m.msg {
                Some(collector_message::Msg::Nack(n)) => Some((
                    n.seq,
                    csoc_proto::v1::NackCode::try_from(n.code)
                        .map(|c| c.as_str_name().to_string())
                        .unwrap_or_else(|_| n.code.to_string()),
                    n.message.clone(),
                    n.retryable,
                )),
                _ => None,
            })
            .collect()
    }

    /// Whether a Welcome arrived.
    pub fn welcomed(&self) -> bool {
        self.replies
            .iter()
            .any(|m| matches!(m.msg, Some(collector_message::Msg::Welcome(_))))
    }
}

/// Opens a gRPC channel to `url`.
pub async fn channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad URL {url}"))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Opens `Ingest/Connect` on `ch` with `token`, sends `frames`, and reads
/// replies until `want` non-heartbeat replies arrived, the stream ended, or
/// `timeout` passed; the stream stays open meanwhile.
pub async fn session_on(
    ch: tonic::transport::Channel,
    token: Option<&str>,
    frames: Vec<Vec<u8>>,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.context("channel not ready")?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(frames.len().max(1));
    for f in frames {
        tx.send(f).await.context("queueing a frame")?;
    }
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut().insert(
            csoc_proto::AUTHORIZATION_HEADER,
            format!("Bearer {t}").parse().context("token header")?,
        );
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/csoc.v1.Ingest/Connect");
    let mut out = Outcome::default();
    let deadline = tokio::time::Instant::now() + timeout;
    let resp = match tokio::time::timeout_at(deadline, grpc.streaming(req, path, RawCodec)).await {
        Err(_) => anyhow::bail!("no answer to Connect within {timeout:?}"),
        Ok(Err(s)) => {
            out.status = Some(s);
            return Ok(out);
        }
        Ok(Ok(r)) => r,
    };
    let mut inbound = resp.into_inner();
    while out.replies.len() < want {
        match tokio::time::timeout_at(deadline, inbound.message()).await {
            Err(_) => break,
            Ok(Ok(Some(m))) => {
                if !matches!(m.msg, Some(collector_message::Msg::Heartbeat(_))) {
                    out.replies.push(m);
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(s)) => {
                out.status = Some(s);
                break;
            }
        }
    }
    drop(tx);
    Ok(out)
}

/// [`session_on`] on a fresh connection, from synchronous test code.
pub fn session(url: &str, token: Option<&str>, frames: Vec<Vec<u8>>, want: usize, timeout: Duration) -> anyhow::Result<Outcome> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let ch = channel(url).await?;
        session_on(ch, token, frames, want, timeout).await
    })
}

/// Settings of simulated agents.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Collector gRPC URL.
    pub url: String,
    /// Bearer token (all agents share it: one commons).
    pub token: String,
    /// Number of agents, each on its own connection and stream.
    pub agents: usize,
    /// Series per agent (one sample each per batch).
    pub series: usize,
    /// Time between an agent's batches.
    pub interval: Duration,
    /// How long to send.
    pub duration: Duration,
    /// Agent names are `<prefix>-<i>`; the series carry `job=<prefix>`.
    pub prefix: String,
}

/// What the simulated agents saw.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SimReport {
    /// Agents that ran to the end.
    pub agents_ok: usize,
    /// Agents whose stream failed (with the first few errors).
    pub agents_failed: usize,
    /// The first errors.
    pub errors: Vec<String>,
    /// Batches sent.
    pub batches: u64,
    /// Batches acknowledged.
    pub acked: u64,
    /// Batches refused.
    pub nacked: u64,
    /// Samples acknowledged.
    pub samples_acked: u64,
    /// Ack latency percentiles (ms).
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// The agents' first batches only (the ones that define the series, so
    /// the collector creates them): 99th percentile and largest (ms).
    pub first_batch_p99_ms: f64,
    /// Largest first-batch ack latency (ms).
    pub first_batch_max_ms: f64,
    /// Every batch but the first of each agent: 99th percentile (ms).
    pub later_batches_p99_ms: f64,
    /// Wall time of the run (s).
    pub seconds: f64,
}

struct AgentResult {
    latencies_us: Vec<u64>,
    /// The first batch's latency (series definitions), if acked.
    first_us: Option<u64>,
    batches: u64,
    acked: u64,
    nacked: u64,
    samples_acked: u64,
    error: Option<String>,
}

async fn sim_agent(cfg: std::sync::Arc<SimConfig>, i: usize, start: Instant) -> AgentResult {
    let mut res = AgentResult {
        latencies_us: Vec::new(),
        first_us: None,
        batches: 0,
        acked: 0,
        nacked: 0,
        samples_acked: 0,
        error: None,
    };
    if let Err(e) = sim_agent_inner(&cfg, i, start, &mut res).await {
        res.error = Some(format!("agent {i}: {e:#}"));
    }
    res
}

async fn sim_agent_inner(cfg: &SimConfig, i: usize, start: Instant, res: &mut AgentResult) -> anyhow::Result<()> {
    let name = format!("{}-{i:04}", cfg.prefix);
    // Spread the agents' phases over one interval, as real agents are.
    let phase = cfg.interval.mul_f64(i as f64 / cfg.agents.max(1) as f64);
    let ch = channel(&cfg.url).await?;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.context("channel not ready")?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert(csoc_proto::AUTHORIZATION_HEADER, format!("Bearer {}", cfg.token).parse()?);
    let epoch = (i as u64 + 1) << 20 | (start.elapsed().as_nanos() as u64 & 0xfffff);
    tx.send(hello(&name, epoch)).await?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/csoc.v1.Ingest/Connect");
    let mut inbound = grpc.streaming(req, path, RawCodec).await?.into_inner();
    let first = inbound.message().await?.context("stream closed before Welcome")?;
    anyhow::ensure!(
        matches!(first.msg, Some(collector_message::Msg::Welcome(_))),
        "expected Welcome, got {first:?}"
    );
    let mut next = tokio::time::Instant::now() + phase;
    let end = start + cfg.duration;
    let mut seq = 0u64;
    while Instant::now() + phase < end {
        tokio::time::sleep_until(next).await;
        next += cfg.interval;
        seq += 1;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let defs: Vec<(u64, Vec<(String, String)>)> = if seq == 1 {
            (0..cfg.series as u64)
                .map(|r| {
                    (
                        r,
                        labels(&[
                            ("__name__", "csoc_sim_value"),
                            ("job", &cfg.prefix),
                            ("instance", &name),
                            ("series", &r.to_string()),
                        ]),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let samples: Vec<(u64, i64, f64)> = (0..cfg.series as u64).map(|r| (r, now_ms, seq as f64)).collect();
        let sent = Instant::now();
        tx.send(batch(seq, &defs, &samples)).await.context("stream closed")?;
        res.batches += 1;
        loop {
            let m = inbound.message().await?.context("stream closed while waiting for an ack")?;
            match m.msg {
                Some(collector_message::Msg::Ack(a)) if a.seq == seq => {
                    let us = sent.elapsed().as_micros() as u64;
                    if seq == 1 {
                        res.first_us = Some(us);
                    } else {
                        res.latencies_us.push(us);
                    }
                    res.acked += 1;
                    res.samples_acked += samples.len() as u64;
                    break;
                }
                Some(collector_message::Msg::Nack(n)) => {
                    res.nacked += 1;
                    anyhow::bail!("batch {seq} refused: {}", n.message);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The `p` percentile of sorted microseconds, in ms (0 when empty).
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[idx] as f64 / 1000.0
}

/// Runs `cfg.agents` simulated agents, each on its own connection, sending
/// one batch of `cfg.series` samples per interval and waiting for its ack,
/// for `cfg.duration`.
pub async fn simulate(cfg: SimConfig) -> SimReport {
    let cfg = std::sync::Arc::new(cfg);
    let start = Instant::now();
    let tasks: Vec<_> = (0..cfg.agents).map(|i| tokio::spawn(sim_agent(cfg.clone(), i, start))).collect();
    let mut rep = SimReport::default();
    let mut lat: Vec<u64> = Vec::new();
    let mut first: Vec<u64> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => {
                rep.batches += r.batches;
                rep.acked += r.acked;
                rep.nacked += r.nacked;
                rep.samples_acked += r.samples_acked;
                lat.extend(r.latencies_us);
                first.extend(r.first_us);
                match r.error {
                    None => rep.agents_ok += 1,
                    Some(e) => {
                        rep.agents_failed += 1;
                        if rep.errors.len() < 5 {
                            rep.errors.push(e);
                        }
                    }
                }
            }
            Err(e) => {
                rep.agents_failed += 1;
                rep.errors.push(format!("agent task failed: {e}"));
            }
        }
    }
    first.sort_unstable();
    lat.sort_unstable();
    rep.later_batches_p99_ms = percentile_ms(&lat, 0.99);
    rep.first_batch_p99_ms = percentile_ms(&first, 0.99);
    rep.first_batch_max_ms = first.last().map(|v| *v as f64 / 1000.0).unwrap_or(0.0);
    lat.extend(first);
    lat.sort_unstable();
    rep.p50_ms = percentile_ms(&lat, 0.50);
    rep.p99_ms = percentile_ms(&lat, 0.99);
    rep.max_ms = lat.last().map(|v| *v as f64 / 1000.0).unwrap_or(0.0);
    rep.seconds = start.elapsed().as_secs_f64();
    rep
}

/// Simulated agents that take central config pushes (`ConfigPush`), for
/// the central config tests and `tests/bench/config-push-bench.sh`: each
/// connects, says Hello (running no central config), then answers every
/// push with a `ConfigStatus` — `applied` when the body matches its sha256,
/// `rejected` otherwise — and sends a heartbeat every second, until `stop`.
pub mod config_sim {
    use super::*;
    use csoc_proto::v1::{ConfigStatus, Heartbeat};
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// Pushes seen, by agent name: (version, sha256, when answered).
    pub type Seen = Arc<Mutex<HashMap<String, Vec<(u64, String, Instant)>>>>;

    /// Simulated config agents.
    pub struct ConfigAgents {
        /// What each agent applied.
        pub seen: Seen,
        /// Agents whose stream is up (Welcome received).
        pub welcomed: Arc<std::sync::atomic::AtomicUsize>,
        /// Errors of agents whose stream failed.
        pub errors: Arc<Mutex<Vec<String>>>,
        stop: tokio::sync::watch::Sender<bool>,
    }

    impl ConfigAgents {
        /// Starts `n` agents named `<prefix>-<i>` on the current runtime.
        pub fn start(url: &str, token: &str, n: usize, prefix: &str) -> ConfigAgents {
            let (stop, rx) = tokio::sync::watch::channel(false);
            let me = ConfigAgents {
                seen: Arc::default(),
                welcomed: Arc::default(),
                errors: Arc::default(),
                stop,
            };
            for i in 0..n {
                let (url, token, name) = (url.to_string(), token.to_string(), format!("{prefix}-{i:04}"));
                let (seen, welcomed, errors, rx) = (me.seen.clone(), me.welcomed.clone(), me.errors.clone(), rx.clone());
                tokio::spawn(async move {
                    if let Err(e) = run_one(&url, &token, &name, seen, welcomed, rx).await {
                        errors.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{name}: {e:#}"));
                    }
                });
            }
            me
        }

        /// Agents that applied a push after `since`, and the latest of
        /// those answers.
        pub fn applied_since(&self, since: Instant) -> (usize, Option<Instant>) {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let mut n = 0;
            let mut last: Option<Instant> = None;
            for v in seen.values() {
                if let Some((_, _, t)) = v.iter().rev().find(|(_, _, t)| *t >= since) {
                    n += 1;
                    last = Some(last.map_or(*t, |l| l.max(*t)));
                }
            }
            (n, last)
        }

        /// Stops every agent.
        pub fn stop(&self) {
            let _ = self.stop.send(true);
        }
    }

    impl Drop for ConfigAgents {
        fn drop(&mut self) {
            self.stop();
        }
    }

    async fn run_one(
        url: &str,
        token: &str,
        name: &str,
        seen: Seen,
        welcomed: Arc<std::sync::atomic::AtomicUsize>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let ch = channel(url).await?;
        let mut grpc = tonic::client::Grpc::new(ch);
        grpc.ready().await.context("channel not ready")?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut()
            .insert(csoc_proto::AUTHORIZATION_HEADER, format!("Bearer {token}").parse()?);
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        tx.send(hello(name, epoch)).await?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/csoc.v1.Ingest/Connect");
        let mut inbound = grpc.streaming(req, path, RawCodec).await?.into_inner();
        let first = inbound.message().await?.context("stream closed before Welcome")?;
        anyhow::ensure!(
            matches!(first.msg, Some(collector_message::Msg::Welcome(_))),
            "expected Welcome, got {first:?}"
        );
        welcomed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = tick.tick() => {
                    let hb = AgentMessage { msg: Some(agent_message::Msg::Heartbeat(Heartbeat { timestamp_ms: 0, spool_batches: 0 })) };
                    tx.send(hb.encode_to_vec()).await.context("stream closed")?;
                }
                m = inbound.message() => {
                    let Some(m) = m? else { anyhow::bail!("the collector closed the stream") };
                    if let Some(collector_message::Msg::ConfigPush(p)) = m.msg {
                        let got: String = Sha256::digest(p.body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
                        let ok = got == p.sha256;
                        let st = ConfigStatus {
                            version: p.version,
                            sha256: p.sha256.clone(),
                            status: if ok { "applied" } else { "rejected" }.into(),
                            error: if ok { String::new() } else { format!("sha256 mismatch: {got}") },
                        };
                        let msg = AgentMessage { msg: Some(agent_message::Msg::ConfigStatus(st)) };
                        tx.send(msg.encode_to_vec()).await.context("stream closed")?;
                        if ok {
                            seen.lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_string()).or_default().push((p.version, p.sha256, Instant::now()));
                        }
                    }
                }
            }
        }
    }

    /// Hex SHA-256 of a body, as the collector computes it.
    pub fn sha256_hex(body: &str) -> String {
        Sha256::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}
