//! A webhook receiver for benchmarks: accepts Alertmanager-style webhook
//! POSTs on `--listen` (loopback by default) and prints one JSON line per
//! notification on stdout: arrival time (Unix ms), request path, status and
//! the alerts' labels. Stops by itself after `--max-seconds`.

use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::Parser;
use csoc_tests::WebhookSink;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Prints every webhook notification it receives, with its arrival time")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink = WebhookSink::start_on(&args.listen)?;
    println!("listening on {}", sink.url.trim_end_matches("/hook"));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let mut printed = 0;
    while Instant::now() < deadline {
        let got = sink.received_at();
        for (at, path, body) in got.iter().skip(printed) {
            let ms = at.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
            let labels: Vec<_> = body["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a["labels"].clone())
                .collect();
            println!("{}", json!({"at_ms": ms, "path": path, "status": body["status"], "alerts": labels}));
        }
        printed = got.len();
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
