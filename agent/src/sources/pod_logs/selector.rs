//! Kubernetes label selectors (`app=fence`, `tier!=web`, `app in (a,b)`,
//! `env notin (dev)`, `canary`, `!canary`), parsed once at configuration and
//! matched against a pod's labels: the grammar of the API server's
//! `labelSelector` parameter (k8s.io/apimachinery `labels.Parse`), without the
//! numeric `>`/`<` operators.

use std::collections::BTreeMap;
use std::fmt;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    /// `key=value` / `key==value` / `key in (...)`.
    In(String, Vec<String>),
    /// `key!=value` / `key notin (...)`: also true when the label is absent.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A parsed label selector; the empty selector selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    reqs: Vec<Req>,
    text: String,
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty()
            || p.len() > 253
            || !p
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')))
    {
        return false;
    }
    !name.is_empty() && name.len() <= 63 && valid_value(name)
}

fn valid_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    let b = v.as_bytes();
    v.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

impl LabelSelector {
    /// Parses `text`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(text)? {
            let p = part.trim();
            if p.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!("empty requirement in {text:?}"));
            }
            reqs.push(parse_req(p)?);
        }
        Ok(LabelSelector {
            reqs,
            text: text.trim().to_string(),
        })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
        })
    }

    /// The selector as the API server's `labelSelector` parameter (None when
    /// it selects everything).
    pub fn as_param(&self) -> Option<&str> {
        (!self.reqs.is_empty()).then_some(self.text.as_str())
    }
}

/// Splits on commas outside parentheses.
fn split_top(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced ')' at byte {i} of {text:?}"));
                }
            }
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unclosed '(' in {text:?}"));
    }
    out.push(&text[start..]);
    Ok(out)
}

fn key(k: &str, req: &str) -> Result<String, String> {
    let k = k.trim();
    if !valid_key(k) {
        return Err(format!("{k:?} is not a valid label key (in {req:?})"));
    }
    Ok(k.to_string())
}

fn value(v: &str, req: &str) -> Result<String, String> {
    let v = v.trim();
    if !valid_value(v) {
        return Err(format!("{v:?} is not a valid label value (in {req:?})"));
    }
    Ok(v.to_string())
}

fn set(rest: &str, req: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised list of values in {req:?}"))?;
    let vs = inner.split(',').map(|v| value(v, req)).collect::<Result<Vec<_>, _>>()?;
    Ok(vs)
}

fn parse_req(p: &str) -> Result<Req, String> {
    if let Some(k) = p.strip_prefix('!') {
        return Ok(Req::NotExists(key(k, p)?));
    }
    if let Some((k, v)) = p.split_once("!=") {
        return Ok(Req::NotIn(key(k, p)?, vec![value(v, p)?]));
    }
    if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
        return Ok(Req::In(key(k, p)?, vec![value(v, p)?]));
    }
    if p.contains('>') || p.contains('<') {
        return Err(format!("the operators > and < are not supported (in {p:?})"));
    }
    let mut words = p.splitn(2, char::is_whitespace);
    let k = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim_start();
    if rest.is_empty() {
        return Ok(Req::Exists(key(k, p)?));
    }
    if let Some(r) = rest.strip_prefix("notin") {
        return Ok(Req::NotIn(key(k, p)?, set(r, p)?));
    }
    if let Some(r) = rest.strip_prefix("in") {
        return Ok(Req::In(key(k, p)?, set(r, p)?));
    }
    Err(format!(
        "cannot parse the requirement {p:?}: expected key, !key, key=value, key!=value, key in (...) or key notin (...)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selector_operators_match_as_kubernetes_does() {
        let fence = labels(&[("app", "fence"), ("release", "production"), ("app.kubernetes.io/name", "fence")]);
        let cases: [(&str, bool); 14] = [
            ("", true),
            ("app=fence", true),
            ("app==fence", true),
            ("app = fence , release=production", true),
            ("app=indexd", false),
            ("app!=indexd", true),
            ("tier!=web", true),
            ("app in (fence, indexd)", true),
            ("app notin (fence)", false),
            ("tier notin (web)", true),
            ("release", true),
            ("!release", false),
            ("!canary", true),
            ("app.kubernetes.io/name=fence,app in (x,y)", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            assert_eq!(s.matches(&fence), want, "{sel:?}");
        }
        assert_eq!(LabelSelector::parse("").expect("empty").as_param(), None);
        assert_eq!(LabelSelector::parse(" app=fence ").expect("one").as_param(), Some("app=fence"));
    }

    #[test]
    fn selector_errors_name_the_requirement() {
        for bad in [
            "app=",
            "=fence",
            "app in fence",
            "app in (a",
            "a,,b",
            "bad key=x",
            "x>1",
            "-x=y",
            "app=fence)",
        ] {
            let r = LabelSelector::parse(bad);
            if bad == "app=" {
                // An empty value is valid: it selects app="" (as kubectl).
                assert!(r.is_ok(), "{bad:?}");
                continue;
            }
            assert!(r.is_err(), "{bad:?} should be rejected");
        }
        let e = LabelSelector::parse("app in fence").expect_err("no parens");
        assert!(e.contains("app in fence"), "{e}");
    }
}
