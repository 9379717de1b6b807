//! Interop of the agent's scrape source with a real exporter: Debian's
//! `prometheus-node-exporter` on a free 127.0.0.1 port, scraped by a real
//! csoc-agent (`--scrape node_exporter=URL`, host source off) shipping to a
//! real collector. The series must arrive unchanged: same names, same label
//! sets (plus `job`, `instance`, `commons`), and for constant series the
//! value of a direct scrape. Skips with a message when the exporter is
//! missing, fails under `CSOC_REQUIRE_INTEROP=1`.

use std::collections::BTreeSet;
use std::time::Duration;

use csoc_common::exposition::{Format, parse};
use csoc_tests::*;
use serde_json::Value;

const TOKEN: &str = "scrape-interop-token-0123456789";

fn label<'a>(s: &'a Value, name: &str) -> Option<&'a str> {
    s["metric"][name].as_str()
}

fn value(s: &Value) -> f64 {
    s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// A series' labels without the ones the scrape and the collector add.
fn exposed(s: &Value) -> BTreeSet<(String, String)> {
    s["metric"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance" | "commons"))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn node_exporter_series_arrive_unchanged() -> anyhow::Result<()> {
    let Some(ne) = program("prometheus-node-exporter") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _exporter = Proc::start(
        dir.path(),
        "node_exporter",
        &ne,
        &[format!("--web.listen-address={addr}"), "--log.level=warn".into()],
    )?;
    let url = format!("http://{addr}/metrics");
    let direct = wait_for("node_exporter /metrics", Duration::from_secs(30), || {
        get_text(&url).ok().filter(|(code, _)| *code == 200).map(|(_, b)| b)
    })?;
    let exp = parse(&direct, Format::Prometheus).map_err(|e| anyhow::anyhow!("node_exporter's exposition: {e}"))?;

    let c = Collector::start(
        dir.path(),
        &["--agent-token", &format!("interop={TOKEN}"), "--self-scrape-interval", "0"],
    )?;
    let cfg = dir.path().join("agent.yml");
    std::fs::write(&cfg, "sources:\n  host:\n    enabled: false\n")?;
    let (_agent, _) = start_agent(
        dir.path(),
        "agent",
        &c.grpc,
        &[
            "--config",
            &cfg.display().to_string(),
            "--token",
            TOKEN,
            "--interval",
            "1s",
            "--scrape",
            &format!("node_exporter={url}"),
        ],
    )?;

    let up = wait_for("up{job=\"node_exporter\"} at the collector", Duration::from_secs(30), || {
        c.query(r#"up{job="node_exporter"}"#).ok().filter(|r| !r.is_empty())
    })?;
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(value(&up[0]), 1.0);
    assert_eq!(
        label(&up[0], "instance"),
        Some(addr.as_str()),
        "the target's instance, not the agent's name"
    );
    assert_eq!(label(&up[0], "commons"), Some("interop"));

    // A constant series: same labels, same value as the direct scrape.
    let want = exp
        .samples
        .iter()
        .find(|s| s.labels[0].1 == "node_exporter_build_info")
        .ok_or_else(|| anyhow::anyhow!("no node_exporter_build_info in the direct scrape"))?;
    let got = c.query("node_exporter_build_info")?;
    assert_eq!(got.len(), 1, "{got:?}");
    let want_labels: BTreeSet<(String, String)> = want.labels[1..].iter().cloned().collect();
    assert_eq!(exposed(&got[0]), want_labels);
    assert_eq!(value(&got[0]), want.value);
    assert_eq!(label(&got[0], "job"), Some("node_exporter"));
    assert_eq!(label(&got[0], "instance"), Some(addr.as_str()));

    // Every CPU series of the direct scrape, with the same label sets.
    let want_cpu: BTreeSet<BTreeSet<(String, String)>> = exp
        .samples
        .iter()
        .filter(|s| s.labels[0].1 == "node_cpu_seconds_total")
        .map(|s| s.labels[1..].iter().cloned().collect())
        .collect();
    assert!(!want_cpu.is_empty());
    let got_cpu: BTreeSet<_> = c.query("node_cpu_seconds_total")?.iter().map(exposed).collect();
    assert_eq!(got_cpu, want_cpu);

    // The report series and the family count.
    let n = c.query(r#"scrape_samples_scraped{job="node_exporter"}"#)?;
    assert!(n.first().is_some_and(|s| value(s) > 100.0), "{n:?}");
    let names = c.query(r#"count by (__name__) ({job="node_exporter"})"#)?;
    let want_names: BTreeSet<&str> = exp.samples.iter().map(|s| s.labels[0].1.as_str()).collect();
    let got_names: BTreeSet<&str> = names.iter().filter_map(|s| label(s, "__name__")).collect();
    for name in [
        "node_exporter_build_info",
        "node_cpu_seconds_total",
        "go_goroutines",
        "process_cpu_seconds_total",
    ] {
        assert!(got_names.contains(name) && want_names.contains(name), "{name}");
    }
    Ok(())
}
