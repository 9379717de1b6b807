//! Per-agent ingest limits that need state: active series per agent,
//! samples per second per agent, and concurrent agent streams. (The
//! stateless ones, labels per series and label lengths, are checked in
//! `validate_series`; batch size where a batch is decoded.)
//!
//! Every limit is exported as `csoc_collector_limit{limit}` and every
//! rejection counted in `csoc_collector_limit_rejections_total{limit,commons}`,
//! so an operator sees both the setting and what it refused.
//!
//! - Active series: the series an agent wrote within the last hour
//!   (`SERIES_IDLE`), tracked by a 64-bit hash of each series' labels. A
//!   batch that would take an agent past `max_series_per_agent` is refused
//!   whole (a final Nack: re-sending it cannot succeed); series the agent
//!   already writes keep being accepted in later batches.
//! - Samples per second: a token bucket per agent holding ten seconds of
//!   the rate. A batch is admitted while the bucket is not empty and then
//!   charged in full (the bucket may go into debt), so a batch larger than
//!   the bucket still passes when the agent has been quiet, and the average
//!   rate holds. Over the rate, a retryable Nack: the agent keeps the batch
//!   and sends it again after its backoff, so nothing is lost.
//! - Concurrent agents: a stream past `max_concurrent_agents` is refused
//!   with `RESOURCE_EXHAUSTED` before anything is read; the agent retries
//!   with backoff.
//!
//! The state is in memory: after a restart, the active-series count of an
//! agent starts from its next batches.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::Limits;
use csoc_common::labels::Labels;

/// How long a series counts as active after its last sample was received.
pub const SERIES_IDLE_SECS: u64 = 3600;

/// The limit metrics.
#[derive(Clone, Default)]
pub struct LimitMetrics {
    /// The configured value of each limit.
    pub limit: Family<Labels, Gauge>,
    /// Rejections by limit and commons.
    pub rejections: Family<Labels, Counter>,
    /// Active series per agent.
    pub active_series: Family<Labels, Gauge>,
}

impl LimitMetrics {
    /// Registers the metrics (under the collector's prefix) and sets the
    /// limit values.
    pub fn new(reg: &mut Registry, limits: &Limits) -> Self {
        let m = LimitMetrics::default();
        reg.register(
            "limit",
            "The configured ingest limits (0 = no limit), by limit name",
            m.limit.clone(),
        );
        reg.register(
            "limit_rejections",
            "Batches, requests and streams refused by an ingest limit, by limit and commons",
            m.rejections.clone(),
        );
        reg.register(
            "agent_active_series",
            "Series each agent wrote within the last hour (what max_series_per_agent counts)",
            m.active_series.clone(),
        );
        for (name, v) in limits.named() {
            m.limit.get_or_create(&vec![("limit".into(), name.into())]).set(v as i64);
        }
        m
    }

    /// Exports the configured value of a limit that is not an ingest limit
    /// (query, HTTP and gRPC server limits), under the same metric.
    pub fn set_limit(&self, limit: &str, value: f64) {
        self.limit.get_or_create(&vec![("limit".into(), limit.into())]).set(value as i64);
    }

    /// Counts one rejection by `limit` for `commons`.
    pub fn rejected(&self, limit: &str, commons: &str) {
        self.rejections
            .get_or_create(&vec![("limit".into(), limit.into()), ("commons".into(), commons.into())])
            .inc();
    }
}

/// A refusal by a limit.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitError {
    /// The limit's name (`max_series_per_agent`, ...).
    pub limit: &'static str,
    /// What happened, naming the limit and its value.
    pub message: String,
    /// Whether sending the same data later can succeed.
    pub retryable: bool,
}

#[derive(Debug)]
struct Usage {
    /// Series hash → unix seconds of its last sample received.
    series: HashMap<u64, u64>,
    /// Sample tokens (negative: debt).
    tokens: f64,
    refilled: Instant,
    pruned: u64,
}

/// The limiter shared by all streams.
#[derive(Debug)]
pub struct Limiter {
    limits: std::sync::RwLock<Limits>,
    agents: Mutex<HashMap<(String, String), Usage>>,
    streams: Arc<AtomicUsize>,
    metrics: LimitMetricsHandle,
}

/// `LimitMetrics` without Debug noise.
#[derive(Clone, Default)]
struct LimitMetricsHandle(LimitMetrics);

impl std::fmt::Debug for LimitMetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LimitMetrics")
    }
}

/// Holds one slot of `max_concurrent_agents` until dropped.
#[derive(Debug)]
pub struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    /// A slot counted in `counter` outside any limiter (test harnesses).
    #[doc(hidden)]
    pub fn unlimited(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        StreamSlot(counter)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The 64-bit hash of a series' labels that the series limit counts by.
/// (Borrowed `(&str, &str)` pairs hash as owned ones do.)
pub fn series_hash<T: Hash>(labels: &[T]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    h.finish()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: Limits, metrics: LimitMetrics) -> Self {
        Limiter {
            limits: std::sync::RwLock::new(limits),
            agents: Mutex::default(),
            streams: Arc::default(),
            metrics: LimitMetricsHandle(metrics),
        }
    }

    /// The limits enforced.
    pub fn limits(&self) -> Limits {
        self.limits.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Enforces `limits` from now on (a reload); usage so far is kept.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// The metrics.
    pub fn metrics(&self) -> &LimitMetrics {
        &self.metrics.0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Usage>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops an agent's state and its `csoc_collector_agent_active_series`
    /// series (the agent registry forgot it).
    pub fn forget(&self, commons: &str, agent: &str) {
        self.lock().remove(&(commons.to_string(), agent.to_string()));
        self.metrics
            .0
            .active_series
            .remove(&vec![("commons".into(), commons.into()), ("agent".into(), agent.into())]);
    }

    /// Takes a stream slot, or says that `max_concurrent_agents` streams
    /// are open.
    pub fn open_stream(&self, commons: &str) -> Result<StreamSlot, LimitError> {
        let max = self.limits().max_concurrent_agents;
        let n = self.streams.fetch_add(1, Ordering::AcqRel);
        let slot = StreamSlot(self.streams.clone());
        if max > 0 && n >= max {
            drop(slot);
            self.metrics.0.rejected("max_concurrent_agents", commons);
            return Err(LimitError {
                limit: "max_concurrent_agents",
                message: format!("{max} agent streams are open, the limit max_concurrent_agents; retry later"),
                retryable: true,
            });
        }
        Ok(slot)
    }

    /// Admits a batch of `samples` samples from agent `(commons, agent)`
    /// whose samples belong to the series hashed in `used` (one entry per
    /// sample; repeats are fine), and records it. Refused, nothing is
    /// recorded.
    pub fn admit(&self, commons: &str, agent: &str, used: &[u64]) -> Result<(), LimitError> {
        let limits = self.limits();
        let max_series = limits.max_series_per_agent;
        let rate = limits.max_samples_per_second as f64;
        if max_series == 0 && rate == 0.0 {
            return Ok(());
        }
        let now = now_secs();
        let mut agents = self.lock();
        let key = (commons.to_string(), agent.to_string());
        let u = agents.entry(key).or_insert_with(|| Usage {
            series: HashMap::new(),
            tokens: rate * 10.0,
            refilled: Instant::now(),
            pruned: now,
        });
        if now >= u.pruned + 60 {
            u.series.retain(|_, last| *last + SERIES_IDLE_SECS >= now);
            u.pruned = now;
        }
        if rate > 0.0 {
            let elapsed = u.refilled.elapsed().as_secs_f64();
            u.refilled = Instant::now();
            u.tokens = (u.tokens + elapsed * rate).min(rate * 10.0);
            if u.tokens <= 0.0 {
                self.metrics.0.rejected("max_samples_per_second", commons);
                return Err(LimitError {
                    limit: "max_samples_per_second",
                    message: format!(
                        "agent {agent:?} is over max_samples_per_second ({}); the batch will be accepted when re-sent later",
                        limits.max_samples_per_second
                    ),
                    retryable: true,
                });
            }
        }
        if max_series > 0 {
            let mut new: Vec<u64> = used.iter().copied().filter(|h| !u.series.contains_key(h)).collect();
            if u.series.len() + new.len() > max_series {
                new.sort_unstable();
                new.dedup();
                if u.series.len() + new.len() > max_series {
                    self.metrics.0.rejected("max_series_per_agent", commons);
                    return Err(LimitError {
                        limit: "max_series_per_agent",
                        message: format!(
                            "agent {agent:?} writes {} active series; this batch adds {} more, over max_series_per_agent {max_series}",
                            u.series.len(),
                            new.len()
                        ),
                        retryable: false,
                    });
                }
            }
        }
        if rate > 0.0 {
            u.tokens -= used.len() as f64;
        }
        if max_series > 0 {
            for h in used {
                u.series.insert(*h, now);
            }
            self.metrics
                .0
                .active_series
                .get_or_create(&vec![("commons".into(), commons.into()), ("agent".into(), agent.into())])
                .set(u.series.len() as i64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(f: impl FnOnce(&mut Limits)) -> Limiter {
        let mut l = Limits::default();
        f(&mut l);
        Limiter::new(l, LimitMetrics::default())
    }

    #[test]
    fn series_limit_counts_distinct_active_series_per_agent() {
        let lim = limiter(|l| {
            l.max_series_per_agent = 3;
            l.max_samples_per_second = 0;
        });
        lim.admit("c", "a", &[1, 2, 1, 2]).expect("two series");
        lim.admit("c", "a", &[1, 2, 3, 3]).expect("three series");
        let e = lim.admit("c", "a", &[1, 4]).expect_err("a fourth");
        assert_eq!(e.limit, "max_series_per_agent");
        assert!(!e.retryable);
        assert!(e.message.contains("max_series_per_agent 3"), "{}", e.message);
        // Nothing of the refused batch was recorded; known series still pass.
        lim.admit("c", "a", &[1, 2, 3]).expect("known series");
        // Another agent has its own count.
        lim.admit("c", "b", &[4, 5, 6]).expect("other agent");
        let m = lim.metrics();
        let rej = m
            .rejections
            .get_or_create(&vec![
                ("limit".into(), "max_series_per_agent".into()),
                ("commons".into(), "c".into()),
            ])
            .get();
        assert_eq!(rej, 1);
    }

    #[test]
    fn rate_limit_allows_a_burst_then_refuses_retryably() {
        let lim = limiter(|l| {
            l.max_series_per_agent = 0;
            l.max_samples_per_second = 100;
        });
        // The bucket holds 1000: one big batch passes (into debt) ...
        lim.admit("c", "a", &[7; 1500]).expect("burst");
        // ... then the agent is over the rate until the debt is paid.
        let e = lim.admit("c", "a", &[7]).expect_err("over the rate");
        assert_eq!(e.limit, "max_samples_per_second");
        assert!(e.retryable);
        lim.admit("c", "b", &[7]).expect("other agent unaffected");
    }

    #[test]
    fn concurrent_streams_are_bounded_and_released() {
        let lim = limiter(|l| l.max_concurrent_agents = 2);
        let a = lim.open_stream("c").expect("1");
        let _b = lim.open_stream("c").expect("2");
        let e = lim.open_stream("c").expect_err("3");
        assert_eq!(e.limit, "max_concurrent_agents");
        drop(a);
        lim.open_stream("c").expect("a slot was released");
    }

    #[test]
    fn a_forgotten_agent_leaves_no_state_and_no_series() {
        let lim = limiter(|l| {
            l.max_series_per_agent = 2;
            l.max_samples_per_second = 0;
        });
        lim.admit("c", "old", &[1, 2]).expect("two series");
        lim.admit("c", "kept", &[1]).expect("one series");
        let key = |a: &str| vec![("commons".to_string(), "c".to_string()), ("agent".to_string(), a.to_string())];
        let mut text = String::new();
        let mut reg = Registry::default();
        reg.register("agent_active_series", "h", lim.metrics().active_series.clone());
        lim.forget("c", "old");
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        assert!(!text.contains(r#"agent="old""#), "{text}");
        assert!(text.contains(r#"agent="kept""#), "{text}");
        // Its series count starts again from zero.
        lim.admit("c", "old", &[3, 4]).expect("a fresh count");
        assert_eq!(lim.metrics().active_series.get_or_create(&key("old")).get(), 2);
    }

    #[test]
    fn zero_means_no_limit() {
        let lim = limiter(|l| {
            l.max_series_per_agent = 0;
            l.max_samples_per_second = 0;
            l.max_concurrent_agents = 0;
        });
        let hashes: Vec<u64> = (0..10_000).collect();
        lim.admit("c", "a", &hashes).expect("no limits");
        let _slots: Vec<_> = (0..100).map(|_| lim.open_stream("c").expect("no limit")).collect();
    }
}
