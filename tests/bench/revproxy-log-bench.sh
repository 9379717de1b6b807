#!/usr/bin/env bash
# Throughput of the agent's revproxy_log source: lines parsed and counted per
# second of CPU time (utime+stime of the reading thread, one core).
#
#   tests/bench/revproxy-log-bench.sh [LINES]      # default 1000000
#
# Synthesises LINES lines by repeating shared/gen3/fixtures/revproxy-access.jsonl
# (2028 lines: 2016 records incl. 3 with \xHH escapes, 12 malformed) into a
# temporary file, tails it from the beginning to the end with the source's
# Tailer (the code the agent runs each poll), and prints one line:
#   revproxy_log bench: N lines, M MiB, cpu S s (utime+stime), wall W s, R lines/s per core
# File creation is not measured. Release build; honours CARGO_TARGET_DIR.
set -euo pipefail
lines=${1:-1000000}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
REVPROXY_BENCH_LINES=$lines cargo test --release --quiet -p csoc-agent --lib \
  sources::revproxy_log::tests::bench -- --ignored --nocapture --test-threads=1 2>&1 | grep '^revproxy_log bench:'
