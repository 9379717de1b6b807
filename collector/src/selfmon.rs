//! The collector stores its own metrics (what `/metrics` shows) every
//! `self_scrape_interval`, with `job="csoc-collector"` and
//! `instance=<http address>`, as a Prometheus scraping itself would. This
//! is what lets a rule page when an agent falls silent
//! (`csoc_collector_agent_last_seen_timestamp_seconds`) and what the
//! collector's own dashboard reads. At start, each agent's last contact is
//! restored by the agent registry (`crate::agents`), so an agent that never
//! returns after a restart still pages, until it is forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::promql::notation::stale_nan;
use crate::tsdb::{Appendable, Labels, Matcher, Queryable};
use csoc_common::time::now_ms;

/// The metric that records each agent's last contact.
pub const LAST_SEEN: &str = "csoc_collector_agent_last_seen_timestamp_seconds";

/// The self-scrape: stores the registry's samples and, as Prometheus's
/// scrape loop does, a staleness marker for every series of the previous
/// round that is gone (an agent forgotten or removed: its last-seen series
/// ends at once instead of lingering for the lookback delta).
#[derive(Debug, Default)]
pub struct SelfScrape {
    previous: HashSet<Arc<Labels>>,
}

impl SelfScrape {
    /// Stores one round of the registry's samples at `t`; returns how many
    /// samples (staleness markers included) were stored.
    pub async fn scrape_once(&mut self, db: &dyn Appendable, registry: &Registry, instance: &str, t: i64) -> Result<usize, String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).map_err(|e| e.to_string())?;
        // The registry writes OpenMetrics text; the agent's scrape parser reads it.
        let exposition = csoc_common::exposition::parse(&text, csoc_common::exposition::Format::OpenMetrics)
            .map_err(|e| format!("parsing the collector's own metrics: {e}"))?;
        let mut app = db.appender();
        let mut current = HashSet::with_capacity(exposition.samples.len());
        for s in exposition.samples {
            let mut l: Labels = s.labels;
            l.retain(|(k, _)| k != "job" && k != "instance");
            l.push(("job".into(), "csoc-collector".into()));
            l.push(("instance".into(), instance.to_string()));
            l.sort();
            let l = Arc::new(l);
            app.append(l.clone(), t, s.value);
            current.insert(l);
        }
        let mut n = current.len();
        for gone in self.previous.difference(&current) {
            app.append(gone.clone(), t, stale_nan());
            n += 1;
        }
        app.commit().await.map_err(|e| e.to_string())?;
        self.previous = current;
        Ok(n)
    }
}

/// Runs the self-scrape until `stop`, continuing `scrape` (whose first
/// round start-up may already have stored).
pub async fn run(
    mut scrape: SelfScrape,
    db: Arc<dyn Appendable>,
    registry: Arc<Registry>,
    instance: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = scrape.scrape_once(db.as_ref(), &registry, &instance, now_ms()).await {
            tracing::warn!(error = %e, "storing the collector's own metrics failed");
        }
    }
}

/// The latest last-contact value (Unix seconds) that storage holds, since
/// `mint` (ms), for each (commons, agent): what the agent registry is
/// restored from at start (`crate::agents`).
pub fn last_seen_in_storage(db: &dyn Queryable, mint: i64) -> HashMap<(String, String), f64> {
    let q = db.querier(mint, i64::MAX);
    let Ok(series) = q.select(&[Matcher::equal("__name__", LAST_SEEN)]) else {
        return HashMap::new();
    };
    let mut latest: HashMap<(String, String), f64> = HashMap::new();
    for s in series {
        let get = |k: &str| s.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (Some(c), Some(a)) = (get("commons"), get("agent")) else {
            continue;
        };
        if let Some(v) = s.samples.iter().rev().map(|p| p.1).find(|v| v.is_finite()) {
            let e = latest.entry((c, a)).or_insert(v);
            *e = e.max(v);
        }
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, crate::tsdb::Tsdb, Registry) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::default();
        let db = crate::tsdb::Tsdb::open(dir.path(), &crate::tsdb::TsdbOptions::default(), &mut reg).expect("open");
        (dir, db, reg)
    }

    #[tokio::test]
    async fn the_registrys_metrics_are_stored_with_job_and_instance() {
        let (_dir, db, mut reg) = open();
        let metrics = crate::metrics::CollectorMetrics::new(reg.sub_registry_with_prefix("csoc_collector"));
        metrics.ingest.seen("alpha", "agent-1");
        let n = SelfScrape::default()
            .scrape_once(&db, &reg, "127.0.0.1:9300", 1_000)
            .await
            .expect("scrape");
        assert!(n > 0);
        let got = db
            .querier(0, 2_000)
            .select(&[Matcher::equal("__name__", LAST_SEEN), Matcher::equal("commons", "alpha")])
            .expect("select");
        assert_eq!(got.len(), 1, "{got:?}");
        let l = &got[0].labels;
        assert!(l.contains(&("job".to_string(), "csoc-collector".to_string())), "{l:?}");
        assert!(l.contains(&("instance".to_string(), "127.0.0.1:9300".to_string())), "{l:?}");
        assert!(l.contains(&("agent".to_string(), "agent-1".to_string())), "{l:?}");
        assert!(got[0].samples[0].1 > 1.0e9, "a Unix time");
    }

    #[tokio::test]
    async fn a_series_gone_from_the_registry_gets_a_staleness_marker_once() {
        let (_dir, db, mut reg) = open();
        let metrics = crate::metrics::CollectorMetrics::new(reg.sub_registry_with_prefix("csoc_collector"));
        metrics.ingest.seen("alpha", "old-pod");
        metrics.ingest.seen("alpha", "alpha-agent");
        let mut scrape = SelfScrape::default();
        scrape.scrape_once(&db, &reg, "c:9300", 1_000).await.expect("scrape 1");
        metrics
            .ingest
            .agent_last_seen
            .remove(&vec![("commons".into(), "alpha".into()), ("agent".into(), "old-pod".into())]);
        scrape.scrape_once(&db, &reg, "c:9300", 2_000).await.expect("scrape 2");
        scrape.scrape_once(&db, &reg, "c:9300", 3_000).await.expect("scrape 3");
        let q = db.querier(0, 4_000);
        let samples = |agent: &str| {
            let got = q
                .select(&[Matcher::equal("__name__", LAST_SEEN), Matcher::equal("agent", agent)])
                .expect("select");
            assert_eq!(got.len(), 1, "{got:?}");
            got[0].samples.clone()
        };
        let old = samples("old-pod");
        assert_eq!(old.len(), 2, "a value, then one marker: {old:?}");
        assert_eq!(old[1].0, 2_000);
        assert_eq!(old[1].1.to_bits(), stale_nan().to_bits(), "{old:?}");
        let kept = samples("alpha-agent");
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(kept.iter().all(|(_, v)| v.is_finite()), "{kept:?}");
    }

    #[tokio::test]
    async fn the_last_contact_is_read_back_from_storage() {
        let (_dir, db, mut reg) = open();
        let metrics = crate::metrics::CollectorMetrics::new(reg.sub_registry_with_prefix("csoc_collector"));
        let key = vec![
            ("commons".to_string(), "alpha".to_string()),
            ("agent".to_string(), "a1".to_string()),
        ];
        let mut scrape = SelfScrape::default();
        for (t, v) in [(1_000, 100.0), (2_000, 200.0)] {
            metrics.ingest.agent_last_seen.get_or_create(&key).set(v);
            scrape.scrape_once(&db, &reg, "c:9300", t).await.expect("scrape");
        }
        let got = last_seen_in_storage(&db, 0);
        assert_eq!(got.get(&("alpha".to_string(), "a1".to_string())), Some(&200.0), "{got:?}");
        assert!(last_seen_in_storage(&db, 5_000).is_empty(), "nothing since 5s");
    }
}
