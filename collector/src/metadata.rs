//! Metric metadata (type, help, unit per metric family) as the ingest paths
//! receive it: the agents' `WriteBatch.metadata` and remote write's
//! `MetricMetadata`. Kept in memory only, like Prometheus's (which holds
//! the metadata of its current scrape targets): after a restart it fills
//! again as agents and senders send it (agents with every collection,
//! Prometheus every minute). Served by `/api/v1/metadata`.
//!
//! Kept per commons (the commons the ingest path stamped on the sender's
//! series), so a token scoped to a commons reads only that commons'
//! families; an unscoped token reads them all, merged. Bounded: at most
//! `max_metadata_per_commons` families per commons (metadata of further
//! families is dropped and counted as
//! `csoc_collector_limit_rejections_total{limit="max_metadata_per_commons"}`),
//! [`MAX_PER_FAMILY`] entries per family, help cut at [`MAX_HELP`] bytes,
//! units at [`MAX_UNIT`], family names up to [`MAX_NAME`]. One commons
//! thus holds at most `max × (MAX_NAME + MAX_PER_FAMILY × (MAX_HELP +
//! MAX_UNIT + ~100))` bytes: about 66 MB at the default 10,000 families in
//! the worst case (every family with four distinct 1 KiB help texts), a
//! few MB in practice; and commons exist only as configured agent tokens.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use crate::ingest::limits::LimitMetrics;

/// Most distinct metadata kept per family (different senders may describe
/// a family differently); the oldest is replaced.
pub const MAX_PER_FAMILY: usize = 4;
/// Longest help text kept (bytes); longer ones are cut at a char boundary.
pub const MAX_HELP: usize = 1024;
/// Longest unit kept (bytes).
pub const MAX_UNIT: usize = 256;
/// Longest family name accepted (bytes); metadata of longer ones is ignored.
pub const MAX_NAME: usize = 1024;
/// The limit's name, in refusals and in the rejection counter.
pub const LIMIT_NAME: &str = "max_metadata_per_commons";

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

/// The metadata of every family seen, per commons. Cheap to share behind
/// an `Arc`.
#[derive(Default)]
pub struct MetadataStore {
    by_commons: RwLock<HashMap<String, BTreeMap<String, Vec<Metadata>>>>,
    /// Most families per commons; `None`: the default limit.
    max_per_commons: Option<usize>,
    /// Where dropped families are counted.
    metrics: LimitMetrics,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("families", &self.len())
            .field("max_per_commons", &self.max_per_commons())
            .finish()
    }
}

impl MetadataStore {
    /// A store keeping at most `max_per_commons` families per commons and
    /// counting the families it drops in `metrics`.
    pub fn new(max_per_commons: usize, metrics: LimitMetrics) -> Self {
        MetadataStore {
            by_commons: RwLock::default(),
            max_per_commons: Some(max_per_commons),
            metrics,
        }
    }

    fn max_per_commons(&self) -> usize {
        self.max_per_commons
            .unwrap_or_else(|| crate::config::Limits::default().max_metadata_per_commons)
    }

    /// Records one family's metadata as sent for `commons` (`typ`: the
    /// protobuf type number). Entries without a family name are ignored;
    /// a new family past the commons' limit is dropped and counted.
    pub fn record(&self, commons: &str, family: &str, typ: i32, help: &str, unit: &str) {
        if family.is_empty() || family.len() > MAX_NAME {
            return;
        }
        let m = Metadata {
            typ: type_name(typ),
            help: cut(help, MAX_HELP),
            unit: cut(unit, MAX_UNIT),
        };
        // Almost always already known: check under the read lock first.
        {
            let all = self.by_commons.read().unwrap_or_else(|p| p.into_inner());
            if all.get(commons).and_then(|fams| fams.get(family)).is_some_and(|v| v.contains(&m)) {
                return;
            }
        }
        let max = self.max_per_commons();
        let mut all = self.by_commons.write().unwrap_or_else(|p| p.into_inner());
        let full = |fams: Option<&BTreeMap<String, Vec<Metadata>>>| {
            !fams.is_some_and(|f| f.contains_key(family)) && fams.map_or(0, BTreeMap::len) >= max
        };
        if full(all.get(commons)) {
            drop(all);
            self.metrics.rejected(LIMIT_NAME, commons);
            return;
        }
        if !all.contains_key(commons) {
            all.insert(commons.to_string(), BTreeMap::new());
        }
        let Some(fams) = all.get_mut(commons) else { return };
        let v = fams.entry(family.to_string()).or_default();
        if v.contains(&m) {
            return;
        }
        if v.len() >= MAX_PER_FAMILY {
            v.remove(0);
        }
        v.push(m);
    }

    /// Records many entries for `commons`: (family, type number, help,
    /// unit).
    pub fn record_all<'a>(&self, commons: &str, entries: impl IntoIterator<Item = (&'a str, i32, &'a str, &'a str)>) {
        for (f, t, h, u) in entries {
            self.record(commons, f, t, h, u);
        }
    }

    /// Number of families known, summed over the commons.
    pub fn len(&self) -> usize {
        let all = self.by_commons.read().unwrap_or_else(|p| p.into_inner());
        all.values().map(BTreeMap::len).sum()
    }

    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`MetadataStore::query_scoped`] over every commons.
    pub fn query(&self, metric: Option<&str>, limit: Option<usize>, limit_per_metric: Option<usize>) -> Vec<(String, Vec<Metadata>)> {
        self.query_scoped(None, metric, limit, limit_per_metric)
    }

    /// What `/api/v1/metadata` returns, sorted by family name: the
    /// families of commons `scope` (`None`: of every commons, entries of a
    /// family merged and deduplicated); only `metric` when given; at most
    /// `limit` families (`None`: all) and at most `limit_per_metric`
    /// entries per family (`None`: all).
    pub fn query_scoped(
        &self,
        scope: Option<&str>,
        metric: Option<&str>,
        limit: Option<usize>,
        limit_per_metric: Option<usize>,
    ) -> Vec<(String, Vec<Metadata>)> {
        let all = self.by_commons.read().unwrap_or_else(|p| p.into_inner());
        // References only: nothing is copied but what is returned.
        let mut merged: BTreeMap<&str, BTreeSet<&Metadata>> = BTreeMap::new();
        let sources: Box<dyn Iterator<Item = &BTreeMap<String, Vec<Metadata>>>> = match scope {
            Some(c) => Box::new(all.get(c).into_iter()),
            None => Box::new(all.values()),
        };
        let limit = limit.unwrap_or(usize::MAX);
        for fams in sources {
            let picked: Box<dyn Iterator<Item = (&String, &Vec<Metadata>)>> = match metric {
                Some(m) => Box::new(fams.get_key_value(m).into_iter()),
                // Only the first `limit` names of each commons can be
                // among the first `limit` of the merge.
                None => Box::new(fams.iter().take(limit)),
            };
            for (name, entries) in picked {
                merged.entry(name.as_str()).or_default().extend(entries.iter());
            }
        }
        let per = limit_per_metric.unwrap_or(usize::MAX);
        merged
            .into_iter()
            .take(limit)
            .map(|(name, entries)| (name.to_string(), entries.into_iter().take(per).cloned().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejections(m: &LimitMetrics, commons: &str) -> u64 {
        m.rejections
            .get_or_create(&vec![("limit".into(), LIMIT_NAME.into()), ("commons".into(), commons.into())])
            .get()
    }

    #[test]
    fn records_distinct_metadata_and_answers_queries() {
        let s = MetadataStore::default();
        s.record("a", "up", 2, "Whether the target is up.", "");
        s.record("a", "up", 2, "Whether the target is up.", ""); // duplicate
        s.record("a", "b_total", 1, "B.", "");
        s.record("a", "b_total", 0, "Another sender's idea.", "");
        s.record("a", "", 1, "nameless", "");
        assert_eq!(s.len(), 2);
        let all = s.query_scoped(None, None, None, None);
        assert_eq!(all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b_total", "up"]);
        assert_eq!(all[0].1.len(), 2);
        assert_eq!(all[1].1[0].typ, "gauge");
        assert_eq!(s.query_scoped(None, None, Some(1), None).len(), 1);
        assert_eq!(s.query_scoped(None, None, None, Some(1))[0].1.len(), 1);
        assert_eq!(s.query_scoped(None, Some("up"), None, None).len(), 1);
        assert!(s.query_scoped(None, Some("nope"), None, None).is_empty());
        assert!(s.query_scoped(None, None, Some(0), None).is_empty());
        let j = serde_json::to_value(&all[1].1[0]).expect("json");
        assert_eq!(
            j,
            serde_json::json!({"type": "gauge", "help": "Whether the target is up.", "unit": ""})
        );
    }

    #[test]
    fn a_scope_sees_only_its_commons_and_no_scope_sees_all_merged() {
        let s = MetadataStore::default();
        s.record("alpha", "alpha_secret_total", 1, "Alpha's.", "");
        s.record("alpha", "up", 2, "Up.", "");
        s.record("beta", "up", 2, "Up.", "");
        s.record("beta", "up", 2, "Beta's own words.", "");
        s.record("beta", "beta_total", 1, "Beta's.", "");
        let names = |q: Vec<(String, Vec<Metadata>)>| q.into_iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>();
        assert_eq!(
            names(s.query_scoped(Some("beta"), None, None, None)),
            [("beta_total".to_string(), 1), ("up".to_string(), 2)]
        );
        assert_eq!(
            names(s.query_scoped(Some("alpha"), None, None, None)),
            [("alpha_secret_total".to_string(), 1), ("up".to_string(), 1)]
        );
        assert!(s.query_scoped(Some("beta"), Some("alpha_secret_total"), None, None).is_empty());
        assert!(s.query_scoped(Some("gamma"), None, None, None).is_empty());
        // Unscoped: every commons, the same entry once.
        assert_eq!(
            names(s.query_scoped(None, None, None, None)),
            [
                ("alpha_secret_total".to_string(), 1),
                ("beta_total".to_string(), 1),
                ("up".to_string(), 2)
            ]
        );
        assert_eq!(names(s.query_scoped(None, None, Some(2), None)).len(), 2);
        assert_eq!(names(s.query_scoped(None, Some("up"), None, Some(1))), [("up".to_string(), 1)]);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn families_past_the_limit_are_dropped_per_commons_and_counted() {
        let m = LimitMetrics::default();
        let s = MetadataStore::new(3, m.clone());
        for i in 0..5 {
            s.record("alpha", &format!("f{i}"), 1, "h", "");
        }
        s.record("beta", "g", 1, "h", "");
        assert_eq!(s.query_scoped(Some("alpha"), None, None, None).len(), 3);
        assert_eq!(rejections(&m, "alpha"), 2);
        assert_eq!(rejections(&m, "beta"), 0);
        // Known families still take new entries; beta has its own budget.
        s.record("alpha", "f0", 2, "other", "");
        assert_eq!(s.query_scoped(Some("alpha"), Some("f0"), None, None)[0].1.len(), 2);
        assert_eq!(rejections(&m, "alpha"), 2);
        assert_eq!(s.query_scoped(Some("beta"), None, None, None).len(), 1);
        // A limit of 0 keeps nothing.
        let z = MetadataStore::new(0, m.clone());
        z.record("gamma", "x", 1, "h", "");
        assert!(z.is_empty());
        assert_eq!(rejections(&m, "gamma"), 1);
    }

    #[test]
    fn bounded() {
        let s = MetadataStore::default();
        for i in 0..(MAX_PER_FAMILY + 3) {
            s.record("c", "m", 1, &format!("help {i}"), "");
        }
        let q = s.query_scoped(None, Some("m"), None, None);
        assert_eq!(q[0].1.len(), MAX_PER_FAMILY);
        assert!(q[0].1.iter().all(|m| m.help != "help 0"), "the oldest was replaced");
        s.record("c", "long", 1, &"é".repeat(MAX_HELP), &"u".repeat(1000));
        let long = &s.query_scoped(None, Some("long"), None, None)[0].1[0];
        assert!(long.help.len() <= MAX_HELP && long.help.len() > MAX_HELP - 2);
        assert_eq!(long.unit.len(), MAX_UNIT);
        s.record("c", &"n".repeat(MAX_NAME + 1), 1, "h", "");
        assert_eq!(s.len(), 2);
        assert_eq!(type_name(99), "unknown");
    }
}
