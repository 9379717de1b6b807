//! Operating the collector like a Prometheus: snapshots
//! (`POST /api/v1/admin/tsdb/snapshot`) taken under ingest and restored into
//! a new data directory, the `process_*` and `*_build_info` self-metrics of
//! both binaries (checked by `promtool check metrics` when it is installed),
//! and the endpoints operators and Grafana reach for: `/api/v1/targets`
//! (agents' scrape targets and Gen3 probes, scoped per commons),
//! `/api/v1/status/buildinfo` and `/api/v1/status/walreplay`, in
//! Prometheus's shapes.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use csoc_proto::prometheus::WriteRequest;
use csoc_tests::*;
use serde_json::Value;

const TOKEN_A: &str = "selfmon-alpha-token-0123456789";
const TOKEN_B: &str = "selfmon-beta-token-0123456789";
const ADMIN: &str = "selfmon-admin-api-token-0123456789";
const READ_A: &str = "selfmon-read-alpha-token-0123456789";

fn post(url: &str, bearer: Option<&str>) -> anyhow::Result<(u16, Value)> {
    let mut r = reqwest::blocking::Client::new().post(url).timeout(Duration::from_secs(60));
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    let r = r.send()?;
    let code = r.status().as_u16();
    let body = r.text()?;
    let v = serde_json::from_str(&body).with_context(|| format!("POST {url}: not JSON: {body}"))?;
    Ok((code, v))
}

/// A GET as Grafana's Prometheus data source sends it (its User-Agent and
/// org header, JSON accepted), with an optional bearer token.
fn grafana_get(url: &str, bearer: Option<&str>) -> anyhow::Result<(u16, Value)> {
    let mut r = reqwest::blocking::Client::new()
        .get(url)
        .header("User-Agent", "Grafana/11.1.0")
        .header("X-Grafana-Org-Id", "1")
        .header("Accept", "application/json, text/plain, */*")
        .timeout(Duration::from_secs(10));
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    let r = r.send()?;
    let code = r.status().as_u16();
    let body = r.text()?;
    let v = serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))?;
    Ok((code, v))
}

fn query_range(base: &str, q: &str, start: i64, end: i64) -> anyhow::Result<Value> {
    let v = api(
        base,
        "/api/v1/query_range",
        &[
            ("query", q),
            ("start", &start.to_string()),
            ("end", &end.to_string()),
            ("step", "15"),
        ],
    )?;
    Ok(v["data"]["result"].clone())
}

fn instant(base: &str, q: &str, t: i64) -> anyhow::Result<Value> {
    let v = api(base, "/api/v1/query", &[("query", q), ("time", &t.to_string())])?;
    Ok(v["data"]["result"].clone())
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Copies a directory tree (files and subdirectories).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

/// The README's backup and restore, end to end: data both in persisted
/// chunks and only in the WAL, a snapshot while a writer keeps ingesting,
/// the snapshot directory copied as the data directory of a new collector,
/// which then answers the same queries.
#[test]
fn a_snapshot_under_ingest_restores_into_a_new_data_dir_with_the_same_answers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Collector::start(
        dir.path(),
        &[
            "--agent-token",
            &format!("alpha={TOKEN_A}"),
            "--web.enable-admin-api",
            "--self-scrape-interval",
            "1s",
        ],
    )?;
    let t0 = (now_s() - 1800) * 1000;
    let part = |from: i64, to: i64| WriteRequest {
        timeseries: ["a", "b"]
            .iter()
            .map(|k| {
                series(
                    &[("__name__", "snap_a"), ("k", k)],
                    (from..to)
                        .map(|i| (t0 + i * 15_000, (i * i) as f64 + if *k == "a" { 0.5 } else { 0.0 }))
                        .collect(),
                )
            })
            .collect(),
        ..Default::default()
    };
    // Part 1 persisted in chunks, part 2 only in the WAL (the head).
    remote_write(&c.http, TOKEN_A, &part(0, 60))?;
    let (code, v) = post(&format!("{}/api/v1/admin/tsdb/flush", c.http), None)?;
    ensure!(code == 200, "flush: {code} {v}");
    remote_write(&c.http, TOKEN_A, &part(60, 118))?;

    // A writer ingesting throughout the snapshot.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, acked, base) = (stop.clone(), acked.clone(), c.http.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut i = 0i64;
            while !stop.load(Ordering::Acquire) {
                let t = (now_s() - 60) * 1000 + i;
                let req = WriteRequest {
                    timeseries: vec![series(&[("__name__", "snap_live")], vec![(t, i as f64)])],
                    ..Default::default()
                };
                remote_write(&base, TOKEN_A, &req)?;
                acked.fetch_add(1, Ordering::AcqRel);
                i += 1;
            }
            Ok(())
        })
    };
    wait_for("the writer's first batches", Duration::from_secs(20), || {
        (acked.load(Ordering::Acquire) >= 20).then_some(())
    })?;
    let acked_before = acked.load(Ordering::Acquire);
    let (code, v) = post(&format!("{}/api/v1/admin/tsdb/snapshot", c.http), None)?;
    ensure!(code == 200 && v["status"] == "success", "snapshot: {code} {v}");
    let name = v["data"]["name"].as_str().context("data.name")?.to_string();
    ensure!(
        v["data"].as_object().map(|o| o.len()) == Some(1),
        "data holds only the name, as Prometheus's: {v}"
    );
    let acked_after_snapshot = acked.load(Ordering::Acquire);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let written = acked.load(Ordering::Acquire);
    ensure!(written > acked_after_snapshot, "ingest went on after the snapshot");

    // Prometheus's name: <UTC time>-<16 hex digits>, a directory under snapshots/.
    let (ts, rnd) = name.split_once('-').context("name has a dash")?;
    ensure!(ts.len() == 16 && ts.ends_with('Z') && rnd.len() == 16, "{name}");
    let snap = dir.path().join("data/snapshots").join(&name);
    ensure!(snap.join("csoc.db").is_file(), "{} has no csoc.db", snap.display());

    // skip_head: accepted (a smaller copy); a bad value is bad_data.
    let (code, v) = post(&format!("{}/api/v1/admin/tsdb/snapshot?skip_head=true", c.http), None)?;
    ensure!(code == 200 && v["data"]["name"].is_string(), "skip_head: {code} {v}");
    let (code, v) = post(&format!("{}/api/v1/admin/tsdb/snapshot?skip_head=maybe", c.http), None)?;
    ensure!(code == 400 && v["errorType"] == "bad_data", "{code} {v}");

    // Restore: the snapshot directory becomes a new collector's data dir.
    let restored = dir.path().join("restored");
    copy_dir(&snap, &restored.join("data"))?;
    let r = Collector::start(&restored, &["--self-scrape-interval", "0"])?;
    let (start, end) = (t0 / 1000, t0 / 1000 + 118 * 15);
    for q in ["snap_a", "sum by (k) (rate(snap_a[2m]))", "count_over_time(snap_a[1h])"] {
        let want = query_range(&c.http, q, start, end)?;
        let got = query_range(&r.http, q, start, end)?;
        ensure!(want.as_array().is_some_and(|a| a.len() == 2), "{q}: {want}");
        ensure!(got == want, "{q} differs after restore:\n got  {got}\n want {want}");
    }
    let want = instant(&c.http, "count_over_time(snap_a[1h])", end)?;
    ensure!(
        want[0]["value"][1] == "118",
        "every sample, chunks and WAL, before the restore too: {want}"
    );
    // The live series: everything acknowledged before the snapshot began,
    // nothing beyond what was written.
    let got = instant(&r.http, "count_over_time(snap_live[10m])", now_s())?;
    let n: usize = got[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .context("snap_live count")?;
    ensure!(
        n >= acked_before && n <= written,
        "restored {n} live samples; acked before the snapshot {acked_before}, written {written}"
    );
    Ok(())
}

/// `process_*` and `*_build_info` on both binaries' /metrics, the build in
/// `/api/v1/status/buildinfo`, and `promtool check metrics` clean on both.
#[test]
fn process_and_build_metrics_on_both_binaries_pass_promtool() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN_A}")])?;
    let (_agent, agent_metrics) = start_agent(
        dir.path(),
        "agent",
        &c.grpc,
        &["--token", TOKEN_A, "--interval", "1s", "--spool-max-bytes", "1MiB"],
    )?;
    let agent_text = wait_for("the agent connected", Duration::from_secs(20), || {
        get_text(&agent_metrics)
            .ok()
            .map(|(_, b)| b)
            .filter(|b| metric_value(b, "csoc_agent_connected") == Some(1.0))
    })?;
    let (code, collector_text) = get_text(&format!("{}/metrics", c.http))?;
    ensure!(code == 200, "collector /metrics: {code}");
    // The build script takes git's HEAD unless CSOC_BUILD_REVISION overrides it.
    let git_head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|_| std::env::var_os("CSOC_BUILD_REVISION").is_none_or(|v| v.is_empty()));
    for (bin, text) in [("collector", &collector_text), ("agent", &agent_text)] {
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            ensure!(metric_value(text, name).is_some(), "{bin}: no {name}");
        }
        let fds = metric_value(text, "process_open_fds").unwrap_or(0.0);
        let max = metric_value(text, "process_max_fds").unwrap_or(0.0);
        ensure!(fds >= 3.0 && fds <= max, "{bin}: open fds {fds}, max {max}");
        let rss = metric_value(text, "process_resident_memory_bytes").unwrap_or(0.0);
        ensure!(rss > 1e6 && rss < 4e9, "{bin}: rss {rss}");
        let start = metric_value(text, "process_start_time_seconds").unwrap_or(0.0);
        ensure!((start - now_s() as f64).abs() < 600.0, "{bin}: start time {start}");
        let info = text
            .lines()
            .find(|l| l.starts_with(&format!("csoc_{bin}_build_info{{")))
            .with_context(|| format!("no csoc_{bin}_build_info"))?;
        for label in ["version=\"0.", "revision=\"", "branch=\"", "rustc_version=\"1."] {
            ensure!(info.contains(label), "{bin}: {info} lacks {label}");
        }
        if let Some(head) = &git_head {
            ensure!(info.contains(&format!("revision=\"{head}\"")), "{bin}: {info}, HEAD {head}");
        }
    }
    ensure!(
        metric_value(&agent_text, "csoc_agent_spool_max_size_bytes") == Some(1048576.0),
        "the spool's limit is exported"
    );
    ensure!(metric_value(&collector_text, "csoc_collector_tsdb_wal_commit_failures_total") == Some(0.0));
    // Updated with the storage size, every 5 s.
    wait_for("the data directory's free space", Duration::from_secs(20), || {
        let (_, t) = get_text(&format!("{}/metrics", c.http)).ok()?;
        let avail = metric_value(&t, "csoc_collector_tsdb_filesystem_avail_bytes")?;
        let size = metric_value(&t, "csoc_collector_tsdb_filesystem_size_bytes")?;
        (avail > 0.0 && avail <= size).then_some(())
    })?;

    let (code, b) = grafana_get(&format!("{}/api/v1/status/buildinfo", c.http), None)?;
    ensure!(code == 200 && b["status"] == "success", "{code} {b}");
    for k in ["version", "revision", "branch", "buildUser", "buildDate", "goVersion"] {
        ensure!(b["data"][k].is_string(), "buildinfo.{k}: {b}");
    }
    ensure!(b["data"]["goVersion"].as_str().is_some_and(|v| v.starts_with("rustc 1.")), "{b}");
    if let Some(head) = &git_head {
        ensure!(b["data"]["revision"] == head.as_str(), "{b}");
    }

    let Some(promtool) = program("promtool") else {
        return Ok(());
    };
    for (bin, text) in [("collector", &collector_text), ("agent", &agent_text)] {
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(
            out.status.success() && report.trim().is_empty(),
            "promtool check metrics on the {bin}'s /metrics: {}\n{report}",
            out.status
        );
    }
    Ok(())
}

fn target_keys_are_prometheus(t: &Value) -> anyhow::Result<()> {
    for k in ["discoveredLabels", "labels"] {
        ensure!(t[k].is_object(), "{k}: {t}");
    }
    for k in ["scrapePool", "scrapeUrl", "globalUrl", "lastError", "lastScrape", "health"] {
        ensure!(t[k].is_string(), "{k}: {t}");
    }
    ensure!(t["lastScrapeDuration"].is_number(), "{t}");
    ensure!(matches!(t["health"].as_str(), Some("up" | "down" | "unknown")), "{t}");
    let last = t["lastScrape"].as_str().unwrap_or_default();
    let when = humantime::parse_rfc3339(last).with_context(|| format!("lastScrape {last:?}"))?;
    let age = std::time::SystemTime::now().duration_since(when).unwrap_or_default();
    ensure!(age < Duration::from_secs(120), "lastScrape {last} is old");
    Ok(())
}

/// `/api/v1/targets` in Prometheus's shape from what the agents send (their
/// scrape targets, up and down, and their Gen3 probes), scoped per commons;
/// `/api/v1/status/walreplay`; the admin endpoints refused when disabled.
#[test]
fn targets_walreplay_and_buildinfo_answer_in_prometheus_shapes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = FakeGen3::start(dir.path(), "fake", &[])?;
    let c = Collector::start(
        dir.path(),
        &[
            "--agent-token",
            &format!("alpha={TOKEN_A}"),
            "--agent-token",
            &format!("beta={TOKEN_B}"),
            "--api-token",
            &format!("admin={ADMIN}:admin"),
            "--api-token",
            &format!("a={READ_A}:read:commons=alpha"),
        ],
    )?;
    let dead = format!("http://127.0.0.1:{}/metrics", free_port());
    let off = dir.path().join("host-off.yml");
    std::fs::write(&off, "sources:\n  host:\n    enabled: false\n")?;
    let off = off.display().to_string();
    let (_b, b_metrics) = start_agent(
        dir.path(),
        "agent-b",
        &c.grpc,
        &["--token", TOKEN_B, "--config", &off, "--interval", "1s", "--gen3-url", &fake.http],
    )?;
    // alpha's agent scrapes beta's agent's /metrics (up) and a dead port.
    let (_a, _) = start_agent(
        dir.path(),
        "agent-a",
        &c.grpc,
        &[
            "--token",
            TOKEN_A,
            "--config",
            &off,
            "--interval",
            "1s",
            "--scrape",
            &format!("peer={b_metrics}"),
            "--scrape",
            &format!("gone={dead}"),
        ],
    )?;
    let url = format!("{}/api/v1/targets", c.http);
    let v = wait_for("both agents' targets", Duration::from_secs(30), || {
        let (code, v) = grafana_get(&url, Some(ADMIN)).ok()?;
        let t = v["data"]["activeTargets"].as_array()?;
        let pools: BTreeSet<&str> = t.iter().filter_map(|t| t["scrapePool"].as_str()).collect();
        (code == 200 && pools.contains("peer") && pools.contains("gone") && pools.contains("gen3")).then(|| v.clone())
    })?;
    ensure!(v["status"] == "success", "{v}");
    ensure!(v["data"]["droppedTargets"] == serde_json::json!([]), "{v}");
    let active = v["data"]["activeTargets"].as_array().context("activeTargets")?;
    for t in active {
        target_keys_are_prometheus(t)?;
    }
    let pool = |p: &'static str| active.iter().filter(move |t| t["scrapePool"] == p);
    let up = pool("peer").next().context("peer target")?;
    ensure!(up["health"] == "up" && up["lastError"] == "", "{up}");
    ensure!(up["labels"]["commons"] == "alpha" && up["labels"]["job"] == "peer", "{up}");
    ensure!(up["lastScrapeDuration"].as_f64().is_some_and(|d| d > 0.0), "{up}");
    ensure!(up["discoveredLabels"]["__address__"] == up["labels"]["instance"], "{up}");
    let down = pool("gone").next().context("gone target")?;
    ensure!(down["health"] == "down", "{down}");
    ensure!(down["lastError"].as_str().is_some_and(|e| !e.is_empty()), "{down}");
    let probes: Vec<&Value> = pool("gen3").collect();
    ensure!(probes.len() >= 3, "one target per probed Gen3 service: {probes:?}");
    ensure!(
        probes
            .iter()
            .all(|p| p["labels"]["commons"] == "beta" && p["labels"]["service"].is_string())
    );
    ensure!(probes.iter().any(|p| p["health"] == "up"), "{probes:?}");

    // A token scoped to alpha sees alpha's targets only.
    let (code, v) = grafana_get(&format!("{url}?state=active"), Some(READ_A))?;
    ensure!(code == 200, "{code} {v}");
    let mine = v["data"]["activeTargets"].as_array().context("activeTargets")?;
    ensure!(!mine.is_empty() && mine.iter().all(|t| t["labels"]["commons"] == "alpha"), "{v}");
    ensure!(v["data"].get("droppedTargets").is_none(), "state=active: no droppedTargets: {v}");
    let (_, v) = grafana_get(&format!("{url}?state=dropped"), Some(ADMIN))?;
    ensure!(
        v["data"].get("activeTargets").is_none() && v["data"]["droppedTargets"].is_array(),
        "{v}"
    );
    let (_, v) = grafana_get(&format!("{url}?scrapePool=gone"), Some(ADMIN))?;
    ensure!(v["data"]["activeTargets"].as_array().map(Vec::len) == Some(1), "{v}");
    let (code, v) = grafana_get(&format!("{url}?state=bogus"), Some(ADMIN))?;
    ensure!(code == 400 && v["errorType"] == "bad_data", "{code} {v}");
    let (code, _) = grafana_get(&url, None)?;
    ensure!(code == 401, "no token: {code}");

    // Grafana's "Save & test" asks for buildinfo first.
    let (code, b) = grafana_get(&format!("{}/api/v1/status/buildinfo", c.http), Some(READ_A))?;
    ensure!(code == 200 && b["data"]["version"].is_string(), "{code} {b}");

    let (code, w) = grafana_get(&format!("{}/api/v1/status/walreplay", c.http), Some(ADMIN))?;
    ensure!(code == 200 && w["status"] == "success", "{code} {w}");
    ensure!(w["data"]["min"] == 0 && w["data"]["max"].is_u64(), "{w}");
    ensure!(w["data"]["current"] == w["data"]["max"], "replay is over: {w}");

    // The admin API is off here: a snapshot is refused (503), as in Prometheus.
    let (code, v) = post(&format!("{}/api/v1/admin/tsdb/snapshot", c.http), Some(ADMIN))?;
    ensure!(code == 503 && v["errorType"] == "unavailable", "{code} {v}");
    Ok(())
}

/// The shipped pack's `runbook_url`s come out of the collector absolute and
/// pointing at its own copy of the runbook (`<external URL>/runbook#alert`),
/// which answers without a token and has the alert's section; with
/// `--rules.runbook-base-url` they point at the site's copy instead.
#[test]
fn runbook_links_point_at_the_collectors_own_runbook_or_the_configured_base() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pack = workspace().join("deploy/rules/gen3.yml");
    let pack = pack.to_string_lossy();
    let runbook_url = |base: &str, bearer: &str| -> anyhow::Result<String> {
        wait_for("Watchdog firing", Duration::from_secs(60), || {
            let r = reqwest::blocking::Client::new()
                .get(format!("{base}/api/v1/alerts"))
                .bearer_auth(bearer)
                .timeout(Duration::from_secs(10))
                .send()
                .ok()?;
            let v: Value = r.json().ok()?;
            v["data"]["alerts"].as_array()?.iter().find_map(|a| {
                (a["labels"]["alertname"] == "Watchdog" && a["state"] == "firing")
                    .then(|| a["annotations"]["runbook_url"].as_str().map(str::to_string))
                    .flatten()
            })
        })
    };
    let c = Collector::start(
        dir.path(),
        &[
            "--rules",
            &pack,
            "--evaluation-interval",
            "1s",
            "--api-token",
            &format!("admin={ADMIN}:admin"),
        ],
    )?;
    let url = runbook_url(&c.http, ADMIN)?;
    ensure!(url.ends_with("/runbook#watchdog"), "Watchdog's runbook_url: {url}");
    ensure!(url.starts_with("http://"), "absolute: {url}");
    // The link's page, fetched as Slack's user would: no token.
    let page_url = format!("{}/runbook", c.http);
    let (code, page) = get_text(&page_url)?;
    ensure!(code == 200, "GET /runbook without a token: {code}");
    for id in ["watchdog", "gen3servicedown", "csocagentsilent"] {
        ensure!(page.contains(&format!("id=\"{id}\"")), "/runbook has no section #{id}");
    }
    // Only /runbook is open: the API still asks for the token.
    let (code, _) = get_text(&format!("{}/api/v1/alerts", c.http))?;
    ensure!(code == 401, "/api/v1/alerts without a token: {code}");
    drop(c);

    let dir = tempfile::tempdir()?;
    let c = Collector::start(
        dir.path(),
        &[
            "--rules",
            &pack,
            "--evaluation-interval",
            "1s",
            "--api-token",
            &format!("admin={ADMIN}:admin"),
            "--rules.runbook-base-url",
            "https://wiki.example.org/csoc/runbook",
        ],
    )?;
    let url = runbook_url(&c.http, ADMIN)?;
    ensure!(url == "https://wiki.example.org/csoc/runbook#watchdog", "with a base: {url}");
    Ok(())
}
