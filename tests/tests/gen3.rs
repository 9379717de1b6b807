//! The Gen3 sources end to end: csoc-fake-gen3 (fixture commons, faults,
//! HTTPS with switchable certificates) → csoc-agent (`--gen3-url`) → gRPC →
//! csoc-collector → /api/v1/query; and `csoc-agent --once --print`.

use std::path::Path;
use std::time::Duration;

use csoc_tests::*;
use serde_json::Value;

const TOKEN: &str = "gen3-token-0123456789abcdef";
/// Time limit of each wait.
const WAIT: Duration = Duration::from_secs(40);

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn fixture_json(name: &str) -> Value {
    let p = workspace().join("../shared/gen3/fixtures/status").join(name);
    let b = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_slice(&b).expect("fixture is JSON")
}

/// Waits until `q` returns exactly one sample whose value satisfies `pred`.
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

#[test]
fn gen3_status_and_usage_reach_the_collector_and_a_fence_outage_shows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
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
    let (_agent, agent_metrics) = start_agent(
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
            "--external-label",
            "environment=e2e",
            "--external-label",
            "region=us-east-1",
        ],
    )?;

    // Every service probed through revproxy is up.
    let up = wait_for("gen3_service_up for the public services", WAIT, || {
        c.query("gen3_service_up").ok().filter(|r| r.len() >= 10)
    })?;
    for s in &up {
        assert_eq!(value(s), 1.0, "{s}");
        assert_eq!(s["metric"]["commons"], "alpha", "{s}");
        assert_eq!(s["metric"]["environment"], "e2e", "external label stored: {s}");
        assert_eq!(s["metric"]["region"], "us-east-1", "{s}");
        assert_eq!(s["metric"]["job"], "gen3", "{s}");
    }
    let services: Vec<&str> = up.iter().filter_map(|s| s["metric"]["service"].as_str()).collect();
    for want in ["fence", "indexd", "peregrine", "metadata", "revproxy"] {
        assert!(services.contains(&want), "{want} in {services:?}");
    }

    // Versions from the fixtures.
    let fence_version = fixture_json("fence._version.json");
    let info = wait_value(&c, r#"gen3_service_info{service="fence"}"#, |v| v == 1.0)?;
    assert_eq!(info["metric"]["version"], fence_version["version"], "{info}");
    assert_eq!(info["metric"]["commit"], fence_version["commit"], "{info}");
    let mds = wait_value(&c, r#"gen3_service_info{service="metadata"}"#, |v| v == 1.0)?;
    assert_eq!(mds["metric"]["version"], fixture_json("metadata.version.json"), "{mds}");

    // Usage counts equal the fixtures'.
    let stats = fixture_json("indexd._stats.json");
    let files = stats["fileCount"].as_f64().expect("fileCount");
    let size = stats["totalFileSize"].as_f64().expect("totalFileSize");
    let s = wait_value(&c, "gen3_indexd_files", |v| v == files)?;
    assert_eq!(s["metric"]["environment"], "e2e", "{s}");
    wait_value(&c, "gen3_indexd_size_bytes", |v| v == size)?;
    let drs = fixture_json("indexd.drs-service-info.json");
    wait_value(&c, "gen3_drs_objects", |v| Some(v) == drs["drs"]["objectCount"].as_f64())?;
    wait_value(&c, r#"gen3_peregrine_records{project="CMC-LUAD",node="file"}"#, |v| v == 15230.0)?;
    wait_value(&c, "gen3_mds_aggregate_commons", |v| v == 2.0)?;
    wait_value(&c, "gen3_hatchery_workspaces", |v| v == 2.0)?;
    // The fake has no discovery listing: counted as not_found, nothing stored.
    wait_for("a not_found error of gen3_usage", WAIT, || {
        get_text(&agent_metrics).ok().filter(|(_, b)| {
            b.lines().any(|l| {
                l.starts_with("csoc_agent_source_errors_total{")
                    && l.contains(r#"source="gen3_usage""#)
                    && l.contains(r#"kind="not_found""#)
            })
        })
    })?;
    assert!(c.query("gen3_discovery_studies")?.is_empty());

    // fence goes down behind revproxy: 502, up 0; the others stay up.
    fake.fault("fence", "down")?;
    wait_value(&c, r#"gen3_service_up{service="fence"}"#, |v| v == 0.0)?;
    wait_value(&c, r#"gen3_probe_http_status_code{service="fence"}"#, |v| v == 502.0)?;
    let indexd = c.query(r#"gen3_service_up{service="indexd"}"#)?;
    assert_eq!(indexd.first().map(value), Some(1.0), "{indexd:?}");
    fake.fault("fence", "ok")?;
    wait_value(&c, r#"gen3_service_up{service="fence"}"#, |v| v == 1.0)?;
    Ok(())
}

#[test]
fn tls_self_signed_and_expired_are_down_with_their_expiry_and_a_trusted_ca_is_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN}")])?;
    let mut procs = Vec::new();
    let mut expected = Vec::new();
    for mode in ["self-signed", "expired", "valid-ca"] {
        let ca = dir.path().join(format!("{mode}-ca.pem"));
        let ca_s = ca.display().to_string();
        let fake = FakeGen3::start(
            dir.path(),
            &format!("fake-{mode}"),
            &["--tls-listen", "127.0.0.1:0", "--tls-cert", mode, "--tls-ca-out", &ca_s],
        )?;
        let https = fake.https.clone().expect("https URL");
        let not_after = fake.state()?["tls"]["certs"][mode]["not_after"]
            .as_f64()
            .expect("not_after in /_fake/state");
        // Only the valid-ca agent trusts the CA (the expired leaf is signed by
        // it too: still refused).
        let ca_line = if mode == "self-signed" {
            String::new()
        } else {
            format!("    ca_file: {ca_s}\n")
        };
        let cfg = write_config(
            dir.path(),
            &format!("{mode}.yml"),
            &format!(
                "sources:\n  host: {{enabled: false}}\n  gen3_usage: {{enabled: false}}\n  gen3_status:\n    default_services: false\n    services: {{revproxy: {{}}, fence: {{}}}}\n{ca_line}"
            ),
        )?;
        let (agent, _) = start_agent(
            dir.path(),
            &format!("agent-{mode}"),
            &c.grpc,
            &[
                "--token",
                TOKEN,
                "--config",
                &cfg,
                "--interval",
                "1s",
                "--agent-name",
                mode,
                "--gen3-url",
                &https,
            ],
        )?;
        expected.push((mode, not_after));
        procs.push((fake, agent));
    }
    for (mode, not_after) in expected {
        let want_up = if mode == "valid-ca" { 1.0 } else { 0.0 };
        for service in ["revproxy", "fence"] {
            wait_value(&c, &format!(r#"gen3_service_up{{instance="{mode}",service="{service}"}}"#), |v| {
                v == want_up
            })?;
        }
        let code = c.query(&format!(r#"gen3_probe_http_status_code{{instance="{mode}",service="fence"}}"#))?;
        let want_code = if mode == "valid-ca" { 200.0 } else { 0.0 };
        assert_eq!(code.first().map(value), Some(want_code), "{mode}: {code:?}");
        let exp = wait_value(
            &c,
            &format!(r#"gen3_tls_cert_expiry_timestamp_seconds{{instance="{mode}"}}"#),
            |v| v == not_after,
        )?;
        assert_eq!(exp["metric"]["host"], "127.0.0.1", "{mode}: {exp}");
    }
    Ok(())
}

/// A line of the Prometheus text format 0.0.4 (comment or sample).
fn text_format_line() -> regex::Regex {
    let name = r"[a-zA-Z_:][a-zA-Z0-9_:]*";
    let label = r#"[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*""#;
    let value = r"(?:[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf)|NaN)";
    regex::Regex::new(&format!(
        r"^(?:# HELP {name} .*|# TYPE {name} (?:counter|gauge|histogram|summary|untyped)|{name}(?:\{{{label}(?:,{label})*\}})? {value}(?: -?[0-9]+)?)$"
    ))
    .expect("regex")
}

#[test]
fn once_print_writes_the_text_format_with_help_and_type() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = FakeGen3::start(dir.path(), "fake", &[])?;
    let spool = dir.path().join("spool").display().to_string();
    let args: Vec<String> = [
        "--once",
        "--print",
        "--gen3-url",
        &fake.http,
        "--external-label",
        "environment=debug",
        "--agent-name",
        "once-agent",
        "--collector",
        // Never contacted.
        "http://127.0.0.1:9",
        "--spool-dir",
        &spool,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Exit status 0: the fake's missing discovery listing is one failed
    // endpoint, not a failed source (gen3_usage has other samples).
    let out = run(dir.path(), &bin("csoc-agent"), &args, Duration::from_secs(60))?;
    let re = text_format_line();
    let mut families = Vec::new();
    for l in out.lines() {
        assert!(re.is_match(l), "not text format 0.0.4: {l:?}");
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            families.push(rest.split(' ').next().unwrap_or_default().to_string());
        }
    }
    let mut sorted = families.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(families, sorted, "families sorted, each once");
    let help = out.find("# HELP gen3_service_up ").expect("HELP of gen3_service_up");
    let ty = out.find("# TYPE gen3_service_up gauge").expect("TYPE of gen3_service_up");
    let first = out.find("\ngen3_service_up{").expect("gen3_service_up samples");
    assert!(help < ty && ty < first, "HELP, TYPE, then samples");
    let fence = out
        .lines()
        .find(|l| l.starts_with("gen3_service_up{") && l.contains(r#"service="fence""#))
        .expect("fence line");
    assert!(
        fence.contains(r#"environment="debug""#) && fence.contains(r#"instance="once-agent""#) && fence.contains(r#"job="gen3""#),
        "{fence}"
    );
    assert!(fence.split(' ').nth(1) == Some("1"), "{fence}");
    let files = out
        .lines()
        .find(|l| l.starts_with("gen3_indexd_files{"))
        .expect("gen3_indexd_files line");
    assert_eq!(files.split(' ').nth(1), Some("1842217"), "{files}");
    assert!(out.contains("# TYPE node_load1 gauge"), "the host source ran too");
    assert!(!dir.path().join("spool").exists(), "no spool written");

    // A reserved or malformed external label is refused before any round.
    for bad in ["commons=x", "1bad=x", "noequals"] {
        let o = std::process::Command::new(bin("csoc-agent"))
            .args(["--once", "--print", "--external-label", bad])
            .current_dir(dir.path())
            .output()?;
        assert!(!o.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--external-label"), "{bad}: {err}");
    }
    Ok(())
}

/// The sum of the values of an instant vector, by one label.
fn sums_by(c: &Collector, q: &str, label: &str) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    Ok(c.query(q)?
        .iter()
        .map(|s| (s["metric"][label].as_str().unwrap_or("").to_string(), value(s) as u64))
        .collect())
}

#[test]
fn revproxy_log_counts_reach_the_collector_once_across_appends_and_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fixtures = workspace().join("../shared/gen3/fixtures");
    let expected: Value = serde_json::from_slice(&std::fs::read(fixtures.join("revproxy-access.expected.json"))?)?;
    let log = dir.path().join("revproxy.log");
    let lines = std::fs::read_to_string(fixtures.join("revproxy-access.jsonl"))?;
    std::fs::write(&log, &lines)?;
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN}")])?;
    let cfg = write_config(dir.path(), "agent.yml", "sources:\n  host: {enabled: false}\n")?;
    let log_s = log.display().to_string();
    let args = ["--token", TOKEN, "--config", &cfg, "--interval", "1s", "--revproxy-log", &log_s];
    let (mut agent, _) = start_agent(dir.path(), "agent", &c.grpc, &args)?;

    // Every record of the fixture, counted once, per service as
    // revproxy-access.expected.json says (the service-label rule applied).
    let records = expected["records"].as_u64().unwrap_or(0);
    wait_value(&c, "sum(gen3_http_requests_total)", |v| v as u64 == records)?;
    let want: std::collections::BTreeMap<String, u64> = expected["by_service"]["requests_by_class"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(svc, classes)| {
            (
                svc.clone(),
                classes.as_object().into_iter().flatten().filter_map(|(_, n)| n.as_u64()).sum(),
            )
        })
        .collect();
    assert_eq!(sums_by(&c, "sum by (service) (gen3_http_requests_total)", "service")?, want);
    let logins: std::collections::BTreeMap<String, u64> = serde_json::from_value(expected["logins"]["successful_by_idp"].clone())?;
    assert_eq!(sums_by(&c, "sum by (idp) (gen3_logins_total)", "idp")?, logins);
    let downloads: u64 = expected["presigned_urls_issued"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    wait_value(&c, "sum(gen3_downloads_total)", |v| v as u64 == downloads)?;
    let hist = c.query("sum(gen3_http_request_duration_seconds_count)")?;
    assert_eq!(hist.first().map(value), Some(records as f64), "{hist:?}");

    // Two more records (a partial line first): counted once each.
    let extra: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("\"proxy_service\": \"fence\""))
        .take(2)
        .collect();
    assert_eq!(extra.len(), 2);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
    use std::io::Write;
    let (head, tail) = extra[0].split_at(40);
    f.write_all(head.as_bytes())?;
    f.flush()?;
    std::thread::sleep(Duration::from_secs(2));
    f.write_all(format!("{tail}\n{}\n", extra[1]).as_bytes())?;
    f.flush()?;
    wait_value(&c, "sum(gen3_http_requests_total)", |v| v as u64 == records + 2)?;

    // A restart of the agent neither skips nor double-counts.
    agent.terminate()?;
    let (_agent, _) = start_agent(dir.path(), "agent", &c.grpc, &args)?;
    std::thread::sleep(Duration::from_secs(4));
    let after = c.query("sum(gen3_http_requests_total)")?;
    assert_eq!(after.first().map(value), Some((records + 2) as f64), "{after:?}");
    Ok(())
}
