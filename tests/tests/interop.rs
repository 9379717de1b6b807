//! Interop with the Prometheus ecosystem's own programs, against a real
//! collector holding known data (written through remote write):
//! `promtool query` reads our API, a real Prometheus federates from our
//! `/federate` and then answers like us, and the requests Grafana's
//! Prometheus data source sends get Prometheus's shapes.
//!
//! The programs come from Debian's `prometheus` package (`prometheus`,
//! `promtool`). A test whose program is missing skips with a message, and
//! fails instead when `CSOC_REQUIRE_INTEROP=1` (as in CI). Everything runs
//! on 127.0.0.1, every wait is bounded, every process is stopped by PID.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use csoc_common::time::now_ms;
use csoc_proto::prometheus::{MetricMetadata, WriteRequest};
use csoc_tests::*;
use serde_json::{Value, json};

const TOKEN: &str = "interop-token-0123456789abcdef";
const STEP_MS: i64 = 15_000;
/// Samples per series, STEP_MS apart, the last at `Fixture::last`.
const POINTS: i64 = 21;
const MEM_TOTAL: f64 = 16_710_004_736.0;
/// A label value that needs escaping in the text format.
const ODD_PATH: &str = "C:\\dir \"quoted\"\nline2 é ✓";

/// A collector holding the test data.
struct Fixture {
    dir: tempfile::TempDir,
    c: Collector,
    /// Timestamp (ms) of the newest sample of every series.
    last: i64,
}

/// A time as RFC 3339 in UTC with milliseconds (`2026-11-21T10:00:00.000Z`).
fn rfc(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Seconds as Grafana and client_golang format them.
fn secs(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    format!("{s}")
}

fn meta(name: &str, typ: i32, help: &str) -> MetricMetadata {
    MetricMetadata {
        r#type: typ,
        metric_family_name: name.into(),
        help: help.into(),
        unit: String::new(),
    }
}

/// Starts a collector and writes, for the POINTS steps ending at the last
/// 15 s boundary before now (commons `interop` is stamped by the token):
/// `up` 1 and 0 for two hosts, a constant MemTotal, a counter growing by 10
/// per step, and a series whose label value needs escaping; plus metadata.
fn fixture() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    // Only the written data: the collector's own metrics stay out of storage.
    let c = Collector::start(
        dir.path(),
        &["--agent-token", &format!("interop={TOKEN}"), "--self-scrape-interval", "0"],
    )?;
    let now = now_ms();
    let last = now - now % STEP_MS;
    let times: Vec<i64> = (0..POINTS).map(|i| last - (POINTS - 1 - i) * STEP_MS).collect();
    let constant = |v: f64| times.iter().map(|t| (*t, v)).collect::<Vec<_>>();
    let req = WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "node"), ("instance", "host-1")], constant(1.0)),
            series(&[("__name__", "up"), ("job", "node"), ("instance", "host-2")], constant(0.0)),
            series(
                &[("__name__", "node_memory_MemTotal_bytes"), ("job", "node"), ("instance", "host-1")],
                constant(MEM_TOTAL),
            ),
            series(
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("instance", "host-1"),
                    ("code", "200"),
                ],
                times.iter().enumerate().map(|(i, t)| (*t, 10.0 * i as f64)).collect(),
            ),
            series(
                &[
                    ("__name__", "interop_info"),
                    ("job", "api"),
                    ("instance", "host-1"),
                    ("path", ODD_PATH),
                ],
                constant(1.0),
            ),
        ],
        metadata: vec![
            meta("up", 2, "Whether the target is up."),
            meta("node_memory_MemTotal_bytes", 2, "Memory information field MemTotal_bytes."),
            meta("http_requests_total", 1, "Requests served."),
        ],
    };
    remote_write(&c.http, TOKEN, &req)?;
    Ok(Fixture { dir, c, last })
}

fn promtool(f: &Fixture, promtool: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let mut a: Vec<String> = vec!["query".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    let out = run(f.dir.path(), promtool, &a, Duration::from_secs(30))?;
    serde_json::from_str(&out).with_context(|| format!("promtool {args:?}: not JSON: {out}"))
}

/// `{instance or labels → value}` of an instant vector in API JSON.
fn by_instance(v: &Value) -> BTreeMap<String, String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let key = s["metric"]["instance"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| s["metric"].to_string());
                    (key, s["value"][1].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn num(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn rfc3339_helper() {
    assert_eq!(rfc(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(rfc(951_782_400_000), "2000-02-29T00:00:00.000Z");
}

#[test]
fn promtool_queries_return_the_stored_values() -> anyhow::Result<()> {
    let Some(pt) = program("promtool") else { return Ok(()) };
    let f = fixture()?;
    let (url, t) = (f.c.http.clone(), secs(f.last));
    let time = format!("--time={t}");

    let up = promtool(&f, &pt, &["instant", "-o", "json", &time, &url, "up"])?;
    assert_eq!(
        by_instance(&up),
        BTreeMap::from([("host-1".into(), "1".into()), ("host-2".into(), "0".into())]),
        "{up}"
    );
    assert!(
        up.as_array()
            .is_some_and(|a| a.iter().all(|s| s["value"][0] == json!(f.last / 1000))),
        "{up}"
    );
    assert!(
        up.as_array().is_some_and(|a| a.iter().all(|s| s["metric"]["commons"] == "interop")),
        "{up}"
    );

    let mem = promtool(&f, &pt, &["instant", "-o", "json", &time, &url, "node_memory_MemTotal_bytes"])?;
    assert_eq!(num(&mem[0]["value"][1]), MEM_TOTAL, "{mem}");

    // offset: the counter one minute (4 steps) earlier.
    let off = promtool(&f, &pt, &["instant", "-o", "json", &time, &url, "http_requests_total offset 1m"])?;
    assert_eq!(num(&off[0]["value"][1]), 10.0 * (POINTS - 1 - 4) as f64, "{off}");

    let start = format!("--start={}", secs(f.last - 60_000));
    let end = format!("--end={t}");
    let range = promtool(
        &f,
        &pt,
        &["range", "-o", "json", &start, &end, "--step=15s", &url, "http_requests_total"],
    )?;
    let values: Vec<f64> = range[0]["values"]
        .as_array()
        .map(|a| a.iter().map(|p| num(&p[1])).collect())
        .unwrap_or_default();
    let want: Vec<f64> = (POINTS - 5..POINTS).map(|i| 10.0 * i as f64).collect();
    assert_eq!(values, want, "{range}");

    let series = promtool(&f, &pt, &["series", "-o", "json", "--match=up", "--match=interop_info", &url])?;
    let got: Vec<(String, String)> = series
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["__name__"].as_str().unwrap_or("").into(),
                        s["instance"].as_str().unwrap_or("").into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(got.len(), 3, "{series}");
    assert!(
        series.as_array().is_some_and(|a| a.iter().any(|s| s["path"] == ODD_PATH)),
        "{series}"
    );

    let labels = promtool(&f, &pt, &["labels", "-o", "json", &url, "instance"])?;
    assert_eq!(labels, json!(["host-1", "host-2"]));
    let names = promtool(&f, &pt, &["labels", "-o", "json", &url, "__name__"])?;
    assert_eq!(
        names,
        json!(["http_requests_total", "interop_info", "node_memory_MemTotal_bytes", "up"])
    );

    // Aggregations and functions of the engine, through promtool.
    let sum = promtool(&f, &pt, &["instant", "-o", "json", &time, &url, "sum by (job) (up)"])?;
    assert_eq!(sum[0]["metric"], json!({"job": "node"}), "{sum}");
    assert_eq!(num(&sum[0]["value"][1]), 1.0, "{sum}");
    let rate = promtool(&f, &pt, &["instant", "-o", "json", &time, &url, "rate(http_requests_total[1m])"])?;
    assert!((num(&rate[0]["value"][1]) - 10.0 / 15.0).abs() < 1e-9, "10 per 15 s: {rate}");
    Ok(())
}

/// A Prometheus scraping our `/federate` every second.
struct Prometheus {
    proc: Proc,
    url: String,
}

fn start_prometheus(f: &Fixture, prometheus: &Path, matchers: &[&str]) -> anyhow::Result<Prometheus> {
    let port = free_port();
    let target = f.c.http.trim_start_matches("http://");
    let list = matchers
        .iter()
        .map(|m| format!("'{}'", m.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: csoc-federate\n    honor_labels: true\n    metrics_path: /federate\n\
         \x20   params:\n      'match[]': [{list}]\n    static_configs:\n      - targets: ['{target}']\n"
    );
    let cfg_path = f.dir.path().join("prometheus.yml");
    std::fs::write(&cfg_path, config)?;
    let args: Vec<String> = vec![
        format!("--config.file={}", cfg_path.display()),
        format!("--storage.tsdb.path={}", f.dir.path().join("prometheus-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--storage.tsdb.retention.time=1d".into(),
    ];
    let proc = Proc::start(f.dir.path(), "prometheus", prometheus, &args)?;
    let p = Prometheus {
        proc,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_for("prometheus /-/ready", Duration::from_secs(30), || {
        get_text(&format!("{}/-/ready", p.url)).ok().filter(|(code, _)| *code == 200)
    })?;
    Ok(p)
}

fn post_form(base: &str, path: &str, form: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}{path}"))
        .form(form)
        .timeout(Duration::from_secs(10))
        .send()?;
    let code = r.status().as_u16();
    Ok((code, r.json()?))
}

/// An instant vector as a sorted list of (labels, value), comparable
/// across servers.
fn samples(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .map(|a| a.iter().map(|s| (s["metric"].to_string(), s["value"].to_string())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn prometheus_federating_from_us_serves_the_same_values() -> anyhow::Result<()> {
    let Some(prom) = program("prometheus") else { return Ok(()) };
    let f = fixture()?;
    let p = start_prometheus(&f, &prom, &[r#"{commons="interop"}"#])?;
    let t = secs(f.last);
    let ours_sel = r#"{commons="interop"}"#;
    // Prometheus stores the federated samples at their own timestamps.
    let theirs = wait_for("the federated series in Prometheus", Duration::from_secs(30), || {
        api(&p.url, "/api/v1/query", &[("query", ours_sel), ("time", &t)])
            .ok()
            .filter(|v| v["data"]["result"].as_array().is_some_and(|a| a.len() == 5))
    })?;
    let ours = api(&f.c.http, "/api/v1/query", &[("query", ours_sel), ("time", &t)])?;
    assert_eq!(samples(&theirs), samples(&ours), "instant query at the last sample time");
    assert!(
        samples(&ours)
            .iter()
            .any(|(l, v)| l.contains("interop_info") && v.contains("\"1\"")),
        "{ours}"
    );

    // The same requests to both APIs give the same data.
    for (path, params) in [
        ("/api/v1/series", vec![("match[]", ours_sel)]),
        ("/api/v1/label/path/values", vec![("match[]", ours_sel)]),
        ("/api/v1/label/instance/values", vec![("match[]", ours_sel)]),
        ("/api/v1/labels", vec![("match[]", ours_sel)]),
        ("/api/v1/query", vec![("query", "node_memory_MemTotal_bytes"), ("time", &t)]),
        ("/api/v1/query", vec![("query", r#"up{commons="interop"} == 1"#), ("time", &t)]),
        ("/api/v1/query", vec![("query", r#"sum(up{commons="interop"})"#), ("time", &t)]),
        (
            "/api/v1/query_range",
            vec![("query", "http_requests_total"), ("start", &t), ("end", &t), ("step", "15")],
        ),
    ] {
        let a = api(&p.url, path, &params)?;
        let b = api(&f.c.http, path, &params)?;
        assert_eq!(a["data"], b["data"], "{path} {params:?}:\nPrometheus: {a}\ncsoc: {b}");
    }
    let paths = api(&p.url, "/api/v1/label/path/values", &[])?;
    assert_eq!(paths["data"], json!([ODD_PATH]), "the escaped label value survives the text format");
    // Every scrape of /federate succeeded.
    let up = api(&p.url, "/api/v1/query", &[("query", r#"up{job="csoc-federate"}"#)])?;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let mut p = p;
    let st = p.proc.terminate()?;
    assert!(st.success(), "prometheus exit status {st}");
    Ok(())
}

#[test]
fn grafana_data_source_requests_get_prometheus_shapes() -> anyhow::Result<()> {
    let f = fixture()?;
    let base = f.c.http.clone();
    let (start, end) = (secs(f.last - 60_000), secs(f.last));

    // Range query as Grafana's backend sends it: POST form, float seconds.
    let (code, v) = post_form(
        &base,
        "/api/v1/query_range",
        &[
            ("query", "http_requests_total"),
            ("start", &start),
            ("end", &end),
            ("step", "15"),
            ("timeout", "60s"),
        ],
    )?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let values = &v["data"]["result"][0]["values"];
    assert_eq!(values.as_array().map(Vec::len), Some(5), "{v}");
    assert_eq!(values[4], json!([f.last / 1000, format!("{}", 10 * (POINTS - 1))]), "{v}");

    // Instant query.
    let (code, v) = post_form(&base, "/api/v1/query", &[("query", "up"), ("time", &end), ("timeout", "60s")])?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(by_instance(&v["data"]["result"]).len(), 2, "{v}");

    // Exemplars: none stored, but the request is understood.
    let (code, v) = post_form(
        &base,
        "/api/v1/query_exemplars",
        &[("query", "up"), ("start", &start), ("end", &end)],
    )?;
    assert_eq!((code, &v["data"]), (200, &json!([])), "{v}");

    // Label names for the dashboard's range (POST form, as Grafana's resource calls).
    let (code, v) = post_form(&base, "/api/v1/labels", &[("start", &start), ("end", &end)])?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"], json!(["__name__", "code", "commons", "instance", "job", "path"]));

    // Metric names, then narrowed by a selector, then limited.
    let names = api(&base, "/api/v1/label/__name__/values", &[("start", &start), ("end", &end)])?;
    assert_eq!(
        names["data"],
        json!(["http_requests_total", "interop_info", "node_memory_MemTotal_bytes", "up"])
    );
    let names = api(
        &base,
        "/api/v1/label/__name__/values",
        &[("start", &start), ("end", &end), ("match[]", r#"{job="api"}"#)],
    )?;
    assert_eq!(names["data"], json!(["http_requests_total", "interop_info"]));
    let names = api(&base, "/api/v1/label/__name__/values", &[("limit", "1")])?;
    assert_eq!(names["data"], json!(["http_requests_total"]));
    assert_eq!(names["warnings"], json!(["results truncated due to limit"]));
    // Nothing before the data.
    let before = secs(f.last - POINTS * STEP_MS - 3_600_000);
    let early = api(&base, "/api/v1/label/__name__/values", &[("start", &before), ("end", &before)])?;
    assert_eq!(early["data"], json!([]));

    // Series with several match[], RFC 3339 times, a limit.
    let (code, v) = post_form(
        &base,
        "/api/v1/series",
        &[
            ("match[]", "up"),
            ("match[]", "http_requests_total"),
            ("start", &rfc(f.last - 60_000)),
            ("end", &rfc(f.last)),
        ],
    )?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(
        v["data"][0],
        json!({"__name__": "http_requests_total", "code": "200", "commons": "interop", "instance": "host-1", "job": "api"})
    );
    let (code, v) = post_form(
        &base,
        "/api/v1/series",
        &[("match[]", "up"), ("match[]", "http_requests_total"), ("limit", "2")],
    )?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["warnings"], json!(["results truncated due to limit"]));

    // Metadata, for the query editor's hints.
    let md = api(&base, "/api/v1/metadata", &[])?;
    assert_eq!(
        md["data"]["http_requests_total"],
        json!([{"type": "counter", "help": "Requests served.", "unit": ""}]),
        "{md}"
    );
    let md = api(&base, "/api/v1/metadata", &[("metric", "up"), ("limit_per_metric", "1")])?;
    assert_eq!(
        md["data"],
        json!({"up": [{"type": "gauge", "help": "Whether the target is up.", "unit": ""}]})
    );

    // Version detection and the status pages.
    let bi = api(&base, "/api/v1/status/buildinfo", &[])?;
    assert!(bi["data"]["version"].as_str().is_some_and(|s| !s.is_empty()), "{bi}");
    let st = api(&base, "/api/v1/status/tsdb", &[("limit", "2")])?;
    assert_eq!(st["data"]["headStats"]["numSeries"], 5, "{st}");
    assert_eq!(st["data"]["seriesCountByMetricName"][0], json!({"name": "up", "value": 2}), "{st}");
    assert_eq!(st["data"]["seriesCountByMetricName"].as_array().map(Vec::len), Some(2), "{st}");
    let fl = api(&base, "/api/v1/status/flags", &[])?;
    assert_eq!(fl["data"]["query.lookback-delta"], "5m", "{fl}");
    let rt = api(&base, "/api/v1/status/runtimeinfo", &[])?;
    assert_eq!(rt["data"]["storageRetention"], "15d", "{rt}");
    let fq = api(&base, "/api/v1/format_query", &[("query", "sum(rate(x[5m]))by(job)")])?;
    assert_eq!(fq["data"], "sum by (job) (rate(x[5m]))");
    let pq = api(&base, "/api/v1/parse_query", &[("query", "up")])?;
    assert_eq!(pq["data"]["type"], "vectorSelector", "{pq}");

    // Errors in Prometheus's shape, naming the parameter.
    let (code, v) = get_json(&format!("{base}/api/v1/series"))?;
    assert_eq!((code, v["errorType"].as_str()), (400, Some("bad_data")), "{v}");
    let (code, v) = post_form(
        &base,
        "/api/v1/query_range",
        &[("query", "up"), ("start", &start), ("end", &end), ("step", "0")],
    )?;
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("\"step\"")), "{v}");
    let (code, v) = post_form(&base, "/api/v1/query", &[("query", "up"), ("time", "tomorrow")])?;
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        v["error"],
        "invalid parameter \"time\": cannot parse \"tomorrow\" to a valid timestamp"
    );

    // /federate: the text format with timestamps and escaped values.
    let r = reqwest::blocking::Client::new()
        .get(format!("{base}/federate"))
        .query(&[("match[]", "interop_info"), ("match[]", "node_memory_MemTotal_bytes")])
        .timeout(Duration::from_secs(10))
        .send()?;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = r.text()?;
    let want = format!(
        "# TYPE interop_info untyped\n\
         interop_info{{commons=\"interop\",instance=\"host-1\",job=\"api\",path=\"C:\\\\dir \\\"quoted\\\"\\nline2 é ✓\"}} 1 {t}\n\
         # TYPE node_memory_MemTotal_bytes untyped\n\
         node_memory_MemTotal_bytes{{commons=\"interop\",instance=\"host-1\",job=\"node\"}} 1.6710004736e+10 {t}\n",
        t = f.last
    );
    assert_eq!(body, want);
    let (code, _) = get_text(&format!("{base}/federate"))?;
    assert_eq!(code, 400, "match[] is required");
    Ok(())
}
