#!/usr/bin/env bash
# Ack latency of the collector's gRPC ingest under many concurrent agent
# streams: release csoc-collector plus csoc-agentsim (N simulated agents,
# each on its own connection and stream, one batch of S samples per
# interval, each waiting for its ack), on 127.0.0.1.
#
#   tests/bench/agents-load.sh [--agents 200] [--series 100] [--interval 1s]
#                              [--duration 2m] [--no-build] [--keep]
#
# Prints csoc-agentsim's JSON report (batches, acks, p50/p99/max ack latency
# in ms) and the collector's peak RSS and CPU time; checks that the
# collector stored every acknowledged sample exactly once. No timed
# assertions: figures go to RELIABILITY.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
agents=200 series=100 interval=1s duration=2m build=1 keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --agents) agents=$2; shift ;;
    --series) series=$2; shift ;;
    --interval) interval=$2; shift ;;
    --duration) duration=$2; shift ;;
    --no-build) build=0 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
release_bins
sim=$target_dir/release/csoc-agentsim
[ -x "$sim" ] || { log "no $sim (run without --no-build)"; exit 2; }
[ -z "$csoc_problem" ] || { log "$csoc_problem"; exit 2; }
warn_other_servers

work=$(mktemp -d /tmp/csoc-agents-load.XXXXXX)
token=agents-load-token-0123456789abcdef
next_port=19380
take_port; hp=$PORT
take_port; gp=$PORT
"$collector" --data-dir "$work/data" --http-listen 127.0.0.1:$hp --grpc-listen 127.0.0.1:$gp \
  --agent-token "load=$token" --self-scrape-interval 0 >"$work/collector.log" 2>&1 &
cpid=$!
cleanup() {
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$hp/-/ready" >/dev/null && break; sleep 0.1; done

log "$agents agents x $series series every $interval for $duration"
report=$(CSOC_AGENTSIM_TOKEN=$token "$sim" --url "http://127.0.0.1:$gp" --agents "$agents" --series "$series" \
  --interval "$interval" --duration "$duration" --prefix load) || { log "agentsim reported failures: $report"; }
echo "$report"
acked=$(echo "$report" | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples_acked"])')
stored=$(curl -fs "http://127.0.0.1:$hp/api/v1/query" --data-urlencode 'query=sum(count_over_time(csoc_sim_value{job="load"}[1h]))' |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
# Where the time went: the collector's group-commit latency histogram.
curl -fs "http://127.0.0.1:$hp/metrics" | grep -E '^csoc_collector_tsdb_commit_duration_seconds_(bucket|sum|count)' >&2 || true
rss=$(awk '/VmHWM/ {print $2}' "/proc/$cpid/status")
cpu=$(awk '{print ($14+$15)/100}' "/proc/$cpid/stat")
log "samples acked $acked, stored $stored; collector peak RSS $((rss / 1024)) MiB, CPU ${cpu}s"
echo "samples_acked=$acked samples_stored=$stored collector_peak_rss_kib=$rss collector_cpu_s=$cpu"
[ "$acked" = "$stored" ] || { log "MISMATCH: acked $acked, stored $stored"; exit 1; }
