//! Alerting and recording rules: Prometheus rule files (`--rules GLOB`),
//! evaluated at each group's interval against the storage; results and
//! `ALERTS`/`ALERTS_FOR_STATE` written back; alerts handed to
//! the [`AlertSink`] it is given (the notifier, in the collector). Reloaded on SIGHUP and `POST /-/reload`; a reload
//! with a broken file keeps the previous rules running. Alert state is
//! saved in the data directory after every evaluation, so that a restart
//! neither forgets a firing alert nor pages it again as new.
//!
//! ```text
//! rule files ──file::load──► Group ──eval (promql)──► samples ──► tsdb
//!                              │                                   ▲
//!                              └── alerts ──► AlertSink (notify)   └ ALERTS, records
//! ```

pub mod file;
pub mod group;
pub mod runbook;
pub mod state;
pub mod template;
pub mod unittest;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::alert::{Alert, AlertSink};
use crate::promql::Engine;
use crate::tsdb::{Appendable, Queryable};
use csoc_common::labels::Labels;
use csoc_common::time::now_ms;
use group::{EvalContext, Group};

/// Settings of the rule manager.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    /// Rule file paths or globs.
    pub patterns: Vec<String>,
    /// Interval of groups that set none.
    pub default_interval: Duration,
    /// Minimum time between re-sends of a firing alert.
    pub resend_delay: Duration,
    /// Labels added to every alert sent, and `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// The collector's URL as users reach it (`$externalURL`, generator URLs).
    pub external_url: String,
    /// Where alert state is saved.
    pub state_path: PathBuf,
    /// Base URL that alerts' `runbook_url`s are rebased onto
    /// ([`runbook`]; empty: left as written).
    pub runbook_base_url: String,
}

/// Rule metrics (`csoc_collector_rule_*`).
#[derive(Clone)]
pub struct RuleMetrics {
    evaluations: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    last_duration: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    last_eval: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    rules: Family<Labels, Gauge>,
    reload_ok: Gauge,
    reload_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    alerts: Family<Labels, Gauge>,
}

impl RuleMetrics {
    /// Registers under the given (collector) registry.
    pub fn new(reg: &mut Registry) -> Self {
        let m = RuleMetrics {
            evaluations: Family::default(),
            failures: Family::default(),
            last_duration: Family::default(),
            last_eval: Family::default(),
            rules: Family::default(),
            reload_ok: Gauge::default(),
            reload_time: Gauge::default(),
            alerts: Family::default(),
        };
        reg.register("rule_evaluations", "Rule evaluations, by group", m.evaluations.clone());
        reg.register("rule_evaluation_failures", "Failed rule evaluations, by group", m.failures.clone());
        reg.register(
            "rule_group_last_duration_seconds",
            "How long the last evaluation of each group took",
            m.last_duration.clone(),
        );
        reg.register(
            "rule_group_last_evaluation_timestamp_seconds",
            "Time of the last evaluation of each group",
            m.last_eval.clone(),
        );
        reg.register("rule_group_rules", "Rules per group", m.rules.clone());
        reg.register(
            "rules_last_reload_successful",
            "Whether the last load of the rule files succeeded (1) or failed (0)",
            m.reload_ok.clone(),
        );
        reg.register(
            "rules_last_reload_success_timestamp_seconds",
            "Time of the last successful load of the rule files",
            m.reload_time.clone(),
        );
        reg.register("alerts", "Alerts by state (pending, firing)", m.alerts.clone());
        m
    }
}

struct Running {
    groups: Vec<Arc<Group>>,
    stops: Vec<CancellationToken>,
    files: Vec<PathBuf>,
}

/// What a (re)load did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSummary {
    /// Files read.
    pub files: usize,
    /// Groups running.
    pub groups: usize,
    /// Rules running.
    pub rules: usize,
}

/// Runs the rule groups.
pub struct RuleManager {
    cfg: RulesConfig,
    cx: EvalContext,
    storage: Arc<dyn Appendable>,
    notifier: Arc<dyn AlertSink>,
    metrics: RuleMetrics,
    running: Mutex<Running>,
    reload_lock: tokio::sync::Mutex<()>,
    /// The rule file patterns now (a reload may change them).
    patterns: Mutex<Vec<String>>,
    /// Serialises saves; holds the last body written.
    save_lock: Mutex<Vec<u8>>,
    shutdown: CancellationToken,
}

/// Why rule files could not be loaded. Nothing of a failed load runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// A `--rules` path does not exist or a glob is malformed.
    #[error("{0}")]
    Paths(String),
    /// Files that do not parse or check: every problem, with file, line
    /// and column, group and rule.
    #[error(transparent)]
    Invalid(#[from] file::RuleErrors),
    /// The loading task died.
    #[error("loading rule files: {0}")]
    Task(String),
}

/// Loads and checks every rule file named by `patterns` (for
/// `--check-config` and startup).
pub fn load(patterns: &[String]) -> Result<(Vec<PathBuf>, Vec<file::RuleFile>), RulesError> {
    let paths = file::expand_globs(patterns).map_err(RulesError::Paths)?;
    let files = file::load_files(&paths)?;
    Ok((paths, files))
}

impl RuleManager {
    /// Loads the rule files (an error stops the start, with every
    /// problem named) and restores saved alert state. Groups start running
    /// with [`RuleManager::start`].
    pub fn new<S: Queryable + Appendable + Clone + 'static>(
        cfg: RulesConfig,
        engine: Engine,
        storage: S,
        notifier: Arc<dyn AlertSink>,
        metrics: RuleMetrics,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RulesError> {
        let (files, loaded) = load(&cfg.patterns)?;
        let cx = EvalContext {
            engine,
            db: Arc::new(storage.clone()),
            external_labels: Arc::new(cfg.external_labels.clone()),
            external_url: Arc::from(cfg.external_url.as_str()),
            resend_delay: cfg.resend_delay,
            runbook_base: Arc::from(cfg.runbook_base_url.as_str()),
        };
        let groups = build_groups(loaded, cfg.default_interval);
        match state::load(&cfg.state_path) {
            Ok(saved) => {
                let mut restored = 0;
                for g in &groups {
                    if let Some(s) = saved.get(&g.key()) {
                        g.restore_alerts(s);
                        restored += s.values().map(Vec::len).sum::<usize>();
                    }
                }
                if restored > 0 {
                    tracing::info!(alerts = restored, path = %cfg.state_path.display(), "alert state restored");
                }
            }
            Err(e) => tracing::warn!(path = %cfg.state_path.display(), error = %e, "cannot read saved alert state; starting without it"),
        }
        let mgr = Arc::new(RuleManager {
            patterns: Mutex::new(cfg.patterns.clone()),
            cfg,
            cx,
            storage: Arc::new(storage),
            notifier,
            metrics,
            running: Mutex::new(Running {
                groups,
                stops: Vec::new(),
                files,
            }),
            reload_lock: tokio::sync::Mutex::new(()),
            save_lock: Mutex::new(Vec::new()),
            shutdown,
        });
        mgr.metrics.reload_ok.set(1);
        mgr.metrics.reload_time.set(now_ms() as f64 / 1000.0);
        Ok(mgr)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts one task per group.
    pub fn start(self: &Arc<Self>) -> LoadSummary {
        let mut run = self.running();
        for s in run.stops.drain(..) {
            s.cancel();
        }
        let mut stops = Vec::new();
        for g in &run.groups {
            let stop = self.shutdown.child_token();
            stops.push(stop.clone());
            tokio::spawn(self.clone().run_group(g.clone(), stop));
            self.metrics
                .rules
                .get_or_create(&vec![("rule_group".into(), group_label(g))])
                .set(g.len() as i64);
        }
        run.stops = stops;
        let summary = LoadSummary {
            files: run.files.len(),
            groups: run.groups.len(),
            rules: run.groups.iter().map(|g| g.len()).sum(),
        };
        tracing::info!(
            files = summary.files,
            groups = summary.groups,
            rules = summary.rules,
            "rules loaded"
        );
        summary
    }

    /// Re-reads the rule files. On any problem the running rules stay as
    /// they are and the error names the file, line and reason.
    pub async fn reload(self: &Arc<Self>) -> Result<LoadSummary, RulesError> {
        let patterns = self.patterns.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.reload_patterns(patterns).await
    }

    /// Re-reads the rule files named by `patterns` (a reloaded config's
    /// `rule_files`), which later reloads read too once they loaded.
    pub async fn reload_patterns(self: &Arc<Self>, patterns: Vec<String>) -> Result<LoadSummary, RulesError> {
        let _serial = self.reload_lock.lock().await;
        let kept = patterns.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&patterns))
            .await
            .map_err(|e| RulesError::Task(e.to_string()))?;
        let (files, loaded) = match loaded {
            Ok(x) => x,
            Err(e) => {
                self.metrics.reload_ok.set(0);
                tracing::error!(error = %e, "reloading rules failed; the previous rules keep running");
                return Err(e);
            }
        };
        let groups = build_groups(loaded, self.cfg.default_interval);
        {
            let mut run = self.running();
            // Carry alert state over to groups and rules that keep their
            // names (Prometheus does the same).
            let old: HashMap<(String, String), Arc<Group>> = run.groups.iter().map(|g| (g.key(), g.clone())).collect();
            for g in &groups {
                if let Some(o) = old.get(&g.key()) {
                    g.restore_alerts(&o.alerts_by_rule());
                }
            }
            run.groups = groups;
            run.files = files;
        }
        *self.patterns.lock().unwrap_or_else(|p| p.into_inner()) = kept;
        self.metrics.reload_ok.set(1);
        self.metrics.reload_time.set(now_ms() as f64 / 1000.0);
        Ok(self.start())
    }

    /// The running groups.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.running().groups.clone()
    }

    async fn run_group(self: Arc<Self>, g: Arc<Group>, stop: CancellationToken) {
        loop {
            let now = now_ms();
            let next = g.eval_timestamp(now) + g.interval.as_millis() as i64;
            let wait = Duration::from_millis((next - now).max(0) as u64);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let me = self.clone();
            let g2 = g.clone();
            let handle = tokio::runtime::Handle::current();
            let res = tokio::task::spawn_blocking(move || me.eval_group(&g2, next, &handle)).await;
            if let Err(e) = res {
                tracing::error!(group = %g.spec.name, error = %e, "rule group evaluation panicked");
            }
        }
    }

    /// Evaluates every rule of `g` at `ts`, in order; each rule's samples
    /// are committed before the next rule runs, so later rules see them.
    fn eval_group(&self, g: &Group, ts: i64, handle: &tokio::runtime::Handle) {
        let started = Instant::now();
        let gl = vec![("rule_group".to_string(), group_label(g))];
        let mut to_send = Vec::new();
        for i in 0..g.len() {
            self.metrics.evaluations.get_or_create(&gl).inc();
            let out = g.eval_rule(&self.cx, i, ts);
            if g.state().rules.get(i).is_some_and(|r| r.health == group::Health::Err) {
                self.metrics.failures.get_or_create(&gl).inc();
            }
            if !out.samples.is_empty() {
                let mut app = self.storage.appender();
                for (l, v) in out.samples {
                    app.append(l, ts, v);
                }
                if let Err(e) = handle.block_on(app.commit()) {
                    tracing::error!(group = %g.spec.name, error = %e, "storing rule results failed");
                }
            }
            let expr = g.spec.rules.get(i).map(|r| r.expr_text.clone()).unwrap_or_default();
            to_send.extend(out.to_send.into_iter().map(|a| self.to_notification(a, &expr)));
        }
        let took = started.elapsed();
        g.finish(ts, took);
        self.metrics.last_duration.get_or_create(&gl).set(took.as_secs_f64());
        self.metrics.last_eval.get_or_create(&gl).set(ts as f64 / 1000.0);
        if !to_send.is_empty() {
            self.notifier.send(to_send);
        }
        self.update_alert_gauges();
        self.save_state();
    }

    fn to_notification(&self, a: group::Alert, expr: &str) -> Alert {
        let mut labels: BTreeMap<String, String> = a.labels.into_iter().collect();
        for (k, v) in &self.cfg.external_labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let url = format!(
            "{}/graph?g0.expr={}&g0.tab=1",
            self.cfg.external_url.trim_end_matches('/'),
            form_urlencoded::byte_serialize(expr.as_bytes()).collect::<String>()
        );
        Alert {
            labels,
            annotations: a.annotations,
            starts_at: if a.fired_at != 0 { a.fired_at } else { a.active_at },
            ends_at: if a.resolved_at != 0 { a.resolved_at } else { a.valid_until },
            generator_url: url,
        }
    }

    fn update_alert_gauges(&self) {
        let (mut pending, mut firing) = (0i64, 0i64);
        for g in self.groups() {
            for r in &g.state().rules {
                for a in r.active.values() {
                    match a.state {
                        group::AlertState::Pending => pending += 1,
                        group::AlertState::Firing => firing += 1,
                        group::AlertState::Inactive => {}
                    }
                }
            }
        }
        self.metrics
            .alerts
            .get_or_create(&vec![("state".into(), "pending".into())])
            .set(pending);
        self.metrics
            .alerts
            .get_or_create(&vec![("state".into(), "firing".into())])
            .set(firing);
    }

    /// Writes every group's alerts to the state file when they changed.
    pub fn save_state(&self) {
        let mut last = self.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        let groups = self.groups();
        if let Err(e) = state::save(&self.cfg.state_path, &groups, &mut last) {
            tracing::error!(path = %self.cfg.state_path.display(), error = %e, "saving alert state failed");
        }
    }
}

fn group_label(g: &Group) -> String {
    format!("{};{}", g.spec.file, g.spec.name)
}

fn build_groups(files: Vec<file::RuleFile>, default_interval: Duration) -> Vec<Arc<Group>> {
    files
        .into_iter()
        .flat_map(|f| f.groups)
        .map(|g| Arc::new(Group::new(g, default_interval)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::RecordingSink;

    /// The rule manager hands the alerts of an evaluation to the sink it is
    /// given, with external labels added and a generator URL, and keeps
    /// resending a firing alert only after the resend delay.
    #[test]
    fn alerts_go_to_the_given_sink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = dir.path().join("r.yml");
        std::fs::write(
            &rules,
            "groups:\n- name: g\n  interval: 1s\n  rules:\n  - alert: AlwaysOn\n    expr: vector(1)\n    labels: {severity: page}\n    annotations: {summary: 'value {{ $value }}'}\n",
        )
        .expect("write rules");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let _enter = rt.enter();
        let mut reg = Registry::default();
        let db = crate::tsdb::Tsdb::open(&dir.path().join("data"), &crate::tsdb::TsdbOptions::default(), &mut reg).expect("open");
        let sink = Arc::new(RecordingSink::default());
        let mgr = RuleManager::new(
            RulesConfig {
                patterns: vec![rules.display().to_string()],
                default_interval: Duration::from_secs(1),
                resend_delay: Duration::from_secs(60),
                external_labels: BTreeMap::from([("environment".to_string(), "test".to_string())]),
                external_url: "http://csoc.example:9300/".into(),
                state_path: dir.path().join("rules-state.json"),
                runbook_base_url: String::new(),
            },
            Engine::new(Duration::from_secs(300)),
            db.clone(),
            sink.clone(),
            RuleMetrics::new(&mut reg),
            CancellationToken::new(),
        )
        .expect("rule manager");
        let g = mgr.groups().pop().expect("one group");
        let t0 = now_ms();
        mgr.eval_group(&g, t0, rt.handle());
        let sent = sink.take();
        assert_eq!(sent.len(), 1, "one batch: {sent:?}");
        let a = &sent[0][0];
        assert_eq!(a.labels.get("alertname").map(String::as_str), Some("AlwaysOn"));
        assert_eq!(a.labels.get("severity").map(String::as_str), Some("page"));
        assert_eq!(
            a.labels.get("environment").map(String::as_str),
            Some("test"),
            "external label added"
        );
        assert_eq!(a.annotations.get("summary").map(String::as_str), Some("value 1"));
        assert_eq!(a.starts_at, t0);
        assert!(a.ends_at > t0, "valid until a later time while firing");
        assert_eq!(a.generator_url, "http://csoc.example:9300/graph?g0.expr=vector%281%29&g0.tab=1");
        // Within the resend delay nothing new goes out.
        mgr.eval_group(&g, t0 + 1000, rt.handle());
        assert!(sink.take().is_empty(), "no resend within resend_delay");
        db.close();
    }
}
