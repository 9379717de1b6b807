//! A bounded cache of decoded chunks, so that repeated queries (dashboards
//! refresh the same panels) do not decode the same compressed blocks again.
//!
//! Entries are keyed by the chunk's *content* (its length and a 64-bit hash
//! of its bytes), not by its row id: compaction deletes rows and SQLite may
//! reuse their ids, while equal bytes always decode to equal samples. A
//! stale entry can therefore never be served. Eviction is FIFO by insertion,
//! bounded by the decoded size in bytes; the budget is `--storage.chunk-cache-size`
//! (0 disables it).

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::sync::{Arc, Mutex};

/// Decoded samples of one chunk.
pub type Decoded = Arc<Vec<(i64, f64)>>;

const SAMPLE_BYTES: usize = 16;

#[derive(Default)]
struct Inner {
    map: HashMap<(usize, u64), Decoded>,
    order: VecDeque<(usize, u64)>,
    bytes: usize,
}

/// The cache. Shared by all queriers of a storage.
pub struct ChunkCache {
    budget: usize,
    inner: Mutex<Inner>,
}

/// The content key of a chunk's bytes.
pub fn key_of(data: &[u8]) -> (usize, u64) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(data);
    (data.len(), h.finish())
}

impl ChunkCache {
    /// A cache holding at most `budget` bytes of decoded samples.
    pub fn new(budget: usize) -> Self {
        ChunkCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The decoded samples for `key`, if cached.
    pub fn get(&self, key: (usize, u64)) -> Option<Decoded> {
        if self.budget == 0 {
            return None;
        }
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.map.get(&key).cloned()
    }

    /// Caches decoded samples, evicting the oldest entries over budget.
    pub fn put(&self, key: (usize, u64), samples: Decoded) {
        let size = samples.len() * SAMPLE_BYTES;
        if size > self.budget / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.map.insert(key, samples).is_some() {
            return;
        }
        inner.order.push_back(key);
        inner.bytes += size;
        while inner.bytes > self.budget {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(v) = inner.map.remove(&old) {
                inner.bytes -= v.len() * SAMPLE_BYTES;
            }
        }
    }

    /// Bytes of decoded samples held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keyed_by_content() {
        let c = ChunkCache::new(64 * SAMPLE_BYTES);
        let a = key_of(b"chunk a");
        let b = key_of(b"chunk b");
        assert_ne!(a, b);
        c.put(a, Arc::new(vec![(1, 1.0); 10]));
        assert_eq!(c.get(a).map(|v| v.len()), Some(10));
        assert!(c.get(b).is_none());
        for i in 0..20u8 {
            c.put(key_of(&[i; 3]), Arc::new(vec![(0, 0.0); 10]));
        }
        assert!(c.bytes() <= 64 * SAMPLE_BYTES, "{}", c.bytes());
        assert!(c.get(a).is_none(), "oldest evicted");
        let off = ChunkCache::new(0);
        off.put(a, Arc::new(vec![(1, 1.0)]));
        assert!(off.get(a).is_none());
    }
}
