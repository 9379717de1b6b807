//! Label and field selectors, as the apiserver parses and applies them.
//!
//! Labels: comma-separated requirements `key`, `!key`, `key=v`, `key==v`,
//! `key!=v`, `key in (a,b)`, `key notin (a,b)`, `key>N`, `key<N`
//! (k8s.io/apimachinery `labels.Parse`). `!=` and `notin` also match an
//! object without the key. Fields: `label=v`, `label==v`, `label!=v`, where
//! `label` is `metadata.name`, `metadata.namespace` or one of the type's own
//! field labels; others are refused as the apiserver refuses them.

use serde_json::Value;

use super::resources::ResourceType;

/// A selector that cannot be parsed or names an unsupported field; the
/// message is the apiserver's (a 400 BadRequest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<(String, Op)>,
}

fn valid_key(k: &str) -> bool {
    let name = match k.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return false;
            }
            name
        }
        None => k,
    };
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(rest: &str, key: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("unable to parse requirement: found '{rest}', expected: '(' for {key}")))?;
    let mut vals = Vec::new();
    for v in inner.split(',') {
        let v = v.trim();
        if !valid_value(v) {
            return Err(SelectorError(format!(
                "unable to parse requirement: values[0][{key}]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            )));
        }
        vals.push(v.to_string());
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parses a selector; the empty string selects everything.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        for part in split_top(s) {
            let p = part.trim();
            let bad_key = |k: &str| {
                SelectorError(format!(
                    "unable to parse requirement: <nil>: Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                ))
            };
            if p.is_empty() {
                return Err(SelectorError("found '', expected: !, identifier, or 'end of string'".into()));
            }
            if let Some(k) = p.strip_prefix('!') {
                let k = k.trim();
                if !valid_key(k) {
                    return Err(bad_key(k));
                }
                reqs.push((k.to_string(), Op::NotExists));
                continue;
            }
            let (key, op) = if let Some((k, v)) = p.split_once("!=") {
                (k, Op::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once("==") {
                (k, Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once('=') {
                (k, Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once('>') {
                let n = v.trim().parse().map_err(|_| {
                    SelectorError(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                    ))
                })?;
                (k, Op::Gt(n))
            } else if let Some((k, v)) = p.split_once('<') {
                let n = v.trim().parse().map_err(|_| {
                    SelectorError(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                    ))
                })?;
                (k, Op::Lt(n))
            } else {
                let mut words = p.splitn(2, char::is_whitespace);
                let k = words.next().unwrap_or_default();
                let rest = words.next().unwrap_or_default().trim_start();
                if rest.is_empty() {
                    (k, Op::Exists)
                } else if let Some(set) = rest.strip_prefix("notin") {
                    (k, Op::NotIn(parse_set(set, k)?))
                } else if let Some(set) = rest.strip_prefix("in") {
                    (k, Op::In(parse_set(set, k)?))
                } else {
                    return Err(SelectorError(format!(
                        "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
                    )));
                }
            };
            let key = key.trim();
            if !valid_key(key) {
                return Err(bad_key(key));
            }
            if let Op::Eq(v) | Op::NotEq(v) = &op
                && !valid_value(v)
            {
                return Err(SelectorError(format!(
                    "unable to parse requirement: values[0][{key}]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                )));
            }
            reqs.push((key.to_string(), op));
        }
        Ok(LabelSelector { reqs })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object (its `metadata.labels`) matches.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.reqs.iter().all(|(k, op)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Eq(want) => v == Some(want.as_str()),
                Op::NotEq(want) => v != Some(want.as_str()),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                Op::Gt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|x| x > *n),
                Op::Lt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|x| x < *n),
            }
        })
    }
}

/// A parsed field selector for one resource type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(Vec<&'static str>, bool, String)>,
}

/// Unescapes a field selector value (`\,` `\=` `\\`).
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits on commas not escaped by a backslash.
fn split_unescaped(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut escaped) = (0usize, false);
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            ',' if !escaped => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    out.push(&s[start..]);
    out
}

impl FieldSelector {
    /// Parses `s` for objects of type `r`.
    pub(crate) fn parse(s: &str, r: &ResourceType) -> Result<FieldSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for part in split_unescaped(s) {
            let (field, negate, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(SelectorError(format!("invalid selector: '{s}'; can't understand '{part}'")));
            };
            let field = field.trim();
            let path: Vec<&'static str> = match field {
                "metadata.name" => vec!["metadata", "name"],
                "metadata.namespace" => vec!["metadata", "namespace"],
                _ => match r.fields.iter().find(|(label, _)| *label == field) {
                    Some((_, path)) => path.to_vec(),
                    // Types with their own field labels answer as their
                    // conversion function does; the others as the default one.
                    None if !r.fields.is_empty() => {
                        return Err(SelectorError(format!("field label not supported: {field}")));
                    }
                    None => {
                        return Err(SelectorError(format!(
                            "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                        )));
                    }
                },
            };
            reqs.push((path, negate, unescape(value)));
        }
        Ok(FieldSelector { reqs })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object matches (a missing field reads as the empty
    /// string, a boolean as `true`/`false`).
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, negate, want)| {
            let mut v = obj;
            for p in path {
                v = &v[*p];
            }
            let got = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            (got == *want) != *negate
        })
    }
}
