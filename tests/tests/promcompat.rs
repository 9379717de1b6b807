//! Operating the collector like Prometheus (issue 20, the configuration
//! half): Prometheus's flag spellings, `remote_write` and `alerting` blocks
//! written as Prometheus documents them (accepted by `--check-config` and
//! working against a real Prometheus and a real Alertmanager), refusals of
//! what is not supported, and `/-/reload` / SIGHUP reloading tokens,
//! receivers and remote-write targets without a restart.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use csoc_common::time::now_ms;
use csoc_tests::*;
use prost::Message;
use serde_json::Value;

/// A remote-write receiver on 127.0.0.1 that records the sample
/// timestamps it is sent (per request) and answers 204.
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<Vec<i64>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/api/v1/write", listener.local_addr()?);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sx, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let sx = sx.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let Ok(clone) = stream.try_clone() else { return };
                    let mut reader = BufReader::new(clone);
                    let mut w = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
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
                            .and_then(|raw| csoc_proto::prometheus::WriteRequest::decode(raw.as_slice()).ok())
                            .unwrap_or_default();
                        let ts = req.timeseries.iter().flat_map(|t| t.samples.iter().map(|s| s.timestamp)).collect();
                        if let Ok(mut v) = sx.lock() {
                            v.push(ts);
                        }
                        let _ = write!(w, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                    }
                });
            }
        });
        Ok(Recorder { url, seen, stop })
    }

    /// Whether a sample at `t` was received.
    fn got(&self, t: i64) -> bool {
        self.seen.lock().map(|v| v.iter().any(|r| r.contains(&t))).unwrap_or(false)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn one_sample(name: &str, t: i64) -> csoc_proto::prometheus::WriteRequest {
    csoc_proto::prometheus::WriteRequest {
        timeseries: vec![series(
            &[("__name__", name), ("job", "promcompat"), ("instance", "x")],
            vec![(t, 1.0)],
        )],
        ..Default::default()
    }
}

/// The HTTP status of a remote write with `token`.
fn write_status(base: &str, token: &str, name: &str, t: i64) -> anyhow::Result<u16> {
    let body = snap::raw::Encoder::new().compress_vec(&one_sample(name, t).encode_to_vec())?;
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("Authorization", format!("Bearer {token}"))
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()?;
    Ok(r.status().as_u16())
}

fn metric(base: &str, name: &str) -> Option<f64> {
    let (_, text) = get_text(&format!("{base}/metrics")).ok()?;
    metric_value(&text, name)
}

fn post(url: &str) -> anyhow::Result<(u16, String)> {
    let r = reqwest::blocking::Client::new().post(url).timeout(Duration::from_secs(30)).send()?;
    Ok((r.status().as_u16(), r.text()?))
}

/// Starts a collector with `--config cfg` and the usual test ports.
fn start_with_config(dir: &Path, cfg: &Path, extra: &[&str]) -> anyhow::Result<Collector> {
    let mut args = vec!["--config", cfg.to_str().context("path")?];
    args.extend_from_slice(extra);
    Collector::start(dir, &args)
}

/// `csoc-collector --check-config --config FILE`: (success, stdout + stderr).
fn check_config(dir: &Path, yaml: &str) -> anyhow::Result<(bool, String)> {
    let p = dir.join("check.yml");
    std::fs::write(&p, yaml)?;
    let out = Command::new(bin("csoc-collector"))
        .args(["--check-config", "--config"])
        .arg(&p)
        .output()?;
    Ok((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

/// The remote_write and alerting blocks of a prometheus.yml, as
/// Prometheus's configuration documentation spells them.
fn prometheus_blocks(rw_url: &str, ca: &str, pass_file: &str, am_target: &str, am_pass_file: &str) -> String {
    format!(
        r#"remote_write:
  - url: {rw_url}
    name: prometheus
    remote_timeout: 30s
    headers:
      X-Scope-OrgID: csoc
    basic_auth:
      username: csoc
      password_file: {pass_file}
    tls_config:
      ca_file: {ca}
      min_version: TLS12
    follow_redirects: true
    enable_http2: true
    queue_config:
      capacity: 10000
      max_shards: 2
      min_shards: 1
      max_samples_per_send: 500
      batch_send_deadline: 5s
      min_backoff: 30ms
      max_backoff: 5s
      retry_on_http_429: true
    metadata_config:
      send: false
      send_interval: 1m
    write_relabel_configs:
      - source_labels: [__name__]
        regex: promcompat_dropped.*
        action: drop
alerting:
  alertmanagers:
    - scheme: http
      path_prefix: /am/
      timeout: 10s
      api_version: v2
      basic_auth:
        username: csoc
        password_file: {am_pass_file}
      static_configs:
        - targets: ["{am_target}", "127.0.0.1:1"]
      relabel_configs:
        - source_labels: [__address__]
          regex: "127\\.0\\.0\\.1:1"
          action: drop
"#
    )
}

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert, key) paths.
fn self_signed(dir: &Path) -> anyhow::Result<(String, String)> {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, "promcompat-receiver");
    p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let cert = p.self_signed(&key)?;
    let (c, k) = (dir.join("receiver.crt"), dir.join("receiver.key"));
    std::fs::write(&c, cert.pem())?;
    std::fs::write(&k, key.serialize_pem())?;
    Ok((c.display().to_string(), k.display().to_string()))
}

/// bcrypt of "rw-basic-pass" (see remote_write.rs), user csoc.
const BCRYPT: &str = "$2b$04$Toto1m7wh77f1fxdPLb8sOaP3Xcmh5s3C7nw.3Z9kdONSY8S.5dcG";

#[test]
fn prometheus_remote_write_and_alerting_blocks_work_against_real_prometheus_and_alertmanager() -> anyhow::Result<()> {
    let Some(prom) = program("prometheus") else { return Ok(()) };
    let Some(am) = program("prometheus-alertmanager") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (crt, key) = self_signed(d)?;
    std::fs::write(d.join("pass"), "rw-basic-pass\n")?;
    let web = d.join("web.yml");
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\nbasic_auth_users:\n  csoc: {BCRYPT}\n"),
    )?;
    let am_web = d.join("am-web.yml");
    std::fs::write(&am_web, format!("basic_auth_users:\n  csoc: {BCRYPT}\n"))?;

    // The receivers: Prometheus over TLS with basic auth, Alertmanager
    // under /am/ with basic auth.
    std::fs::write(d.join("prometheus.yml"), "global:\n  scrape_interval: 1m\n")?;
    let prom_port = free_port();
    let _prom = Proc::start(
        d,
        "prometheus",
        &prom,
        &[
            format!("--config.file={}", d.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", d.join("prometheus-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            format!("--web.config.file={}", web.display()),
            "--web.enable-remote-write-receiver".into(),
        ],
    )?;
    std::fs::write(d.join("alertmanager.yml"), "route:\n  receiver: none\nreceivers:\n  - name: none\n")?;
    let am_port = free_port();
    let _am = Proc::start(
        d,
        "alertmanager",
        &am,
        &[
            format!("--config.file={}", d.join("alertmanager.yml").display()),
            format!("--storage.path={}", d.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            format!("--web.config.file={}", am_web.display()),
            "--web.route-prefix=/am/".into(),
            "--cluster.listen-address=".into(),
        ],
    )?;
    let client = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let ready = |url: String| {
        let c = client.clone();
        move || {
            c.get(&url)
                .basic_auth("csoc", Some("rw-basic-pass"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    };
    wait_for(
        "prometheus ready",
        Duration::from_secs(30),
        ready(format!("https://127.0.0.1:{prom_port}/-/ready")),
    )?;
    wait_for(
        "alertmanager ready",
        Duration::from_secs(30),
        ready(format!("http://127.0.0.1:{am_port}/am/-/ready")),
    )?;

    // The blocks, pasted into the collector's config, pass --check-config.
    let rules = d.join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: promcompat\n    interval: 1s\n    rules:\n      - alert: PromcompatAlwaysFiring\n        expr: vector(1)\n        labels: {severity: none}\n",
    )?;
    let token = "promcompat-agent-token-0123456789";
    let yaml = format!(
        "{}rule_files: [{}]\nagent_tokens:\n  - {{commons: alpha, token: {token}}}\n",
        prometheus_blocks(
            &format!("https://127.0.0.1:{prom_port}/api/v1/write"),
            &crt,
            &d.join("pass").display().to_string(),
            &format!("127.0.0.1:{am_port}"),
            &d.join("pass").display().to_string(),
        ),
        rules.display()
    );
    let (ok, out) = check_config(d, &yaml)?;
    ensure!(
        ok && out.contains("config OK"),
        "--check-config refused the Prometheus blocks:\n{out}\n{yaml}"
    );
    let cfg = d.join("collector.yml");
    std::fs::write(&cfg, &yaml)?;
    let c = start_with_config(d, &cfg, &["--evaluation-interval", "1s"])?;

    // Remote write: a sample reaches Prometheus; the relabelled one does not.
    let t = now_ms();
    ensure!(write_status(&c.http, token, "promcompat_value", t)? == 204);
    ensure!(write_status(&c.http, token, "promcompat_dropped_value", t)? == 204);
    let q = |expr: &str| -> anyhow::Result<Vec<Value>> {
        let v: Value = client
            .get(format!("https://127.0.0.1:{prom_port}/api/v1/query"))
            .basic_auth("csoc", Some("rw-basic-pass"))
            .query(&[("query", expr)])
            .send()?
            .json()?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    };
    let got = wait_for("the sample in Prometheus", Duration::from_secs(30), || {
        q("promcompat_value").ok().filter(|r| !r.is_empty())
    })?;
    assert_eq!(got[0]["metric"]["commons"], "alpha", "{got:?}");
    assert!(q("promcompat_dropped_value")?.is_empty(), "write_relabel_configs dropped it");

    // Alerting: the alert reaches Alertmanager under its path prefix with
    // basic auth; the relabelled-away target is listed as dropped.
    let alerts = wait_for("the alert in Alertmanager", Duration::from_secs(30), || {
        let v: Value = client
            .get(format!("http://127.0.0.1:{am_port}/am/api/v2/alerts"))
            .basic_auth("csoc", Some("rw-basic-pass"))
            .send()
            .ok()?
            .json()
            .ok()?;
        let a = v.as_array()?.clone();
        a.iter().any(|x| x["labels"]["alertname"] == "PromcompatAlwaysFiring").then_some(a)
    })?;
    assert!(!alerts.is_empty());
    let v = api(&c.http, "/api/v1/alertmanagers", &[])?;
    assert_eq!(
        v["data"]["activeAlertmanagers"][0]["url"],
        format!("http://127.0.0.1:{am_port}/am/api/v2/alerts"),
        "{v}"
    );
    assert_eq!(
        v["data"]["droppedAlertmanagers"][0]["url"], "http://127.0.0.1:1/am/api/v2/alerts",
        "{v}"
    );

    // status/config: Prometheus's shape, secrets redacted.
    let v = api(&c.http, "/api/v1/status/config", &[])?;
    let y = v["data"]["yaml"].as_str().context("yaml")?;
    assert!(y.contains("<secret>") && !y.contains(token), "{y}");
    assert!(y.contains("remote_timeout"), "{y}");
    Ok(())
}

#[test]
fn check_config_refuses_unsupported_prometheus_fields_by_name_and_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let rw = "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n";
    let am = "alerting:\n  alertmanagers:\n    - static_configs: [{targets: ['127.0.0.1:9093']}]\n";
    let cases = [
        (format!("{rw}    sigv4: {{region: us-east-1}}\n"), "sigv4", "SigV4"),
        (
            format!("{rw}    oauth2: {{client_id: x, client_secret: y, token_url: http://t/}}\n"),
            "oauth2",
            "OAuth",
        ),
        (
            format!("{rw}    metadata_config: {{send: true}}\n"),
            "metadata_config.send",
            "not sent",
        ),
        (format!("{rw}    tls_config: {{server_name: mimir}}\n"), "server_name", "host name"),
        (
            format!("{rw}    queue_config: {{sample_age_limit: 5m}}\n"),
            "sample_age_limit",
            "not supported",
        ),
        (format!("{rw}    send_exemplars: true\n"), "send_exemplars", "exemplars"),
        (
            format!("{rw}    authorization: {{type: Basic, credentials: x}}\n"),
            "authorization",
            "basic_auth",
        ),
        (format!("{rw}    proxy_url: http://proxy:3128\n"), "proxy_url", "proxies"),
        (format!("{am}      api_version: v1\n"), "api_version", "v2"),
        (
            format!("{am}      kubernetes_sd_configs: [{{role: pod}}]\n"),
            "kubernetes_sd_configs",
            "static_configs",
        ),
        (format!("{am}      oauth2: {{client_id: x}}\n"), "oauth2", "OAuth"),
        (
            "alerting:\n  alert_relabel_configs: [{source_labels: [a], regex: b, action: drop}]\n".to_string(),
            "alert_relabel_configs",
            "not supported",
        ),
        (format!("{rw}    bogus_field: 1\n"), "bogus_field", "unknown field"),
    ];
    for (yaml, field, why) in cases {
        let (ok, out) = check_config(d, &yaml)?;
        assert!(!ok, "accepted:\n{yaml}");
        assert!(out.contains(field) && out.contains(why), "{field}/{why} not in:\n{out}\n{yaml}");
    }
    // The Prometheus blocks themselves are accepted.
    std::fs::write(d.join("pass"), "x\n")?;
    std::fs::write(d.join("ca.pem"), "not read by --check-config\n")?;
    let pass = d.join("pass").display().to_string();
    let yaml = prometheus_blocks(
        "https://mimir.example.org/api/v1/push",
        &d.join("ca.pem").display().to_string(),
        &pass,
        "am.example.org:9093",
        &pass,
    );
    let (ok, out) = check_config(d, &yaml)?;
    assert!(ok, "{out}\n{yaml}");
    Ok(())
}

#[test]
fn prometheus_flag_spellings_are_aliases_and_shown_by_help() -> anyhow::Result<()> {
    let out = Command::new(bin("csoc-collector")).arg("--help").output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    for f in [
        "--storage.tsdb.path",
        "--web.listen-address",
        "--storage.tsdb.retention.time",
        "--storage.tsdb.retention.size",
        "--log.level",
        "--log.format",
    ] {
        assert!(help.contains(f), "collector --help lacks {f}:\n{help}");
    }
    let out = Command::new(bin("csoc-agent")).arg("--help").output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    for f in ["--log.level", "--log.format"] {
        assert!(help.contains(f), "agent --help lacks {f}:\n{help}");
    }

    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (http, grpc) = (free_port(), free_port());
    let args: Vec<String> = vec![
        format!("--storage.tsdb.path={}", d.join("tsdb").display()),
        format!("--web.listen-address=127.0.0.1:{http}"),
        format!("--grpc-listen=127.0.0.1:{grpc}"),
        "--storage.tsdb.retention.time=30d".into(),
        "--storage.tsdb.retention.size=1GiB".into(),
        "--log.level=warn".into(),
        "--log.format=logfmt".into(),
    ];
    let p = Proc::start(d, "collector", &bin("csoc-collector"), &args)?;
    let base = format!("http://127.0.0.1:{http}");
    wait_for("collector ready", Duration::from_secs(30), || {
        get_text(&format!("{base}/-/ready")).ok().filter(|(c, _)| *c == 200)
    })?;
    let flags = api(&base, "/api/v1/status/flags", &[])?;
    assert_eq!(flags["data"]["retention"], "30d", "{flags}");
    assert!(d.join("tsdb").is_dir(), "the data went to --storage.tsdb.path");
    let log = p.log_text();
    assert!(
        log.lines()
            .any(|l| l.starts_with("ts=") && l.contains(" level=warn ") && l.contains(" caller=") && l.contains(" msg=\"")),
        "not logfmt:\n{log}"
    );
    assert!(
        !log.contains("level=info"),
        "--log.level=warn hides info lines (RUST_LOG=info is set):\n{log}"
    );
    Ok(())
}

#[test]
fn reload_changes_agent_tokens_receivers_and_remote_write_targets_without_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (hook1, hook2) = (WebhookSink::start()?, WebhookSink::start()?);
    let (rw1, rw2) = (Recorder::start()?, Recorder::start()?);
    let rules = d.join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: reload\n    interval: 1s\n    rules:\n      - alert: ReloadAlwaysFiring\n        expr: vector(1)\n",
    )?;
    let (tok_a, tok_b, tok_c) = (
        "reload-token-a-0123456789abcdef",
        "reload-token-b-0123456789abcdef",
        "reload-token-c-0123456789abcdef",
    );
    std::fs::write(d.join("token-b"), format!("{tok_b}\n"))?;
    let receiver =
        |name: &str, url: &str| format!("  - name: {name}\n    group_wait: 1s\n    group_interval: 1s\n    webhook: {{url: \"{url}\"}}\n");
    let config = |token: &str, recv: &str, rw: &str| {
        format!(
            "rule_files: [{}]\nevaluation_interval: 1s\nagent_tokens:\n{token}receivers:\n{recv}remote_write:\n  - url: {rw}\n    queue_config: {{min_backoff: 10ms, max_backoff: 100ms}}\n",
            rules.display()
        )
    };
    let cfg = d.join("collector.yml");
    std::fs::write(
        &cfg,
        config(
            &format!("  - {{commons: alpha, token: {tok_a}}}\n"),
            &receiver("hook1", &hook1.url),
            &rw1.url,
        ),
    )?;
    let c = start_with_config(d, &cfg, &[])?;
    assert_eq!(metric(&c.http, "csoc_collector_config_last_reload_successful"), Some(1.0));
    let t1 = now_ms();
    assert_eq!(write_status(&c.http, tok_a, "reload_value", t1)?, 204);
    wait_for("rw1 gets the first sample", Duration::from_secs(20), || rw1.got(t1).then_some(()))?;
    hook1.wait_for("hook1 notified", Duration::from_secs(20), |_| true)?;
    let before = metric(&c.http, "csoc_collector_config_last_reload_success_timestamp_seconds").context("ts metric")?;

    // Reload: token B (from a file) replaces A, hook2 replaces hook1, rw2 replaces rw1.
    std::fs::write(
        &cfg,
        config(
            &format!("  - {{commons: alpha, token_file: {}}}\n", d.join("token-b").display()),
            &receiver("hook2", &hook2.url),
            &rw2.url,
        ),
    )?;
    std::thread::sleep(Duration::from_millis(1100));
    let (code, text) = post(&format!("{}/-/reload", c.http))?;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("remote_write: 0 kept, 1 started, 1 stopped"), "{text}");
    let t2 = now_ms();
    assert_eq!(write_status(&c.http, tok_a, "reload_value", t2)?, 401, "the old token is refused");
    assert_eq!(write_status(&c.http, tok_b, "reload_value", t2 + 1)?, 204, "the new token works");
    wait_for("rw2 gets the new sample", Duration::from_secs(20), || rw2.got(t2 + 1).then_some(()))?;
    std::thread::sleep(Duration::from_secs(1));
    assert!(!rw1.got(t2 + 1), "the removed target is not sent to");
    hook2.wait_for("hook2 notified", Duration::from_secs(20), |_| true)?;
    let n1 = hook1.received().len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook1.received().len(), n1, "the removed receiver gets nothing more");
    assert_eq!(metric(&c.http, "csoc_collector_config_last_reload_successful"), Some(1.0));
    let after = metric(&c.http, "csoc_collector_config_last_reload_success_timestamp_seconds").context("ts")?;
    assert!(after > before, "{after} > {before}");
    let (_, v) = get_json(&format!("{}/api/v2/receivers", c.http))?;
    assert!(v.to_string().contains("hook2") && !v.to_string().contains("hook1"), "{v}");

    // A broken part keeps its last good version; the valid parts apply.
    std::fs::write(
        &cfg,
        config(
            &format!("  - {{commons: alpha, token: {tok_c}}}\n"),
            &receiver("hook2", &hook2.url),
            "ftp://nowhere/",
        ),
    )?;
    let (code, text) = post(&format!("{}/-/reload", c.http))?;
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("remote_write: NOT reloaded"), "{text}");
    assert_eq!(write_status(&c.http, tok_c, "reload_value", now_ms())?, 204, "tokens applied");
    let t3 = now_ms();
    assert_eq!(write_status(&c.http, tok_c, "reload_value", t3)?, 204);
    wait_for("rw2 still sent to", Duration::from_secs(20), || rw2.got(t3).then_some(()))?;
    assert_eq!(metric(&c.http, "csoc_collector_config_last_reload_successful"), Some(0.0));

    // A file that does not parse changes nothing; SIGHUP reloads too.
    std::fs::write(&cfg, "agent_tokens: [\n")?;
    let pid = c.proc.child.id().to_string();
    ensure!(Command::new("kill").args(["-HUP", &pid]).status()?.success(), "kill -HUP");
    wait_for("the failed SIGHUP reload logged", Duration::from_secs(10), || {
        c.proc.log_text().contains("configuration reload incomplete").then_some(())
    })?;
    assert_eq!(write_status(&c.http, tok_c, "reload_value", now_ms())?, 204, "token C stays");
    std::fs::write(
        &cfg,
        config(
            &format!("  - {{commons: alpha, token: {tok_a}}}\n"),
            &receiver("hook1", &hook1.url),
            &rw1.url,
        ),
    )?;
    ensure!(Command::new("kill").args(["-HUP", &pid]).status()?.success(), "kill -HUP");
    wait_for("SIGHUP reloaded everything", Duration::from_secs(20), || {
        (metric(&c.http, "csoc_collector_config_last_reload_successful") == Some(1.0)).then_some(())
    })?;
    assert_eq!(write_status(&c.http, tok_a, "reload_value", now_ms())?, 204);
    assert_eq!(write_status(&c.http, tok_c, "reload_value", now_ms())?, 401);
    Ok(())
}
