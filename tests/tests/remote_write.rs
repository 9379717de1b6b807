//! Remote write out (`--remote-write`, `remote_write:`): into a real
//! Prometheus (Debian's, `--web.enable-remote-write-receiver`) and a real
//! VictoriaMetrics (Debian's `victoria-metrics`), compared sample by sample
//! with what the collector holds, across a receiver outage and a collector
//! restart. The headers, authentication and error handling are checked
//! against a local recording receiver (Mimir, Thanos and Cortex cannot run
//! here; what they add over these receivers is the tenant header and auth,
//! which the recording receiver checks).
//!
//! `CSOC_OUTAGE_SECS` shortens the receiver outage (default 60 s).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use csoc_common::time::now_ms;
use csoc_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use csoc_tests::*;
use prost::Message;
use serde_json::Value;

const TOKEN: &str = "rw-out-token-0123456789abcdef";
const SERIES: usize = 8;

fn value_of(k: usize, t: i64) -> f64 {
    (k as f64) * 1000.0 + ((t / 1000) % 997) as f64 + 0.25
}

/// One request with `SERIES` series of `rwtest_value`, a sample at each of `ts`.
fn samples_at(ts: &[i64]) -> WriteRequest {
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|k| TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "rwtest_value".into(),
                    },
                    Label {
                        name: "instance".into(),
                        value: format!("i{k}"),
                    },
                    Label {
                        name: "job".into(),
                        value: "rwtest".into(),
                    },
                ],
                samples: ts
                    .iter()
                    .map(|&t| Sample {
                        value: value_of(k, t),
                        timestamp: t,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn metric(base: &str, name: &str, remote: &str) -> f64 {
    let Ok((_, text)) = get_text(&format!("{base}/metrics")) else {
        return f64::NAN;
    };
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(&format!("remote_name=\"{remote}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// instance → [(t ms, value bits)] of `rwtest_value` in (from, to], raw.
type Raw = BTreeMap<String, Vec<(i64, u64)>>;

/// Raw samples through `rwtest_value[range]` at `to` (Prometheus API).
fn raw_promql(base: &str, from: i64, to: i64) -> anyhow::Result<Raw> {
    let range = format!("rwtest_value{{job=\"rwtest\"}}[{}ms]", to - from);
    let v = api(
        base,
        "/api/v1/query",
        &[("query", &range), ("time", &format!("{:.3}", to as f64 / 1000.0))],
    )?;
    let mut out = Raw::new();
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let inst = s["metric"]["instance"].as_str().unwrap_or("").to_string();
        let vals = s["values"].as_array().cloned().unwrap_or_default();
        let list = vals
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
                let v: f64 = p[1].as_str().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
                (t, v.to_bits())
            })
            .collect();
        out.insert(inst, list);
    }
    Ok(out)
}

/// Raw samples from VictoriaMetrics' export API.
fn raw_vm_export(base: &str, from: i64, to: i64) -> anyhow::Result<Raw> {
    let r = reqwest::blocking::Client::new()
        .get(format!("{base}/api/v1/export"))
        .query(&[
            ("match[]", "rwtest_value{job=\"rwtest\"}"),
            ("start", &format!("{:.3}", (from + 1) as f64 / 1000.0)),
            ("end", &format!("{:.3}", to as f64 / 1000.0)),
        ])
        .timeout(Duration::from_secs(10))
        .send()?;
    ensure!(r.status().is_success(), "VictoriaMetrics export: HTTP {}", r.status());
    let mut out = Raw::new();
    for line in r.text()?.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("export line {line}"))?;
        let inst = v["metric"]["instance"].as_str().unwrap_or("").to_string();
        let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
        let vals = v["values"].as_array().cloned().unwrap_or_default();
        let mut list: Vec<(i64, u64)> = ts
            .iter()
            .zip(vals.iter())
            .map(|(t, x)| (t.as_i64().unwrap_or(0), x.as_f64().unwrap_or(f64::NAN).to_bits()))
            .collect();
        list.sort();
        out.entry(inst).or_default().extend(list);
    }
    Ok(out)
}

fn total(r: &Raw) -> usize {
    r.values().map(Vec::len).sum()
}

fn start_prometheus(dir: &Path, prom: &Path, port: u16) -> anyhow::Result<Proc> {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n")?;
    let args: Vec<String> = vec![
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--web.enable-remote-write-receiver".into(),
        "--storage.tsdb.retention.time=1d".into(),
    ];
    let p = Proc::start(dir, "prometheus", prom, &args)?;
    wait_for("prometheus /-/ready", Duration::from_secs(30), || {
        get_text(&format!("http://127.0.0.1:{port}/-/ready"))
            .ok()
            .filter(|(c, _)| *c == 200)
    })?;
    Ok(p)
}

fn start_vm(dir: &Path, vm: &Path, port: u16) -> anyhow::Result<Proc> {
    let args: Vec<String> = vec![
        format!("-httpListenAddr=127.0.0.1:{port}"),
        format!("-storageDataPath={}", dir.join("vm-data").display()),
        "-search.latencyOffset=0s".into(),
        "-search.disableCache".into(),
        "-retentionPeriod=1".into(),
    ];
    let p = Proc::start(dir, "victoria-metrics", vm, &args)?;
    wait_for("victoria-metrics /health", Duration::from_secs(30), || {
        get_text(&format!("http://127.0.0.1:{port}/health")).ok().filter(|(c, _)| *c == 200)
    })?;
    Ok(p)
}

/// Waits until the collector has sent at least `sent` samples to `remote`
/// (since it started) and has nothing pending for it.
fn wait_drained(c: &Collector, remote: &str, sent: usize, timeout: Duration) -> anyhow::Result<()> {
    wait_for(&format!("remote write to {remote} to catch up"), timeout, || {
        let pending = metric(&c.http, "csoc_collector_remote_storage_samples_pending", remote);
        let total = metric(&c.http, "csoc_collector_remote_storage_samples_total", remote);
        (pending == 0.0 && total >= sent as f64).then_some(())
    })
}

#[test]
fn remote_write_into_real_prometheus_and_victoriametrics_loses_nothing_across_an_outage_and_a_restart() -> anyhow::Result<()> {
    let (Some(prom), Some(vm)) = (program("prometheus"), program("victoria-metrics")) else {
        return Ok(());
    };
    let outage = Duration::from_secs(std::env::var("CSOC_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let dir = tempfile::tempdir()?;
    let (prom_port, vm_port) = (free_port(), free_port());
    let _prom = start_prometheus(dir.path(), &prom, prom_port)?;
    let mut vmp = start_vm(dir.path(), &vm, vm_port)?;
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    let vm_url = format!("http://127.0.0.1:{vm_port}");
    let (prom_name, vm_name) = (format!("127.0.0.1:{prom_port}"), format!("127.0.0.1:{vm_port}"));
    let (http_port, grpc_port) = (free_port(), free_port());
    let prom_write = format!("{prom_url}/api/v1/write");
    let vm_write = format!("{vm_url}/api/v1/write");
    let flags = [
        "--agent-token",
        &format!("rw={TOKEN}"),
        "--self-scrape-interval",
        "2s",
        "--remote-write",
        &prom_write,
        "--remote-write",
        &vm_write,
    ];
    let mut c = Collector::start_on(dir.path(), http_port, grpc_port, &flags)?;

    // Ten minutes of history, pushed in one request; then catch-up.
    let start = (now_ms() / 1000 - 600) * 1000;
    let history: Vec<i64> = (0..120).map(|i| start + i * 5000).collect();
    remote_write(&c.http, TOKEN, &samples_at(&history))?;
    wait_drained(&c, &prom_name, history.len() * SERIES, Duration::from_secs(30))?;
    wait_drained(&c, &vm_name, history.len() * SERIES, Duration::from_secs(30))?;

    // VictoriaMetrics goes away; samples keep arriving, one a second.
    vmp.terminate()?;
    let outage_from = now_ms();
    let mut pushed = history.len();
    let mut restarted = false;
    while now_ms() - outage_from < outage.as_millis() as i64 {
        remote_write(&c.http, TOKEN, &samples_at(&[now_ms()]))?;
        pushed += 1;
        // Halfway, the collector itself restarts (SIGTERM): the queue resumes
        // from its saved position.
        if !restarted && now_ms() - outage_from >= outage.as_millis() as i64 / 2 {
            ensure!(
                metric(&c.http, "csoc_collector_remote_storage_samples_retried_total", &vm_name) > 0.0,
                "sends to the stopped receiver are retried"
            );
            ensure!(metric(&c.http, "csoc_collector_remote_storage_samples_pending", &vm_name) > 0.0);
            c.proc.terminate()?;
            c = Collector::start_on(dir.path(), http_port, grpc_port, &flags)?;
            ensure!(c.proc.log_text().contains("remote write: resuming"), "{}", c.proc.log_text());
            restarted = true;
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    let pending = metric(&c.http, "csoc_collector_remote_storage_samples_pending", &vm_name);
    ensure!(pending >= SERIES as f64, "samples wait for the receiver: pending {pending}");
    let _vm2 = start_vm(dir.path(), &vm, vm_port)?;
    // Everything pushed since the restart, at least, goes to VictoriaMetrics now.
    wait_drained(&c, &vm_name, SERIES, Duration::from_secs(60))?;
    wait_drained(&c, &prom_name, SERIES, Duration::from_secs(30))?;

    let (from, to) = (start - 1, now_ms() + 1000);
    let ours = raw_promql(&c.http, from, to)?;
    ensure!(
        ours.len() == SERIES && total(&ours) == pushed * SERIES,
        "we hold {} of {}",
        total(&ours),
        pushed * SERIES
    );
    let theirs_prom = wait_for("Prometheus to hold every sample", Duration::from_secs(20), || {
        raw_promql(&prom_url, from, to).ok().filter(|r| total(r) >= total(&ours))
    })?;
    assert_eq!(theirs_prom, ours, "Prometheus holds exactly our samples");
    let theirs_vm = wait_for("VictoriaMetrics to hold every sample", Duration::from_secs(30), || {
        raw_vm_export(&vm_url, from, to).ok().filter(|r| total(r) >= total(&ours))
    })?;
    assert_eq!(
        theirs_vm, ours,
        "VictoriaMetrics holds exactly our samples (none lost in the outage)"
    );

    // PromQL over what they hold agrees with ours at a sample time.
    let at = format!("{:.3}", history[60] as f64 / 1000.0);
    for q in [
        "sum(rwtest_value)",
        "count(rwtest_value)",
        "max by (instance) (rwtest_value) - 1000",
    ] {
        let get = |base: &str| -> anyhow::Result<Vec<(String, String)>> {
            let v = api(base, "/api/v1/query", &[("query", q), ("time", &at)])?;
            let mut r: Vec<(String, String)> = v["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    (
                        s["metric"]["instance"].as_str().unwrap_or("").to_string(),
                        s["value"][1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            r.sort();
            Ok(r)
        };
        let o = get(&c.http)?;
        ensure!(!o.is_empty(), "{q}: no result");
        assert_eq!(get(&prom_url)?, o, "{q} in Prometheus");
        assert_eq!(get(&vm_url)?, o, "{q} in VictoriaMetrics");
    }
    // The other series went too: the collector's own metrics, in both.
    let up = api(&vm_url, "/api/v1/query", &[("query", "count(csoc_collector_tsdb_series)")])?;
    ensure!(
        up["data"]["result"].as_array().is_some_and(|a| !a.is_empty()),
        "self-monitoring series in VictoriaMetrics: {up}"
    );
    for r in [&prom_name, &vm_name] {
        assert_eq!(
            metric(&c.http, "csoc_collector_remote_storage_samples_failed_total", r),
            0.0,
            "{r}: nothing refused"
        );
        assert_eq!(
            metric(&c.http, "csoc_collector_remote_storage_samples_dropped_total", r),
            0.0,
            "{r}: nothing dropped"
        );
    }
    Ok(())
}

/// A collector with `cfg`, the test's agent token, and no self-scrape (so
/// only the test's samples are sent).
fn start_with_config(dir: &Path, cfg: &Path) -> anyhow::Result<Collector> {
    let cfg_s = cfg.display().to_string();
    let token = format!("rw={TOKEN}");
    Collector::start(dir, &["--config", &cfg_s, "--agent-token", &token, "--self-scrape-interval", "0s"])
}

/// What the recording receiver saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
    req: WriteRequest,
}

/// The answers to give next: (status, Retry-After seconds).
type Script = Arc<Mutex<Vec<(u16, Option<u64>)>>>;

/// A remote-write receiver on 127.0.0.1 that records requests and answers
/// from a script (status, Retry-After) before falling back to 204.
struct RecordingReceiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RecordingReceiver {
    fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sx, sc, st) = (seen.clone(), script.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (sx, sc) = (sx.clone(), sc.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let Ok(clone) = stream.try_clone() else { return };
                    let mut reader = BufReader::new(clone);
                    let mut w = stream;
                    // Keep-alive: several requests per connection.
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let mut headers = BTreeMap::new();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                        let mut body = vec![0u8; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let req = snap::raw::Decoder::new()
                            .decompress_vec(&body)
                            .ok()
                            .and_then(|raw| WriteRequest::decode(raw.as_slice()).ok())
                            .unwrap_or_default();
                        let (code, retry_after) = {
                            let mut s = sc.lock().unwrap_or_else(|p| p.into_inner());
                            if s.is_empty() { (204, None) } else { s.remove(0) }
                        };
                        if let Ok(mut v) = sx.lock() {
                            v.push(Seen { path, headers, req });
                        }
                        let reason = match code {
                            204 => "No Content",
                            400 => "Bad Request",
                            429 => "Too Many Requests",
                            _ => "Internal Server Error",
                        };
                        let extra = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
                        let body = if code == 204 { "" } else { "scripted failure" };
                        let _ = write!(w, "HTTP/1.1 {code} {reason}\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len());
                    }
                });
            }
        });
        Ok(RecordingReceiver { url, seen, script, stop })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for RecordingReceiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn has_series(s: &Seen, instance: &str) -> bool {
    s.req
        .timeseries
        .iter()
        .any(|t| t.labels.iter().any(|l| l.name == "instance" && l.value == instance))
}

#[test]
fn remote_write_sends_tenant_headers_and_credentials_retries_5xx_and_429_and_counts_refused_4xx() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mimir = RecordingReceiver::start()?;
    let thanos = RecordingReceiver::start()?;
    std::fs::write(dir.path().join("mimir-password"), "s3cret-pass\n")?;
    std::fs::write(dir.path().join("thanos-token"), "thanos-bearer-token\n")?;
    let config = format!(
        r#"
external_labels: {{csoc: east}}
remote_write:
  - url: {mimir}/api/v1/push
    name: mimir
    shards: 1
    headers: {{X-Scope-OrgID: csoc-tenant}}
    basic_auth: {{username: csoc, password_file: {dir}/mimir-password}}
    min_backoff: 50ms
    max_backoff: 200ms
    write_relabel_configs:
      - source_labels: [instance]
        regex: i7
        action: drop
  - url: {thanos}/api/v1/receive
    name: thanos
    bearer_token_file: {dir}/thanos-token
    send_out_of_order_samples: true
    min_backoff: 50ms
    max_backoff: 200ms
"#,
        mimir = mimir.url,
        thanos = thanos.url,
        dir = dir.path().display()
    );
    let cfg = dir.path().join("collector.yml");
    std::fs::write(&cfg, config)?;
    let c = start_with_config(dir.path(), &cfg)?;
    for secret in ["s3cret-pass", "thanos-bearer-token"] {
        ensure!(!c.proc.log_text().contains(secret), "a secret in the log");
    }

    // 1. Plain delivery: tenant header, auth, external label, relabel drop.
    let t0 = now_ms();
    remote_write(&c.http, TOKEN, &samples_at(&[t0]))?;
    let got = wait_for("both receivers get the batch", Duration::from_secs(20), || {
        let (m, t) = (mimir.seen(), thanos.seen());
        (m.iter().any(|s| has_series(s, "i0")) && t.iter().any(|s| has_series(s, "i0"))).then_some((m, t))
    })?;
    let m = got.0.iter().find(|s| has_series(s, "i0")).context("mimir request")?;
    assert_eq!(m.path, "/api/v1/push");
    assert_eq!(m.headers.get("x-scope-orgid").map(String::as_str), Some("csoc-tenant"));
    // "csoc:s3cret-pass" in base64.
    assert_eq!(
        m.headers.get("authorization").map(String::as_str),
        Some("Basic Y3NvYzpzM2NyZXQtcGFzcw==")
    );
    assert_eq!(m.headers.get("content-encoding").map(String::as_str), Some("snappy"));
    assert_eq!(m.headers.get("content-type").map(String::as_str), Some("application/x-protobuf"));
    assert_eq!(
        m.headers.get("x-prometheus-remote-write-version").map(String::as_str),
        Some("0.1.0")
    );
    let ts = m
        .req
        .timeseries
        .iter()
        .find(|t| t.labels.iter().any(|l| l.value == "i0"))
        .context("series i0")?;
    let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "labels sorted by name");
    assert!(
        ts.labels.iter().any(|l| l.name == "csoc" && l.value == "east"),
        "external label added: {ts:?}"
    );
    assert!(ts.labels.iter().any(|l| l.name == "commons" && l.value == "rw"), "{ts:?}");
    assert_eq!(ts.samples.len(), 1);
    assert_eq!(ts.samples[0].timestamp, t0);
    assert_eq!(ts.samples[0].value.to_bits(), value_of(0, t0).to_bits());
    ensure!(
        !got.0.iter().any(|s| has_series(s, "i7")),
        "write_relabel_configs dropped i7 for mimir"
    );
    ensure!(got.1.iter().any(|s| has_series(s, "i7")), "but not for thanos");
    let th = got.1.iter().find(|s| has_series(s, "i0")).context("thanos request")?;
    assert_eq!(th.path, "/api/v1/receive");
    assert_eq!(
        th.headers.get("authorization").map(String::as_str),
        Some("Bearer thanos-bearer-token")
    );
    ensure!(!th.headers.contains_key("x-scope-orgid"));

    // 1b. A late sample (older than one sent for its series): not sent where
    // out-of-order samples are off (a receiver without an out-of-order
    // window would refuse the whole request), sent where they are on.
    let late = t0 - 5000;
    let (mb, tb) = (mimir.seen().len(), thanos.seen().len());
    remote_write(&c.http, TOKEN, &samples_at(&[late]))?;
    let has_late = |s: &Seen| s.req.timeseries.iter().any(|t| t.samples.iter().any(|x| x.timestamp == late));
    wait_for("the late sample at thanos", Duration::from_secs(20), || {
        thanos.seen()[tb..].iter().any(has_late).then_some(())
    })?;
    wait_for("the late samples counted for mimir", Duration::from_secs(20), || {
        (metric(&c.http, "csoc_collector_remote_storage_samples_dropped_total", "mimir") >= (SERIES - 1) as f64).then_some(())
    })?;
    ensure!(!mimir.seen()[mb..].iter().any(has_late), "mimir got no late sample");
    ensure!(
        c.proc.log_text().lines().all(|l| !l.contains("refused a request")),
        "nothing refused so far"
    );

    // 2. 500, then 429 with Retry-After: 1, then success: retried, delivered once.
    *mimir.script.lock().unwrap_or_else(|p| p.into_inner()) = vec![(500, None), (429, Some(1))];
    let before = mimir.seen().len();
    let t1 = t0 + 1000;
    let asked = Instant::now();
    remote_write(&c.http, TOKEN, &samples_at(&[t1]))?;
    wait_for("the retried batch to arrive", Duration::from_secs(20), || {
        let s = mimir.seen();
        (s[before..].iter().filter(|x| has_series(x, "i0")).count() >= 3).then_some(())
    })?;
    ensure!(asked.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    let retried = metric(&c.http, "csoc_collector_remote_storage_samples_retried_total", "mimir");
    ensure!(retried >= 2.0 * (SERIES - 1) as f64, "retried samples counted: {retried}");

    // 3. 400: not retried, counted as failed, the queue moves on.
    *mimir.script.lock().unwrap_or_else(|p| p.into_inner()) = vec![(400, None)];
    let before = mimir.seen().len();
    let t2 = t1 + 1000;
    remote_write(&c.http, TOKEN, &samples_at(&[t2]))?;
    wait_for("the refused batch counted", Duration::from_secs(20), || {
        (metric(&c.http, "csoc_collector_remote_storage_samples_failed_total", "mimir") >= (SERIES - 1) as f64).then_some(())
    })?;
    let t3 = t2 + 1000;
    remote_write(&c.http, TOKEN, &samples_at(&[t3]))?;
    wait_for("the next batch delivered", Duration::from_secs(20), || {
        mimir.seen()[before..]
            .iter()
            .any(|s| s.req.timeseries.iter().any(|t| t.samples.iter().any(|x| x.timestamp == t3)))
            .then_some(())
    })?;
    let t2_sends = mimir.seen()[before..]
        .iter()
        .filter(|s| s.req.timeseries.iter().any(|t| t.samples.iter().any(|x| x.timestamp == t2)))
        .count();
    assert_eq!(t2_sends, 1, "a 400 is not retried");
    assert_eq!(metric(&c.http, "csoc_collector_remote_storage_samples_failed_total", "thanos"), 0.0);
    Ok(())
}

/// A certificate (self-signed, or issued by `ca`) and its key as PEM files
/// in `dir`: (cert, key) paths.
fn issue(dir: &Path, name: &str, server: bool, ca: Option<&(rcgen::Certificate, rcgen::KeyPair)>) -> anyhow::Result<(String, String)> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, name);
    if server {
        p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = match ca {
        Some((c, k)) => p.signed_by(&key, c, k)?,
        None => p.self_signed(&key)?,
    };
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem())?;
    std::fs::write(&k, key.serialize_pem())?;
    Ok((c.display().to_string(), k.display().to_string()))
}

#[test]
fn remote_write_into_a_real_prometheus_over_mutual_tls_with_basic_auth_and_a_refused_password() -> anyhow::Result<()> {
    let Some(prom) = program("prometheus") else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_p.distinguished_name.push(rcgen::DnType::CommonName, "remote-write test CA");
    let ca_cert = ca_p.self_signed(&ca_key)?;
    let ca_file = d.join("ca.crt");
    std::fs::write(&ca_file, ca_cert.pem())?;
    let ca = (ca_cert, ca_key);
    let (srv_crt, srv_key) = issue(d, "prometheus", true, Some(&ca))?;
    let (cli_crt, cli_key) = issue(d, "collector-client", false, Some(&ca))?;
    // Prometheus's web config: TLS with required client certificates and a
    // basic-auth user. The bcrypt hash is of "rw-basic-pass", made with
    // python3 -c "import crypt; print(crypt.crypt('rw-basic-pass', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))".
    let web = d.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {srv_crt}\n  key_file: {srv_key}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n\
             basic_auth_users:\n  csoc: $2b$04$Toto1m7wh77f1fxdPLb8sOaP3Xcmh5s3C7nw.3Z9kdONSY8S.5dcG\n",
            ca_file.display()
        ),
    )?;
    std::fs::write(d.join("prometheus.yml"), "global:\n  scrape_interval: 1m\n")?;
    std::fs::write(d.join("good-pass"), "rw-basic-pass\n")?;
    let port = free_port();
    let args: Vec<String> = vec![
        format!("--config.file={}", d.join("prometheus.yml").display()),
        format!("--storage.tsdb.path={}", d.join("prometheus-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!("--web.config.file={}", web.display()),
        "--web.enable-remote-write-receiver".into(),
    ];
    let _p = Proc::start(d, "prometheus", &prom, &args)?;
    let mut pem = std::fs::read(&cli_crt)?;
    pem.extend(std::fs::read(&cli_key)?);
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca_file)?)?)
        .identity(reqwest::Identity::from_pem(&pem)?)
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = format!("https://127.0.0.1:{port}");
    wait_for("prometheus over TLS", Duration::from_secs(30), || {
        client
            .get(format!("{base}/-/ready"))
            .basic_auth("csoc", Some("rw-basic-pass"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    })?;

    let config = format!(
        r#"
remote_write:
  - url: {base}/api/v1/write
    name: prom-tls
    basic_auth: {{username: csoc, password_file: {good}}}
    tls: {{ca_file: {ca}, cert_file: {cli_crt}, key_file: {cli_key}}}
  - url: {base}/api/v1/write
    name: prom-wrong-password
    basic_auth: {{username: csoc, password: not-the-password}}
    tls: {{ca_file: {ca}, cert_file: {cli_crt}, key_file: {cli_key}}}
  - url: {base}/api/v1/write
    name: prom-no-client-cert
    basic_auth: {{username: csoc, password_file: {good}}}
    tls: {{ca_file: {ca}}}
    min_backoff: 100ms
    max_backoff: 200ms
"#,
        good = d.join("good-pass").display(),
        ca = ca_file.display(),
    );
    let cfg = d.join("collector.yml");
    std::fs::write(&cfg, config)?;
    let c = start_with_config(d, &cfg)?;
    let t = now_ms();
    remote_write(&c.http, TOKEN, &samples_at(&[t]))?;
    let v = wait_for("the sample in Prometheus over mutual TLS", Duration::from_secs(20), || {
        let r = client
            .get(format!("{base}/api/v1/query"))
            .basic_auth("csoc", Some("rw-basic-pass"))
            .query(&[
                ("query", "rwtest_value{instance=\"i3\"}"),
                ("time", &format!("{:.3}", t as f64 / 1000.0)),
            ])
            .send()
            .ok()?;
        let v: Value = r.json().ok()?;
        v["data"]["result"].as_array().filter(|a| !a.is_empty()).map(|a| a[0].clone())
    })?;
    assert_eq!(v["metric"]["commons"], "rw");
    assert_eq!(v["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()), Some(value_of(3, t)));
    // A wrong password is a 401 from the real receiver: not retried, counted.
    wait_for("the refused samples counted", Duration::from_secs(20), || {
        (metric(&c.http, "csoc_collector_remote_storage_samples_failed_total", "prom-wrong-password") >= SERIES as f64).then_some(())
    })?;
    assert_eq!(
        metric(
            &c.http,
            "csoc_collector_remote_storage_samples_retried_total",
            "prom-wrong-password"
        ),
        0.0
    );
    // No client certificate: the handshake fails, which may heal (retried, kept).
    wait_for("the failed handshakes retried", Duration::from_secs(20), || {
        (metric(
            &c.http,
            "csoc_collector_remote_storage_samples_retried_total",
            "prom-no-client-cert",
        ) >= SERIES as f64)
            .then_some(())
    })?;
    // The gauges are refreshed every 2 s, also while a batch is retried.
    wait_for("the unsent samples pending", Duration::from_secs(10), || {
        (metric(&c.http, "csoc_collector_remote_storage_samples_pending", "prom-no-client-cert") == SERIES as f64).then_some(())
    })?;
    assert_eq!(
        metric(&c.http, "csoc_collector_remote_storage_samples_total", "prom-tls"),
        SERIES as f64
    );
    ensure!(!c.proc.log_text().contains("rw-basic-pass") && !c.proc.log_text().contains("not-the-password"));
    Ok(())
}
