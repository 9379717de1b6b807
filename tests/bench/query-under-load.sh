#!/usr/bin/env bash
# Query latency of csoc-collector while ingestion runs at full speed, against
# the same queries on an idle collector.
#
#   tests/bench/query-under-load.sh [--mode grpc|remote-write] [--targets T]
#       [--rounds N] [--no-build] [--port-base PORT]
#
# Starts a fresh release csoc-collector on 127.0.0.1, ingests T targets x N
# rounds of the node_exporter workload with csoc-loadgen as fast as it can,
# and meanwhile sends one query every 100 ms (alternating an instant selector
# over one target and a 5-minute range selector over one target's CPU
# series), timing each with curl. After the load, the same queries run again
# on the idle collector. Prints count, p50, p99 and max latency for both,
# and stops everything by PID.
set -euo pipefail
mode=grpc
targets=200
rounds=300
build=1
base=19600
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) mode=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --port-base) base=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
if [ "$build" = 1 ]; then
  cargo build --release --quiet -p csoc-collector -p csoc-tests --bins
fi
work=$(mktemp -d)
token="qload-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
http="127.0.0.1:$base"
grpc="127.0.0.1:$((base + 1))"
"$target_dir/release/csoc-collector" --data-dir "$work/data" --http-listen "$http" --grpc-listen "$grpc" \
  --agent-token "bench=$token" >"$work/collector.log" 2>&1 &
cpid=$!
lpid=
cleanup() {
  [ -n "$lpid" ] && kill -TERM "$lpid" 2>/dev/null || true
  kill -TERM "$cpid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "http://$http/-/ready" >/dev/null && break; sleep 0.1; done
if [ "$mode" = grpc ]; then url="http://$grpc"; else url="http://$http/api/v1/write"; fi
q1='node_load1{instance="target-7:9100"}'
q2='node_cpu_seconds_total{instance="target-3:9100",mode="idle"}[5m]'
probe() { # $1 = output file; runs until the file "$work/stop" exists
  local i=0
  while [ ! -e "$work/stop" ]; do
    if [ $((i % 2)) = 0 ]; then q=$q1; else q=$q2; fi
    curl -s -o /dev/null -w '%{time_total}\n' -G "http://$http/api/v1/query" --data-urlencode "query=$q" >>"$1" || true
    i=$((i + 1))
    sleep 0.1
  done
}
stats() {
  sort -n "$1" | awk '{v[NR]=$1} END {
    if (NR == 0) { print "no queries"; exit }
    p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1];
    printf "queries=%d p50=%.1fms p99=%.1fms max=%.1fms", NR, p50 * 1000, p99 * 1000, v[NR] * 1000 }'
}
probe "$work/under-load.txt" &
ppid_=$!
"$target_dir/release/csoc-loadgen" --mode "$mode" --url "$url" --token "$token" --targets "$targets" --rounds "$rounds" \
  --progress-secs 0 >"$work/loadgen.txt" 2>&1 &
lpid=$!
wait "$lpid"
lpid=
touch "$work/stop"
wait "$ppid_"
rm -f "$work/stop"
probe "$work/idle.txt" &
ppid_=$!
sleep 10
touch "$work/stop"
wait "$ppid_"
echo "ingest: $(tail -1 "$work/loadgen.txt")"
echo "under load ($mode, $targets targets x $rounds rounds): $(stats "$work/under-load.txt")"
echo "idle: $(stats "$work/idle.txt")"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); date $(date -u +%Y-%m-%d)"
