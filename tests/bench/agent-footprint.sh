#!/usr/bin/env bash
# Measures csoc-agent's resident memory and CPU use against a real collector.
#
#   tests/bench/agent-footprint.sh [DURATION_SECONDS] [INTERVAL] [PORT_BASE]
#   e.g. tests/bench/agent-footprint.sh 600 1s      # RSS after 10 min at 1 s
#        tests/bench/agent-footprint.sh 600 15s     # CPU at the default 15 s
#
# Starts a release csoc-collector and csoc-agent on 127.0.0.1 (ports
# PORT_BASE..PORT_BASE+2, default 19300), samples the agent's VmRSS from
# /proc/<pid>/status every 10 s and its utime+stime from /proc/<pid>/stat,
# prints one summary line, and stops both processes by PID.
set -euo pipefail
duration=${1:-600}
interval=${2:-1s}
base=${3:-19300}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --quiet -p csoc-agent -p csoc-collector --bins
work=$(mktemp -d)
token="bench-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
./target/release/csoc-collector --data-dir "$work/data" --http-listen "127.0.0.1:$base" \
  --grpc-listen "127.0.0.1:$((base + 1))" --agent-token "bench=$token" >"$work/collector.log" 2>&1 &
cpid=$!
CSOC_AGENT_TOKEN=$token ./target/release/csoc-agent --collector "http://127.0.0.1:$((base + 1))" \
  --interval "$interval" --spool-dir "$work/spool" --http-listen "127.0.0.1:$((base + 2))" >"$work/agent.log" 2>&1 &
apid=$!
trap 'kill -TERM $apid $cpid 2>/dev/null || true; wait $apid $cpid 2>/dev/null || true; rm -rf "$work"' EXIT

tck=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
sleep 2
t0=$(date +%s.%N)
c0=$(ticks $apid)
max=0
elapsed=0
while [ "$elapsed" -lt "$duration" ]; do
  step=$(( duration - elapsed < 10 ? duration - elapsed : 10 ))
  sleep "$step"
  elapsed=$((elapsed + step))
  kill -0 $apid 2>/dev/null || { echo "agent died; log:"; cat "$work/agent.log"; exit 1; }
  r=$(rss_kib $apid)
  [ "$r" -gt "$max" ] && max=$r
  echo "t=${elapsed}s rss=${r}KiB" >&2
done
t1=$(date +%s.%N)
c1=$(ticks $apid)
final=$(rss_kib $apid)
acked=$(curl -s "http://127.0.0.1:$((base + 2))/metrics" | awk '/^csoc_agent_batches_acked_total/ {print $2}')
cpu=$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v s="$t0" -v e="$t1" 'BEGIN {printf "%.3f", 100 * (b - a) / t / (e - s)}')
printf 'agent interval=%s duration=%ss rss_final=%.1fMiB rss_max=%.1fMiB cpu=%s%% batches_acked=%s machine="%s, %s cores" date=%s\n' \
  "$interval" "$duration" "$(awk -v k="$final" 'BEGIN {print k / 1024}')" "$(awk -v k="$max" 'BEGIN {print k / 1024}')" "$cpu" "${acked:-?}" \
  "$(uname -sm)" "$(nproc)" "$(date -u +%Y-%m-%d)"
