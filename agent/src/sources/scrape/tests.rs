use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::discovery::{populate_target, read_file_sd};
use super::scrape_one::{ACCEPT, Scraped, merge_target_labels};
use super::target_loop::LoopState;
use super::*;
use crate::model::{Frame, Labels, Sample};

/// What the test server answers.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    delay: Duration,
}

type Shared = Arc<Mutex<(Answer, Vec<HeaderMap>)>>;

async fn metrics(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let a = {
        let mut g = s.lock().expect("lock");
        g.1.push(headers);
        g.0.clone()
    };
    tokio::time::sleep(a.delay).await;
    (a.status, [(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
}

async fn server(body: &str) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new((
        Answer {
            status: StatusCode::OK,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: body.to_string(),
            delay: Duration::ZERO,
        },
        Vec::new(),
    )));
    let app = Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr.to_string(), shared)
}

fn set(s: &Shared, f: impl FnOnce(&mut Answer)) {
    f(&mut s.lock().expect("lock").0);
}

fn job(yaml: &str) -> ScrapeConfig {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn start(cfg: &ScrapeConfig) -> (mpsc::Receiver<Frame>, CancellationToken) {
    let src = ScrapeSource::new(cfg, Duration::from_millis(100)).unwrap_or_else(|e| panic!("{e}"));
    let (cx, rx) = SourceContext::for_test("scrape", Duration::from_millis(100));
    let stop = cx.shutdown.clone();
    tokio::spawn(Box::new(src).run(cx));
    (rx, stop)
}

async fn next(rx: &mut mpsc::Receiver<Frame>) -> Frame {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a frame within 10s")
        .expect("source running")
}

fn val(f: &Frame, name: &str) -> Option<f64> {
    f.samples
        .iter()
        .find(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == name))
        .map(|s| s.value)
}

fn label<'a>(s: &'a Sample, k: &str) -> Option<&'a str> {
    s.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn is_stale(v: Option<f64>) -> bool {
    v.is_some_and(|v| v.to_bits() == csoc_proto::STALE_NAN_BITS)
}

fn one_job(addr: &str, extra: &str) -> ScrapeConfig {
    job(&format!(
        "jobs:\n- job_name: node\n  scrape_interval: 100ms\n  scrape_timeout: 80ms\n  static_configs:\n  - targets: ['{addr}']\n    labels: {{env: test}}\n{extra}"
    ))
}

#[tokio::test]
async fn up_then_down_marks_everything_stale() {
    let (addr, srv) = server("# TYPE a gauge\na 1\nb{x=\"1\"} 2\n").await;
    let (mut rx, stop) = start(&one_job(&addr, ""));
    let f = next(&mut rx).await;
    assert_eq!(val(&f, "up"), Some(1.0));
    assert_eq!(val(&f, "a"), Some(1.0));
    assert_eq!(val(&f, "scrape_samples_scraped"), Some(2.0));
    assert_eq!(val(&f, "scrape_samples_post_metric_relabeling"), Some(2.0));
    assert_eq!(val(&f, "scrape_series_added"), Some(2.0));
    assert!(val(&f, "scrape_duration_seconds").is_some_and(|d| d >= 0.0));
    let a = f.samples.iter().find(|s| label(s, "__name__") == Some("a")).expect("a");
    assert_eq!(label(a, "job"), Some("node"));
    assert_eq!(label(a, "instance"), Some(addr.as_str()));
    assert_eq!(label(a, "env"), Some("test"));
    assert_eq!(f.metadata.len(), 1);
    // The Accept header Prometheus sends.
    let h = srv.lock().expect("lock").1[0].clone();
    assert_eq!(h.get(header::ACCEPT).and_then(|v| v.to_str().ok()), Some(ACCEPT));
    assert!(h.get("x-prometheus-scrape-timeout-seconds").is_some());
    set(&srv, |a| a.status = StatusCode::INTERNAL_SERVER_ERROR);
    let f = loop {
        let f = next(&mut rx).await;
        if val(&f, "up") == Some(0.0) {
            break f;
        }
    };
    assert!(is_stale(val(&f, "a")) && is_stale(val(&f, "b")), "{f:?}");
    assert_eq!(val(&f, "scrape_samples_scraped"), Some(0.0));
    // Next failure: nothing left to mark.
    let f = next(&mut rx).await;
    assert_eq!(val(&f, "up"), Some(0.0));
    assert_eq!(val(&f, "a"), None);
    stop.cancel();
}

#[tokio::test]
async fn vanished_series_get_a_staleness_marker() {
    let (addr, srv) = server("a 1\nb 2\n").await;
    let (mut rx, stop) = start(&one_job(&addr, ""));
    let f = next(&mut rx).await;
    assert_eq!(val(&f, "b"), Some(2.0));
    set(&srv, |a| a.body = "a 1\nc 3\n".into());
    let f = loop {
        let f = next(&mut rx).await;
        if val(&f, "c").is_some() {
            break f;
        }
    };
    assert!(is_stale(val(&f, "b")));
    assert_eq!(val(&f, "a"), Some(1.0));
    assert_eq!(val(&f, "scrape_series_added"), Some(1.0));
    stop.cancel();
}

#[tokio::test]
async fn sample_limit_fails_the_scrape() {
    let (addr, _srv) = server("a 1\nb 2\nc 3\ngo_x 4\n").await;
    let (mut rx, stop) = start(&one_job(&addr, "  sample_limit: 2\n"));
    let f = next(&mut rx).await;
    assert_eq!(val(&f, "up"), Some(0.0));
    assert_eq!(val(&f, "a"), None);
    stop.cancel();
    // After metric relabelling drops two, it fits.
    let (mut rx, stop) = start(&one_job(
        &addr,
        "  sample_limit: 2\n  metric_relabel_configs:\n  - source_labels: [__name__]\n    regex: 'go_.*|c'\n    action: drop\n",
    ));
    let f = next(&mut rx).await;
    assert_eq!(val(&f, "up"), Some(1.0));
    assert_eq!(val(&f, "scrape_samples_scraped"), Some(4.0));
    assert_eq!(val(&f, "scrape_samples_post_metric_relabeling"), Some(2.0));
    stop.cancel();
}

#[tokio::test]
async fn slow_target_times_out() {
    let (addr, srv) = server("a 1\n").await;
    set(&srv, |a| a.delay = Duration::from_millis(300));
    let (mut rx, stop) = start(&one_job(&addr, ""));
    let f = next(&mut rx).await;
    assert_eq!(val(&f, "up"), Some(0.0));
    assert!(val(&f, "scrape_duration_seconds").is_some_and(|d| d < 0.25), "{f:?}");
    stop.cancel();
}

#[tokio::test]
async fn honor_labels_and_exported_prefix() {
    let body = "a{job=\"inner\",instance=\"i\",exported_job=\"x\"} 1\n";
    let (addr, _srv) = server(body).await;
    let (mut rx, stop) = start(&one_job(&addr, ""));
    let f = next(&mut rx).await;
    let a = f.samples.iter().find(|s| label(s, "__name__") == Some("a")).expect("a");
    assert_eq!(label(a, "job"), Some("node"));
    assert_eq!(label(a, "exported_instance"), Some("i"));
    assert_eq!(label(a, "exported_job"), Some("x"));
    assert_eq!(label(a, "exported_exported_job"), Some("inner"));
    stop.cancel();
    let (mut rx, stop) = start(&one_job(&addr, "  honor_labels: true\n"));
    let f = next(&mut rx).await;
    let a = f.samples.iter().find(|s| label(s, "__name__") == Some("a")).expect("a");
    assert_eq!(label(a, "job"), Some("inner"));
    assert_eq!(label(a, "instance"), Some("i"));
    assert_eq!(label(a, "env"), Some("test"));
    // `up` always has the target's labels.
    let up = f.samples.iter().find(|s| label(s, "__name__") == Some("up")).expect("up");
    assert_eq!(label(up, "job"), Some("node"));
    stop.cancel();
}

#[tokio::test]
async fn openmetrics_and_honor_timestamps() {
    let (addr, srv) = server("").await;
    set(&srv, |a| {
        a.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        a.body = "# TYPE c counter\nc_total 5 1700000000.5\nd 1\n# EOF\n".into();
    });
    let (mut rx, stop) = start(&one_job(&addr, ""));
    let f = next(&mut rx).await;
    let c = f.samples.iter().find(|s| label(s, "__name__") == Some("c_total")).expect("c_total");
    assert_eq!(c.timestamp_ms, 1_700_000_000_500);
    stop.cancel();
    let (mut rx, stop) = start(&one_job(&addr, "  honor_timestamps: false\n"));
    let f = next(&mut rx).await;
    let c = f.samples.iter().find(|s| label(s, "__name__") == Some("c_total")).expect("c_total");
    assert!(c.timestamp_ms > 1_700_000_000_500);
    stop.cancel();
    // A broken exposition is a failed scrape.
    set(&srv, |a| a.body = "c_total 5\n".into());
    let (mut rx, stop) = start(&one_job(&addr, ""));
    assert_eq!(val(&next(&mut rx).await, "up"), Some(0.0));
    stop.cancel();
}

#[tokio::test]
async fn file_sd_is_reread_and_removed_targets_go_stale() {
    let (addr, _srv) = server("a 1\n").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("targets.json");
    std::fs::write(&file, format!("[{{\"targets\": [\"{addr}\"], \"labels\": {{\"team\": \"one\"}}}}]")).expect("write");
    let cfg = job(&format!(
        "jobs:\n- job_name: sd\n  scrape_interval: 100ms\n  file_sd_configs:\n  - files: ['{}/*.json']\n  relabel_configs:\n  - source_labels: [__meta_filepath]\n    regex: '.*/(.*)'\n    target_label: file\n",
        dir.path().display()
    ));
    let (mut rx, stop) = start(&cfg);
    let f = next(&mut rx).await;
    let up = f.samples.iter().find(|s| label(s, "__name__") == Some("up")).expect("up");
    assert_eq!(label(up, "team"), Some("one"));
    assert_eq!(label(up, "file"), Some("targets.json"));
    assert!(label(up, "__meta_filepath").is_none());
    // New labels: the old target goes away (stale), the new one appears.
    std::fs::write(&file, format!("[{{\"targets\": [\"{addr}\"], \"labels\": {{\"team\": \"two\"}}}}]")).expect("write");
    let (mut gone, mut new) = (false, false);
    while !(gone && new) {
        let f = next(&mut rx).await;
        for s in &f.samples {
            if label(s, "__name__") == Some("up") && label(s, "file") == Some("targets.json") {
                match label(s, "team") {
                    Some("one") if s.value.to_bits() == csoc_proto::STALE_NAN_BITS => gone = true,
                    Some("two") if s.value == 1.0 => new = true,
                    _ => {}
                }
            }
        }
    }
    stop.cancel();
}

#[test]
fn file_sd_yaml_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t.yml");
    std::fs::write(&p, "- targets: ['a:1', 'b:2']\n  labels: {team: two}\n").expect("write");
    let g = read_file_sd(&p).expect("yaml");
    assert_eq!(g[0].targets, ["a:1", "b:2"]);
    std::fs::write(&p, "- targets: ['a:1']\n  labelz: {}\n").expect("write");
    let e = read_file_sd(&p).expect_err("unknown field");
    assert!(e.contains("t.yml") && e.contains("labelz") && e.contains("line 2"), "{e}");
    let j = dir.path().join("t.json");
    std::fs::write(&j, "[{\"targets\": [\"a:1\"], \"labels\": {\"a-b\": \"x\"}}]").expect("write");
    assert!(read_file_sd(&j).expect_err("label").contains("a-b"));
}

#[tokio::test]
async fn source_compliance() {
    let (addr, _srv) = server("a 1\n").await;
    let src = ScrapeSource::new(&one_job(&addr, ""), Duration::from_millis(100)).expect("source");
    let f = crate::sources::test_util::run_and_assert_source_compliance(Box::new(src), "scrape").await;
    assert_eq!(val(&f, "up"), Some(1.0));
}

#[test]
fn target_relabelling_builds_labels_and_url() {
    let cfg = job(concat!(
        "jobs:\n- job_name: fence\n  params: {module: [http_2xx], x: [1, 2]}\n  static_configs: [{targets: ['a:80']}]\n",
        "  relabel_configs:\n",
        "  - source_labels: [__address__]\n    target_label: __param_target\n",
        "  - target_label: __address__\n    replacement: 'prober:9115'\n",
        "  - source_labels: [__param_target]\n    target_label: instance\n",
        "  - target_label: __metrics_path__\n    replacement: /probe\n",
    ));
    let j = &cfg.jobs[0];
    let t = populate_target(
        j,
        Duration::from_secs(15),
        "a:80",
        &BTreeMap::new(),
        &[("__meta_x".into(), "y".into())],
    )
    .expect("ok")
    .expect("kept");
    assert_eq!(t.url, "http://prober:9115/probe?module=http_2xx&x=1&x=2&target=a%3A80");
    assert_eq!(
        t.labels,
        vec![
            ("instance".to_string(), "a:80".to_string()),
            ("job".to_string(), "fence".to_string())
        ]
    );
    // Dropped by relabelling.
    let cfg = job(
        "jobs:\n- job_name: j\n  static_configs: [{targets: ['a:80']}]\n  relabel_configs:\n  - source_labels: [__address__]\n    regex: 'a:.*'\n    action: drop\n",
    );
    assert_eq!(
        populate_target(&cfg.jobs[0], Duration::from_secs(15), "a:80", &BTreeMap::new(), &[]),
        Ok(None)
    );
    // No address left.
    let cfg = job(
        "jobs:\n- job_name: j\n  static_configs: [{targets: ['a:80']}]\n  relabel_configs:\n  - target_label: __address__\n    replacement: ''\n",
    );
    assert!(populate_target(&cfg.jobs[0], Duration::from_secs(15), "a:80", &BTreeMap::new(), &[]).is_err());
}

#[test]
fn series_with_own_timestamps_are_not_marked_stale() {
    let target = Target {
        url: "http://t/metrics".into(),
        labels: vec![("instance".into(), "t".into()), ("job".into(), "j".into())],
    };
    let sample = |name: &str, ts: i64| Sample {
        labels: vec![("__name__".into(), name.into())],
        timestamp_ms: ts,
        value: 1.0,
    };
    let mut st = LoopState::default();
    let first = Scraped {
        samples: vec![sample("a", 1000), sample("b", 5)],
        metadata: Vec::new(),
        scraped: 2,
        tracked: vec![Some(1), None],
    };
    let f = st.after_scrape(&target, 1000, Duration::from_millis(1), Ok(first), "s");
    assert_eq!(val(&f, "scrape_series_added"), Some(1.0));
    let empty = Scraped {
        samples: Vec::new(),
        metadata: Vec::new(),
        scraped: 0,
        tracked: Vec::new(),
    };
    let f = st.after_scrape(&target, 2000, Duration::from_millis(1), Ok(empty), "s");
    assert!(is_stale(val(&f, "a")));
    assert_eq!(val(&f, "b"), None);
    // The target goes away: its report series go stale.
    let f = st.target_gone(&target, 3000, "s");
    assert!(is_stale(val(&f, "up")) && is_stale(val(&f, "scrape_duration_seconds")));
    assert_eq!(f.samples.len(), 5);
}

#[test]
fn merge_labels_as_prometheus() {
    let target: Labels = vec![("instance".into(), "t:1".into()), ("job".into(), "j".into())];
    let mut l: Labels = vec![("__name__".into(), "m".into()), ("job".into(), "".into())];
    merge_target_labels(&mut l, &target, false);
    assert_eq!(
        l,
        vec![
            ("__name__".to_string(), "m".to_string()),
            ("instance".to_string(), "t:1".to_string()),
            ("job".to_string(), "j".to_string())
        ]
    );
}

#[test]
fn flags_become_jobs() {
    let jobs = jobs_from_flags(&[
        "http://127.0.0.1:9100/metrics".into(),
        "fence=http://fence/metrics?x=1".into(),
        "fence=https://fence2:8443/m".into(),
    ])
    .expect("flags");
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].job_name, "scrape");
    assert_eq!(jobs[0].static_configs[0].targets, ["127.0.0.1:9100"]);
    assert_eq!(jobs[1].static_configs.len(), 2);
    assert_eq!(jobs[1].static_configs[0].targets, ["fence:80"]);
    assert_eq!(jobs[1].static_configs[0].labels.get("__param_x").map(String::as_str), Some("1"));
    assert_eq!(
        jobs[1].static_configs[1].labels.get("__scheme__").map(String::as_str),
        Some("https")
    );
    let t = populate_target(
        &jobs[1],
        Duration::from_secs(15),
        "fence:80",
        &jobs[1].static_configs[0].labels,
        &[],
    )
    .expect("ok")
    .expect("kept");
    assert_eq!(t.url, "http://fence/metrics?x=1");
    assert!(jobs_from_flags(&["ftp://x/".into()]).is_err());
    assert!(jobs_from_flags(&["not a url".into()]).is_err());
}

#[test]
fn example_config_job_is_valid() {
    // deploy/examples/agent.yml documents one job in comments: uncomment it.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.yml");
    let text = std::fs::read_to_string(&path).expect("example");
    let mut yaml = String::from("jobs:\n");
    let mut on = false;
    for l in text.lines() {
        if l.trim() == "jobs: []" {
            on = true;
            continue;
        }
        if on {
            match l.strip_prefix("    #") {
                Some(rest) if !rest.starts_with(' ') || rest.starts_with("  ") => {
                    let code = rest.split("  #").next().unwrap_or("");
                    yaml.push_str(code.trim_end());
                    yaml.push('\n');
                }
                _ => break,
            }
        }
    }
    let cfg: ScrapeConfig = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(cfg.jobs.len(), 1, "{yaml}");
    assert_eq!(cfg.jobs[0].metric_relabel_configs.len(), 1);
    cfg.validate(Duration::from_secs(15)).expect("valid");
    let whole = crate::config::AgentConfig::from_file(&path).expect("example parses");
    assert!(whole.sources.scrape.jobs.is_empty());
}

#[test]
fn config_errors_name_the_field() {
    let err = |y: &str| {
        ScrapeSource::new(&job(y), Duration::from_secs(15))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let t = "  static_configs: [{targets: ['a:1']}]\n";
    assert!(err(&format!("jobs:\n- job_name: ''\n{t}")).contains("jobs[0].job_name"));
    assert!(err(&format!("jobs:\n- job_name: a\n{t}- job_name: a\n{t}")).contains("jobs[1].job_name"));
    assert!(err(&format!("jobs:\n- job_name: a\n  scrape_interval: 5s\n  scrape_timeout: 10s\n{t}")).contains("jobs[0].scrape_timeout"));
    assert!(err(&format!("jobs:\n- job_name: a\n  scheme: ftp\n{t}")).contains("jobs[0].scheme"));
    assert!(err(&format!("jobs:\n- job_name: a\n  metrics_path: metrics\n{t}")).contains("metrics_path"));
    assert!(err("jobs:\n- job_name: a\n  static_configs: [{targets: ['http://a/']}]\n").contains("static_configs[0].targets"));
    assert!(err("jobs:\n- job_name: a\n  static_configs: [{targets: ['a:1'], labels: {'a-b': c}}]\n").contains("static_configs[0].labels"));
    assert!(err("jobs:\n- job_name: a\n  file_sd_configs: [{files: ['x.txt']}]\n").contains("file_sd_configs[0].files"));
    assert!(err("jobs:\n- job_name: a\n").contains("static_configs"));
    let e = serde_yaml_ng::from_str::<ScrapeConfig>("jobs:\n- job_name: a\n  relabel_configs:\n  - action: keep\n    regex: x\n")
        .expect_err("relabel")
        .to_string();
    assert!(e.contains("source_labels is required") && e.contains("line"), "{e}");
}

/// deploy/examples/agent.yml's Argo Workflows job (in comments): valid, and
/// its relabelling keeps the workflow-controller's metrics port only.
#[test]
fn example_argo_workflows_job_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.yml");
    let text = std::fs::read_to_string(&path).expect("example");
    let mut yaml = String::from("jobs:\n");
    let mut on = false;
    for l in text.lines() {
        match l.trim() {
            "# argo workflows example begin" => on = true,
            "# argo workflows example end" => break,
            _ if on => {
                yaml.push_str(l.strip_prefix("    #").unwrap_or_default());
                yaml.push('\n');
            }
            _ => {}
        }
    }
    let cfg: ScrapeConfig = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(cfg.jobs.len(), 1, "{yaml}");
    cfg.validate(Duration::from_secs(15)).expect("valid");
    let j = &cfg.jobs[0];
    let sd = &j.kubernetes_sd_configs[0];
    assert_eq!(sd.role, "pod");
    assert_eq!(sd.selectors[0].label, "app=workflow-controller");
    let target = |port: &str| {
        let mut l: csoc_common::labels::Labels = vec![
            ("__address__".into(), format!("10.0.0.7:{port}")),
            ("__meta_kubernetes_namespace".into(), "argo".into()),
            ("__meta_kubernetes_pod_container_port_number".into(), port.into()),
            ("__meta_kubernetes_pod_name".into(), "workflow-controller-7d9c8b-abcde".into()),
        ];
        l.sort();
        csoc_common::relabel::relabel(&mut l, &j.relabel_configs).then_some(l)
    };
    let kept = target("9090").expect("metrics port kept");
    assert!(kept.contains(&("pod".to_string(), "workflow-controller-7d9c8b-abcde".to_string())));
    assert!(target("6060").is_none(), "other ports dropped");
}

/// A target answering gzip (when asked for it) and recording the request
/// headers.
async fn gzip_server(body: String) -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    use std::io::Write;
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let s2 = seen.clone();
    let app = Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let body = body.clone();
            let seen = s2.clone();
            async move {
                let gzip = headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("gzip"));
                seen.lock().expect("lock").push(headers);
                if !gzip {
                    return body.into_response();
                }
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(body.as_bytes()).expect("gzip");
                ([(header::CONTENT_ENCODING, "gzip")], e.finish().expect("gzip")).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr.to_string(), seen)
}

#[tokio::test]
async fn gzip_is_asked_for_decompressed_and_bounded_and_authorization_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cred = dir.path().join("cred");
    std::fs::write(&cred, "s3cret-scrape-token\n").expect("write");
    // 4000 lines of padding compress to little; decompressed they are
    // ~100KB, past a 10KB body_size_limit.
    let padding: String = (0..4000).map(|i| format!("pad{{i=\"{i}\"}} 1\n")).collect();
    let (addr, seen) = gzip_server(format!("a 7\n{padding}")).await;
    let auth = format!("  authorization: {{credentials_file: {}}}\n", cred.display());
    let (mut rx, stop) = start(&one_job(&addr, &auth));
    let f = next(&mut rx).await;
    assert_eq!(val(&f, "up"), Some(1.0), "{:?}", f.samples.first());
    assert_eq!(val(&f, "a"), Some(7.0));
    stop.cancel();
    let h = seen.lock().expect("lock")[0].clone();
    assert_eq!(h.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()), Some("gzip"));
    assert_eq!(
        h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
        Some("Bearer s3cret-scrape-token")
    );
    // Over body_size_limit once decompressed: the scrape fails.
    let (mut rx, stop) = start(&one_job(&addr, "  body_size_limit: 10KB\n"));
    let f = next(&mut rx).await;
    assert_eq!(val(&f, "up"), Some(0.0));
    assert_eq!(val(&f, "a"), None);
    stop.cancel();
    // enable_compression: false asks for no gzip.
    let (mut rx, stop) = start(&one_job(&addr, "  enable_compression: false\n"));
    let f = next(&mut rx).await;
    assert_eq!(val(&f, "a"), Some(7.0));
    stop.cancel();
    let last = seen.lock().expect("lock").last().cloned().expect("a request");
    assert!(last.get(header::ACCEPT_ENCODING).is_none(), "{last:?}");
    assert!(super::scrape_one::gunzip_bounded(b"not gzip", 100).is_err());
}

#[test]
fn tls_config_and_auth_fields_are_checked() {
    for (extra, want) in [
        ("  tls_config: {server_name: x}\n", "server_name"),
        ("  tls_config: {cert_file: /c}\n", "go together"),
        ("  authorization: {credentials: a}\n  basic_auth: {username: u}\n", "not several"),
        ("  authorization: {type: Basic, credentials: a}\n", "basic_auth"),
    ] {
        let cfg = one_job("127.0.0.1:9", extra);
        let e = cfg.validate(Duration::from_secs(1)).expect_err(extra);
        assert!(e.to_string().contains(want), "{extra}: {e}");
    }
    one_job("127.0.0.1:9", "  tls_config: {insecure_skip_verify: true, min_version: TLS12}\n")
        .validate(Duration::from_secs(1))
        .expect("valid");
}
