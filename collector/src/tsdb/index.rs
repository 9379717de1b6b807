//! In-memory label index with interned strings: every distinct label name
//! and value is stored once in a symbol table; a series is a boxed slice of
//! (name, value) symbol pairs in label-name order; postings map a name and
//! value to the sorted ids of the series that have them. Series ids are the
//! storage's (dense, increasing), so appending an id keeps postings sorted.
//!
//! Memory per series is about 8 bytes per label plus its postings entries
//! (4 bytes per label) and a hash-table slot, instead of two owned strings
//! per label.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{Labels, MatchOp, Matcher};

#[derive(Debug, Default)]
struct Symbols {
    map: HashMap<Arc<str>, u32>,
    strs: Vec<Arc<str>>,
}

impl Symbols {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.map.get(s) {
            return i;
        }
        let a: Arc<str> = Arc::from(s);
        let i = self.strs.len() as u32;
        self.strs.push(a.clone());
        self.map.insert(a, i);
        i
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }

    fn str(&self, i: u32) -> &str {
        self.strs.get(i as usize).map(|s| &**s).unwrap_or("")
    }
}

/// A series' labels as (name, value) symbol pairs, in label-name order.
type Pairs = Box<[(u32, u32)]>;

/// Ids sharing one label-set hash (almost always exactly one).
#[derive(Debug)]
enum IdList {
    One(u32),
    Many(Vec<u32>),
}

/// The seed of every label-set hash in this process: random, so that
/// label sets chosen to collide (a hostile writer's) cannot be computed in
/// advance.
static LABEL_HASH: std::sync::LazyLock<foldhash::fast::RandomState> = std::sync::LazyLock::new(foldhash::fast::RandomState::default);

/// The hash `by_hash` is keyed by. In memory only (rebuilt at start), so
/// it is free to change; foldhash rather than SipHash because every
/// remote-write series and every new agent series is looked up by it (a
/// quarter of the receiver's CPU with SipHash).
fn hash_labels<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    use std::hash::BuildHasher;
    let mut h = LABEL_HASH.build_hasher();
    for (k, v) in pairs {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// The label index of all series.
#[derive(Debug, Default)]
pub struct Index {
    syms: Symbols,
    series: Vec<Option<Pairs>>,
    by_hash: HashMap<u64, IdList, foldhash::fast::RandomState>,
    postings: HashMap<u32, HashMap<u32, Vec<u32>>>,
    count: usize,
}

impl Index {
    /// Adds a series (labels sorted by name). Ids must fit in u32.
    pub fn insert(&mut self, id: i64, labels: Arc<Labels>) {
        let Ok(id32) = u32::try_from(id) else { return };
        let pairs: Pairs = labels.iter().map(|(k, v)| (self.syms.intern(k), self.syms.intern(v))).collect();
        for &(k, v) in pairs.iter() {
            let list = self.postings.entry(k).or_default().entry(v).or_default();
            if list.last().is_none_or(|&l| l < id32) {
                list.push(id32);
            } else if let Err(pos) = list.binary_search(&id32) {
                list.insert(pos, id32);
            }
        }
        let h = hash_labels(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match self.by_hash.get_mut(&h) {
            None => {
                self.by_hash.insert(h, IdList::One(id32));
            }
            Some(IdList::One(other)) => {
                let o = *other;
                self.by_hash.insert(h, IdList::Many(vec![o, id32]));
            }
            Some(IdList::Many(v)) => v.push(id32),
        }
        let i = id32 as usize;
        if self.series.len() <= i {
            self.series.resize_with(i + 1, || None);
        }
        if self.series[i].replace(pairs).is_none() {
            self.count += 1;
        }
    }

    fn same<'a>(&self, id: u32, labels: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> bool {
        let Some(Some(pairs)) = self.series.get(id as usize) else {
            return false;
        };
        pairs.len() == labels.len()
            && pairs
                .iter()
                .zip(labels)
                .all(|(&(k, v), (lk, lv))| self.syms.str(k) == lk && self.syms.str(v) == lv)
    }

    /// The id of a label set, if known.
    pub fn id_of(&self, labels: &Labels) -> Option<i64> {
        self.id_of_iter(|| labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The id of a label set given as borrowed pairs sorted by name.
    pub fn id_of_pairs(&self, pairs: &[(&str, &str)]) -> Option<i64> {
        self.id_of_iter(|| pairs.iter().copied())
    }

    fn id_of_iter<'a, I: ExactSizeIterator<Item = (&'a str, &'a str)>>(&self, it: impl Fn() -> I) -> Option<i64> {
        let h = hash_labels(it());
        match self.by_hash.get(&h)? {
            IdList::One(id) => self.same(*id, it()).then_some(i64::from(*id)),
            IdList::Many(ids) => ids.iter().find(|id| self.same(**id, it())).map(|id| i64::from(*id)),
        }
    }

    /// The labels of a series.
    pub fn labels(&self, id: i64) -> Option<Arc<Labels>> {
        let pairs = self.series.get(usize::try_from(id).ok()?)?.as_ref()?;
        Some(Arc::new(
            pairs
                .iter()
                .map(|&(k, v)| (self.syms.str(k).to_string(), self.syms.str(v).to_string()))
                .collect(),
        ))
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.count
    }

    fn value_of(&self, pairs: &[(u32, u32)], name: Option<u32>) -> &str {
        match name {
            None => "",
            Some(n) => pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| self.syms.str(*v)).unwrap_or(""),
        }
    }

    /// Series ids matching every matcher, ascending.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<i64> {
        static EMPTY: Vec<u32> = Vec::new();
        // Start from the smallest postings list of an equality matcher on a
        // non-empty value; otherwise scan every series.
        let mut best: Option<&Vec<u32>> = None;
        for m in matchers {
            if let MatchOp::Equal = m.op {
                if m.value.is_empty() {
                    continue;
                }
                let p = match (self.syms.get(&m.name), self.syms.get(&m.value)) {
                    (Some(k), Some(v)) => self.postings.get(&k).and_then(|vals| vals.get(&v)).unwrap_or(&EMPTY),
                    _ => &EMPTY,
                };
                if best.is_none_or(|b| p.len() < b.len()) {
                    best = Some(p);
                }
            }
        }
        let names: Vec<Option<u32>> = matchers.iter().map(|m| self.syms.get(&m.name)).collect();
        let matches = |id: u32| -> bool {
            let Some(Some(pairs)) = self.series.get(id as usize) else {
                return false;
            };
            matchers.iter().zip(&names).all(|(m, n)| {
                let v = self.value_of(pairs, *n);
                match &m.op {
                    MatchOp::Equal => v == m.value,
                    MatchOp::NotEqual => v != m.value,
                    MatchOp::Re(r) => r.is_match(v),
                    MatchOp::NotRe(r) => !r.is_match(v),
                }
            })
        };
        match best {
            Some(p) => p.iter().copied().filter(|id| matches(*id)).map(i64::from).collect(),
            None => (0..self.series.len() as u32).filter(|id| matches(*id)).map(i64::from).collect(),
        }
    }

    /// All label names, sorted.
    #[cfg(test)]
    pub fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.postings.keys().map(|k| self.syms.str(*k).to_string()).collect();
        v.sort();
        v
    }

    /// All values of label `name`, sorted.
    #[cfg(test)]
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let Some(k) = self.syms.get(name) else { return Vec::new() };
        let mut v: Vec<String> = self
            .postings
            .get(&k)
            .map(|vals| vals.keys().map(|v| self.syms.str(*v).to_string()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Cardinality statistics of the index, as Prometheus's
/// `/api/v1/status/tsdb` reports them: each list holds the `limit` largest
/// entries, largest first (ties by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Number of series.
    pub num_series: usize,
    /// Number of distinct (label name, label value) pairs.
    pub num_label_pairs: usize,
    /// Series per metric name.
    pub series_count_by_metric_name: Vec<(String, u64)>,
    /// Distinct values per label name.
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    /// Bytes of the distinct values per label name.
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    /// Series per `name=value` pair.
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}

/// The `limit` largest entries, largest first, ties by name.
fn top(mut v: Vec<(String, u64)>, limit: usize) -> Vec<(String, u64)> {
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(limit);
    v
}

impl Index {
    /// Cardinality statistics from the postings (read-only).
    pub fn stats(&self, limit: usize) -> IndexStats {
        let mut by_metric = Vec::new();
        let mut values_by_name = Vec::with_capacity(self.postings.len());
        let mut bytes_by_name = Vec::with_capacity(self.postings.len());
        let mut by_pair = Vec::new();
        let mut pairs = 0usize;
        for (&k, vals) in &self.postings {
            let name = self.syms.str(k);
            let mut bytes = 0u64;
            let mut n = 0u64;
            for (&v, ids) in vals {
                if ids.is_empty() {
                    continue;
                }
                n += 1;
                let value = self.syms.str(v);
                bytes += value.len() as u64;
                if name == "__name__" {
                    by_metric.push((value.to_string(), ids.len() as u64));
                }
                by_pair.push((format!("{name}={value}"), ids.len() as u64));
            }
            pairs += n as usize;
            values_by_name.push((name.to_string(), n));
            bytes_by_name.push((name.to_string(), bytes));
        }
        IndexStats {
            num_series: self.count,
            num_label_pairs: pairs,
            series_count_by_metric_name: top(by_metric, limit),
            label_value_count_by_label_name: top(values_by_name, limit),
            memory_in_bytes_by_label_name: top(bytes_by_name, limit),
            series_count_by_label_value_pair: top(by_pair, limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Arc<Labels> {
        Arc::new(csoc_common::labels::from_pairs(pairs))
    }

    #[test]
    fn insert_lookup_select() {
        let mut ix = Index::default();
        let a = l(&[("__name__", "up"), ("job", "a")]);
        let b = l(&[("__name__", "up"), ("job", "b")]);
        let c = l(&[("__name__", "down")]);
        ix.insert(1, a.clone());
        ix.insert(2, b.clone());
        ix.insert(5, c.clone());
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.id_of(&a), Some(1));
        assert_eq!(ix.id_of(&c), Some(5));
        assert_eq!(ix.id_of(&l(&[("__name__", "up")])), None);
        assert_eq!(ix.labels(2).as_deref(), Some(&*b));
        assert_eq!(ix.select(&[Matcher::equal("__name__", "up")]), vec![1, 2]);
        assert_eq!(ix.select(&[Matcher::equal("job", "")]), vec![5], "missing label matches empty");
        assert_eq!(ix.select(&[Matcher::regex("job", "b|z", false).expect("re")]), vec![2]);
        assert_eq!(
            ix.select(&[
                Matcher::regex("__name__", ".+", false).expect("re"),
                Matcher::regex("job", "a", true).expect("re")
            ]),
            vec![2, 5]
        );
        assert_eq!(ix.select(&[Matcher::equal("__name__", "nope")]), Vec::<i64>::new());
        assert_eq!(ix.label_names(), vec!["__name__", "job"]);
        assert_eq!(ix.label_values("job"), vec!["a", "b"]);
        assert!(ix.label_values("nope").is_empty());
    }

    #[test]
    fn stats_count_series_values_and_bytes() {
        let mut ix = Index::default();
        ix.insert(1, l(&[("__name__", "up"), ("job", "a")]));
        ix.insert(2, l(&[("__name__", "up"), ("job", "bb")]));
        ix.insert(3, l(&[("__name__", "down"), ("job", "a")]));
        let st = ix.stats(10);
        assert_eq!(st.num_series, 3);
        assert_eq!(st.num_label_pairs, 4, "__name__=up, __name__=down, job=a, job=bb");
        let s = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect::<Vec<_>>();
        assert_eq!(st.series_count_by_metric_name, s(&[("up", 2), ("down", 1)]));
        assert_eq!(st.label_value_count_by_label_name, s(&[("__name__", 2), ("job", 2)]));
        assert_eq!(st.memory_in_bytes_by_label_name, s(&[("__name__", 6), ("job", 3)]));
        assert_eq!(
            st.series_count_by_label_value_pair,
            s(&[("__name__=up", 2), ("job=a", 2), ("__name__=down", 1), ("job=bb", 1)])
        );
        assert_eq!(ix.stats(1).series_count_by_label_value_pair, s(&[("__name__=up", 2)]));
        assert_eq!(Index::default().stats(10), IndexStats::default());
    }
}
