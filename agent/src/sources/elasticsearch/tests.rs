use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::*;
use crate::model::Sample;
use crate::sources::test_util::run_and_assert_source_compliance;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/elasticsearch")
}

fn read(p: &str) -> Vec<u8> {
    let path = fixtures().join(p);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the fake server answers: (flavor, scenario); records the
/// Authorization headers it was sent.
#[derive(Clone)]
struct Fake {
    set: Arc<Mutex<(String, String)>>,
    auth: Arc<Mutex<Vec<Option<String>>>>,
}

async fn answer(State(f): State<Fake>, headers: HeaderMap, uri: Uri) -> Response {
    f.auth
        .lock()
        .expect("lock")
        .push(headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string));
    let (flavor, scenario) = f.set.lock().expect("lock").clone();
    if scenario == "unauthorized" {
        let file = if flavor == "es7" { "unauthorized.json" } else { "unauthorized.txt" };
        return (StatusCode::UNAUTHORIZED, read(&format!("{flavor}/{file}"))).into_response();
    }
    let file = match (uri.path(), uri.query()) {
        ("/_cluster/health", None) => "cluster_health.json",
        ("/_cat/indices", Some("format=json")) => "cat_indices.json",
        ("/_cat/aliases", Some("format=json")) => "cat_aliases.json",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (StatusCode::OK, read(&format!("{flavor}/{scenario}/{file}"))).into_response()
}

async fn serve(flavor: &str, scenario: &str) -> (String, Fake) {
    let f = Fake {
        set: Arc::new(Mutex::new((flavor.into(), scenario.into()))),
        auth: Arc::new(Mutex::new(Vec::new())),
    };
    let app = Router::new().fallback(answer).with_state(f.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (format!("http://{addr}"), f)
}

fn source(urls: Vec<String>, cfg: impl FnOnce(&mut ElasticsearchConfig)) -> ElasticsearchSource {
    let mut c = ElasticsearchConfig {
        url: urls.first().cloned(),
        urls: urls.into_iter().skip(1).collect(),
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    cfg(&mut c);
    ElasticsearchSource::new(&c, Duration::from_secs(15)).expect("source")
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.labels.iter().any(|(k, v)| k == "__name__" && v == name)
                && labels.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}

fn count(samples: &[Sample], name: &str) -> usize {
    samples
        .iter()
        .filter(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == name))
        .count()
}

#[test]
fn every_fixture_parses_with_its_counts() {
    for flavor in ["es7", "os2"] {
        for (scenario, nodes, unassigned) in [("green", 3.0, 0.0), ("yellow", 1.0, 3.0), ("red", 2.0, 2.0)] {
            let (cluster, status, counts) =
                parse_health(&read(&format!("{flavor}/{scenario}/cluster_health.json"))).expect("health parses");
            assert_eq!(status, scenario);
            assert!(cluster.starts_with("gen3-"), "{cluster}");
            let get = |f: &str| counts.iter().find(|(k, _)| *k == f).map(|(_, v)| *v);
            assert_eq!(get("number_of_nodes"), Some(nodes), "{flavor}/{scenario}");
            assert_eq!(get("unassigned_shards"), Some(unassigned), "{flavor}/{scenario}");
            assert_eq!(counts.len(), HEALTH_FIELDS.len(), "{flavor}/{scenario}: every field present");
            let docs = parse_indices(&read(&format!("{flavor}/{scenario}/cat_indices.json"))).expect("indices parse");
            assert_eq!(docs.get("commons-a_case_1"), Some(&Some(12873.0)));
            let file = docs.get("commons-a_file_1").copied().flatten();
            assert_eq!(file, if scenario == "red" { None } else { Some(48211.0) }, "{flavor}/{scenario}");
            let aliases = parse_aliases(&read(&format!("{flavor}/{scenario}/cat_aliases.json"))).expect("aliases parse");
            assert!(aliases.contains(&("commons-a_case".to_string(), "commons-a_case_1".to_string())));
        }
    }
}

#[test]
fn bad_bodies_are_parse_errors() {
    assert!(parse_health(b"{}").is_err());
    assert!(parse_health(br#"{"cluster_name":"x","status":"purple","number_of_nodes":1}"#).is_err());
    assert!(parse_health(b"<html>").is_err());
    assert!(parse_indices(br#"[{"index":"a","docs.count":"many"}]"#).is_err());
    assert!(parse_indices(br#"{"index":"a"}"#).is_err());
    assert!(parse_aliases(b"[1]").is_err());
}

#[test]
fn the_default_filter_leaves_out_dot_indices_and_patterns_choose() {
    let f = IndexFilter::new(&[]).expect("filter");
    assert!(f.matches("commons-a_case_1"));
    assert!(!f.matches(".opendistro_security"));
    let f = IndexFilter::new(&["commons-a_*".into(), ".kibana*".into()]).expect("filter");
    assert!(f.matches("commons-a_file_1"));
    assert!(f.matches(".kibana_1"));
    assert!(!f.matches("commons-b_case_1"));
    assert!(!f.matches("commons-a-array-config_0"));
}

#[test]
fn config_errors_name_the_field() {
    let bad = |c: ElasticsearchConfig| c.validate(Duration::from_secs(15)).expect_err("invalid").to_string();
    let e = bad(ElasticsearchConfig {
        url: Some("es:9200".into()),
        ..Default::default()
    });
    assert!(e.contains("sources.elasticsearch.url"), "{e}");
    let e = bad(ElasticsearchConfig {
        url: Some("http://elastic:secret@es:9200".into()),
        ..Default::default()
    });
    assert!(e.contains("credentials") && !e.contains("secret@"), "{e}");
    let e = bad(ElasticsearchConfig {
        url: Some("http://es:9200".into()),
        timeout: Some(Duration::from_secs(20)),
        ..Default::default()
    });
    assert!(e.contains("sources.elasticsearch.timeout"), "{e}");
    let e = bad(ElasticsearchConfig {
        url: Some("http://es:9200".into()),
        indices: vec!["[".into()],
        ..Default::default()
    });
    assert!(e.contains("sources.elasticsearch.indices"), "{e}");
    let y = "url: http://es:9200\nbasic_auth: {username: elastic, password_file: /p}\ntls: {insecure_skip_verify: true}\nindices: ['commons-*']\n";
    let c: ElasticsearchConfig = serde_yaml_ng::from_str(y).expect("parses");
    c.validate(Duration::from_secs(15)).expect("valid");
    assert!(c.active());
    assert!(
        serde_yaml_ng::from_str::<ElasticsearchConfig>("url: x\npassword: y\n").is_err(),
        "unknown fields refused"
    );
}

#[tokio::test]
async fn a_yellow_opensearch_reports_its_health_indices_and_aliases() {
    let (base, _f) = serve("os2", "yellow").await;
    let src = source(vec![base], |_| {});
    let r = src.collect("elasticsearch").await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let s = &r.frame.samples;
    let c = ("cluster", "gen3-opensearch");
    assert_eq!(value(s, "elasticsearch_cluster_health_up", &[]), Some(1.0));
    assert_eq!(
        value(s, "elasticsearch_cluster_health_status", &[c, ("color", "yellow")]),
        Some(1.0)
    );
    assert_eq!(value(s, "elasticsearch_cluster_health_status", &[c, ("color", "green")]), Some(0.0));
    assert_eq!(value(s, "elasticsearch_cluster_health_status", &[c, ("color", "red")]), Some(0.0));
    assert_eq!(value(s, "elasticsearch_cluster_health_number_of_nodes", &[c]), Some(1.0));
    assert_eq!(value(s, "elasticsearch_cluster_health_unassigned_shards", &[c]), Some(3.0));
    assert_eq!(value(s, "elasticsearch_cluster_health_active_shards", &[c]), Some(4.0));
    assert_eq!(value(s, "elasticsearch_cluster_health_number_of_pending_tasks", &[c]), Some(0.0));
    assert_eq!(
        value(s, "elasticsearch_indices_docs", &[c, ("index", "commons-a_file_1")]),
        Some(48211.0)
    );
    assert_eq!(
        value(s, "elasticsearch_indices_docs_primary", &[("index", "commons-a_case_1")]),
        Some(12873.0)
    );
    // .opendistro_security is left out by default.
    assert_eq!(count(s, "elasticsearch_indices_docs"), 3);
    assert_eq!(
        value(
            s,
            "elasticsearch_aliases_docs_primary",
            &[("alias", "commons-a_case"), ("index", "commons-a_case_1")]
        ),
        Some(12873.0)
    );
    assert_eq!(count(s, "elasticsearch_aliases_docs_primary"), 3);
    assert!(s.iter().all(|x| x.labels.iter().any(|(k, v)| k == "job" && v == "elasticsearch")));
}

#[tokio::test]
async fn a_red_elasticsearch_has_no_count_for_the_red_index() {
    let (base, _f) = serve("es7", "red").await;
    let r = source(vec![base], |_| {}).collect("elasticsearch").await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let s = &r.frame.samples;
    assert_eq!(
        value(
            s,
            "elasticsearch_cluster_health_status",
            &[("cluster", "gen3-es"), ("color", "red")]
        ),
        Some(1.0)
    );
    assert_eq!(value(s, "elasticsearch_indices_docs", &[("index", "commons-a_file_1")]), None);
    assert_eq!(value(s, "elasticsearch_aliases_docs_primary", &[("alias", "commons-a_file")]), None);
    assert_eq!(count(s, "elasticsearch_indices_docs"), 2);
}

#[tokio::test]
async fn a_401_is_unauthorized_and_the_password_is_sent_from_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("password");
    std::fs::write(&pw, "s3cret\n").expect("write");
    for flavor in ["es7", "os2"] {
        let (base, f) = serve(flavor, "unauthorized").await;
        let src = source(vec![base], |c| {
            c.basic_auth = Some(EsBasicAuth {
                username: "elastic".into(),
                password_file: pw.clone(),
            });
        });
        let r = src.collect("elasticsearch").await;
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert_eq!((r.errors[0].endpoint, r.errors[0].kind), ("cluster_health", "unauthorized"));
        assert!(!r.errors[0].message.contains("s3cret"));
        assert_eq!(value(&r.frame.samples, "elasticsearch_cluster_health_up", &[]), Some(0.0));
        assert_eq!(count(&r.frame.samples, "elasticsearch_cluster_health_status"), 0);
        // base64("elastic:s3cret")
        let sent = f.auth.lock().expect("lock").clone();
        assert_eq!(sent, vec![Some("Basic ZWxhc3RpYzpzM2NyZXQ=".to_string())]);
    }
    // An unreadable password file is its own kind.
    let (base, _f) = serve("es7", "green").await;
    let src = source(vec![base], |c| {
        c.basic_auth = Some(EsBasicAuth {
            username: "elastic".into(),
            password_file: dir.path().join("missing"),
        });
    });
    let r = src.collect("elasticsearch").await;
    assert_eq!(r.errors[0].kind, "password_file");
}

#[tokio::test]
async fn an_unreachable_node_is_skipped_for_the_next_url_and_all_down_is_connect() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = l.local_addr().expect("addr");
        drop(l);
        format!("http://{a}")
    };
    let r = source(vec![dead.clone()], |_| {}).collect("elasticsearch").await;
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].kind, "connect");
    assert_eq!(value(&r.frame.samples, "elasticsearch_cluster_health_up", &[]), Some(0.0));
    let (base, _f) = serve("es7", "green").await;
    let r = source(vec![dead, base], |_| {}).collect("elasticsearch").await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        value(&r.frame.samples, "elasticsearch_cluster_health_status", &[("color", "green")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_source_emits_and_counts() {
    let (base, _f) = serve("es7", "green").await;
    let src = source(vec![base], |c| {
        c.interval = Some(Duration::from_millis(200));
        c.timeout = Some(Duration::from_millis(150));
    });
    let frame = run_and_assert_source_compliance(Box::new(src), "elasticsearch").await;
    assert_eq!(
        value(&frame.samples, "elasticsearch_cluster_health_number_of_nodes", &[]),
        Some(3.0)
    );
}
