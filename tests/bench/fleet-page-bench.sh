#!/usr/bin/env bash
# The fleet page (/) of the console with 20 commons × 25 Gen3 services × 5
# agents and 1,000 firing alerts: the server's time for the page (its
# Server-Timing header: queries and rendering) and the transfer, over 50
# requests after 10 warm-ups. Release build; the test asserts the targets
# of issue 18 (server time p95 <= 50 ms, transfer <= 200 KB).
#
#   tests/bench/fleet-page-bench.sh            # build, run, print the report
#   tests/bench/fleet-page-bench.sh --no-build # reuse the release binaries
#
# The report is also written to target/bench/fleet-page.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" != "--no-build" ]; then
  cargo build --release --quiet -p csoc-collector -p csoc-agent -p csoc-tests --bins
fi
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(git rev-parse --short HEAD)"
cargo test --release --quiet -p csoc-tests --test e2e console::fleet_page_benchmark -- --ignored --nocapture 2>&1 \
  | grep -E '^FLEET-PAGE-BENCH|test result|panicked|Error' || true
cat target/bench/fleet-page.json
