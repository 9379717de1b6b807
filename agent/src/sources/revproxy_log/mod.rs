//! The `revproxy_log` source: tails revproxy's (nginx) JSON access log
//! (`shared/gen3/revproxy-log.md`) and reports request, latency, byte,
//! login, download and active-user metrics, all with `job="gen3"`:
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `gen3_http_requests_total` | service, code, method | requests |
//! | `gen3_http_request_duration_seconds_{bucket,sum,count}` | service (, le) | `$request_time` histogram; buckets 5ms…300s |
//! | `gen3_http_response_bytes_total` | service | `$body_bytes_sent` |
//! | `gen3_logins_total` | idp (, upstream_idp, institution) | successful login callbacks (`GET /user/login/<idp>/login`, `/user/login/ras/callback`, answered 3xx; `shib` → `itrust`); `upstream_idp` and `institution` are fence's `idp` and `shib_idp` query parameters of the same session's login start (`/user/login/fence?idp=shibboleth&shib_idp=urn:…`), present only when it carried them |
//! | `gen3_downloads_total` | kind=drs\|presigned | signed download URLs issued, split as Gen3's dashboards split them (fence's `drs` label): `drs` = DRS `…/objects/<id>/access…` (and bulk `/objects/access`), `presigned` = `GET /user/data/download/<guid>`; answered 2xx/3xx |
//! | `gen3_uploads_total` | | signed upload URLs issued: `POST /user/data/upload`, `GET /user/data/upload/<guid>`, `POST /user/data/multipart/upload` (one per part), answered 2xx |
//! | `gen3_active_users` | window=5m\|1h\|1d | distinct authenticated `user_id` in the window |
//! | `gen3_revproxy_log_lines_total` | result=ok\|malformed\|too_long | the source's own health |
//! | `gen3_revproxy_log_file_changes_total` | kind=rotated\|truncated | rotations and truncations seen |
//!
//! `service` is `proxy_service`, except that a `noproxy` record with an
//! upstream (revproxy forwarded it: sheepdog's `/api/`, `/peregrine/_version`)
//! is named after the upstream host (`sheepdog-service.<ns>…` → `sheepdog`);
//! records revproxy refused itself (empty upstream) stay `noproxy`. Label
//! values are bounded: at most `max_services` services (then `other`), 32
//! idps (then `other`), 32 (idp, upstream_idp, institution) combinations
//! (then upstream_idp and institution `other`), parameter values cut at 128
//! bytes, methods outside the standard nine are `other`. A login start is
//! paired with its callback through `session_id` (the revproxy `session`
//! cookie), in memory only (at most 4096 starts in flight): a login that
//! straddles an agent restart counts without its institution.
//!
//! Counters are cumulative since the state file began and are saved with
//! the read offset; samples carry the emission time. Active users are
//! counted by log time: users (FNV-1a hashes of `user_id`) with their last
//! `date_access`, at most `max_users` of them (≈40 bytes each; when full,
//! users unseen for a day go first, then the least recently seen). The
//! windows end at the newest record's time, or at the current time when the
//! source has caught up with the file.
//!
//! Lines are read as nginx writes them or as kubelet's CRI files hold them
//! (`<time> stdout F <line>`, `P` chunks reassembled); `\xHH` escapes are
//! decoded. Malformed lines (error-log lines mixed in, truncated records,
//! foreign JSON) are counted and skipped. See [`tail`] for rotation,
//! truncation and the state file.
//!
//! Three ways to read the log, all counting into the same counters and
//! saving them atomically with their read positions in the state file:
//! - one file (`path`), see [`tail`];
//! - a glob `path` (`/var/log/pods/gen3_revproxy-*/revproxy/*.log`, for an
//!   agent run as a DaemonSet), each file with its own offset, see [`glob`];
//! - the Kubernetes API (`kubernetes: {namespace, selector, container}` or
//!   `--revproxy-log-pods SELECTOR`): `pods/log` of every matching pod, with
//!   exact resume, see [`kube`]. Every replica and every rollout's pods add
//!   to the same series.

pub mod glob;
pub mod kube;
pub mod parse;
pub mod stats;
pub mod tail;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};

use super::pod_logs::{FollowOptions, PodLogSelector, Shared};
use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;
use csoc_common::duration::{de_bytes, de_duration, parse_duration};
use glob::GlobTailer;
pub use tail::Format;
use tail::{TailOptions, Tailer};

const FIELD: &str = "sources.revproxy_log";

/// Where to start in a file seen for the first time (no state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Count the whole existing file.
    #[default]
    Beginning,
    /// Count only lines written from now on.
    End,
}

/// Configuration of the `revproxy_log` source (`sources.revproxy_log`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevproxyLogConfig {
    /// Tail the log at all (default false; `--revproxy-log PATH` turns it on).
    pub enabled: bool,
    /// The access log: a file nginx writes, or the kubelet's CRI file
    /// (`/var/log/containers/revproxy-deployment-…_<ns>_revproxy-….log`), or
    /// a glob pattern (`*`, `?`, `[`) whose every match is followed
    /// (`/var/log/pods/<ns>_revproxy-*/revproxy/*.log`). Set this or
    /// `kubernetes`.
    pub path: PathBuf,
    /// Read the log through the Kubernetes API instead of a file:
    /// `pods/log` of every pod of `namespace` matching `selector` (only
    /// `container` if given). `--revproxy-log-pods SELECTOR` sets it. Needs
    /// list/watch/get on pods and get on pods/log. The API serves nginx's
    /// own lines, so `format`, `poll_interval` and `max_read_bytes` do not
    /// apply.
    pub kubernetes: Option<PodLogSelector>,
    /// `auto` (default: CRI lines recognised by their prefix), `json`, `cri`.
    pub format: Format,
    /// How often the file is checked for new lines (default 1s).
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// How often the counters are saved and sent; default the agent's interval.
    #[serde(deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
    /// The offset and counters file; default `<spool_dir>/revproxy_log.state`.
    pub state_file: Option<PathBuf>,
    /// Longest line kept (default 64KiB); longer ones count as too_long.
    #[serde(deserialize_with = "de_bytes")]
    pub max_line_bytes: u64,
    /// Most bytes read per poll (default 32MiB), so a backlog is read in steps.
    #[serde(deserialize_with = "de_bytes")]
    pub max_read_bytes: u64,
    /// Without state, start at the `beginning` (default) or `end` of the file.
    pub start_at: StartAt,
    /// Distinct `service` label values (default 200); more become `other`.
    pub max_services: usize,
    /// Distinct users tracked for gen3_active_users (default 100000).
    pub max_users: usize,
    /// Value of the `job` label (default `gen3`).
    pub job: String,
}

impl Default for RevproxyLogConfig {
    fn default() -> Self {
        RevproxyLogConfig {
            enabled: false,
            path: PathBuf::new(),
            kubernetes: None,
            format: Format::Auto,
            poll_interval: Duration::from_secs(1),
            interval: None,
            state_file: None,
            max_line_bytes: 64 << 10,
            max_read_bytes: 32 << 20,
            start_at: StartAt::Beginning,
            max_services: 200,
            max_users: 100_000,
            job: "gen3".into(),
        }
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: format!("{FIELD}.{field}"),
        message: message.into(),
    }
}

impl RevproxyLogConfig {
    /// Checks every value; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.kubernetes, self.path.as_os_str().is_empty()) {
            (Some(_), false) => return Err(invalid("kubernetes", "set path or kubernetes, not both")),
            (Some(k), true) => {
                k.validate(&format!("{FIELD}.kubernetes"))?;
            }
            (None, true) => {
                return Err(invalid(
                    "path",
                    "required when the source is enabled (or use --revproxy-log PATH, or kubernetes / --revproxy-log-pods SELECTOR)",
                ));
            }
            (None, false) => {
                let p = self.path.to_string_lossy();
                if glob::is_glob(&p) {
                    ::glob::Pattern::new(&p).map_err(|e| invalid("path", format!("{p:?} is not a valid glob: {e}")))?;
                }
            }
        }
        if self.poll_interval < Duration::from_millis(10) || self.poll_interval > Duration::from_secs(3600) {
            return Err(invalid("poll_interval", format!("{:?} is outside 10ms..1h", self.poll_interval)));
        }
        if let Some(i) = self.interval
            && i < Duration::from_millis(100)
        {
            return Err(invalid("interval", format!("{i:?} is below the minimum of 100ms")));
        }
        if !(1024..=16 << 20).contains(&self.max_line_bytes) {
            return Err(invalid("max_line_bytes", format!("{} is outside 1KiB..16MiB", self.max_line_bytes)));
        }
        if self.max_read_bytes < 2 * self.max_line_bytes {
            return Err(invalid(
                "max_read_bytes",
                format!(
                    "{} must be at least twice max_line_bytes ({})",
                    self.max_read_bytes, self.max_line_bytes
                ),
            ));
        }
        if !(1..=100_000).contains(&self.max_services) {
            return Err(invalid("max_services", format!("{} is outside 1..100000", self.max_services)));
        }
        if !(1..=10_000_000).contains(&self.max_users) {
            return Err(invalid("max_users", format!("{} is outside 1..10000000", self.max_users)));
        }
        if self.job.is_empty() {
            return Err(invalid("job", "must not be empty"));
        }
        if let Some(p) = &self.state_file
            && p.as_os_str().is_empty()
        {
            return Err(invalid("state_file", "must not be empty"));
        }
        Ok(())
    }

    /// The state file: `state_file`, or `revproxy_log.state` in the spool.
    pub fn state_path(&self, spool_dir: &Path) -> PathBuf {
        self.state_file.clone().unwrap_or_else(|| spool_dir.join("revproxy_log.state"))
    }

    /// What the state file names in kubernetes mode (a state for other pods
    /// is not resumed).
    fn kube_identity(&self, k: &PodLogSelector) -> PathBuf {
        let mut s = format!("kubernetes://{}?{}", k.namespace, k.selector);
        if let Some(c) = &k.container {
            s.push_str(&format!("&container={c}"));
        }
        PathBuf::from(s)
    }

    fn tail_options(&self) -> TailOptions {
        TailOptions {
            path: self.path.clone(),
            format: self.format,
            max_line_bytes: self.max_line_bytes as usize,
            max_read_bytes: self.max_read_bytes,
            start_at_end: self.start_at == StartAt::End,
            limits: stats::Limits {
                max_services: self.max_services,
                max_users: self.max_users,
            },
        }
    }
}

/// The source.
pub struct RevproxyLogSource {
    cfg: RevproxyLogConfig,
    state_path: PathBuf,
    kubeconfig: Option<PathBuf>,
}

impl RevproxyLogSource {
    /// Validates `cfg`; `spool_dir` is where the state goes by default.
    pub fn new(cfg: &RevproxyLogConfig, spool_dir: &Path) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(RevproxyLogSource {
            cfg: cfg.clone(),
            state_path: cfg.state_path(spool_dir),
            kubeconfig: None,
        })
    }

    /// The kubeconfig for the kubernetes mode (the agent's `kubeconfig`;
    /// None: in-cluster, then `KUBECONFIG`).
    pub fn with_kubeconfig(mut self, kubeconfig: Option<PathBuf>) -> Self {
        self.kubeconfig = kubeconfig;
        self
    }
}

/// The file modes: one file or every match of a glob.
enum Files {
    One(Tailer),
    Glob(GlobTailer),
}

impl Files {
    fn poll(&mut self) -> std::io::Result<u64> {
        match self {
            Files::One(t) => t.poll(),
            Files::Glob(g) => g.poll(),
        }
    }

    fn state(&mut self) -> tail::State {
        match self {
            Files::One(t) => t.state(),
            Files::Glob(g) => g.state(),
        }
    }

    fn counters(&mut self) -> &mut stats::Counters {
        match self {
            Files::One(t) => &mut t.counters,
            Files::Glob(g) => &mut g.counters,
        }
    }

    fn caught_up(&self) -> bool {
        match self {
            Files::One(t) => t.caught_up,
            Files::Glob(g) => g.caught_up,
        }
    }
}

fn lock(t: &Mutex<Files>) -> std::sync::MutexGuard<'_, Files> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Saves the state and builds the frame (in that order: what is sent has
/// been saved, so a restart never goes back below a sent value).
fn save_and_frame(t: &mut Files, state_path: &Path, source: &str, job: &str) -> (crate::model::Frame, Option<std::io::Error>) {
    let st = t.state();
    let err = tail::save_state(state_path, &st).err();
    let now = csoc_common::time::now_ms();
    let caught_up = t.caught_up();
    let c = t.counters();
    let newest = c.users.newest;
    let end = if caught_up { newest.max(now / 1000) } else { newest };
    (c.frame(source, job, now, end), err)
}

impl RevproxyLogSource {
    /// Kubernetes mode: the pod follower feeding a [`kube::RevproxySink`].
    async fn run_kubernetes(self, k: PodLogSelector, state: Option<tail::State>, cx: SourceContext) {
        let ident = self.cfg.kube_identity(&k);
        let (counters, cursors, fresh) = match state {
            Some(s) if s.path == ident => (s.counters, s.pods, false),
            _ => (stats::Counters::default(), Default::default(), true),
        };
        let sink = kube::RevproxySink::new(counters, self.cfg.tail_options().limits, k.container.clone());
        let shared = Arc::new(Mutex::new(Shared { sink, cursors }));
        let mut fo = FollowOptions::new(&k.namespace, Some(k.selector.trim().to_string()), self.cfg.max_line_bytes as usize);
        fo.start_at_end = self.cfg.start_at == StartAt::End && fresh;
        tracing::info!(
            source = %cx.name,
            namespace = %k.namespace,
            selector = %k.selector,
            container = ?k.container,
            state = %self.state_path.display(),
            resumed = !fresh,
            "revproxy_log following pods' logs"
        );
        let interval = self.cfg.interval.unwrap_or(cx.interval);
        let (name, job) = (cx.name.clone(), self.cfg.job.clone());
        super::pod_logs::run_with_state(
            self.kubeconfig.clone(),
            vec![fo],
            shared,
            cx,
            interval,
            self.state_path.clone(),
            move |g, now| {
                let c = &mut g.sink.counters;
                c.settle();
                let st = tail::State {
                    version: 1,
                    path: ident.clone(),
                    counters: c.clone(),
                    pods: g.cursors.clone(),
                    ..Default::default()
                };
                // The saved copy has the user list; the live one keeps its map only.
                c.users.seen = Vec::new();
                let end = c.users.newest.max(now / 1000);
                (serde_json::to_vec(&st), c.frame(&name, &job, now, end))
            },
        )
        .await;
    }
}

impl Source for RevproxyLogSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            let interval = self.cfg.interval.unwrap_or(cx.interval);
            let state = match tail::load_state(&self.state_path) {
                Ok(s) => s,
                Err(e) => {
                    cx.error("state");
                    tracing::warn!(source = %cx.name, file = %self.state_path.display(), error = %e, "unreadable state file: starting over");
                    None
                }
            };
            if let Some(k) = self.cfg.kubernetes.clone() {
                return self.run_kubernetes(k, state, cx).await;
            }
            let opts = self.cfg.tail_options();
            let files = if glob::is_glob(&self.cfg.path.to_string_lossy()) {
                Files::Glob(GlobTailer::new(opts, state.clone()))
            } else {
                Files::One(Tailer::new(opts, state.clone()))
            };
            tracing::info!(
                source = %cx.name,
                path = %self.cfg.path.display(),
                glob = matches!(files, Files::Glob(_)),
                state = %self.state_path.display(),
                resumed = state.is_some_and(|s| s.path == self.cfg.path),
                "revproxy_log tailing"
            );
            let tailer = Arc::new(Mutex::new(files));
            let mut tick = tokio::time::interval(self.cfg.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_emit: Option<Instant> = None;
            let mut last_err: Option<String> = None;
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let t = tailer.clone();
                let emit = last_emit.is_none_or(|l| l.elapsed() >= interval);
                let path = self.state_path.clone();
                let (name, job) = (cx.name.clone(), self.cfg.job.clone());
                let res = tokio::task::spawn_blocking(move || {
                    let mut g = lock(&t);
                    let polled = g.poll();
                    let out = emit.then(|| save_and_frame(&mut g, &path, &name, &job));
                    (polled, out)
                })
                .await;
                let Ok((polled, out)) = res else {
                    cx.error("panic");
                    break;
                };
                match polled {
                    Ok(_) => last_err = None,
                    Err(e) => {
                        cx.error("read");
                        let msg = e.to_string();
                        if last_err.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(source = %cx.name, path = %self.cfg.path.display(), error = %msg, "cannot read the access log");
                        }
                        last_err = Some(msg);
                    }
                }
                if let Some((frame, save_err)) = out {
                    last_emit = Some(Instant::now());
                    if let Some(e) = save_err {
                        cx.error("state");
                        tracing::warn!(source = %cx.name, file = %self.state_path.display(), error = %e, "cannot save the state");
                    }
                    if !cx.emit(frame).await {
                        break;
                    }
                }
            }
            let t = tailer.clone();
            let path = self.state_path.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let st = lock(&t).state();
                if let Err(e) = tail::save_state(&path, &st) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot save the revproxy_log state");
                }
            })
            .await;
        })
    }
}

#[cfg(test)]
mod tests;
