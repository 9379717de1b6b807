use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::time::Instant;

use super::probe::{MAX_LABEL_LEN, looks_like_html, parse_version};
use super::*;
use crate::model::Frame;

/// Time limit of the tests' probes.
const T: Duration = Duration::from_secs(5);

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/gen3/fixtures/status")
}

fn fixture(name: &str) -> Vec<u8> {
    let p = fixtures_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading fixture {}: {e}", p.display()))
}

/// The fixtures' index.json entries.
fn index() -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&fixture("index.json")).expect("index.json is JSON");
    v.as_array().cloned().expect("index.json is an array")
}

#[derive(Clone)]
struct Route {
    status: u16,
    body: Vec<u8>,
    delay: Duration,
    location: Option<&'static str>,
}

fn route(status: u16, body: Vec<u8>) -> Route {
    Route {
        status,
        body,
        delay: Duration::ZERO,
        location: None,
    }
}

/// The public (through-revproxy) answers of a healthy commons, from
/// index.json: every `healthy` entry with a public path, plus the portal.
fn healthy_commons() -> HashMap<String, Route> {
    let mut routes = HashMap::new();
    for e in index() {
        let (Some(variant), Some(public), Some(status), Some(file)) = (
            e["variant"].as_str(),
            e["public_path"].as_str(),
            e["status"].as_u64(),
            e["body_file"].as_str(),
        ) else {
            continue;
        };
        let Some(path) = public.split_whitespace().next().filter(|p| p.starts_with('/')) else {
            continue;
        };
        if variant == "healthy" {
            routes.insert(path.to_string(), route(status as u16, fixture(file)));
        }
    }
    routes.insert("/".into(), route(200, b"<!doctype html><html><body>portal</body></html>".to_vec()));
    routes
}

async fn answer(State(routes): State<Arc<HashMap<String, Route>>>, uri: Uri) -> Response {
    let Some(r) = routes.get(uri.path()).cloned() else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    tokio::time::sleep(r.delay).await;
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match r.location {
        Some(l) => (status, [(header::LOCATION, l)], r.body).into_response(),
        None => (status, r.body).into_response(),
    }
}

/// Serves `routes` on a loopback port; returns the base URL.
async fn serve(routes: HashMap<String, Route>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().fallback(answer).with_state(Arc::new(routes));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn config(base: &str) -> Gen3StatusConfig {
    Gen3StatusConfig {
        enabled: true,
        base_url: base.to_string(),
        ..Default::default()
    }
}

fn outcome<'a>(r: &'a Round, service: &str) -> &'a ProbeOutcome {
    r.outcomes
        .iter()
        .find(|o| o.service == service)
        .unwrap_or_else(|| panic!("no outcome for {service}"))
}

fn sample(f: &Frame, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    f.samples
        .iter()
        .find(|s| {
            s.labels.iter().any(|(k, v)| k == "__name__" && v == name)
                && labels.iter().all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
        })
        .map(|s| s.value)
}

fn info_labels(f: &Frame, service: &str) -> Option<Vec<(String, String)>> {
    f.samples
        .iter()
        .find(|s| {
            s.labels.iter().any(|(k, v)| k == "__name__" && v == "gen3_service_info")
                && s.labels.iter().any(|(k, v)| k == "service" && v == service)
        })
        .map(|s| s.labels.clone())
}

const PUBLIC: [&str; 15] = [
    "revproxy",
    "portal",
    "fence",
    "indexd",
    "sheepdog",
    "peregrine",
    "metadata",
    "guppy",
    "audit",
    "requestor",
    "manifestservice",
    "wts",
    "gen3-workflow",
    "gen3-user-data-library",
    "custom",
];

#[tokio::test]
async fn healthy_commons_every_public_service_is_up_with_its_version() {
    let mut routes = healthy_commons();
    routes.insert("/custom/health".into(), route(200, b"ok".to_vec()));
    let base = serve(routes).await;
    let mut cfg = config(&base);
    cfg.services.insert(
        "custom".into(),
        ServiceConfig {
            health_path: Some("/custom/health".into()),
            ..Default::default()
        },
    );
    let src = Gen3StatusSource::new(&cfg).expect("valid");
    let names: Vec<&str> = src.targets().iter().map(|t| t.service.as_str()).collect();
    assert_eq!(names, PUBLIC, "services probed through revproxy by default");
    assert_eq!(
        src.skipped,
        [
            "presigned-url-fence",
            "arborist",
            "hatchery",
            "ambassador",
            "sower",
            "ssjdispatcher"
        ]
    );
    let before = csoc_common::time::now_ms();
    let r = src.collect("gen3_status", T).await;
    for o in &r.outcomes {
        assert!(o.up, "{} is down: {:?}", o.service, o.error);
        assert!(o.ts_ms >= before && o.duration < 5.0);
    }
    let f = &r.frame;
    assert_eq!(sample(f, "gen3_service_up", &[("service", "fence"), ("job", "gen3")]), Some(1.0));
    assert_eq!(sample(f, "gen3_probe_http_status_code", &[("service", "fence")]), Some(200.0));
    assert_eq!(
        sample(f, "gen3_probe_http_status_code", &[("service", "gen3-user-data-library")]),
        Some(201.0),
        "201 is healthy"
    );
    assert!(sample(f, "gen3_probe_duration_seconds", &[("service", "indexd")]).is_some_and(|d| d > 0.0));
    // Versions: {"commit","version"}, {"version"}, a bare string, sheepdog's dictionary.
    let l = |pairs: &[(&str, &str)]| -> Option<Vec<(String, String)>> {
        let mut v: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        v.push(("__name__".into(), "gen3_service_info".into()));
        v.push(("job".into(), "gen3".into()));
        v.sort();
        Some(v)
    };
    assert_eq!(
        info_labels(f, "fence"),
        l(&[
            ("service", "fence"),
            ("version", "2026.08"),
            ("commit", "87b2219b0055fcbf278ca42d9751a0c2ab2442bc")
        ])
    );
    assert_eq!(info_labels(f, "metadata"), l(&[("service", "metadata"), ("version", "4.3.0")]));
    assert_eq!(info_labels(f, "audit"), l(&[("service", "audit"), ("version", "2.2.1")]));
    assert_eq!(
        info_labels(f, "sheepdog"),
        l(&[
            ("service", "sheepdog"),
            ("version", "2026.05"),
            ("commit", "727de14d025113d2225bffeb12740060ca4fda0b")
        ])
    );
    assert_eq!(info_labels(f, "manifestservice"), None, "no version endpoint");
    assert_eq!(info_labels(f, "revproxy"), None);
    assert_eq!(
        sample(f, "gen3_tls_cert_expiry_timestamp_seconds", &[]),
        None,
        "no certificate over http"
    );
    // Every sample has metadata.
    for s in &f.samples {
        assert!(
            f.metadata.iter().any(|m| m.name == s.labels[0].1),
            "no metadata for {}",
            s.labels[0].1
        );
    }
}

#[tokio::test]
async fn unhealthy_services_500_and_revproxy_502() {
    let mut routes = healthy_commons();
    // In-cluster style: the service's own error page; through revproxy: its JSON, status kept.
    routes.insert("/user/_status".into(), route(500, fixture("fence._status.unhealthy.html")));
    routes.insert("/index/_status".into(), route(500, fixture("revproxy.5xx-body.json")));
    routes.insert("/guppy/_status".into(), route(502, fixture("revproxy.5xx-body.json")));
    routes.insert("/guppy/_version".into(), route(502, fixture("revproxy.5xx-body.json")));
    // A catch-all route answering the portal's page for a service path.
    routes.insert("/requestor/_status".into(), route(200, b"\n<!DOCTYPE html><html></html>".to_vec()));
    // hatchery's public path sends anonymous callers away.
    let mut redirect = route(302, Vec::new());
    redirect.location = Some("/no-workspace-access");
    routes.insert("/wts/_status".into(), redirect);
    let base = serve(routes).await;
    let r = Gen3StatusSource::new(&config(&base))
        .expect("valid")
        .collect("gen3_status", T)
        .await;
    for (svc, status, kind) in [
        ("fence", 500, "http_status"),
        ("indexd", 500, "http_status"),
        ("guppy", 502, "http_status"),
        ("requestor", 200, "unexpected_body"),
        ("wts", 302, "http_status"),
    ] {
        let o = outcome(&r, svc);
        assert!(!o.up, "{svc}");
        assert_eq!(o.status, status, "{svc}");
        assert_eq!(o.error.as_ref().map(|e| e.0), Some(kind), "{svc}: {:?}", o.error);
        assert_eq!(sample(&r.frame, "gen3_service_up", &[("service", svc)]), Some(0.0));
        assert_eq!(
            sample(&r.frame, "gen3_probe_http_status_code", &[("service", svc)]),
            Some(f64::from(status))
        );
    }
    // A 500 health with a working version endpoint still reports the version.
    assert!(info_labels(&r.frame, "fence").is_some());
    assert!(info_labels(&r.frame, "guppy").is_none());
    assert!(outcome(&r, "portal").up, "the portal's HTML is its health");
    assert!(outcome(&r, "audit").up);
}

#[tokio::test]
async fn refused_connection_is_down_with_status_0() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let base = serve(healthy_commons()).await;
    let mut cfg = config(&base);
    cfg.services.insert(
        "fence".into(),
        ServiceConfig {
            url: Some(format!("http://{closed}")),
            ..Default::default()
        },
    );
    let src = Gen3StatusSource::new(&cfg).expect("valid");
    let fence = src.targets().iter().find(|t| t.service == "fence").expect("fence");
    assert_eq!(fence.health_url, format!("http://{closed}/_status"), "own url: in-cluster path");
    let r = src.collect("gen3_status", T).await;
    let o = outcome(&r, "fence");
    assert!(!o.up);
    assert_eq!(o.status, 0);
    assert_eq!(o.error.as_ref().map(|e| e.0), Some("connect"), "{:?}", o.error);
    assert_eq!(sample(&r.frame, "gen3_probe_http_status_code", &[("service", "fence")]), Some(0.0));
    assert!(info_labels(&r.frame, "fence").is_none(), "version unknown");
    assert!(outcome(&r, "indexd").up, "one service down does not affect the others");
}

#[tokio::test]
async fn slow_service_times_out_and_others_are_not_held_up() {
    let mut routes = healthy_commons();
    if let Some(r) = routes.get_mut("/index/_status") {
        r.delay = Duration::from_secs(5);
    }
    let base = serve(routes).await;
    let src = Gen3StatusSource::new(&config(&base)).expect("valid");
    let start = Instant::now();
    let r = src.collect("gen3_status", Duration::from_millis(300)).await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "a round is bounded by the timeout, not the slowest service: {took:?}"
    );
    let o = outcome(&r, "indexd");
    assert!(!o.up);
    assert_eq!(o.status, 0);
    assert_eq!(o.error.as_ref().map(|e| e.0), Some("timeout"), "{:?}", o.error);
    assert!(o.duration >= 0.25 && o.duration < 2.0, "{}", o.duration);
    assert!(outcome(&r, "fence").up);
}

#[test]
fn versions_of_every_fixture() {
    let mut n = 0;
    for e in index() {
        let path = e["path"].as_str().unwrap_or_default();
        if !(path.ends_with("_version") || path == "/version") {
            continue;
        }
        let file = e["body_file"].as_str().expect("body_file");
        let (v, _) = parse_version(&fixture(file)).unwrap_or_else(|| panic!("no version in {file}"));
        assert!(!v.is_empty());
        n += 1;
    }
    assert_eq!(n, 12, "version fixtures");
    let p = |s: &str| parse_version(s.as_bytes());
    assert_eq!(p("\"4.3.0\"\n"), Some(("4.3.0".into(), None)));
    assert_eq!(p(r#"{"version":"1.7.1"}"#), Some(("1.7.1".into(), None)));
    assert_eq!(
        p(r#"{"commit":"82da7d9","dictionary":{"commit":"","version":"3.2.6"},"version":"2026.04"}"#),
        Some(("2026.04".into(), Some("82da7d9".into())))
    );
    assert_eq!(p(r#"{"version":"2026.08","commit":""}"#), Some(("2026.08".into(), None)));
    for bad in [
        "",
        "Healthy",
        "{}",
        "[]",
        "3",
        r#"{"version":3}"#,
        r#"{"version":"  "}"#,
        r#""a\nb""#,
    ] {
        assert_eq!(p(bad), None, "{bad:?}");
    }
    let long = format!("\"{}\"", "x".repeat(500));
    assert_eq!(p(&long).map(|(v, _)| v.len()), Some(MAX_LABEL_LEN));
}

#[test]
fn html_detection() {
    assert!(looks_like_html(b"<!doctype html>"));
    assert!(looks_like_html(b"\xEF\xBB\xBF  \n<html>"));
    assert!(!looks_like_html(b"Healthy"));
    assert!(!looks_like_html(b"{\"status\":\"OK\"}"));
    assert!(!looks_like_html(b""));
}

#[test]
fn config_targets_and_errors_name_the_field() {
    let err = |c: &Gen3StatusConfig| c.validate(Duration::from_secs(15)).expect_err("invalid").to_string();
    let e = err(&Gen3StatusConfig {
        enabled: true,
        ..Default::default()
    });
    assert!(e.contains("sources.gen3_status.base_url") && e.contains("required"), "{e}");
    let e = err(&config("data.example.org"));
    assert!(e.contains("sources.gen3_status.base_url"), "{e}");
    let e = err(&config("ftp://data.example.org"));
    assert!(e.contains("base_url") && e.contains("http"), "{e}");
    let mut c = config("https://data.example.org");
    c.timeout = Some(Duration::from_secs(15));
    let e = err(&c);
    assert!(
        e.contains("sources.gen3_status.timeout") && e.contains("shorter than the interval"),
        "{e}"
    );
    c.interval = Some(Duration::from_secs(30));
    c.validate(Duration::from_secs(15)).expect("own interval longer than the timeout");
    // Without a timeout, the default follows a short interval.
    assert_eq!(effective_timeout(None, Duration::from_secs(15)), DEFAULT_TIMEOUT);
    assert_eq!(effective_timeout(None, Duration::from_secs(2)), Duration::from_millis(1600));
    assert_eq!(
        effective_timeout(Some(Duration::from_secs(1)), Duration::from_secs(2)),
        Duration::from_secs(1)
    );
    config("https://data.example.org")
        .validate(Duration::from_secs(2))
        .expect("default timeout, short interval");
    let mut c = config("https://data.example.org");
    c.services.insert("mine".into(), ServiceConfig::default());
    let e = err(&c);
    assert!(e.contains("sources.gen3_status.services.mine.health_path"), "{e}");
    c.services.insert(
        "mine".into(),
        ServiceConfig {
            health_path: Some("health".into()),
            ..Default::default()
        },
    );
    let e = err(&c);
    assert!(e.contains("services.mine.health_path") && e.contains("starting with /"), "{e}");
    let mut c = config("https://data.example.org");
    c.namespace = "Gen3_Prod".into();
    assert!(err(&c).contains("sources.gen3_status.namespace"));

    // In-cluster: every built-in service, in-cluster paths and ports.
    let mut c = config("https://data.example.org/");
    c.namespace = "gen3".into();
    c.services.insert(
        "guppy".into(),
        ServiceConfig {
            enabled: false,
            ..Default::default()
        },
    );
    c.services.insert(
        "metadata".into(),
        ServiceConfig {
            version_path: Some(String::new()),
            ..Default::default()
        },
    );
    let (t, skipped) = c.targets().expect("valid");
    assert!(skipped.is_empty());
    assert_eq!(t.len(), BUILTIN_SERVICES.len() - 1);
    assert!(!t.iter().any(|t| t.service == "guppy"), "disabled");
    let get = |n: &str| t.iter().find(|t| t.service == n).cloned().expect(n);
    assert_eq!(get("arborist").health_url, "http://arborist-service.gen3.svc.cluster.local/health");
    assert_eq!(
        get("ambassador").health_url,
        "http://ambassador-admin.gen3.svc.cluster.local:8877/ambassador/v0/check_alive"
    );
    assert_eq!(
        get("wts").version_url.as_deref(),
        Some("http://workspace-token-service.gen3.svc.cluster.local/_version")
    );
    assert_eq!(get("metadata").version_url, None, "version_path \"\" turns it off");
    assert!(!get("fence").via_base);

    // Only the services named, with built-in paths through revproxy.
    let mut c = config("https://data.example.org");
    c.default_services = false;
    c.services.insert("fence".into(), ServiceConfig::default());
    c.services.insert(
        "orthanc".into(),
        ServiceConfig {
            health_path: Some("/orthanc/system".into()),
            ..Default::default()
        },
    );
    let (t, _) = c.targets().expect("valid");
    assert_eq!(
        t,
        vec![
            Target {
                service: "fence".into(),
                health_url: "https://data.example.org/user/_status".into(),
                version_url: Some("https://data.example.org/user/_version".into()),
                html_ok: false,
                via_base: true,
            },
            Target {
                service: "orthanc".into(),
                health_url: "https://data.example.org/orthanc/system".into(),
                version_url: None,
                html_ok: false,
                via_base: true,
            }
        ]
    );
    let mut c = config("https://data.example.org");
    c.default_services = false;
    c.services.insert("arborist".into(), ServiceConfig::default());
    let e = err(&c);
    assert!(e.contains("sources.gen3_status.services") && e.contains("arborist"), "{e}");
}

#[test]
fn yaml_example_and_flag() {
    let y = "sources:\n  gen3_status:\n    enabled: true\n    base_url: https://data.example.org\n    interval: 30s\n    timeout: 3s\n    services:\n      guppy: {enabled: false}\n      fence: {url: 'http://fence-service.gen3'}\n";
    let c = crate::config::AgentConfig::from_yaml(y, Path::new("a.yml")).expect("parse");
    assert_eq!(c.sources.gen3_status.interval, Some(Duration::from_secs(30)));
    assert_eq!(c.sources.gen3_status.timeout, Some(Duration::from_secs(3)));
    c.validate().expect("valid");
    let e =
        crate::config::AgentConfig::from_yaml("sources:\n  gen3_status:\n    base_ur: x\n", Path::new("a.yml")).expect_err("unknown field");
    assert!(e.to_string().contains("base_ur"), "{e}");
    let mut c = crate::config::AgentConfig::default();
    c.sources.gen3_status.enabled = true;
    c.sources.gen3_status.timeout = Some(Duration::from_secs(20));
    c.sources.gen3_status.base_url = "https://x.org".into();
    assert!(
        c.validate()
            .expect_err("timeout")
            .to_string()
            .contains("sources.gen3_status.timeout")
    );
    // The shipped example parses and validates.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.yml");
    let c = crate::config::AgentConfig::from_file(&example).expect("example parses");
    c.validate().expect("example is valid");
    use clap::Parser;
    let args = crate::cli::Args::try_parse_from(["csoc-agent", "--gen3-url", "https://data.example.org"]).expect("flags");
    let c = args.resolve().expect("resolve");
    assert!(c.sources.gen3_status.enabled);
    assert_eq!(c.sources.gen3_status.base_url, "https://data.example.org");
    c.validate().expect("valid");
}

#[tokio::test]
async fn source_compliance_against_the_fixture_commons() {
    let base = serve(healthy_commons()).await;
    let src = Gen3StatusSource::new(&config(&base)).expect("valid");
    let frame = crate::sources::test_util::run_and_assert_source_compliance(Box::new(src), "gen3_status").await;
    assert_eq!(frame.source, "gen3_status");
    assert_eq!(sample(&frame, "gen3_service_up", &[("service", "peregrine")]), Some(1.0));
}

/// A CA and a leaf for 127.0.0.1 valid until `not_after`: (CA PEM, leaf
/// DER, leaf key DER).
fn certs(not_after: (i32, u8, u8)) -> (String, Vec<u8>, Vec<u8>, i64) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "csoc test CA");
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    leaf.not_before = rcgen::date_time_ymd(2019, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let expiry = leaf.not_after.unix_timestamp();
    let leaf = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
    (ca.pem(), leaf.der().to_vec(), key.serialize_der(), expiry)
}

/// A TLS server answering every request `200 Healthy`.
async fn serve_tls(cert: Vec<u8>, key: Vec<u8>) -> String {
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(cert)],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nHealthy")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://{addr}")
}

fn tls_config(base: &str) -> Gen3StatusConfig {
    let mut c = config(base);
    c.default_services = false;
    c.services.insert("revproxy".into(), ServiceConfig::default());
    c
}

#[tokio::test]
async fn untrusted_or_expired_certificate_is_down_but_its_expiry_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (not_after, trusted, want_up) in [
        ((2099, 1, 1), false, false),
        ((2099, 1, 1), true, true),
        ((2021, 1, 1), true, false),
    ] {
        let (ca_pem, leaf, key, expiry) = certs(not_after);
        let base = serve_tls(leaf, key).await;
        let mut cfg = tls_config(&base);
        if trusted {
            let p = dir.path().join("ca.pem");
            std::fs::write(&p, &ca_pem).expect("write CA");
            cfg.ca_file = Some(p);
        }
        let r = Gen3StatusSource::new(&cfg).expect("valid").collect("gen3_status", T).await;
        let o = outcome(&r, "revproxy");
        let case = format!("not_after {not_after:?}, trusted {trusted}");
        assert_eq!(o.up, want_up, "{case}: {:?}", o.error);
        if want_up {
            assert_eq!(o.status, 200, "{case}");
        } else {
            assert_eq!(o.status, 0, "{case}");
            assert_eq!(o.error.as_ref().map(|e| e.0), Some("tls"), "{case}: {:?}", o.error);
        }
        assert_eq!(r.cert_error, None, "{case}");
        assert_eq!(
            sample(
                &r.frame,
                "gen3_tls_cert_expiry_timestamp_seconds",
                &[("host", "127.0.0.1"), ("job", "gen3")]
            ),
            Some(expiry as f64),
            "{case}"
        );
    }
}

#[test]
fn bad_ca_file_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = tls_config("https://data.example.org");
    c.ca_file = Some(dir.path().join("missing.pem"));
    let e = Gen3StatusSource::new(&c).err().expect("missing file").to_string();
    assert!(e.contains("sources.gen3_status.ca_file") && e.contains("missing.pem"), "{e}");
    let p = dir.path().join("empty.pem");
    std::fs::write(&p, "not a certificate\n").expect("write");
    c.ca_file = Some(p);
    let e = Gen3StatusSource::new(&c).err().expect("no PEM").to_string();
    assert!(e.contains("sources.gen3_status.ca_file"), "{e}");
}
