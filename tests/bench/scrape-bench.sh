#!/usr/bin/env bash
# Measures the agent's cost of scraping a 10,000-series target.
#
#   tests/bench/scrape-bench.sh [SCRAPES] [SERIES] [INTERVAL] [PORT_BASE]
#   e.g. tests/bench/scrape-bench.sh 60 10000 1s
#
# Generates an exposition of SERIES series (default 10000: 100 families of
# 100 series, 0.0.4 text with HELP/TYPE, node_exporter-like label sets),
# serves it with `python3 -m http.server`, and runs a release csoc-collector
# and csoc-agent (`--scrape bench=URL`, host source off) on 127.0.0.1 (ports
# PORT_BASE..PORT_BASE+3, default 19400). After the first scrape it reads the
# agent's utime+stime from /proc/<pid>/stat, waits for SCRAPES more scrapes
# (counted from csoc_agent_source_samples_total{source="scrape"} on the
# agent's /metrics), and prints CPU time per scrape (the whole agent: scrape,
# parse, relabel, staleness tracking, encode, spool, ship) and peak RSS
# (VmHWM). Uses CARGO_TARGET_DIR if set. Stops every process by PID.
set -euo pipefail
scrapes=${1:-60}
series=${2:-10000}
interval=${3:-1s}
base=${4:-19400}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --quiet -p csoc-agent -p csoc-collector --bins
bin=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d)
mkdir -p "$work/www"
python3 - "$series" >"$work/www/metrics" <<'PY'
import sys
n = int(sys.argv[1])
fams = max(1, n // 100)
per = n // fams
for f in range(fams):
    name = f"bench_metric_{f}_total" if f % 2 == 0 else f"bench_gauge_{f}_bytes"
    kind = "counter" if f % 2 == 0 else "gauge"
    print(f"# HELP {name} Benchmark family {f}.")
    print(f"# TYPE {name} {kind}")
    for i in range(per):
        print(f'{name}{{device="sd{i % 7}",mode="m{i % 5}",cpu="{i}",path="/var/lib/x/{i}"}} {i * 1.5e3 + f:.10g}')
PY
token="bench-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf 'sources:\n  host:\n    enabled: false\n' >"$work/agent.yml"
(cd "$work/www" && exec python3 -m http.server --bind 127.0.0.1 "$((base + 3))") >"$work/http.log" 2>&1 &
hpid=$!
"$bin/csoc-collector" --data-dir "$work/data" --http-listen "127.0.0.1:$base" --self-scrape-interval 0 \
  --grpc-listen "127.0.0.1:$((base + 1))" --agent-token "bench=$token" >"$work/collector.log" 2>&1 &
cpid=$!
CSOC_AGENT_TOKEN=$token "$bin/csoc-agent" --config "$work/agent.yml" --collector "http://127.0.0.1:$((base + 1))" \
  --interval "$interval" --spool-dir "$work/spool" --http-listen "127.0.0.1:$((base + 2))" \
  --scrape "bench=http://127.0.0.1:$((base + 3))/metrics" >"$work/agent.log" 2>&1 &
apid=$!
trap 'kill -TERM $apid $cpid $hpid 2>/dev/null || true; wait $apid $cpid $hpid 2>/dev/null || true; rm -rf "$work"' EXIT

tck=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per_scrape=$((series + 5))  # the exposition plus up, scrape_duration_seconds, ...
count() {
  local n
  n=$(curl -s "http://127.0.0.1:$((base + 2))/metrics" | awk '/^csoc_agent_source_samples_total\{source="scrape"\}/ {print $2}')
  echo $(( ${n:-0} / per_scrape ))
}
wait_scrapes() {
  local want=$1 deadline=$((SECONDS + 600))
  while [ "$(count)" -lt "$want" ]; do
    kill -0 $apid 2>/dev/null || { echo "agent died; log:"; cat "$work/agent.log"; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "timed out; agent log:"; cat "$work/agent.log"; exit 1; }
    sleep 0.2
  done
}
wait_scrapes 1
n0=$(count)
c0=$(ticks $apid)
wait_scrapes $((n0 + scrapes))
n1=$(count)
c1=$(ticks $apid)
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$apid/status")
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$apid/status")
up=$(curl -s "http://127.0.0.1:$base/api/v1/query?query=up%7Bjob%3D%22bench%22%7D" | grep -o '"value":\[[^]]*\]' || true)
printf 'scrape-bench series=%s scrapes=%s interval=%s cpu_per_scrape=%.1fms rss_peak=%.1fMiB rss_final=%.1fMiB up=%s machine="%s, %s cores" date=%s\n' \
  "$series" "$((n1 - n0))" "$interval" "$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="$((n1 - n0))" 'BEGIN {print 1000 * (b - a) / t / n}')" \
  "$(awk -v k="$hwm" 'BEGIN {print k / 1024}')" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "${up:-?}" \
  "$(uname -sm)" "$(nproc)" "$(date -u +%Y-%m-%d)"
