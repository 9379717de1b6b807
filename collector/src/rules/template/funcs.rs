//! The function table: Go's builtins and Prometheus's template functions
//! with their signatures, the methods of `*time.Time` and `*time.Duration`,
//! the calls, and Prometheus's functions themselves (`humanize*`, `title`,
//! `stripDomain`, query escaping, durations, ...).

use std::fmt::Write as _;
use std::rc::Rc;

use csoc_common::gofmt::format_float;
use regex::Regex;

use super::exec::{SampleV, State, Value, builtin_eq, builtin_index, builtin_len, builtin_lt, builtin_slice, is_true};
use super::gofmt::{fmt_v, go_quote, go_quote_backquote, is_go_print, sprint, sprintf, sprintln};
use super::gotime::{GoTime, duration_method, time_method};
use super::parse::parse_go_float;

// Functions.

/// Parameter types, as far as argument checking needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    /// `interface{}`.
    Any,
    /// `reflect.Value` (builtins).
    RValue,
    Str,
    Samples,
    Sample,
}

impl Ty {
    pub(super) fn name(self) -> &'static str {
        match self {
            Ty::Any => "interface {}",
            Ty::RValue => "reflect.Value",
            Ty::Str => "string",
            Ty::Samples => "template.queryResult",
            Ty::Sample => "*template.sample",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    // Go builtins.
    And,
    Or,
    Not,
    Len,
    Index,
    Slice,
    Print,
    Printf,
    Println,
    Html,
    Js,
    Urlquery,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Call,
    // Prometheus.
    Query,
    First,
    Label,
    Value,
    Strvalue,
    Args,
    ReReplaceAll,
    SafeHtml,
    Match,
    Title,
    ToUpper,
    ToLower,
    GraphLink,
    TableLink,
    SortByLabel,
    StripPort,
    StripDomain,
    Humanize,
    Humanize1024,
    HumanizeDuration,
    HumanizePercentage,
    HumanizeTimestamp,
    ToTime,
    ToDuration,
    Now,
    PathPrefix,
    ExternalUrl,
    ParseDuration,
}

pub(super) struct Sig {
    pub(super) fixed: &'static [Ty],
    pub(super) variadic: Option<Ty>,
}

const fn sig(fixed: &'static [Ty], variadic: Option<Ty>) -> Sig {
    Sig { fixed, variadic }
}

impl Func {
    pub(super) fn lookup(name: &str) -> Option<Func> {
        use Func::*;
        Some(match name {
            "and" => And,
            "or" => Or,
            "not" => Not,
            "len" => Len,
            "index" => Index,
            "slice" => Slice,
            "print" => Print,
            "printf" => Printf,
            "println" => Println,
            "html" => Html,
            "js" => Js,
            "urlquery" => Urlquery,
            "eq" => Eq,
            "ne" => Ne,
            "lt" => Lt,
            "le" => Le,
            "gt" => Gt,
            "ge" => Ge,
            "call" => Call,
            "query" => Query,
            "first" => First,
            "label" => Label,
            "value" => Value,
            "strvalue" => Strvalue,
            "args" => Args,
            "reReplaceAll" => ReReplaceAll,
            "safeHtml" => SafeHtml,
            "match" => Match,
            "title" => Title,
            "toUpper" => ToUpper,
            "toLower" => ToLower,
            "graphLink" => GraphLink,
            "tableLink" => TableLink,
            "sortByLabel" => SortByLabel,
            "stripPort" => StripPort,
            "stripDomain" => StripDomain,
            "humanize" => Humanize,
            "humanize1024" => Humanize1024,
            "humanizeDuration" => HumanizeDuration,
            "humanizePercentage" => HumanizePercentage,
            "humanizeTimestamp" => HumanizeTimestamp,
            "toTime" => ToTime,
            "toDuration" => ToDuration,
            "now" => Now,
            "pathPrefix" => PathPrefix,
            "externalURL" => ExternalUrl,
            "parseDuration" => ParseDuration,
            _ => return None,
        })
    }

    fn sig(self) -> Sig {
        use Func::*;
        use Ty::*;
        match self {
            And | Or | Index | Slice | Eq | Call => sig(&[RValue], Some(RValue)),
            Not | Len => sig(&[RValue], None),
            Ne | Lt | Le | Gt | Ge => sig(&[RValue, RValue], None),
            Print | Println | Html | Js | Urlquery | Args => sig(&[], Some(Any)),
            Printf => sig(&[Str], Some(Any)),
            Query | SafeHtml | Title | ToUpper | ToLower | GraphLink | TableLink | StripPort | StripDomain | ParseDuration => {
                sig(&[Str], None)
            }
            First => sig(&[Samples], None),
            Label => sig(&[Str, Sample], None),
            Func::Value | Strvalue => sig(&[Sample], None),
            ReReplaceAll => sig(&[Str, Str, Str], None),
            Match => sig(&[Str, Str], None),
            SortByLabel => sig(&[Str, Samples], None),
            Humanize | Humanize1024 | HumanizeDuration | HumanizePercentage | HumanizeTimestamp | ToTime | ToDuration => sig(&[Any], None),
            Now | PathPrefix | ExternalUrl => sig(&[], None),
        }
    }
}

/// Methods of `*time.Time` and `*time.Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Format,
    String,
    Unix,
    UnixMilli,
    UnixMicro,
    UnixNano,
    Utc,
    Year,
    YearDay,
    Day,
    Hour,
    Minute,
    Second,
    Nanosecond,
    IsZero,
    Seconds,
    Minutes,
    Hours,
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

impl Method {
    pub(super) fn for_time(name: &str) -> Option<Method> {
        use Method::*;
        Some(match name {
            "Format" => Format,
            "String" => String,
            "Unix" => Unix,
            "UnixMilli" => UnixMilli,
            "UnixMicro" => UnixMicro,
            "UnixNano" => UnixNano,
            "UTC" => Utc,
            "Year" => Year,
            "YearDay" => YearDay,
            "Day" => Day,
            "Hour" => Hour,
            "Minute" => Minute,
            "Second" => Second,
            "Nanosecond" => Nanosecond,
            "IsZero" => IsZero,
            _ => return None,
        })
    }

    pub(super) fn for_duration(name: &str) -> Option<Method> {
        use Method::*;
        Some(match name {
            "String" => String,
            "Seconds" => Seconds,
            "Minutes" => Minutes,
            "Hours" => Hours,
            "Milliseconds" => Milliseconds,
            "Microseconds" => Microseconds,
            "Nanoseconds" => Nanoseconds,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub(super) enum Callee {
    Func(Func),
    Time(GoTime, Method),
    Duration(i64, Method),
}

impl Callee {
    pub(super) fn sig(&self) -> Sig {
        match self {
            Callee::Func(f) => f.sig(),
            Callee::Time(_, Method::Format) => sig(&[Ty::Str], None),
            _ => sig(&[], None),
        }
    }
}

// Calls.

impl State<'_, '_> {
    fn regex(&mut self, pattern: &str) -> Result<Regex, String> {
        if let Some(r) = self.regexes.get(pattern) {
            return r.clone();
        }
        let r = Regex::new(pattern).map_err(|e| {
            let detail = match &e {
                regex::Error::Syntax(s) => s
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix("error: "))
                    .unwrap_or("invalid syntax")
                    .to_string(),
                regex::Error::CompiledTooBig(_) => "expression too large".to_string(),
                _ => e.to_string(),
            };
            format!("error parsing regexp: {detail}: `{pattern}`")
        });
        self.regexes.insert(pattern.to_string(), r.clone());
        r
    }

    pub(super) fn call(&mut self, callee: &Callee, argv: Vec<Value>) -> Result<Value, String> {
        match callee {
            Callee::Func(f) => self.call_func(*f, argv),
            Callee::Time(t, m) => Ok(time_method(t, *m, &argv)),
            Callee::Duration(d, m) => Ok(duration_method(*d, *m)),
        }
    }

    fn call_func(&mut self, f: Func, argv: Vec<Value>) -> Result<Value, String> {
        let s = |i: usize| -> &str {
            match argv.get(i) {
                Some(Value::Str(s)) => s,
                _ => "",
            }
        };
        let a0 = || argv.first().cloned().unwrap_or(Value::Invalid);
        Ok(match f {
            Func::And | Func::Or => a0(),
            Func::Not => Value::Bool(!is_true(&a0())),
            Func::Len => Value::Int(builtin_len(&a0())?),
            Func::Index => builtin_index(a0(), &argv[1..])?,
            Func::Slice => builtin_slice(a0(), &argv[1..])?,
            Func::Print => Value::str(&sprint(&argv)),
            Func::Println => Value::str(&sprintln(&argv)),
            Func::Printf => Value::str(&sprintf(s(0), &argv[1..])),
            Func::Html => Value::str(&html_escape(&eval_args(&argv))),
            Func::Js => Value::str(&js_escape(&eval_args(&argv))),
            Func::Urlquery => Value::str(&query_escape(&eval_args(&argv))),
            Func::Eq => Value::Bool(builtin_eq(&a0(), &argv[1..])?),
            Func::Ne => Value::Bool(!builtin_eq(&a0(), &argv[1..])?),
            Func::Lt => Value::Bool(builtin_lt(&argv[0], &argv[1])?),
            Func::Le => Value::Bool(builtin_lt(&argv[0], &argv[1])? || builtin_eq(&argv[0], &argv[1..])?),
            Func::Gt => Value::Bool(!(builtin_lt(&argv[0], &argv[1])? || builtin_eq(&argv[0], &argv[1..])?)),
            Func::Ge => Value::Bool(!builtin_lt(&argv[0], &argv[1])?),
            Func::Call => {
                return Err(match a0() {
                    Value::Invalid | Value::Nil => "call of nil".to_string(),
                    v => format!("non-function of type {}", v.reflect_type()),
                });
            }
            Func::Query => {
                let Some(q) = self.query else {
                    return Err("queries are not allowed in this template".into());
                };
                let res = q(s(0))?;
                Value::Samples(Rc::new(
                    res.into_iter()
                        .map(|r| {
                            Rc::new(SampleV {
                                labels: Rc::new(r.labels),
                                value: r.value,
                            })
                        })
                        .collect(),
                ))
            }
            Func::First => match argv.first() {
                Some(Value::Samples(v)) if !v.is_empty() => Value::Sample(Some(v[0].clone())),
                _ => return Err("first() called on vector with no elements".into()),
            },
            Func::Label => match argv.get(1) {
                Some(Value::Sample(Some(smp))) => Value::str(smp.labels.get(s(0)).map_or("", |v| v.as_str())),
                _ => return Err(NIL_DEREF.into()),
            },
            Func::Value => match argv.first() {
                Some(Value::Sample(Some(smp))) => Value::Float(smp.value),
                _ => return Err(NIL_DEREF.into()),
            },
            Func::Strvalue => match argv.first() {
                Some(Value::Sample(Some(smp))) => Value::str(smp.labels.get("__value__").map_or("", |v| v.as_str())),
                _ => return Err(NIL_DEREF.into()),
            },
            Func::Args => Value::AnyMap(Rc::new(
                argv.iter().enumerate().map(|(i, v)| (format!("arg{i}"), v.clone())).collect(),
            )),
            Func::ReReplaceAll => {
                let re = self
                    .regex(s(0))
                    .map_err(|e| format!("regexp: Compile({}): {e}", go_quote_backquote(s(0))))?;
                Value::str(&re.replace_all(s(2), s(1)))
            }
            Func::SafeHtml => Value::Html(Rc::from(s(0))),
            Func::Match => Value::Bool(self.regex(s(0))?.is_match(s(1))),
            Func::Title => Value::str(&title(s(0))),
            Func::ToUpper => Value::str(&s(0).chars().map(simple_upper).collect::<String>()),
            Func::ToLower => Value::str(&s(0).chars().map(simple_lower).collect::<String>()),
            Func::GraphLink => Value::str(&format!("/graph?g0.expr={}&g0.tab=0", query_escape(s(0)))),
            Func::TableLink => Value::str(&format!("/graph?g0.expr={}&g0.tab=1", query_escape(s(0)))),
            Func::SortByLabel => match argv.get(1) {
                Some(Value::Samples(v)) => {
                    let label = s(0);
                    let mut sorted: Vec<Rc<SampleV>> = v.as_ref().clone();
                    let key = |x: &Rc<SampleV>| x.labels.get(label).cloned().unwrap_or_default();
                    sorted.sort_by_key(key);
                    Value::Samples(Rc::new(sorted))
                }
                _ => Value::Samples(Rc::new(Vec::new())),
            },
            Func::StripPort => Value::str(split_host_port(s(0)).map_or(s(0), |(h, _)| h)),
            Func::StripDomain => Value::str(&strip_domain(s(0))),
            Func::Humanize => Value::str(&humanize(convert_to_float(&a0())?)),
            Func::Humanize1024 => Value::str(&humanize1024(convert_to_float(&a0())?)),
            Func::HumanizeDuration => Value::str(&humanize_duration(convert_to_float(&a0())?)),
            Func::HumanizePercentage => Value::str(&format!("{}%", fmt_g4(convert_to_float(&a0())? * 100.0))),
            Func::HumanizeTimestamp => {
                let v = convert_to_float(&a0())?;
                if v.is_nan() || v.is_infinite() {
                    Value::str(&fmt_g4(v))
                } else {
                    Value::str(&float_to_time(v)?.string())
                }
            }
            Func::ToTime => Value::Time(float_to_time(convert_to_float(&a0())?)?),
            Func::ToDuration => Value::Duration((convert_to_float(&a0())? * 1e9) as i64),
            Func::Now => Value::Float(self.eval_time_ms as f64 / 1000.0),
            Func::PathPrefix => Value::str(&url_path(self.external_url)),
            Func::ExternalUrl => Value::str(self.external_url),
            Func::ParseDuration => Value::Float(parse_prom_duration(s(0))? as f64 / 1e9),
        })
    }
}

const NIL_DEREF: &str = "runtime error: invalid memory address or nil pointer dereference";

/// Go's `evalArgs` for html/js/urlquery.
fn eval_args(argv: &[Value]) -> String {
    if let [Value::Str(s)] = argv {
        return s.to_string();
    }
    let args: Vec<Value> = argv
        .iter()
        .map(|v| match v {
            Value::Invalid | Value::Nil => Value::str("<no value>"),
            v => v.clone(),
        })
        .collect();
    sprint(&args)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => out.push('\u{FFFD}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c if c.is_ascii() || is_go_print(c) => out.push(c),
            c => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
        }
    }
    out
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The path of a URL, percent-decoded (Go's `url.URL.Path`).
fn url_path(u: &str) -> String {
    let rest = match u.find("://") {
        Some(i) => {
            let after = &u[i + 3..];
            match after.find(['/', '?', '#']) {
                Some(j) => &after[j..],
                None => "",
            }
        }
        None => u,
    };
    let path = match rest.find(['?', '#']) {
        Some(j) => &rest[..j],
        None => rest,
    };
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(v) = path
            .get(i + 1..i + 3)
            .filter(|_| b[i] == b'%')
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `net.SplitHostPort`.
fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    let i = hp.rfind(':')?;
    let (host, j, k) = if hp.starts_with('[') {
        let end = hp.find(']')?;
        if end + 1 != i {
            return None;
        }
        (&hp[1..end], 1, end + 1)
    } else {
        let host = &hp[..i];
        if host.contains(':') {
            return None;
        }
        (host, 0, 0)
    };
    if hp[j..].contains('[') || hp[k..].contains(']') {
        return None;
    }
    Some((host, &hp[i + 1..]))
}

fn strip_domain(hp: &str) -> String {
    let (host, port) = split_host_port(hp).unwrap_or((hp, ""));
    if host.parse::<std::net::IpAddr>().is_ok() {
        return hp.to_string();
    }
    let host = host.split('.').next().unwrap_or("");
    if port.is_empty() {
        host.to_string()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `cases.Title(language.AmericanEnglish, cases.NoLower)`: the first cased
/// letter after a word break is upper-cased, the rest left alone.
fn title(s: &str) -> String {
    let is_mid = |c: char| matches!(c, '\'' | '.' | ':' | '\u{2018}' | '\u{2019}' | '\u{00B7}' | '\u{2024}' | '\u{2027}');
    let is_cased = |c: char| c.is_lowercase() || c.is_uppercase();
    let mut out = String::with_capacity(s.len());
    let mut mid_word = false;
    let mut prev_mid = false;
    for c in s.chars() {
        if prev_mid && is_mid(c) {
            mid_word = false;
        }
        if is_cased(c) {
            if !mid_word {
                let mut up = c.to_uppercase();
                if let Some(first) = up.next() {
                    out.push(first);
                    out.extend(up.flat_map(char::to_lowercase));
                }
                mid_word = true;
            } else {
                out.push(c);
            }
        } else {
            out.push(c);
            let is_word_char = c.is_alphanumeric() || c == '_' || is_mid(c) || c.is_ascii_digit();
            if !is_word_char {
                mid_word = false;
            }
        }
        prev_mid = is_mid(c);
    }
    out
}

/// `unicode.ToUpper` (simple case mapping: characters whose upper case is
/// several characters are kept).
fn simple_upper(c: char) -> char {
    let mut u = c.to_uppercase();
    match (u.next(), u.next()) {
        (Some(x), None) => x,
        _ => c,
    }
}

fn simple_lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// Prometheus's `convertToFloat`.
fn convert_to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Str(s) => parse_go_float(s),
        v => Err(format!("can't convert {} to float", v.go_type())),
    }
}

/// `fmt.Sprintf("%.4g", v)`.
fn fmt_g4(v: f64) -> String {
    format_float(v, 'g', 4)
}

fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return fmt_g4(v);
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", fmt_g4(v))
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return fmt_g4(v);
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", fmt_g4(v))
}

fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return fmt_g4(v);
    }
    if v == 0.0 {
        return format!("{}s", fmt_g4(v));
    }
    if v.abs() >= 1.0 {
        let (sign, v) = if v < 0.0 { ("-", -v) } else { ("", v) };
        let d = v as i64;
        let (seconds, minutes, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {minutes}m {seconds}s");
        }
        if minutes != 0 {
            return format!("{sign}{minutes}m {seconds}s");
        }
        return format!("{sign}{}s", fmt_g4(v));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", fmt_g4(v))
}

/// Prometheus's `floatToTime`: seconds to a millisecond-precision UTC time.
fn float_to_time(v: f64) -> Result<GoTime, String> {
    if v.is_nan() || v.is_infinite() {
        return Err("value is NaN or Inf".into());
    }
    let ts = v * 1e9;
    if ts > i64::MAX as f64 || ts < i64::MIN as f64 {
        return Err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            fmt_v(&Value::Float(v))
        ));
    }
    Ok(GoTime::from_millis((ts as i64) / 1_000_000))
}

/// Prometheus's `model.ParseDuration`, in nanoseconds.
fn parse_prom_duration(s: &str) -> Result<i64, String> {
    use csoc_common::duration::{DurationError, parse_duration_ms};
    let ms = parse_duration_ms(s).map_err(|e| match e {
        DurationError::Empty => "empty duration string".to_string(),
        DurationError::UnknownUnit { unit, .. } => format!("unknown unit {} in duration {}", go_quote(&unit), go_quote(s)),
        DurationError::OutOfRange { .. } => "duration out of range".to_string(),
        _ => format!("not a valid duration string: {}", go_quote(s)),
    })?;
    // Go's time.Duration counts nanoseconds.
    ms.checked_mul(1_000_000).ok_or_else(|| "duration out of range".to_string())
}
