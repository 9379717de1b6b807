//! `status/buildinfo`, `status/runtimeinfo`, `status/flags` and
//! `status/tsdb`, in Prometheus's shapes.

use std::time::SystemTime;

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value as Json, json};

use super::{ApiError, AppState, Params, blocking, success};
use crate::config::CollectorConfig;
use crate::promql::Engine;
use crate::tsdb::{IndexStats, StorageStats};
use csoc_common::duration::{format_bytes as fmt_bytes, format_duration_ms as fmt_duration};

/// What the status endpoints report about the running collector.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    /// When the collector started.
    pub start_time: SystemTime,
    /// The effective settings, by flag name (without `--`), sorted.
    pub flags: Vec<(String, String)>,
    /// Retention as Prometheus shows it (`15d`, `15d or 10GiB`).
    pub storage_retention: String,
    /// The storage's opening (`/api/v1/status/walreplay`).
    pub replay: Option<crate::tsdb::ReplayProgress>,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl StatusInfo {
    /// From the effective configuration (file and flags) and the engine's
    /// settings. Agent tokens are never listed.
    pub fn new(cfg: &CollectorConfig, engine: &Engine) -> Self {
        let mut flags: Vec<(String, String)> = vec![
            ("data-dir".into(), cfg.data_dir.display().to_string()),
            ("http-listen".into(), cfg.http_listen.to_string()),
            ("grpc-listen".into(), cfg.grpc_listen.to_string()),
            ("local-agent".into(), cfg.local_agent.to_string()),
            ("local-agent-interval".into(), fmt_duration(ms(cfg.local_agent_interval))),
            ("query.lookback-delta".into(), fmt_duration(ms(engine.lookback))),
            ("query.timeout".into(), fmt_duration(ms(engine.timeout))),
            ("query.max-samples".into(), engine.max_samples.to_string()),
            ("retention".into(), fmt_duration(ms(cfg.retention))),
            ("retention-size".into(), fmt_bytes(cfg.retention_size)),
            ("web.enable-admin-api".into(), cfg.enable_admin_api.to_string()),
            ("web.public-status".into(), cfg.public_status.to_string()),
            ("log-format".into(), format!("{:?}", cfg.log_format).to_ascii_lowercase()),
            ("agent-tokens".into(), format!("{} configured", cfg.agent_tokens.len())),
            ("agent-forget-after".into(), fmt_duration(ms(cfg.agent_forget_after))),
            ("tls-reload-interval".into(), fmt_duration(ms(cfg.tls_reload_interval))),
        ];
        flags.sort();
        let mut storage_retention = fmt_duration(ms(cfg.retention));
        if cfg.retention_size > 0 {
            storage_retention = format!("{storage_retention} or {}", fmt_bytes(cfg.retention_size));
        }
        StatusInfo {
            start_time: SystemTime::now(),
            flags,
            storage_retention,
            replay: None,
        }
    }

    /// With the storage's opening progress, for `/api/v1/status/walreplay`.
    pub fn with_replay(mut self, progress: crate::tsdb::ReplayProgress) -> Self {
        self.replay = Some(progress);
        self
    }
}

/// `GET /api/v1/status/buildinfo`: Prometheus's fields, from the build
/// script's information (`csoc_common::build`); `goVersion` carries the
/// rustc version (`rustc 1.85.0`), `buildUser` and `buildDate` stay empty
/// (builds are reproducible).
pub async fn buildinfo() -> Response {
    success(buildinfo_json())
}

fn buildinfo_json() -> Json {
    use csoc_common::build;
    json!({
        "version": build::VERSION,
        "revision": build::REVISION,
        "branch": build::BRANCH,
        "buildUser": "",
        "buildDate": "",
        "goVersion": format!("rustc {}", build::RUSTC_VERSION),
    })
}

/// `GET /api/v1/status/runtimeinfo`. The Go runtime fields are filled
/// with their nearest equivalents (tokio tasks for goroutines, worker
/// threads for GOMAXPROCS).
pub async fn runtimeinfo(State(st): State<AppState>) -> Response {
    let start = humantime::format_rfc3339_millis(st.status.start_time).to_string();
    let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
    let rt = tokio::runtime::Handle::current().metrics();
    success(json!({
        "startTime": start,
        "CWD": cwd,
        "reloadConfigSuccess": true,
        "lastConfigTime": start,
        "corruptionCount": 0,
        "goroutineCount": rt.num_alive_tasks(),
        "GOMAXPROCS": rt.num_workers(),
        "GOMEMLIMIT": i64::MAX,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": st.status.storage_retention,
    }))
}

/// `GET /api/v1/status/flags`: the effective settings by flag name.
pub async fn flags(State(st): State<AppState>) -> Response {
    let mut m = serde_json::Map::new();
    for (k, v) in &st.status.flags {
        m.insert(k.clone(), Json::String(v.clone()));
    }
    success(Json::Object(m))
}

fn pairs_json(v: &[(String, u64)]) -> Json {
    Json::Array(v.iter().map(|(name, value)| json!({"name": name, "value": value})).collect())
}

/// The `status/tsdb` body. Our head is the whole storage: the series
/// index, chunks in memory and on disk, and the time range of all data
/// (`minTime` > `maxTime` when empty, as Prometheus reports an empty head).
pub fn tsdb_json(ix: &IndexStats, s: &StorageStats) -> Json {
    json!({
        "headStats": {
            "numSeries": ix.num_series,
            "numLabelPairs": ix.num_label_pairs,
            "chunkCount": s.chunks,
            "minTime": s.min_time.unwrap_or(i64::MAX),
            "maxTime": s.max_time.unwrap_or(i64::MIN),
        },
        "seriesCountByMetricName": pairs_json(&ix.series_count_by_metric_name),
        "labelValueCountByLabelName": pairs_json(&ix.label_value_count_by_label_name),
        "memoryInBytesByLabelName": pairs_json(&ix.memory_in_bytes_by_label_name),
        "seriesCountByLabelValuePair": pairs_json(&ix.series_count_by_label_value_pair),
    })
}

/// `GET /api/v1/status/tsdb`: `limit` (default 10) entries per list.
pub async fn tsdb(State(st): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let limit = match p.non_empty("limit") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(ApiError::BadData("limit must be a positive number".into())),
        },
    };
    let body = blocking(move || {
        let ix = st.tsdb_admin.index_stats(limit);
        let s = st.tsdb_admin.storage_stats()?;
        Ok(tsdb_json(&ix, &s))
    })
    .await?;
    Ok(success(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsdb_status_has_prometheus_shape() {
        let ix = IndexStats {
            num_series: 3,
            num_label_pairs: 4,
            series_count_by_metric_name: vec![("up".into(), 2), ("down".into(), 1)],
            label_value_count_by_label_name: vec![("job".into(), 2)],
            memory_in_bytes_by_label_name: vec![("job".into(), 3)],
            series_count_by_label_value_pair: vec![("job=a".into(), 2)],
        };
        let s = StorageStats {
            chunks: 7,
            min_time: Some(1_000),
            max_time: Some(2_000),
        };
        assert_eq!(
            tsdb_json(&ix, &s),
            json!({
                "headStats": {"numSeries": 3, "numLabelPairs": 4, "chunkCount": 7, "minTime": 1000, "maxTime": 2000},
                "seriesCountByMetricName": [{"name": "up", "value": 2}, {"name": "down", "value": 1}],
                "labelValueCountByLabelName": [{"name": "job", "value": 2}],
                "memoryInBytesByLabelName": [{"name": "job", "value": 3}],
                "seriesCountByLabelValuePair": [{"name": "job=a", "value": 2}],
            })
        );
        let empty = tsdb_json(&IndexStats::default(), &StorageStats::default());
        assert_eq!(empty["headStats"]["minTime"], json!(i64::MAX));
        assert_eq!(empty["seriesCountByMetricName"], json!([]));
    }

    #[test]
    fn flags_are_the_effective_settings_without_secrets() {
        let mut cfg = CollectorConfig {
            retention_size: 10 << 30,
            ..Default::default()
        };
        cfg.agent_tokens.push(crate::config::AgentToken {
            commons: "a".into(),
            token: Some("secret-token-0123456789".into()),
            token_sha256: None,
            token_file: None,
        });
        let info = StatusInfo::new(&cfg, &Engine::new(std::time::Duration::from_secs(300)));
        let get = |k: &str| info.flags.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("query.lookback-delta"), Some("5m"));
        assert_eq!(get("retention"), Some("15d"));
        assert_eq!(get("retention-size"), Some("10GiB"));
        assert_eq!(get("http-listen"), Some("127.0.0.1:9300"));
        assert_eq!(get("log-format"), Some("text"));
        assert!(info.flags.iter().all(|(_, v)| !v.contains("secret")));
        assert!(info.flags.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert_eq!(info.storage_retention, "15d or 10GiB");
    }

    #[test]
    fn buildinfo_has_prometheus_fields_filled_from_the_build() {
        let b = buildinfo_json();
        for k in ["version", "revision", "branch", "buildUser", "buildDate", "goVersion"] {
            assert!(b[k].is_string(), "{k}: {b}");
        }
        assert_eq!(b["version"], json!(env!("CARGO_PKG_VERSION")));
        assert_ne!(b["revision"], json!(""), "the build script sets a revision or \"unknown\"");
        assert!(b["goVersion"].as_str().is_some_and(|v| v.starts_with("rustc ")), "{b}");
    }
}
