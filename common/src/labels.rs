//! Label sets and the name rules of the Prometheus data model: one
//! definition for the agent, the collector and the exposition parser.

/// A label set, sorted by name, including `__name__`.
pub type Labels = Vec<(String, String)>;

/// The kind of a metric family, as in the Prometheus/OpenMetrics data model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonically increasing value that resets to zero.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Buckets, sum and count (scraped expositions).
    Histogram,
    /// OpenMetrics gauge histogram.
    GaugeHistogram,
    /// Quantiles, sum and count (scraped expositions).
    Summary,
    /// OpenMetrics info.
    Info,
    /// OpenMetrics state set.
    StateSet,
    /// Unknown or untyped.
    Unknown,
}

/// HELP/TYPE/UNIT information for one metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// Family name (for a counter, with its `_total` suffix).
    pub name: String,
    /// Counter, gauge...
    pub kind: MetricKind,
    /// One-line description.
    pub help: String,
    /// Base unit (`seconds`, `bytes`) or empty.
    pub unit: String,
}

/// A label set from `(name, value)` pairs, sorted by name (for literals
/// and tests).
pub fn from_pairs(pairs: &[(&str, &str)]) -> Labels {
    let mut l: Labels = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    sort_labels(&mut l);
    l
}

/// Sorts a label set by name (the canonical order on the wire and in storage).
pub fn sort_labels(l: &mut Labels) {
    l.sort_by(|a, b| a.0.cmp(&b.0));
}

/// Sets `name` to `value` in a sorted label set, replacing any existing value.
pub fn set_label(l: &mut Labels, name: &str, value: &str) {
    match l.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) => l[i].1 = value.to_string(),
        Err(i) => l.insert(i, (name.to_string(), value.to_string())),
    }
}

/// Whether a sorted label set has `name`.
pub fn has_label(l: &Labels, name: &str) -> bool {
    l.binary_search_by(|(k, _)| k.as_str().cmp(name)).is_ok()
}

/// Writes a label set to `buf` (cleared first) as the bytes to hash: each
/// name and value followed by 0xff, a byte UTF-8 never uses, so that two
/// different label sets never give the same bytes. Hashing the buffer in
/// one call is much cheaper than a hasher call per string: SipHash's
/// per-call cost, not its per-byte cost, is what short label strings pay.
pub fn frame_labels<'a>(buf: &mut Vec<u8>, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
    buf.clear();
    for (k, v) in pairs {
        buf.extend_from_slice(k.as_bytes());
        buf.push(0xff);
        buf.extend_from_slice(v.as_bytes());
        buf.push(0xff);
    }
}

/// A 64-bit hash of label sets ([`frame_labels`] hashed with SipHash),
/// keyed with a random key drawn once per process: a hash is stable for
/// the process's life, and nobody who chooses label values can aim at a
/// collision.
#[derive(Debug, Default)]
pub struct LabelsHasher {
    buf: Vec<u8>,
}

impl LabelsHasher {
    /// The hash of a label set given as `(name, value)` pairs.
    pub fn hash<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        frame_labels(&mut self.buf, pairs);
        let mut h = KEY.get_or_init(std::hash::RandomState::new).build_hasher();
        h.write(&self.buf);
        h.finish()
    }

    /// The hash of a [`Labels`].
    pub fn labels(&mut self, l: &Labels) -> u64 {
        self.hash(l.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// Whether `s` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
/// Every label that reaches storage, from an agent, a remote writer or a
/// rule, is held to this rule.
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_') && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Whether `s` is a label name under Prometheus 3's UTF-8 rule: any
/// non-empty valid UTF-8. Only PromQL uses it (`count_values`' label, as
/// upstream); stored labels keep the strict [`valid_label_name`].
pub fn valid_utf8_label_name(s: &str) -> bool {
    !s.is_empty()
}

/// Whether `s` is a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_hasher_is_stable_in_a_process_and_tells_boundaries_apart() {
        let mut a = LabelsHasher::default();
        let mut b = LabelsHasher::default();
        let l = from_pairs(&[("__name__", "up"), ("job", "node")]);
        assert_eq!(a.labels(&l), b.labels(&l.clone()), "one key per process");
        assert_eq!(a.labels(&l), a.hash([("__name__", "up"), ("job", "node")]));
        let moved = from_pairs(&[("__name__", "upj"), ("ob", "node")]);
        let shifted = from_pairs(&[("__name__", "up"), ("job", "nod"), ("e", "")]);
        assert_ne!(a.labels(&l), a.labels(&moved));
        assert_ne!(a.labels(&l), a.labels(&shifted));
        assert_ne!(a.labels(&l), a.labels(&Labels::new()));
    }

    #[test]
    fn set_label_keeps_order_and_replaces() {
        let mut l: Labels = vec![("__name__".into(), "m".into()), ("a".into(), "2".into()), ("z".into(), "1".into())];
        set_label(&mut l, "job", "node");
        set_label(&mut l, "a", "3");
        let names: Vec<_> = l.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["__name__", "a", "job", "z"]);
        assert_eq!(l[1].1, "3");
        assert!(has_label(&l, "job"));
        assert!(!has_label(&l, "instance"));
    }

    #[test]
    fn name_rules() {
        for ok in ["a", "_", "job", "le_1", "A9"] {
            assert!(valid_label_name(ok), "{ok}");
            assert!(valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "é", "a:b"] {
            assert!(!valid_label_name(bad), "{bad}");
        }
        assert!(valid_metric_name("job:rate5m") && valid_metric_name(":a"));
        for bad in ["", "1a", "a-b", "a.b"] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
    }
}
