//! The `csoc-agent` binary: flags in, [`csoc_agent::cli::run`] does the rest.

use clap::Parser;

fn main() {
    let args = csoc_agent::cli::Args::parse();
    if let Err(e) = csoc_agent::cli::run(args) {
        eprintln!("csoc-agent: error: {e:#}");
        std::process::exit(2);
    }
}
