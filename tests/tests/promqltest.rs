//! A runner for upstream Prometheus's PromQL engine test scripts
//! (`promql/promqltest/testdata/*.test`; the format and what upstream's
//! runner does are described in `../shared/promql/README.md`, which is the
//! specification this module follows).
//!
//! [`parse_script`] reads a script into [`Command`]s; [`run_script`] loads
//! its float series into a [`Backend`] (a storage plus a query engine) and
//! runs every `eval` with the variants upstream's runner adds:
//!
//! * every instant eval also as a range query `t-1m..t+1m` step `1m`, whose
//!   middle step must give the expected result;
//! * every instant eval again with `@ <t>` added to every selector and
//!   subquery that has none, evaluated at `-10t, 0, t/5, t, 10t` (or
//!   `-1s, 0, 1s` for `t = 0`), each also in range mode;
//!
//! and counts an eval as passed only when all of them pass.
//!
//! Deliberate differences from upstream, reported with the results:
//!
//! * Native histograms are not supported by the engine under test. Their
//!   samples (`{{…}}`) are not loaded, `load_with_nhcb` loads only the
//!   classic float series, and evals touching native histograms (the
//!   heuristic of `count_evals.py`) are counted out of scope, not run.
//! * Start timestamps (`name{…}@st …` lines) are not loaded.
//! * Upstream rejects a whole file when one query fails to parse; here only
//!   that eval fails (counted as a parse error).
//! * Queries are parsed with promql-parser, not Prometheus's Go parser.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr};
use regex::Regex;

// The series notation (`load` blocks, expected results) is shared with the
// collector's rule unit tests (promtool's input_series use the same).
pub use csoc_collector::promql::notation::{
    SeqValue, SeriesLine, is_name_char, is_name_start, parse_duration, parse_number, parse_series_line, parse_values, read_quoted,
    stale_nan,
};

pub use csoc_common::labels::Labels;

/// Relative tolerance of float comparisons (upstream's `defaultEpsilon`).
pub const EPSILON: f64 = 1e-6;

/// Functions whose result depends on the evaluation time even when their
/// arguments are pinned with `@`: evals calling them get no `@` variants.
pub const AT_UNSAFE_FUNCTIONS: &[&str] = &[
    "time",
    "timestamp",
    "predict_linear",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
    "start",
    "end",
    "range",
    "step",
];

/// Text in a query that makes upstream skip the range-mode check.
const RANGE_MODE_SKIP: &[&str] = &["start()", "end()", "range()", "step()"];

// ---------------------------------------------------------------------------
// Script model
// ---------------------------------------------------------------------------

/// A `load` / `load_with_nhcb` command.
#[derive(Debug, Clone)]
pub struct Load {
    /// 1-based line of the command.
    pub line: usize,
    /// Interval between the values of a series, ms.
    pub interval_ms: i64,
    /// `load_with_nhcb`.
    pub with_nhcb: bool,
    /// The series (a series given twice keeps the last line, as upstream).
    pub series: Vec<SeriesLine>,
    /// Start-timestamp lines (`name{…}@st …`) seen and ignored.
    pub start_timestamp_lines: usize,
    /// The block's lines, as written (trimmed), for the native-histogram
    /// heuristic.
    pub raw: Vec<String>,
}

impl Load {
    /// The float samples to store: value `i` of a series at `i * interval`;
    /// omitted values and native histograms are left out.
    pub fn float_samples(&self) -> Vec<(Labels, Vec<(i64, f64)>)> {
        self.series
            .iter()
            .map(|s| {
                let samples = s
                    .values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match v {
                        SeqValue::Float(f) => Some((i as i64 * self.interval_ms, *f)),
                        SeqValue::Omitted | SeqValue::Histogram => None,
                    })
                    .collect();
                (s.labels.clone(), samples)
            })
            .collect()
    }
}

/// How an `expect` line (or a deprecated form) matches a message.
#[derive(Debug, Clone)]
pub enum Match {
    /// No `msg:`/`regex:` part: anything.
    Any,
    /// `msg: <text>`: exactly this text.
    Msg(String),
    /// `regex: <re>`: the regex matches somewhere in the text.
    Regex(Regex),
}

impl Match {
    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Match::Any => true,
            Match::Msg(m) => m == text,
            Match::Regex(r) => r.is_match(text),
        }
    }
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Match::Any => write!(f, "anything"),
            Match::Msg(m) => write!(f, "message {m:?}"),
            Match::Regex(r) => write!(f, "regex {:?}", r.as_str()),
        }
    }
}

/// The `expect …` lines of an eval.
#[derive(Debug, Clone, Default)]
pub struct Expects {
    /// `expect ordered`.
    pub ordered: bool,
    /// `expect fail …` (at most one).
    pub fail: Vec<Match>,
    /// `expect warn …`.
    pub warn: Vec<Match>,
    /// `expect no_warn`.
    pub no_warn: bool,
    /// `expect info …`.
    pub info: Vec<Match>,
    /// `expect no_info`.
    pub no_info: bool,
}

/// Instant or range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalKind {
    /// `eval instant at <t>`.
    Instant {
        /// Evaluation time, ms.
        at: i64,
    },
    /// `eval range from <start> to <end> step <step>`.
    Range {
        /// Start, ms.
        start: i64,
        /// End, ms.
        end: i64,
        /// Step, ms.
        step: i64,
    },
}

/// The expected result.
#[derive(Debug, Clone)]
pub enum Expected {
    /// Series lines (none: the result must be empty).
    Series(Vec<SeriesLine>),
    /// A bare number: a scalar.
    Scalar(f64),
}

/// An `eval` command.
#[derive(Debug, Clone)]
pub struct Eval {
    /// 1-based line of the command.
    pub line: usize,
    /// The query, as written.
    pub query: String,
    /// Instant or range.
    pub kind: EvalKind,
    /// Deprecated `eval_fail`.
    pub fail: bool,
    /// Deprecated `eval_warn`.
    pub warn: bool,
    /// Deprecated `eval_info`.
    pub info: bool,
    /// Deprecated `eval_ordered`.
    pub ordered: bool,
    /// Deprecated `expected_fail_message <text>` (after `eval_fail`).
    pub expected_fail_message: Option<String>,
    /// Deprecated `expected_fail_regexp <re>` (after `eval_fail`).
    pub expected_fail_regexp: Option<Regex>,
    /// The `expect` lines.
    pub expects: Expects,
    /// `expect string "…"`.
    pub expected_string: Option<String>,
    /// `expect range vector from <t1> to <t2> step <s>`: (start, end, step) ms.
    pub range_vector: Option<(i64, i64, i64)>,
    /// The expected result.
    pub expected: Expected,
    /// The block's lines as written (trimmed), for the native-histogram
    /// heuristic and for reports.
    pub block: Vec<String>,
}

impl Eval {
    /// Whether the query must fail.
    pub fn is_fail(&self) -> bool {
        self.fail || !self.expects.fail.is_empty()
    }

    /// Whether the result order matters.
    pub fn is_ordered(&self) -> bool {
        self.ordered || self.expects.ordered
    }

    /// Upstream does not re-run these instant evals in range mode.
    pub fn excluded_from_range_mode(&self) -> bool {
        self.range_vector.is_some() || self.expected_string.is_some()
    }

    /// The expectation as text, for reports: the block's lines, with the
    /// deprecated `eval_*` forms spelled out.
    pub fn expected_summary(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        for (on, what) in [
            (self.fail, "eval_fail: an error"),
            (self.warn, "eval_warn: a warning"),
            (self.info, "eval_info: an info annotation"),
            (self.ordered, "eval_ordered: in this order"),
        ] {
            if on {
                lines.push(what.to_string());
            }
        }
        lines.extend(self.block.iter().cloned());
        let empty = matches!(&self.expected, Expected::Series(v) if v.is_empty());
        if empty && !self.is_fail() && self.expected_string.is_none() {
            lines.push("(empty result)".into());
        }
        lines.join("\n")
    }

    /// Evaluation time of an instant eval (the end of `expect range vector`
    /// when present, as upstream).
    pub fn instant_time(&self) -> Option<i64> {
        match self.kind {
            EvalKind::Instant { at } => Some(self.range_vector.map(|(_, end, _)| end).unwrap_or(at)),
            EvalKind::Range { .. } => None,
        }
    }
}

/// A script command.
#[derive(Debug, Clone)]
pub enum Command {
    /// `clear`: delete all data.
    Clear {
        /// 1-based line.
        line: usize,
    },
    /// `load` / `load_with_nhcb`.
    Load(Load),
    /// `eval …`.
    Eval(Box<Eval>),
}

// ---------------------------------------------------------------------------
// Script parser
// ---------------------------------------------------------------------------

/// The lines of a script, trimmed, with comment lines blanked (a comment
/// line ends a block, as upstream).
fn script_lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') { "" } else { t }
        })
        .collect()
}

/// Splits the first `n` whitespace-separated words off `s`; returns them
/// and the rest (trimmed), or None when `s` has fewer words.
fn split_words(s: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut words = Vec::with_capacity(n);
    let mut rest = s.trim_start();
    for _ in 0..n {
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        words.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    Some((words, rest))
}

/// Parses a script. Errors (which make upstream reject the whole file)
/// name the 1-based line.
pub fn parse_script(text: &str) -> Result<Vec<Command>, String> {
    let lines = script_lines(text);
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let word = l.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
        let lineno = i + 1;
        let at = |e: String| format!("line {lineno}: {e}");
        if word == "clear" {
            cmds.push(Command::Clear { line: i + 1 });
            i += 1;
        } else if word.starts_with("load") {
            let (load, next) = parse_load(&lines, i).map_err(at)?;
            cmds.push(Command::Load(load));
            i = next;
        } else if word.starts_with("eval") {
            let (eval, next) = parse_eval(&lines, i).map_err(at)?;
            cmds.push(Command::Eval(Box::new(eval)));
            i = next;
        } else {
            return Err(at(format!("invalid command {l:?}")));
        }
    }
    Ok(cmds)
}

/// The non-empty lines after line `i`.
fn block(lines: &[&str], i: usize) -> Vec<String> {
    lines[i + 1..].iter().take_while(|l| !l.is_empty()).map(|l| l.to_string()).collect()
}

fn parse_load(lines: &[&str], i: usize) -> Result<(Load, usize), String> {
    let (words, rest) = split_words(lines[i], 1).ok_or("invalid load command")?;
    let with_nhcb = match words[0] {
        "load" => false,
        "load_with_nhcb" => true,
        _ => return Err("invalid load command (load[_with_nhcb] <step:duration>)".into()),
    };
    let interval_ms = parse_duration(rest).map_err(|e| format!("invalid step definition: {e}"))?;
    let raw = block(lines, i);
    let mut load = Load {
        line: i + 1,
        interval_ms,
        with_nhcb,
        series: Vec::new(),
        start_timestamp_lines: 0,
        raw,
    };
    for (k, l) in load.raw.iter().enumerate() {
        match parse_series_line(l).map_err(|e| format!("line {}: {e}", i + 2 + k))? {
            None => load.start_timestamp_lines += 1,
            Some(s) => {
                if let Some(old) = load.series.iter_mut().find(|o| o.labels == s.labels) {
                    *old = s;
                } else {
                    load.series.push(s);
                }
            }
        }
    }
    let next = i + 1 + load.raw.len();
    Ok((load, next))
}

fn parse_expect_line(l: &str) -> Result<(String, Match), String> {
    let bad = || format!("invalid expect statement {l:?}, must match `expect <type> <match_type>: <string>`");
    let rest = l.strip_prefix("expect").ok_or_else(bad)?;
    if !rest.starts_with(char::is_whitespace) {
        return Err(bad());
    }
    let rest = rest.trim_start();
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let kind = &rest[..end];
    if !["ordered", "fail", "warn", "no_warn", "info", "no_info"].contains(&kind) {
        return Err(bad());
    }
    let opt = rest[end..].trim_start();
    let m = if opt.is_empty() {
        Match::Any
    } else if let Some(msg) = opt.strip_prefix("msg:").filter(|m| !m.is_empty()) {
        Match::Msg(msg.trim().to_string())
    } else if let Some(re) = opt.strip_prefix("regex:").filter(|m| !m.is_empty()) {
        let re = re.trim();
        Match::Regex(Regex::new(re).map_err(|e| format!("invalid regex {re} for {kind}: {e}"))?)
    } else {
        return Err(bad());
    };
    Ok((kind.to_string(), m))
}

fn parse_eval(lines: &[&str], i: usize) -> Result<(Eval, usize), String> {
    let l = lines[i];
    let invalid = || {
        "invalid evaluation command. Must be either 'eval[_fail|_warn|_info|_ordered] instant at <offset:duration> <query>' \
         or 'eval[_fail|_warn|_info] range from <from> to <to> step <step> <query>'"
            .to_string()
    };
    let (head, _) = split_words(l, 2).ok_or_else(invalid)?;
    let modifier = match head[0] {
        "eval" => "",
        "eval_fail" => "fail",
        "eval_warn" => "warn",
        "eval_info" => "info",
        "eval_ordered" => "ordered",
        _ => return Err(invalid()),
    };
    let (kind, query) = match head[1] {
        "instant" => {
            let (w, query) = split_words(l, 4).ok_or_else(invalid)?;
            if w[2] != "at" {
                return Err(invalid());
            }
            let at = parse_duration(w[3]).map_err(|e| format!("invalid timestamp definition: {e}"))?;
            (EvalKind::Instant { at }, query)
        }
        "range" if modifier != "ordered" => {
            let (w, query) = split_words(l, 8).ok_or_else(invalid)?;
            if w[2] != "from" || w[4] != "to" || w[6] != "step" {
                return Err(invalid());
            }
            let start = parse_duration(w[3]).map_err(|e| format!("invalid start timestamp definition: {e}"))?;
            let end = parse_duration(w[5]).map_err(|e| format!("invalid end timestamp definition: {e}"))?;
            let step = parse_duration(w[7]).map_err(|e| format!("invalid step definition: {e}"))?;
            if end < start {
                return Err(format!(
                    "invalid test definition, end timestamp ({}) is before start timestamp ({})",
                    w[5], w[3]
                ));
            }
            (EvalKind::Range { start, end, step }, query)
        }
        _ => return Err(invalid()),
    };
    if query.is_empty() {
        return Err(invalid());
    }
    let mut ev = Eval {
        line: i + 1,
        query: query.to_string(),
        kind,
        fail: modifier == "fail",
        warn: modifier == "warn",
        info: modifier == "info",
        ordered: modifier == "ordered",
        expected_fail_message: None,
        expected_fail_regexp: None,
        expects: Expects::default(),
        expected_string: None,
        range_vector: None,
        expected: Expected::Series(Vec::new()),
        block: block(lines, i),
    };
    let is_instant = matches!(kind, EvalKind::Instant { .. });
    let mut j = i + 1;
    while j < lines.len() && !lines[j].is_empty() {
        let d = lines[j];
        let lineno = j + 1;
        let at = |e: String| format!("line {lineno}: {e}");
        j += 1;
        if ev.fail
            && let Some(m) = d.strip_prefix("expected_fail_message")
        {
            ev.expected_fail_message = Some(m.trim().to_string()).filter(|m| !m.is_empty());
            break;
        }
        if ev.fail
            && let Some(re) = d.strip_prefix("expected_fail_regexp")
        {
            let re = re.trim();
            ev.expected_fail_regexp = Some(Regex::new(re).map_err(|e| at(format!("invalid regexp {re:?}: {e}")))?);
            break;
        }
        if let Some(r) = d.strip_prefix("expect range vector") {
            let (w, rest) = split_words(r, 6).ok_or_else(|| at(format!("invalid range vector definition {d:?}")))?;
            if w[0] != "from" || w[2] != "to" || w[4] != "step" || !rest.is_empty() {
                return Err(at(format!("invalid range vector definition {d:?}")));
            }
            let start = parse_duration(w[1]).map_err(at)?;
            let end = parse_duration(w[3]).map_err(at)?;
            let step = parse_duration(w[5]).map_err(at)?;
            if end < start {
                return Err(at(format!("invalid range vector definition {d:?}: end before start")));
            }
            ev.range_vector = Some((start, end, step));
            continue;
        }
        if d.starts_with("expect string") {
            let lit = d
                .strip_prefix("expect string ")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| at("expected string literal not valid - a quoted string literal is required".into()))?;
            let (s, rest) = read_quoted(lit).map_err(at)?;
            if !rest.is_empty() {
                return Err(at(
                    "expected string literal not valid - check that the string is correctly quoted".into()
                ));
            }
            ev.expected_string = Some(s);
            continue;
        }
        if d.split(' ').next() == Some("expect") {
            let (kind, m) = parse_expect_line(d).map_err(at)?;
            let x = &mut ev.expects;
            match kind.as_str() {
                "ordered" => x.ordered = true,
                "fail" => x.fail.push(m),
                "warn" => x.warn.push(m),
                "no_warn" => x.no_warn = true,
                "info" => x.info.push(m),
                _ => x.no_info = true,
            }
            if !x.info.is_empty() && x.no_info {
                return Err(at("invalid expect lines, info and no_info cannot be used together".into()));
            }
            if !x.warn.is_empty() && x.no_warn {
                return Err(at("invalid expect lines, warn and no_warn cannot be used together".into()));
            }
            if x.fail.len() > 1 {
                return Err(at("invalid expect lines, multiple expect fail lines are not allowed".into()));
            }
            continue;
        }
        if let Some(f) = parse_number(d) {
            ev.expected = Expected::Scalar(f);
            break;
        }
        let s = parse_series_line(d)
            .map_err(at)?
            .ok_or_else(|| at("start timestamps in an expected result".into()))?;
        if s.values.len() > 1 && is_instant && ev.range_vector.is_none() {
            return Err(at(
                "expecting multiple values in instant evaluation not allowed. consider using 'expect range vector' directive".into(),
            ));
        }
        match &mut ev.expected {
            Expected::Series(v) => {
                if let Some(old) = v.iter_mut().find(|o| o.labels == s.labels) {
                    *old = s;
                } else {
                    v.push(s);
                }
            }
            Expected::Scalar(_) => ev.expected = Expected::Series(vec![s]),
        }
    }
    Ok((ev, j))
}

// ---------------------------------------------------------------------------
// Native-histogram heuristic (count_evals.py)
// ---------------------------------------------------------------------------

/// The metric name of a load line, as `count_evals.py` finds it: a leading
/// identifier, else a `__name__="…"` matcher.
fn heuristic_series_name(line: &str) -> Option<String> {
    let n = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    if n > 0 && line.starts_with(is_name_start) {
        return Some(line[..n].to_string());
    }
    let i = line.find("__name__")?;
    let r = line[i + "__name__".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start()
        .strip_prefix('"')?;
    let end = r.find('"')?;
    Some(r[..end].to_string()).filter(|s| !s.is_empty())
}

/// Records the native-histogram metric names a load introduces: series
/// with `{{…}}` samples, and the NHCB base names of `load_with_nhcb`.
pub fn note_native_histograms(names: &mut BTreeSet<String>, load: &Load) {
    for l in &load.raw {
        let Some(name) = heuristic_series_name(l) else {
            continue;
        };
        if l.contains("{{") {
            names.insert(name.replace("@st", ""));
        }
        if load.with_nhcb
            && let Some(base) = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s))
        {
            names.insert(base.to_string());
        }
    }
}

/// Whether `name` occurs in `text` as a whole identifier.
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

/// `count_evals.py`'s heuristic: the eval touches native histograms when
/// its block contains `{{` or its command line names a metric loaded with
/// native histograms since the last `clear`.
pub fn touches_native_histograms(eval: &Eval, names: &BTreeSet<String>) -> bool {
    eval.block.iter().any(|b| b.contains("{{")) || names.iter().any(|n| mentions(&eval.query, n))
}

// ---------------------------------------------------------------------------
// Query rewriting (the `@` variants)
// ---------------------------------------------------------------------------

/// A millisecond timestamp as a `SystemTime` (also before the epoch).
pub fn system_time(t: i64) -> SystemTime {
    if t >= 0 {
        UNIX_EPOCH + Duration::from_millis(t as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(t.unsigned_abs())
    }
}

fn pinned(at: &Option<AtModifier>) -> bool {
    matches!(at, Some(AtModifier::At(_)))
}

/// Adds `@ t` to every selector and subquery without a timestamp, as
/// upstream: `@ start()` / `@ end()` count as none (upstream's parser keeps
/// them apart from the timestamp), and nothing inside a subquery is changed
/// (the subquery itself is pinned).
pub fn pin_at(expr: &mut Expr, t: i64) {
    let at = || Some(AtModifier::At(system_time(t)));
    match expr {
        Expr::VectorSelector(vs) => {
            if !pinned(&vs.at) {
                vs.at = at();
            }
        }
        Expr::MatrixSelector(m) => {
            if !pinned(&m.vs.at) {
                m.vs.at = at();
            }
        }
        Expr::Subquery(sq) => {
            if !pinned(&sq.at) {
                sq.at = at();
            }
        }
        Expr::Aggregate(a) => {
            pin_at(&mut a.expr, t);
            if let Some(p) = &mut a.param {
                pin_at(p, t);
            }
        }
        Expr::Unary(u) => pin_at(&mut u.expr, t),
        Expr::Binary(b) => {
            pin_at(&mut b.lhs, t);
            pin_at(&mut b.rhs, t);
        }
        Expr::Paren(p) => pin_at(&mut p.expr, t),
        Expr::Call(c) => {
            for a in &mut c.args.args {
                pin_at(a, t);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Visits `expr` and its children; `into_subqueries` false stops at
/// subqueries (their children are not visited).
fn any_node(expr: &Expr, into_subqueries: bool, f: &dyn Fn(&Expr) -> bool) -> bool {
    if f(expr) {
        return true;
    }
    match expr {
        Expr::Subquery(sq) => into_subqueries && any_node(&sq.expr, into_subqueries, f),
        Expr::Aggregate(a) => any_node(&a.expr, into_subqueries, f) || a.param.as_ref().is_some_and(|p| any_node(p, into_subqueries, f)),
        Expr::Unary(u) => any_node(&u.expr, into_subqueries, f),
        Expr::Binary(b) => any_node(&b.lhs, into_subqueries, f) || any_node(&b.rhs, into_subqueries, f),
        Expr::Paren(p) => any_node(&p.expr, into_subqueries, f),
        Expr::Call(c) => c.args.args.iter().any(|a| any_node(a, into_subqueries, f)),
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) | Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => false,
    }
}

/// Whether the query calls an @-unsafe function (outside subqueries: as
/// upstream, whose check skips every node under a pinned subquery).
pub fn calls_at_unsafe_function(expr: &Expr) -> bool {
    any_node(
        expr,
        false,
        &|e| matches!(e, Expr::Call(c) if AT_UNSAFE_FUNCTIONS.contains(&c.func.name)),
    )
}

/// Whether a (rewritten) query still mentions `start()` / `end()`, as an
/// `@` modifier or a call (upstream checks the variant's text).
fn mentions_start_or_end(expr: &Expr) -> bool {
    let se = |at: &Option<AtModifier>| matches!(at, Some(AtModifier::Start | AtModifier::End));
    any_node(expr, true, &|e| match e {
        Expr::VectorSelector(vs) => se(&vs.at),
        Expr::MatrixSelector(m) => se(&m.vs.at),
        Expr::Subquery(sq) => se(&sq.at),
        Expr::Call(c) => matches!(c.func.name, "start" | "end"),
        _ => false,
    })
}

/// The extra evaluation times of the `@` variants of an instant eval at `t`.
pub fn at_variant_times(t: i64) -> Vec<i64> {
    if t == 0 {
        vec![-1000, 0, 1000]
    } else {
        vec![-10 * t, 0, t / 5, t, 10 * t]
    }
}

// ---------------------------------------------------------------------------
// Backend and results
// ---------------------------------------------------------------------------

/// A query result.
#[derive(Debug, Clone)]
pub enum QValue {
    /// A scalar.
    Scalar(f64),
    /// A string.
    String(String),
    /// An instant vector: (labels, value).
    Vector(Vec<(Labels, f64)>),
    /// A range vector or range-query result: (labels, samples (ms, value)).
    Matrix(Vec<(Labels, Vec<(i64, f64)>)>),
}

/// What a query returns.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// The value.
    pub value: QValue,
    /// Warning annotations (full text, e.g. `PromQL warning: … (1:15)`).
    pub warnings: Vec<String>,
    /// Info annotations.
    pub infos: Vec<String>,
}

/// A storage plus a query engine, as the runner drives them.
pub trait Backend {
    /// Starts from empty storage (called before a file and at each `clear`).
    fn reset(&mut self) -> Result<(), String>;
    /// Stores float samples: (labels sorted with `__name__`, (ms, value)).
    fn load(&mut self, series: &[(Labels, Vec<(i64, f64)>)]) -> Result<(), String>;
    /// An instant query at `t` (ms); the error is its message.
    fn instant(&self, expr: &Expr, t: i64) -> Result<QueryOutput, String>;
    /// A range query (ms).
    fn range(&self, expr: &Expr, start: i64, end: i64, step: i64) -> Result<QueryOutput, String>;
}

/// Upstream's `almost.Equal` with [`EPSILON`]: NaN equals NaN, StaleNaN
/// equals only StaleNaN, otherwise the relative difference must be small.
pub fn almost_equal(a: f64, b: f64) -> bool {
    let (sa, sb) = (csoc_proto::is_stale_nan(a), csoc_proto::is_stale_nan(b));
    if sa || sb {
        return sa && sb;
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < EPSILON * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

/// `name{a="b", …}`.
pub fn format_labels(l: &Labels) -> String {
    let mut s = String::new();
    if let Some((_, n)) = l.iter().find(|(k, _)| k == "__name__") {
        s.push_str(n);
    }
    let rest: Vec<String> = l
        .iter()
        .filter(|(k, _)| k != "__name__")
        .map(|(k, v)| format!("{k}={}", format_string(v)))
        .collect();
    if !rest.is_empty() || s.is_empty() {
        let _ = write!(s, "{{{}}}", rest.join(", "));
    }
    s
}

fn format_string(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

fn format_float(v: f64) -> String {
    if csoc_proto::is_stale_nan(v) {
        "stale".into()
    } else {
        format!("{v}")
    }
}

fn format_samples(samples: &[(i64, f64)]) -> String {
    const MAX: usize = 40;
    let mut s: Vec<String> = samples
        .iter()
        .take(MAX)
        .map(|(t, v)| format!("{}@{}", format_float(*v), fmt_ms(*t)))
        .collect();
    if samples.len() > MAX {
        s.push(format!("… ({} points)", samples.len()));
    }
    s.join(" ")
}

/// A query result as text, for reports (long results are cut).
pub fn format_value(v: &QValue) -> String {
    const MAX: usize = 30;
    let cut = |lines: Vec<String>, n: usize| {
        let mut out = lines.join("\n");
        if n > MAX {
            let _ = write!(out, "\n… ({n} series)");
        }
        out
    };
    match v {
        QValue::Scalar(f) => format!("scalar {}", format_float(*f)),
        QValue::String(s) => format!("string {}", format_string(s)),
        QValue::Vector(v) if v.is_empty() => "empty vector".into(),
        QValue::Vector(v) => cut(
            v.iter()
                .take(MAX)
                .map(|(l, f)| format!("{} {}", format_labels(l), format_float(*f)))
                .collect(),
            v.len(),
        ),
        QValue::Matrix(m) if m.is_empty() => "empty matrix".into(),
        QValue::Matrix(m) => cut(
            m.iter()
                .take(MAX)
                .map(|(l, s)| format!("{} {}", format_labels(l), format_samples(s)))
                .collect(),
            m.len(),
        ),
    }
}

/// Milliseconds as seconds text (`600s`, `-1.5s`).
pub fn fmt_ms(t: i64) -> String {
    if t % 1000 == 0 {
        format!("{}s", t / 1000)
    } else {
        format!("{}s", t as f64 / 1000.0)
    }
}

fn value_kind(v: &QValue) -> &'static str {
    match v {
        QValue::Scalar(_) => "scalar",
        QValue::String(_) => "string",
        QValue::Vector(_) => "vector",
        QValue::Matrix(_) => "matrix",
    }
}

/// Checks a result against the expectation, as upstream's `compareResult`.
/// `range` is (start, end, step) for matrix results.
fn compare_result(ev: &Eval, value: &QValue, range: Option<(i64, i64, i64)>) -> Result<(), String> {
    let expected_series = match &ev.expected {
        Expected::Series(s) => Some(s.as_slice()),
        Expected::Scalar(_) => None,
    };
    match value {
        QValue::Matrix(m) => {
            if ev.is_ordered() {
                return Err("expected ordered result, but query returned a matrix".into());
            }
            let Some(exp) = expected_series else {
                return Err("expected scalar result, but got a matrix".into());
            };
            check_sorted(m)?;
            // An instant query returning a matrix without `expect range
            // vector`: upstream's range is empty, so no point can match.
            let (start, end, step) = range.unwrap_or((ev.instant_time().unwrap_or(0), i64::MIN, 0));
            let mut seen = vec![false; exp.len()];
            for (labels, samples) in m {
                let Some(k) = exp.iter().position(|e| &e.labels == labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has {}",
                        format_labels(labels),
                        format_samples(samples)
                    ));
                };
                seen[k] = true;
                let mut floats = Vec::new();
                let mut histograms = 0;
                for (i, v) in exp[k].values.iter().enumerate() {
                    let ts = start + i as i64 * step;
                    if ts > end {
                        return Err(format!(
                            "expected {} points for {}, but query time range cannot return this many points",
                            exp[k].values.len(),
                            format_labels(labels)
                        ));
                    }
                    match v {
                        SeqValue::Float(f) => floats.push((ts, *f)),
                        SeqValue::Histogram => histograms += 1,
                        SeqValue::Omitted => {}
                    }
                }
                if floats.len() != samples.len() || histograms > 0 {
                    return Err(format!(
                        "expected {} float points and {histograms} histogram points for {}, but got {} float points: {}",
                        floats.len(),
                        format_labels(labels),
                        samples.len(),
                        format_samples(samples)
                    ));
                }
                for (i, ((et, ef), (at, af))) in floats.iter().zip(samples).enumerate() {
                    if et != at {
                        return Err(format!(
                            "expected float value at index {i} for {} to have timestamp {et}, but it had timestamp {at} (result has {})",
                            format_labels(labels),
                            format_samples(samples)
                        ));
                    }
                    if !almost_equal(*af, *ef) {
                        return Err(format!(
                            "expected float value at index {i} (t={}) for {} to be {}, but got {}",
                            fmt_ms(*at),
                            format_labels(labels),
                            format_float(*ef),
                            format_float(*af)
                        ));
                    }
                }
            }
            if let Some(k) = seen.iter().position(|s| !s) {
                return Err(format!("expected metric {} not found", format_labels(&exp[k].labels)));
            }
            Ok(())
        }
        QValue::Vector(v) => {
            let Some(exp) = expected_series else {
                return Err("expected scalar result, but got a vector".into());
            };
            let mut seen = vec![false; exp.len()];
            for (pos, (labels, f)) in v.iter().enumerate() {
                let Some(k) = exp.iter().position(|e| &e.labels == labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has value {}",
                        format_labels(labels),
                        format_float(*f)
                    ));
                };
                if ev.is_ordered() && k != pos {
                    return Err(format!(
                        "expected metric {} at position {} but was at {}",
                        format_labels(labels),
                        k + 1,
                        pos + 1
                    ));
                }
                let e = match exp[k].values.first() {
                    Some(SeqValue::Float(e)) => *e,
                    Some(SeqValue::Omitted) | None => 0.0,
                    Some(SeqValue::Histogram) => {
                        return Err(format!(
                            "expected a histogram for {} but got float value {f}",
                            format_labels(labels)
                        ));
                    }
                };
                if !almost_equal(e, *f) {
                    return Err(format!(
                        "expected {} for {} but got {}",
                        format_float(e),
                        format_labels(labels),
                        format_float(*f)
                    ));
                }
                seen[k] = true;
            }
            if let Some(k) = seen.iter().position(|s| !s) {
                return Err(format!("expected metric {} not found", format_labels(&exp[k].labels)));
            }
            Ok(())
        }
        QValue::Scalar(f) => {
            let Expected::Scalar(e) = ev.expected else {
                return Err(format!("expected vector or matrix result, but got scalar {}", format_float(*f)));
            };
            if !almost_equal(e, *f) {
                return Err(format!("expected scalar {} but got {}", format_float(e), format_float(*f)));
            }
            Ok(())
        }
        QValue::String(s) => {
            let e = ev.expected_string.as_deref().unwrap_or("");
            if e != s {
                return Err(format!("expected string {} but got {}", format_string(e), format_string(s)));
            }
            Ok(())
        }
    }
}

fn check_sorted(m: &[(Labels, Vec<(i64, f64)>)]) -> Result<(), String> {
    for (i, w) in m.windows(2).enumerate() {
        if w[0].0 > w[1].0 {
            return Err(format!(
                "matrix results should always be sorted by labels, but series at index {} ({}) sorts before series at index {i} ({})",
                i + 1,
                format_labels(&w[1].0),
                format_labels(&w[0].0)
            ));
        }
    }
    Ok(())
}

fn check_annotation_kind(kind: &str, expected: &[Match], actual: &[String]) -> Result<(), String> {
    if expected.is_empty() {
        return Ok(());
    }
    if actual.is_empty() {
        return Err(format!("expected {kind} annotations but none were found"));
    }
    if let Some(e) = expected.iter().find(|e| !actual.iter().any(|a| e.matches(a))) {
        return Err(format!(
            "expected {kind} annotation matching {e} but no matching annotation was found, found: {actual:?}"
        ));
    }
    if let Some(a) = actual.iter().find(|a| !expected.iter().any(|e| e.matches(a))) {
        return Err(format!("unexpected {kind} annotation {a:?}"));
    }
    Ok(())
}

/// Checks annotations, as upstream's `checkAnnotations`.
fn check_annotations(ev: &Eval, out: &QueryOutput) -> Result<(), String> {
    if ev.warn && out.warnings.is_empty() {
        return Err("expected warnings but got none".into());
    }
    if ev.info && out.infos.is_empty() {
        return Err("expected info annotations but got none".into());
    }
    check_annotation_kind("warn", &ev.expects.warn, &out.warnings)?;
    check_annotation_kind("info", &ev.expects.info, &out.infos)?;
    if ev.expects.no_warn && !out.warnings.is_empty() {
        return Err(format!("unexpected warning annotations: {:?}", out.warnings));
    }
    if ev.expects.no_info && !out.infos.is_empty() {
        return Err(format!("unexpected info annotations: {:?}", out.infos));
    }
    Ok(())
}

/// Checks the error of a query expected to fail.
fn check_expected_failure(ev: &Eval, err: &str) -> Result<(), String> {
    if let Some(m) = &ev.expected_fail_message
        && m != err
    {
        return Err(format!("expected error {m:?}, but got: {err}"));
    }
    if let Some(re) = &ev.expected_fail_regexp
        && !re.is_match(err)
    {
        return Err(format!("expected error matching pattern {:?}, but got: {err}", re.as_str()));
    }
    if let Some(m) = ev.expects.fail.first()
        && !m.matches(err)
    {
        return Err(format!("expected error matching {m}, but got: {err}"));
    }
    Ok(())
}

/// One engine call, with panics caught.
enum Called {
    Ok(QueryOutput),
    Err(String),
    Panic(String),
}

fn call(f: impl FnOnce() -> Result<QueryOutput, String>) -> Called {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(o)) => Called::Ok(o),
        Ok(Err(e)) => Called::Err(e),
        Err(p) => Called::Panic(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".into()),
        ),
    }
}

/// Why one variant of an eval failed.
#[derive(Debug, Clone)]
struct Mismatch {
    variant: String,
    reason: String,
    got: String,
}

fn mismatch(variant: &str, reason: String, got: String) -> Mismatch {
    Mismatch {
        variant: variant.to_string(),
        reason,
        got,
    }
}

/// Runs a query and checks failure expectations, annotations and the
/// result. Ok(None): it failed as expected.
fn check_query(
    ev: &Eval,
    variant: &str,
    range: Option<(i64, i64, i64)>,
    f: impl FnOnce() -> Result<QueryOutput, String>,
) -> Result<Option<QueryOutput>, Mismatch> {
    match call(f) {
        Called::Panic(p) => Err(mismatch(variant, "the engine panicked".into(), format!("panic: {p}"))),
        Called::Err(e) => {
            if ev.is_fail() {
                check_expected_failure(ev, &e).map_err(|r| mismatch(variant, r, format!("error: {e}")))?;
                Ok(None)
            } else {
                Err(mismatch(variant, "unexpected error".into(), format!("error: {e}")))
            }
        }
        Called::Ok(out) => {
            let got = || format_value(&out.value);
            if ev.is_fail() {
                return Err(mismatch(variant, "expected an error but got none".into(), got()));
            }
            check_annotations(ev, &out).map_err(|r| {
                let mut g = got();
                let _ = write!(g, "\nwarnings: {:?}\ninfos: {:?}", out.warnings, out.infos);
                mismatch(variant, r, g)
            })?;
            compare_result(ev, &out.value, range).map_err(|r| mismatch(variant, r, got()))?;
            Ok(Some(out))
        }
    }
}

/// The range-mode check of an instant query at `t`: run from `t-1m` to
/// `t+1m` step `1m` and compare the middle step with the expectation.
fn check_range_mode(backend: &dyn Backend, ev: &Eval, expr: &Expr, t: i64, instant_value: &QValue, variant: &str) -> Result<(), Mismatch> {
    let variant = format!("{variant}, range mode {}..{} step 1m", fmt_ms(t - 60_000), fmt_ms(t + 60_000));
    let out = match call(|| backend.range(expr, t - 60_000, t + 60_000, 60_000)) {
        Called::Ok(o) => o,
        Called::Err(e) => return Err(mismatch(&variant, "unexpected error".into(), format!("error: {e}"))),
        Called::Panic(p) => return Err(mismatch(&variant, "the engine panicked".into(), format!("panic: {p}"))),
    };
    let QValue::Matrix(m) = &out.value else {
        return Err(mismatch(
            &variant,
            format!("a range query returned a {}, not a matrix", value_kind(&out.value)),
            format_value(&out.value),
        ));
    };
    check_sorted(m).map_err(|r| mismatch(&variant, r, format_value(&out.value)))?;
    let vec: Vec<(Labels, f64)> = m
        .iter()
        .filter_map(|(l, s)| s.iter().find(|(pt, _)| *pt == t).map(|(_, v)| (l.clone(), *v)))
        .collect();
    let middle = if matches!(instant_value, QValue::Scalar(_)) {
        match vec.first() {
            Some((_, v)) => QValue::Scalar(*v),
            None => {
                return Err(mismatch(
                    &variant,
                    format!("no point at t={} for the scalar", fmt_ms(t)),
                    format_value(&out.value),
                ));
            }
        }
    } else {
        QValue::Vector(vec)
    };
    compare_result(ev, &middle, None).map_err(|r| mismatch(&variant, r, format_value(&out.value)))
}

/// Runs one eval with all its variants. Returns whether the literal
/// command passed, and the first failing variant.
fn run_eval(backend: &dyn Backend, ev: &Eval, expr: &Expr) -> (bool, Result<(), Mismatch>) {
    let t = match ev.kind {
        EvalKind::Range { start, end, step } => {
            let r = check_query(ev, "range query", Some((start, end, step)), || {
                backend.range(expr, start, end, step)
            })
            .map(|_| ());
            return (r.is_ok(), r);
        }
        EvalKind::Instant { .. } => ev.instant_time().unwrap_or(0),
    };
    let mut variants: Vec<(String, Expr, i64)> = vec![(format!("instant query at {}", fmt_ms(t)), expr.clone(), t)];
    if !calls_at_unsafe_function(expr) {
        let mut p = expr.clone();
        pin_at(&mut p, t);
        for et in at_variant_times(t) {
            variants.push((format!("with @ {} added, at {}", fmt_ms(t), fmt_ms(et)), p.clone(), et));
        }
    }
    let mut literal_ok = false;
    for (idx, (variant, e, et)) in variants.iter().enumerate() {
        let r = check_query(ev, variant, ev.range_vector, || backend.instant(e, *et));
        if idx == 0 {
            literal_ok = r.is_ok();
        }
        let out = match r {
            Err(m) => return (literal_ok, Err(m)),
            Ok(None) => continue,
            Ok(Some(out)) => out,
        };
        let skip_range_mode = ev.excluded_from_range_mode()
            || ev.is_ordered()
            || if idx == 0 {
                RANGE_MODE_SKIP.iter().any(|s| ev.query.contains(s))
            } else {
                ev.query.contains("range()") || ev.query.contains("step()") || mentions_start_or_end(e)
            };
        if !skip_range_mode && let Err(m) = check_range_mode(backend, ev, e, *et, &out.value, variant) {
            return (literal_ok, Err(m));
        }
    }
    (literal_ok, Ok(()))
}

// ---------------------------------------------------------------------------
// Running a script
// ---------------------------------------------------------------------------

/// A failed eval.
#[derive(Debug, Clone)]
pub struct Failure {
    /// 1-based line of the eval.
    pub line: usize,
    /// The query.
    pub query: String,
    /// Which variant failed first (`instant query at 50m`, `… range mode`,
    /// `with @ … added, at …`, `parse`).
    pub variant: String,
    /// Why.
    pub reason: String,
    /// The eval's expectation ([`Eval::expected_summary`]).
    pub expected: String,
    /// What the engine returned (or its error).
    pub got: String,
    /// The query did not parse.
    pub parse_error: bool,
}

/// The outcome of one script.
#[derive(Debug, Clone, Default)]
pub struct FileReport {
    /// File name.
    pub file: String,
    /// Eval commands.
    pub evals: usize,
    /// Of those, touching native histograms (not run).
    pub out_of_scope: usize,
    /// In scope and passed with every variant.
    pub passed: usize,
    /// In scope and the literal command alone passed.
    pub literal_passed: usize,
    /// In scope and the query did not parse (counted as failed).
    pub parse_errors: usize,
    /// The failures (in scope).
    pub failures: Vec<Failure>,
    /// The script did not parse, or storage failed: what ran stopped there.
    pub error: Option<String>,
    /// Start-timestamp lines ignored.
    pub start_timestamp_lines: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl FileReport {
    /// Evals in scope.
    pub fn in_scope(&self) -> usize {
        self.evals - self.out_of_scope
    }

    /// Evals in scope that failed.
    pub fn failed(&self) -> usize {
        self.in_scope() - self.passed
    }
}

/// Parses and runs one script against `backend`.
pub fn run_script(file: &str, text: &str, backend: &mut dyn Backend) -> FileReport {
    let started = Instant::now();
    let mut rep = FileReport {
        file: file.to_string(),
        ..Default::default()
    };
    let cmds = match parse_script(text) {
        Ok(c) => c,
        Err(e) => {
            rep.evals = script_lines(text).iter().filter(|l| l.starts_with("eval")).count();
            rep.error = Some(format!("the script does not parse: {e}"));
            rep.elapsed = started.elapsed();
            return rep;
        }
    };
    let mut broken = backend.reset().err().map(|e| format!("storage: {e}"));
    let mut nh_names = BTreeSet::new();
    for cmd in &cmds {
        match cmd {
            Command::Clear { .. } => {
                nh_names.clear();
                if broken.is_none() {
                    broken = backend.reset().err().map(|e| format!("storage: {e}"));
                }
            }
            Command::Load(load) => {
                note_native_histograms(&mut nh_names, load);
                rep.start_timestamp_lines += load.start_timestamp_lines;
                if broken.is_none() {
                    broken = backend
                        .load(&load.float_samples())
                        .err()
                        .map(|e| format!("load at line {}: {e}", load.line));
                }
            }
            Command::Eval(ev) => {
                rep.evals += 1;
                if touches_native_histograms(ev, &nh_names) {
                    rep.out_of_scope += 1;
                    continue;
                }
                let fail = |variant: &str, reason: String, got: String, parse_error: bool| Failure {
                    line: ev.line,
                    query: ev.query.clone(),
                    variant: variant.to_string(),
                    reason,
                    expected: ev.expected_summary(),
                    got,
                    parse_error,
                };
                if let Some(b) = &broken {
                    rep.failures.push(fail("not run", b.clone(), String::new(), false));
                    continue;
                }
                let expr = match promql_parser::parser::parse(&ev.query) {
                    Ok(e) => e,
                    Err(e) => {
                        rep.parse_errors += 1;
                        rep.failures.push(fail("parse", "promql-parser rejects the query".into(), e, true));
                        continue;
                    }
                };
                let (literal_ok, r) = run_eval(&*backend, ev, &expr);
                if literal_ok {
                    rep.literal_passed += 1;
                }
                match r {
                    Ok(()) => rep.passed += 1,
                    Err(m) => rep.failures.push(fail(&m.variant, m.reason, m.got, false)),
                }
            }
        }
    }
    rep.error = broken;
    rep.elapsed = started.elapsed();
    rep
}

/// The per-file table (markdown) with a totals row.
pub fn markdown_table(reports: &[FileReport]) -> String {
    let mut s = String::from(
        "| file | evals | out of scope (native histograms) | in scope | passed | failed | of which parse errors | literal command passed |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut tot = FileReport::default();
    for r in reports {
        let note = if r.error.is_some() { " (error, see below)" } else { "" };
        let _ = writeln!(
            s,
            "| {}{note} | {} | {} | {} | {} | {} | {} | {} |",
            r.file,
            r.evals,
            r.out_of_scope,
            r.in_scope(),
            r.passed,
            r.failed(),
            r.parse_errors,
            r.literal_passed
        );
        tot.evals += r.evals;
        tot.out_of_scope += r.out_of_scope;
        tot.passed += r.passed;
        tot.parse_errors += r.parse_errors;
        tot.literal_passed += r.literal_passed;
    }
    let _ = writeln!(
        s,
        "| **total ({} files)** | **{}** | {} | {} | **{}** | {} | {} | {} |",
        reports.len(),
        tot.evals,
        tot.out_of_scope,
        tot.in_scope(),
        tot.passed,
        tot.failed(),
        tot.parse_errors,
        tot.literal_passed
    );
    let errors: Vec<String> = reports
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("- {}: {e}", r.file)))
        .collect();
    if !errors.is_empty() {
        let _ = write!(s, "\nErrors:\n{}\n", errors.join("\n"));
    }
    s
}

/// What the table's columns mean and how this runner differs from
/// upstream's.
pub const REPORT_NOTES: &str = "\
\"passed\": the eval passed with every variant upstream's runner adds (instant evals also run as a range query \
t-1m..t+1m step 1m, and with `@ t` added at -10t, 0, t/5, t, 10t). \"literal command passed\": the command as \
written (the instant query alone, or the range query) passed.\n\
Out of scope: evals touching native histograms (count_evals.py's heuristic); their samples are not loaded, \
load_with_nhcb loads only the classic series, and start timestamps (`@st` lines) are not loaded.\n\
Unlike upstream, where one query that does not parse rejects the whole file, a parse error (promql-parser) \
fails only its eval.\n";

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn floats(v: &[SeqValue]) -> Vec<Option<f64>> {
        v.iter()
            .map(|x| match x {
                SeqValue::Float(f) => Some(*f),
                _ => None,
            })
            .collect()
    }

    fn one_eval(text: &str) -> Eval {
        let cmds = parse_script(text).expect("script parses");
        match cmds.into_iter().next() {
            Some(Command::Eval(e)) => *e,
            other => panic!("expected an eval, got {other:?}"),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("0m"), Ok(0));
        assert_eq!(parse_duration("50m"), Ok(3_000_000));
        assert_eq!(parse_duration("1h5m"), Ok(3_900_000));
        assert_eq!(parse_duration("20s500ms"), Ok(20_500));
        assert_eq!(parse_duration("5m1ms"), Ok(300_001));
        assert_eq!(parse_duration("1ms"), Ok(1));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("1y"), Ok(365 * 86_400_000));
        assert_eq!(parse_duration("-10s"), Ok(-10_000));
        assert_eq!(parse_duration("-59999ms"), Ok(-59_999));
        for bad in ["", "5", "m", "5x", "1m1h", "1s1s", "1.5m", "-"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn value_expansion() {
        let v = parse_values("0+10x3").expect("parses");
        assert_eq!(floats(&v), vec![Some(0.0), Some(10.0), Some(20.0), Some(30.0)]);
        let v = parse_values("10-2x2 1x2").expect("parses");
        assert_eq!(floats(&v), vec![Some(10.0), Some(8.0), Some(6.0), Some(1.0), Some(1.0), Some(1.0)]);
        let v = parse_values("-2+1.5x2").expect("parses");
        assert_eq!(floats(&v), vec![Some(-2.0), Some(-0.5), Some(1.0)]);
        let v = parse_values("1e3+1e2x1 2.5e-1").expect("parses");
        assert_eq!(floats(&v), vec![Some(1000.0), Some(1100.0), Some(0.25)]);
        let v = parse_values("1 _ _x2 3").expect("parses");
        assert_eq!(floats(&v), vec![Some(1.0), None, None, None, Some(3.0)]);
        assert!(matches!(v[1], SeqValue::Omitted));
        // 0x3 is "0 repeated", not hex; 0x1F and 0x3d are hex.
        assert_eq!(floats(&parse_values("0x3").expect("parses")), vec![Some(0.0); 4]);
        assert_eq!(floats(&parse_values("0x1F -0x3d").expect("parses")), vec![Some(31.0), Some(-61.0)]);
        // Accumulated like upstream, not multiplied.
        let v = parse_values("0+0.1x3").expect("parses");
        assert_eq!(v.len(), 4);
        let SeqValue::Float(last) = v[3] else { panic!("float") };
        assert_eq!(last, 0.1 + 0.1 + 0.1);
    }

    #[test]
    fn special_values() {
        let v = parse_values("stale NaN Inf -Inf +Inf inf nan 1").expect("parses");
        let SeqValue::Float(s) = v[0] else { panic!("float") };
        assert!(csoc_proto::is_stale_nan(s));
        let SeqValue::Float(n) = v[1] else { panic!("float") };
        assert!(n.is_nan() && !csoc_proto::is_stale_nan(n), "NaN is an ordinary value");
        assert_eq!(
            floats(&v[2..5]),
            vec![Some(f64::INFINITY), Some(f64::NEG_INFINITY), Some(f64::INFINITY)]
        );
        assert_eq!(floats(&v[5..6]), vec![Some(f64::INFINITY)]);
        assert!(matches!(v[6], SeqValue::Float(f) if f.is_nan()));
        assert!(parse_values("1+1").is_err());
        assert!(parse_values("abc").is_err());
        assert!(parse_values("1x").is_err());
    }

    #[test]
    fn histogram_values_are_counted_not_parsed() {
        let v = parse_values("{{schema:0 sum:5 count:4 buckets:[1 2 1]}} _ {{}}x2 {{count:1}}+{{count:2}}x3 4").expect("parses");
        assert_eq!(v.len(), 1 + 1 + 3 + 4 + 1);
        assert!(matches!(v[0], SeqValue::Histogram));
        assert!(matches!(v[9], SeqValue::Float(f) if f == 4.0));
        let l = Load {
            line: 1,
            interval_ms: 60_000,
            with_nhcb: false,
            series: vec![SeriesLine {
                labels: vec![("__name__".into(), "m".into())],
                values: v,
            }],
            start_timestamp_lines: 0,
            raw: vec![],
        };
        // Only the float lands, at its position's timestamp.
        assert_eq!(l.float_samples()[0].1, vec![(9 * 60_000, 4.0)]);
    }

    #[test]
    fn series_lines() {
        let s = parse_series_line(r#"http_requests{job="api-server", instance="0", group="production"} 0+10x2"#)
            .expect("parses")
            .expect("not @st");
        assert_eq!(
            s.labels,
            vec![
                ("__name__".to_string(), "http_requests".to_string()),
                ("group".to_string(), "production".to_string()),
                ("instance".to_string(), "0".to_string()),
                ("job".to_string(), "api-server".to_string()),
            ]
        );
        assert_eq!(s.values.len(), 3);
        let s = parse_series_line(r#"{__name__="a:b", x="y,}z",} 1"#)
            .expect("parses")
            .expect("series");
        assert_eq!(s.labels[0], ("__name__".to_string(), "a:b".to_string()));
        assert_eq!(s.labels[1], ("x".to_string(), "y,}z".to_string()));
        let s = parse_series_line(r#"{"some.metric", "a.b"='it\'s'} 1"#)
            .expect("parses")
            .expect("series");
        assert_eq!(
            s.labels,
            vec![
                ("__name__".to_string(), "some.metric".to_string()),
                ("a.b".to_string(), "it's".to_string())
            ]
        );
        let s = parse_series_line("{} 3").expect("parses").expect("series");
        assert!(s.labels.is_empty());
        let s = parse_series_line("metric{} 3").expect("parses").expect("series");
        assert_eq!(s.labels, vec![("__name__".to_string(), "metric".to_string())]);
        let s = parse_series_line(r#"m{a="tab\there \"q\" \x41\u00e9"} 1"#)
            .expect("parses")
            .expect("series");
        assert_eq!(s.labels[1].1, "tab\there \"q\" Aé");
        let s = parse_series_line("m{a=`raw\\n`} 1").expect("parses").expect("series");
        assert_eq!(s.labels[1].1, "raw\\n");
        assert!(
            parse_series_line(r#"cumulative{type="st"}@st _ -30s-1mx2"#)
                .expect("parses")
                .is_none()
        );
        for bad in [
            r#"m{a="1"#,
            r#"m{a=1} 1"#,
            r#"m{a="1" b="2"} 1"#,
            r#"m{a="1",a="2"} 1"#,
            "1 2 3",
            r#"m{a=~"x"} 1"#,
        ] {
            assert!(parse_series_line(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn scalar_numbers() {
        assert_eq!(parse_number("2"), Some(2.0));
        assert_eq!(parse_number("-1.5e3"), Some(-1500.0));
        assert_eq!(parse_number("0x1F"), Some(31.0));
        assert_eq!(parse_number("010"), Some(8.0), "Go's base-0 integers: a leading 0 is octal");
        assert_eq!(parse_number("1_000"), Some(1000.0));
        assert_eq!(parse_number("Inf"), Some(f64::INFINITY));
        assert_eq!(parse_number("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_number("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_number("{} 1"), None);
        assert_eq!(parse_number("metric"), None);
    }

    #[test]
    fn script_commands_and_blocks() {
        let text = "\
# comment
load 5m
    http_requests{job=\"api\"} 0+10x10
  metric 1 2
# a comment ends the block
eval instant at 50m sum(http_requests)
    {} 100

eval range from 0 to 10m step 5m metric
    expect no_warn
    metric 1 2 _

clear
load_with_nhcb 1m
    h_bucket{le=\"1\"} 1 2
";
        let cmds = parse_script(text).expect("parses");
        assert_eq!(cmds.len(), 5);
        let Command::Load(l) = &cmds[0] else { panic!("load") };
        assert_eq!((l.line, l.interval_ms, l.with_nhcb, l.series.len()), (2, 300_000, false, 2));
        let Command::Eval(e) = &cmds[1] else { panic!("eval") };
        assert_eq!(e.line, 6);
        assert_eq!(e.query, "sum(http_requests)");
        assert_eq!(e.kind, EvalKind::Instant { at: 3_000_000 });
        let Expected::Series(s) = &e.expected else { panic!("series") };
        assert_eq!(s.len(), 1);
        assert!(s[0].labels.is_empty());
        let Command::Eval(e) = &cmds[2] else { panic!("eval") };
        assert_eq!(
            e.kind,
            EvalKind::Range {
                start: 0,
                end: 600_000,
                step: 300_000
            }
        );
        assert!(e.expects.no_warn);
        assert!(matches!(cmds[3], Command::Clear { line: 13 }));
        let Command::Load(l) = &cmds[4] else { panic!("load") };
        assert!(l.with_nhcb);
        assert!(parse_script("bogus 1").is_err());
        assert!(parse_script("eval instant 5m up").is_err(), "no `at`");
        assert!(parse_script("eval range from 5m to 1m step 1m up").is_err(), "end before start");
        assert!(
            parse_script("eval instant at 0 up\n  up 1 2").is_err(),
            "several values for an instant eval"
        );
    }

    #[test]
    fn expect_lines() {
        let e = one_eval(
            "eval instant at 1m foo\n  expect fail msg: something went wrong \n  expect warn regex: ^PromQL warning: .* \\(1:1\\)$\n  expect info\n  expect ordered\n  foo 1\n",
        );
        assert!(e.is_fail() && e.is_ordered());
        assert!(matches!(&e.expects.fail[0], Match::Msg(m) if m == "something went wrong"));
        assert!(e.expects.warn[0].matches("PromQL warning: x (1:1)"));
        assert!(!e.expects.warn[0].matches("PromQL info: x (1:1)"));
        assert!(matches!(e.expects.info[0], Match::Any));
        let e = one_eval("eval instant at 1m foo\n  expect no_info\n  expect no_warn\n");
        assert!(e.expects.no_info && e.expects.no_warn && !e.is_fail());
        assert!(parse_script("eval instant at 0 a\n  expect info\n  expect no_info\n").is_err());
        assert!(parse_script("eval instant at 0 a\n  expect warn\n  expect no_warn\n").is_err());
        assert!(parse_script("eval instant at 0 a\n  expect fail\n  expect fail\n").is_err());
        assert!(parse_script("eval instant at 0 a\n  expect bogus\n").is_err());
        assert!(parse_script("eval instant at 0 a\n  expect warn foo\n").is_err());
        assert!(parse_script("eval instant at 0 a\n  expect fail regex: (\n").is_err());
        let e = one_eval("eval instant at 50m (\"Foo\")\n\texpect string \" Foo \"\n");
        assert_eq!(e.expected_string.as_deref(), Some(" Foo "));
        assert!(e.excluded_from_range_mode());
        let e = one_eval("eval instant at 50m \"\"\n  expect string ``\n");
        assert_eq!(e.expected_string.as_deref(), Some(""));
        let e = one_eval("eval instant at 1m m[1m]\n  expect range vector from 10s to 1m step 10s\n  m{a=\"1\"} 2 3 4 5 6\n");
        assert_eq!(e.range_vector, Some((10_000, 60_000, 10_000)));
        assert_eq!(e.instant_time(), Some(60_000));
        let e = one_eval("eval instant at 10m 1 + 1\n  2\n");
        assert!(matches!(e.expected, Expected::Scalar(v) if v == 2.0));
    }

    #[test]
    fn deprecated_forms() {
        let e = one_eval(
            "eval_fail instant at 0 label_replace(x, \"a\", \"b\", \"c\", \".*\")\n  expected_fail_message vector cannot contain metrics with the same labelset\n",
        );
        assert!(e.fail && e.is_fail());
        assert_eq!(
            e.expected_fail_message.as_deref(),
            Some("vector cannot contain metrics with the same labelset")
        );
        let e = one_eval("eval_fail instant at 0 x\n  expected_fail_regexp same label(set)?\n");
        assert!(e.expected_fail_regexp.as_ref().is_some_and(|r| r.is_match("the same labelset")));
        let e = one_eval("eval_fail instant at 0 -{job=\"api\"}\n");
        assert!(e.fail && e.expected_fail_message.is_none());
        assert_eq!(e.expected_summary(), "eval_fail: an error");
        assert_eq!(one_eval("eval instant at 0 x\n").expected_summary(), "(empty result)");
        assert_eq!(one_eval("eval instant at 0 x\n  x 1\n").expected_summary(), "x 1");
        assert!(one_eval("eval_ordered instant at 0 sort(x)\n").is_ordered());
        assert!(one_eval("eval_warn range from 0 to 1m step 1m x\n").warn);
        assert!(one_eval("eval_info instant at 0 x\n").info);
        assert!(parse_script("eval_ordered range from 0 to 1m step 1m x\n").is_err());
        // `expected_fail_message` only means something after eval_fail.
        assert!(parse_script("eval instant at 0 x\n  expected_fail_message boom\n").is_err());
    }

    #[test]
    fn native_histogram_heuristic() {
        let cmds = parse_script(
            "load 1m\n  nh {{count:1}}\n  plain 1\n  {__name__=\"quoted_nh\"} {{}}\n\nload_with_nhcb 1m\n  req_bucket{le=\"1\"} 1\n  req_count 1\n",
        )
        .expect("parses");
        let mut names = BTreeSet::new();
        for c in &cmds {
            if let Command::Load(l) = c {
                note_native_histograms(&mut names, l);
            }
        }
        assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["nh", "quoted_nh", "req"]);
        let names: BTreeSet<String> = ["nh".to_string(), "req".to_string()].into();
        let ev = |q: &str| one_eval(&format!("eval instant at 0 {q}\n"));
        assert!(touches_native_histograms(&ev("sum(nh)"), &names));
        assert!(touches_native_histograms(&ev("histogram_quantile(0.5, req)"), &names));
        assert!(!touches_native_histograms(&ev("rate(req_bucket[5m])"), &names));
        assert!(!touches_native_histograms(&ev("nhx + plain"), &names));
        assert!(touches_native_histograms(
            &one_eval("eval instant at 0 plain\n  plain {{count:1}}\n"),
            &names
        ));
    }

    #[test]
    fn float_comparison() {
        assert!(almost_equal(1.0, 1.0 + 1e-9));
        assert!(!almost_equal(1.0, 1.0001));
        assert!(almost_equal(f64::NAN, f64::NAN));
        assert!(!almost_equal(stale_nan(), f64::NAN));
        assert!(almost_equal(stale_nan(), stale_nan()));
        assert!(!almost_equal(0.0, 1e-300));
        assert!(almost_equal(f64::INFINITY, f64::INFINITY));
        assert!(!almost_equal(f64::INFINITY, f64::NEG_INFINITY));
        assert!(almost_equal(1e300, 1e300 * (1.0 + 1e-8)));
    }

    #[test]
    fn at_rewrite() {
        let mut e = promql_parser::parser::parse("sum(rate(a[5m])) + b @ 100 + max_over_time(c[5m:1m]) + d @ start()").expect("parses");
        pin_at(&mut e, 600_000);
        let mut ats = Vec::new();
        fn collect(e: &Expr, ats: &mut Vec<String>) {
            match e {
                Expr::VectorSelector(vs) => ats.push(format!("{}:{:?}", vs.name.clone().unwrap_or_default(), vs.at)),
                Expr::MatrixSelector(m) => ats.push(format!("{}:{:?}", m.vs.name.clone().unwrap_or_default(), m.vs.at)),
                Expr::Subquery(sq) => {
                    ats.push(format!("subquery:{:?}", sq.at));
                    collect(&sq.expr, ats)
                }
                Expr::Aggregate(a) => collect(&a.expr, ats),
                Expr::Binary(b) => {
                    collect(&b.lhs, ats);
                    collect(&b.rhs, ats)
                }
                Expr::Paren(p) => collect(&p.expr, ats),
                Expr::Call(c) => c.args.args.iter().for_each(|a| collect(a, ats)),
                _ => {}
            }
        }
        collect(&e, &mut ats);
        let at = |ms: u64| format!("{:?}", Some(AtModifier::At(UNIX_EPOCH + Duration::from_millis(ms))));
        assert_eq!(
            ats,
            vec![
                format!("a:{}", at(600_000)),
                format!("b:{}", at(100_000)),
                format!("subquery:{}", at(600_000)),
                "c:None".to_string(),
                format!("d:{}", at(600_000)),
            ]
        );
        assert_eq!(at_variant_times(600_000), vec![-6_000_000, 0, 120_000, 600_000, 6_000_000]);
        assert_eq!(at_variant_times(0), vec![-1000, 0, 1000]);
        assert_eq!(at_variant_times(7), vec![-70, 0, 1, 7, 70]);
        let p = |q: &str| promql_parser::parser::parse(q).expect("parses");
        assert!(calls_at_unsafe_function(&p("time() - a")));
        assert!(calls_at_unsafe_function(&p("predict_linear(a[5m], 60)")));
        assert!(!calls_at_unsafe_function(&p("rate(a[5m])")));
        assert!(
            !calls_at_unsafe_function(&p("max_over_time(timestamp(a)[5m:1m])")),
            "inside a subquery"
        );
        assert_eq!(system_time(-1500), UNIX_EPOCH - Duration::from_millis(1500));
    }

    /// Answers a query: (expr, time or range start, is a range query).
    type Answer = Box<dyn Fn(&Expr, i64, bool) -> Result<QueryOutput, String>>;

    /// A backend answering from a closure, recording the calls.
    struct Fake {
        calls: RefCell<Vec<String>>,
        answer: Answer,
    }

    impl Backend for Fake {
        fn reset(&mut self) -> Result<(), String> {
            self.calls.borrow_mut().push("reset".into());
            Ok(())
        }
        fn load(&mut self, series: &[(Labels, Vec<(i64, f64)>)]) -> Result<(), String> {
            self.calls.borrow_mut().push(format!("load {}", series.len()));
            Ok(())
        }
        fn instant(&self, expr: &Expr, t: i64) -> Result<QueryOutput, String> {
            self.calls.borrow_mut().push(format!("instant {t}"));
            (self.answer)(expr, t, false)
        }
        fn range(&self, expr: &Expr, start: i64, end: i64, step: i64) -> Result<QueryOutput, String> {
            self.calls.borrow_mut().push(format!("range {start} {end} {step}"));
            (self.answer)(expr, start, true)
        }
    }

    fn out(value: QValue) -> Result<QueryOutput, String> {
        Ok(QueryOutput {
            value,
            warnings: vec![],
            infos: vec![],
        })
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn runner_variants_and_counts() {
        // A constant series: correct for every variant.
        let mut fake = Fake {
            calls: RefCell::new(vec![]),
            answer: Box::new(|_, t, range| {
                let l = labels(&[("__name__", "m")]);
                if range {
                    out(QValue::Matrix(vec![(l, vec![(t, 1.0), (t + 60_000, 1.0), (t + 120_000, 1.0)])]))
                } else {
                    out(QValue::Vector(vec![(l, 1.0)]))
                }
            }),
        };
        let text = "load 1m\n  m 1x20\n\neval instant at 10m m\n  m 1\n\neval instant at 10m m\n  m 2\n\neval instant at 0 time()\n  0\n\neval instant at 1m sort(m)\n  expect ordered\n  m 1\n";
        let r = run_script("t.test", text, &mut fake);
        assert_eq!(
            (r.evals, r.out_of_scope, r.passed, r.literal_passed, r.parse_errors),
            (4, 0, 2, 2, 0),
            "{r:?}"
        );
        let calls = fake.calls.borrow();
        // First eval: literal instant + range mode, then 5 @ variants with their range modes.
        assert_eq!(calls[0], "reset");
        assert_eq!(calls[1], "load 1");
        assert_eq!(calls[2], "instant 600000");
        assert_eq!(calls[3], "range 540000 660000 60000");
        assert_eq!(calls[4], "instant -6000000");
        assert_eq!(calls[5], "range -6060000 -5940000 60000");
        // Second eval fails at the literal instant query.
        assert_eq!(r.failures[0].line, 7);
        assert!(r.failures[0].variant.starts_with("instant query"), "{:?}", r.failures[0]);
        // time(): a vector where a scalar is expected; no @ variants (unsafe).
        assert_eq!(r.failures[1].line, 10);
        // sort with expect ordered: instant + 5 @ variants, no range mode.
        let last: Vec<&String> = calls.iter().rev().take(6).collect();
        assert!(last.iter().all(|c| c.starts_with("instant")), "{last:?}");
    }

    #[test]
    fn runner_failures_annotations_and_scope() {
        let mut fake = Fake {
            calls: RefCell::new(vec![]),
            answer: Box::new(|e, _, range| {
                let q = e.to_string();
                if q.contains("boom") {
                    Err("boom happened".into())
                } else if q.contains("panics") {
                    panic!("engine bug")
                } else {
                    Ok(QueryOutput {
                        value: if range { QValue::Matrix(vec![]) } else { QValue::Vector(vec![]) },
                        warnings: vec!["PromQL warning: w (1:1)".into()],
                        infos: vec![],
                    })
                }
            }),
        };
        let text = "load 1m\n  nh {{count:1}}\n\n\
eval instant at 1m boom\n  expect fail msg: boom happened\n\n\
eval instant at 1m boom\n  expect fail regex: nope\n\n\
eval instant at 1m ok\n  expect warn msg: PromQL warning: w (1:1)\n\n\
eval instant at 1m ok\n  expect no_warn\n\n\
eval instant at 1m ok\n\n\
eval instant at 1m sum(nh)\n\n\
eval instant at 1m sum(\n\n\
eval instant at 1m panics\n";
        let r = run_script("t.test", text, &mut fake);
        assert_eq!(r.evals, 8);
        assert_eq!(r.out_of_scope, 1);
        assert_eq!(r.parse_errors, 1);
        // Passed: the expected failure, the expected warning, the
        // unchecked warning (no expect line for warnings).
        assert_eq!(r.passed, 3, "{:#?}", r.failures);
        let lines: Vec<usize> = r.failures.iter().map(|f| f.line).collect();
        assert_eq!(lines, vec![7, 13, 20, 22]);
        assert!(r.failures[3].got.contains("engine bug"));
        assert!(r.failures[2].parse_error);
    }

    #[test]
    fn range_evals_and_matrices() {
        let mut fake = Fake {
            calls: RefCell::new(vec![]),
            answer: Box::new(|_, _, _| {
                out(QValue::Matrix(vec![
                    (labels(&[("a", "1")]), vec![(0, 1.0), (60_000, 2.0)]),
                    (labels(&[("a", "2")]), vec![(60_000, f64::NAN)]),
                ]))
            }),
        };
        let text = "eval range from 0 to 2m step 1m x\n  {a=\"2\"} _ NaN\n  {a=\"1\"} 1 2 _\n\n\
eval range from 0 to 2m step 1m x\n  {a=\"1\"} 1 2 3\n  {a=\"2\"} _ NaN\n\n\
eval range from 0 to 1m step 1m x\n  {a=\"1\"} 1 2\n";
        let r = run_script("t.test", text, &mut fake);
        assert_eq!(r.passed, 1, "{:#?}", r.failures);
        assert_eq!(r.failures.len(), 2);
        assert!(r.failures[0].reason.contains("float points"), "{:?}", r.failures[0]);
        assert!(r.failures[1].reason.contains("unexpected metric {a=\"2\"}"), "{:?}", r.failures[1]);
        let unsorted = vec![(labels(&[("a", "2")]), vec![]), (labels(&[("a", "1")]), vec![])];
        assert!(check_sorted(&unsorted).is_err());
    }
}
