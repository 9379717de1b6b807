//! The read path (Prometheus's `head_read.go` and `querier.go`): the
//! [`Querier`] of [`Tsdb`] merges what the head holds in memory with the
//! persisted chunks, decoded through the chunk cache.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::params;

use super::head::merge_last_write_wins;
use super::{Labels, Matcher, Querier, Queryable, Series, Tsdb, TsdbError, chunk_cache, chunkenc, sqlite};

impl Queryable for Tsdb {
    fn querier(&self, mint: i64, maxt: i64) -> Box<dyn Querier + '_> {
        Box::new(TsdbQuerier { tsdb: self, mint, maxt })
    }
}

/// The storage's [`Querier`]: the head (memory) merged with the persisted
/// chunks.
struct TsdbQuerier<'a> {
    tsdb: &'a Tsdb,
    mint: i64,
    maxt: i64,
}

impl Querier for TsdbQuerier<'_> {
    fn select(&self, matchers: &[Matcher]) -> Result<Vec<Series>, TsdbError> {
        let ids: Vec<(i64, Arc<Labels>)> = {
            let idx = self.tsdb.read_index();
            idx.select(matchers)
                .into_iter()
                .filter_map(|id| idx.labels(id).map(|l| (id, l)))
                .collect()
        };
        // Memory first, then disk: a chunk persisted in between is then
        // seen twice (harmless), never missed.
        let mut in_memory: HashMap<i64, Vec<(i64, f64)>> = HashMap::with_capacity(ids.len());
        {
            let head = self.tsdb.shared.head.read().unwrap_or_else(|p| p.into_inner());
            for (id, _) in &ids {
                let mut v = Vec::new();
                head.collect(*id, self.mint, self.maxt, &mut v);
                if !v.is_empty() {
                    in_memory.insert(*id, v);
                }
            }
        }
        // (Reading on several cores, each worker with its own connection,
        // measured slower here: allocation and page faults in parallel
        // outweighed the split.)
        let mut out = self.read_series(&ids, &in_memory)?;
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// At chunk granularity, in memory and on disk.
    fn series(&self, matchers: &[Matcher]) -> Result<Vec<Arc<Labels>>, TsdbError> {
        let ids: Vec<(i64, Arc<Labels>)> = {
            let idx = self.tsdb.read_index();
            idx.select(matchers)
                .into_iter()
                .filter_map(|id| idx.labels(id).map(|l| (id, l)))
                .collect()
        };
        let mut in_memory = std::collections::HashSet::new();
        self.tsdb
            .shared
            .head
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .ids_overlapping(self.mint, self.maxt, &mut in_memory);
        let conn = self.tsdb.reader()?;
        let res = (|| -> Result<Vec<Arc<Labels>>, TsdbError> {
            let mut stmt = conn.prepare_cached(sqlite::SERIES_HAS_CHUNK_IN)?;
            let mut out = Vec::new();
            for (id, labels) in ids {
                if in_memory.contains(&id) || stmt.exists(params![id, self.mint, self.maxt])? {
                    out.push(labels);
                }
            }
            Ok(out)
        })();
        self.tsdb.put_reader(conn);
        let mut out = res?;
        out.sort();
        Ok(out)
    }
}

impl TsdbQuerier<'_> {
    /// Reads the samples of `ids` from disk (through the decoded-chunk
    /// cache) and merges in what the head holds.
    fn read_series(&self, ids: &[(i64, Arc<Labels>)], in_memory: &HashMap<i64, Vec<(i64, f64)>>) -> Result<Vec<Series>, TsdbError> {
        let conn = self.tsdb.reader()?;
        let mut out = Vec::with_capacity(ids.len());
        let res = (|| -> Result<(), TsdbError> {
            let mut stmt = conn.prepare_cached(sqlite::SELECT_CHUNKS)?;
            for (id, labels) in ids {
                let id = *id;
                let mut samples: Vec<(i64, f64)> = Vec::new();
                let mut rows = stmt.query(params![id, self.mint, self.maxt])?;
                while let Some(row) = rows.next()? {
                    let data = row
                        .get_ref(0)?
                        .as_blob()
                        .map_err(|e| TsdbError::Corrupt(format!("chunk of series {id}: {e}")))?;
                    let key = chunk_cache::key_of(data);
                    let shared = &self.tsdb.shared;
                    let decoded = match shared.chunk_cache.get(key) {
                        Some(d) => {
                            shared.metrics.chunk_cache_hits.inc();
                            d
                        }
                        None => {
                            shared.metrics.chunk_cache_misses.inc();
                            let d = chunkenc::decode_block(data).map_err(|e| TsdbError::Corrupt(format!("chunk of series {id}: {e}")))?;
                            if !d.windows(2).all(|w| w[0].0 <= w[1].0) {
                                // Not in time order (never written so, but the
                                // format allows it): filter, do not cache.
                                samples.extend(d.into_iter().filter(|p| p.0 >= self.mint && p.0 <= self.maxt));
                                continue;
                            }
                            let d = Arc::new(d);
                            shared.chunk_cache.put(key, d.clone());
                            shared.metrics.chunk_cache_bytes.set(shared.chunk_cache.bytes() as i64);
                            d
                        }
                    };
                    // Samples are in time order within a chunk: copy only the range.
                    let lo = decoded.partition_point(|p| p.0 < self.mint);
                    let hi = decoded.partition_point(|p| p.0 <= self.maxt);
                    if lo < hi {
                        samples.extend_from_slice(&decoded[lo..hi]);
                    }
                }
                if let Some(mem) = in_memory.get(&id) {
                    samples.extend_from_slice(mem);
                }
                if samples.is_empty() {
                    continue;
                }
                merge_last_write_wins(&mut samples);
                out.push(Series {
                    labels: labels.clone(),
                    samples,
                });
            }
            Ok(())
        })();
        self.tsdb.put_reader(conn);
        res?;
        Ok(out)
    }
}
