#!/usr/bin/env bash
# Central agent config: push-to-applied time for a fleet. Release
# csoc-collector with --agent-config-dir, plus csoc-agentsim --config-bench
# (N simulated agents, each on its own stream, answering every ConfigPush
# with a ConfigStatus), on 127.0.0.1. Each round rewrites _default.yml,
# triggers the collector (POST /-/reload, or with --trigger watch its 2s file
# poll) and measures until every agent has answered `applied`
# (push_to_applied_ms) and until GET /api/v1/agents lists all of them as
# applied at the collector's version (api_all_applied_ms).
#
#   tests/bench/config-push-bench.sh [--agents "50 500"] [--rounds 5]
#                                    [--trigger reload|watch] [--no-build] [--keep]
#                                    [--debug]
#
# --debug uses the debug binaries already built in the target directory
# (cargo build -p csoc-collector -p csoc-tests --bins) instead of building
# release ones: slower code, so its figures are upper bounds.
#
# Prints one JSON report per fleet size and the load average before each.
# The simulated agents do not build sources: a real agent adds its own
# apply time (tests/tests/central_config.rs measures two real ones).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
fleets="50 500" rounds=5 trigger=reload build=1 keep=0 debug=0
while [ $# -gt 0 ]; do
  case $1 in
    --agents) fleets=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --trigger) trigger=$2; shift ;;
    --no-build) build=0 ;;
    --keep) keep=1 ;;
    --debug) debug=1 ;;
    -h|--help) sed -n 2,23p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
if [ "$debug" = 1 ]; then
  target_dir=${CARGO_TARGET_DIR:-$root/target}
  collector=$target_dir/debug/csoc-collector
  sim=$target_dir/debug/csoc-agentsim
  csoc_problem=""
  [ -x "$collector" ] || csoc_problem="no $collector (cargo build -p csoc-collector)"
  log "debug binaries: figures are upper bounds"
else
  release_bins
  sim=$target_dir/release/csoc-agentsim
fi
[ -x "$sim" ] || { log "no $sim (run without --no-build)"; exit 2; }
[ -z "$csoc_problem" ] || { log "$csoc_problem"; exit 2; }
warn_other_servers

work=$(mktemp -d /tmp/csoc-config-push.XXXXXX)
token=config-push-token-0123456789abcdef
next_port=19480
cpid=""
cleanup() {
  if [ -n "$cpid" ]; then
    kill "$cpid" 2>/dev/null || true
    wait "$cpid" 2>/dev/null || true
  fi
  if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

for n in $fleets; do
  dir=$work/agent-config-$n
  mkdir -p "$dir"
  printf 'interval: 15s\nsources:\n  host:\n    enabled: true\n' >"$dir/_default.yml"
  take_port; hp=$PORT
  take_port; gp=$PORT
  "$collector" --data-dir "$work/data-$n" --http-listen 127.0.0.1:$hp --grpc-listen 127.0.0.1:$gp \
    --agent-token "bench=$token" --self-scrape-interval 0 --agent-config-dir "$dir" \
    >"$work/collector-$n.log" 2>&1 &
  cpid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$hp/-/ready" >/dev/null && break; sleep 0.1; done
  log "$n agents, $rounds rounds, trigger $trigger; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  CSOC_AGENTSIM_TOKEN=$token "$sim" --config-bench --url "http://127.0.0.1:$gp" --http "http://127.0.0.1:$hp" \
    --agent-config-dir "$dir" --agents "$n" --rounds "$rounds" --trigger "$trigger" --prefix "bench"
  log "collector RSS: $(ps -o rss= -p "$cpid" | awk '{printf "%.1f MiB", $1/1024}')"
  kill "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=""
done
