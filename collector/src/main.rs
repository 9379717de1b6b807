//! The `csoc-collector` binary: flags in, [`csoc_collector::cli::run`] does
//! the rest.

use clap::Parser;

fn main() {
    let args = csoc_collector::cli::Args::parse();
    if let Err(e) = csoc_collector::cli::run(args) {
        eprintln!("csoc-collector: error: {e:#}");
        std::process::exit(2);
    }
}
