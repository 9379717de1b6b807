//! Label matchers, as in PromQL selectors.

use super::{Labels, TsdbError};

/// How a label matcher compares.
#[derive(Debug, Clone)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    Re(regex::Regex),
    /// `!~` (fully anchored)
    NotRe(regex::Regex),
}

/// A label matcher. A missing label matches as the empty string, as in
/// Prometheus.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value or regex source.
    pub value: String,
}

impl Matcher {
    /// `name = value`.
    pub fn equal(name: &str, value: &str) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
        }
    }

    /// A regex matcher, anchored at both ends like Prometheus's
    /// (`^(?s:re)$`). `negate` makes it `!~`.
    pub fn regex(name: &str, re: &str, negate: bool) -> Result<Self, TsdbError> {
        let compiled = regex::Regex::new(&format!("^(?s:{re})$")).map_err(|e| TsdbError::BadRegex(re.into(), e.to_string()))?;
        Ok(Matcher {
            name: name.into(),
            op: if negate { MatchOp::NotRe(compiled) } else { MatchOp::Re(compiled) },
            value: re.into(),
        })
    }

    /// Whether a label set matches.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels
            .binary_search_by(|(k, _)| k.as_str().cmp(&self.name))
            .map(|i| labels[i].1.as_str())
            .unwrap_or("");
        match &self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Re(r) => r.is_match(v),
            MatchOp::NotRe(r) => !r.is_match(v),
        }
    }
}
