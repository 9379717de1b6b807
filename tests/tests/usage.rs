//! How a commons is used and what its services stand on, end to end through
//! the real binaries:
//! - the revproxy log's usage splits (downloads by kind, upload URLs,
//!   logins by institution) and hatchery's workspace cost (the fake commons'
//!   recorded `/allCosts`) reach the collector with the fixture's counts;
//! - Argo CD Applications served by the fake Kubernetes API server
//!   (`applications.argoproj.io`, list and watch) reach the collector as
//!   `argocd_app_info`, follow a status change, and a cluster without the
//!   CRD (404) is skipped quietly while the other kinds go on;
//! - the console shows each backend (Elasticsearch, PostgreSQL, Argo CD)
//!   beside the services that use it, with its data-* hooks.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use csoc_proto::prometheus::WriteRequest;
use csoc_tests::fakekube::{FakeKube, objects};
use csoc_tests::*;
use serde_json::Value;

const TOKEN: &str = "usage-alpha-token-0123456789ab";
const WRITER: &str = "usage-writer-token-0123456789a";
const WAIT: Duration = Duration::from_secs(40);

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn wait_value(c: &Collector, q: &str, pred: impl Fn(f64) -> bool) -> anyhow::Result<Value> {
    wait_for(q, WAIT, || {
        c.query(q)
            .ok()
            .and_then(|r| (r.len() == 1 && pred(value(&r[0]))).then(|| r[0].clone()))
    })
}

fn write_config(dir: &Path, name: &str, yaml: &str) -> anyhow::Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, yaml)?;
    Ok(p.display().to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn usage_splits_and_workspace_cost_reach_the_collector() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fixtures = workspace().join("../shared/gen3/fixtures");
    let expected: Value = serde_json::from_slice(&std::fs::read(fixtures.join("revproxy-access.expected.json"))?)?;
    let log = dir.path().join("revproxy.log");
    std::fs::copy(fixtures.join("revproxy-access.jsonl"), &log)?;
    let fake = FakeGen3::start(dir.path(), "fake", &[])?;
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN}")])?;
    let cfg = write_config(
        dir.path(),
        "agent.yml",
        &format!(
            "sources:\n  host: {{enabled: false}}\n  gen3_usage:\n    interval: 2s\n    timeout: 1s\n    hatchery_url: {}/_svc/hatchery\n",
            fake.http
        ),
    )?;
    let log_s = log.display().to_string();
    let (_agent, _) = start_agent(
        dir.path(),
        "agent",
        &c.grpc,
        &[
            "--token",
            TOKEN,
            "--config",
            &cfg,
            "--interval",
            "1s",
            "--gen3-url",
            &fake.http,
            "--revproxy-log",
            &log_s,
        ],
    )?;

    // Downloads split as Gen3's dashboards split them: the fixture's
    // drs_access and download_presigned URLs issued.
    let issued = &expected["presigned_urls_issued"];
    let drs = issued["drs_access"].as_u64().unwrap_or(0);
    let presigned = issued["download_presigned"].as_u64().unwrap_or(0);
    assert!(drs > 0 && presigned > 0);
    wait_value(&c, r#"sum(gen3_downloads_total{kind="drs"})"#, |v| v as u64 == drs)?;
    wait_value(&c, r#"sum(gen3_downloads_total{kind="presigned"})"#, |v| v as u64 == presigned)?;
    // The total is unchanged by the split.
    wait_value(&c, "sum(gen3_downloads_total)", |v| v as u64 == drs + presigned)?;
    // Upload URLs: 10 POST /user/data/upload and 13 multipart part URLs
    // (init and complete issue none), counted independently here from the
    // fixture's lines.
    let text = std::fs::read_to_string(&log)?;
    let uploads = text
        .lines()
        .filter(|l| {
            (l.contains("\"http_request\": \"/user/data/upload\"") || l.contains("\"http_request\": \"/user/data/multipart/upload\""))
                && (l.contains("\"http_status_code\": 200,") || l.contains("\"http_status_code\": 201,"))
        })
        .count() as u64;
    assert_eq!(uploads, 23);
    wait_value(&c, "sum(gen3_uploads_total)", |v| v as u64 == uploads)?;
    // Logins by idp as before, and the multi-tenant fence logins by
    // institution.
    let want: BTreeMap<String, u64> = serde_json::from_value(expected["logins"]["successful_by_idp"].clone())?;
    let got: BTreeMap<String, u64> = c
        .query("sum by (idp) (gen3_logins_total)")?
        .iter()
        .map(|s| (s["metric"]["idp"].as_str().unwrap_or("").to_string(), value(s) as u64))
        .collect();
    assert_eq!(got, want);
    let inst = wait_value(
        &c,
        r#"gen3_logins_total{idp="fence",institution="urn:mace:incommon:uchicago.edu"}"#,
        |v| v == 2.0,
    )?;
    assert_eq!(inst["metric"]["upstream_idp"], "shibboleth");
    assert_eq!(inst["metric"]["commons"], "alpha");

    // Hatchery's recorded /allCosts: 2 workspaces that have cost $1.9264 so far.
    wait_value(&c, "gen3_hatchery_workspaces", |v| v == 2.0)?;
    wait_value(&c, "gen3_hatchery_workspace_cost_dollars", |v| (v - 1.9264).abs() < 1e-9)?;
    let (code, meta) = get_json(&format!("{}/api/v1/metadata?metric=gen3_hatchery_workspace_cost_dollars", c.http))?;
    assert_eq!(code, 200);
    assert_eq!(
        meta["data"]["gen3_hatchery_workspace_cost_dollars"][0]["type"], "gauge",
        "a current figure that falls when a workspace stops: {meta}"
    );
    Ok(())
}

fn argo_agent(dir: &Path, c: &Collector, kubeconfig: &Path) -> anyhow::Result<Proc> {
    let cfg = write_config(
        dir,
        "agent.yml",
        "sources:\n  host: {enabled: false}\n  kubernetes:\n    forbidden_retry: 1s\n    sync_timeout: 10s\n    disable: [metrics, nodes]\n",
    )?;
    let kc = kubeconfig.display().to_string();
    let (agent, _) = start_agent(
        dir,
        "agent",
        &c.grpc,
        &[
            "--token",
            TOKEN,
            "--config",
            &cfg,
            "--interval",
            "1s",
            "--kubernetes-namespace",
            "gen3",
            "--kubeconfig",
            &kc,
        ],
    )?;
    Ok(agent)
}

#[test]
fn argocd_applications_reach_the_collector_and_follow_their_status() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kube = FakeKube::start()?;
    kube.install_argocd_crd();
    kube.apply(objects::namespace("gen3"));
    kube.apply(objects::pod("gen3", "fence-deployment-5d8c9-abcde", "fence", "Running"));
    kube.apply(objects::application("argocd", "fence", "gen3", "Healthy", "Synced"));
    kube.apply(objects::application("argocd", "guppy", "gen3", "Degraded", "OutOfSync"));
    // Another commons' Application in the same Argo CD: not reported.
    kube.apply(objects::application("argocd", "fence-b", "gen3-b", "Healthy", "Synced"));
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "gen3")?;
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN}")])?;
    let _agent = argo_agent(dir.path(), &c, &kubeconfig)?;

    let s = wait_value(
        &c,
        r#"argocd_app_info{name="guppy",health_status="Degraded",sync_status="OutOfSync"}"#,
        |v| v == 1.0,
    )?;
    let m = &s["metric"];
    assert_eq!(m["namespace"], "argocd");
    assert_eq!(m["project"], "gen3");
    assert_eq!(m["autosync_enabled"], "true");
    assert_eq!(m["repo"], "https://github.com/uc-cdis/gen3-helm");
    assert_eq!(m["dest_server"], "https://kubernetes.default.svc");
    assert_eq!(m["dest_namespace"], "gen3");
    assert_eq!(m["commons"], "alpha");
    wait_value(
        &c,
        r#"argocd_app_info{name="fence",health_status="Healthy",sync_status="Synced"}"#,
        |v| v == 1.0,
    )?;
    assert!(
        c.query(r#"argocd_app_info{name="fence-b"}"#)?.is_empty(),
        "another commons' Application"
    );
    wait_value(&c, "count(argocd_app_info)", |v| v == 2.0)?;

    // guppy recovers while a sync runs: the old series ends (staleness
    // marker), the new one starts.
    let mut app = objects::application("argocd", "guppy", "gen3", "Progressing", "Synced");
    objects::set_app_operation(&mut app, true);
    kube.apply(app);
    wait_value(
        &c,
        r#"argocd_app_info{name="guppy",health_status="Progressing",operation="sync"}"#,
        |v| v == 1.0,
    )?;
    wait_for("the Degraded series to end", WAIT, || {
        c.query(r#"argocd_app_info{name="guppy",health_status="Degraded"}"#)
            .ok()
            .filter(Vec::is_empty)
    })?;
    // Deleted: gone.
    kube.delete("Application", Some("argocd"), "fence");
    wait_for("fence's Application to go", WAIT, || {
        c.query(r#"argocd_app_info{name="fence"}"#).ok().filter(Vec::is_empty)
    })?;
    // Listed once, then watched (never polled).
    let reqs = kube.requests();
    let path = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications";
    assert!(reqs.iter().any(|r| r.path == path && !r.watch), "listed");
    assert!(reqs.iter().any(|r| r.path == path && r.watch), "watched");
    Ok(())
}

#[test]
fn argocd_without_its_crd_is_skipped_quietly_and_found_once_installed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kube = FakeKube::start()?;
    kube.apply(objects::namespace("gen3"));
    kube.apply(objects::pod("gen3", "fence-deployment-5d8c9-abcde", "fence", "Running"));
    kube.apply(objects::application("argocd", "fence", "gen3", "Healthy", "Synced"));
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, "gen3")?;
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN}")])?;
    let agent = argo_agent(dir.path(), &c, &kubeconfig)?;

    // The other kinds go on; Applications are not served (404).
    wait_value(&c, r#"kube_pod_info{pod="fence-deployment-5d8c9-abcde"}"#, |v| v == 1.0)?;
    wait_value(&c, r#"csoc_agent_kubernetes_objects{kind="applications"}"#, |v| v == 0.0)?;
    wait_value(
        &c,
        r#"csoc_agent_kubernetes_forbidden{kind="applications",namespace="argocd"}"#,
        |v| v == 0.0,
    )?;
    // Tried again (forbidden_retry 1s), never counted as an error, logged once.
    wait_for("a retry of the applications list", WAIT, || {
        let n = kube
            .requests()
            .iter()
            .filter(|r| r.path == "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications")
            .count();
        (n >= 3).then_some(())
    })?;
    let errors = c.query(r#"csoc_agent_source_errors_total{source="kubernetes"} > 0"#)?;
    assert!(errors.is_empty(), "a missing CRD is no error: {errors:?}");
    let log = agent.log_text();
    assert_eq!(
        log.matches("not served (404").count(),
        1,
        "logged once, however many retries:\n{log}"
    );
    assert!(c.query("argocd_app_info")?.is_empty());

    // Argo CD installed: found at the next retry.
    kube.install_argocd_crd();
    wait_value(&c, r#"argocd_app_info{name="fence",health_status="Healthy"}"#, |v| v == 1.0)?;
    Ok(())
}

#[test]
fn console_shows_backends_beside_the_services_that_use_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Collector::start(
        dir.path(),
        &[
            "--agent-token",
            &format!("alpha={TOKEN}"),
            "--api-token",
            &format!("ops={WRITER}:write"),
        ],
    )?;
    // Stand-in series for the elasticsearch and postgres sources (another
    // branch) and Argo CD, with the services' probes.
    let t = now_ms();
    let mut ts = Vec::new();
    for svc in ["guppy", "fence", "indexd", "portal"] {
        ts.push(series(
            &[("__name__", "gen3_service_up"), ("job", "gen3"), ("service", svc)],
            vec![(t, 1.0)],
        ));
    }
    for (color, v) in [("green", 0.0), ("yellow", 0.0), ("red", 1.0)] {
        ts.push(series(
            &[
                ("__name__", "elasticsearch_cluster_health_status"),
                ("cluster", "gen3-es"),
                ("color", color),
            ],
            vec![(t, v)],
        ));
    }
    for (db, up) in [("fence", 0.0), ("indexd", 1.0), ("metadata", 1.0)] {
        ts.push(series(&[("__name__", "pg_up"), ("database", db)], vec![(t, up)]));
    }
    ts.push(series(
        &[
            ("__name__", "pg_stat_database_numbackends"),
            ("database", "indexd"),
            ("datname", "indexd"),
        ],
        vec![(t, 43.0)],
    ));
    ts.push(series(
        &[("__name__", "pg_settings_max_connections"), ("database", "indexd")],
        vec![(t, 100.0)],
    ));
    ts.push(series(
        &[
            ("__name__", "argocd_app_info"),
            ("name", "fence"),
            ("health_status", "Degraded"),
            ("sync_status", "OutOfSync"),
        ],
        vec![(t, 1.0)],
    ));
    remote_write(
        &c.http,
        TOKEN,
        &WriteRequest {
            timeseries: ts,
            ..Default::default()
        },
    )?;
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let r = client
        .post(format!("{}/login", c.http))
        .form(&[("token", WRITER), ("next", "/")])
        .send()?;
    let cookie = r.headers()["set-cookie"]
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let page = |path: &str| -> anyhow::Result<String> {
        let r = client.get(format!("{}{path}", c.http)).header("cookie", &cookie).send()?;
        anyhow::ensure!(r.status().as_u16() == 200, "{path}: HTTP {}", r.status());
        Ok(r.text()?)
    };

    // The commons page: each backend in the service's row.
    let body = wait_for("the commons page with backends", WAIT, || {
        page("/commons/alpha").ok().filter(|b| b.contains("data-backend="))
    })?;
    let row = |svc: &str| -> String {
        let start = body.find(&format!("<tr data-service=\"{svc}\"")).unwrap_or(body.len());
        let end = body[start..].find("</tr>").map_or(body.len(), |e| start + e);
        body[start..end].to_string()
    };
    let guppy = row("guppy");
    assert!(
        guppy.contains("data-backend=\"elasticsearch\" data-backend-name=\"gen3-es\" data-backend-state=\"red\""),
        "guppy's row shows Elasticsearch: {guppy}"
    );
    assert!(guppy.contains("Elasticsearch red") && guppy.contains("be bad"), "{guppy}");
    let fence = row("fence");
    assert!(
        fence.contains("data-backend=\"postgres\" data-backend-name=\"fence\" data-backend-state=\"down\""),
        "fence's row shows its database: {fence}"
    );
    assert!(
        fence.contains("data-backend=\"argocd\" data-backend-name=\"fence\" data-backend-state=\"Degraded\""),
        "fence's row shows its Argo CD application: {fence}"
    );
    assert!(!fence.contains("elasticsearch"), "{fence}");
    let indexd = row("indexd");
    assert!(
        indexd.contains("data-backend-state=\"up\"") && indexd.contains("43% of connections"),
        "{indexd}"
    );
    assert!(!row("portal").contains("data-backend="), "portal has no known backend");
    // The backends section lists every one, with who uses it: the metadata
    // database has no probed service of that name.
    assert!(body.contains("<tr data-backend=\"postgres\" data-backend-name=\"metadata\" data-backend-state=\"up\">"));

    // The fleet grid: the cells carry the backends' state.
    let fleet = page("/")?;
    assert!(
        fleet.contains("data-service=\"guppy\" data-state=\"up\" data-backends=\"elasticsearch:gen3-es=red\""),
        "{fleet}"
    );
    assert!(
        fleet.contains("data-service=\"fence\" data-state=\"up\" data-backends=\"argocd:fence=Degraded postgres:fence=down\""),
        "{fleet}"
    );
    assert!(fleet.contains("data-service=\"portal\" data-state=\"up\" aria-label"), "{fleet}");
    Ok(())
}
