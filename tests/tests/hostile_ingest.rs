//! Hostile ingest (issue 15): remote write under the per-agent limits and
//! a decompression bomb, slowloris clients on both listeners, the
//! connection limit, and a re-used gRPC seq with other content. Each test
//! starts its own collector on 127.0.0.1, stays within 30 s, and checks
//! the collector's RSS (`VmRSS`) afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use csoc_common::time::now_ms;
use csoc_proto::prometheus::WriteRequest;
use csoc_tests::grpc::{batch, hello, labels, session};
use csoc_tests::*;
use prost::Message;

const TOKEN: &str = "hostile-token-0123456789abcdef";
/// The collector's resident memory after each test stays below this.
const RSS_BOUND_KB: u64 = 400 * 1024;

fn start(dir: &std::path::Path, limits: &[&str]) -> anyhow::Result<Collector> {
    let tok = format!("alpha={TOKEN}");
    let mut args = vec!["--agent-token", tok.as_str()];
    for l in limits {
        args.push("--limit");
        args.push(l);
    }
    Collector::start(dir, &args)
}

fn rss_kb(c: &Collector) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{}/status", c.proc.child.id())).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn check_rss(c: &Collector) {
    let kb = rss_kb(c);
    assert!(kb < RSS_BOUND_KB, "collector RSS {kb} KiB over {RSS_BOUND_KB} KiB");
}

/// CPU seconds (user + system) the process used so far.
fn cpu_secs(c: &Collector) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{}/stat", c.proc.child.id())).expect("stat");
    let after = &s[s.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// POSTs a raw remote-write body: (status, Retry-After, body).
fn post_raw(base: &str, body: Vec<u8>) -> anyhow::Result<(u16, Option<String>, String)> {
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("Authorization", format!("Bearer {TOKEN}"))
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()?;
    let code = r.status().as_u16();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok((code, retry, r.text().unwrap_or_default()))
}

fn post(base: &str, req: &WriteRequest) -> anyhow::Result<(u16, Option<String>, String)> {
    post_raw(base, snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())?)
}

/// `n` series of `metric`, one sample each at `t`.
fn request(metric: &str, n: usize, t: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..n)
            .map(|i| series(&[("__name__", metric), ("instance", &format!("i{i}"))], vec![(t, i as f64)]))
            .collect(),
        ..Default::default()
    }
}

fn rejections(c: &Collector, limit: &str) -> f64 {
    let (_, text) = get_text(&format!("{}/metrics", c.http)).expect("metrics");
    metric_value(
        &text,
        &format!("csoc_collector_limit_rejections_total{{limit=\"{limit}\",commons=\"alpha\"}}"),
    )
    .unwrap_or(0.0)
}

fn count(c: &Collector, metric: &str) -> f64 {
    c.query(&format!("count(count_over_time({metric}[1h]))"))
        .expect("query")
        .first()
        .and_then(|r| r["value"][1].as_str().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn remote_write_over_the_rate_is_429_retryable_and_counted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = start(dir.path(), &["max_samples_per_second=10"])?;
    let t = now_ms();
    // The bucket holds ten seconds (100 samples): the first request empties
    // it, the next is over the rate.
    let (code, _, msg) = post(&c.http, &request("hostile_rate_a", 150, t))?;
    assert_eq!(code, 204, "{msg}");
    let (code, retry, msg) = post(&c.http, &request("hostile_rate_b", 10, t))?;
    assert_eq!(code, 429, "{msg}");
    assert!(retry.is_some(), "429 carries Retry-After");
    assert!(msg.contains("max_samples_per_second"), "{msg}");
    assert_eq!(rejections(&c, "max_samples_per_second"), 1.0);
    assert_eq!(count(&c, "hostile_rate_a"), 150.0);
    assert_eq!(count(&c, "hostile_rate_b"), 0.0, "nothing of the refused request is stored");
    check_rss(&c);
    Ok(())
}

#[test]
fn remote_write_over_the_series_limit_is_refused_whole() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = start(dir.path(), &["max_series_per_agent=5"])?;
    let t = now_ms();
    let (code, _, msg) = post(&c.http, &request("hostile_series", 3, t))?;
    assert_eq!(code, 204, "{msg}");
    let (code, retry, msg) = post(&c.http, &request("hostile_series_more", 4, t))?;
    assert_eq!(code, 400, "{msg}");
    assert!(retry.is_none());
    assert!(msg.contains("max_series_per_agent"), "{msg}");
    assert_eq!(rejections(&c, "max_series_per_agent"), 1.0);
    assert_eq!(count(&c, "hostile_series_more"), 0.0, "nothing of the refused request is stored");
    // The series already written keep being accepted.
    let (code, _, msg) = post(&c.http, &request("hostile_series", 3, t + 1000))?;
    assert_eq!(code, 204, "{msg}");
    check_rss(&c);
    Ok(())
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header_without_cpu() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = start(dir.path(), &[])?;
    // A tiny body claiming 1 GiB.
    let mut tiny = Vec::new();
    let mut n: u64 = 1 << 30;
    while n >= 0x80 {
        tiny.push((n as u8) | 0x80);
        n >>= 7;
    }
    tiny.push(n as u8);
    tiny.extend_from_slice(&[0; 16]);
    // A real one: 200 MB of zeros, about 10 MB compressed.
    let bomb = snap::raw::Encoder::new().compress_vec(&vec![0u8; 200 << 20])?;
    let cpu = cpu_secs(&c);
    for body in [tiny, bomb] {
        let len = body.len();
        let t0 = Instant::now();
        let (code, _, msg) = post_raw(&c.http, body)?;
        assert_eq!(code, 413, "{msg}");
        assert!(msg.contains("max_remote_write_decompressed_bytes"), "{msg}");
        assert!(t0.elapsed() < Duration::from_secs(2), "body of {len} bytes took {:?}", t0.elapsed());
    }
    let used = cpu_secs(&c) - cpu;
    assert!(used < 0.5, "the refusals cost {used} s of CPU");
    assert_eq!(rejections(&c, "max_remote_write_decompressed_bytes"), 2.0);
    check_rss(&c);
    Ok(())
}

/// Opens `n` sockets to `addr` that send one byte every 2 s; returns how
/// long each took to be closed by the server (None: still open at the end).
fn slowloris(addrs: &[(&str, usize, &[u8])], for_how_long: Duration, healthy: &str) -> Vec<Option<Duration>> {
    let mut socks = Vec::new();
    for (addr, n, first) in addrs {
        for _ in 0..*n {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(first).expect("first byte");
            s.set_nonblocking(true).expect("nonblocking");
            socks.push((s, Instant::now(), None::<Duration>));
        }
    }
    let start = Instant::now();
    let mut last_drip = Instant::now();
    let mut last_health = Instant::now() - Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    while start.elapsed() < for_how_long && socks.iter().any(|s| s.2.is_none()) {
        let drip = last_drip.elapsed() >= Duration::from_secs(2);
        if drip {
            last_drip = Instant::now();
        }
        for (s, opened, closed) in socks.iter_mut().filter(|s| s.2.is_none()) {
            let gone = match s.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            let gone = gone || (drip && s.write_all(b"x").is_err());
            if gone {
                *closed = Some(opened.elapsed());
            }
        }
        if last_health.elapsed() >= Duration::from_millis(500) {
            last_health = Instant::now();
            let t0 = Instant::now();
            let r = reqwest::blocking::Client::new()
                .get(healthy)
                .timeout(Duration::from_secs(1))
                .send()
                .map(|r| r.status().as_u16());
            assert_eq!(r.ok(), Some(200), "/-/healthy answers while slowloris sockets are open");
            assert!(t0.elapsed() < Duration::from_secs(1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    socks.into_iter().map(|s| s.2).collect()
}

#[test]
fn slowloris_sockets_are_closed_within_header_read_timeout() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = start(dir.path(), &["header_read_timeout=2s"])?;
    let http = c.http.trim_start_matches("http://").to_string();
    let grpc = c.grpc.trim_start_matches("http://").to_string();
    let closed = slowloris(
        &[(http.as_str(), 200, b"G"), (grpc.as_str(), 100, b"P")],
        Duration::from_secs(12),
        &format!("{}/-/healthy", c.http),
    );
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of 300 slowloris sockets still open");
    let slowest = closed.iter().flatten().max().copied().unwrap_or_default();
    // header_read_timeout, plus the poll interval and scheduling slack.
    assert!(slowest < Duration::from_millis(3500), "slowest close after {slowest:?}");
    check_rss(&c);
    Ok(())
}

#[test]
fn past_max_connections_a_connection_waits_and_is_served_when_one_closes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = start(dir.path(), &["max_connections=4"])?;
    let http = c.http.trim_start_matches("http://").to_string();
    // Let the readiness probes' connections close.
    std::thread::sleep(Duration::from_millis(500));
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&http).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("{}/-/healthy", c.http);
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let r = reqwest::blocking::Client::new()
            .get(url)
            .timeout(Duration::from_secs(8))
            .send()
            .map(|r| r.status().as_u16());
        let _ = tx.send((r.ok(), t0.elapsed()));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a fifth connection is not served while four are open"
    );
    let _ = held.pop();
    let (code, took) = rx.recv_timeout(Duration::from_secs(3)).expect("served once a connection closed");
    assert_eq!(code, Some(200));
    assert!(took < Duration::from_secs(4), "{took:?}");
    drop(held);
    check_rss(&c);
    Ok(())
}

#[test]
fn a_reused_seq_with_other_content_is_nacked_out_of_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = start(dir.path(), &[])?;
    let t = now_ms();
    let def = vec![(1u64, labels(&[("__name__", "hostile_seq"), ("job", "x")]))];
    let first = batch(1, &def, &[(1, t, 1.0)]);
    let other = batch(1, &def, &[(1, t, 2.0)]);
    let out = session(
        &c.grpc,
        Some(TOKEN),
        vec![hello("seq-agent", 7), first.clone(), other.clone(), first.clone()],
        4,
        Duration::from_secs(10),
    )?;
    assert!(out.welcomed(), "{out:?}");
    assert_eq!(out.acks(), vec![1, 1], "{out:?}");
    let nacks = out.nacks();
    assert_eq!(nacks.len(), 1, "{out:?}");
    assert_eq!(nacks[0].1, "NACK_CODE_OUT_OF_ORDER");
    assert!(nacks[0].2.contains("seq 1") && !nacks[0].3, "{nacks:?}");
    // On a new stream (a reconnect) too.
    let out = session(
        &c.grpc,
        Some(TOKEN),
        vec![hello("seq-agent", 7), other, first],
        3,
        Duration::from_secs(10),
    )?;
    assert_eq!(out.acks(), vec![1], "{out:?}");
    assert_eq!(out.nacks().len(), 1, "{out:?}");
    assert_eq!(out.nacks()[0].1, "NACK_CODE_OUT_OF_ORDER");
    // Stored once, with the first content.
    let r = c.query("count_over_time(hostile_seq[1h])")?;
    assert_eq!(r[0]["value"][1], "1", "{r:?}");
    let r = c.query("hostile_seq")?;
    assert_eq!(r[0]["value"][1], "1", "{r:?}");
    check_rss(&c);
    Ok(())
}
