//! The `csoc-collector` binary: flags in, [`csoc_collector::cli::run`] does
//! the rest.

use clap::Parser;

/// mimalloc instead of glibc's malloc: a query allocates per series and per
/// step from several threads, and glibc's malloc (with its consolidation of
/// freed chunks) was a fifth of an instant query's profile.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = csoc_collector::cli::Args::parse();
    if let Err(e) = csoc_collector::cli::run(args) {
        eprintln!("csoc-collector: error: {e:#}");
        std::process::exit(2);
    }
}
