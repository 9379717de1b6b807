//! A bounded cache of decoded chunks, so that repeated queries (dashboards
//! refresh the same panels) do not decode the same compressed blocks again.
//!
//! Entries are keyed by the chunk's *content*, not by its row id: compaction
//! deletes rows and SQLite may reuse their ids, while equal bytes always
//! decode to equal samples. The key is the length and a 64-bit foldhash of
//! the bytes, seeded at random per cache; each entry also keeps the bytes it
//! was decoded from, and a lookup compares them, so a hash collision is a
//! miss, never a wrong answer. (The hash used to be SipHash with a fixed
//! key: about 1 µs per 2 KiB chunk, 7 % of an instant query over 560 series,
//! and collisions were only unlikely.) Eviction is FIFO by insertion, bounded
//! by the decoded size plus the kept bytes; the budget is
//! `--storage.chunk-cache-size` (0 disables it).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

/// Decoded samples of one chunk.
pub type Decoded = Arc<Vec<(i64, f64)>>;

const SAMPLE_BYTES: usize = 16;

/// A chunk's content key: its length and a hash of its bytes.
pub type Key = (usize, u64);

struct Entry {
    /// The bytes the samples were decoded from.
    blob: Box<[u8]>,
    samples: Decoded,
    /// Whether the samples include staleness markers.
    stale: bool,
}

impl Entry {
    fn size(&self) -> usize {
        self.samples.len() * SAMPLE_BYTES + self.blob.len()
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    order: VecDeque<Key>,
    bytes: usize,
}

/// The cache. Shared by all queriers of a storage.
pub struct ChunkCache {
    budget: usize,
    seed: foldhash::quality::RandomState,
    inner: Mutex<Inner>,
}

impl ChunkCache {
    /// A cache holding at most `budget` bytes of decoded samples (and the
    /// chunks they came from).
    pub fn new(budget: usize) -> Self {
        ChunkCache {
            budget,
            seed: foldhash::quality::RandomState::default(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The content key of a chunk's bytes.
    pub fn key_of(&self, data: &[u8]) -> Key {
        (data.len(), self.seed.hash_one(data))
    }

    /// The decoded samples of `data` (whose key is `key`), if cached, and
    /// whether they include staleness markers.
    pub fn get(&self, key: Key, data: &[u8]) -> Option<(Decoded, bool)> {
        if self.budget == 0 {
            return None;
        }
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .map
            .get(&key)
            .filter(|e| *e.blob == *data)
            .map(|e| (e.samples.clone(), e.stale))
    }

    /// Caches the samples decoded from `data` (`stale`: they include
    /// staleness markers), evicting the oldest entries over budget. An entry
    /// under the same key with other bytes (a hash collision) is replaced.
    pub fn put(&self, key: Key, data: &[u8], samples: Decoded, stale: bool) {
        let e = Entry {
            blob: data.into(),
            samples,
            stale,
        };
        let size = e.size();
        if size > self.budget / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = inner.map.insert(key, e) {
            // Already queued for eviction under this key.
            inner.bytes = inner.bytes - old.size() + size;
        } else {
            inner.order.push_back(key);
            inner.bytes += size;
        }
        while inner.bytes > self.budget {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(e) = inner.map.remove(&old) {
                inner.bytes -= e.size();
            }
        }
    }

    /// Bytes held (decoded samples and the chunks they came from).
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
        let a = c.key_of(b"chunk a");
        let b = c.key_of(b"chunk b");
        assert_ne!(a, b);
        c.put(a, b"chunk a", Arc::new(vec![(1, 1.0); 10]), true);
        assert_eq!(c.get(a, b"chunk a").map(|(v, stale)| (v.len(), stale)), Some((10, true)));
        assert!(c.get(b, b"chunk b").is_none());
        for i in 0..20u8 {
            c.put(c.key_of(&[i; 3]), &[i; 3], Arc::new(vec![(0, 0.0); 10]), false);
        }
        assert!(c.bytes() <= 64 * SAMPLE_BYTES, "{}", c.bytes());
        assert!(c.get(a, b"chunk a").is_none(), "oldest evicted");
        let off = ChunkCache::new(0);
        off.put(a, b"chunk a", Arc::new(vec![(1, 1.0)]), false);
        assert!(off.get(a, b"chunk a").is_none());
    }

    #[test]
    fn a_colliding_key_is_a_miss_and_replacing_it_keeps_the_count() {
        let c = ChunkCache::new(1 << 20);
        let k = c.key_of(b"chunk a");
        c.put(k, b"chunk a", Arc::new(vec![(1, 1.0); 4]), false);
        // Other bytes under the same key (as a hash collision would give).
        assert!(c.get(k, b"chunk b").is_none(), "the kept bytes decide");
        assert_eq!(c.get(k, b"chunk a").map(|(v, _)| v[0]), Some((1, 1.0)));
        c.put(k, b"chunk b", Arc::new(vec![(2, 2.0); 4]), false);
        assert!(c.get(k, b"chunk a").is_none());
        assert_eq!(c.get(k, b"chunk b").map(|(v, _)| v[0]), Some((2, 2.0)));
        assert_eq!(c.bytes(), 4 * SAMPLE_BYTES + 7, "one entry accounted once");
        // Two caches hash with different seeds; one cache is stable.
        let d = ChunkCache::new(1 << 20);
        assert_eq!(c.key_of(b"xyz"), c.key_of(b"xyz"));
        assert_ne!(c.key_of(b"some chunk bytes"), d.key_of(b"some chunk bytes"));
    }
}
