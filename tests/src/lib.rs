//! Helpers for csoc-watch's end-to-end tests: build and locate the real
//! binaries, run them as child processes on free loopback ports with logs in
//! a per-test directory, query their HTTP APIs, and stop them by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

pub mod promqltest;
pub mod workload;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a workspace binary, built (once per test run) in the same profile
/// as the tests.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let release = !cfg!(debug_assertions);
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args(["build", "--quiet", "-p", "csoc-agent", "-p", "csoc-collector", "--bins"]);
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

/// A free TCP port on 127.0.0.1 (bound and released; a race with another
/// process is possible but unlikely on a test machine).
pub fn free_port() -> u16 {
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
    pub fn start(dir: &Path, extra: &[&str]) -> anyhow::Result<Collector> {
        Self::start_on(dir, free_port(), free_port(), extra)
    }

    /// As [`Collector::start`] on given ports (to restart on the same ones).
    pub fn start_on(dir: &Path, http_port: u16, grpc_port: u16, extra: &[&str]) -> anyhow::Result<Collector> {
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--http-listen".into(),
            format!("127.0.0.1:{http_port}"),
            "--grpc-listen".into(),
            format!("127.0.0.1:{grpc_port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::start(dir, "collector", &bin("csoc-collector"), &args)?;
        let c = Collector {
            proc,
            http: format!("http://127.0.0.1:{http_port}"),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
        };
        wait_for("collector /-/ready", Duration::from_secs(30), || {
            get_text(&format!("{}/-/ready", c.http)).ok().filter(|(code, _)| *code == 200)
        })?;
        Ok(c)
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
