//! In-memory label index: series id → labels, and postings
//! (label name → value → series ids) for selecting by matchers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{Labels, MatchOp, Matcher};

/// The label index of all series.
#[derive(Debug, Default)]
pub struct Index {
    series: HashMap<i64, Arc<Labels>>,
    by_labels: HashMap<Arc<Labels>, i64>,
    postings: BTreeMap<String, BTreeMap<String, BTreeSet<i64>>>,
}

impl Index {
    /// Adds a series.
    pub fn insert(&mut self, id: i64, labels: Arc<Labels>) {
        for (k, v) in labels.iter() {
            self.postings.entry(k.clone()).or_default().entry(v.clone()).or_default().insert(id);
        }
        self.by_labels.insert(labels.clone(), id);
        self.series.insert(id, labels);
    }

    /// The id of a label set, if known.
    pub fn id_of(&self, labels: &Labels) -> Option<i64> {
        self.by_labels.get(labels).copied()
    }

    /// The labels of a series.
    pub fn labels(&self, id: i64) -> Option<&Arc<Labels>> {
        self.series.get(&id)
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when there are no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Series ids matching every matcher, sorted by id.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<i64> {
        // Start from the smallest postings list of an equality matcher on a
        // non-empty value; otherwise scan every series.
        let mut best: Option<&BTreeSet<i64>> = None;
        let empty = BTreeSet::new();
        for m in matchers {
            if let MatchOp::Equal = m.op {
                if m.value.is_empty() {
                    continue;
                }
                let p = self.postings.get(&m.name).and_then(|vals| vals.get(&m.value)).unwrap_or(&empty);
                if best.is_none_or(|b| p.len() < b.len()) {
                    best = Some(p);
                }
            }
        }
        let candidates: Box<dyn Iterator<Item = i64> + '_> = match best {
            Some(p) => Box::new(p.iter().copied()),
            None => {
                let mut all: Vec<i64> = self.series.keys().copied().collect();
                all.sort_unstable();
                Box::new(all.into_iter())
            }
        };
        candidates
            .filter(|id| self.series.get(id).is_some_and(|l| matchers.iter().all(|m| m.matches(l))))
            .collect()
    }

    /// All label names, sorted.
    pub fn label_names(&self) -> Vec<String> {
        self.postings.keys().cloned().collect()
    }

    /// All values of label `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.postings.get(name).map(|v| v.keys().cloned().collect()).unwrap_or_default()
    }
}
