//! Agent → gRPC → collector → SQLite → query API, with real processes.

use std::time::Duration;

use csoc_tests::*;

const TOKEN: &str = "alpha-token-0123456789abcdef";

fn label<'a>(sample: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    sample["metric"][name].as_str()
}

fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn agent_process_ships_true_host_values_under_its_tokens_commons() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Collector::start(
        dir.path(),
        &["--agent-token", &format!("alpha={TOKEN}"), "--self-scrape-interval", "1s"],
    )?;
    // The agent claims to be "beta"; its token says "alpha", and the token wins.
    let (mut agent, agent_metrics) = start_agent(
        dir.path(),
        "agent",
        &c.grpc,
        &["--token", TOKEN, "--commons-name", "beta", "--interval", "1s"],
    )?;

    let result = wait_for("node_memory_MemTotal_bytes at the collector", Duration::from_secs(30), || {
        c.query("node_memory_MemTotal_bytes").ok().filter(|r| !r.is_empty())
    })?;
    assert_eq!(result.len(), 1, "{result:?}");
    let s = &result[0];
    assert_eq!(value(s), mem_total_bytes(), "MemTotal × 1024 from /proc/meminfo");
    assert_eq!(label(s, "commons"), Some("alpha"));
    assert_eq!(label(s, "job"), Some("node"));
    assert!(label(s, "instance").is_some_and(|i| !i.is_empty()));
    assert!(
        c.query(r#"{commons="beta"}"#)?.is_empty(),
        "nothing stored under the claimed commons"
    );

    // Other families of the host source arrive with node_exporter's labels.
    let cpu = c.query(r#"node_cpu_seconds_total{mode="idle"}"#)?;
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(|b| b.is_ascii_digit()))
        .count();
    assert_eq!(cpu.len(), cpus, "one idle series per CPU of /proc/stat: {cpu:?}");
    assert!(cpu.iter().all(|s| label(s, "cpu").is_some()));
    let root = c.query(r#"node_filesystem_size_bytes{mountpoint="/"}"#)?;
    assert!(
        root.first()
            .is_some_and(|s| value(s) > 0.0 && label(s, "fstype").is_some() && label(s, "device").is_some()),
        "{root:?}"
    );
    for name in [
        "node_load1",
        "node_boot_time_seconds",
        "node_time_seconds",
        "node_memory_MemAvailable_bytes",
    ] {
        assert_eq!(c.query(name)?.len(), 1, "{name}");
    }

    // The agent's own metrics count what the collector acknowledged.
    let m = wait_for("acked batches in agent /metrics", Duration::from_secs(10), || {
        get_text(&agent_metrics)
            .ok()
            .map(|(_, b)| b)
            .filter(|b| metric_value(b, "csoc_agent_batches_acked_total").is_some_and(|v| v >= 1.0))
    })?;
    assert_eq!(metric_value(&m, "csoc_agent_connected"), Some(1.0));
    let (_, cm) = get_text(&format!("{}/metrics", c.http))?;
    assert!(
        cm.contains(r#"csoc_collector_agent_last_seen_timestamp_seconds{commons="alpha""#),
        "{cm}"
    );
    // ... and it is stored (the collector's self-scrape), so a rule can
    // page when the agent falls silent.
    let silent_for = wait_for("the agent's last contact in storage", Duration::from_secs(15), || {
        c.query(r#"time() - csoc_collector_agent_last_seen_timestamp_seconds{commons="alpha",job="csoc-collector"}"#)
            .ok()
            .filter(|r| r.len() == 1)
    })?;
    assert!(value(&silent_for[0]) < 30.0, "{silent_for:?}");

    // Graceful stop: exit 0, spool flushed.
    let st = agent.terminate()?;
    assert!(st.success(), "agent exit status {st}");
    let log = agent.log_text();
    assert!(log.contains("csoc-agent stopped"), "{log}");
    assert!(!log.contains("batches remain in the spool"), "flushed at shutdown: {log}");
    Ok(())
}

#[test]
fn wrong_or_missing_token_is_refused_with_backoff_and_nothing_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN}")])?;
    let (mut wrong, wrong_metrics) = start_agent(
        dir.path(),
        "wrong",
        &c.grpc,
        &["--token", "not-the-right-token-at-all", "--interval", "1s"],
    )?;
    let (mut none, _) = start_agent(dir.path(), "none", &c.grpc, &["--interval", "1s"])?;
    std::thread::sleep(Duration::from_secs(8));

    // Agent side: says the collector refused its token.
    let wlog = wrong.log_text();
    assert!(wlog.contains("the collector refused our token"), "{wlog}");
    let nlog = none.log_text();
    assert!(nlog.contains("the collector refused our token"), "{nlog}");
    // Backoff, not spinning: over 8 s, at most a handful of attempts.
    let (_, m) = get_text(&wrong_metrics)?;
    let attempts = metric_value(&m, "csoc_agent_connect_attempts_total").unwrap_or(0.0);
    assert!((2.0..=6.0).contains(&attempts), "connect attempts in 8s: {attempts}\n{m}");
    assert_eq!(metric_value(&m, "csoc_agent_connected"), Some(0.0));
    // It keeps what it collected for later (nothing is thrown away).
    assert!(metric_value(&m, "csoc_agent_spool_batches").unwrap_or(0.0) >= 5.0, "{m}");

    // Collector side: names the peer, stores nothing.
    let clog = c.proc.log_text();
    assert!(
        clog.contains("refused an agent stream: token not recognised") && clog.contains("peer=127.0.0.1:"),
        "{clog}"
    );
    assert!(clog.contains("refused an agent stream: no bearer token"), "{clog}");
    // (The collector's own metrics, job "csoc-collector", are stored too.)
    let (_, series) = get_json(&format!(
        "{}/api/v1/series?match[]={}",
        c.http,
        urlencode(r#"{__name__=~".+",job!="csoc-collector"}"#)
    ))?;
    assert_eq!(series["data"], serde_json::json!([]), "nothing stored: {series}");
    let (_, cm) = get_text(&format!("{}/metrics", c.http))?;
    assert!(
        metric_value(&cm, r#"csoc_collector_ingest_refused_streams_total{reason="unknown_token"}"#).unwrap_or(0.0) >= 2.0,
        "{cm}"
    );

    assert!(wrong.terminate()?.success());
    assert!(none.terminate()?.success());
    Ok(())
}

#[test]
fn collector_crash_loses_no_sample() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (hp, gp) = (free_port(), free_port());
    let tok = format!("alpha={TOKEN}");
    let mut c = Collector::start_on(dir.path(), hp, gp, &["--agent-token", &tok])?;
    let (mut agent, agent_metrics) = start_agent(dir.path(), "agent", &c.grpc, &["--token", TOKEN, "--interval", "500ms"])?;
    wait_for("first data", Duration::from_secs(30), || {
        c.query("node_time_seconds").ok().filter(|r| !r.is_empty())
    })?;

    // Kill the collector hard; the agent keeps collecting into its spool.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    c.proc.kill9();
    let killed_at = now();
    std::thread::sleep(Duration::from_secs(4));
    let restarted_at = now();
    let c = Collector::start_on(dir.path(), hp, gp, &["--agent-token", &tok])?;
    // The agent reconnects (after its backoff) and drains its spool.
    wait_for("the agent to reconnect and drain its spool", Duration::from_secs(60), || {
        let reconnected = agent.log_text().matches("connected to the collector").count() >= 2;
        let (_, m) = get_text(&agent_metrics).ok()?;
        (reconnected && metric_value(&m, "csoc_agent_spool_batches") == Some(0.0)).then_some(())
    })?;
    assert!(agent.terminate()?.success());

    // node_time_seconds has one sample per collection, whose value is its own
    // timestamp: every interval is present exactly once, outage included.
    let r = c.query("node_time_seconds[10m]")?;
    assert_eq!(r.len(), 1, "{r:?}");
    let values: Vec<f64> = r[0]["values"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p[1].as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    // Collected while the collector was down, spooled, delivered later.
    let during = values.iter().filter(|v| **v > killed_at && **v < restarted_at).count();
    assert!(
        during >= 6,
        "expected ≥6 samples from the 4s outage at 500ms, got {during}: {values:?}"
    );
    for w in values.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap > 0.2 && gap < 1.2, "gap of {gap}s between consecutive samples: {values:?}");
    }
    let alog = agent.log_text();
    assert!(alog.matches("connected to the collector").count() >= 2, "{alog}");
    Ok(())
}

#[test]
fn check_config_reports_the_reason_and_exits_non_zero() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "http_listen: 127.0.0.1:9300\nagent_tokens:\n  - commons: alpha\n    token: short\n",
    )?;
    let out = std::process::Command::new(bin("csoc-collector"))
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent_tokens[0]") && err.contains("shorter than 16"), "{err}");

    std::fs::write(&bad, "interval: often\n")?;
    let out = std::process::Command::new(bin("csoc-agent"))
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml") && err.contains("invalid duration"), "{err}");

    let out = std::process::Command::new(bin("csoc-agent"))
        .args(["--check-config", "--interval", "30s"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

#[test]
fn query_api_errors_have_prometheus_shapes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Collector::start(dir.path(), &[])?;
    let (code, v) = get_json(&format!("{}/api/v1/query?query={}", c.http, urlencode("up{")))?;
    assert_eq!(code, 400);
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    let (code, v) = get_json(&format!("{}/api/v1/query", c.http))?;
    assert_eq!((code, v["errorType"].as_str()), (400, Some("bad_data")));
    let (code, v) = get_json(&format!("{}/api/v1/query?query=1&time=yesterday", c.http))?;
    assert_eq!(code, 400, "{v}");
    let (code, v) = get_json(&format!("{}/api/v1/query?query=42&time=1700000000", c.http))?;
    assert_eq!(code, 200);
    assert_eq!(
        v["data"],
        serde_json::json!({"resultType": "scalar", "result": [1700000000, "42"]}),
        "whole seconds are written as integers, as Prometheus does"
    );
    // POST form, as Grafana sends it.
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/query", c.http))
        .form(&[("query", "7"), ("time", "2023-11-14T22:13:20Z")])
        .send()?;
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json()?;
    assert_eq!(v["data"]["result"], serde_json::json!([1700000000, "7"]));
    Ok(())
}

#[test]
fn closed_log_pipe_neither_crashes_nor_blocks_shutdown() -> anyhow::Result<()> {
    // A log reader that goes away (a pipe to a pager, a restarted log
    // shipper) must not take the collector down.
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut child = std::process::Command::new(bin("csoc-collector"))
        .args(["--local-agent", "--local-agent-interval", "200ms", "--http-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--grpc-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    drop(child.stderr.take()); // close the read end: every log write now fails
    let ready = wait_for("/-/ready with a closed log pipe", Duration::from_secs(20), || {
        get_text(&format!("http://127.0.0.1:{port}/-/ready"))
            .ok()
            .filter(|(c, _)| *c == 200)
    });
    std::thread::sleep(Duration::from_secs(1));
    let alive = child.try_wait()?.is_none();
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ready?;
    assert!(alive, "the collector died when its log pipe closed");
    assert!(status.is_some_and(|s| s.success()), "SIGTERM with a closed log pipe: {status:?}");
    Ok(())
}
