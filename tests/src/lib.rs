//! Helpers for csoc-watch's end-to-end tests: build and locate the real
//! binaries, run them as child processes on free loopback ports with logs in
//! a per-test directory, query their HTTP APIs, and stop them by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use csoc_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;
use serde_json::Value;

pub mod fakekube;
pub mod grpc;
/// A throw-away PostgreSQL server (the postgres source's tests).
pub mod postgres;
pub mod workload;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a workspace binary (csoc-agent, csoc-collector, csoc-fake-gen3),
/// built (once per test run, one cargo invocation) in the same profile as the
/// tests.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let release = !cfg!(debug_assertions);
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args(["build", "--quiet", "-p", "csoc-agent", "-p", "csoc-collector", "-p", "csoc-tests"])
            .args([
                "--bin",
                "csoc-agent",
                "--bin",
                "csoc-collector",
                "--bin",
                "csoc-fake-gen3",
                "--bin",
                "csoc-agentsim",
            ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|e| format!("running cargo build: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build of the binaries failed: {status}"));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        Ok(target.join(if release { "release" } else { "debug" }))
    });
    match dir {
        Ok(d) => d.join(name),
        Err(e) => panic!("{e}"),
    }
}

/// A free TCP port on 127.0.0.1, for a server the test starts next.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), never
/// twice in one process: a port from `bind(":0")` comes from the range the
/// kernel also gives to outgoing connections, and with hundreds of them
/// open (the load tests) one could take the port before the server binds
/// it (CI once timed out so). The port is checked free by binding it.
/// Falls back to `bind(":0")` when the range leaves too little below it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|w| w.parse::<u32>().ok()))
        .unwrap_or(32768);
    const FLOOR: u32 = 20_000;
    if low >= FLOOR + 2_000 {
        let span = low - FLOOR;
        // A start that differs between processes (pid and clock), then
        // sequential: no port is handed out twice in one process.
        let seed = std::process::id().wrapping_mul(7919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        let _ = NEXT.compare_exchange(0, seed % span + 1, Ordering::SeqCst, Ordering::SeqCst);
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let port = FLOOR + n % span;
            if let Ok(p) = u16::try_from(port)
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            {
                return p;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A child process whose stderr goes to a log file; stopped on drop.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    name: String,
}

impl Proc {
    /// Starts `program` with `args`, logging to `<dir>/<name>.log`.
    pub fn start(dir: &Path, name: &str, program: &Path, args: &[String]) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Proc {
            child,
            log,
            name: name.to_string(),
        })
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to 20 s) for the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!(
                    "{} did not exit within 20s of SIGTERM; killed. Log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log_text());
        }
    }
}

/// Polls `f` every 200 ms until it returns Some, or fails after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// HTTP GET, body as text (any status).
pub fn get_text(url: &str) -> anyhow::Result<(u16, String)> {
    let r = reqwest::blocking::Client::new().get(url).timeout(Duration::from_secs(10)).send()?;
    let code = r.status().as_u16();
    Ok((code, r.text()?))
}

/// HTTP GET, body as JSON (any status).
pub fn get_json(url: &str) -> anyhow::Result<(u16, Value)> {
    let (code, body) = get_text(url)?;
    let v = serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))?;
    Ok((code, v))
}

/// GET a Prometheus-API endpoint with query parameters; fails unless the
/// answer is 200 with `"status": "success"`.
pub fn api(base: &str, path: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
    let r = reqwest::blocking::Client::new()
        .get(format!("{base}{path}"))
        .query(params)
        .timeout(Duration::from_secs(10))
        .send()?;
    let code = r.status().as_u16();
    let v: Value = r.json()?;
    ensure!(
        code == 200 && v["status"] == "success",
        "GET {base}{path} {params:?}: HTTP {code}: {v}"
    );
    Ok(v)
}

/// A running collector.
pub struct Collector {
    /// The process.
    pub proc: Proc,
    /// HTTP base URL.
    pub http: String,
    /// gRPC URL for agents.
    pub grpc: String,
}

impl Collector {
    /// Starts a collector with its data in `<dir>/data` on free ports, plus
    /// `extra` flags, and waits until it is ready.
    ///
    /// A port picked by [`free_port`] can be taken by another process (an
    /// outgoing connection's ephemeral port, say) before the collector binds
    /// it; a collector that exits because an address is in use is started
    /// again on fresh ports, up to three times.
    pub fn start(dir: &Path, extra: &[&str]) -> anyhow::Result<Collector> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_on(dir, free_port(), free_port(), extra) {
                Err(e) if attempt < 3 && port_clash(&format!("{e:#}")) => {
                    eprintln!("collector: a port was taken before it bound it; retrying on fresh ports: {e:#}");
                }
                r => return r,
            }
        }
    }

    /// As [`Collector::start`] on given ports (to restart on the same ones).
    pub fn start_on(dir: &Path, http_port: u16, grpc_port: u16, extra: &[&str]) -> anyhow::Result<Collector> {
        let args = collector_args(dir, http_port, grpc_port, extra);
        let proc = Proc::start(dir, "collector", &bin("csoc-collector"), &args)?;
        let mut c = Collector {
            proc,
            http: format!("http://127.0.0.1:{http_port}"),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if get_text(&format!("{}/-/ready", c.http)).is_ok_and(|(code, _)| code == 200) {
                return Ok(c);
            }
            if let Some(st) = c.proc.child.try_wait()? {
                bail!("collector exited before it was ready ({st}). Log:\n{}", c.proc.log_text());
            }
            if Instant::now() > deadline {
                bail!("timed out after 60s waiting for collector /-/ready. Log:\n{}", c.proc.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An instant query; returns `data.result` (fails on an error response).
    pub fn query(&self, q: &str) -> anyhow::Result<Vec<Value>> {
        let url = format!("{}/api/v1/query?query={}", self.http, urlencode(q));
        let (code, v) = get_json(&url)?;
        if code != 200 || v["status"] != "success" {
            bail!("query {q:?}: HTTP {code}: {v}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Whether a collector's exit message says one of its ports was taken
/// (by another process, or [`free_port`] handed out one port twice).
fn port_clash(msg: &str) -> bool {
    msg.contains("exited before it was ready") && (msg.contains("Address already in use") || msg.contains("is also the HTTP address"))
}

/// A collector's arguments: data in `<dir>/data`, HTTP and gRPC on the
/// given loopback ports, then `extra`.
pub fn collector_args(dir: &Path, http_port: u16, grpc_port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--http-listen".into(),
        format!("127.0.0.1:{http_port}"),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc_port}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Starts a csoc-agent with its spool and logs in `dir`, `name` naming the
/// log and spool, on a free /metrics port; returns the process and the
/// /metrics URL.
pub fn start_agent(dir: &Path, name: &str, collector: &str, extra: &[&str]) -> anyhow::Result<(Proc, String)> {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "--collector".into(),
        collector.into(),
        "--spool-dir".into(),
        dir.join(format!("{name}-spool")).display().to_string(),
        "--http-listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = Proc::start(dir, name, &bin("csoc-agent"), &args)?;
    Ok((p, format!("http://127.0.0.1:{port}/metrics")))
}

/// A running csoc-fake-gen3 (fixture commons with faults).
pub struct FakeGen3 {
    /// The process.
    pub proc: Proc,
    /// Its plain-HTTP base URL.
    pub http: String,
    /// Its HTTPS base URL, when started with `--tls-listen`.
    pub https: Option<String>,
}

impl FakeGen3 {
    /// Starts the fake on free loopback ports with `extra` flags (e.g.
    /// `--tls-listen 127.0.0.1:0 --tls-cert expired`), logging to
    /// `<dir>/<name>.log`; waits for its `listening on` lines.
    pub fn start(dir: &Path, name: &str, extra: &[&str]) -> anyhow::Result<FakeGen3> {
        let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let tls = extra.contains(&"--tls-listen");
        let proc = Proc::start(dir, name, &bin("csoc-fake-gen3"), &args)?;
        let (http, https) = wait_for(&format!("{name} listening"), Duration::from_secs(30), || {
            let log = proc.log_text();
            let find = |scheme: &str| {
                log.lines()
                    .find_map(|l| l.strip_prefix("listening on ").filter(|u| u.starts_with(scheme)))
                    .map(str::to_string)
            };
            let http = find("http://")?;
            match (tls, find("https://")) {
                (true, None) => None,
                (_, https) => Some((http, https)),
            }
        })?;
        Ok(FakeGen3 { proc, http, https })
    }

    /// Switches a service's fault mode (`ok`, `down`, `slow`, `500`).
    pub fn fault(&self, service: &str, mode: &str) -> anyhow::Result<()> {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/_fake/fault?service={service}&mode={mode}", self.http))
            .timeout(Duration::from_secs(10))
            .send()?;
        ensure!(r.status().is_success(), "fault {service}={mode}: HTTP {}", r.status());
        Ok(())
    }

    /// `GET /_fake/state`.
    pub fn state(&self) -> anyhow::Result<Value> {
        Ok(get_json(&format!("{}/_fake/state", self.http))?.1)
    }
}

/// The value of one sample line `name{...} value` in an exposition (the
/// first line whose series starts with `series`).
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// MemTotal of this machine in bytes, from /proc/meminfo.
pub fn mem_total_bytes() -> f64 {
    let s = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kb * 1024.0
}

/// A remote-write series from label pairs and (ms, value) samples.
pub fn series(labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(k, v)| Label {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples.into_iter().map(|(t, v)| Sample { value: v, timestamp: t }).collect(),
        ..Default::default()
    }
}

/// Sends a remote-write request with a bearer token; expects 204.
pub fn remote_write(base: &str, token: &str, req: &WriteRequest) -> anyhow::Result<()> {
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())?;
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("Authorization", format!("Bearer {token}"))
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()?;
    let code = r.status().as_u16();
    ensure!(code == 204, "remote write: HTTP {code}: {}", r.text().unwrap_or_default());
    Ok(())
}

/// The path of `name` in PATH; `None` (with a message) when missing, or a
/// panic under `CSOC_REQUIRE_INTEROP=1`.
pub fn program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()));
    if found.is_none() {
        let package = match name {
            "alertmanager" | "prometheus-alertmanager" => "prometheus-alertmanager",
            "prometheus-node-exporter" | "node_exporter" => "prometheus-node-exporter",
            "victoria-metrics" => "victoria-metrics",
            "blackbox_exporter" | "prometheus-blackbox-exporter" => "prometheus-blackbox-exporter",
            _ => "prometheus",
        };
        let msg = format!("{name} not found in PATH (Debian/Ubuntu: apt-get install {package})");
        if std::env::var("CSOC_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("{msg}, and CSOC_REQUIRE_INTEROP=1 forbids skipping");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// Runs a program to completion within `timeout` (killed by its PID
/// otherwise); returns stdout, failing on a non-zero exit.
pub fn run(dir: &Path, program: &Path, args: &[String], timeout: Duration) -> anyhow::Result<String> {
    let out_path = dir.join("run.stdout");
    let err_path = dir.join("run.stderr");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} {args:?} did not finish within {timeout:?}", program.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_path)?;
    let err = std::fs::read_to_string(&err_path)?;
    ensure!(
        status.success(),
        "{} {args:?}: {status}\nstdout: {out}\nstderr: {err}",
        program.display()
    );
    Ok(out)
}

/// A webhook receiver on 127.0.0.1 for tests: records every JSON body
/// POSTed to it (with its arrival time), and can be told to answer 500 to
/// the next requests. Stops on drop.
pub struct WebhookSink {
    /// Its URL.
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<(std::time::SystemTime, String, Value)>>>,
    fail_next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl WebhookSink {
    /// Starts the receiver on a free port.
    pub fn start() -> anyhow::Result<WebhookSink> {
        Self::start_on("127.0.0.1:0")
    }

    /// Starts the receiver on `addr`.
    pub fn start_on(addr: &str) -> anyhow::Result<WebhookSink> {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let fail_next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rx, fx, sx) = (received.clone(), fail_next.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sx.load(Ordering::Relaxed) {
                let (stream, _) = match listener.accept() {
                    Ok(x) => x,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => continue,
                });
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
                let failing = fx.load(Ordering::SeqCst) > 0;
                let status = if failing {
                    fx.fetch_sub(1, Ordering::SeqCst);
                    "500 Internal Server Error"
                } else {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body)
                        && let Ok(mut r) = rx.lock()
                    {
                        r.push((std::time::SystemTime::now(), path, v));
                    }
                    "200 OK"
                };
                let mut w = stream;
                let _ = write!(w, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Ok(WebhookSink {
            url,
            received,
            fail_next,
            stop,
        })
    }

    /// Every JSON body accepted so far, oldest first.
    pub fn received(&self) -> Vec<Value> {
        self.received
            .lock()
            .map(|r| r.iter().map(|x| x.2.clone()).collect())
            .unwrap_or_default()
    }

    /// Bodies with their arrival times and request paths.
    pub fn received_at(&self) -> Vec<(std::time::SystemTime, String, Value)> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Answer HTTP 500 to the next `n` requests.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits until a body satisfies `pred`; returns it.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        wait_for(what, timeout, || self.received().into_iter().find(|v| pred(v)))
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|w| w.parse::<u16>().ok()));
        let ports: Vec<u16> = (0..200).map(|_| super::free_port()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice");
        for p in &ports {
            std::net::TcpListener::bind(("127.0.0.1", *p)).unwrap_or_else(|e| panic!("port {p}: {e}"));
            if let Some(low) = low
                && low >= 22_000
            {
                assert!(*p < low, "port {p} is in the ephemeral range from {low}");
            }
        }
    }
}
