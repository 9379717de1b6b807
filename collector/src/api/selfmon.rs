//! `GET /api/v1/targets` and `GET /api/v1/status/walreplay`, in
//! Prometheus's shapes.
//!
//! **Targets.** The collector scrapes nothing itself: its agents do, and
//! what it knows of their targets is what they send. So the targets are
//! built from storage, scoped to the caller's commons like every read:
//!
//! - each `up` series (one per agent scrape target: `commons`, `job`,
//!   `instance` and the target's labels) with a sample in the last
//!   [`TARGET_WINDOW_MS`] is an active target; `lastScrapeDuration` comes
//!   from the `scrape_duration_seconds` series with the same labels;
//! - each Gen3 probe (`gen3_service_up{commons,job,service}`, with
//!   `gen3_probe_duration_seconds` and `gen3_probe_http_status_code`) is an
//!   active target too, in the probe job's scrape pool.
//!
//! `health` is `up` (value 1) or `down`; `lastScrape` is the last
//! sample's time; `scrapeInterval` the spacing of the last two samples.
//! A target whose last sample is a staleness marker (the agent stopped
//! scraping it) is not listed. What the collector cannot know is left
//! empty, not guessed: `scrapeUrl` and `globalUrl` (the agent builds the
//! URL and does not send it), `discoveredLabels` beyond `__address__` and
//! `job`, the agent's error text for a failed scrape (`lastError` says the
//! scrape failed and where to look; for a probe, the HTTP status), and
//! `droppedTargets` (always empty: targets dropped by relabelling never
//! leave the agent). `state` (`active`, `dropped`, `any`) and `scrapePool`
//! filter as in Prometheus.
//!
//! **WAL replay.** `{min, max, current}`: Prometheus counts WAL segments;
//! here the WAL is records of the database, so `min` is 0, `max` the
//! records to replay and `current` those replayed (equal once open). Also
//! served while the storage opens (`startup.rs`).

use std::collections::{BTreeMap, HashMap};

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Value as Json, json};

use super::access::{Access, Scoped};
use super::{ApiError, AppState, Params, blocking, success};
use crate::tsdb::{Labels, Matcher, Queryable, ReplaySnapshot, Series};

/// How far back a target's last sample may be to list it (ms).
pub const TARGET_WINDOW_MS: i64 = 10 * 60 * 1000;

/// The `walreplay` answer.
pub fn walreplay_json(s: &ReplaySnapshot) -> Json {
    let current = match s.phase {
        crate::tsdb::ReplayPhase::Done => s.records_total.max(s.records_done),
        _ => s.records_done,
    };
    json!({ "min": 0, "max": s.records_total.max(current), "current": current })
}

/// `GET /api/v1/status/walreplay`.
pub async fn walreplay(State(st): State<AppState>) -> Response {
    let snap = st.status.replay.as_ref().map(|p| p.snapshot()).unwrap_or(ReplaySnapshot {
        phase: crate::tsdb::ReplayPhase::Done,
        records_total: 0,
        records_done: 0,
        samples: 0,
        elapsed: std::time::Duration::ZERO,
    });
    success(walreplay_json(&snap))
}

/// `GET /api/v1/targets[?state=active|dropped|any][&scrapePool=<job>]`.
pub async fn targets(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let state = p.get("state").unwrap_or("any").to_ascii_lowercase();
    if !matches!(state.as_str(), "" | "any" | "active" | "dropped") {
        return Err(ApiError::BadData(format!(
            "invalid parameter \"state\": {state:?} (active, dropped or any)"
        )));
    }
    let pool = p.get("scrapePool").filter(|s| !s.is_empty()).map(str::to_string);
    let now = csoc_common::time::now_ms();
    let storage = st.storage.clone();
    let active = if state == "dropped" {
        Vec::new()
    } else {
        blocking(move || {
            let scoped = Scoped::new(storage.as_ref(), &access);
            active_targets(&scoped, now, pool.as_deref()).map_err(ApiError::from)
        })
        .await?
    };
    let mut data = serde_json::Map::new();
    if state != "dropped" {
        data.insert("activeTargets".into(), Json::Array(active));
    }
    if state != "active" {
        data.insert("droppedTargets".into(), json!([]));
        data.insert("droppedTargetCounts".into(), json!({}));
    }
    Ok(success(Json::Object(data)))
}

fn key_without_name(l: &Labels) -> Vec<(String, String)> {
    l.iter().filter(|(k, _)| k != "__name__").cloned().collect()
}

fn last_real(s: &Series) -> Option<(i64, f64)> {
    let &(t, v) = s.samples.last()?;
    (!csoc_proto::is_stale_nan(v)).then_some((t, v))
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn interval(s: &Series) -> String {
    let n = s.samples.len();
    if n < 2 {
        return String::new();
    }
    let d = s.samples[n - 1].0 - s.samples[n - 2].0;
    if d <= 0 {
        return String::new();
    }
    csoc_common::duration::format_duration_ms(d)
}

fn label<'a>(l: &'a [(String, String)], name: &str) -> &'a str {
    l.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// The active targets: agents' scrape targets and Gen3 probes.
fn active_targets(db: &dyn Queryable, now: i64, pool: Option<&str>) -> Result<Vec<Json>, crate::tsdb::TsdbError> {
    let q = db.querier(now - TARGET_WINDOW_MS, now);
    let mut by_pool: Vec<Json> = Vec::new();
    let select = |name: &str| -> Result<Vec<Series>, crate::tsdb::TsdbError> {
        let mut m = vec![Matcher::equal("__name__", name)];
        if let Some(p) = pool {
            m.push(Matcher::equal("job", p));
        }
        q.select(&m)
    };
    let last_values = |name: &str| -> Result<HashMap<Vec<(String, String)>, f64>, crate::tsdb::TsdbError> {
        Ok(select(name)?
            .iter()
            .filter_map(|s| last_real(s).map(|(_, v)| (key_without_name(&s.labels), v)))
            .collect())
    };
    // Agents' scrape targets.
    let durations = last_values("scrape_duration_seconds")?;
    for s in select("up")? {
        let Some((t, v)) = last_real(&s) else { continue };
        let labels = key_without_name(&s.labels);
        let up = v == 1.0;
        let job = label(&labels, "job").to_string();
        let instance = label(&labels, "instance").to_string();
        by_pool.push(target_json(
            &labels,
            &[("__address__", instance.as_str()), ("job", job.as_str())],
            &job,
            if up { "up" } else { "down" },
            if up {
                String::new()
            } else {
                "scrape failed (up == 0); the agent's log and csoc_agent_source_errors_total{source=\"scrape\"} have the reason".into()
            },
            t,
            durations.get(&labels).copied().unwrap_or(0.0),
            &interval(&s),
        ));
    }
    // Gen3 probes.
    let durations = last_values("gen3_probe_duration_seconds")?;
    let codes = last_values("gen3_probe_http_status_code")?;
    for s in select("gen3_service_up")? {
        let Some((t, v)) = last_real(&s) else { continue };
        let labels = key_without_name(&s.labels);
        let up = v == 1.0;
        let job = label(&labels, "job").to_string();
        let service = label(&labels, "service").to_string();
        let err = if up {
            String::new()
        } else {
            match codes.get(&labels).copied() {
                Some(c) if c > 0.0 => format!("probe of {service} failed: HTTP status {c}"),
                _ => format!("probe of {service} failed: no HTTP response"),
            }
        };
        by_pool.push(target_json(
            &labels,
            &[("__address__", service.as_str()), ("job", job.as_str())],
            &job,
            if up { "up" } else { "down" },
            err,
            t,
            durations.get(&labels).copied().unwrap_or(0.0),
            &interval(&s),
        ));
    }
    Ok(by_pool)
}

#[allow(clippy::too_many_arguments)]
fn target_json(
    labels: &[(String, String)],
    discovered: &[(&str, &str)],
    pool: &str,
    health: &str,
    last_error: String,
    last_scrape_ms: i64,
    duration: f64,
    interval: &str,
) -> Json {
    let labels: BTreeMap<&str, &str> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let discovered: BTreeMap<&str, &str> = discovered.iter().copied().collect();
    json!({
        "discoveredLabels": discovered,
        "labels": labels,
        "scrapePool": pool,
        "scrapeUrl": "",
        "globalUrl": "",
        "lastError": last_error,
        "lastScrape": rfc3339(last_scrape_ms),
        "lastScrapeDuration": duration,
        "health": health,
        "scrapeInterval": interval,
        "scrapeTimeout": "",
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::tsdb::{Tsdb, TsdbOptions};

    fn l(pairs: &[(&str, &str)]) -> Arc<Labels> {
        let mut v: Labels = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        v.sort();
        Arc::new(v)
    }

    #[tokio::test]
    async fn targets_from_up_and_probes_scoped_with_health_and_duration() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = Tsdb::open(d.path(), &TsdbOptions::default(), &mut Registry::default()).expect("open");
        let now = csoc_common::time::now_ms();
        let mut a = db.appender();
        let up_a = l(&[("__name__", "up"), ("commons", "a"), ("job", "node"), ("instance", "h:9100")]);
        let dur_a = l(&[
            ("__name__", "scrape_duration_seconds"),
            ("commons", "a"),
            ("job", "node"),
            ("instance", "h:9100"),
        ]);
        let up_b = l(&[("__name__", "up"), ("commons", "b"), ("job", "fence"), ("instance", "f:80")]);
        let gone = l(&[("__name__", "up"), ("commons", "a"), ("job", "old"), ("instance", "x:1")]);
        let probe = l(&[
            ("__name__", "gen3_service_up"),
            ("commons", "a"),
            ("job", "gen3_status"),
            ("service", "fence"),
        ]);
        let code = l(&[
            ("__name__", "gen3_probe_http_status_code"),
            ("commons", "a"),
            ("job", "gen3_status"),
            ("service", "fence"),
        ]);
        a.append(up_a.clone(), now - 30_000, 1.0);
        a.append(up_a, now - 15_000, 1.0);
        a.append(dur_a, now - 15_000, 0.25);
        a.append(up_b, now - 15_000, 0.0);
        a.append(gone.clone(), now - 30_000, 1.0);
        a.append(gone, now - 15_000, f64::from_bits(csoc_proto::STALE_NAN_BITS));
        a.append(probe, now - 10_000, 0.0);
        a.append(code, now - 10_000, 503.0);
        a.commit().await.expect("commit");

        let all = active_targets(&db, now, None).expect("targets");
        assert_eq!(all.len(), 3, "the stale target is gone: {all:?}");
        let node = all.iter().find(|t| t["scrapePool"] == "node").expect("node");
        assert_eq!(node["health"], "up");
        assert_eq!(node["lastScrapeDuration"], json!(0.25));
        assert_eq!(node["scrapeInterval"], "15s");
        assert_eq!(node["labels"]["instance"], "h:9100");
        assert_eq!(node["discoveredLabels"]["__address__"], "h:9100");
        assert_eq!(node["lastError"], "");
        let fence = all.iter().find(|t| t["scrapePool"] == "fence").expect("fence");
        assert_eq!(fence["health"], "down");
        assert!(fence["lastError"].as_str().is_some_and(|e| e.contains("up == 0")));
        let p = all.iter().find(|t| t["scrapePool"] == "gen3_status").expect("probe");
        assert_eq!(p["lastError"], "probe of fence failed: HTTP status 503");
        assert_eq!(p["labels"]["service"], "fence");

        // A token scoped to commons b sees b's target only; a pool filter.
        let scoped = crate::auth::Principal {
            name: "b".into(),
            role: crate::auth::Role::Read,
            commons: Some("b".into()),
        };
        let access = Access {
            principal: Some(Arc::new(scoped)),
        };
        let only_b = active_targets(&Scoped::new(&db, &access), now, None).expect("targets");
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0]["labels"]["commons"], "b");
        assert_eq!(active_targets(&db, now, Some("node")).expect("pool").len(), 1);
        db.close();
    }

    #[test]
    fn walreplay_shape() {
        let s = ReplaySnapshot {
            phase: crate::tsdb::ReplayPhase::Replaying,
            records_total: 10,
            records_done: 4,
            samples: 1,
            elapsed: std::time::Duration::ZERO,
        };
        assert_eq!(walreplay_json(&s), json!({"min": 0, "max": 10, "current": 4}));
        let done = ReplaySnapshot {
            phase: crate::tsdb::ReplayPhase::Done,
            records_done: 10,
            ..s
        };
        assert_eq!(walreplay_json(&done), json!({"min": 0, "max": 10, "current": 10}));
    }
}
