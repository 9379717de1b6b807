//! The collector's agent registry end to end: `GET /api/v1/agents` lists
//! the agents, scoped like every read; `DELETE
//! /api/v1/admin/agents/{commons}/{agent}` forgets one, authorised like the
//! other admin endpoints (an admin token, `--web.enable-admin-api`), and
//! refuses a connected one; an agent silent for longer than
//! `--agent-forget-after` is forgotten, so its last-seen series ends and
//! the rule pack's `CsocAgentSilent` (which pages for as long as the agent
//! is listed) stops; both stay true across a collector restart.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use csoc_tests::grpc::{hello, session};
use csoc_tests::*;
use serde_json::Value;

const ALPHA: &str = "agents-alpha-token-0123456789";
const BETA: &str = "agents-beta-token-0123456789ab";
const OPS: &str = "agents-ops-token-0123456789abcd";
const READ: &str = "agents-read-token-0123456789abc";
const ALPHA_READ: &str = "agents-alpha-read-token-012345";
const WAIT: Duration = Duration::from_secs(30);

/// An HTTP call with an optional bearer token: (status, JSON body or Null).
fn call(method: reqwest::Method, url: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
    let mut req = reqwest::blocking::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send()?;
    let code = r.status().as_u16();
    let text = r.text()?;
    Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// `GET /api/v1/agents` as `token`.
fn agents(c: &Collector, token: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let (code, v) = call(reqwest::Method::GET, &format!("{}/api/v1/agents", c.http), token)?;
    ensure!(code == 200 && v["status"] == "success", "GET /api/v1/agents: HTTP {code}: {v}");
    Ok(v["data"].as_array().cloned().unwrap_or_default())
}

/// (commons, agent) of a listing.
fn names(list: &[Value]) -> Vec<(String, String)> {
    list.iter()
        .map(|a| {
            (
                a["commons"].as_str().unwrap_or("").to_string(),
                a["agent"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pair(c: &str, a: &str) -> (String, String) {
    (c.to_string(), a.to_string())
}

/// `DELETE /api/v1/admin/agents/{commons}/{agent}` as `token`.
fn remove(c: &Collector, commons: &str, agent: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
    call(
        reqwest::Method::DELETE,
        &format!("{}/api/v1/admin/agents/{commons}/{agent}", c.http),
        token,
    )
}

/// An instant query as `token`: the result.
fn query(c: &Collector, q: &str, token: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let url = format!("{}/api/v1/query?query={}", c.http, urlencode(q));
    let (code, v) = call(reqwest::Method::GET, &url, token)?;
    ensure!(code == 200 && v["status"] == "success", "{q}: HTTP {code}: {v}");
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// An agent that says Hello, gets its Welcome and goes away (a pod of an
/// old rollout, as the collector saw it).
fn hello_and_leave(c: &Collector, token: &str, agent: &str) -> anyhow::Result<()> {
    let out = session(&c.grpc, Some(token), vec![hello(agent, 1)], 1, Duration::from_secs(10))?;
    ensure!(out.welcomed(), "{agent}: no Welcome: {:?}", out.status);
    Ok(())
}

fn last_seen(agent: &str) -> String {
    format!(r#"csoc_collector_agent_last_seen_timestamp_seconds{{agent="{agent}"}}"#)
}

#[test]
fn agents_are_listed_per_scope_and_removed_only_by_an_admin() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (http_port, grpc_port) = (free_port(), free_port());
    let flags = [
        "--agent-token".to_string(),
        format!("alpha={ALPHA}"),
        "--agent-token".into(),
        format!("beta={BETA}"),
        "--api-token".into(),
        format!("ops={OPS}:admin"),
        "--api-token".into(),
        format!("grafana={READ}:read"),
        "--api-token".into(),
        format!("grafana-alpha={ALPHA_READ}:read:commons=alpha"),
        "--web.enable-admin-api".into(),
        "--self-scrape-interval".into(),
        "1s".into(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c = Collector::start_on(dir.path(), http_port, grpc_port, &flags)?;

    // alpha-agent runs (a real agent); two pods of old rollouts came and went.
    let (_agent, _) = start_agent(
        dir.path(),
        "alpha-agent",
        &c.grpc,
        &["--token", ALPHA, "--agent-name", "alpha-agent", "--interval", "1s"],
    )?;
    hello_and_leave(&c, ALPHA, "alpha-agent-5f7b-old")?;
    hello_and_leave(&c, BETA, "beta-agent-8c2d-old")?;
    let all = wait_for("three agents listed, alpha-agent connected", WAIT, || {
        let l = agents(&c, Some(OPS)).ok()?;
        let live = l.iter().find(|a| a["agent"] == "alpha-agent")?;
        (l.len() == 3 && live["connected"] == true).then_some(l)
    })?;
    ensure!(
        names(&all)
            == vec![
                pair("alpha", "alpha-agent"),
                pair("alpha", "alpha-agent-5f7b-old"),
                pair("beta", "beta-agent-8c2d-old")
            ],
        "sorted by commons and agent: {all:?}"
    );
    for a in &all {
        for key in ["first_seen", "last_seen"] {
            let t = a[key].as_str().context("a time")?;
            ensure!(
                t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
                "{key} is RFC 3339: {a}"
            );
        }
        ensure!(a["hostname"].as_str().is_some_and(|h| !h.is_empty()), "{a}");
    }
    let old = &all[1];
    ensure!(old["connected"] == false && old["version"] == "test", "{old}");
    ensure!(
        old["forget_at"].as_str().is_some(),
        "a silent agent has a forget_at (default 7d): {old}"
    );
    ensure!(all[0]["forget_at"].is_null(), "a connected one has none: {}", all[0]);
    // Every read token sees the list; a commons-scoped one only its commons.
    ensure!(names(&agents(&c, Some(READ))?).len() == 3);
    ensure!(
        names(&agents(&c, Some(ALPHA_READ))?) == vec![pair("alpha", "alpha-agent"), pair("alpha", "alpha-agent-5f7b-old")],
        "scoped to alpha"
    );
    let (code, _) = call(reqwest::Method::GET, &format!("{}/api/v1/agents", c.http), None)?;
    ensure!(code == 401, "no token: {code}");

    // The self-scrape stored their last contacts.
    wait_for("the old beta pod's last-seen series", WAIT, || {
        query(&c, &last_seen("beta-agent-8c2d-old"), Some(OPS))
            .ok()
            .filter(|r| !r.is_empty())
    })?;

    // Read tokens, scoped or not, cannot remove; nothing changed.
    for t in [ALPHA_READ, READ] {
        let (code, v) = remove(&c, "beta", "beta-agent-8c2d-old", Some(t))?;
        ensure!(code == 403 && v["errorType"] == "forbidden", "a read token: HTTP {code}: {v}");
    }
    let (code, _) = remove(&c, "beta", "beta-agent-8c2d-old", None)?;
    ensure!(code == 401, "no token: {code}");
    ensure!(agents(&c, Some(OPS))?.len() == 3, "nothing removed");
    // A connected agent would be back at its next message: refused.
    let (code, v) = remove(&c, "alpha", "alpha-agent", Some(OPS))?;
    ensure!(code == 409 && v["errorType"] == "conflict", "connected: HTTP {code}: {v}");
    // Unknown agents, and a name under another commons.
    for (commons, agent) in [("alpha", "nobody"), ("alpha", "beta-agent-8c2d-old"), ("gamma", "x")] {
        let (code, v) = remove(&c, commons, agent, Some(OPS))?;
        ensure!(code == 404 && v["errorType"] == "not_found", "{commons}/{agent}: HTTP {code}: {v}");
    }
    // The admin token removes it: 204, gone from the list, /metrics and
    // instant queries (a staleness marker, not the 5 minute lookback).
    let (code, _) = remove(&c, "beta", "beta-agent-8c2d-old", Some(OPS))?;
    ensure!(code == 204, "removed: HTTP {code}");
    let (code, _) = remove(&c, "beta", "beta-agent-8c2d-old", Some(OPS))?;
    ensure!(code == 404, "removed twice: HTTP {code}");
    ensure!(
        names(&agents(&c, Some(OPS))?) == vec![pair("alpha", "alpha-agent"), pair("alpha", "alpha-agent-5f7b-old")],
        "beta's old pod is no longer listed"
    );
    let text = reqwest::blocking::Client::new()
        .get(format!("{}/metrics", c.http))
        .bearer_auth(OPS)
        .send()?
        .text()?;
    ensure!(!text.contains("beta-agent-8c2d-old"), "/metrics still names the removed agent");
    ensure!(text.contains(r#"agent="alpha-agent-5f7b-old""#), "/metrics: {text}");
    wait_for("the removed agent's last-seen series ends", Duration::from_secs(10), || {
        query(&c, &last_seen("beta-agent-8c2d-old"), Some(OPS))
            .ok()
            .filter(|r| r.is_empty())
    })?;
    ensure!(
        !query(&c, &last_seen("alpha-agent-5f7b-old"), Some(OPS))?.is_empty(),
        "the others go on"
    );

    // After a restart the removal holds, though storage still holds the
    // removed agent's past samples; the others are back with their times.
    c.proc.terminate()?;
    let c = Collector::start_on(dir.path(), http_port, grpc_port, &flags)?;
    let l = agents(&c, Some(OPS))?;
    ensure!(
        names(&l) == vec![pair("alpha", "alpha-agent"), pair("alpha", "alpha-agent-5f7b-old")],
        "after a restart: {l:?}"
    );
    ensure!(
        l[1]["last_seen"] == all[1]["last_seen"],
        "last contact kept: {} vs {}",
        l[1],
        all[1]
    );
    ensure!(query(&c, &last_seen("beta-agent-8c2d-old"), Some(OPS))?.is_empty());
    Ok(())
}

/// The rule pack with every group evaluated each second and
/// CsocAgentSilent's threshold cut from 120 s to 2 s.
fn fast_agent_rules(dir: &Path) -> anyhow::Result<String> {
    let pack = std::fs::read_to_string(workspace().join("deploy/rules/gen3.yml"))?;
    let interval = regex::Regex::new(r"(?m)^(\s+)interval: \S+$")?;
    let pack = interval.replace_all(&pack, "${1}interval: 1s").into_owned();
    let silent = "time() - csoc_collector_agent_last_seen_timestamp_seconds > 120";
    ensure!(pack.contains(silent), "CsocAgentSilent's expression changed; update this test");
    let pack = pack.replace(silent, "time() - csoc_collector_agent_last_seen_timestamp_seconds > 2");
    let p = dir.join("gen3-fast.yml");
    std::fs::write(&p, pack)?;
    Ok(p.display().to_string())
}

#[test]
fn a_silent_agent_pages_until_it_is_forgotten_then_stays_forgotten() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = fast_agent_rules(dir.path())?;
    let (http_port, grpc_port) = (free_port(), free_port());
    let flags = [
        "--agent-token".to_string(),
        format!("alpha={ALPHA}"),
        "--agent-forget-after".into(),
        "8s".into(),
        "--self-scrape-interval".into(),
        "1s".into(),
        "--rules".into(),
        rules,
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c = Collector::start_on(dir.path(), http_port, grpc_port, &flags)?;
    let (code, v) = call(reqwest::Method::GET, &format!("{}/api/v1/status/flags", c.http), None)?;
    ensure!(code == 200 && v["data"]["agent-forget-after"] == "8s", "{v}");

    hello_and_leave(&c, ALPHA, "alpha-agent-5f7b-old")?;
    let firing = r#"ALERTS{alertname="CsocAgentSilent",alertstate="firing",agent="alpha-agent-5f7b-old",commons="alpha"}"#;
    wait_for("CsocAgentSilent fires for the silent agent", WAIT, || {
        c.query(firing).ok().filter(|r| !r.is_empty())
    })?;
    ensure!(
        agents(&c, None)?.iter().any(|a| a["agent"] == "alpha-agent-5f7b-old"),
        "listed while it pages"
    );
    // Forgotten 8 s after its last contact (swept every 2 s): no longer
    // listed, its series ends and the alert resolves.
    wait_for("the agent is forgotten", WAIT, || agents(&c, None).ok().filter(|l| l.is_empty()))?;
    wait_for("CsocAgentSilent stops", Duration::from_secs(10), || {
        c.query(firing).ok().filter(|r| r.is_empty())
    })?;
    ensure!(
        c.query(&last_seen("alpha-agent-5f7b-old"))?.is_empty(),
        "its last-seen series ended"
    );
    let (code, v) = c_alerts(&c)?;
    ensure!(code == 200 && !v.contains("alpha-agent-5f7b-old"), "/api/v1/alerts: {v}");
    // The admin endpoints are off without --web.enable-admin-api.
    let (code, v) = remove(&c, "alpha", "alpha-agent-5f7b-old", None)?;
    ensure!(code == 503 && v["errorType"] == "unavailable", "admin API off: HTTP {code}: {v}");

    // A restart does not bring it back from storage's past samples.
    c.proc.terminate()?;
    let c = Collector::start_on(dir.path(), http_port, grpc_port, &flags)?;
    ensure!(agents(&c, None)?.is_empty(), "still forgotten after a restart");
    std::thread::sleep(Duration::from_secs(3));
    ensure!(c.query(firing)?.is_empty(), "and not paging");
    // It is listed again once it connects again.
    hello_and_leave(&c, ALPHA, "alpha-agent-5f7b-old")?;
    ensure!(names(&agents(&c, None)?) == vec![pair("alpha", "alpha-agent-5f7b-old")]);
    Ok(())
}

fn c_alerts(c: &Collector) -> anyhow::Result<(u16, String)> {
    get_text(&format!("{}/api/v1/alerts", c.http))
}
