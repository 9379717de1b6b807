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
