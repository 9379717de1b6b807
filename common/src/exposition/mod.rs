//! Parser of the Prometheus text exposition format 0.0.4 and of OpenMetrics
//! 1.0 text, chosen by the response's Content-Type ([`Format::from_content_type`]).
//!
//! Both: `# HELP`/`# TYPE` lines, metric and label names, label values with
//! the escapes `\\`, `\"`, `\n` (any other escape is an error), values as Go
//! writes them (`7.0180807763e+06`, `NaN`, `+Inf`, `-Inf`), histograms
//! (`_bucket` with `le`, `_sum`, `_count`) and summaries (`quantile`,
//! `_sum`, `_count`). A label given twice in one sample is an error.
//!
//! 0.0.4: timestamps are integer milliseconds; blank lines and other `#`
//! lines are comments; a trailing comma in a label set is allowed.
//!
//! OpenMetrics: `# UNIT` (the family name must end in `_<unit>`), timestamps
//! are float seconds, counters are exposed as `<family>_total` (and
//! `_created`), `info` as `_info`, gauge histograms as `_gcount`/`_gsum`;
//! the exposition must end with `# EOF` and nothing may follow it; blank
//! lines and free comments are errors; a family's lines must be together.
//! Exemplars (`... # {trace_id="x"} 1.0 [ts]`) are checked and ignored.
//! `_created` samples are kept as series (what Prometheus does without the
//! created-timestamp feature flag).
//!
//! Every error names its line and column (1-based, in characters).

use std::collections::HashSet;
use std::fmt;

use crate::labels::{Labels, Metadata, MetricKind};

/// Which text format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (also `text/plain; version=1.0.0`,
    /// which prometheus_client 0.23+ sends for the same body).
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header announces. Anything that is not
    /// OpenMetrics (including a missing or unknown type) is read as the
    /// 0.0.4 text format, as Prometheus 2 does.
    pub fn from_content_type(ct: &str) -> Format {
        let media = ct.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// What went wrong, without the place.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The body is not UTF-8.
    InvalidUtf8,
    /// A metric name is missing or has a character outside `[a-zA-Z0-9_:]`.
    InvalidMetricName,
    /// A label name is missing or has a character outside `[a-zA-Z0-9_]`.
    InvalidLabelName,
    /// Something other than the expected character.
    Expected(&'static str),
    /// A label value's closing quote is missing.
    UnterminatedLabelValue,
    /// A backslash not followed by `\`, `"` or `n` (HELP: `\` or `n`).
    InvalidEscape(char),
    /// The same label twice in one sample.
    DuplicateLabel(String),
    /// A label called `__name__` inside the braces.
    ReservedLabel,
    /// The value is not a float.
    InvalidValue(String),
    /// The timestamp is not an integer (0.0.4) or float (OpenMetrics).
    InvalidTimestamp(String),
    /// `# TYPE` with an unknown type.
    UnknownType(String),
    /// A second `# TYPE`, `# HELP` or `# UNIT` for one family.
    DuplicateMetadata(&'static str, String),
    /// `# TYPE` after the family's first sample.
    TypeAfterSamples(String),
    /// A family's lines are not together (its name appears again later).
    FamilyNotContiguous(String),
    /// A histogram bucket without `le`, or with an `le` that is not a float.
    InvalidLe,
    /// A summary quantile without `quantile`, or one that is not a float.
    InvalidQuantile,
    /// OpenMetrics: the name does not fit the family's type (a counter sample
    /// not ending in `_total`/`_created`...).
    NameNotInFamily(String),
    /// OpenMetrics: `# UNIT` whose family name does not end in `_<unit>`.
    UnitMismatch(String),
    /// OpenMetrics: `# EOF` missing.
    MissingEof,
    /// OpenMetrics: something after `# EOF`.
    AfterEof,
    /// OpenMetrics: a blank line.
    BlankLine,
    /// OpenMetrics: a `#` line that is not HELP, TYPE, UNIT or EOF; 0.0.4: an
    /// exemplar.
    InvalidComment,
    /// Text after the value and timestamp.
    TrailingText,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::InvalidUtf8 => write!(f, "invalid UTF-8"),
            ErrorKind::InvalidMetricName => write!(f, "invalid metric name"),
            ErrorKind::InvalidLabelName => write!(f, "invalid label name"),
            ErrorKind::Expected(what) => write!(f, "expected {what}"),
            ErrorKind::UnterminatedLabelValue => write!(f, "label value not terminated by '\"'"),
            ErrorKind::InvalidEscape(c) => write!(f, "invalid escape sequence '\\{c}'"),
            ErrorKind::DuplicateLabel(n) => write!(f, "duplicate label {n:?}"),
            ErrorKind::ReservedLabel => write!(f, "label __name__ is not allowed inside braces"),
            ErrorKind::InvalidValue(v) => write!(f, "invalid value {v:?}"),
            ErrorKind::InvalidTimestamp(v) => write!(f, "invalid timestamp {v:?}"),
            ErrorKind::UnknownType(t) => write!(f, "unknown metric type {t:?}"),
            ErrorKind::DuplicateMetadata(what, n) => write!(f, "second {what} line for metric family {n:?}"),
            ErrorKind::TypeAfterSamples(n) => write!(f, "TYPE line for {n:?} after its samples"),
            ErrorKind::FamilyNotContiguous(n) => write!(f, "metric family {n:?} appears again after other families"),
            ErrorKind::InvalidLe => write!(f, "histogram bucket without a float \"le\" label"),
            ErrorKind::InvalidQuantile => write!(f, "summary quantile without a float \"quantile\" label"),
            ErrorKind::NameNotInFamily(n) => write!(f, "sample name {n:?} does not fit its family's type"),
            ErrorKind::UnitMismatch(n) => write!(f, "metric family {n:?} does not end in its unit"),
            ErrorKind::MissingEof => write!(f, "OpenMetrics exposition does not end with \"# EOF\""),
            ErrorKind::AfterEof => write!(f, "data after \"# EOF\""),
            ErrorKind::BlankLine => write!(f, "blank line (not allowed in OpenMetrics)"),
            ErrorKind::InvalidComment => write!(f, "unexpected comment"),
            ErrorKind::TrailingText => write!(f, "unexpected text after the sample"),
        }
    }
}

/// A parse error with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}: {}", self.line, self.column, self.kind)
    }
}

impl std::error::Error for ParseError {}

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample {
    /// Sorted labels including `__name__`.
    pub labels: Labels,
    /// The value.
    pub value: f64,
    /// The exposed timestamp in ms, if any.
    pub timestamp_ms: Option<i64>,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Samples in exposition order.
    pub samples: Vec<ParsedSample>,
    /// Metadata of the families that had HELP, TYPE or UNIT.
    pub metadata: Vec<Metadata>,
}

/// The family type named by a `# TYPE` line in `fmt`.
fn parse_type(s: &str, fmt: Format) -> Option<MetricKind> {
    Some(match (s, fmt) {
        ("counter", _) => MetricKind::Counter,
        ("gauge", _) => MetricKind::Gauge,
        ("histogram", _) => MetricKind::Histogram,
        ("summary", _) => MetricKind::Summary,
        ("untyped", Format::Prometheus) => MetricKind::Unknown,
        ("unknown", Format::OpenMetrics) => MetricKind::Unknown,
        ("gaugehistogram", Format::OpenMetrics) => MetricKind::GaugeHistogram,
        ("info", Format::OpenMetrics) => MetricKind::Info,
        ("stateset", Format::OpenMetrics) => MetricKind::StateSet,
        _ => return None,
    })
}

/// Suffixes a sample name may add to the family name.
fn suffixes(typ: MetricKind, fmt: Format) -> &'static [&'static str] {
    match (typ, fmt) {
        (MetricKind::Counter, Format::OpenMetrics) => &["_total", "_created"],
        (MetricKind::Counter, Format::Prometheus) => &[""],
        (MetricKind::Histogram, Format::OpenMetrics) => &["_bucket", "_sum", "_count", "_created"],
        (MetricKind::Histogram, Format::Prometheus) => &["_bucket", "_sum", "_count"],
        (MetricKind::GaugeHistogram, _) => &["_bucket", "_gsum", "_gcount"],
        (MetricKind::Summary, Format::OpenMetrics) => &["", "_sum", "_count", "_created"],
        (MetricKind::Summary, Format::Prometheus) => &["", "_sum", "_count"],
        (MetricKind::Info, _) => &["_info"],
        _ => &[""],
    }
}

/// The family being read.
struct Family {
    name: String,
    typ: MetricKind,
    typed: bool,
    help: Option<String>,
    unit: Option<String>,
    has_samples: bool,
}

impl Family {
    fn new(name: &str) -> Family {
        Family {
            name: name.to_string(),
            typ: MetricKind::Unknown,
            typed: false,
            help: None,
            unit: None,
            has_samples: false,
        }
    }

    fn metadata(&self, fmt: Format) -> Option<Metadata> {
        if !self.typed && self.help.is_none() && self.unit.is_none() {
            return None;
        }
        let name = if fmt == Format::OpenMetrics && self.typ == MetricKind::Counter {
            format!("{}_total", self.name)
        } else {
            self.name.clone()
        };
        Some(Metadata {
            name,
            kind: self.typ,
            help: self.help.clone().unwrap_or_default(),
            unit: self.unit.clone().unwrap_or_default(),
        })
    }
}

/// Parses `body` (bytes as received) in `fmt`.
pub fn parse_bytes(body: &[u8], fmt: Format) -> Result<Exposition, ParseError> {
    match std::str::from_utf8(body) {
        Ok(s) => parse(s, fmt),
        Err(e) => {
            let good = &body[..e.valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            let start = good.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            let column = String::from_utf8_lossy(&good[start..]).chars().count() + 1;
            Err(ParseError {
                line,
                column,
                kind: ErrorKind::InvalidUtf8,
            })
        }
    }
}

/// Parses an exposition in `fmt`.
pub fn parse(text: &str, fmt: Format) -> Result<Exposition, ParseError> {
    let om = fmt == Format::OpenMetrics;
    let mut out = Exposition::default();
    let mut fam: Option<Family> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let mut eof = false;
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let lineno = i + 1;
        // The final "\n" yields one empty piece at the end.
        if raw.is_empty() && lines.peek().is_none() {
            break;
        }
        if eof {
            return Err(ParseError {
                line: lineno,
                column: 1,
                kind: ErrorKind::AfterEof,
            });
        }
        let line = if om { raw } else { raw.strip_suffix('\r').unwrap_or(raw) };
        let mut c = Cursor {
            s: line,
            pos: 0,
            line: lineno,
        };
        if line.trim().is_empty() {
            if om {
                return Err(c.err(ErrorKind::BlankLine));
            }
            continue;
        }
        if line.starts_with('#') {
            c.pos = 1;
            if om {
                if line == "# EOF" {
                    eof = true;
                    continue;
                }
                if !c.eat(' ') {
                    return Err(c.err(ErrorKind::InvalidComment));
                }
            } else {
                c.skip_ws();
            }
            let kw_start = c.pos;
            let kw = c.take_while(|ch| !ch.is_ascii_whitespace());
            let what = match kw {
                "HELP" => "HELP",
                "TYPE" => "TYPE",
                "UNIT" if om => "UNIT",
                _ => {
                    if om {
                        c.pos = kw_start;
                        return Err(c.err(ErrorKind::InvalidComment));
                    }
                    continue; // a comment
                }
            };
            if om {
                if !c.eat(' ') {
                    return Err(c.err(ErrorKind::Expected("' '")));
                }
            } else if !c.skip_ws() {
                // "# HELP" alone: a comment in 0.0.4.
                if c.at_end() {
                    continue;
                }
            }
            let name_col = c.pos;
            let name = c.metric_name()?;
            if !seen_family(&mut fam, &mut seen, &mut out, name, fmt) {
                c.pos = name_col;
                return Err(c.err(ErrorKind::FamilyNotContiguous(name.to_string())));
            }
            let Some(f) = fam.as_mut() else { continue };
            // The text after the name: one space then the rest (HELP may be empty).
            let rest_col = c.pos;
            let rest = if c.at_end() {
                ""
            } else {
                if om {
                    if !c.eat(' ') {
                        return Err(c.err(ErrorKind::Expected("' '")));
                    }
                } else if !c.skip_ws() {
                    return Err(c.err(ErrorKind::Expected("whitespace")));
                }
                &line[c.pos..]
            };
            match what {
                "HELP" => {
                    if f.help.is_some() {
                        c.pos = kw_start;
                        return Err(c.err(ErrorKind::DuplicateMetadata("HELP", name.to_string())));
                    }
                    f.help = Some(unescape_help(rest, om).map_err(|(off, k)| ParseError {
                        line: lineno,
                        column: col_of(line, c.pos + off),
                        kind: k,
                    })?);
                }
                "TYPE" => {
                    if f.typed {
                        c.pos = kw_start;
                        return Err(c.err(ErrorKind::DuplicateMetadata("TYPE", name.to_string())));
                    }
                    if f.has_samples {
                        c.pos = kw_start;
                        return Err(c.err(ErrorKind::TypeAfterSamples(name.to_string())));
                    }
                    let t = rest.trim_end_matches([' ', '\t']);
                    let Some(typ) = parse_type(t, fmt) else {
                        c.pos = rest_col.max(c.pos);
                        return Err(c.err(ErrorKind::UnknownType(t.to_string())));
                    };
                    f.typ = typ;
                    f.typed = true;
                }
                _ => {
                    if f.unit.is_some() {
                        c.pos = kw_start;
                        return Err(c.err(ErrorKind::DuplicateMetadata("UNIT", name.to_string())));
                    }
                    if !rest.is_empty() && !name.ends_with(&format!("_{rest}")) {
                        c.pos = name_col;
                        return Err(c.err(ErrorKind::UnitMismatch(name.to_string())));
                    }
                    f.unit = Some(rest.to_string());
                }
            }
            continue;
        }
        // A sample.
        let name = c.metric_name()?;
        let name_end = c.pos;
        // Which family does it belong to?
        let belongs = fam.as_ref().is_some_and(|f| {
            name.strip_prefix(f.name.as_str())
                .is_some_and(|suffix| suffixes(f.typ, fmt).contains(&suffix))
        });
        if !belongs {
            // An OpenMetrics sample named exactly as a declared family whose
            // type needs a suffix (a counter's `_total`, an info's `_info`,
            // a histogram's `_bucket`...) is an error; any other name
            // outside the current family starts a family of its own.
            if om && fam.as_ref().is_some_and(|f| f.typed && f.name == name) {
                c.pos = 0;
                return Err(c.err(ErrorKind::NameNotInFamily(name.to_string())));
            }
            if !seen_family(&mut fam, &mut seen, &mut out, name, fmt) && om {
                c.pos = 0;
                return Err(c.err(ErrorKind::FamilyNotContiguous(name.to_string())));
            }
        }
        let typ = fam.as_ref().map_or(MetricKind::Unknown, |f| f.typ);
        let family_name_len = fam.as_ref().map_or(name.len(), |f| f.name.len());
        if let Some(f) = fam.as_mut() {
            f.has_samples = true;
        }
        let mut labels: Labels = Vec::with_capacity(8);
        labels.push(("__name__".to_string(), name.to_string()));
        if c.peek() == Some('{') {
            c.label_set(&mut labels, om)?;
        }
        // Histogram and summary label rules.
        let suffix = &name[family_name_len.min(name.len())..];
        if matches!(typ, MetricKind::Histogram | MetricKind::GaugeHistogram) && suffix == "_bucket" {
            match labels.iter().find(|(k, _)| k == "le") {
                Some((_, v)) if parse_float(v).is_some() => {}
                _ => {
                    c.pos = name_end;
                    return Err(c.err(ErrorKind::InvalidLe));
                }
            }
        }
        if typ == MetricKind::Summary && suffix.is_empty() {
            match labels.iter().find(|(k, _)| k == "quantile") {
                Some((_, v)) if parse_float(v).is_some() => {}
                _ => {
                    c.pos = name_end;
                    return Err(c.err(ErrorKind::InvalidQuantile));
                }
            }
        }
        // Value.
        if om {
            if !c.eat(' ') {
                return Err(c.err(ErrorKind::Expected("' ' before the value")));
            }
        } else if !c.skip_ws() {
            return Err(c.err(ErrorKind::Expected("whitespace before the value")));
        }
        let vcol = c.pos;
        let v = c.take_while(|ch| !ch.is_ascii_whitespace());
        let Some(value) = parse_float(v) else {
            c.pos = vcol;
            return Err(c.err(ErrorKind::InvalidValue(v.to_string())));
        };
        // Timestamp and (OpenMetrics) exemplar.
        let mut timestamp_ms = None;
        let before_ts = c.pos;
        let had_ws = if om { c.eat(' ') } else { c.skip_ws() };
        if had_ws && !c.at_end() && c.peek() != Some('#') {
            let tcol = c.pos;
            let t = c.take_while(|ch| !ch.is_ascii_whitespace());
            let ts = if om {
                parse_float(t).filter(|f| f.is_finite()).map(|secs| (secs * 1000.0).round() as i64)
            } else {
                t.parse::<i64>().ok()
            };
            let Some(ts) = ts else {
                c.pos = tcol;
                return Err(c.err(ErrorKind::InvalidTimestamp(t.to_string())));
            };
            timestamp_ms = Some(ts);
            let _ = if om { c.eat(' ') } else { c.skip_ws() };
        } else if !had_ws {
            c.pos = before_ts;
        }
        if c.peek() == Some('#') {
            if !om {
                return Err(c.err(ErrorKind::InvalidComment));
            }
            c.exemplar()?;
        }
        if !c.at_end() {
            if !om && c.s[c.pos..].trim().is_empty() {
                // trailing whitespace is tolerated in 0.0.4
            } else {
                return Err(c.err(ErrorKind::TrailingText));
            }
        }
        crate::labels::sort_labels(&mut labels);
        out.samples.push(ParsedSample {
            labels,
            value,
            timestamp_ms,
        });
    }
    if let Some(f) = fam.take() {
        out.metadata.extend(f.metadata(fmt));
    }
    if om && !eof {
        let line = text.split('\n').count().max(1);
        return Err(ParseError {
            line,
            column: 1,
            kind: ErrorKind::MissingEof,
        });
    }
    Ok(out)
}

/// Switches the current family to `name` unless it already is; false when
/// `name` was a family before (lines of a family not together).
fn seen_family(fam: &mut Option<Family>, seen: &mut HashSet<String>, out: &mut Exposition, name: &str, fmt: Format) -> bool {
    if fam.as_ref().is_some_and(|f| f.name == name) {
        return true;
    }
    if let Some(f) = fam.take() {
        out.metadata.extend(f.metadata(fmt));
    }
    *fam = Some(Family::new(name));
    seen.insert(name.to_string())
}

/// Parses a float as Go's strconv.ParseFloat does for expositions.
pub fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    match s {
        "NaN" | "nan" => return Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust accepts "infinity" and the like; only digits, signs, '.', 'e' here.
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// 1-based character column of byte offset `off` in `line`.
fn col_of(line: &str, off: usize) -> usize {
    line.get(..off).map_or(off, |p| p.chars().count()) + 1
}

fn unescape_help(s: &str, om: bool) -> Result<String, (usize, ErrorKind)> {
    if !s.contains('\\') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.char_indices();
    while let Some((i, ch)) = it.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match it.next() {
            Some((_, '\\')) => out.push('\\'),
            Some((_, 'n')) => out.push('\n'),
            Some((_, '"')) if om => out.push('"'),
            Some((_, other)) => return Err((i, ErrorKind::InvalidEscape(other))),
            None => return Err((i, ErrorKind::InvalidEscape(' '))),
        }
    }
    Ok(out)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, kind: ErrorKind) -> ParseError {
        ParseError {
            line: self.line,
            column: col_of(self.s, self.pos),
            kind,
        }
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn eat(&mut self, ch: char) -> bool {
        if self.peek() == Some(ch) {
            self.pos += ch.len_utf8();
            true
        } else {
            false
        }
    }

    /// Skips blanks and tabs; true if there were any.
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(ch) = self.peek() {
            if !f(ch) {
                break;
            }
            self.pos += ch.len_utf8();
        }
        &self.s[start..self.pos]
    }

    fn metric_name(&mut self) -> Result<&'a str, ParseError> {
        let start = self.pos;
        let n = self.take_while(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':');
        if n.is_empty() || n.as_bytes()[0].is_ascii_digit() {
            self.pos = start;
            return Err(self.err(ErrorKind::InvalidMetricName));
        }
        if let Some(ch) = self.peek()
            && !matches!(ch, ' ' | '\t' | '{')
        {
            return Err(self.err(ErrorKind::InvalidMetricName));
        }
        Ok(n)
    }

    fn label_name(&mut self) -> Result<&'a str, ParseError> {
        let start = self.pos;
        let n = self.take_while(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if n.is_empty() || n.as_bytes()[0].is_ascii_digit() {
            self.pos = start;
            return Err(self.err(ErrorKind::InvalidLabelName));
        }
        Ok(n)
    }

    fn label_value(&mut self) -> Result<String, ParseError> {
        if !self.eat('"') {
            return Err(self.err(ErrorKind::Expected("'\"' to open the label value")));
        }
        let mut v = String::new();
        loop {
            let Some(ch) = self.peek() else {
                return Err(self.err(ErrorKind::UnterminatedLabelValue));
            };
            match ch {
                '"' => {
                    self.pos += 1;
                    return Ok(v);
                }
                '\\' => {
                    let at = self.pos;
                    self.pos += 1;
                    match self.peek() {
                        Some('\\') => v.push('\\'),
                        Some('"') => v.push('"'),
                        Some('n') => v.push('\n'),
                        Some(other) => {
                            self.pos = at;
                            return Err(self.err(ErrorKind::InvalidEscape(other)));
                        }
                        None => return Err(self.err(ErrorKind::UnterminatedLabelValue)),
                    }
                    self.pos += 1;
                }
                _ => {
                    v.push(ch);
                    self.pos += ch.len_utf8();
                }
            }
        }
    }

    /// `{name="value",...}` appended to `labels`.
    fn label_set(&mut self, labels: &mut Labels, om: bool) -> Result<(), ParseError> {
        self.eat('{');
        let lax = !om;
        loop {
            if lax {
                self.skip_ws();
            }
            if self.eat('}') {
                return Ok(());
            }
            let col = self.pos;
            let name = self.label_name()?;
            if name == "__name__" {
                self.pos = col;
                return Err(self.err(ErrorKind::ReservedLabel));
            }
            if labels.iter().any(|(k, _)| k == name) {
                self.pos = col;
                return Err(self.err(ErrorKind::DuplicateLabel(name.to_string())));
            }
            if lax {
                self.skip_ws();
            }
            if !self.eat('=') {
                return Err(self.err(ErrorKind::Expected("'='")));
            }
            if lax {
                self.skip_ws();
            }
            let value = self.label_value()?;
            labels.push((name.to_string(), value));
            if lax {
                self.skip_ws();
            }
            if self.eat(',') {
                if om && self.peek() == Some('}') {
                    return Err(self.err(ErrorKind::Expected("a label name after ','")));
                }
                continue;
            }
            if self.eat('}') {
                return Ok(());
            }
            return Err(self.err(ErrorKind::Expected("',' or '}'")));
        }
    }

    /// OpenMetrics exemplar: `# {labels} value [timestamp]`; checked, ignored.
    fn exemplar(&mut self) -> Result<(), ParseError> {
        self.eat('#');
        if !self.eat(' ') {
            return Err(self.err(ErrorKind::Expected("' ' after '#'")));
        }
        if self.peek() != Some('{') {
            return Err(self.err(ErrorKind::Expected("'{' to open the exemplar's labels")));
        }
        let mut labels = Labels::new();
        self.label_set(&mut labels, true)?;
        if !self.eat(' ') {
            return Err(self.err(ErrorKind::Expected("' ' before the exemplar value")));
        }
        let vcol = self.pos;
        let v = self.take_while(|ch| ch != ' ');
        if parse_float(v).is_none() {
            self.pos = vcol;
            return Err(self.err(ErrorKind::InvalidValue(v.to_string())));
        }
        if self.eat(' ') {
            let tcol = self.pos;
            let t = self.take_while(|ch| ch != ' ');
            if parse_float(t).is_none() {
                self.pos = tcol;
                return Err(self.err(ErrorKind::InvalidTimestamp(t.to_string())));
            }
        }
        Ok(())
    }
}

/// Appends `v` escaped as a label value of the text formats: backslash,
/// double quote and line feed (the escapes [`parse`] reads back).
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn prom(s: &str) -> Exposition {
        parse(s, Format::Prometheus).unwrap_or_else(|e| panic!("{e}"))
    }

    fn om(s: &str) -> Exposition {
        parse(s, Format::OpenMetrics).unwrap_or_else(|e| panic!("{e}"))
    }

    fn get<'a>(s: &'a ParsedSample, k: &str) -> &'a str {
        s.labels.iter().find(|(n, _)| n == k).map_or("", |(_, v)| v.as_str())
    }

    fn shared(p: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(p);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::from_content_type("text/plain; version=0.0.4; charset=utf-8"),
            Format::Prometheus
        );
        assert_eq!(
            Format::from_content_type("text/plain; version=1.0.0; charset=utf-8"),
            Format::Prometheus
        );
        assert_eq!(
            Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_content_type(""), Format::Prometheus);
    }

    #[test]
    fn text_format_basics() {
        let e = prom(concat!(
            "# HELP http_requests_total The total number of HTTP requests.\n",
            "# TYPE http_requests_total counter\n",
            "http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n",
            "http_requests_total{method=\"post\",code=\"400\",}    3 1395066363000\n",
            "\n",
            "# A normal comment.\n",
            "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n",
            "metric_without_timestamp_and_labels 12.47\n",
            "something_weird{problem=\"division by zero\"} +Inf -3982045\n",
            "nan_metric NaN\n",
            "neg -Inf\n",
            "go_style 7.0180807763e+06\n",
            "# HELP escaped a \\\\ b \\n c\n",
            "escaped 1\n",
        ));
        assert_eq!(e.samples.len(), 9);
        assert_eq!(e.samples[0].timestamp_ms, Some(1395066363000));
        assert_eq!(get(&e.samples[1], "code"), "400");
        assert_eq!(get(&e.samples[2], "path"), "C:\\DIR\\FILE.TXT");
        assert_eq!(get(&e.samples[2], "error"), "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(e.samples[2].value, 1.458255915e9);
        assert_eq!(e.samples[4].value, f64::INFINITY);
        assert_eq!(e.samples[4].timestamp_ms, Some(-3982045));
        assert!(e.samples[5].value.is_nan());
        assert_eq!(e.samples[6].value, f64::NEG_INFINITY);
        assert_eq!(e.samples[7].value, 7018080.7763);
        // Labels are sorted with __name__ first.
        assert_eq!(e.samples[0].labels[0].0, "__name__");
        assert_eq!(e.samples[0].labels[1].0, "code");
        assert_eq!(
            e.metadata[0],
            Metadata {
                name: "http_requests_total".into(),
                kind: MetricKind::Counter,
                help: "The total number of HTTP requests.".into(),
                unit: String::new()
            }
        );
        assert_eq!(e.metadata[1].help, "a \\ b \n c");
    }

    #[test]
    fn histograms_and_summaries() {
        let e = prom(concat!(
            "# TYPE h histogram\n",
            "h_bucket{le=\"0.05\"} 24054\n",
            "h_bucket{le=\"+Inf\"} 144320\n",
            "h_sum 53423\n",
            "h_count 144320\n",
            "# TYPE s summary\n",
            "s{quantile=\"0.5\"} 4773\n",
            "s{quantile=\"0.99\"} NaN\n",
            "s_sum 1.7560473e+07\n",
            "s_count 2693\n",
        ));
        assert_eq!(e.samples.len(), 8);
        assert_eq!(e.metadata.len(), 2);
        assert_eq!(e.metadata[0].kind, MetricKind::Histogram);
        assert_eq!(e.metadata[1].kind, MetricKind::Summary);
    }

    #[test]
    fn fence_fixtures_parse_completely() {
        for (f, samples, fams) in [
            ("gen3/fixtures/fence-metrics.prom", 42, 1),
            ("gen3/fixtures/fence-metrics.start.prom", 40, 1),
            ("gen3/fixtures/presigned-url-fence-metrics.prom", 84, 2),
            ("gen3/fixtures/presigned-url-fence-metrics.start.prom", 74, 2),
        ] {
            let e = parse(&shared(f), Format::Prometheus).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(e.samples.len(), samples, "{f}");
            assert_eq!(e.metadata.len(), fams, "{f}");
        }
    }

    #[test]
    fn node_exporter_parses_completely() {
        let text = shared("data/node_exporter.prom");
        let e = prom(&text);
        assert_eq!(e.samples.len(), 507);
        assert_eq!(e.metadata.len(), 283);
        assert!(e.samples.iter().any(|s| s.labels[0].1 == "node_cpu_seconds_total"));
        // Every sample line's value round-trips.
        let first = e.samples.iter().find(|s| s.labels[0].1 == "go_goroutines").expect("go_goroutines");
        assert!(first.value > 0.0);
    }

    #[test]
    fn openmetrics_examples() {
        let e = om(concat!(
            "# TYPE acme_http_router_request_seconds summary\n",
            "# UNIT acme_http_router_request_seconds seconds\n",
            "# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.\n",
            "acme_http_router_request_seconds_sum{path=\"/api/v1\",method=\"GET\"} 9036.32\n",
            "acme_http_router_request_seconds_count{path=\"/api/v1\",method=\"GET\"} 807283.0\n",
            "acme_http_router_request_seconds_created{path=\"/api/v1\",method=\"GET\"} 1605281325.0\n",
            "# TYPE foo counter\n",
            "foo_total 17.0 1520879607.789 # {id=\"counter-test\"} 5\n",
            "foo_created 1520872607.123\n",
            "# TYPE h histogram\n",
            "h_bucket{le=\"0.01\"} 0\n",
            "h_bucket{le=\"+Inf\"} 17 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1520879602.4\n",
            "h_count 17\n",
            "h_sum 324789.3\n",
            "# TYPE gh gaugehistogram\n",
            "gh_bucket{le=\"+Inf\"} 1\n",
            "gh_gcount 1\n",
            "gh_gsum 2\n",
            "# TYPE b info\n",
            "b_info{version=\"1.2\"} 1\n",
            "# TYPE ss stateset\n",
            "ss{ss=\"a\"} 1\n",
            "ss{ss=\"b\"} 0\n",
            "plain 1\n",
            "# EOF\n",
        ));
        assert_eq!(e.samples.len(), 16);
        let foo = &e.samples[3];
        assert_eq!(foo.labels[0].1, "foo_total");
        assert_eq!(foo.timestamp_ms, Some(1520879607789));
        let m = &e.metadata;
        assert_eq!(m[0].unit, "seconds");
        assert_eq!(m[0].kind, MetricKind::Summary);
        assert_eq!(m[1].name, "foo_total");
        assert_eq!(m[1].kind, MetricKind::Counter);
        assert_eq!(m[3].kind, MetricKind::GaugeHistogram);
        assert_eq!(m[4].kind, MetricKind::Info);
        assert_eq!(m[5].kind, MetricKind::StateSet);
        // Without the trailing newline too.
        assert_eq!(om("a 1\n# EOF").samples.len(), 1);
    }

    fn bad(fmt: Format, text: &str) -> ParseError {
        match parse(text, fmt) {
            Ok(e) => panic!("{text:?} parsed: {e:?}"),
            Err(e) => e,
        }
    }

    #[track_caller]
    fn check(fmt: Format, text: &str, line: usize, column: usize, kind: ErrorKind) {
        let e = bad(fmt, text);
        assert_eq!((e.line, e.column, &e.kind), (line, column, &kind), "{text:?}: {e}");
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("line {line} column {column}: ")), "{shown}");
    }

    #[test]
    fn every_error_names_line_and_column() {
        use ErrorKind as K;
        let p = Format::Prometheus;
        let o = Format::OpenMetrics;
        check(p, "ok 1\n1abc 2\n", 2, 1, K::InvalidMetricName);
        check(p, "a-b 1\n", 1, 2, K::InvalidMetricName);
        check(p, "a{1x=\"v\"} 1\n", 1, 3, K::InvalidLabelName);
        check(p, "a{x\"v\"} 1\n", 1, 4, K::Expected("'='"));
        check(p, "a{x=v} 1\n", 1, 5, K::Expected("'\"' to open the label value"));
        check(p, "a{x=\"v} 1\n", 1, 10, K::UnterminatedLabelValue);
        check(p, "a{x=\"v\\t\"} 1\n", 1, 7, K::InvalidEscape('t'));
        check(p, "a{x=\"1\",x=\"2\"} 1\n", 1, 9, K::DuplicateLabel("x".into()));
        check(p, "a{__name__=\"b\"} 1\n", 1, 3, K::ReservedLabel);
        check(p, "a{x=\"1\" y=\"2\"} 1\n", 1, 9, K::Expected("',' or '}'"));
        check(p, "a 1x\n", 1, 3, K::InvalidValue("1x".into()));
        check(p, "a\n", 1, 2, K::Expected("whitespace before the value"));
        check(p, "a infinity\n", 1, 3, K::InvalidValue("infinity".into()));
        check(p, "a 1 1.5\n", 1, 5, K::InvalidTimestamp("1.5".into()));
        check(p, "a 1 2 3\n", 1, 7, K::TrailingText);
        check(p, "a 1 # {x=\"y\"} 1\n", 1, 5, K::InvalidComment);
        check(p, "# TYPE a foo\n", 1, 10, K::UnknownType("foo".into()));
        check(p, "# TYPE a info\n", 1, 10, K::UnknownType("info".into()));
        check(
            p,
            "# TYPE a gauge\n# TYPE a gauge\n",
            2,
            3,
            K::DuplicateMetadata("TYPE", "a".into()),
        );
        check(p, "# HELP a x\n# HELP a y\n", 2, 3, K::DuplicateMetadata("HELP", "a".into()));
        check(p, "a 1\n# TYPE a gauge\n", 2, 3, K::TypeAfterSamples("a".into()));
        check(
            p,
            "# TYPE a gauge\na 1\n# TYPE b gauge\n# HELP a again\n",
            4,
            8,
            K::FamilyNotContiguous("a".into()),
        );
        check(p, "# HELP a x \\q\n", 1, 12, K::InvalidEscape('q'));
        check(p, "# TYPE h histogram\nh_bucket 1\n", 2, 9, K::InvalidLe);
        check(p, "# TYPE h histogram\nh_bucket{le=\"x\"} 1\n", 2, 9, K::InvalidLe);
        check(p, "# TYPE s summary\ns 1\n", 2, 2, K::InvalidQuantile);
        assert_eq!(
            parse_bytes(b"ok 1\nab\xff 1\n", p).expect_err("utf8"),
            ParseError {
                line: 2,
                column: 3,
                kind: K::InvalidUtf8
            }
        );
        // OpenMetrics.
        check(o, "a 1\n", 2, 1, K::MissingEof);
        check(o, "a 1\n# EOF\nb 1\n", 3, 1, K::AfterEof);
        check(o, "a 1\n\n# EOF\n", 2, 1, K::BlankLine);
        check(o, "# free comment\n# EOF\n", 1, 3, K::InvalidComment);
        check(o, "#TYPE a gauge\n# EOF\n", 1, 2, K::InvalidComment);
        check(
            o,
            "# TYPE a_seconds gauge\n# UNIT a_seconds bytes\n# EOF\n",
            2,
            8,
            K::UnitMismatch("a_seconds".into()),
        );
        check(o, "# TYPE a counter\na 1\n# EOF\n", 2, 1, K::NameNotInFamily("a".into()));
        check(o, "# TYPE a info\na 1\n# EOF\n", 2, 1, K::NameNotInFamily("a".into()));
        assert_eq!(om("# TYPE a gauge\na 1\nab 2\na_b 3\n# EOF\n").samples.len(), 3);
        check(o, "# TYPE a untyped\n# EOF\n", 1, 10, K::UnknownType("untyped".into()));
        check(o, "a 1\nb 1\na 2\n# EOF\n", 3, 1, K::FamilyNotContiguous("a".into()));
        check(o, "a{x=\"1\",} 1\n# EOF\n", 1, 9, K::Expected("a label name after ','"));
        check(o, "a  1\n# EOF\n", 1, 3, K::InvalidValue(String::new()));
        check(o, "a 1 xyz\n# EOF\n", 1, 5, K::InvalidTimestamp("xyz".into()));
        check(o, "a 1 # x\n# EOF\n", 1, 7, K::Expected("'{' to open the exemplar's labels"));
        check(o, "a 1 # {x=\"y\"} z\n# EOF\n", 1, 15, K::InvalidValue("z".into()));
    }
}
