//! Central agent configuration end to end (`--agent-config-dir`,
//! `ConfigPush`/`ConfigStatus`): real collector and agents, a fake Gen3
//! commons to probe, and simulated agents for the fleet-size test.
//!
//! - a service added to `_default.yml` is probed by every connected agent
//!   within one poll of the directory plus one interval, with no restart;
//! - a config for commons A never reaches B's agent;
//! - a broken file keeps the last good config and `/api/v1/agents` shows the
//!   file, line and reason; `POST /-/reload` fails naming it;
//! - a config the agent rejects (an unknown field, an invalid regex, a path
//!   the local file does not use) is listed as rejected with the reason, and
//!   the agent keeps its last good config; `--no-central-config` refuses;
//! - an agent restarted while the collector is down runs its last good
//!   config;
//! - 50 agents (2 real, 48 simulated) all apply a push within 5 seconds;
//! - the agent re-reads its local file on `POST /-/reload` and SIGHUP.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use csoc_tests::*;
use serde_json::Value;

const ALPHA: &str = "central-alpha-token-0123456789";
const BETA: &str = "central-beta-token-0123456789ab";
const GAMMA: &str = "central-gamma-token-0123456789a";
const WAIT: Duration = Duration::from_secs(30);

/// `GET /api/v1/agents` → the agent named `agent`.
fn agent(c: &Collector, agent: &str) -> anyhow::Result<Option<Value>> {
    let (code, v) = get_json(&format!("{}/api/v1/agents", c.http))?;
    ensure!(code == 200, "GET /api/v1/agents: HTTP {code}: {v}");
    Ok(v["data"].as_array().and_then(|a| a.iter().find(|x| x["agent"] == agent).cloned()))
}

/// Waits until `agent`'s listing satisfies `pred`; returns it.
fn wait_agent(c: &Collector, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    wait_for(&format!("{name}: {what}"), WAIT, || {
        let a = agent(c, name).ok().flatten()?;
        last = a.clone();
        pred(&a).then_some(a)
    })
    .with_context(|| format!("last listing of {name}: {last}"))
}

/// The local file every real agent runs: nothing but a 1s interval, so
/// whatever it probes comes from the central config.
fn local_file(dir: &Path, name: &str, extra: &str) -> anyhow::Result<String> {
    let p = dir.join(format!("{name}.yml"));
    std::fs::write(
        &p,
        format!(
            "interval: 1s\nsources:\n  host: {{enabled: false}}\n  gen3_usage: {{enabled: false}}\n  revproxy_log: {{enabled: false, path: {}}}\n{extra}",
            dir.join("access.log").display()
        ),
    )?;
    Ok(p.display().to_string())
}

fn start(dir: &Path, c: &Collector, name: &str, token: &str, extra: &[&str]) -> anyhow::Result<(Proc, String)> {
    let cfg = local_file(dir, name, "")?;
    let mut args = vec!["--config", cfg.as_str(), "--token", token, "--agent-name", name];
    args.extend_from_slice(extra);
    start_agent(dir, name, &c.grpc, &args)
}

fn default_yml(gen3: &str, services: &[&str]) -> String {
    let svc: Vec<String> = services.iter().map(|s| format!("{s}: {{}}")).collect();
    format!(
        "# every agent\ninterval: 1s\nsources:\n  gen3_status:\n    enabled: true\n    base_url: {gen3}\n    default_services: false\n    services: {{{}}}\n",
        svc.join(", ")
    )
}

fn up(c: &Collector, commons: &str, service: &str) -> bool {
    c.query(&format!(r#"gen3_service_up{{commons="{commons}",service="{service}"}}"#))
        .is_ok_and(|r| !r.is_empty())
}

fn post(url: &str) -> anyhow::Result<(u16, String)> {
    let r = reqwest::blocking::Client::new().post(url).timeout(Duration::from_secs(20)).send()?;
    Ok((r.status().as_u16(), r.text()?))
}

fn metric(url: &str, series: &str) -> Option<f64> {
    get_text(url).ok().and_then(|(_, t)| metric_value(&t, series))
}

#[test]
fn pushes_apply_without_restart_stay_in_their_commons_and_bad_ones_keep_the_last_good() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let cfg_dir = d.join("agent-config");
    std::fs::create_dir_all(&cfg_dir)?;
    let gen3 = FakeGen3::start(d, "gen3", &[])?;
    std::fs::write(cfg_dir.join("_default.yml"), default_yml(&gen3.http, &["fence"]))?;
    let tokens = [format!("alpha={ALPHA}"), format!("beta={BETA}"), format!("gamma={GAMMA}")];
    let http_port = free_port();
    let grpc_port = free_port();
    let cargs = [
        "--agent-token",
        &tokens[0],
        "--agent-token",
        &tokens[1],
        "--agent-token",
        &tokens[2],
        "--agent-config-dir",
        cfg_dir.to_str().context("utf-8 path")?,
    ];
    let mut c = Collector::start_on(d, http_port, grpc_port, &cargs)?;
    let (mut a, a_metrics) = start(d, &c, "alpha-agent", ALPHA, &[])?;
    let (mut b, b_metrics) = start(d, &c, "beta-agent", BETA, &[])?;
    let (_g, _) = start(d, &c, "gamma-agent", GAMMA, &["--no-central-config"])?;

    // The config in force at connection is pushed and applied.
    for (commons, name) in [("alpha", "alpha-agent"), ("beta", "beta-agent")] {
        wait_agent(&c, name, "applied", |x| {
            x["config_status"] == "applied" && x["config_running_version"] == x["config_version"]
        })?;
        wait_for(&format!("{commons} probes fence"), WAIT, || up(&c, commons, "fence").then_some(()))?;
    }
    let g = wait_agent(&c, "gamma-agent", "rejected", |x| x["config_status"] == "rejected")?;
    ensure!(g["config_error"].as_str().is_some_and(|e| e.contains("--no-central-config")), "{g}");
    ensure!(!up(&c, "gamma", "fence"), "gamma runs with --no-central-config and probes nothing");
    let v1 = metric(&a_metrics, "csoc_agent_config_version").context("csoc_agent_config_version")?;
    ensure!(v1 > 0.0);
    ensure!(metric(&a_metrics, "csoc_agent_config_last_reload_successful") == Some(1.0));

    // A service added to _default.yml: every agent probes it within one
    // poll of the directory (2s) plus one interval (1s), with no restart.
    let t0 = Instant::now();
    std::fs::write(cfg_dir.join("_default.yml"), default_yml(&gen3.http, &["fence", "indexd"]))?;
    for commons in ["alpha", "beta"] {
        wait_for(&format!("{commons} probes indexd"), WAIT, || {
            up(&c, commons, "indexd").then_some(())
        })?;
    }
    let took = t0.elapsed();
    eprintln!("a service added to _default.yml was probed by both agents after {took:?}");
    ensure!(
        took < Duration::from_secs(8),
        "probed after {took:?}: more than poll + interval + slack"
    );
    ensure!(
        a.child.try_wait()?.is_none() && b.child.try_wait()?.is_none(),
        "the agents did not restart"
    );
    ensure!(
        a.log_text().matches("csoc-agent starting").count() == 1,
        "one start of the agent:\n{}",
        a.log_text()
    );
    ensure!(
        metric(&a_metrics, "csoc_agent_connect_attempts_total") == Some(1.0),
        "the agent kept its stream"
    );
    let v2 = metric(&a_metrics, "csoc_agent_config_version").context("version")?;
    ensure!(v2 > v1, "the version increased: {v1} -> {v2}");

    // alpha.yml reaches alpha only.
    std::fs::write(
        cfg_dir.join("alpha.yml"),
        "sources:\n  gen3_status:\n    services: {fence: {}, indexd: {}, sheepdog: {}}\n",
    )?;
    wait_for("alpha probes sheepdog", WAIT, || up(&c, "alpha", "sheepdog").then_some(()))?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(!up(&c, "beta", "sheepdog"), "alpha.yml reached beta");
    ensure!(
        metric(&b_metrics, "csoc_agent_config_version") == Some(v2),
        "beta got no push for alpha.yml"
    );

    // A broken file: refused with file, line and reason; the last good
    // version stays in force.
    std::fs::write(
        cfg_dir.join("_default.yml"),
        "interval: 1s\nsources:\n  gen3_status: {enabled: true\n",
    )?;
    let x = wait_agent(&c, "beta-agent", "file error", |x| {
        x["config_error"].as_str().is_some_and(|e| e.contains("_default.yml"))
    })?;
    let err = x["config_error"].as_str().unwrap_or_default();
    ensure!(err.contains("_default.yml line") && err.contains("not valid YAML"), "{x}");
    let fe = &x["config_file_errors"][0];
    ensure!(
        fe["file"] == "_default.yml" && fe["line"].as_u64().is_some() && fe["reason"].is_string(),
        "{x}"
    );
    let (code, body) = post(&format!("{}/-/reload", c.http))?;
    ensure!(code == 500 && body.contains("_default.yml"), "POST /-/reload: {code} {body}");
    // A local-only key is refused with its line.
    std::fs::write(
        cfg_dir.join("_default.yml"),
        format!("{}collector: http://127.0.0.1:1\n", default_yml(&gen3.http, &["fence", "indexd"])),
    )?;
    let x = wait_agent(&c, "beta-agent", "local-only refused", |x| {
        x["config_error"].as_str().is_some_and(|e| e.contains("local-only"))
    })?;
    ensure!(x["config_file_errors"][0]["line"] == 9, "the collector key is on line 9: {x}");
    let t = c.query(r#"timestamp(gen3_service_up{commons="beta",service="indexd"})"#)?;
    let before = t.first().and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok()).unwrap_or(0.0);
    std::thread::sleep(Duration::from_secs(3));
    let t = c.query(r#"timestamp(gen3_service_up{commons="beta",service="indexd"})"#)?;
    let after = t.first().and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok()).unwrap_or(0.0);
    ensure!(
        after > before,
        "beta still probes indexd with the last good config ({before} -> {after})"
    );
    std::fs::write(cfg_dir.join("_default.yml"), default_yml(&gen3.http, &["fence", "indexd"]))?;
    wait_agent(&c, "beta-agent", "fixed", |x| {
        x["config_error"].is_null() && x["config_status"] == "applied"
    })?;

    // Configs the agent rejects: an unknown field, an invalid regex, a path
    // its local file does not use. Each is listed with the reason; alpha
    // keeps its last good config (sheepdog still probed).
    let rejects = [
        ("sources:\n  gen3_status:\n    servicez: {}\n", "servicez"),
        (
            "sources:\n  scrape:\n    jobs:\n      - job_name: x\n        static_configs: [{targets: ['127.0.0.1:1']}]\n        metric_relabel_configs: [{source_labels: [__name__], regex: '(', action: drop}]\n",
            "regex",
        ),
        (
            "sources:\n  revproxy_log: {enabled: true, path: /etc/passwd}\n",
            "not a file the local configuration uses",
        ),
    ];
    for (body, want) in rejects {
        std::fs::write(cfg_dir.join("alpha.yml"), body)?;
        let x = wait_agent(&c, "alpha-agent", want, |x| {
            x["config_status"] == "rejected" && x["config_error"].as_str().is_some_and(|e| e.contains(want))
        })?;
        eprintln!("rejected as expected: {}", x["config_error"]);
        ensure!(metric(&a_metrics, "csoc_agent_config_last_reload_successful") == Some(0.0));
    }
    let ts = |c: &Collector| -> f64 {
        c.query(r#"timestamp(gen3_service_up{commons="alpha",service="sheepdog"})"#)
            .ok()
            .and_then(|r| r.first().and_then(|r| r["value"][1].as_str()?.parse().ok()))
            .unwrap_or(0.0)
    };
    let before = ts(&c);
    std::thread::sleep(Duration::from_secs(3));
    ensure!(ts(&c) > before, "alpha still runs its last good config");
    // A path the local file names may be used.
    std::fs::write(d.join("access.log"), "")?;
    std::fs::write(
        cfg_dir.join("alpha.yml"),
        format!(
            "sources:\n  gen3_status:\n    services: {{fence: {{}}, indexd: {{}}, sheepdog: {{}}}}\n  revproxy_log: {{enabled: true, path: {}}}\n",
            d.join("access.log").display()
        ),
    )?;
    wait_agent(&c, "alpha-agent", "applied with a local path", |x| x["config_status"] == "applied")?;
    let applied = metric(&a_metrics, "csoc_agent_config_version").context("version")?;

    // The agent restarted while the collector is down runs its last good
    // config (kept in its spool directory).
    c.proc.terminate()?;
    a.terminate()?;
    let (a2, a2_metrics) = start(d, &c, "alpha-agent", ALPHA, &[])?;
    wait_for("the restarted agent probes with its kept config", WAIT, || {
        let t = get_text(&a2_metrics).ok()?.1;
        (metric_value(&t, "csoc_agent_config_version") == Some(applied)
            && t.lines()
                .any(|l| l.starts_with("csoc_agent_source_samples_total{source=\"gen3_status\"}") && !l.ends_with(" 0")))
        .then_some(())
    })?;
    ensure!(metric(&a2_metrics, "csoc_agent_connected") == Some(0.0), "the collector is down");
    ensure!(a2.log_text().contains("running the last good central config"), "{}", a2.log_text());
    c = Collector::start_on(d, http_port, grpc_port, &cargs)?;
    wait_agent(&c, "alpha-agent", "applied after the collector's restart", |x| {
        x["connected"] == true && x["config_status"] == "applied" && x["config_running_version"].as_u64().is_some_and(|v| v > 0)
    })?;
    wait_for("alpha probes sheepdog again", WAIT, || up(&c, "alpha", "sheepdog").then_some(()))?;
    Ok(())
}

#[test]
fn fifty_agents_apply_a_push_within_5s() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let cfg_dir = d.join("agent-config");
    std::fs::create_dir_all(&cfg_dir)?;
    let gen3 = FakeGen3::start(d, "gen3", &[])?;
    std::fs::write(cfg_dir.join("_default.yml"), default_yml(&gen3.http, &["fence"]))?;
    let tok = format!("alpha={ALPHA}");
    let c = Collector::start(
        d,
        &["--agent-token", &tok, "--agent-config-dir", cfg_dir.to_str().context("utf-8")?],
    )?;
    let (_a1, _) = start(d, &c, "real-1", ALPHA, &[])?;
    let (_a2, _) = start(d, &c, "real-2", ALPHA, &[])?;
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let sims = csoc_tests::grpc::config_sim::ConfigAgents::start(&c.grpc, ALPHA, 48, "sim");
    let all_applied = |c: &Collector| -> anyhow::Result<(usize, Vec<Value>)> {
        let (_, v) = get_json(&format!("{}/api/v1/agents", c.http))?;
        let list = v["data"].as_array().cloned().unwrap_or_default();
        let n = list
            .iter()
            .filter(|x| x["connected"] == true && x["config_status"] == "applied" && x["config_running_version"] == x["config_version"])
            .count();
        Ok((n, list))
    };
    wait_for("50 agents applied the first config", Duration::from_secs(60), || {
        all_applied(&c).ok().filter(|(n, _)| *n == 50)
    })?;
    let before = agent(&c, "real-1")?.context("real-1")?["config_version"].clone();
    let t0 = Instant::now();
    std::fs::write(cfg_dir.join("_default.yml"), default_yml(&gen3.http, &["fence", "indexd"]))?;
    let (code, body) = post(&format!("{}/-/reload", c.http))?;
    ensure!(code == 200, "POST /-/reload: {code} {body}");
    let mut last = Vec::new();
    let res = wait_for("50 agents applied the new config", Duration::from_secs(30), || {
        let (n, list) = all_applied(&c).ok()?;
        let new = list.iter().filter(|x| x["config_version"] != before).count();
        last = list;
        (n == 50 && new >= 50).then_some(())
    });
    let took = t0.elapsed();
    if res.is_err() {
        anyhow::bail!("not all applied after {took:?}; errors {:?}; listing {last:?}", sims.errors);
    }
    let (sim_n, sim_last) = sims.applied_since(t0);
    ensure!(sim_n == 48, "48 simulated agents answered, not {sim_n}");
    eprintln!(
        "50 agents (2 real, 48 simulated) applied a push: all listed as applied after {took:?}, last simulated answer after {:?}",
        sim_last.map(|t| t.duration_since(t0))
    );
    ensure!(took < Duration::from_secs(5), "took {took:?}");
    wait_for("the real agents probe indexd", WAIT, || up(&c, "alpha", "indexd").then_some(()))?;
    Ok(())
}

#[test]
fn the_agent_rereads_its_local_file_on_post_reload_and_sighup() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let gen3 = FakeGen3::start(d, "gen3", &[])?;
    let tok = format!("alpha={ALPHA}");
    let c = Collector::start(d, &["--agent-token", &tok])?;
    let (mut a, metrics) = start(d, &c, "local-agent", ALPHA, &[])?;
    let base = metrics.trim_end_matches("/metrics").to_string();
    wait_for("agent /-/ready", WAIT, || {
        get_text(&format!("{base}/-/ready")).ok().filter(|(s, _)| *s == 200)
    })?;
    let file = d.join("local-agent.yml");
    let probe = |svc: &str| {
        format!(
            "  gen3_status:\n    enabled: true\n    base_url: {}\n    default_services: false\n    services: {{{svc}: {{}}}}\n",
            gen3.http
        )
    };
    // POST /-/reload applies the local file's sources at once.
    local_file(d, "local-agent", &probe("fence"))?;
    let (code, body) = post(&format!("{base}/-/reload"))?;
    ensure!(code == 200 && body.contains("gen3_status"), "POST /-/reload: {code} {body}");
    wait_for("fence probed after POST /-/reload", WAIT, || up(&c, "alpha", "fence").then_some(()))?;
    ensure!(metric(&metrics, "csoc_agent_config_last_reload_successful") == Some(1.0));
    // A broken file is refused; the running configuration is kept.
    std::fs::write(&file, "interval: 1s\nsources:\n  gen3_status: {enabled: true, servicez: {}}\n")?;
    let (code, body) = post(&format!("{base}/-/reload"))?;
    ensure!(code == 500 && body.contains("servicez"), "POST /-/reload: {code} {body}");
    ensure!(metric(&metrics, "csoc_agent_config_last_reload_successful") == Some(0.0));
    // SIGHUP re-reads it too.
    local_file(d, "local-agent", &probe("indexd"))?;
    let pid = a.child.id().to_string();
    ensure!(
        std::process::Command::new("kill").args(["-HUP", &pid]).status()?.success(),
        "kill -HUP"
    );
    wait_for("indexd probed after SIGHUP", WAIT, || up(&c, "alpha", "indexd").then_some(()))?;
    ensure!(metric(&metrics, "csoc_agent_config_last_reload_successful") == Some(1.0));
    ensure!(a.child.try_wait()?.is_none(), "the agent kept running");
    ensure!(a.log_text().matches("csoc-agent starting").count() == 1, "no restart");
    Ok(())
}
