//! Log-pattern counters: per counter, the pods it reads (label selector,
//! optional pod-name pattern, optional container), a regular expression, and
//! the counter it adds to — 1 per matching line, or the named capture `value`
//! times `scale` — labelled by the regex's other named captures plus
//! `namespace` and `service` (the pod's `app` label).
//!
//! Cardinality is bounded per counter: at most `max_series` label sets; a
//! line that would make a new one beyond that is counted in the series whose
//! capture labels are all `other` (one such series per namespace and
//! service, over the cap). Capture values are cut to 128 bytes.
//!
//! A pod's labels and name are matched when its stream starts (a label
//! changed later does not re-route a running stream). Lines cut for being
//! too long are not counted (a cut line could match wrongly).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};

use super::follow::LogSink;
use super::selector::LabelSelector;
use crate::config::ConfigError;
use crate::model::{Frame, MetricKind};
use csoc_common::labels::valid_label_name;

/// Label value of capture labels beyond a counter's `max_series`.
pub const OVERFLOW: &str = "other";
/// Longest capture value kept as a label value (bytes; cut at a character
/// boundary).
pub const MAX_LABEL_VALUE: usize = 128;
/// Family of the counters' own health series.
pub const LINES_METRIC: &str = "csoc_agent_log_counter_lines_total";

/// One log-pattern counter (an element of `sources.kubernetes.log_counters`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogCounterConfig {
    /// Name of the counter (a valid metric name; end it in `_total`).
    pub metric: String,
    /// HELP text of the counter (default: says which pattern it counts).
    #[serde(default)]
    pub help: String,
    /// Label selector of the pods whose logs are read (Kubernetes syntax:
    /// `app=hatchery`, `app in (fence,presigned-url-fence)`, `!canary`).
    pub selector: String,
    /// Only pods whose name matches this regular expression (unanchored,
    /// e.g. `^usersync-`; default: every selected pod).
    #[serde(default)]
    pub pod_name: Option<String>,
    /// Only this container (default: every container of the pod).
    #[serde(default)]
    pub container: Option<String>,
    /// Regular expression (Rust `regex` syntax) searched in each line; its
    /// named captures (except `value`) become labels.
    pub regex: String,
    /// Name of the capture whose number is added instead of 1 (e.g.
    /// `size_in_kibibytes`); a line where it is not a finite number ≥ 0 is
    /// counted as `bad_value` and adds nothing.
    #[serde(default)]
    pub value: Option<String>,
    /// Factor applied to `value` (default 1; 1024 turns KiB into bytes).
    #[serde(default = "one")]
    pub scale: f64,
    /// Fixed labels added to every series of this counter.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Most distinct label sets of this counter (default 100, at most
    /// 10000); beyond, the capture labels become `other`.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

fn one() -> f64 {
    1.0
}

fn default_max_series() -> usize {
    100
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Labels every counter series carries besides the captures.
const BASE_LABELS: [&str; 2] = ["namespace", "service"];

impl LogCounterConfig {
    /// Checks the counter; `field` names it in errors
    /// (`sources.kubernetes.log_counters[2]`).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        self.compile(field).map(|_| ())
    }

    fn compile(&self, field: &str) -> Result<CompiledCounter, ConfigError> {
        let inv = |f: &str, m: String| ConfigError::Invalid {
            field: format!("{field}.{f}"),
            message: m,
        };
        if !valid_metric_name(&self.metric) {
            return Err(inv("metric", format!("{:?} is not a valid metric name", self.metric)));
        }
        let selector = LabelSelector::parse(&self.selector).map_err(|e| inv("selector", e))?;
        let pod_name = match &self.pod_name {
            Some(p) => Some(regex::Regex::new(p).map_err(|e| inv("pod_name", e.to_string()))?),
            None => None,
        };
        if self.container.as_deref().is_some_and(str::is_empty) {
            return Err(inv("container", "must not be empty (leave it out for every container)".into()));
        }
        let regex = regex::bytes::RegexBuilder::new(&self.regex)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| inv("regex", e.to_string()))?;
        let mut captures = Vec::new();
        let mut value_idx = None;
        for (i, name) in regex.capture_names().enumerate() {
            let Some(name) = name else { continue };
            if Some(name) == self.value.as_deref() {
                value_idx = Some(i);
                continue;
            }
            if !valid_label_name(name) || name.starts_with("__") {
                return Err(inv("regex", format!("capture {name:?} is not a valid label name")));
            }
            if BASE_LABELS.contains(&name) || self.labels.contains_key(name) {
                return Err(inv(
                    "regex",
                    format!("capture {name:?} clashes with the namespace/service labels or a fixed label"),
                ));
            }
            captures.push((i, name.to_string()));
        }
        if let Some(v) = &self.value
            && value_idx.is_none()
        {
            return Err(inv("value", format!("the regex has no named capture {v:?}")));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(inv("scale", format!("{} must be a finite number above 0", self.scale)));
        }
        for k in self.labels.keys() {
            if !valid_label_name(k) || k.starts_with("__") || BASE_LABELS.contains(&k.as_str()) {
                return Err(inv("labels", format!("{k:?} is not a valid label name here")));
            }
        }
        if !(1..=10_000).contains(&self.max_series) {
            return Err(inv("max_series", format!("{} is outside 1..10000", self.max_series)));
        }
        let mut label_names: Vec<String> = BASE_LABELS.iter().map(|s| s.to_string()).collect();
        label_names.extend(captures.iter().map(|(_, n)| n.clone()));
        Ok(CompiledCounter {
            cfg: self.clone(),
            id: self.id(),
            selector,
            pod_name,
            regex,
            captures,
            value_idx,
            label_names,
        })
    }

    /// The counter's identity in the state file: the metric and its fixed
    /// labels.
    pub fn id(&self) -> String {
        let mut s = self.metric.clone();
        for (k, v) in &self.labels {
            s.push_str(&format!(",{k}={v}"));
        }
        s
    }
}

/// Checks a list of counters (unique identities); errors name `field[i]`.
pub fn validate_counters(counters: &[LogCounterConfig], field: &str) -> Result<(), ConfigError> {
    compile_all(counters, field).map(|_| ())
}

fn compile_all(counters: &[LogCounterConfig], field: &str) -> Result<Vec<CompiledCounter>, ConfigError> {
    let mut out: Vec<CompiledCounter> = Vec::new();
    for (i, c) in counters.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let cc = c.compile(&f)?;
        if out.iter().any(|o| o.id == cc.id) {
            return Err(ConfigError::Invalid {
                field: format!("{f}.metric"),
                message: format!("{:?} with the same fixed labels is defined twice", c.metric),
            });
        }
        out.push(cc);
    }
    Ok(out)
}

struct CompiledCounter {
    cfg: LogCounterConfig,
    id: String,
    selector: LabelSelector,
    pod_name: Option<regex::Regex>,
    regex: Regex,
    /// (capture index, label name), in regex order.
    captures: Vec<(usize, String)>,
    value_idx: Option<usize>,
    /// namespace, service, then the captures' names.
    label_names: Vec<String>,
}

/// Values of one counter, as saved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SavedCounter {
    /// Label names, in the order of each series' values.
    pub label_names: Vec<String>,
    /// (label values, counter value).
    pub series: Vec<(Vec<String>, f64)>,
    /// Lines by result: counted, overflow, bad_value.
    #[serde(default)]
    pub lines: BTreeMap<String, u64>,
}

#[derive(Default)]
struct CounterValues {
    series: HashMap<Vec<String>, f64>,
    /// Series beyond the cap (the `other` ones), not counted against it.
    overflow_series: usize,
    lines: BTreeMap<String, u64>,
}

/// Where a stream's lines go: its pod's namespace and service, and the
/// counters that read it.
#[derive(Debug)]
pub struct CounterRoute {
    namespace: String,
    service: String,
    counters: Vec<usize>,
}

/// The counters: the [`LogSink`] of the log-counters source.
pub struct LogCounters {
    counters: Vec<CompiledCounter>,
    values: Vec<CounterValues>,
}

fn cut(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    if s.len() <= MAX_LABEL_VALUE {
        return s.into_owned();
    }
    let mut end = MAX_LABEL_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl LogCounters {
    /// Compiles `counters` (validated; errors name `field[i]`), resuming the
    /// values in `saved` (by counter identity; series whose label names no
    /// longer match are dropped).
    pub fn new(counters: &[LogCounterConfig], field: &str, saved: &BTreeMap<String, SavedCounter>) -> Result<Self, ConfigError> {
        let counters = compile_all(counters, field)?;
        let values = counters
            .iter()
            .map(|c| {
                let mut v = CounterValues::default();
                if let Some(s) = saved.get(&c.id)
                    && s.label_names == c.label_names
                {
                    for (lv, x) in &s.series {
                        if lv.len() == c.label_names.len() && x.is_finite() {
                            if lv[2..].iter().all(|l| l == OVERFLOW) && !lv[2..].is_empty() {
                                v.overflow_series += 1;
                            }
                            v.series.insert(lv.clone(), *x);
                        }
                    }
                    v.lines = s.lines.clone();
                }
                v
            })
            .collect();
        Ok(LogCounters { counters, values })
    }

    /// The values to save, by counter identity.
    pub fn save(&self) -> BTreeMap<String, SavedCounter> {
        self.counters
            .iter()
            .zip(&self.values)
            .map(|(c, v)| {
                let mut series: Vec<(Vec<String>, f64)> = v.series.iter().map(|(k, x)| (k.clone(), *x)).collect();
                series.sort_by(|a, b| a.0.cmp(&b.0));
                (
                    c.id.clone(),
                    SavedCounter {
                        label_names: c.label_names.clone(),
                        series,
                        lines: v.lines.clone(),
                    },
                )
            })
            .collect()
    }

    /// Counts one line read from a pod in `namespace` whose `app` label is
    /// `service`, for the counters `which` (indexes).
    pub fn count(&mut self, namespace: &str, service: &str, which: &[usize], line: &[u8]) {
        for &i in which {
            let (Some(c), Some(v)) = (self.counters.get(i), self.values.get_mut(i)) else {
                continue;
            };
            let Some(caps) = c.regex.captures(line) else { continue };
            let add = match c.value_idx {
                None => 1.0,
                Some(vi) => {
                    let parsed = caps
                        .get(vi)
                        .and_then(|m| std::str::from_utf8(m.as_bytes()).ok())
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .filter(|x| x.is_finite() && *x >= 0.0);
                    match parsed {
                        Some(x) => x * c.cfg.scale,
                        None => {
                            *v.lines.entry("bad_value".into()).or_default() += 1;
                            continue;
                        }
                    }
                }
            };
            let mut key = Vec::with_capacity(c.label_names.len());
            key.push(namespace.to_string());
            key.push(service.to_string());
            for (ci, _) in &c.captures {
                key.push(caps.get(*ci).map(|m| cut(m.as_bytes())).unwrap_or_default());
            }
            let result = if let Some(x) = v.series.get_mut(&key) {
                *x += add;
                "counted"
            } else if v.series.len() - v.overflow_series < c.cfg.max_series {
                v.series.insert(key, add);
                "counted"
            } else {
                for k in key.iter_mut().skip(2) {
                    *k = OVERFLOW.to_string();
                }
                match v.series.get_mut(&key) {
                    Some(x) => *x += add,
                    None => {
                        v.series.insert(key, add);
                        v.overflow_series += 1;
                    }
                }
                "overflow"
            };
            *v.lines.entry(result.into()).or_default() += 1;
        }
    }

    /// Every counter's series at `ts` (ms), with metadata, plus
    /// `csoc_agent_log_counter_lines_total{metric,result}`.
    pub fn frame(&self, source: &str, ts: i64) -> Frame {
        let mut f = Frame::new(source);
        let mut declared: Vec<&str> = Vec::new();
        for (c, v) in self.counters.iter().zip(&self.values) {
            if !declared.contains(&c.cfg.metric.as_str()) {
                declared.push(&c.cfg.metric);
                let help = if c.cfg.help.is_empty() {
                    format!("Lines of pods' logs matching {:?}.", c.cfg.regex)
                } else {
                    c.cfg.help.clone()
                };
                f.meta(&c.cfg.metric, MetricKind::Counter, &help, "");
            }
            let mut series: Vec<(&Vec<String>, &f64)> = v.series.iter().collect();
            series.sort_by(|a, b| a.0.cmp(b.0));
            for (lv, x) in series {
                let mut labels: Vec<(&str, &str)> = c.cfg.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                for (n, val) in c.label_names.iter().zip(lv) {
                    if !val.is_empty() {
                        labels.push((n, val));
                    }
                }
                f.push(&c.cfg.metric, &labels, ts, *x);
            }
        }
        f.meta(
            LINES_METRIC,
            MetricKind::Counter,
            "Log lines matched by each log counter, by result (counted, overflow: counted under \"other\" labels beyond max_series, bad_value: value capture not a number).",
            "",
        );
        for (c, v) in self.counters.iter().zip(&self.values) {
            for r in ["counted", "overflow", "bad_value"] {
                let n = v.lines.get(r).copied().unwrap_or(0);
                f.push(LINES_METRIC, &[("metric", &c.id), ("result", r)], ts, n as f64);
            }
        }
        f
    }

    /// The route of `container` of `pod`: the counters whose selector, pod
    /// name and container accept it (None: none do).
    fn route(&mut self, pod: &Pod, container: &str) -> Option<Arc<CounterRoute>> {
        let empty = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let service = labels.get("app").cloned().unwrap_or_default();
        let which: Vec<usize> = self
            .counters
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.selector.matches(labels)
                    && c.pod_name.as_ref().is_none_or(|r| r.is_match(name))
                    && c.cfg.container.as_deref().is_none_or(|k| k == container)
            })
            .map(|(i, _)| i)
            .collect();
        if which.is_empty() {
            return None;
        }
        // A counter without capture labels has one series per namespace and
        // service: it starts at 0 so that its first increase is seen.
        for &i in &which {
            let (c, v) = (&self.counters[i], &mut self.values[i]);
            if c.captures.is_empty() && v.series.len() < c.cfg.max_series {
                v.series.entry(vec![namespace.clone(), service.clone()]).or_insert(0.0);
            }
        }
        Some(Arc::new(CounterRoute {
            namespace,
            service,
            counters: which,
        }))
    }
}

impl LogSink for LogCounters {
    type Route = Arc<CounterRoute>;

    fn routes(&mut self, pod: &Pod) -> Vec<(String, Self::Route)> {
        let containers: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()))
            .map(|c| c.name.clone())
            .collect();
        containers.into_iter().filter_map(|c| self.route(pod, &c).map(|r| (c, r))).collect()
    }

    fn line(&mut self, route: &Self::Route, content: &[u8], too_long: bool) {
        // A cut line could match wrongly (or its value be cut): not counted.
        if too_long {
            return;
        }
        self.count(&route.namespace, &route.service, &route.counters, content);
    }
}
