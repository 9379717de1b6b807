//! Rule unit tests in promtool's format (`promtool test rules`), run by
//! `csoc-collector --test-rules FILE` with this collector's own rule
//! evaluation, so a rule pack is checked against the evaluator that will
//! run it:
//!
//! ```yaml
//! rule_files: [gen3.yml]        # relative to the test file
//! evaluation_interval: 1m
//! tests:
//!   - interval: 1m
//!     input_series:
//!       - series: 'gen3_service_up{commons="a", service="fence"}'
//!         values: '1 1 0x10'
//!     alert_rule_test:
//!       - eval_time: 5m
//!         alertname: Gen3ServiceDown
//!         exp_alerts:
//!           - exp_labels: {commons: a, service: fence, severity: critical}
//!             exp_annotations: {summary: "..."}
//!     promql_expr_test:
//!       - expr: commons:x:rate5m
//!         eval_time: 5m
//!         exp_samples: [{labels: 'commons:x:rate5m{commons="a"}', value: 1}]
//! ```
//!
//! As promtool: the input series are loaded with value `i` at
//! `i * interval`; every group is evaluated at every `evaluation_interval`
//! from 0 up to the last `eval_time`, its results written back; an
//! alert test compares the *firing* alerts of the named rule (labels and
//! annotations) at the evaluation at or just before `eval_time`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use super::file::{load_files, parse_prom_duration};
use super::group::{AlertState, EvalContext, Group};
use crate::promql::notation::{SeqValue, parse_series_desc, parse_values};
use crate::promql::{Engine, MemStore, Value};
use crate::tsdb::{Labels, Querier, Queryable};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: serde_yaml_ng::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    labels: String,
    value: serde_yaml_ng::Value,
}

/// A store the tests write rule results into while rules read it.
struct Shared(RwLock<MemStore>);

impl Queryable for Shared {
    fn querier(&self, mint: i64, maxt: i64) -> Box<dyn Querier + '_> {
        self.0.querier(mint, maxt)
    }
}

fn scalar_text(v: &serde_yaml_ng::Value) -> Result<String, String> {
    match v {
        serde_yaml_ng::Value::String(s) => Ok(s.clone()),
        serde_yaml_ng::Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("expected a string or number, found {other:?}")),
    }
}

fn parse_value(v: &serde_yaml_ng::Value) -> Result<f64, String> {
    let t = scalar_text(v)?;
    crate::promql::notation::parse_number(t.trim()).ok_or_else(|| format!("invalid value {t:?}"))
}

fn dur_ms(s: &str) -> Result<i64, String> {
    parse_prom_duration(s).map(|d| d.as_millis() as i64)
}

type Pairs = Vec<(BTreeMap<String, String>, BTreeMap<String, String>)>;

fn fmt_pairs(p: &Pairs) -> String {
    let items: Vec<String> = p
        .iter()
        .map(|(l, a)| {
            let ls: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let as_: Vec<String> = a.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{{Labels:{{{}}} Annotations:{{{}}}}}", ls.join(", "), as_.join(", "))
        })
        .collect();
    format!("[{}]", items.join(" "))
}

fn fmt_ms(ms: i64) -> String {
    csoc_common::duration::format_duration_ms(ms)
}

fn same_float(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// Runs one test group; returns its failures.
fn run_group(t: &TestGroup, rule_paths: &[PathBuf], eval_interval: i64, order: &[String]) -> Result<Vec<String>, String> {
    let interval = match &t.interval {
        Some(s) => dur_ms(s)?,
        None => eval_interval,
    };
    let mut store = MemStore::default();
    for s in &t.input_series {
        let (labels, rest) = parse_series_desc(&s.series).map_err(|e| format!("series {:?}: {e}", s.series))?;
        if !rest.trim().is_empty() {
            return Err(format!("series {:?}: unexpected {rest:?}", s.series));
        }
        let values = parse_values(&scalar_text(&s.values)?).map_err(|e| format!("values of {}: {e}", s.series))?;
        for (i, v) in values.into_iter().enumerate() {
            match v {
                SeqValue::Float(f) => store.add(&labels, i as i64 * interval, f),
                SeqValue::Omitted => {}
                SeqValue::Histogram => return Err(format!("series {}: native histograms are not supported", s.series)),
            }
        }
    }
    let db = Arc::new(Shared(RwLock::new(store)));
    let files = load_files(rule_paths).map_err(|e| e.to_string())?;
    let mut groups: Vec<Group> = files
        .into_iter()
        .flat_map(|f| f.groups)
        .map(|g| Group::new(g, Duration::from_millis(eval_interval as u64)))
        .collect();
    if !order.is_empty() {
        let mut ordered = Vec::new();
        for name in order {
            let i = groups
                .iter()
                .position(|g| &g.spec.name == name)
                .ok_or_else(|| format!("group_eval_order: no group named {name:?}"))?;
            ordered.push(groups.remove(i));
        }
        ordered.extend(groups);
        groups = ordered;
    }
    let cx = EvalContext {
        engine: Engine::new(Duration::from_secs(300)),
        db: db.clone(),
        external_labels: Arc::new(t.external_labels.clone()),
        external_url: Arc::from(t.external_url.clone().unwrap_or_default().as_str()),
        resend_delay: Duration::from_secs(60),
        // As promtool: annotations as written.
        runbook_base: Arc::from(""),
    };
    let mut alert_tests: Vec<(i64, &AlertTest)> = Vec::new();
    for a in &t.alert_rule_test {
        alert_tests.push((dur_ms(&a.eval_time)?, a));
    }
    alert_tests.sort_by_key(|(t, _)| *t);
    let mut expr_tests = Vec::new();
    for e in &t.promql_expr_test {
        expr_tests.push((dur_ms(&e.eval_time)?, e));
    }
    let max_t = alert_tests
        .iter()
        .map(|x| x.0)
        .chain(expr_tests.iter().map(|x| x.0))
        .max()
        .unwrap_or(0);
    let mut failures = Vec::new();
    let mut next_alert = 0;
    let mut ts = 0i64;
    while ts <= max_t {
        for g in &groups {
            for i in 0..g.len() {
                let out = g.eval_rule(&cx, i, ts);
                if !out.samples.is_empty() {
                    let mut w = db.0.write().unwrap_or_else(|p| p.into_inner());
                    for (l, v) in out.samples {
                        w.add(&l, ts, v);
                    }
                }
            }
        }
        while next_alert < alert_tests.len() && alert_tests[next_alert].0 < ts + eval_interval {
            let (at, test) = alert_tests[next_alert];
            next_alert += 1;
            if at < ts {
                continue;
            }
            let mut got: Pairs = Vec::new();
            for g in &groups {
                for r in &g.state().rules {
                    if r.spec.name != test.alertname || !r.spec.is_alert() {
                        continue;
                    }
                    for a in r.active.values().filter(|a| a.state == AlertState::Firing) {
                        got.push((a.labels.iter().cloned().collect(), a.annotations.clone()));
                    }
                }
            }
            let mut exp: Pairs = test
                .exp_alerts
                .iter()
                .map(|e| {
                    let mut l = e.exp_labels.clone();
                    l.insert("alertname".into(), test.alertname.clone());
                    (l, e.exp_annotations.clone())
                })
                .collect();
            got.sort();
            exp.sort();
            if got != exp {
                failures.push(format!(
                    "    alertname: {}, time: {}, \n        exp:{},\n        got:{}",
                    test.alertname,
                    fmt_ms(at),
                    fmt_pairs(&exp),
                    fmt_pairs(&got)
                ));
            }
        }
        ts += eval_interval;
    }
    for (at, e) in expr_tests {
        let expr = match crate::promql::guard::parse(&e.expr) {
            Ok(x) => x,
            Err(err) => {
                failures.push(format!("    expr: {:?}, time: {}, err: {err}", e.expr, fmt_ms(at)));
                continue;
            }
        };
        let got: Vec<(Labels, f64)> = match cx.engine.instant(db.as_ref(), &expr, at) {
            Ok(out) => match out.value {
                Value::Vector(v) => v.into_iter().map(|s| ((*s.labels).clone(), s.v)).collect(),
                Value::Scalar(_, v) => vec![(Labels::new(), v)],
                _ => {
                    failures.push(format!("    expr: {:?}, time: {}, err: not a vector or scalar", e.expr, fmt_ms(at)));
                    continue;
                }
            },
            Err(err) => {
                failures.push(format!("    expr: {:?}, time: {}, err: {err}", e.expr, fmt_ms(at)));
                continue;
            }
        };
        let mut exp: Vec<(Labels, f64)> = Vec::new();
        for s in &e.exp_samples {
            let labels = if s.labels.trim().is_empty() {
                Labels::new()
            } else {
                let (l, rest) = parse_series_desc(&s.labels).map_err(|err| format!("exp_samples labels {:?}: {err}", s.labels))?;
                if !rest.trim().is_empty() {
                    return Err(format!("exp_samples labels {:?}: unexpected {rest:?}", s.labels));
                }
                l
            };
            exp.push((labels, parse_value(&s.value)?));
        }
        let mut got = got;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        let equal = got.len() == exp.len() && got.iter().zip(&exp).all(|(g, x)| g.0 == x.0 && same_float(g.1, x.1));
        if !equal {
            let show = |v: &[(Labels, f64)]| {
                let items: Vec<String> = v
                    .iter()
                    .map(|(l, f)| {
                        let ls: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                        format!("{{Labels:{{{}}} Value:{}}}", ls.join(", "), crate::promql::fmt_float(*f))
                    })
                    .collect();
                format!("[{}]", items.join(" "))
            };
            failures.push(format!(
                "    expr: {:?}, time: {},\n        exp: {}\n        got: {}",
                e.expr,
                fmt_ms(at),
                show(&exp),
                show(&got)
            ));
        }
    }
    Ok(failures)
}

/// Runs one test file; writes promtool-style output; returns whether every
/// test passed.
pub fn run_file(path: &Path, out: &mut dyn Write) -> std::io::Result<bool> {
    writeln!(out, "Unit Testing:  {}", path.display())?;
    let result = (|| -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let tf: TestFile = serde_yaml_ng::from_str(&text).map_err(|e| csoc_common::config::yaml_error(&e))?;
        let eval_interval = match &tf.evaluation_interval {
            Some(s) => dur_ms(s)?,
            None => 60_000,
        };
        if eval_interval <= 0 {
            return Err("evaluation_interval must be positive".into());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let patterns: Vec<String> = tf
            .rule_files
            .iter()
            .map(|f| {
                if Path::new(f).is_absolute() {
                    f.clone()
                } else {
                    dir.join(f).display().to_string()
                }
            })
            .collect();
        let rule_paths = super::file::expand_globs(&patterns)?;
        let mut failures = Vec::new();
        for (i, t) in tf.tests.iter().enumerate() {
            let name = if t.name.is_empty() {
                format!("test {}", i + 1)
            } else {
                t.name.clone()
            };
            match run_group(t, &rule_paths, eval_interval, &tf.group_eval_order) {
                Ok(fs) if fs.is_empty() => {}
                Ok(fs) => failures.push(format!("  {name}:\n{}", fs.join("\n"))),
                Err(e) => failures.push(format!("  {name}: {e}")),
            }
        }
        Ok(failures)
    })();
    match result {
        Ok(f) if f.is_empty() => {
            writeln!(out, "  SUCCESS\n")?;
            Ok(true)
        }
        Ok(f) => {
            writeln!(out, "  FAILED:\n{}\n", f.join("\n"))?;
            Ok(false)
        }
        Err(e) => {
            writeln!(out, "  FAILED:\n    {e}\n")?;
            Ok(false)
        }
    }
}

/// Runs every test file; true when all passed.
pub fn run_files(paths: &[PathBuf], out: &mut dyn Write) -> std::io::Result<bool> {
    let mut ok = true;
    for p in paths {
        ok &= run_file(p, out)?;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rules: &str, tests: &str) -> (bool, String) {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("r.yml"), rules).expect("write");
        let p = d.path().join("t.yml");
        std::fs::write(&p, tests).expect("write");
        let mut out = Vec::new();
        let ok = run_file(&p, &mut out).expect("io");
        (ok, String::from_utf8_lossy(&out).into_owned())
    }

    const RULES: &str = r#"
groups:
  - name: g
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: job:up:sum == 0
        for: 2m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.job }} is down"}
"#;

    #[test]
    fn passing_and_failing_tests_are_told_apart() {
        let tests = r#"
rule_files: [r.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="a", i="1"}'
        values: '1 1 0x10'
    alert_rule_test:
      - eval_time: 3m
        alertname: Down
        exp_alerts: []
      - eval_time: 4m
        alertname: Down
        exp_alerts:
          - exp_labels: {job: a, severity: page}
            exp_annotations: {summary: "a is down"}
    promql_expr_test:
      - expr: job:up:sum
        eval_time: 1m
        exp_samples:
          - labels: 'job:up:sum{job="a"}'
            value: 1
"#;
        let (ok, out) = run(RULES, tests);
        assert!(ok, "{out}");
        assert!(out.contains("SUCCESS"), "{out}");
        let wrong = tests.replace(
            "eval_time: 3m\n        alertname: Down\n        exp_alerts: []",
            "eval_time: 3m\n        alertname: Down\n        exp_alerts: [{exp_labels: {job: a, severity: page}}]",
        );
        let (ok, out) = run(RULES, &wrong);
        assert!(!ok);
        assert!(out.contains("alertname: Down, time: 3m"), "{out}");
        let wrong = tests.replace("value: 1\n", "value: 2\n");
        let (ok, out) = run(RULES, &wrong);
        assert!(!ok);
        assert!(out.contains("expr: \"job:up:sum\", time: 1m"), "{out}");
        let (ok, out) = run(RULES, "rule_files: [nosuch.yml]\ntests: []\n");
        assert!(!ok);
        assert!(out.contains("no such file"), "{out}");
    }
}
