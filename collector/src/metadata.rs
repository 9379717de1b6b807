//! Metric metadata (type, help, unit per metric family) as the ingest paths
//! receive it: the agents' `WriteBatch.metadata` and remote write's
//! `MetricMetadata`. Kept in memory only, like Prometheus's (which holds
//! the metadata of its current scrape targets): after a restart it fills
//! again as agents and senders send it (agents with every collection,
//! Prometheus every minute). Served by `/api/v1/metadata`.

use std::collections::BTreeMap;
use std::sync::RwLock;

/// Most metric families kept; metadata of further families is dropped.
pub const MAX_FAMILIES: usize = 200_000;
/// Most distinct metadata kept per family (different senders may describe
/// a family differently); the oldest is replaced.
pub const MAX_PER_FAMILY: usize = 8;
/// Longest help text kept (bytes); longer ones are cut at a char boundary.
pub const MAX_HELP: usize = 4096;

/// One family's metadata, as Prometheus's API shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Metadata {
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`,
    /// `info`, `stateset` or `unknown`.
    #[serde(rename = "type")]
    pub typ: &'static str,
    /// Help text.
    pub help: String,
    /// Unit, often empty.
    pub unit: String,
}

/// The type name of a protobuf metric type number (the same numbering in
/// csoc's `MetricType` and remote write's `MetricMetadata.MetricType`).
pub fn type_name(n: i32) -> &'static str {
    match n {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The metadata of every family seen. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct MetadataStore {
    families: RwLock<BTreeMap<String, Vec<Metadata>>>,
}

impl MetadataStore {
    /// Records one family's metadata (`typ`: the protobuf type number).
    /// Entries without a family name are ignored.
    pub fn record(&self, family: &str, typ: i32, help: &str, unit: &str) {
        if family.is_empty() || family.len() > 1024 {
            return;
        }
        let m = Metadata {
            typ: type_name(typ),
            help: cut(help, MAX_HELP),
            unit: cut(unit, 256),
        };
        // Almost always already known: check under the read lock first.
        {
            let fams = self.families.read().unwrap_or_else(|p| p.into_inner());
            if fams.get(family).is_some_and(|v| v.contains(&m)) {
                return;
            }
        }
        let mut fams = self.families.write().unwrap_or_else(|p| p.into_inner());
        if !fams.contains_key(family) && fams.len() >= MAX_FAMILIES {
            return;
        }
        let v = fams.entry(family.to_string()).or_default();
        if v.contains(&m) {
            return;
        }
        if v.len() >= MAX_PER_FAMILY {
            v.remove(0);
        }
        v.push(m);
    }

    /// Records many entries: (family, type number, help, unit).
    pub fn record_all<'a>(&self, entries: impl IntoIterator<Item = (&'a str, i32, &'a str, &'a str)>) {
        for (f, t, h, u) in entries {
            self.record(f, t, h, u);
        }
    }

    /// Number of families known.
    pub fn len(&self) -> usize {
        self.families.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What `/api/v1/metadata` returns, sorted by family name: only
    /// `metric` when given; at most `limit` families (`None`: all) and at
    /// most `limit_per_metric` entries per family (`None`: all).
    pub fn query(&self, metric: Option<&str>, limit: Option<usize>, limit_per_metric: Option<usize>) -> Vec<(String, Vec<Metadata>)> {
        let fams = self.families.read().unwrap_or_else(|p| p.into_inner());
        let pick = |v: &Vec<Metadata>| -> Vec<Metadata> {
            let mut v = v.clone();
            v.sort();
            v.truncate(limit_per_metric.unwrap_or(usize::MAX));
            v
        };
        let it: Box<dyn Iterator<Item = (&String, &Vec<Metadata>)>> = match metric {
            Some(m) => Box::new(fams.get_key_value(m).into_iter()),
            None => Box::new(fams.iter()),
        };
        it.take(limit.unwrap_or(usize::MAX)).map(|(k, v)| (k.clone(), pick(v))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_distinct_metadata_and_answers_queries() {
        let s = MetadataStore::default();
        s.record("up", 2, "Whether the target is up.", "");
        s.record("up", 2, "Whether the target is up.", ""); // duplicate
        s.record("b_total", 1, "B.", "");
        s.record("b_total", 0, "Another sender's idea.", "");
        s.record("", 1, "nameless", "");
        assert_eq!(s.len(), 2);
        let all = s.query(None, None, None);
        assert_eq!(all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b_total", "up"]);
        assert_eq!(all[0].1.len(), 2);
        assert_eq!(all[1].1[0].typ, "gauge");
        assert_eq!(s.query(None, Some(1), None).len(), 1);
        assert_eq!(s.query(None, None, Some(1))[0].1.len(), 1);
        assert_eq!(s.query(Some("up"), None, None).len(), 1);
        assert!(s.query(Some("nope"), None, None).is_empty());
        assert!(s.query(None, Some(0), None).is_empty());
        let j = serde_json::to_value(&all[1].1[0]).expect("json");
        assert_eq!(
            j,
            serde_json::json!({"type": "gauge", "help": "Whether the target is up.", "unit": ""})
        );
    }

    #[test]
    fn bounded() {
        let s = MetadataStore::default();
        for i in 0..(MAX_PER_FAMILY + 3) {
            s.record("m", 1, &format!("help {i}"), "");
        }
        let q = s.query(Some("m"), None, None);
        assert_eq!(q[0].1.len(), MAX_PER_FAMILY);
        assert!(q[0].1.iter().all(|m| m.help != "help 0"), "the oldest was replaced");
        s.record("long", 1, &"é".repeat(MAX_HELP), "");
        assert!(s.query(Some("long"), None, None)[0].1[0].help.len() <= MAX_HELP);
        assert_eq!(type_name(99), "unknown");
    }
}
