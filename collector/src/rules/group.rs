//! Evaluation of one rule group: alert states (inactive → pending → firing
//! → resolved, with `for` and `keep_firing_for`), `ALERTS` and
//! `ALERTS_FOR_STATE`, recording-rule results, staleness markers for
//! series a rule stopped producing, and which alerts to send (Prometheus's
//! resend semantics).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::file::{GroupSpec, RuleKind, RuleSpec, TemplatedValue};
use super::template::{QuerySample, TemplateData};
use crate::alert::fnv1a;
use crate::promql::{Engine, Value};
use crate::tsdb::{Labels, Queryable};

/// How long a resolved alert is kept (and re-sent) so that every
/// Alertmanager learns it resolved (Prometheus's resolvedRetention).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// State of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Resolved (kept for a while to send the resolution).
    Inactive,
    /// Condition true for less than `for`.
    Pending,
    /// Firing.
    Firing,
}

impl AlertState {
    /// Prometheus's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule. Times are ms since the epoch; 0 = unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Labels, sorted, including `alertname`.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// The value of the expression's sample.
    pub value: f64,
    /// When the condition became true.
    pub active_at: i64,
    /// When it started firing.
    #[serde(default)]
    pub fired_at: i64,
    /// When it resolved.
    #[serde(default)]
    pub resolved_at: i64,
    /// When it was last sent to the notifiers.
    #[serde(default)]
    pub last_sent_at: i64,
    /// Until when the last send keeps it alive at an Alertmanager.
    #[serde(default)]
    pub valid_until: i64,
    /// Since when it has been kept firing by `keep_firing_for`.
    #[serde(default)]
    pub keep_firing_since: i64,
}

impl Alert {
    fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        if self.last_sent_at == 0 || self.resolved_at > self.last_sent_at {
            return true;
        }
        self.last_sent_at + resend_delay_ms < ts
    }
}

/// Health of a rule after its last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// Last evaluation succeeded.
    Ok,
    /// Last evaluation failed.
    Err,
}

impl Health {
    /// Prometheus's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// A rule and what its evaluations left behind.
#[derive(Debug, Clone)]
pub struct RuleRuntime {
    /// The rule as loaded.
    pub spec: Arc<RuleSpec>,
    /// Alerts by label set (alerting rules only).
    pub active: BTreeMap<Labels, Alert>,
    /// Health.
    pub health: Health,
    /// The last error.
    pub last_error: String,
    /// Time of the last evaluation (ms; 0 = never).
    pub last_eval: i64,
    /// How long the last evaluation took.
    pub eval_duration: Duration,
    /// Series written by the last evaluation (for staleness markers).
    written: HashSet<Arc<Labels>>,
}

impl RuleRuntime {
    fn new(spec: Arc<RuleSpec>) -> Self {
        RuleRuntime {
            spec,
            active: BTreeMap::new(),
            health: Health::Unknown,
            last_error: String::new(),
            last_eval: 0,
            eval_duration: Duration::ZERO,
            written: HashSet::new(),
        }
    }
}

/// What a group's evaluations share with the rest of the collector.
#[derive(Clone)]
pub struct EvalContext {
    /// The engine.
    pub engine: Engine,
    /// Where queries read.
    pub db: Arc<dyn Queryable>,
    /// The collector's external labels (for templates and notifications).
    pub external_labels: Arc<BTreeMap<String, String>>,
    /// The collector's external URL (templates, generator URLs).
    pub external_url: Arc<str>,
    /// Prometheus's `--rules.alert.resend-delay`.
    pub resend_delay: Duration,
    /// Base URL of the runbook: `runbook_url` annotations are rebased onto
    /// it (`super::runbook`; empty: left as written).
    pub runbook_base: Arc<str>,
}

/// The mutable part of a group.
#[derive(Debug, Clone)]
pub struct GroupState {
    /// Rules in file order.
    pub rules: Vec<RuleRuntime>,
    /// Time of the last evaluation (ms; 0 = never).
    pub last_eval: i64,
    /// How long it took.
    pub eval_duration: Duration,
}

/// A group of rules evaluated together.
pub struct Group {
    /// As loaded.
    pub spec: GroupSpec,
    /// The effective interval.
    pub interval: Duration,
    state: Mutex<GroupState>,
}

/// A sample a rule writes.
pub type OutSample = (Arc<Labels>, f64);

/// One rule's results at one evaluation: samples to store, alerts to send.
#[derive(Debug, Default)]
pub struct RuleOutput {
    /// Samples at the evaluation time (stale markers included).
    pub samples: Vec<OutSample>,
    /// Alerts that need sending (alerting rules).
    pub to_send: Vec<Alert>,
}

fn stale_nan() -> f64 {
    f64::from_bits(csoc_proto::STALE_NAN_BITS)
}

impl Group {
    /// A group in its initial state.
    pub fn new(spec: GroupSpec, default_interval: Duration) -> Self {
        let interval = spec.interval.unwrap_or(default_interval);
        let rules = spec.rules.iter().cloned().map(RuleRuntime::new).collect();
        Group {
            spec,
            interval,
            state: Mutex::new(GroupState {
                rules,
                last_eval: 0,
                eval_duration: Duration::ZERO,
            }),
        }
    }

    /// The group's identity: (file, name).
    pub fn key(&self) -> (String, String) {
        (self.spec.file.clone(), self.spec.name.clone())
    }

    /// Locks the state (for the API and for saving).
    pub fn state(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes over the alerts of rules of the same name and kind from an
    /// older version of this group (reload) or from saved state (restart).
    pub fn restore_alerts(&self, saved: &HashMap<String, Vec<Alert>>) {
        let mut st = self.state();
        for r in st.rules.iter_mut() {
            if !r.spec.is_alert() {
                continue;
            }
            if let Some(alerts) = saved.get(&r.spec.name) {
                for a in alerts {
                    r.active.insert(a.labels.clone(), a.clone());
                }
            }
        }
    }

    /// The alerts of every alerting rule, by rule name.
    pub fn alerts_by_rule(&self) -> HashMap<String, Vec<Alert>> {
        let st = self.state();
        let mut out: HashMap<String, Vec<Alert>> = HashMap::new();
        for r in &st.rules {
            if r.spec.is_alert() && !r.active.is_empty() {
                out.entry(r.spec.name.clone()).or_default().extend(r.active.values().cloned());
            }
        }
        out
    }

    /// The time of the evaluation at or before `now_ms`: multiples of the
    /// interval, shifted by a per-group offset so that groups spread out
    /// (as Prometheus does).
    pub fn eval_timestamp(&self, now_ms: i64) -> i64 {
        let iv = self.interval.as_millis().max(1) as i64;
        let offset = (fnv1a(format!("{}\u{ff}{}", self.spec.file, self.spec.name).as_bytes()) % iv as u64) as i64;
        let adj = now_ms - offset;
        adj - adj.rem_euclid(iv) + offset
    }

    /// Evaluates rule `i` at `ts` (ms), updates its state and returns what
    /// to store and send. Blocking (runs the query).
    pub fn eval_rule(&self, cx: &EvalContext, i: usize, ts: i64) -> RuleOutput {
        let started = Instant::now();
        let (spec, limit) = {
            let st = self.state();
            match st.rules.get(i) {
                Some(r) => (r.spec.clone(), self.spec.limit),
                None => return RuleOutput::default(),
            }
        };
        let qts = ts - self.spec.query_offset.as_millis() as i64;
        let result = query_vector(cx, &spec.expr, qts);
        let mut st = self.state();
        let Some(rt) = st.rules.get_mut(i) else {
            return RuleOutput::default();
        };
        let outcome = result.and_then(|vector| match &spec.kind {
            RuleKind::Record => record(&spec, vector, limit),
            RuleKind::Alert { .. } => eval_alert(cx, rt, vector, ts, limit),
        });
        rt.last_eval = ts;
        rt.eval_duration = started.elapsed();
        let mut out = RuleOutput::default();
        match outcome {
            Ok(samples) => {
                rt.health = Health::Ok;
                rt.last_error.clear();
                let now: HashSet<Arc<Labels>> = samples.iter().map(|(l, _)| l.clone()).collect();
                for gone in rt.written.difference(&now) {
                    out.samples.push((gone.clone(), stale_nan()));
                }
                rt.written = now;
                out.samples.extend(samples);
            }
            Err(e) => {
                rt.health = Health::Err;
                rt.last_error = e;
                // As Prometheus: a failed evaluation marks the rule's
                // previous series stale.
                for gone in rt.written.drain() {
                    out.samples.push((gone, stale_nan()));
                }
            }
        }
        if spec.is_alert() {
            let resend = cx.resend_delay.as_millis() as i64;
            let delta = resend.max(self.interval.as_millis() as i64);
            for a in rt.active.values_mut() {
                if a.needs_sending(ts, resend) {
                    a.last_sent_at = ts;
                    a.valid_until = ts + 4 * delta;
                    out.to_send.push(a.clone());
                }
            }
        }
        out
    }

    /// Records that the whole group was evaluated at `ts`.
    pub fn finish(&self, ts: i64, took: Duration) {
        let mut st = self.state();
        st.last_eval = ts;
        st.eval_duration = took;
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.spec.rules.len()
    }

    /// True when the group has no rules.
    pub fn is_empty(&self) -> bool {
        self.spec.rules.is_empty()
    }
}

/// Runs `expr` as an instant query; scalars become a one-sample vector
/// without labels (Prometheus's EngineQueryFunc).
fn query_vector(cx: &EvalContext, expr: &promql_parser::parser::Expr, ts: i64) -> Result<Vec<(Arc<Labels>, f64)>, String> {
    let out = cx.engine.instant(cx.db.as_ref(), expr, ts).map_err(|e| e.to_string())?;
    match out.value {
        Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
        Value::Scalar(_, v) => Ok(vec![(Arc::new(Labels::new()), v)]),
        _ => Err("rule result is not a vector or scalar".into()),
    }
}

fn set_label(labels: &mut Labels, name: &str, value: String) {
    match labels.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) => {
            if value.is_empty() {
                labels.remove(i);
            } else {
                labels[i].1 = value;
            }
        }
        Err(i) => {
            if !value.is_empty() {
                labels.insert(i, (name.to_string(), value));
            }
        }
    }
}

fn record(spec: &RuleSpec, vector: Vec<(Arc<Labels>, f64)>, limit: usize) -> Result<Vec<OutSample>, String> {
    let mut out = Vec::with_capacity(vector.len());
    let mut seen = HashSet::new();
    for (labels, v) in vector {
        let mut l = (*labels).clone();
        set_label(&mut l, "__name__", spec.name.clone());
        for lv in &spec.labels {
            set_label(&mut l, &lv.name, lv.text.clone());
        }
        let l = Arc::new(l);
        if !seen.insert(l.clone()) {
            return Err("vector contains metrics with the same labelset after applying rule labels".into());
        }
        out.push((l, v));
    }
    if limit > 0 && out.len() > limit {
        return Err(format!("exceeded limit of {limit} with {} series", out.len()));
    }
    Ok(out)
}

fn expand(
    cx: &EvalContext,
    tv: &TemplatedValue,
    labels: &BTreeMap<String, String>,
    value: f64,
    ts: i64,
    query: &dyn Fn(&str) -> Result<Vec<QuerySample>, String>,
) -> String {
    let Some(t) = &tv.template else {
        return tv.text.clone();
    };
    let data = TemplateData {
        labels,
        external_labels: &cx.external_labels,
        external_url: &cx.external_url,
        value,
    };
    match t.execute(&data, Some(query), ts) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(template = %tv.name, error = %e, "expanding alert template failed");
            // Prometheus's wording, so that existing tooling recognises it.
            format!("<error expanding template: error executing template {}: {e}>", t.name())
        }
    }
}

fn eval_alert(
    cx: &EvalContext,
    rt: &mut RuleRuntime,
    vector: Vec<(Arc<Labels>, f64)>,
    ts: i64,
    limit: usize,
) -> Result<Vec<OutSample>, String> {
    let spec = rt.spec.clone();
    let RuleKind::Alert {
        for_,
        keep_firing_for,
        annotations,
    } = &spec.kind
    else {
        return Ok(Vec::new());
    };
    let query = |q: &str| -> Result<Vec<QuerySample>, String> {
        let expr = crate::promql::guard::parse(q)?;
        let v = query_vector(cx, &expr, ts)?;
        Ok(v.into_iter()
            .map(|(l, value)| QuerySample {
                labels: l.iter().cloned().collect(),
                value,
            })
            .collect())
    };
    let mut current: BTreeMap<Labels, Alert> = BTreeMap::new();
    for (labels, v) in vector {
        let lmap: BTreeMap<String, String> = labels.iter().cloned().collect();
        let mut l: Labels = labels.iter().filter(|(k, _)| k != "__name__").cloned().collect();
        for lv in &spec.labels {
            let val = expand(cx, lv, &lmap, v, ts, &query);
            set_label(&mut l, &lv.name, val);
        }
        set_label(&mut l, "alertname", spec.name.clone());
        let ann = annotations
            .iter()
            .map(|a| {
                let mut text = expand(cx, a, &lmap, v, ts, &query);
                if a.name == "runbook_url" {
                    text = super::runbook::rebase(&text, &cx.runbook_base);
                }
                (a.name.clone(), text)
            })
            .collect();
        if current.contains_key(&l) {
            return Err("vector contains metrics with the same labelset after applying alert labels".into());
        }
        current.insert(
            l.clone(),
            Alert {
                labels: l,
                annotations: ann,
                state: AlertState::Pending,
                value: v,
                active_at: ts,
                fired_at: 0,
                resolved_at: 0,
                last_sent_at: 0,
                valid_until: 0,
                keep_firing_since: 0,
            },
        );
    }
    let in_result: HashSet<Labels> = current.keys().cloned().collect();
    for (k, a) in current {
        match rt.active.get_mut(&k) {
            Some(old) if old.state != AlertState::Inactive => {
                old.value = a.value;
                old.annotations = a.annotations;
            }
            _ => {
                rt.active.insert(k, a);
            }
        }
    }
    let for_ms = for_.as_millis() as i64;
    let kff_ms = keep_firing_for.as_millis() as i64;
    let mut out = Vec::new();
    let mut active_pending = 0usize;
    let mut remove = Vec::new();
    for (k, a) in rt.active.iter_mut() {
        if !in_result.contains(k) {
            let mut keep_firing = false;
            if a.state == AlertState::Firing && kff_ms > 0 {
                if a.keep_firing_since == 0 {
                    a.keep_firing_since = ts;
                }
                keep_firing = ts - a.keep_firing_since < kff_ms;
            }
            if a.state == AlertState::Pending || (a.resolved_at != 0 && ts - a.resolved_at > RESOLVED_RETENTION_MS) {
                remove.push(k.clone());
            }
            if a.state != AlertState::Inactive && !keep_firing {
                a.state = AlertState::Inactive;
                a.resolved_at = ts;
            }
            if !keep_firing {
                continue;
            }
        } else {
            a.keep_firing_since = 0;
        }
        active_pending += 1;
        if a.state == AlertState::Pending && ts - a.active_at >= for_ms {
            a.state = AlertState::Firing;
            a.fired_at = ts;
        }
        let mut l = a.labels.clone();
        set_label(&mut l, "__name__", "ALERTS".into());
        set_label(&mut l, "alertstate", a.state.as_str().into());
        out.push((Arc::new(l), 1.0));
        let mut l = a.labels.clone();
        set_label(&mut l, "__name__", "ALERTS_FOR_STATE".into());
        out.push((Arc::new(l), (a.active_at / 1000) as f64));
    }
    for k in remove {
        rt.active.remove(&k);
    }
    if limit > 0 && active_pending > limit {
        rt.active.clear();
        return Err(format!("exceeded limit of {limit} with {active_pending} alerts"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::MemStore as Mem;
    use crate::rules::file::parse_file;
    use std::path::Path;

    fn group(yaml: &str) -> Group {
        let f = parse_file(Path::new("t.yml"), yaml).expect("valid rules");
        Group::new(f.groups.into_iter().next().expect("a group"), Duration::from_secs(60))
    }

    fn cx(db: Mem) -> EvalContext {
        EvalContext {
            engine: Engine::new(Duration::from_secs(300)),
            db: Arc::new(db),
            external_labels: Arc::new(BTreeMap::new()),
            external_url: Arc::from("http://csoc.example"),
            resend_delay: Duration::from_secs(60),
            runbook_base: Arc::from(""),
        }
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        csoc_common::labels::from_pairs(pairs)
    }

    const MIN: i64 = 60_000;

    #[test]
    fn pending_firing_resolved_with_for() {
        // up{job="a"} is 0 from 0 to 10m, then 1.
        let mut db = Mem::default();
        for i in 0..=20 {
            db.add(&l(&[("__name__", "up"), ("job", "a")]), i * MIN, if i <= 10 { 0.0 } else { 1.0 });
        }
        let g = group("groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 2m\n    labels: {severity: page}\n");
        let cx = cx(db);
        let o = g.eval_rule(&cx, 0, 0);
        assert!(o.to_send.is_empty(), "pending alerts are not sent");
        let alerts_state = |o: &RuleOutput| {
            o.samples
                .iter()
                .filter(|(l, v)| !csoc_proto::is_stale_nan(*v) && l.iter().any(|(k, v)| k == "__name__" && v == "ALERTS"))
                .filter_map(|(l, _)| l.iter().find(|(k, _)| k == "alertstate").map(|(_, v)| v.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(alerts_state(&o), ["pending"]);
        let o = g.eval_rule(&cx, 0, MIN);
        assert_eq!(alerts_state(&o), ["pending"]);
        let o = g.eval_rule(&cx, 0, 2 * MIN);
        assert_eq!(alerts_state(&o), ["firing"]);
        assert_eq!(o.to_send.len(), 1);
        let a = &o.to_send[0];
        assert_eq!(a.labels, l(&[("alertname", "Down"), ("job", "a"), ("severity", "page")]));
        assert_eq!(a.active_at, 0);
        assert_eq!(a.fired_at, 2 * MIN);
        // ALERTS_FOR_STATE carries active_at in seconds.
        let fs = o
            .samples
            .iter()
            .find(|(l, _)| l.iter().any(|(k, v)| k == "__name__" && v == "ALERTS_FOR_STATE"))
            .expect("for state");
        assert_eq!(fs.1, 0.0);
        // Not re-sent within the resend delay, re-sent after it.
        assert!(g.eval_rule(&cx, 0, 3 * MIN).to_send.is_empty());
        assert_eq!(g.eval_rule(&cx, 0, 3 * MIN + 1).to_send.len(), 1);
        // Resolves at 11m: sent at once as resolved, ALERTS goes stale.
        let o = g.eval_rule(&cx, 0, 11 * MIN);
        assert_eq!(o.to_send.len(), 1);
        assert_eq!(o.to_send[0].state, AlertState::Inactive);
        assert_eq!(o.to_send[0].resolved_at, 11 * MIN);
        assert!(o.samples.iter().all(|(_, v)| csoc_proto::is_stale_nan(*v)), "{:?}", o.samples);
        assert_eq!(o.samples.len(), 2);
        // Kept for 15m for re-sending, then forgotten.
        assert_eq!(g.state().rules[0].active.len(), 1);
        g.eval_rule(&cx, 0, 27 * MIN);
        assert!(g.state().rules[0].active.is_empty());
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let mut db = Mem::default();
        for i in 0..=3 {
            db.add(&l(&[("__name__", "x")]), i * MIN, 1.0);
        }
        let g = group("groups:\n- name: g\n  rules:\n  - alert: X\n    expr: x > 0\n    keep_firing_for: 3m\n");
        let cx = cx(db);
        assert_eq!(g.eval_rule(&cx, 0, 0).to_send.len(), 1, "for: 0 fires at once");
        // Data ends at 3m; with a 5m lookback (left-open) the condition
        // holds up to 7m and is false from 8m.
        g.eval_rule(&cx, 0, 7 * MIN);
        let st = |g: &Group| g.state().rules[0].active.values().next().map(|a| a.state);
        assert_eq!(st(&g), Some(AlertState::Firing));
        g.eval_rule(&cx, 0, 8 * MIN);
        assert_eq!(st(&g), Some(AlertState::Firing));
        assert_eq!(
            g.state().rules[0].active.values().next().map(|a| a.keep_firing_since),
            Some(8 * MIN)
        );
        g.eval_rule(&cx, 0, 10 * MIN);
        assert_eq!(st(&g), Some(AlertState::Firing), "still within keep_firing_for");
        g.eval_rule(&cx, 0, 11 * MIN);
        assert_eq!(st(&g), Some(AlertState::Inactive));
    }

    #[test]
    fn templates_see_labels_and_value() {
        let mut db = Mem::default();
        db.add(&l(&[("__name__", "lat"), ("service", "fence")]), 0, 2.5);
        let g = group(
            "groups:\n- name: g\n  rules:\n  - alert: Slow\n    expr: lat > 1\n    labels: {svc: '{{ $labels.service }}'}\n    annotations: {summary: '{{ $labels.service }} at {{ $value }}'}\n",
        );
        let o = g.eval_rule(&cx(db), 0, 0);
        let a = &o.to_send[0];
        assert!(a.labels.contains(&("svc".to_string(), "fence".to_string())), "{:?}", a.labels);
        assert_eq!(a.annotations.get("summary").map(String::as_str), Some("fence at 2.5"));
    }

    #[test]
    fn recording_rules_rename_and_detect_collisions() {
        let mut db = Mem::default();
        db.add(&l(&[("__name__", "a"), ("x", "1")]), 0, 1.0);
        db.add(&l(&[("__name__", "b"), ("x", "1")]), 0, 2.0);
        let g = group(
            "groups:\n- name: g\n  rules:\n  - record: r:sum\n    expr: sum(a)\n    labels: {t: v}\n  - record: r:bad\n    expr: '{x=\"1\"}'\n  - record: r:lim\n    expr: '{x=\"1\"} * 0 + 1'\n",
        );
        let cx = cx(db);
        let o = g.eval_rule(&cx, 0, 0);
        assert_eq!(o.samples, vec![(Arc::new(l(&[("__name__", "r:sum"), ("t", "v")])), 1.0)]);
        let o = g.eval_rule(&cx, 1, 0);
        assert!(o.samples.is_empty());
        let st = g.state();
        assert_eq!(st.rules[1].health, Health::Err);
        assert!(st.rules[1].last_error.contains("same labelset"), "{}", st.rules[1].last_error);
    }

    #[test]
    fn limits_and_duplicate_alerts_are_errors() {
        let mut db = Mem::default();
        db.add(&l(&[("__name__", "x"), ("i", "1")]), 0, 1.0);
        db.add(&l(&[("__name__", "x"), ("i", "2")]), 0, 1.0);
        let g = group(
            "groups:\n- name: g\n  limit: 1\n  rules:\n  - alert: X\n    expr: x\n  - alert: Y\n    expr: sum by (i) (x) or on() vector(1)\n",
        );
        let cx = cx(db);
        let o = g.eval_rule(&cx, 0, 0);
        assert!(o.to_send.is_empty());
        let st = g.state();
        assert_eq!(st.rules[0].last_error, "exceeded limit of 1 with 2 alerts");
        assert!(st.rules[0].active.is_empty());
    }

    #[test]
    fn eval_timestamps_are_aligned_per_group() {
        let g = group("groups:\n- name: g\n  interval: 10s\n  rules: []\n");
        let t = g.eval_timestamp(1_000_000_123);
        assert!(t <= 1_000_000_123 && 1_000_000_123 - t < 10_000);
        assert_eq!(g.eval_timestamp(t), t);
        assert_eq!(g.eval_timestamp(t + 9_999), t);
        assert_eq!(g.eval_timestamp(t + 10_000), t + 10_000);
    }
}
