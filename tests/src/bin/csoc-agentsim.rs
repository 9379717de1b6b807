//! csoc-agentsim: many simulated agents at once, each on its own gRPC
//! connection and stream, each sending one batch per interval in real time
//! and waiting for its ack; prints the ack latency percentiles and counts as
//! JSON. The load half of the reliability tests (tests/tests/reliability.rs)
//! and of `tests/bench/agents-load.sh`.
//!
//! ```text
//! csoc-agentsim --url http://127.0.0.1:9301 --token TOKEN --agents 200 --series 100 --interval 1s --duration 2m
//! ```
//! Exit status 0 when every agent ran to the end with every batch acked, 1
//! otherwise (the report says what failed), 2 on bad arguments.
//!
//! `--config-bench` (central agent config, `tests/bench/config-push-bench.sh`):
//! the agents answer `ConfigPush` instead of sending batches; each round
//! rewrites `<agent-config-dir>/_default.yml`, triggers the collector
//! (`POST /-/reload`, or `--trigger watch`: its file poll) and measures the
//! time until every agent has answered `applied` (push-to-applied, at the
//! agents) and until `GET /api/v1/agents` lists all of them as applied.
//!
//! ```text
//! csoc-agentsim --config-bench --url http://127.0.0.1:9301 --token T --http http://127.0.0.1:9300 \
//!     --agent-config-dir DIR --agents 500 --rounds 5
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use csoc_tests::grpc::{SimConfig, simulate};

/// Simulated agents for load tests.
#[derive(Debug, Parser)]
#[command(name = "csoc-agentsim", about)]
struct Args {
    /// Collector gRPC URL.
    #[arg(long)]
    url: String,
    /// Agent token (shared by all simulated agents).
    #[arg(long, env = "CSOC_AGENTSIM_TOKEN", hide_env_values = true)]
    token: String,
    /// Number of agents.
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// Series per agent (one sample each per batch).
    #[arg(long, default_value_t = 100)]
    series: usize,
    /// Time between an agent's batches, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = parse_dur)]
    interval: Duration,
    /// How long to run, e.g. 2m.
    #[arg(long, default_value = "2m", value_parser = parse_dur)]
    duration: Duration,
    /// Agent name prefix and job label.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Central config push benchmark (see the module doc).
    #[arg(long)]
    config_bench: bool,
    /// --config-bench: the collector's --agent-config-dir.
    #[arg(long)]
    agent_config_dir: Option<std::path::PathBuf>,
    /// --config-bench: the collector's HTTP base URL.
    #[arg(long)]
    http: Option<String>,
    /// --config-bench: pushes to measure.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// --config-bench: `reload` (POST /-/reload after writing) or `watch`
    /// (the collector's file poll).
    #[arg(long, default_value = "reload")]
    trigger: String,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("csoc-agentsim: {e}");
            return ExitCode::from(2);
        }
    };
    if args.config_bench {
        return match rt.block_on(config_bench(&args)) {
            Ok(rep) => {
                println!("{rep}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("csoc-agentsim: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let rep = rt.block_on(simulate(SimConfig {
        url: args.url,
        token: args.token,
        agents: args.agents,
        series: args.series,
        interval: args.interval,
        duration: args.duration,
        prefix: args.prefix,
    }));
    println!("{}", serde_json::to_string(&rep).unwrap_or_default());
    if rep.agents_failed == 0 && rep.nacked == 0 && rep.acked == rep.batches {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `--config-bench`: see the module doc. Returns the JSON report.
async fn config_bench(args: &Args) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    use csoc_tests::grpc::config_sim::ConfigAgents;
    use std::time::Instant;
    let dir = args.agent_config_dir.clone().context("--config-bench needs --agent-config-dir")?;
    let http = args.http.clone().context("--config-bench needs --http")?;
    let n = args.agents;
    let sims = ConfigAgents::start(&args.url, &args.token, n, &args.prefix);
    let t = Instant::now();
    while sims.welcomed.load(std::sync::atomic::Ordering::Relaxed) < n {
        if let Some(e) = sims.errors.lock().unwrap_or_else(|p| p.into_inner()).first() {
            anyhow::bail!("an agent failed: {e}");
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(120), "agents not all connected within 120s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_s = t.elapsed().as_secs_f64();
    // Let the pushes of the config in force at connection settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let client = reqwest::Client::new();
    let mut rounds = Vec::new();
    for r in 0..args.rounds {
        let body = format!("interval: {}s\nsources:\n  host:\n    enabled: true\n", 20 + r);
        let t0 = Instant::now();
        std::fs::write(dir.join("_default.yml"), body).context("writing _default.yml")?;
        if args.trigger == "reload" {
            let resp = client.post(format!("{http}/-/reload")).send().await.context("POST /-/reload")?;
            anyhow::ensure!(resp.status().is_success(), "POST /-/reload: {}", resp.status());
        }
        let last = loop {
            let (done, last) = sims.applied_since(t0);
            if done >= n {
                break last.unwrap_or(t0);
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "round {r}: {done} of {n} agents applied within 120s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let agents_ms = last.duration_since(t0).as_secs_f64() * 1000.0;
        // The collector's view: every simulated agent listed as applied at
        // the version it holds.
        let api_ms = loop {
            let v: serde_json::Value = client.get(format!("{http}/api/v1/agents")).send().await?.json().await?;
            let ok = v["data"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|x| x["agent"].as_str().is_some_and(|s| s.starts_with(&args.prefix)))
                        .filter(|x| x["config_status"] == "applied" && x["config_running_version"] == x["config_version"])
                        .count()
                })
                .unwrap_or(0);
            if ok >= n {
                break t0.elapsed().as_secs_f64() * 1000.0;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "round {r}: the API lists {ok} of {n} agents as applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        rounds.push(serde_json::json!({"round": r, "push_to_applied_ms": agents_ms, "api_all_applied_ms": api_ms}));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sims.stop();
    let mut v: Vec<f64> = rounds.iter().filter_map(|r| r["push_to_applied_ms"].as_f64()).collect();
    v.sort_by(f64::total_cmp);
    let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
    let max = v.last().copied().unwrap_or(0.0);
    Ok(serde_json::json!({
        "agents": n,
        "trigger": args.trigger,
        "connect_s": connect_s,
        "rounds": rounds,
        "push_to_applied_ms_median": median,
        "push_to_applied_ms_max": max,
    }))
}
