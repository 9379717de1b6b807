use std::path::Path;

use serde_json::Value;

use super::endpoints::{parse_datasets, parse_drs, parse_indexd_stats};
use super::*;

fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/gen3/fixtures/status")
        .join(name);
    let b = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_slice(&b).expect("fixture is JSON")
}

#[test]
fn fixtures_parse() {
    assert_eq!(
        parse_indexd_stats(&fixture("indexd._stats.json")),
        Some((1_842_217.0, 412_877_613_095_342.0))
    );
    assert_eq!(parse_indexd_stats(&fixture("indexd._stats.empty.json")), Some((0.0, 0.0)));
    assert_eq!(
        parse_drs(&fixture("indexd.drs-service-info.json")),
        Some((1_842_217.0, 412_877_613_095_342.0))
    );
    let d = parse_datasets(&fixture("peregrine.datasets.json")).expect("datasets");
    assert!(d.contains(&("CMC-LUAD".into(), "case".into(), 812.0)), "{d:?}");
    assert_eq!(d.len(), 4);
    assert_eq!(parse_indexd_stats(&serde_json::json!({"fileCount": -1, "totalFileSize": 0})), None);
}

/// A commons answering the public usage paths from the fixtures, with
/// peregrine refusing anonymous callers (403).
async fn serve() -> String {
    use axum::http::{StatusCode, Uri};
    async fn answer(uri: Uri) -> (StatusCode, Vec<u8>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/gen3/fixtures/status");
        let file = match uri.path() {
            "/index/_stats" => "indexd._stats.json",
            "/ga4gh/drs/v1/service-info" => "indexd.drs-service-info.json",
            "/mds/aggregate/commons" => "metadata.aggregate-commons.json",
            "/hatchery/allCosts" => "hatchery.allCosts.json",
            "/api/search/datasets" => return (StatusCode::FORBIDDEN, b"{}".to_vec()),
            "/mds/metadata" => {
                // Two full pages of 2, then one GUID.
                let offset: usize = uri
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("offset=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let body = match offset {
                    0 => r#"["a","b"]"#,
                    2 => r#"["c","d"]"#,
                    _ => r#"["e"]"#,
                };
                return (StatusCode::OK, body.as_bytes().to_vec());
            }
            _ => return (StatusCode::NOT_FOUND, Vec::new()),
        };
        (StatusCode::OK, std::fs::read(dir.join(file)).unwrap_or_default())
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new().fallback(answer)).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_refused_endpoint_is_an_error_and_the_others_report() {
    let base = serve().await;
    let status = Gen3StatusConfig {
        base_url: base.clone(),
        ..Default::default()
    };
    let cfg = Gen3UsageConfig {
        hatchery_url: Some(format!("{base}/hatchery")),
        discovery_page_size: 2,
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let src = Gen3UsageSource::new(&cfg, &status).expect("valid");
    let r = src.collect("gen3_usage").await;
    let get = |name: &str| {
        r.frame
            .samples
            .iter()
            .find(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == name))
            .map(|s| s.value)
    };
    assert_eq!(get("gen3_indexd_files"), Some(1_842_217.0));
    assert_eq!(get("gen3_indexd_size_bytes"), Some(412_877_613_095_342.0));
    assert_eq!(get("gen3_drs_objects"), Some(1_842_217.0));
    assert_eq!(get("gen3_mds_aggregate_commons"), Some(2.0));
    assert_eq!(get("gen3_hatchery_workspaces"), Some(2.0));
    assert_eq!(get("gen3_hatchery_workspace_cost_dollars"), Some(1.9264));
    assert_eq!(get("gen3_discovery_studies"), Some(5.0), "pages followed");
    assert_eq!(get("gen3_peregrine_projects"), None, "403: nothing emitted");
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!((r.errors[0].endpoint, r.errors[0].kind), ("peregrine_datasets", "forbidden"));
    assert!(
        r.frame
            .metadata
            .iter()
            .any(|m| m.name == "gen3_indexd_size_bytes" && m.unit == "bytes")
    );
    // Compliance: runs, emits, counts.
    let frame = crate::sources::test_util::run_and_assert_source_compliance(
        Box::new(Gen3UsageSource::new(&cfg, &status).expect("valid")),
        "gen3_usage",
    )
    .await;
    assert_eq!(frame.source, "gen3_usage");
}

#[test]
fn runs_with_a_base_url_and_validates() {
    let mut status = Gen3StatusConfig::default();
    let mut c = Gen3UsageConfig::default();
    assert!(!c.active(&status), "no URL: off");
    status.base_url = "https://data.example.org".into();
    assert!(c.active(&status));
    assert_eq!(c.effective_interval(), DEFAULT_INTERVAL);
    assert_eq!(c.effective_timeout(), DEFAULT_TIMEOUT);
    let plan = c.plan(&status).expect("plan");
    assert_eq!(plan.indexd.map(|p| p.root), Some("https://data.example.org".into()));
    assert_eq!(plan.hatchery, None, "hatchery is in-cluster only");
    status.namespace = "gen3".into();
    let plan = c.plan(&status).expect("plan");
    assert_eq!(plan.hatchery.as_deref(), Some("http://hatchery-service.gen3.svc.cluster.local"));
    c.disable = vec!["nope".into()];
    assert!(
        c.validate(&status)
            .expect_err("bad")
            .to_string()
            .contains("sources.gen3_usage.disable")
    );
    c.disable.clear();
    c.interval = Some(Duration::from_secs(10));
    c.timeout = Some(Duration::from_secs(10));
    assert!(
        c.validate(&status)
            .expect_err("bad")
            .to_string()
            .contains("sources.gen3_usage.timeout")
    );
    c.enabled = false;
    assert!(!c.active(&status));
}
