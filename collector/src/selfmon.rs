//! The collector stores its own metrics (what `/metrics` shows) every
//! `self_scrape_interval`, with `job="csoc-collector"` and
//! `instance=<http address>`, as a Prometheus scraping itself would. This
//! is what lets a rule page when an agent falls silent
//! (`csoc_collector_agent_last_seen_timestamp_seconds`) and what the
//! collector's own dashboard reads. At start, each agent's last contact is
//! read back from storage, so an agent that never returns after a restart
//! still pages.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::metrics::IngestMetrics;
use crate::tsdb::{Appendable, Labels, Matcher, Queryable};
use csoc_common::time::now_ms;

/// The metric that records each agent's last contact.
pub const LAST_SEEN: &str = "csoc_collector_agent_last_seen_timestamp_seconds";

/// Stores one round of the registry's samples at `t`.
pub async fn scrape_once(db: &dyn Appendable, registry: &Registry, instance: &str, t: i64) -> Result<usize, String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).map_err(|e| e.to_string())?;
    // The registry writes OpenMetrics text; the agent's scrape parser reads it.
    let exposition = csoc_common::exposition::parse(&text, csoc_common::exposition::Format::OpenMetrics)
        .map_err(|e| format!("parsing the collector's own metrics: {e}"))?;
    let mut app = db.appender();
    let mut n = 0;
    for s in exposition.samples {
        let mut l: Labels = s.labels;
        l.retain(|(k, _)| k != "job" && k != "instance");
        l.push(("job".into(), "csoc-collector".into()));
        l.push(("instance".into(), instance.to_string()));
        l.sort();
        app.append(Arc::new(l), t, s.value);
        n += 1;
    }
    app.commit().await.map_err(|e| e.to_string())?;
    Ok(n)
}

/// Runs the self-scrape until `stop`.
pub async fn run(db: Arc<dyn Appendable>, registry: Arc<Registry>, instance: String, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = scrape_once(db.as_ref(), &registry, &instance, now_ms()).await {
            tracing::warn!(error = %e, "storing the collector's own metrics failed");
        }
    }
}

/// Sets each agent's last contact from what storage holds (the last day),
/// so that agents that do not come back after a restart keep their last
/// contact time and still trip an "agent silent" rule.
pub fn seed_last_seen(db: &dyn Queryable, ingest: &IngestMetrics) -> usize {
    let now = now_ms();
    let q = db.querier(now - 86_400_000, now);
    let Ok(series) = q.select(&[Matcher::equal("__name__", LAST_SEEN)]) else {
        return 0;
    };
    let mut latest: std::collections::HashMap<(String, String), f64> = std::collections::HashMap::new();
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
    for ((c, a), v) in &latest {
        let l = vec![("commons".to_string(), c.clone()), ("agent".to_string(), a.clone())];
        let g = ingest.agent_last_seen.get_or_create(&l);
        if g.get() < *v {
            g.set(*v);
        }
    }
    latest.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_registrys_metrics_are_stored_with_job_and_instance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::default();
        let db = crate::tsdb::Tsdb::open(dir.path(), &crate::tsdb::TsdbOptions::default(), &mut reg).expect("open");
        let metrics = crate::metrics::CollectorMetrics::new(reg.sub_registry_with_prefix("csoc_collector"));
        metrics.ingest.seen("alpha", "agent-1");
        let n = scrape_once(&db, &reg, "127.0.0.1:9300", 1_000).await.expect("scrape");
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
}
