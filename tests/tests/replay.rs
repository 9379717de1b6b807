//! A collector restarted on a large WAL: its HTTP listener answers from the
//! first moment, `/-/healthy` 200 and `/-/ready` 503 while the WAL replays,
//! then `/-/ready` 200 with every sample back. (What a Kubernetes liveness
//! probe needs: before, nothing listened during replay, and the probe
//! killed the collector over and over.)

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use csoc_proto::prometheus::WriteRequest;
use csoc_tests::{Collector, Proc, bin, collector_args, free_port, metric_value, remote_write, series};
use serde_json::Value;

const TOKEN: &str = "replay-token-0123456789abcdef";
const SERIES: i64 = 10_000;
/// Fewer than a chunk's 120 samples: no chunk closes, nothing is persisted,
/// so every sample is in the WAL and replayed at the restart.
const SAMPLES_PER_SERIES: i64 = 100;
const STEP_MS: i64 = 15_000;

/// One probe round: what `/-/healthy` and `/-/ready` answered (None: no
/// connection), at how long after the process started.
#[derive(Debug)]
struct Probe {
    at: Duration,
    healthy: Option<u16>,
    ready: Option<u16>,
    ready_body: String,
}

fn status(client: &reqwest::blocking::Client, url: &str) -> Option<(u16, String)> {
    let r = client.get(url).send().ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().unwrap_or_default()))
}

/// `sum(count_over_time(replay_test[1h]))` and `count(replay_test)`.
fn stored(c: &Collector) -> anyhow::Result<(f64, f64)> {
    let value = |q: &str| -> anyhow::Result<f64> {
        let r = c.query(q)?;
        let v = r.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse().ok());
        v.ok_or_else(|| anyhow::anyhow!("{q}: no value in {r:?}"))
    };
    Ok((value("sum(count_over_time(replay_test[1h]))")?, value("count(replay_test)")?))
}

#[test]
fn a_collector_replaying_a_million_samples_is_healthy_but_not_ready_until_the_replay_ends() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (http_port, grpc_port) = (free_port(), free_port());
    let token_flag = format!("replay={TOKEN}");
    let flags = [
        "--agent-token",
        &token_flag,
        "--limit",
        "max_samples_per_second=0",
        // Only the test's samples in the WAL.
        "--self-scrape-interval",
        "0",
    ];
    let mut c = Collector::start_on(d, http_port, grpc_port, &flags)?;

    // 1,000,000 samples: one request per round of every series, in time
    // order, ending now.
    let written = Instant::now();
    let end = csoc_common::time::now_ms();
    let start = end - (SAMPLES_PER_SERIES - 1) * STEP_MS;
    let names: Vec<String> = (0..SERIES).map(|i| i.to_string()).collect();
    for k in 0..SAMPLES_PER_SERIES {
        let t = start + k * STEP_MS;
        let req = WriteRequest {
            timeseries: names
                .iter()
                .map(|n| series(&[("__name__", "replay_test"), ("series", n)], vec![(t, k as f64)]))
                .collect(),
            ..Default::default()
        };
        remote_write(&c.http, TOKEN, &req)?;
    }
    let total = (SERIES * SAMPLES_PER_SERIES) as f64;
    eprintln!("wrote {total} samples in {:.1}s", written.elapsed().as_secs_f64());
    let (samples, count) = stored(&c)?;
    ensure!(
        (samples, count) == (total, SERIES as f64),
        "before the crash: {samples} samples in {count} series"
    );

    // kill -9: nothing is checkpointed or persisted at exit; the WAL holds
    // every sample.
    c.proc.kill9();

    // Restart on the same ports and probe from the moment the process
    // starts.
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let base = format!("http://127.0.0.1:{http_port}");
    let args = collector_args(d, http_port, grpc_port, &flags);
    let t0 = Instant::now();
    let proc = Proc::start(d, "collector-restarted", &bin("csoc-collector"), &args)?;
    let mut probes: Vec<Probe> = Vec::new();
    let mut api_during_replay: Option<(u16, Option<String>, Value)> = None;
    // (progress ratio, samples replayed) as /metrics showed them, each
    // distinct pair once.
    let mut metrics_during_replay: Vec<(f64, f64)> = Vec::new();
    loop {
        let at = t0.elapsed();
        if at > Duration::from_secs(180) {
            bail!("not ready 180s after the restart; probes: {probes:?}\n{}", proc.log_text());
        }
        let healthy = status(&client, &format!("{base}/-/healthy")).map(|(c, _)| c);
        let ready = status(&client, &format!("{base}/-/ready"));
        let (ready, ready_body) = match ready {
            Some((c, b)) => (Some(c), b),
            None => (None, String::new()),
        };
        let replaying = healthy == Some(200) && ready == Some(503);
        probes.push(Probe {
            at,
            healthy,
            ready,
            ready_body: ready_body.trim().to_string(),
        });
        if replaying && api_during_replay.is_none() {
            // Any other route: Prometheus's error JSON, 503 unavailable.
            if let Ok(r) = client.get(format!("{base}/api/v1/query?query=up")).send() {
                let code = r.status().as_u16();
                let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
                let body: Value = r.json().unwrap_or(Value::Null);
                api_during_replay = Some((code, retry, body));
            }
        }
        if replaying
            && let Some((200, text)) = status(&client, &format!("{base}/metrics"))
            && let Some(ratio) = metric_value(&text, "csoc_collector_tsdb_wal_replay_progress_ratio")
        {
            let replayed = metric_value(&text, "csoc_collector_tsdb_wal_replayed_samples_total").unwrap_or(-1.0);
            if metrics_during_replay.last() != Some(&(ratio, replayed)) {
                metrics_during_replay.push((ratio, replayed));
            }
        }
        if ready == Some(200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready_at = t0.elapsed();

    // What was seen, in order.
    let first_listening = probes.iter().find(|p| p.healthy.is_some()).map(|p| p.at);
    let during: Vec<&Probe> = probes.iter().filter(|p| p.healthy == Some(200) && p.ready == Some(503)).collect();
    ensure!(
        !during.is_empty(),
        "never saw /-/healthy 200 with /-/ready 503 while the WAL replayed; probes: {probes:?}"
    );
    ensure!(
        probes.iter().all(|p| p.healthy.is_none() || p.healthy == Some(200)),
        "/-/healthy answered something else than 200: {probes:?}"
    );
    let last_not_ready = during.last().map(|p| p.at).unwrap_or_default();
    ensure!(last_not_ready < ready_at, "ready 200 comes after every 503");
    ensure!(
        during
            .iter()
            .any(|p| p.ready_body.contains("replaying the WAL") || p.ready_body.contains("opening the storage")),
        "/-/ready says what it waits for: {:?}",
        during.iter().map(|p| &p.ready_body).collect::<Vec<_>>()
    );
    ensure!(
        !metrics_during_replay.is_empty(),
        "/metrics with the replay's progress answered during replay"
    );
    ensure!(
        metrics_during_replay.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
        "the progress only grows: {metrics_during_replay:?}"
    );
    let (code, retry, body) = api_during_replay.ok_or_else(|| anyhow::anyhow!("no API answer during replay"))?;
    ensure!(
        code == 503 && body["status"] == "error" && body["errorType"] == "unavailable" && retry.is_some(),
        "a query during replay: HTTP {code}, Retry-After {retry:?}, {body}"
    );

    // Every sample is back.
    let c = Collector {
        proc,
        http: base,
        grpc: format!("http://127.0.0.1:{grpc_port}"),
    };
    let (samples, count) = stored(&c)?;
    ensure!(
        (samples, count) == (total, SERIES as f64),
        "after the replay: {samples} samples in {count} series, expected {total} in {SERIES}"
    );
    let log = c.proc.log_text();
    let replayed_line = log
        .lines()
        .find(|l| l.contains("WAL replayed"))
        .ok_or_else(|| anyhow::anyhow!("no \"WAL replayed\" line in the log:\n{log}"))?;
    let field = |name: &str| -> Option<String> {
        let re = regex::Regex::new(&format!(r"\b{name}=([^ ]+)")).ok()?;
        re.captures(replayed_line).map(|c| c[1].to_string())
    };
    let replayed: u64 = field("samples").and_then(|v| v.parse().ok()).unwrap_or(0);
    ensure!(replayed >= 1_000_000, "replayed {replayed} samples: {replayed_line}");
    ensure!(log.contains("replaying the WAL"), "the replay logs its progress:\n{log}");

    eprintln!(
        "replay: {replayed} samples, {} in the log (\"WAL replayed\" elapsed={}); after the restart: listening at {:.3}s, \
         /-/healthy 200 + /-/ready 503 seen {} times from {:.3}s to {:.3}s, /-/ready 200 at {:.3}s; \
         a query during replay: HTTP {code} {}; /metrics during replay: {} distinct (progress ratio, samples replayed) readings, \
         first {:?}, last {:?}",
        field("records").map(|r| format!("{r} WAL records")).unwrap_or_default(),
        field("elapsed").unwrap_or_default(),
        first_listening.unwrap_or_default().as_secs_f64(),
        during.len(),
        during.first().map(|p| p.at).unwrap_or_default().as_secs_f64(),
        last_not_ready.as_secs_f64(),
        ready_at.as_secs_f64(),
        body["error"],
        metrics_during_replay.len(),
        metrics_during_replay.first(),
        metrics_during_replay.last(),
    );
    // A few of the distinct /-/ready answers, first and last included.
    let mut distinct: Vec<&Probe> = Vec::new();
    for p in &during {
        if distinct.last().map(|l| &l.ready_body) != Some(&p.ready_body) {
            distinct.push(p);
        }
    }
    let step = distinct.len().div_ceil(8).max(1);
    for (i, p) in distinct.iter().enumerate() {
        if i % step == 0 || i + 1 == distinct.len() {
            eprintln!("  {:>7.3}s /-/ready 503: {}", p.at.as_secs_f64(), p.ready_body);
        }
    }
    for l in log
        .lines()
        .filter(|l| l.contains("replaying the WAL") || l.contains("storage opened"))
    {
        eprintln!("  {l}");
    }
    Ok(())
}
