//! csoc-loadgen: replays the benchmark workload (`csoc_tests::workload`:
//! T node_exporter targets, 507 series each, one round per 15 s of data time)
//! into a time-series store as fast as the store accepts it, through
//! Prometheus remote write 1.0 or csoc-watch's gRPC ingest, and reports how
//! many samples the store acknowledged as written, and how fast.
//!
//! ```text
//! csoc-loadgen --mode remote-write --url http://127.0.0.1:8428/api/v1/write --targets 200 --rounds 150
//! csoc-loadgen --mode grpc --url http://127.0.0.1:9301 --token TOKEN --targets 20 --rounds 5760 --json
//! ```
//!
//! Ordering (backfill): the targets are split among `--concurrency` workers
//! (target i goes to worker i % C). A worker walks its targets round by round
//! and cuts that time-ordered stream into batches of `--batch-samples`
//! consecutive samples, which it sends in order: one request at a time for
//! remote write, one gRPC stream with up to `--window` batches in flight
//! (applied in order by the collector). So no series ever receives a sample
//! older than one it already received. Workers stay within
//! `--max-skew-rounds` rounds of each other, so the data's "now" advances
//! together: Prometheus refuses samples older than its head's append window
//! (about an hour behind its newest sample).
//!
//! Durability: a remote-write batch counts once the server answers 2xx (5xx,
//! 429 and network errors are retried with backoff; any other status stops the
//! run, printing the server's answer); a gRPC batch counts on its `Ack`. A
//! `Nack` stops the run: a benchmark that lost data is not a result.
//!
//! Encoding (protobuf, snappy) runs on one OS thread per worker, the network
//! on a two-thread tokio runtime. The load generator shares the machine's
//! cores with the server it measures, so it avoids per-sample allocation: the
//! remote-write encoder keeps each series' encoded labels and writes the
//! `WriteRequest` around them, byte for byte what prost would produce for the
//! same message (a test checks).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use csoc_common::time::now_ms;
use csoc_proto::prometheus::{Label, Sample, TimeSeries};
use csoc_proto::v1::ingest_client::IngestClient;
use csoc_proto::v1::{AgentMessage, SeriesDef, WriteBatch, agent_message, collector_message};
use csoc_tests::workload::{DEFAULT_INTERVAL_MS, Workload, WorkloadOptions, hash2};
use prost::Message;
use tokio::sync::mpsc;

/// How to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Prometheus remote write 1.0 (snappy-compressed protobuf over HTTP POST).
    RemoteWrite,
    /// csoc-watch's `csoc.v1.Ingest/Connect` gRPC stream.
    Grpc,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::RemoteWrite => "remote-write",
            Mode::Grpc => "grpc",
        }
    }
}

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "csoc-loadgen",
    version,
    about = "Backfills the node_exporter benchmark workload through remote write or gRPC"
)]
struct Args {
    /// Protocol.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Remote-write endpoint (http://HOST:PORT/api/v1/write) or gRPC address (http://HOST:PORT).
    #[arg(long)]
    url: String,
    /// Bearer token (remote write: `Authorization` header; gRPC: `authorization` metadata).
    #[arg(long, env = "CSOC_LOADGEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Number of targets (507 series each).
    #[arg(long, default_value_t = 200)]
    targets: usize,
    /// Send only the targets of this commons (target i is commons
    /// bench-<i % 4>), e.g. one run per commons with that commons' token.
    #[arg(long, value_name = "NAME")]
    commons: Option<String>,
    /// Add a classic histogram to every target
    /// (gen3_http_request_duration_seconds_bucket/_sum/_count, 2 services,
    /// 28 series).
    #[arg(long)]
    request_histogram: bool,
    /// Number of rounds (scrapes) per target.
    #[arg(long)]
    rounds: u64,
    /// Timestamp of round 0, ms since the epoch [default: now - rounds × interval].
    #[arg(long, allow_negative_numbers = true)]
    start_ms: Option<i64>,
    /// Data time between rounds, ms.
    #[arg(long, default_value_t = DEFAULT_INTERVAL_MS)]
    interval_ms: i64,
    /// Move each round's timestamps by a deterministic 0..=N ms per target
    /// (0: consecutive timestamps exactly one interval apart, each target
    /// with its own fixed 0-4 ms offset).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Samples per batch (request or WriteBatch).
    #[arg(long, default_value_t = 10_000)]
    batch_samples: usize,
    /// Workers: concurrent requests (remote write) or streams (gRPC).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// gRPC: batches in flight per stream.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Most rounds a worker may run ahead of the slowest other worker.
    #[arg(long, default_value_t = 120)]
    max_skew_rounds: u64,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
    /// Time limit for one request, or for an Ack when the window is full, seconds.
    #[arg(long, default_value_t = 120)]
    request_timeout_secs: u64,
    /// Remote write: retries of one batch (5xx, 429, network errors) before giving up.
    #[arg(long, default_value_t = 10)]
    max_retries: u32,
    /// The node_exporter exposition the workload replays [default: ../shared/data/node_exporter.prom].
    #[arg(long)]
    exposition: Option<PathBuf>,
    /// Print the summary as one JSON object instead of key=value.
    #[arg(long)]
    json: bool,
}

/// Counters shared by producers, senders and the progress line.
struct Shared {
    /// Samples handed to the network (counted once, retries aside).
    sent: AtomicU64,
    /// Samples the server acknowledged.
    durable: AtomicU64,
    /// Batches acknowledged.
    batches: AtomicU64,
    /// Remote-write retries.
    retries: AtomicU64,
    /// Per worker: every round up to this one is durable (-1: none yet).
    done_round: Vec<AtomicI64>,
    /// Set when the run fails: producers stop.
    failed: AtomicBool,
}

impl Shared {
    fn new(workers: usize) -> Shared {
        Shared {
            sent: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            done_round: (0..workers).map(|_| AtomicI64::new(-1)).collect(),
            failed: AtomicBool::new(false),
        }
    }

    /// Lowest durable round over all workers except `except`.
    fn min_done_except(&self, except: usize) -> i64 {
        self.done_round
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .map(|(_, r)| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(i64::MAX)
    }

    fn mark_durable(&self, worker: usize, samples: u64, through: i64) {
        self.durable.fetch_add(samples, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.done_round[worker].fetch_max(through, Ordering::AcqRel);
    }
}

/// One sample waiting in a worker's batch. `local` indexes the worker's
/// series: `k * series_per_target + s` for its k-th target.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pending {
    local: u32,
    ts: i64,
    value: f64,
}

/// An encoded batch, ready for the network.
struct Batch {
    samples: u64,
    /// Every round up to this one is complete once this batch (and those
    /// before it) are durable.
    through: i64,
    payload: Payload,
}

enum Payload {
    /// Snappy-compressed `WriteRequest`.
    RemoteWrite(Vec<u8>),
    /// A `WriteBatch` with its seq.
    Grpc(WriteBatch),
}

/// Protobuf key of a length-delimited field: `(field << 3) | 2`.
const fn ld_key(field: u8) -> u8 {
    (field << 3) | 2
}
/// `WriteRequest.timeseries` (field 1).
const TIMESERIES_KEY: u8 = ld_key(1);
/// `TimeSeries.samples` (field 2).
const SAMPLES_KEY: u8 = ld_key(2);

/// Builds remote-write requests for one worker's series.
struct RemoteWriteEncoder {
    /// Per local series: its `TimeSeries` with labels only, encoded.
    labels: Vec<Vec<u8>>,
    buf: Vec<u8>,
    snappy: snap::raw::Encoder,
}

impl RemoteWriteEncoder {
    fn new(wl: &Workload, targets: &[usize]) -> RemoteWriteEncoder {
        let mut labels = Vec::with_capacity(targets.len() * wl.series_per_target());
        for &t in targets {
            for s in 0..wl.series_per_target() {
                let ts = TimeSeries {
                    labels: wl.labels(t, s).into_iter().map(|(name, value)| Label { name, value }).collect(),
                    ..Default::default()
                };
                labels.push(ts.encode_to_vec());
            }
        }
        RemoteWriteEncoder {
            labels,
            buf: Vec::new(),
            snappy: snap::raw::Encoder::new(),
        }
    }

    /// Encodes `pending` as a `WriteRequest` into `self.buf` (uncompressed):
    /// one `TimeSeries` per series, its samples in time order.
    fn encode_request(&mut self, pending: &mut [Pending]) -> anyhow::Result<()> {
        // Stable: a series' samples keep their (time) order.
        pending.sort_by_key(|p| p.local);
        self.buf.clear();
        for group in pending.chunk_by(|a, b| a.local == b.local) {
            let labels = &self.labels[group[0].local as usize];
            let samples: Vec<Sample> = group
                .iter()
                .map(|p| Sample {
                    value: p.value,
                    timestamp: p.ts,
                })
                .collect();
            let body_len = labels.len()
                + samples
                    .iter()
                    .map(|s| {
                        let n = s.encoded_len();
                        1 + prost::length_delimiter_len(n) + n
                    })
                    .sum::<usize>();
            self.buf.push(TIMESERIES_KEY);
            prost::encode_length_delimiter(body_len, &mut self.buf)?;
            self.buf.extend_from_slice(labels);
            for s in &samples {
                self.buf.push(SAMPLES_KEY);
                s.encode_length_delimited(&mut self.buf)?;
            }
        }
        Ok(())
    }

    fn encode(&mut self, pending: &mut [Pending]) -> anyhow::Result<Payload> {
        self.encode_request(pending)?;
        Ok(Payload::RemoteWrite(self.snappy.compress_vec(&self.buf)?))
    }
}

/// Builds `WriteBatch`es for one worker's stream: seq 1, 2, 3...; a series'
/// labels go in the first batch that uses it.
struct GrpcEncoder {
    wl: Arc<Workload>,
    targets: Vec<usize>,
    defined: Vec<bool>,
    seq: u64,
}

impl GrpcEncoder {
    fn new(wl: Arc<Workload>, targets: &[usize]) -> GrpcEncoder {
        let n = targets.len() * wl.series_per_target();
        GrpcEncoder {
            wl,
            targets: targets.to_vec(),
            defined: vec![false; n],
            seq: 0,
        }
    }

    fn encode(&mut self, pending: &[Pending]) -> Payload {
        self.seq += 1;
        let per_target = self.wl.series_per_target();
        let mut batch = WriteBatch {
            seq: self.seq,
            refs: Vec::with_capacity(pending.len()),
            timestamps_ms: Vec::with_capacity(pending.len()),
            values: Vec::with_capacity(pending.len()),
            ..Default::default()
        };
        for p in pending {
            let local = p.local as usize;
            let r#ref = local as u64 + 1;
            if !self.defined[local] {
                self.defined[local] = true;
                let labels = self.wl.labels(self.targets[local / per_target], local % per_target);
                batch.new_series.push(SeriesDef {
                    r#ref,
                    labels: labels
                        .into_iter()
                        .map(|(name, value)| csoc_proto::v1::Label { name, value })
                        .collect(),
                });
            }
            batch.refs.push(r#ref);
            batch.timestamps_ms.push(p.ts);
            batch.values.push(p.value);
        }
        Payload::Grpc(batch)
    }
}

enum Encoder {
    RemoteWrite(Box<RemoteWriteEncoder>),
    Grpc(GrpcEncoder),
}

impl Encoder {
    fn encode(&mut self, pending: &mut [Pending]) -> anyhow::Result<Payload> {
        match self {
            Encoder::RemoteWrite(e) => e.encode(pending),
            Encoder::Grpc(e) => Ok(e.encode(pending)),
        }
    }
}

/// What a producer thread needs.
struct Producer {
    worker: usize,
    targets: Vec<usize>,
    wl: Arc<Workload>,
    rounds: u64,
    batch_samples: usize,
    max_skew: u64,
    encoder: Encoder,
    tx: mpsc::Sender<Batch>,
    shared: Arc<Shared>,
}

impl Producer {
    /// Generates the worker's rounds and hands batches to its sender. Ends
    /// early (Ok) when the run failed or the sender is gone.
    fn run(mut self) -> anyhow::Result<()> {
        let wl = Arc::clone(&self.wl);
        let mut gens: Vec<_> = self.targets.iter().map(|&t| wl.target(t)).collect();
        let per_target = wl.series_per_target();
        let mut pending = Vec::with_capacity(self.batch_samples);
        for r in 0..self.rounds {
            let r = r as i64;
            if self.shared.min_done_except(self.worker) < r - self.max_skew as i64 {
                // Flush first, so the others never wait on a batch held here.
                if !pending.is_empty() && !self.emit(&mut pending, r - 1)? {
                    return Ok(());
                }
                while self.shared.min_done_except(self.worker) < r - self.max_skew as i64 {
                    if self.shared.failed.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let last_target = gens.len() - 1;
            for (k, g) in gens.iter_mut().enumerate() {
                let ts = g.next_round();
                for (s, &value) in g.values().iter().enumerate() {
                    pending.push(Pending {
                        local: (k * per_target + s) as u32,
                        ts,
                        value,
                    });
                    if pending.len() == self.batch_samples {
                        let through = if k == last_target && s + 1 == per_target { r } else { r - 1 };
                        if !self.emit(&mut pending, through)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if !pending.is_empty() {
            self.emit(&mut pending, self.rounds as i64 - 1)?;
        }
        Ok(())
    }

    /// Encodes and sends `pending` (then clears it). False when the sender is gone.
    fn emit(&mut self, pending: &mut Vec<Pending>, through: i64) -> anyhow::Result<bool> {
        let samples = pending.len() as u64;
        let payload = self.encoder.encode(pending)?;
        pending.clear();
        Ok(self.tx.blocking_send(Batch { samples, through, payload }).is_ok())
    }
}

/// Sends one worker's batches by remote write, one request at a time.
async fn remote_write_sender(
    client: reqwest::Client,
    args: Arc<Args>,
    worker: usize,
    mut rx: mpsc::Receiver<Batch>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    while let Some(batch) = rx.recv().await {
        let Payload::RemoteWrite(body) = batch.payload else {
            bail!("BUG: a gRPC batch reached the remote-write sender");
        };
        shared.sent.fetch_add(batch.samples, Ordering::Relaxed);
        let mut attempt = 0u32;
        loop {
            let mut req = client
                .post(&args.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .header("User-Agent", concat!("csoc-loadgen/", env!("CARGO_PKG_VERSION")))
                .body(body.clone());
            if let Some(t) = &args.token {
                req = req.bearer_auth(t);
            }
            let problem = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    shared.mark_durable(worker, batch.samples, batch.through);
                    break;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    if !(status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                        bail!("{} answered {status}: {}", args.url, text.trim());
                    }
                    format!("{status}: {}", text.trim())
                }
                Err(e) => error_chain(&e),
            };
            attempt += 1;
            if attempt > args.max_retries {
                bail!("{} failed {attempt} times, last: {problem}", args.url);
            }
            shared.retries.fetch_add(1, Ordering::Relaxed);
            let backoff = Duration::from_millis(100 << attempt.min(6)).min(Duration::from_secs(5));
            eprintln!("csoc-loadgen: worker {worker}: {problem}; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
        }
    }
    Ok(())
}

/// An open, welcomed gRPC stream.
struct GrpcStream {
    out: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<csoc_proto::v1::CollectorMessage>,
    max_batch_bytes: u64,
}

/// Opens worker `worker`'s stream: Hello with a fresh spool epoch, then waits
/// for Welcome.
async fn grpc_open(args: &Args, worker: usize) -> anyhow::Result<GrpcStream> {
    let endpoint = tonic::transport::Endpoint::from_shared(args.url.clone())
        .with_context(|| format!("bad gRPC URL {:?}", args.url))?
        .connect_timeout(Duration::from_secs(10));
    let channel = endpoint.connect().await.with_context(|| format!("connecting to {}", args.url))?;
    let mut client = IngestClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(usize::MAX);
    let (out, rx) = mpsc::channel::<AgentMessage>(args.window + 2);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let spool_epoch = hash2(nanos ^ u64::from(std::process::id()), worker as u64);
    let hello = csoc_proto::v1::Hello {
        agent_name: format!("loadgen-{worker}"),
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: "csoc-loadgen".to_string(),
        capabilities: vec![],
        claimed_commons: String::new(),
        spool_epoch,
        ..Default::default()
    };
    out.send(AgentMessage {
        msg: Some(agent_message::Msg::Hello(hello)),
    })
    .await
    .context("BUG: the outbound queue closed before Hello")?;
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(t) = &args.token {
        let v = format!("Bearer {t}")
            .parse()
            .context("the token has characters not allowed in gRPC metadata")?;
        req.metadata_mut().insert(csoc_proto::AUTHORIZATION_HEADER, v);
    }
    let mut inbound = client
        .connect(req)
        .await
        .map_err(|s| anyhow::anyhow!("{}: stream refused: {:?}: {}", args.url, s.code(), s.message()))?
        .into_inner();
    let wait = Duration::from_secs(15);
    let welcome = match tokio::time::timeout(wait, inbound.message()).await {
        Err(_) => bail!("{}: no Welcome within {wait:?}", args.url),
        Ok(Err(s)) => bail!("{}: stream failed before Welcome: {:?}: {}", args.url, s.code(), s.message()),
        Ok(Ok(None)) => bail!("{}: the collector closed the stream before Welcome", args.url),
        Ok(Ok(Some(m))) => match m.msg {
            Some(collector_message::Msg::Welcome(w)) => w,
            other => bail!("{}: expected Welcome, got {other:?}", args.url),
        },
    };
    if welcome.last_applied_seq != 0 {
        eprintln!(
            "csoc-loadgen: worker {worker}: the collector says it already applied seq {} for a fresh spool epoch",
            welcome.last_applied_seq
        );
    }
    Ok(GrpcStream {
        out,
        inbound,
        max_batch_bytes: welcome.max_batch_bytes,
    })
}

/// Sends one worker's batches on its stream, up to `--window` in flight,
/// counting each on its Ack.
async fn grpc_sender(
    mut stream: GrpcStream,
    args: Arc<Args>,
    worker: usize,
    mut rx: mpsc::Receiver<Batch>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    struct InFlight {
        seq: u64,
        samples: u64,
        through: i64,
        acked: bool,
    }
    let ack_wait = Duration::from_secs(args.request_timeout_secs);
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut producer_done = false;
    while !(producer_done && inflight.is_empty()) {
        tokio::select! {
            b = rx.recv(), if !producer_done && inflight.len() < args.window => {
                let Some(batch) = b else {
                    producer_done = true;
                    continue;
                };
                let Payload::Grpc(wb) = batch.payload else {
                    bail!("BUG: a remote-write batch reached the gRPC sender");
                };
                let len = wb.encoded_len() as u64;
                if stream.max_batch_bytes > 0 && len > stream.max_batch_bytes {
                    bail!(
                        "batch {} is {len} bytes, over the collector's max_batch_bytes {}; use a smaller --batch-samples",
                        wb.seq,
                        stream.max_batch_bytes
                    );
                }
                let seq = wb.seq;
                stream
                    .out
                    .send(AgentMessage { msg: Some(agent_message::Msg::Batch(wb)) })
                    .await
                    .context("the gRPC stream closed")?;
                shared.sent.fetch_add(batch.samples, Ordering::Relaxed);
                inflight.push_back(InFlight { seq, samples: batch.samples, through: batch.through, acked: false });
            }
            m = tokio::time::timeout(ack_wait, stream.inbound.message()), if !inflight.is_empty() => {
                let msg = match m {
                    Err(_) => bail!("no Ack within {ack_wait:?} ({} batches in flight)", inflight.len()),
                    Ok(Err(s)) => bail!("the stream failed: {:?}: {}", s.code(), s.message()),
                    Ok(Ok(None)) => bail!("the collector closed the stream with {} batches in flight", inflight.len()),
                    Ok(Ok(Some(m))) => m,
                };
                match msg.msg {
                    Some(collector_message::Msg::Ack(a)) => {
                        match inflight.iter_mut().find(|f| f.seq == a.seq) {
                            Some(f) => f.acked = true,
                            None => eprintln!("csoc-loadgen: worker {worker}: Ack for seq {} not in flight", a.seq),
                        }
                        while inflight.front().is_some_and(|f| f.acked) {
                            if let Some(f) = inflight.pop_front() {
                                shared.mark_durable(worker, f.samples, f.through);
                            }
                        }
                    }
                    Some(collector_message::Msg::Nack(n)) => bail!(
                        "the collector rejected batch {} ({:?}, retryable: {}): {}",
                        n.seq,
                        n.code(),
                        n.retryable,
                        n.message
                    ),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// `e` and its sources, "outer: inner: ..." (reqwest's Display shows only the outer one).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

/// This process's CPU time (user + system, all threads), seconds.
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after "pid (comm) ": state is the 1st, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / rustix::param::clock_ticks_per_second() as f64)
}

/// Runs the load; returns the summary's fields and the run's error, if any.
async fn run_load(args: Arc<Args>, wl: Arc<Workload>) -> (serde_json::Value, Option<anyhow::Error>) {
    let selected: Vec<usize> = (0..args.targets)
        .filter(|&t| args.commons.as_ref().is_none_or(|c| *c == Workload::commons(t)))
        .collect();
    if selected.is_empty() {
        let e = anyhow::anyhow!("no target of the {} is in commons {:?}", args.targets, args.commons);
        return (serde_json::json!({}), Some(e));
    }
    let workers = args.concurrency.min(selected.len());
    let shared = Arc::new(Shared::new(workers));
    let assignment: Vec<Vec<usize>> = (0..workers)
        .map(|w| selected.iter().copied().skip(w).step_by(workers).collect())
        .collect();
    let series = wl.series_per_target() * selected.len();
    let expected = series as u64 * args.rounds;

    // Open every gRPC stream before the clock starts.
    let mut streams = Vec::new();
    if args.mode == Mode::Grpc {
        for w in 0..workers {
            match grpc_open(&args, w).await {
                Ok(s) => streams.push(s),
                Err(e) => return (serde_json::json!({}), Some(e.context(format!("worker {w}")))),
            }
        }
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(args.request_timeout_secs))
        .pool_max_idle_per_host(workers)
        .build()
    {
        Ok(c) => c,
        Err(e) => return (serde_json::json!({}), Some(e.into())),
    };

    let started = Instant::now();
    let cpu0 = own_cpu_seconds();
    let mut senders = tokio::task::JoinSet::new();
    let mut producers = Vec::new();
    let mut streams = streams.into_iter();
    for (w, targets) in assignment.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Batch>(2);
        let encoder = match args.mode {
            Mode::RemoteWrite => {
                senders.spawn(remote_write_sender(client.clone(), Arc::clone(&args), w, rx, Arc::clone(&shared)));
                Encoder::RemoteWrite(Box::new(RemoteWriteEncoder::new(&wl, &targets)))
            }
            Mode::Grpc => {
                let Some(stream) = streams.next() else {
                    return (serde_json::json!({}), Some(anyhow::anyhow!("BUG: fewer streams than workers")));
                };
                senders.spawn(grpc_sender(stream, Arc::clone(&args), w, rx, Arc::clone(&shared)));
                Encoder::Grpc(GrpcEncoder::new(Arc::clone(&wl), &targets))
            }
        };
        let producer = Producer {
            worker: w,
            targets,
            wl: Arc::clone(&wl),
            rounds: args.rounds,
            batch_samples: args.batch_samples,
            max_skew: args.max_skew_rounds,
            encoder,
            tx,
            shared: Arc::clone(&shared),
        };
        producers.push(std::thread::spawn(move || {
            producer.run().with_context(|| format!("worker {w} producer"))
        }));
    }

    let progress = (args.progress_secs > 0).then(|| {
        let shared = Arc::clone(&shared);
        let every = Duration::from_secs(args.progress_secs);
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(every).await;
                let durable = shared.durable.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (durable - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                let round = shared.done_round.iter().map(|r| r.load(Ordering::Relaxed)).min().unwrap_or(-1);
                eprintln!(
                    "csoc-loadgen: {:7.1}s durable {durable}/{expected} ({:.1} %), {rate:.0} samples/s, rounds done {}",
                    started.elapsed().as_secs_f64(),
                    100.0 * durable as f64 / expected.max(1) as f64,
                    round + 1
                );
                last = (now, durable);
            }
        })
    });

    let mut error: Option<anyhow::Error> = None;
    while let Some(res) = senders.join_next().await {
        let res = match res {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("sender task: {e}")),
        };
        if let Err(e) = res
            && error.is_none()
        {
            shared.failed.store(true, Ordering::Relaxed);
            senders.abort_all();
            error = Some(e);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
    }
    for p in producers {
        match p.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error = error.or(Some(e)),
            Err(_) => error = error.or(Some(anyhow::anyhow!("a producer thread panicked"))),
        }
    }
    let cpu = match (cpu0, own_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let durable = shared.durable.load(Ordering::Relaxed);
    if error.is_none() && durable != expected {
        error = Some(anyhow::anyhow!("{durable} samples durable, {expected} expected"));
    }
    let opts = wl.options();
    let summary = serde_json::json!({
        "mode": args.mode.name(),
        "url": args.url,
        "targets": args.targets,
        "targets_sent": selected.len(),
        "series": series,
        "rounds": args.rounds,
        "batch_samples": args.batch_samples,
        "concurrency": workers,
        "seed": args.seed,
        "jitter_ms": args.jitter_ms,
        "start_ms": opts.start_ms,
        "end_ms": opts.start_ms + (args.rounds as i64 - 1) * opts.interval_ms,
        "samples_expected": expected,
        "samples_sent": shared.sent.load(Ordering::Relaxed),
        "durable_samples": durable,
        "batches": shared.batches.load(Ordering::Relaxed),
        "retries": shared.retries.load(Ordering::Relaxed),
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "samples_per_s": (durable as f64 / seconds.max(1e-9)).round() as u64,
        "loadgen_cpu_s": (cpu * 100.0).round() / 100.0,
        "status": if error.is_none() { "ok" } else { "error" },
    });
    (summary, error)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rounds == 0 || args.batch_samples == 0 || args.concurrency == 0 || args.window == 0 || args.targets == 0 {
        bail!("--rounds, --batch-samples, --concurrency, --window and --targets must be at least 1");
    }
    if args.targets * 600 > u32::MAX as usize {
        bail!("--targets {} is too many", args.targets);
    }
    let interval = args.interval_ms;
    let start_ms = args.start_ms.unwrap_or_else(|| now_ms() - args.rounds as i64 * interval);
    let path = args.exposition.clone().unwrap_or_else(Workload::default_exposition_path);
    let wl = Workload::load(
        &path,
        WorkloadOptions {
            targets: args.targets,
            seed: args.seed,
            start_ms,
            interval_ms: interval,
            round_jitter_ms: args.jitter_ms,
        },
    )?;
    let wl = if args.request_histogram { wl.with_request_histogram() } else { wl };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let json = args.json;
    let (summary, error) = rt.block_on(run_load(Arc::new(args), Arc::new(wl)));
    if json {
        let mut s = summary;
        if let (Some(e), Some(obj)) = (&error, s.as_object_mut()) {
            obj.insert("error".into(), serde_json::Value::String(format!("{e:#}")));
        }
        println!("{s}");
    } else if let Some(obj) = summary.as_object().filter(|o| !o.is_empty()) {
        let line: Vec<String> = obj
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        println!("{}", line.join(" "));
    }
    match error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csoc-loadgen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csoc_proto::prometheus::WriteRequest;

    const FIXTURE: &str = "# TYPE a_total counter\na_total{x=\"1\"} 5\n# TYPE b gauge\nb 0.5\nc_info{v=\"q\\\"uote\"} 1\n";

    fn workload(targets: usize) -> Workload {
        Workload::from_exposition(
            FIXTURE,
            WorkloadOptions {
                targets,
                seed: 3,
                start_ms: 1_000_000,
                interval_ms: 15_000,
                round_jitter_ms: 0,
            },
        )
        .expect("fixture")
    }

    #[test]
    fn remote_write_encoding_is_prosts_encoding_of_the_same_request() {
        let wl = workload(2);
        let targets = [0usize, 1];
        let mut enc = RemoteWriteEncoder::new(&wl, &targets);
        let mut gens: Vec<_> = targets.iter().map(|&t| wl.target(t)).collect();
        let mut pending = Vec::new();
        // Two rounds in one batch: each series gets two samples, in time order.
        for _ in 0..2 {
            for (k, g) in gens.iter_mut().enumerate() {
                let ts = g.next_round();
                for (s, &value) in g.values().iter().enumerate() {
                    pending.push(Pending {
                        local: (k * 3 + s) as u32,
                        ts,
                        value,
                    });
                }
            }
        }
        let mut expected = WriteRequest::default();
        for (k, &t) in targets.iter().enumerate() {
            for s in 0..3 {
                let samples = pending
                    .iter()
                    .filter(|p| p.local as usize == k * 3 + s)
                    .map(|p| Sample {
                        value: p.value,
                        timestamp: p.ts,
                    })
                    .collect();
                expected.timeseries.push(TimeSeries {
                    labels: wl.labels(t, s).into_iter().map(|(name, value)| Label { name, value }).collect(),
                    samples,
                    ..Default::default()
                });
            }
        }
        enc.encode_request(&mut pending).expect("encodes");
        assert_eq!(enc.buf, expected.encode_to_vec());
        let decoded = WriteRequest::decode(enc.buf.as_slice()).expect("decodes");
        assert_eq!(decoded.timeseries.len(), 6);
        assert!(
            decoded
                .timeseries
                .iter()
                .all(|t| t.samples.len() == 2 && t.samples[0].timestamp < t.samples[1].timestamp)
        );

        let Payload::RemoteWrite(compressed) = enc.encode(&mut pending).expect("encodes") else {
            panic!("remote-write payload expected");
        };
        let raw = snap::raw::Decoder::new().decompress_vec(&compressed).expect("snappy");
        assert_eq!(raw, expected.encode_to_vec());
    }

    #[test]
    fn grpc_batches_define_each_series_once_and_number_batches_from_1() {
        let wl = Arc::new(workload(2));
        let mut enc = GrpcEncoder::new(Arc::clone(&wl), &[1]);
        let p = |local: u32, ts: i64| Pending { local, ts, value: 1.0 };
        let Payload::Grpc(b1) = enc.encode(&[p(0, 10), p(1, 10)]) else {
            panic!("gRPC payload expected");
        };
        let Payload::Grpc(b2) = enc.encode(&[p(2, 10), p(0, 20), p(1, 20)]) else {
            panic!("gRPC payload expected");
        };
        assert_eq!((b1.seq, b2.seq), (1, 2));
        assert_eq!(b1.new_series.iter().map(|d| d.r#ref).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(b2.new_series.iter().map(|d| d.r#ref).collect::<Vec<_>>(), [3]);
        assert_eq!(b2.refs, [3, 1, 2]);
        assert_eq!(b2.timestamps_ms, [10, 20, 20]);
        let inst = b1.new_series[0]
            .labels
            .iter()
            .find(|l| l.name == "instance")
            .map(|l| l.value.as_str());
        assert_eq!(inst, Some("target-1:9100"));
    }
}
