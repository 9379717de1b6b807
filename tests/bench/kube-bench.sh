#!/usr/bin/env bash
# The kubernetes source at the size of a large commons: csoc-agent watching
# the fake Kubernetes API server (tests/src/fakekube, binary csoc-fake-kube)
# while it serves 2,000 pods, 300 Deployments, 500 Jobs and 10 Warning
# events/s, with pods changing every second, streaming to a real collector.
#
#   tests/bench/kube-bench.sh [--duration SECONDS] [--interval 15s]
#       [--pods 2000] [--deployments 300] [--jobs 500] [--events 10]
#       [--churn 2] [--port-base 19400] [--no-build]
#
# Measures the agent's resident memory (VmRSS every 10 s; max and final) and
# its CPU (utime+stime from /proc/PID/stat over the measured window, as % of
# one core and CPU-seconds per minute), after a warm-up of one interval plus
# the initial lists. Also prints the series the agent sends per round and how
# many list and watch requests it made (a poller would list every interval).
# Everything on 127.0.0.1; every process stopped by PID at the end.
set -euo pipefail
duration=300 interval=15s pods=2000 deployments=300 jobs=500 events=10 churn=2 base=19400 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift ;;
    --interval) interval=$2; shift ;;
    --pods) pods=$2; shift ;;
    --deployments) deployments=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    --events) events=$2; shift ;;
    --churn) churn=$2; shift ;;
    --port-base) base=$2; shift ;;
    --no-build) build=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "kube-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
if [ "$build" = 1 ]; then
  cargo build --release --quiet -p csoc-agent -p csoc-collector -p csoc-tests \
    --bin csoc-agent --bin csoc-collector --bin csoc-fake-kube
fi
bin=$target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "kube-bench: $*" >&2; }

token="bench-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$bin/csoc-fake-kube" --listen "127.0.0.1:$base" --kubeconfig-out "$work/kubeconfig" --namespace gen3 \
  --pods "$pods" --deployments "$deployments" --jobs "$jobs" --events-per-second "$events" \
  --churn-per-second "$churn" --duration "$((duration + 600))s" >"$work/fake.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
[ -s "$work/kubeconfig" ] || { log "csoc-fake-kube did not start:"; cat "$work/fake.log" >&2; exit 1; }
"$bin/csoc-collector" --data-dir "$work/data" --http-listen "127.0.0.1:$((base + 1))" \
  --grpc-listen "127.0.0.1:$((base + 2))" --agent-token "bench=$token" \
  --limit max_samples_per_second=0 --limit max_series_per_agent=0 >"$work/collector.log" 2>&1 &
pids+=($!)
sleep 1
CSOC_AGENT_TOKEN=$token "$bin/csoc-agent" --collector "http://127.0.0.1:$((base + 2))" --interval "$interval" \
  --spool-dir "$work/spool" --http-listen "127.0.0.1:$((base + 3))" --agent-name bench \
  --kubeconfig "$work/kubeconfig" --kubernetes-namespace gen3 >"$work/agent.log" 2>&1 &
apid=$!
pids+=($apid)

tck=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
metric() { curl -sf "http://127.0.0.1:$((base + 3))/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {printf "%.0f", s}'; }
# Warm-up: the initial lists, then one more interval.
for _ in $(seq 1 120); do
  [ "$(metric 'csoc_agent_source_samples_total{source="kubernetes"}')" -gt 0 ] 2>/dev/null && break
  sleep 1
done
warm=$(metric 'csoc_agent_source_samples_total{source="kubernetes"}')
[ "${warm:-0}" -gt 0 ] || { log "the agent sent no kubernetes samples in 120 s; log:"; cat "$work/agent.log" >&2; exit 1; }
sleep "${interval%s}" 2>/dev/null || sleep 15
t0=$(date +%s.%N) c0=$(ticks $apid) s0=$(metric 'csoc_agent_source_samples_total{source="kubernetes"}')
max=0 elapsed=0
while [ "$elapsed" -lt "$duration" ]; do
  step=$((duration - elapsed < 10 ? duration - elapsed : 10))
  sleep "$step"
  elapsed=$((elapsed + step))
  kill -0 $apid 2>/dev/null || { log "agent died; log:"; cat "$work/agent.log" >&2; exit 1; }
  r=$(rss_kib $apid)
  [ "$r" -gt "$max" ] && max=$r
  log "t=${elapsed}s rss=${r}KiB"
done
t1=$(date +%s.%N) c1=$(ticks $apid) s1=$(metric 'csoc_agent_source_samples_total{source="kubernetes"}')
final=$(rss_kib $apid)
errors=$(metric 'csoc_agent_source_errors_total{source="kubernetes"')
requests=$(curl -sf "http://127.0.0.1:$base/fake/requests" 2>/dev/null || echo "?")
awk -v a="$c0" -v b="$c1" -v t="$tck" -v s="$t0" -v e="$t1" -v f="$final" -v m="$max" -v sa="$s0" -v sb="$s1" \
  -v iv="$interval" -v d="$duration" -v p="$pods" -v dp="$deployments" -v j="$jobs" -v ev="$events" -v ch="$churn" \
  -v err="${errors:-0}" -v mach="$(uname -sm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" \
  -v day="$(date -u +%Y-%m-%d)" 'BEGIN {
    secs = e - s; cpu = (b - a) / t
    printf "kubernetes source: pods=%d deployments=%d jobs=%d events/s=%d churn/s=%d interval=%s measured=%ds\n", p, dp, j, ev, ch, iv, d
    printf "  agent RSS final %.1f MiB, max %.1f MiB\n", f / 1024, m / 1024
    printf "  agent CPU %.2f%% of one core (%.2f CPU-s per minute)\n", 100 * cpu / secs, 60 * cpu / secs
    printf "  samples sent %.0f (%.0f per second); source errors %d\n", sb - sa, (sb - sa) / secs, err
    printf "  machine: %s; date %s\n", mach, day
  }'
if [ "$requests" != "?" ]; then echo "  API requests: $requests"; fi
