//! The running sources, reconfigured in place when the configuration
//! changes (a central push, a reload of the local file).
//!
//! Each running source has a fingerprint of the settings it was built from
//! ([`fingerprint`]). On a new configuration every source is built first (a
//! source that cannot be built rejects the whole configuration, nothing
//! changed); then a source whose fingerprint is unchanged keeps running
//! untouched, one whose settings changed is stopped — and awaited, so that
//! it saves its state (revproxy_log's offsets and counters, the log
//! counters' state, in the spool directory) — before its new instance
//! starts from that state, so nothing is counted twice or lost; sources no
//! longer enabled are stopped, new ones started.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::NamedSources;
use crate::config::AgentConfig;
use crate::metrics::SourceMetrics;
use crate::model::Frame;
use crate::sources::SourceContext;

/// How long a stopped source may take to finish (save its state).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The settings a source named `name` is built from, as a comparable text.
/// A source this table does not know is restarted on any change of
/// `sources`.
pub fn fingerprint(cfg: &AgentConfig, name: &str) -> String {
    let s = &cfg.sources;
    let own = match name {
        "host" => format!("{:?}", s.host),
        "gen3_status" => format!("{:?}", s.gen3_status),
        "gen3_usage" => format!("{:?}{:?}", s.gen3_usage, s.gen3_status),
        "revproxy_log" => format!("{:?}", s.revproxy_log),
        "scrape" => format!("{:?}", s.scrape),
        "kubernetes" | "log_counters" => format!("{:?}", s.kubernetes),
        _ => format!("{s:?}"),
    };
    format!("{own}|{:?}|{:?}|{:?}", cfg.interval, cfg.kubeconfig, cfg.spool_dir)
}

struct Running {
    name: String,
    fingerprint: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What [`SourceSet::apply`] did, by source name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Started (new).
    pub started: Vec<String>,
    /// Restarted with new settings.
    pub restarted: Vec<String>,
    /// Stopped (no longer configured).
    pub stopped: Vec<String>,
    /// Kept running, settings unchanged.
    pub kept: Vec<String>,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "started {:?}, restarted {:?}, stopped {:?}, unchanged {:?}",
            self.started, self.restarted, self.stopped, self.kept
        )
    }
}

/// The running sources.
pub struct SourceSet {
    running: Vec<Running>,
    out: mpsc::Sender<Frame>,
    metrics: SourceMetrics,
    parent: CancellationToken,
}

impl SourceSet {
    /// An empty set whose sources send to `out` and stop with `parent`.
    pub fn new(out: mpsc::Sender<Frame>, metrics: SourceMetrics, parent: CancellationToken) -> Self {
        SourceSet {
            running: Vec::new(),
            out,
            metrics,
            parent,
        }
    }

    /// The names of the running sources.
    pub fn names(&self) -> Vec<String> {
        self.running.iter().map(|r| r.name.clone()).collect()
    }

    fn spawn(&mut self, cfg: &AgentConfig, name: String, src: Box<dyn crate::sources::Source>) {
        let stop = self.parent.child_token();
        let cx = SourceContext {
            name: name.clone(),
            shutdown: stop.clone(),
            out: self.out.clone(),
            interval: cfg.interval,
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(src.run(cx));
        self.running.push(Running {
            fingerprint: fingerprint(cfg, &name),
            name,
            stop,
            task,
        });
    }

    async fn stop_one(r: Running) {
        r.stop.cancel();
        let mut task = r.task;
        if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
            tracing::warn!(source = %r.name, "source did not stop within {STOP_TIMEOUT:?}; aborted");
            task.abort();
        }
    }

    /// Runs `built` (the sources of `cfg`), keeping the running ones whose
    /// settings did not change.
    pub async fn apply(&mut self, cfg: &AgentConfig, built: NamedSources) -> Changes {
        let mut ch = Changes::default();
        let mut old = std::mem::take(&mut self.running);
        let mut start = Vec::new();
        for (name, src) in built {
            let fp = fingerprint(cfg, &name);
            match old.iter().position(|r| r.name == name) {
                Some(i) if old[i].fingerprint == fp => {
                    self.running.push(old.swap_remove(i));
                    ch.kept.push(name);
                }
                Some(i) => {
                    Self::stop_one(old.swap_remove(i)).await;
                    ch.restarted.push(name.clone());
                    start.push((name, src));
                }
                None => {
                    ch.started.push(name.clone());
                    start.push((name, src));
                }
            }
        }
        for r in old {
            ch.stopped.push(r.name.clone());
            Self::stop_one(r).await;
        }
        for (name, src) in start {
            self.spawn(cfg, name, src);
        }
        ch
    }

    /// Stops every source (waiting for each) and drops the set's sender.
    pub async fn stop_all(self) {
        for r in &self.running {
            r.stop.cancel();
        }
        for r in self.running {
            let _ = r.task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rec(i: usize) -> String {
        format!(
            "{{\"gen3log\": \"nginx\", \"date_access\": \"2026-08-21T14:00:17+00:00\", \"user_id\": \"uid:1,a@b\", \"request_id\": \"r{i}\", \"session_id\": \"x\", \"visitor_id\": \"x\", \"network_client_ip\": \"1.2.3.4\", \"network_bytes_write\": 10, \"response_secs\": 0.020, \"http_status_code\": 200, \"http_request\": \"/user/user\", \"http_verb\": \"GET\", \"http_referer\": \"-\", \"http_useragent\": \"-\", \"http_upstream\": \"http://fence-service.ns\", \"proxy_service\": \"fence\", \"message\": \"GET /user/user HTTP/1.1\" }}\n"
        )
    }

    fn append(path: &std::path::Path, n: std::ops::Range<usize>) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open");
        for i in n {
            f.write_all(rec(i).as_bytes()).expect("write");
        }
    }

    fn cfg(dir: &std::path::Path, log: &std::path::Path, poll_ms: u64) -> AgentConfig {
        let y = format!(
            "interval: 100ms\nspool_dir: {}\nsources:\n  host: {{enabled: false}}\n  gen3_usage: {{enabled: false}}\n  revproxy_log: {{enabled: true, path: {}, poll_interval: {poll_ms}ms}}\n",
            dir.display(),
            log.display()
        );
        let c = AgentConfig::from_yaml(&y, std::path::Path::new("t.yml")).expect("parse");
        c.validate().expect("valid");
        c
    }

    /// The latest total of gen3_http_requests_total seen in `rx`.
    async fn requests_total(rx: &mut mpsc::Receiver<Frame>, want: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last = 0.0;
        while tokio::time::Instant::now() < deadline {
            let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await else {
                continue;
            };
            let total: f64 = f
                .samples
                .iter()
                .filter(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == "gen3_http_requests_total"))
                .map(|s| s.value)
                .filter(|v| !v.is_nan())
                .sum();
            if f.samples
                .iter()
                .any(|s| s.labels.iter().any(|(_, v)| v == "gen3_http_requests_total"))
            {
                last = total;
                if last >= want {
                    break;
                }
            }
        }
        last
    }

    #[tokio::test]
    async fn a_changed_source_restarts_from_its_saved_state_and_an_unchanged_one_keeps_running() {
        let d = tempfile::tempdir().expect("tmp");
        let log = d.path().join("access.log");
        append(&log, 0..5);
        let (tx, mut rx) = mpsc::channel(64);
        let reg = &mut prometheus_client::registry::Registry::default();
        let metrics = crate::metrics::AgentMetrics::new(reg);
        let mut set = SourceSet::new(tx, metrics.source.clone(), CancellationToken::new());
        let c1 = cfg(d.path(), &log, 50);
        let ch = set.apply(&c1, crate::build_sources(&c1).expect("build")).await;
        assert_eq!(ch.started, vec!["revproxy_log".to_string()]);
        assert_eq!(requests_total(&mut rx, 5.0).await, 5.0);

        // Same settings: kept running, nothing restarted.
        let ch = set.apply(&c1, crate::build_sources(&c1).expect("build")).await;
        assert_eq!((ch.kept.clone(), ch.restarted.len()), (vec!["revproxy_log".to_string()], 0), "{ch}");

        // New settings: stopped (state saved), then started from that state.
        append(&log, 5..8);
        let c2 = cfg(d.path(), &log, 60);
        let ch = set.apply(&c2, crate::build_sources(&c2).expect("build")).await;
        assert_eq!(ch.restarted, vec!["revproxy_log".to_string()], "{ch}");
        append(&log, 8..10);
        assert_eq!(
            requests_total(&mut rx, 10.0).await,
            10.0,
            "every line counted once across the restart"
        );
        // No later frame counts more.
        tokio::time::sleep(Duration::from_millis(400)).await;
        while let Ok(f) = rx.try_recv() {
            let total: f64 = f
                .samples
                .iter()
                .filter(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == "gen3_http_requests_total"))
                .map(|s| s.value)
                .filter(|v| !v.is_nan())
                .sum();
            assert!(total <= 10.0, "counted twice: {total}");
        }

        // Disabled: stopped.
        let mut c3 = c2.clone();
        c3.sources.revproxy_log.enabled = false;
        let ch = set.apply(&c3, crate::build_sources(&c3).expect("build")).await;
        assert_eq!(ch.stopped, vec!["revproxy_log".to_string()]);
        assert!(set.names().is_empty());
        set.stop_all().await;
    }
}
