//! Grafana: the provisioning files and dashboards in grafana/. The
//! dashboards' structure is checked (schema version, uids, variables, data
//! source, grid positions, panel ids), and every query they hold (panel
//! targets, also in collapsed rows, and the variables' `label_values`) is
//! run, with the variables substituted as Grafana does, against a collector
//! in the quickstart's setup (`--local-agent`) plus an agent on a fake Gen3
//! commons with a revproxy log, a service down, a firing alert, sent and
//! failed notifications and an ingest-limit rejection: each must evaluate
//! and return data. The Kubernetes panels read kube-state-metrics-named
//! series that, until the agent's kubernetes source is merged, a stand-in
//! writes through remote write (`feed_kubernetes_standin`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use csoc_proto::prometheus::WriteRequest;
use csoc_tests::*;
use serde_json::Value;

const TOKEN: &str = "grafana-e2e-token-0123456789abcdef";
/// The commons of the test's agent (the local agent is `local`).
const COMMONS: &str = "alpha";
/// Its `environment` external label.
const ENVIRONMENT: &str = "test";
/// Time limit of each setup wait, and of the retries of the panel queries.
const WAIT: Duration = Duration::from_secs(60);

fn grafana_dir() -> PathBuf {
    workspace().join("grafana")
}

fn read_yaml(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    csoc_common::config::parse_yaml::<Value>(&text, path).map_err(|e| anyhow!("{e}"))
}

/// The uid of the provisioned data source (and checks the file).
fn provisioned_datasource_uid() -> anyhow::Result<String> {
    let path = grafana_dir().join("provisioning/datasources/csoc-watch.yml");
    let v = read_yaml(&path)?;
    ensure!(v["apiVersion"] == 1, "{}: apiVersion 1: {v}", path.display());
    let ds = v["datasources"].as_array().context("datasources is a list")?;
    ensure!(ds.len() == 1, "{}: one data source: {v}", path.display());
    let d = &ds[0];
    ensure!(d["type"] == "prometheus", "{}: type prometheus: {d}", path.display());
    ensure!(d["access"] == "proxy", "{}: access proxy: {d}", path.display());
    ensure!(
        d["url"] == "http://127.0.0.1:9300",
        "{}: the collector's default address: {d}",
        path.display()
    );
    let uid = d["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
        .context("the data source has a fixed uid")?;
    Ok(uid.to_string())
}

/// The dashboards: (file name, JSON).
fn dashboards() -> anyhow::Result<Vec<(String, Value)>> {
    let dir = grafana_dir().join("dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let v: Value = serde_json::from_slice(&std::fs::read(&p)?).with_context(|| format!("{name} is not JSON"))?;
            out.push((name, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[test]
fn grafana_provisioning_files_parse_and_point_at_the_dashboards() -> anyhow::Result<()> {
    provisioned_datasource_uid()?;
    let path = grafana_dir().join("provisioning/dashboards/csoc-watch.yml");
    let v = read_yaml(&path)?;
    ensure!(v["apiVersion"] == 1, "{}: apiVersion 1: {v}", path.display());
    let providers = v["providers"].as_array().context("providers is a list")?;
    ensure!(providers.len() == 1, "one provider: {v}");
    let p = &providers[0];
    ensure!(p["type"] == "file", "a file provider: {p}");
    ensure!(p["folder"] == "csoc-watch", "folder csoc-watch: {p}");
    let dir = p["options"]["path"].as_str().context("options.path")?;
    ensure!(
        dir.trim_end_matches('/').ends_with("grafana/dashboards"),
        "the provider reads this repository's grafana/dashboards/: {dir}"
    );
    let n = dashboards()?.len();
    ensure!(n >= 4, "grafana/dashboards/ holds the dashboards ({n} found)");
    Ok(())
}

/// Every panel, rows' nested panels included, depth first.
fn all_panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(ps: &'a Value, out: &mut Vec<&'a Value>) {
        for p in ps.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// Panel types of current Grafana (10/11); the Angular ones are gone.
const PANEL_TYPES: &[&str] = &[
    "row",
    "timeseries",
    "stat",
    "table",
    "state-timeline",
    "status-history",
    "bargauge",
    "gauge",
    "barchart",
    "piechart",
    "heatmap",
    "histogram",
    "text",
];

#[test]
fn grafana_dashboards_are_well_formed() -> anyhow::Result<()> {
    let ds_uid = provisioned_datasource_uid()?;
    let mut uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut problems = Vec::new();
    let range = regex::Regex::new(r"\[([^\]]*)\]")?;
    for (name, d) in dashboards()? {
        let mut bad = |what: String| problems.push(format!("{name}: {what}"));
        if d["schemaVersion"].as_u64().unwrap_or(0) < 39 {
            bad(format!("schemaVersion {} < 39", d["schemaVersion"]));
        }
        match d["uid"].as_str() {
            Some(u) if !u.is_empty() && u.len() <= 40 => {
                if !uids.insert(u.to_string()) {
                    bad(format!("uid {u} used twice"));
                }
            }
            _ => bad(format!("uid {} missing or longer than 40", d["uid"])),
        }
        if !titles.insert(d["title"].as_str().unwrap_or("").to_string()) {
            bad(format!("title {} used twice or missing", d["title"]));
        }
        let vars = d["templating"]["list"].as_array().cloned().unwrap_or_default();
        for want in ["commons", "environment"] {
            match vars.iter().find(|v| v["name"] == want) {
                None => bad(format!("no variable {want}")),
                Some(v) => {
                    if v["multi"] != true || v["includeAll"] != true || v["allValue"] != ".*" {
                        bad(format!("variable {want}: multi, includeAll and allValue .* wanted: {v}"));
                    }
                }
            }
        }
        for v in &vars {
            if v["type"] == "query" && v["datasource"]["uid"] != ds_uid.as_str() {
                bad(format!("variable {}: data source {} is not {ds_uid}", v["name"], v["datasource"]));
            }
        }
        let mut ids = BTreeSet::new();
        for p in all_panels(&d) {
            let title = p["title"].as_str().unwrap_or("");
            let ty = p["type"].as_str().unwrap_or("");
            if !PANEL_TYPES.contains(&ty) {
                bad(format!("panel {title:?}: type {ty:?} is not a current panel type"));
            }
            match p["id"].as_u64() {
                Some(id) => {
                    if !ids.insert(id) {
                        bad(format!("panel {title:?}: id {id} used twice"));
                    }
                }
                None => bad(format!("panel {title:?}: no id")),
            }
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64(), g["w"].as_u64());
            if g["h"].as_u64().is_none() || g["y"].as_u64().is_none() || x.zip(w).is_none_or(|(x, w)| w == 0 || x + w > 24) {
                bad(format!("panel {title:?}: gridPos {g}"));
            }
            if ty == "row" {
                continue;
            }
            if p["datasource"]["uid"] != ds_uid.as_str() {
                bad(format!("panel {title:?}: data source {} is not uid {ds_uid}", p["datasource"]));
            }
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                bad(format!("panel {title:?}: no targets"));
            }
            let mut refs = BTreeSet::new();
            for t in &targets {
                let expr = t["expr"].as_str().unwrap_or("");
                if expr.trim().is_empty() {
                    bad(format!("panel {title:?}: target {} has no expr", t["refId"]));
                }
                if !refs.insert(t["refId"].as_str().unwrap_or("").to_string()) {
                    bad(format!("panel {title:?}: refId {} used twice", t["refId"]));
                }
                if !t["datasource"].is_null() && t["datasource"]["uid"] != ds_uid.as_str() {
                    bad(format!("panel {title:?}: target data source {}", t["datasource"]));
                }
                // Rates and windows follow the dashboard's resolution.
                for c in range.captures_iter(expr) {
                    if !c[1].starts_with("$__") {
                        bad(format!(
                            "panel {title:?}: window [{}] is not $__rate_interval/$__range: {expr}",
                            &c[1]
                        ));
                    }
                }
                // Every panel follows the commons variable, except the
                // collector's global series (job csoc-collector, no commons).
                let own = expr.contains("csoc_collector_") && !expr.contains("commons");
                if !expr.contains("$commons") && !own {
                    bad(format!("panel {title:?}: no commons filter: {expr}"));
                }
                if (expr.contains("gen3_") || expr.contains("node_") || expr.contains("ALERTS")) && !expr.contains("$environment") {
                    bad(format!("panel {title:?}: no environment filter: {expr}"));
                }
            }
        }
    }
    ensure!(problems.is_empty(), "dashboard problems:\n{}", problems.join("\n"));
    Ok(())
}

/// One query of a dashboard.
#[derive(Debug, Clone)]
struct Query {
    dashboard: String,
    /// Panel title, or `variable NAME`.
    panel: String,
    /// PromQL (with variables), or for `label_values`, its selector (if any).
    expr: Option<String>,
    /// For a `label_values(...)` variable: the label.
    label: Option<String>,
}

/// Splits `label_values(selector, label)` / `label_values(label)`.
fn parse_label_values(q: &str) -> Option<(Option<String>, String)> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    // The label is after the last comma outside braces and quotes.
    let (mut depth, mut quoted, mut split) = (0i32, false, None);
    for (i, c) in inner.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '{' | '(' if !quoted => depth += 1,
            '}' | ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => split = Some(i),
            _ => {}
        }
    }
    match split {
        Some(i) => Some((Some(inner[..i].trim().to_string()), inner[i + 1..].trim().to_string())),
        None => Some((None, inner.trim().to_string())),
    }
}

/// Every query of every dashboard: panel targets (rows' nested panels
/// included) and the query variables.
fn all_queries(dashboards: &[(String, Value)]) -> anyhow::Result<Vec<Query>> {
    let mut out = Vec::new();
    for (name, d) in dashboards {
        for p in all_panels(d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push(Query {
                        dashboard: name.clone(),
                        panel: format!("{} [{}]", p["title"].as_str().unwrap_or(""), t["refId"].as_str().unwrap_or("")),
                        expr: Some(expr.to_string()),
                        label: None,
                    });
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or("");
            let panel = format!("variable {}", v["name"].as_str().unwrap_or(""));
            match parse_label_values(q) {
                Some((selector, label)) => out.push(Query {
                    dashboard: name.clone(),
                    panel,
                    expr: selector,
                    label: Some(label),
                }),
                None => {
                    let Some(expr) = q.trim().strip_prefix("query_result(").and_then(|r| r.strip_suffix(')')) else {
                        bail!("{name}: variable query {q:?}: not label_values(...) or query_result(...)");
                    };
                    out.push(Query {
                        dashboard: name.clone(),
                        panel,
                        expr: Some(expr.to_string()),
                        label: None,
                    })
                }
            }
        }
    }
    Ok(out)
}

/// A selection of a multi-value variable with "All" (allValue `.*`).
#[derive(Debug, Clone)]
enum Pick {
    All,
    Values(Vec<&'static str>),
}

impl Pick {
    /// What Grafana's Prometheus data source puts in the query: the
    /// allValue for All; each value regex-escaped (the backslashes doubled
    /// for the PromQL string), several joined as `(a|b)`.
    fn interpolate(&self) -> String {
        match self {
            Pick::All => ".*".into(),
            Pick::Values(vs) => {
                let esc: Vec<String> = vs.iter().map(|v| regex::escape(v).replace('\\', "\\\\")).collect();
                if esc.len() == 1 {
                    esc[0].clone()
                } else {
                    format!("({})", esc.join("|"))
                }
            }
        }
    }
}

/// Substitutes Grafana's variables in `expr`: the dashboard's (`$v`,
/// `${v}`, `${v:regex}`, `[[v]]`; unknown ones as All) and the built-in
/// intervals for a 10-minute range at a 15 s step.
fn substitute(expr: &str, picks: &BTreeMap<&str, Pick>) -> anyhow::Result<String> {
    const BUILTIN: &[(&str, &str)] = &[
        ("__rate_interval_ms", "60000"),
        ("__rate_interval", "1m"),
        ("__interval_ms", "15000"),
        ("__interval", "15s"),
        ("__range_ms", "600000"),
        ("__range_s", "600"),
        ("__range", "10m"),
    ];
    let re = regex::Regex::new(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")?;
    let mut err = None;
    let out = re.replace_all(expr, |c: &regex::Captures| {
        let name = c.get(1).or(c.get(3)).or(c.get(4)).map(|m| m.as_str()).unwrap_or("");
        if let Some((_, v)) = BUILTIN.iter().find(|(n, _)| *n == name) {
            return v.to_string();
        }
        if name.starts_with("__") {
            err = Some(format!("unknown built-in variable ${name}"));
            return String::new();
        }
        picks.get(name).cloned().unwrap_or(Pick::All).interpolate()
    });
    if let Some(e) = err {
        bail!("{e} in {expr}");
    }
    ensure!(!out.contains('$'), "unsubstituted variable left in {out}");
    Ok(out.into_owned())
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs one query for one selection; `Err` says why it does not count.
fn check_query(c: &Collector, q: &Query, picks: &BTreeMap<&str, Pick>) -> anyhow::Result<()> {
    let (start, end) = (now_s() - 600.0, now_s());
    if let Some(expr) = &q.expr {
        let e = substitute(expr, picks)?;
        let url = format!(
            "{}/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=15",
            c.http,
            urlencode(&e)
        );
        let (code, v) = get_json(&url)?;
        ensure!(code == 200 && v["status"] == "success", "{e}\n  HTTP {code}: {v}");
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        ensure!(!result.is_empty(), "{e}\n  empty result");
        let finite = result.iter().any(|s| {
            s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p[1].as_str().and_then(|x| x.parse::<f64>().ok()).is_some_and(f64::is_finite))
        });
        ensure!(finite, "{e}\n  no finite value in {} series", result.len());
    }
    if let Some(label) = &q.label {
        let mut url = format!("{}/api/v1/label/{label}/values?start={start:.3}&end={end:.3}", c.http);
        if let Some(expr) = &q.expr {
            url.push_str(&format!("&match[]={}", urlencode(&substitute(expr, picks)?)));
        }
        let (code, v) = get_json(&url)?;
        ensure!(code == 200 && v["status"] == "success", "{url}\n  HTTP {code}: {v}");
        let values: Vec<&str> = v["data"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        ensure!(!values.is_empty(), "{url}\n  no values");
        let want: &[&str] = match (label.as_str(), picks.get("commons")) {
            ("commons", _) => &[COMMONS, "local"],
            ("environment", Some(Pick::All)) => &[ENVIRONMENT],
            _ => &[],
        };
        for w in want {
            ensure!(values.contains(w), "{url}\n  {w} missing from {values:?}");
        }
    }
    Ok(())
}

/// Appends the fixture's revproxy lines to `log` in small slices until
/// `stop`, so that request, login and download rates are not zero.
fn feed_revproxy_log(log: PathBuf, lines: Vec<String>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) && !lines.is_empty() {
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&log) {
                let mut chunk = String::new();
                for _ in 0..60 {
                    chunk.push_str(&lines[i % lines.len()]);
                    chunk.push('\n');
                    i += 1;
                }
                let _ = f.write_all(chunk.as_bytes());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

/// STAND-IN for the agent's `kubernetes` source, until it is merged: the
/// Kubernetes panels need kube-state-metrics-named series, so this writes
/// them through the remote-write receiver (as commons alpha, with the
/// agent's `environment` label) once a second until `stop`. Replace it with
/// the agent watching the fake Kubernetes API (tests/) when both are on
/// main; the series and labels here are those the source must produce.
///
/// The namespace `gen3` holds: fence (3 replicas wanted, 2 available; one
/// pod crash-looping: restarts climb, waiting in CrashLoopBackOff, warning
/// BackOff events), indexd (healthy), a pending portal pod, PostgreSQL as a
/// StatefulSet with only its ready count, and three Jobs: usersync
/// succeeded, usersync failed, etl running.
fn feed_kubernetes_standin(http: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut tick: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let t = (now_s() * 1000.0) as i64;
            let restarts = (tick / 5) as f64;
            let events = (tick / 2) as f64;
            let base = [("environment", ENVIRONMENT), ("namespace", "gen3")];
            let mut ts = Vec::new();
            let mut add = |name: &str, extra: &[(&str, &str)], v: f64| {
                let mut l: Vec<(&str, &str)> = vec![("__name__", name)];
                l.extend_from_slice(&base);
                l.extend_from_slice(extra);
                ts.push(series(&l, vec![(t, v)]));
            };
            let pods = [
                ("fence-7d4b9c-x2x4q", "fence", "Running"),
                ("fence-7d4b9c-m8n9b", "fence", "Running"),
                ("indexd-5c6f8d-q7w2e", "indexd", "Running"),
                ("portal-6b8d9f-r5t6y", "portal", "Pending"),
                ("usersync-29412345-abcde", "gen3job", "Succeeded"),
            ];
            for (pod, service, phase) in pods {
                add(
                    "kube_pod_info",
                    &[("pod", pod), ("service", service), ("node", "ip-10-0-1-5.ec2.internal")],
                    1.0,
                );
                for p in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
                    let v = if p == phase { 1.0 } else { 0.0 };
                    add("kube_pod_status_phase", &[("pod", pod), ("service", service), ("phase", p)], v);
                }
                let c = [("pod", pod), ("container", service), ("service", service)];
                let r = if pod == "fence-7d4b9c-m8n9b" { restarts } else { 0.0 };
                add("kube_pod_container_status_restarts_total", &c, r);
                let cpu = [
                    ("pod", pod),
                    ("container", service),
                    ("service", service),
                    ("resource", "cpu"),
                    ("unit", "core"),
                ];
                add("kube_pod_container_resource_requests", &cpu, 0.25);
                let mem = [
                    ("pod", pod),
                    ("container", service),
                    ("service", service),
                    ("resource", "memory"),
                    ("unit", "byte"),
                ];
                add("kube_pod_container_resource_requests", &mem, 512.0 * 1024.0 * 1024.0);
                add("kube_pod_container_cpu_usage_cores", &c, 0.05 + (tick % 7) as f64 * 0.01);
                add("container_memory_working_set_bytes", &c, 300.0 * 1024.0 * 1024.0);
            }
            let looping = [("pod", "fence-7d4b9c-m8n9b"), ("container", "fence"), ("service", "fence")];
            add(
                "kube_pod_container_status_waiting_reason",
                &[looping[0], looping[1], looping[2], ("reason", "CrashLoopBackOff")],
                1.0,
            );
            for (d, spec, avail) in [("fence-deployment", 3.0, 2.0), ("indexd-deployment", 1.0, 1.0)] {
                add("kube_deployment_spec_replicas", &[("deployment", d)], spec);
                add("kube_deployment_status_replicas_available", &[("deployment", d)], avail);
                add("kube_deployment_status_replicas_unavailable", &[("deployment", d)], spec - avail);
            }
            add("kube_statefulset_replicas", &[("statefulset", "gen3-postgresql")], 1.0);
            add("kube_statefulset_status_replicas_ready", &[("statefulset", "gen3-postgresql")], 1.0);
            for (job, ok, failed, active) in [
                ("usersync-29412345", 1.0, 0.0, 0.0),
                ("usersync-29412375", 0.0, 1.0, 0.0),
                ("etl-29412000", 0.0, 0.0, 1.0),
            ] {
                add("kube_job_status_succeeded", &[("job_name", job)], ok);
                add("kube_job_status_failed", &[("job_name", job)], failed);
                add("kube_job_status_active", &[("job_name", job)], active);
            }
            add("kube_job_failed", &[("job_name", "usersync-29412375"), ("condition", "true")], 1.0);
            let ev = [
                ("kind", "Pod"),
                ("name", "fence-7d4b9c-m8n9b"),
                ("reason", "BackOff"),
                ("type", "Warning"),
            ];
            add("kube_events_total", &ev, events);
            let ev = [
                ("kind", "Pod"),
                ("name", "portal-6b8d9f-r5t6y"),
                ("reason", "FailedScheduling"),
                ("type", "Warning"),
            ];
            add("kube_events_total", &ev, (tick / 4) as f64);
            // STAND-IN for the backends row: the elasticsearch and postgres
            // sources (built on another branch) and Argo CD Applications,
            // under the names the issue gives (elasticsearch_exporter's,
            // postgres_exporter's, Argo CD's).
            for (color, v) in [("green", 0.0), ("yellow", 1.0), ("red", 0.0)] {
                add(
                    "elasticsearch_cluster_health_status",
                    &[("cluster", "gen3-es"), ("color", color)],
                    v,
                );
            }
            add("elasticsearch_cluster_health_number_of_nodes", &[("cluster", "gen3-es")], 3.0);
            add("elasticsearch_cluster_health_unassigned_shards", &[("cluster", "gen3-es")], 2.0);
            add(
                "elasticsearch_cluster_health_number_of_pending_tasks",
                &[("cluster", "gen3-es")],
                0.0,
            );
            add(
                "elasticsearch_indices_docs",
                &[("cluster", "gen3-es"), ("index", "etl_0")],
                12_345.0,
            );
            add(
                "elasticsearch_indices_docs",
                &[("cluster", "gen3-es"), ("index", "file_0")],
                54_321.0,
            );
            for (db, backends) in [("fence", 40.0), ("indexd", 12.0)] {
                add("pg_up", &[("database", db)], 1.0);
                add("pg_stat_database_numbackends", &[("database", db), ("datname", db)], backends);
                add("pg_settings_max_connections", &[("database", db)], 100.0);
                add(
                    "pg_stat_database_xact_commit",
                    &[("database", db), ("datname", db)],
                    100.0 * tick as f64,
                );
                add("pg_stat_database_xact_rollback", &[("database", db), ("datname", db)], tick as f64);
                add("pg_database_size_bytes", &[("database", db), ("datname", db)], 2.5e9);
            }
            add("pg_up", &[("database", "fence-replica")], 1.0);
            add("pg_replication_lag_seconds", &[("database", "fence-replica")], 1.5);
            for (app, health, sync) in [("fence", "Healthy", "Synced"), ("guppy", "Degraded", "OutOfSync")] {
                let l = [
                    ("name", app),
                    ("project", "gen3"),
                    ("health_status", health),
                    ("sync_status", sync),
                    ("dest_namespace", "gen3"),
                ];
                add("argocd_app_info", &l, 1.0);
            }
            let req = WriteRequest {
                timeseries: ts,
                ..Default::default()
            };
            if let Err(e) = remote_write(&http, TOKEN, &req) {
                eprintln!("kubernetes stand-in feed: {e:#}");
            }
            tick += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

/// The Gen3 rule pack with every group evaluated each second and every
/// `for` shortened to 2 s, so that its alerts fire within the test.
fn fast_rule_pack(dir: &Path) -> anyhow::Result<String> {
    let pack = std::fs::read_to_string(workspace().join("deploy/rules/gen3.yml"))?;
    let interval = regex::Regex::new(r"(?m)^(\s+)interval: \S+$")?;
    let for_ = regex::Regex::new(r"(?m)^(\s+)for: \S+$")?;
    let pack = interval.replace_all(&pack, "${1}interval: 1s");
    let pack = for_.replace_all(&pack, "${1}for: 2s");
    let p = dir.join("gen3-fast.yml");
    std::fs::write(&p, pack.as_bytes())?;
    Ok(p.display().to_string())
}

#[test]
fn grafana_every_dashboard_query_evaluates_and_returns_data() -> anyhow::Result<()> {
    let started = Instant::now();
    let dashboards = dashboards()?;
    let queries = all_queries(&dashboards)?;
    ensure!(queries.len() > 50, "only {} queries found", queries.len());

    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("fake-ca.pem");
    let ca_s = ca.display().to_string();
    let fake = FakeGen3::start(
        dir.path(),
        "fake",
        &["--tls-listen", "127.0.0.1:0", "--tls-cert", "valid-ca", "--tls-ca-out", &ca_s],
    )?;
    let https = fake.https.clone().context("the fake's https URL")?;
    let sink = WebhookSink::start()?;

    // The quickstart's collector (--local-agent), fast, with the rule pack,
    // two receivers: one that works, one that answers 404 (a failed
    // notification, not retried), and a remote-write target (the sink
    // answers 200 to anything).
    let cfg = dir.path().join("collector.yml");
    std::fs::write(
        &cfg,
        format!(
            "remote_write:\n  - url: {}/api/v1/write\n    name: archive\nreceivers:\n  - name: ops\n    group_wait: 1s\n    group_interval: 2s\n    repeat_interval: 1h\n    webhook:\n      url: {}\n  - name: broken\n    group_wait: 1s\n    group_interval: 2s\n    repeat_interval: 1h\n    webhook:\n      url: {}/_no_such_receiver\n",
            sink.url, sink.url, fake.http
        ),
    )?;
    let rules = fast_rule_pack(dir.path())?;
    let cfg_s = cfg.display().to_string();
    let token_arg = format!("{COMMONS}={TOKEN}");
    eprintln!("fake and sink: {:.1}s", started.elapsed().as_secs_f64());
    let c = Collector::start(
        dir.path(),
        &[
            "--config",
            &cfg_s,
            "--local-agent",
            "--local-agent-interval",
            "1s",
            "--self-scrape-interval",
            "1s",
            "--rules",
            &rules,
            "--agent-token",
            &token_arg,
            "--web.enable-admin-api",
        ],
    )?;

    // The agent of commons alpha: the fake over HTTPS (so the TLS expiry is
    // reported), its usage counts every 2 s, and the revproxy log.
    let fixture = std::fs::read_to_string(workspace().join("../shared/gen3/fixtures/revproxy-access.jsonl"))?;
    let lines: Vec<String> = fixture.lines().map(str::to_string).collect();
    let log = dir.path().join("revproxy.log");
    std::fs::write(&log, &fixture)?;
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed_revproxy_log(log.clone(), lines, stop.clone());
    // STAND-IN: see feed_kubernetes_standin.
    let kube_feeder = feed_kubernetes_standin(c.http.clone(), stop.clone());
    let agent_cfg = dir.path().join("agent.yml");
    std::fs::write(
        &agent_cfg,
        format!(
            "sources:\n  gen3_status:\n    ca_file: {ca_s}\n  gen3_usage:\n    interval: 2s\n    timeout: 1s\n    hatchery_url: {}/_svc/hatchery\n",
            fake.http
        ),
    )?;
    let agent_cfg_s = agent_cfg.display().to_string();
    let log_s = log.display().to_string();
    let env_label = format!("environment={ENVIRONMENT}");
    let (_agent, _) = start_agent(
        dir.path(),
        "agent",
        &c.grpc,
        &[
            "--token",
            TOKEN,
            "--config",
            &agent_cfg_s,
            "--interval",
            "1s",
            "--agent-name",
            "alpha-node",
            "--gen3-url",
            &https,
            "--revproxy-log",
            &log_s,
            "--external-label",
            &env_label,
        ],
    )?;

    // A service down, so that something fires and notifies.
    wait_for("fence probed up", WAIT, || {
        c.query(r#"gen3_service_up{service="fence"} == 1"#).ok().filter(|r| !r.is_empty())
    })?;
    eprintln!("fence up: {:.1}s", started.elapsed().as_secs_f64());
    fake.fault("fence", "down")?;
    // A remote-write request over the label limit: refused and counted.
    let mut labels: Vec<(String, String)> = vec![("__name__".into(), "csoc_grafana_test".into())];
    labels.extend((0..70).map(|i| (format!("l{i:02}"), "x".to_string())));
    let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let req = WriteRequest {
        timeseries: vec![series(&pairs, vec![((now_s() * 1000.0) as i64, 1.0)])],
        ..Default::default()
    };
    let refused = remote_write(&c.http, TOKEN, &req);
    ensure!(
        refused.as_ref().is_err_and(|e| e.to_string().contains("400")),
        "a series over the label limit is refused: {refused:?}"
    );
    for (what, q) in [
        (
            "Gen3ServiceDown firing",
            r#"ALERTS{alertname="Gen3ServiceDown", alertstate="firing", service="fence"}"#,
        ),
        (
            "a notification sent",
            r#"csoc_collector_notifications_sent_total{receiver="ops"} > 0"#,
        ),
        (
            "a notification failed",
            r#"csoc_collector_notifications_failed_total{receiver="broken"} > 0"#,
        ),
        (
            "the limit rejection stored",
            r#"csoc_collector_limit_rejections_total{commons="alpha"} > 0"#,
        ),
        ("the TLS expiry", "gen3_tls_cert_expiry_timestamp_seconds"),
        ("indexd counts", "gen3_indexd_files"),
        ("the local agent's hosts", r#"node_time_seconds{commons="local"}"#),
    ] {
        wait_for(what, WAIT, || c.query(q).ok().filter(|r| !r.is_empty()))?;
        eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
    }
    // Persist the head, so that the storage panels see chunks written and
    // the queries below read chunks (the chunk cache's hit ratio).
    let flush = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/admin/tsdb/flush", c.http))
        .timeout(Duration::from_secs(30))
        .send()?;
    ensure!(flush.status().is_success(), "flush: HTTP {}", flush.status());
    let setup = started.elapsed();

    // Every query, for All, for one commons and environment, and for two
    // commons; failures are retried (rates need a few samples) until WAIT.
    let selections: Vec<(&str, BTreeMap<&str, Pick>)> = vec![
        ("All", BTreeMap::from([("commons", Pick::All), ("environment", Pick::All)])),
        (
            "commons=alpha, environment=test",
            BTreeMap::from([
                ("commons", Pick::Values(vec![COMMONS])),
                ("environment", Pick::Values(vec![ENVIRONMENT])),
            ]),
        ),
        (
            "commons=alpha+local, environment=All",
            BTreeMap::from([("commons", Pick::Values(vec![COMMONS, "local"])), ("environment", Pick::All)]),
        ),
    ];
    let mut pending: Vec<(usize, &Query)> = (0..selections.len()).flat_map(|s| queries.iter().map(move |q| (s, q))).collect();
    let total = pending.len();
    let deadline = Instant::now() + WAIT;
    let mut failures;
    loop {
        failures = Vec::new();
        let mut still = Vec::new();
        for (s, q) in pending {
            if let Err(e) = check_query(&c, q, &selections[s].1) {
                failures.push(format!("{} / {} ({}):\n  {e:#}", q.dashboard, q.panel, selections[s].0));
                still.push((s, q));
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
    let _ = kube_feeder.join();
    ensure!(
        failures.is_empty(),
        "{} of {total} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} queries of {} dashboards, {} selections: all return data (setup {:.1}s, total {:.1}s)",
        queries.len(),
        dashboards.len(),
        selections.len(),
        setup.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
