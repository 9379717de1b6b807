//! The collector's handling of agent protocol frames: each `WriteBatch` of
//! a stream goes through the same `Session::apply` as on the gRPC path,
//! against a real storage (opened once per process in a tempdir, on tmpfs
//! when there is one).
//!
//! Input: a sequence of length-delimited `csoc.v1.AgentMessage` protobufs
//! (as `prost`'s `decode_length_delimited` reads them), one stream per
//! input (a fresh session and agent name, so inputs do not share applied
//! seqs). Decoding stops at the first frame prost refuses; the whole input
//! is also given to prost as one `AgentMessage` and one `WriteBatch`, so
//! arbitrary (non-UTF-8) label bytes reach prost's checks, and a raw
//! `WriteBatch` that decodes is applied too.
//!
//! Invariants, per batch:
//! - a rejected batch (Nack INVALID or LIMIT) changes nothing: series count,
//!   the agent's applied seq and the stream's ref table are unchanged;
//! - an applied batch had a seq above the applied one, which is now its seq,
//!   and stored one sample per ref;
//! - a batch already applied (seq not above) writes nothing;
//! - storage never fails on valid input.
#![no_main]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use csoc_collector::ingest::fuzzing::{Outcome, SessionHarness};
use csoc_collector::tsdb::{Tsdb, TsdbOptions};
use csoc_proto::v1::agent_message::Msg;
use csoc_proto::v1::{AgentMessage, WriteBatch};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Batches applied before the storage is replaced by a fresh one (bounds
/// the memory and disk a long run uses).
const RENEW_AFTER: u64 = 20_000;

struct Env {
    rt: tokio::runtime::Runtime,
    tsdb: Tsdb,
    metrics: csoc_collector::metrics::IngestMetrics,
    _dir: tempfile::TempDir,
    applied: u64,
}

impl Env {
    fn open() -> Env {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm"),
            false => tempfile::tempdir(),
        }
        .expect("tempdir");
        let mut reg = prometheus_client::registry::Registry::default();
        let tsdb = Tsdb::open(dir.path(), &TsdbOptions::default(), &mut reg).expect("open storage");
        let metrics = csoc_collector::metrics::CollectorMetrics::new(&mut reg).ingest;
        Env {
            rt,
            tsdb,
            metrics,
            _dir: dir,
            applied: 0,
        }
    }
}

static ENV: Mutex<Option<Env>> = Mutex::new(None);
static STREAM: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let mut batches: Vec<WriteBatch> = Vec::new();
    let mut buf = data;
    while !buf.is_empty() {
        match AgentMessage::decode_length_delimited(&mut buf) {
            Ok(AgentMessage { msg: Some(Msg::Batch(b)) }) => batches.push(b),
            Ok(_) => {} // Hello, Heartbeat, empty: nothing to apply
            Err(_) => break,
        }
    }
    let _ = AgentMessage::decode(data);
    if let Ok(b) = WriteBatch::decode(data) {
        batches.push(b);
    }
    if batches.is_empty() {
        return;
    }

    let mut guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_some_and(|e| e.applied >= RENEW_AFTER)
        && let Some(old) = guard.take()
    {
        old.tsdb.close();
    }
    let env = guard.get_or_insert_with(Env::open);
    let stream = STREAM.fetch_add(1, Ordering::Relaxed);
    let mut h = SessionHarness::new(env.tsdb.clone(), env.metrics.clone(), "fuzz", &format!("agent-{stream}"), 1);
    env.rt.block_on(async {
        for b in batches {
            let (series0, refs0) = (h.series_count(), h.known_refs());
            let seq0 = h.applied_seq().expect("applied seq");
            let (seq, n) = (b.seq, b.refs.len() as u64);
            let outcome = h.apply(b).await;
            let seq1 = h.applied_seq().expect("applied seq");
            match outcome {
                Outcome::Rejected(code, msg) => {
                    assert!(code == "NACK_CODE_INVALID" || code == "NACK_CODE_LIMIT", "{code}: {msg}");
                    assert_eq!(h.series_count(), series0, "rejected batch created series: {msg}");
                    assert_eq!(seq1, seq0, "rejected batch moved the applied seq: {msg}");
                    assert_eq!(h.known_refs(), refs0, "rejected batch changed the ref table: {msg}");
                }
                Outcome::Applied(stored) => {
                    assert!(seq > seq0, "batch {seq} applied after {seq0}");
                    assert_eq!(seq1, seq, "applied seq not recorded");
                    assert_eq!(stored, n, "samples stored");
                    assert!(h.series_count() >= series0);
                    env.applied += 1;
                }
                Outcome::AlreadyApplied => {
                    assert!(seq <= seq0, "batch {seq} called already applied at {seq0}");
                    assert_eq!(seq1, seq0);
                    assert_eq!(h.series_count(), series0, "duplicate batch created series");
                }
                Outcome::StorageFailed(msg) => panic!("storage failed on a valid batch: {msg}"),
            }
        }
    });
});
