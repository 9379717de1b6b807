//! Prometheus rule files: parsing and the checks `promtool check rules`
//! makes, with the file, line and reason of every problem.
//!
//! ```yaml
//! groups:
//!   - name: gen3            # unique in the file
//!     interval: 30s         # default: the collector's evaluation interval
//!     limit: 0              # most alerts / series a rule may produce (0 = no limit)
//!     query_offset: 0s      # evaluate this much in the past
//!     rules:
//!       - alert: Gen3ServiceDown
//!         expr: gen3_service_up == 0
//!         for: 1m
//!         keep_firing_for: 0s
//!         labels: {severity: critical}
//!         annotations: {summary: "{{ $labels.service }} is down"}
//!       - record: commons:gen3_http_requests:rate5m
//!         expr: sum by (commons) (rate(gen3_http_requests_total[5m]))
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use promql_parser::parser::Expr;

use crate::promql::guard;
use serde::Deserialize;

use super::template::Template;
use csoc_common::labels::valid_metric_name;

/// One problem in a rule file, as `promtool check rules` words it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong, e.g. `group "gen3", rule 2, "Down": could not parse expression: ...`.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file.display(), self.message),
            (l, 0) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for RuleError {}

/// Every problem found in a set of rule files.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

/// A parsed, checked rule file.
#[derive(Debug, Clone)]
pub struct RuleFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its groups, in file order.
    pub groups: Vec<GroupSpec>,
}

/// A group of rules evaluated together, in order, at one interval.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Group name (unique in its file).
    pub name: String,
    /// The file it came from (as given).
    pub file: String,
    /// Evaluation interval; `None` means the collector's default.
    pub interval: Option<Duration>,
    /// Most alerts (alerting rule) or series (recording rule) one rule may
    /// produce; 0 = unlimited.
    pub limit: usize,
    /// Evaluate each rule this far in the past.
    pub query_offset: Duration,
    /// The rules.
    pub rules: Vec<Arc<RuleSpec>>,
}

/// A label or annotation value: kept as written, with its parsed template.
#[derive(Clone)]
pub struct TemplatedValue {
    /// The name.
    pub name: String,
    /// The text as written.
    pub text: String,
    /// Parsed when it contains `{{`.
    pub template: Option<Arc<Template>>,
}

impl fmt::Debug for TemplatedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.name, self.text)
    }
}

/// Alerting or recording.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// `alert:`
    Alert {
        /// How long the condition must hold before the alert fires.
        for_: Duration,
        /// How long a firing alert keeps firing after the condition clears.
        keep_firing_for: Duration,
        /// Annotations (templated).
        annotations: Vec<TemplatedValue>,
    },
    /// `record:`
    Record,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// Alert name or recorded metric name.
    pub name: String,
    /// The expression as written.
    pub expr_text: String,
    /// Parsed expression.
    pub expr: Expr,
    /// Extra labels (templated for alerts; plain for recording rules).
    pub labels: Vec<TemplatedValue>,
    /// Kind-specific fields.
    pub kind: RuleKind,
    /// Line of the rule in its file.
    pub line: usize,
}

impl RuleSpec {
    /// True for alerting rules.
    pub fn is_alert(&self) -> bool {
        matches!(self.kind, RuleKind::Alert { .. })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<Scalar>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    query_offset: Option<Scalar>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    record: Option<Scalar>,
    #[serde(default)]
    alert: Option<Scalar>,
    #[serde(default)]
    expr: Option<Scalar>,
    #[serde(default, rename = "for")]
    for_: Option<Scalar>,
    #[serde(default)]
    keep_firing_for: Option<Scalar>,
    #[serde(default)]
    labels: Option<BTreeMap<String, Scalar>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, Scalar>>,
}

/// A YAML scalar read as text (`expr: 1`, `severity: 2` are valid, as in
/// Prometheus's YAML decoder).
#[derive(Debug, Clone)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml_ng::Value::deserialize(d)? {
            serde_yaml_ng::Value::String(s) => Ok(Scalar(s)),
            serde_yaml_ng::Value::Number(n) => Ok(Scalar(n.to_string())),
            serde_yaml_ng::Value::Bool(b) => Ok(Scalar(b.to_string())),
            serde_yaml_ng::Value::Null => Ok(Scalar(String::new())),
            other => Err(D::Error::custom(format!("expected a string, found {}", kind_of(&other)))),
        }
    }
}

fn kind_of(v: &serde_yaml_ng::Value) -> &'static str {
    match v {
        serde_yaml_ng::Value::Sequence(_) => "a list",
        serde_yaml_ng::Value::Mapping(_) => "a mapping",
        _ => "a tagged value",
    }
}

/// Parses a Prometheus duration (`1h30m`, `2d`, `1w`, `0`), as rule files
/// and promtool's test files write them.
pub fn parse_prom_duration(s: &str) -> Result<Duration, String> {
    csoc_common::duration::parse_duration(s).map_err(|_| format!("not a valid duration string: {:?}", s.trim()))
}

/// Where each rule (by order of appearance) and each group starts in the
/// text. serde gives no positions, so they are found by scanning for the
/// `- alert:` / `- record:` and `- name:` keys in block style (flow-style
/// files get line 0, "unknown").
struct Positions {
    groups: Vec<(usize, usize)>,
    rules: Vec<(usize, usize)>,
}

impl Positions {
    fn scan(text: &str) -> Self {
        let mut groups = Vec::new();
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let Some(rest) = trimmed.strip_prefix('-') else {
                continue;
            };
            let key = rest.trim_start();
            let col = indent + 1 + (rest.len() - key.len()) + 1;
            if key.starts_with("name:") {
                groups.push((i + 1, col));
            } else if key.starts_with("alert:") || key.starts_with("record:") || key.starts_with("expr:") {
                rules.push((i + 1, col));
            }
        }
        Positions { groups, rules }
    }
}

/// Reads and checks one rule file.
pub fn load_file(path: &Path) -> Result<RuleFile, RuleErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RuleErrors(vec![RuleError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse_file(path, &text)
}

/// Parses and checks rule-file text (`path` names it in errors).
pub fn parse_file(path: &Path, text: &str) -> Result<RuleFile, RuleErrors> {
    let err = |line: usize, column: usize, message: String| RuleError {
        file: path.to_path_buf(),
        line,
        column,
        message,
    };
    let raw: RawFile = if text.trim().is_empty() {
        RawFile { groups: Vec::new() }
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            let msg = e.to_string();
            // serde_yaml_ng appends " at line L column C"; the position is
            // already in front.
            let msg = match msg.find(" at line ") {
                Some(i) if line > 0 => msg[..i].to_string(),
                _ => msg,
            };
            RuleErrors(vec![err(line, column, msg)])
        })?
    };
    let pos = Positions::scan(text);
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut seen = HashSet::new();
    let mut rule_index = 0usize;
    for (gi, g) in raw.groups.into_iter().enumerate() {
        let (gl, gc) = pos.groups.get(gi).copied().unwrap_or((0, 0));
        if g.name.is_empty() {
            errors.push(err(gl, gc, "Groupname must not be empty".into()));
        } else if !seen.insert(g.name.clone()) {
            errors.push(err(gl, gc, format!("groupname: \"{}\" is repeated in the same file", g.name)));
        }
        let dur = |field: &str, v: &Option<Scalar>, errors: &mut Vec<RuleError>| -> Option<Duration> {
            let s = v.as_ref()?;
            match parse_prom_duration(&s.0) {
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(err(gl, gc, format!("group {:?}: {field}: {e}", g.name)));
                    None
                }
            }
        };
        let interval = dur("interval", &g.interval, &mut errors).filter(|d| !d.is_zero());
        let query_offset = dur("query_offset", &g.query_offset, &mut errors).unwrap_or_default();
        let limit = match g.limit {
            Some(l) if l < 0 => {
                errors.push(err(gl, gc, format!("group {:?}: limit must not be negative", g.name)));
                0
            }
            Some(l) => l as usize,
            None => 0,
        };
        let mut rules = Vec::new();
        for (ri, r) in g.rules.into_iter().enumerate() {
            let (line, column) = pos.rules.get(rule_index).copied().unwrap_or((0, 0));
            rule_index += 1;
            let name_for_msg = r.alert.as_ref().or(r.record.as_ref()).map(|s| s.0.clone()).unwrap_or_default();
            let mut problems = Vec::new();
            match check_rule(r) {
                Ok(spec) => rules.push(Arc::new(RuleSpec { line, ..spec })),
                Err(ps) => problems.extend(ps),
            }
            for p in problems {
                errors.push(err(
                    line,
                    column,
                    format!("group {:?}, rule {}, {:?}: {p}", g.name, ri + 1, name_for_msg),
                ));
            }
        }
        groups.push(GroupSpec {
            name: g.name,
            file: path.display().to_string(),
            interval,
            limit,
            query_offset,
            rules,
        });
    }
    if errors.is_empty() {
        Ok(RuleFile {
            path: path.to_path_buf(),
            groups,
        })
    } else {
        Err(RuleErrors(errors))
    }
}

fn templated(kind: &str, rule_name: &str, name: &str, text: &str, problems: &mut Vec<String>) -> TemplatedValue {
    let template = if text.contains("{{") {
        let tname = format!("__{kind}_{rule_name}");
        match Template::parse(&tname, text) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                problems.push(format!("{e}"));
                None
            }
        }
    } else {
        None
    };
    TemplatedValue {
        name: name.to_string(),
        text: text.to_string(),
        template,
    }
}

/// The checks of Prometheus's `rulefmt` on one rule.
fn check_rule(r: RawRule) -> Result<RuleSpec, Vec<String>> {
    let mut problems = Vec::new();
    let record = r.record.map(|s| s.0).filter(|s| !s.is_empty());
    let alert = r.alert.map(|s| s.0).filter(|s| !s.is_empty());
    let (name, is_alert) = match (record, alert) {
        (Some(_), Some(_)) => return Err(vec!["only one of 'record' and 'alert' must be set".into()]),
        (None, None) => return Err(vec!["one of 'record' or 'alert' must be set".into()]),
        (Some(n), None) => (n, false),
        (None, Some(n)) => (n, true),
    };
    let expr_text = r.expr.map(|s| s.0).unwrap_or_default();
    let expr = if expr_text.trim().is_empty() {
        problems.push("field 'expr' must be set in rule".into());
        None
    } else {
        // The API's expression limits (their defaults): checked before the
        // parser, which recurses, and parsed on a query thread.
        let limits = crate::config::Limits::default();
        let parsed = match guard::precheck(&expr_text, limits.max_query_length, guard::DEFAULT_MAX_DEPTH) {
            Err(r) => Err(r.to_string()),
            Ok(()) => guard::on_query_stack(guard::DEFAULT_MAX_DEPTH, || guard::parse(&expr_text))
                .unwrap_or_else(Err)
                .map_err(|e| guard::short(&e)),
        };
        match parsed {
            Ok(e) => Some(e),
            Err(e) => {
                problems.push(format!("could not parse expression: {e}"));
                None
            }
        }
    };
    let mut dur = |field: &str, v: Option<Scalar>| -> Duration {
        match v {
            None => Duration::ZERO,
            Some(s) => match parse_prom_duration(&s.0) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!("{field}: {e}"));
                    Duration::ZERO
                }
            },
        }
    };
    let for_present = r.for_.is_some();
    let kff_present = r.keep_firing_for.is_some();
    let for_ = dur("for", r.for_);
    let keep_firing_for = dur("keep_firing_for", r.keep_firing_for);
    if !is_alert {
        if r.annotations.is_some() {
            problems.push("invalid field 'annotations' in recording rule".into());
        }
        if for_present {
            problems.push("invalid field 'for' in recording rule".into());
        }
        if kff_present {
            problems.push("invalid field 'keep_firing_for' in recording rule".into());
        }
        if !valid_metric_name(&name) {
            problems.push(format!("invalid recording rule name: {name}"));
        }
    }
    let kind = if is_alert { "alert" } else { "rule" };
    let mut labels = Vec::new();
    for (k, v) in r.labels.unwrap_or_default() {
        if k == "__name__" {
            problems.push(format!("invalid label name: {k}"));
            continue;
        }
        if !csoc_common::labels::valid_label_name(&k) {
            problems.push(format!("invalid label name: {k}"));
            continue;
        }
        labels.push(templated(kind, &name, &k, &v.0, &mut problems));
    }
    let mut annotations = Vec::new();
    for (k, v) in r.annotations.unwrap_or_default() {
        if !csoc_common::labels::valid_label_name(&k) {
            problems.push(format!("invalid annotation name: {k}"));
            continue;
        }
        annotations.push(templated(kind, &name, &k, &v.0, &mut problems));
    }
    match expr {
        Some(expr) if problems.is_empty() => Ok(RuleSpec {
            name,
            expr_text,
            expr,
            labels,
            kind: if is_alert {
                RuleKind::Alert {
                    for_,
                    keep_firing_for,
                    annotations,
                }
            } else {
                RuleKind::Record
            },
            line: 0,
        }),
        _ => Err(problems),
    }
}

/// Expands `--rules` globs into files, sorted and without duplicates. A
/// pattern that is a plain path must exist; a glob may match nothing
/// (Prometheus's rule_files behave the same).
pub fn expand_globs(patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in patterns {
        let is_glob = p.contains(['*', '?', '[']);
        if !is_glob {
            let path = PathBuf::from(p);
            if !path.exists() {
                return Err(format!("rule file {p}: no such file"));
            }
            out.push(path);
            continue;
        }
        let paths = glob::glob(p).map_err(|e| format!("rule file pattern {p:?}: {e}"))?;
        let mut matched: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
        matched.sort();
        out.extend(matched);
    }
    let mut seen = HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

/// Loads every file; all problems of all files are returned together.
pub fn load_files(paths: &[PathBuf]) -> Result<Vec<RuleFile>, RuleErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match load_file(p) {
            Ok(f) => files.push(f),
            Err(RuleErrors(es)) => errors.extend(es),
        }
    }
    if errors.is_empty() { Ok(files) } else { Err(RuleErrors(errors)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuleFile, RuleErrors> {
        parse_file(Path::new("r.yml"), text)
    }

    fn err_text(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_full_file_parses() {
        let f = parse(
            r#"
groups:
  - name: g
    interval: 30s
    limit: 10
    rules:
      - alert: Down
        expr: up == 0
        for: 1m
        keep_firing_for: 5m
        labels: {severity: critical, n: 1}
        annotations:
          summary: "{{ $labels.instance }} down"
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {team: a}
"#,
        )
        .expect("valid");
        assert_eq!(f.groups.len(), 1);
        let g = &f.groups[0];
        assert_eq!(g.interval, Some(Duration::from_secs(30)));
        assert_eq!(g.limit, 10);
        assert_eq!(g.rules.len(), 2);
        assert_eq!(g.rules[0].line, 7);
        assert_eq!(g.rules[1].line, 14);
        match &g.rules[0].kind {
            RuleKind::Alert {
                for_,
                keep_firing_for,
                annotations,
            } => {
                assert_eq!(*for_, Duration::from_secs(60));
                assert_eq!(*keep_firing_for, Duration::from_secs(300));
                assert!(annotations[0].template.is_some());
            }
            RuleKind::Record => panic!("alert expected"),
        }
        let n = g.rules[0].labels.iter().find(|l| l.name == "n").expect("label n");
        assert_eq!(n.text, "1");
        assert!(!g.rules[1].is_alert());
    }

    #[test]
    fn problems_are_named_with_place_and_reason() {
        let e = err_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up ==\n");
        assert!(
            e.starts_with("r.yml:4:9: group \"g\", rule 1, \"A\": could not parse expression"),
            "{e}"
        );
        let e = err_text("groups:\n  - name: g\n    rules:\n      - record: a b\n        expr: up\n        for: 1m\n");
        assert!(e.contains("invalid field 'for' in recording rule"), "{e}");
        assert!(e.contains("invalid recording rule name: a b"), "{e}");
        let e = err_text("groups:\n  - name: g\n    rules:\n      - expr: up\n");
        assert!(e.contains("one of 'record' or 'alert' must be set"), "{e}");
        let e = err_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: up\n");
        assert!(e.contains("only one of 'record' and 'alert' must be set"), "{e}");
        let e = err_text("groups:\n  - name: g\n    rules:\n      - alert: A\n");
        assert!(e.contains("field 'expr' must be set in rule"), "{e}");
        let e = err_text("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n");
        assert!(e.contains("r.yml:4:5: groupname: \"g\" is repeated in the same file"), "{e}");
        let e = err_text("groups:\n  - name: ''\n    rules: []\n");
        assert!(e.contains("Groupname must not be empty"), "{e}");
        let e = err_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labels: {'a-b': x}\n");
        assert!(e.contains("invalid label name: a-b"), "{e}");
        let e = err_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: 5 minutes\n");
        assert!(e.contains("for: not a valid duration"), "{e}");
        let e =
            err_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations: {s: '{{ $labels.x '}\n");
        assert!(e.contains("__alert_A"), "template error names the template: {e}");
        let e = err_text("groups:\n  - name: g\n    rulez: []\n");
        assert!(e.starts_with("r.yml:3:5: groups[0]: unknown field `rulez`"), "{e}");
        let e = err_text("groups: [\n");
        assert!(e.starts_with("r.yml:"), "{e}");
    }

    #[test]
    fn expressions_are_held_to_the_query_limits() {
        let rule = |expr: &str| format!("groups:\n  - name: g\n    rules:\n      - record: r\n        expr: {expr}\n");
        assert!(parse(&rule(&vec!["1"; 512].join("+"))).is_ok());
        let e = err_text(&rule(&vec!["1"; 3000].join("+")));
        assert!(e.contains("max_query_depth"), "{e}");
        let e = err_text(&rule(&format!("up{{a=~\"({}\"}}", "a".repeat(10_000))));
        assert!(e.contains("could not parse expression") && e.len() < 400, "{e}");
    }

    #[test]
    fn all_problems_of_a_file_are_reported() {
        let e = parse("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up ==\n      - alert: B\n        expr: (\n")
            .expect_err("two bad rules");
        assert_eq!(e.0.len(), 2);
        assert_eq!(e.0[1].line, 6);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_prom_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_prom_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_prom_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_prom_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_prom_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_prom_duration("").is_err());
        assert!(parse_prom_duration("1.5h").is_err());
        assert!(parse_prom_duration("m").is_err());
        assert!(parse_prom_duration("30m1h").is_err());
    }

    #[test]
    fn globs_expand_sorted() {
        let d = tempfile::tempdir().expect("tempdir");
        for n in ["b.yml", "a.yml", "c.txt"] {
            std::fs::write(d.path().join(n), "").expect("write");
        }
        let pat = format!("{}/*.yml", d.path().display());
        let got = expand_globs(&[pat.clone(), pat]).expect("glob");
        let names: Vec<_> = got
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yml", "b.yml"]);
        assert!(expand_globs(&["/nonexistent/rules.yml".into()]).is_err());
        assert_eq!(expand_globs(&["/nonexistent/*.yml".into()]), Ok(vec![]));
    }
}
