#!/usr/bin/env bash
# Remote write out, side by side: a forwarder takes the benchmark workload
# (csoc-loadgen, remote write 1.0) while its remote-write receiver, a
# VictoriaMetrics single node, is DOWN; then the receiver starts and the
# forwarder drains its backlog into it. Forwarders:
#   csoc     release csoc-collector --remote-write (queue = its WAL)
#   vmagent  Debian's vmagent (victoria-metrics package; on-disk queue)
#   prom     Debian's prometheus --web.enable-remote-write-receiver with a
#            remote_write section (queue = its WAL)
#
#   tests/bench/remote-write-bench.sh [--targets 40] [--rounds 120]
#                                     [--only csoc,vmagent,prom] [--no-build]
#                                     [--port-base 19500] [--keep]
#                                     [--max-samples-per-send N]
#
# --max-samples-per-send N: csoc-collector's remote_write queue_config
# max_samples_per_send (default: its own default, 2000); vmagent sends
# blocks of up to 10,000 rows.
#
# Per forwarder: samples accepted, ingest seconds, then drain seconds (from
# the receiver's start until it has received every accepted sample, by its
# vm_rows_inserted_total{type="promremotewrite"}; at most 5 minutes), drain
# samples/s, the
# forwarder's CPU seconds during the drain and its peak RSS, and the samples
# the receiver finally holds (a count query; more than accepted means some
# were sent twice). Bounded: every wait has a deadline; all on 127.0.0.1;
# every process started is stopped by PID. No timed assertions: figures go
# to BENCHMARKS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
targets=40 rounds=120 only=csoc,vmagent,prom build=1 keep=0 next_port=19500 max_send=
while [ $# -gt 0 ]; do
  case $1 in
    --targets) targets=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --only) only=$2; shift ;;
    --no-build) build=0 ;;
    --port-base) next_port=$2; shift ;;
    --keep) keep=1 ;;
    --max-samples-per-send) max_send=$2; shift ;;
    -h|--help) sed -n 2,27p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
has() { [[ ",$only," == *",$1,"* ]]; }
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
release_bins
vm_bin=$(find_bin victoria-metrics victoria-metrics)
vmagent_bin=$(find_bin victoria-metrics vmagent)
prom_bin=$(find_bin prometheus prometheus)
[ -n "$vm_bin" ] || { log "no victoria-metrics binary (apt-get install victoria-metrics)"; exit 2; }
warn_other_servers

clk_tck=$(getconf CLK_TCK)
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
work=$(mktemp -d /tmp/csoc-rw-bench.XXXXXX)
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

wait_http() { # URL SECONDS
  local deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null "$1"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

results=()
bench() {
  local system=$1 dir=$work/$1
  mkdir -p "$dir"
  take_port; local vm_port=$PORT
  take_port; local port=$PORT
  local rw_url="http://127.0.0.1:$vm_port/api/v1/write" fpid auth=()
  case $system in
    csoc)
      take_port
      local rw_args=(--remote-write "$rw_url")
      if [ -n "$max_send" ]; then
        printf 'remote_write:\n  - url: %s\n    queue_config:\n      max_samples_per_send: %s\n' "$rw_url" "$max_send" >"$dir/collector.yml"
        rw_args=(--config "$dir/collector.yml")
      fi
      "$collector" --data-dir "$dir/data" --http-listen "127.0.0.1:$port" --grpc-listen "127.0.0.1:$PORT" \
        --agent-token "bench=$token" --self-scrape-interval 0s "${rw_args[@]}" >"$dir/forwarder.log" 2>&1 &
      fpid=$! ready=/-/ready auth=("CSOC_LOADGEN_TOKEN=$token") ;;
    vmagent)
      "$vmagent_bin" -httpListenAddr "127.0.0.1:$port" -remoteWrite.url "$rw_url" \
        -remoteWrite.tmpDataPath "$dir/queue" >"$dir/forwarder.log" 2>&1 &
      fpid=$! ready=/health ;;
    prom)
      printf 'global:\n  scrape_interval: 1m\nremote_write:\n  - url: %s\n' "$rw_url" >"$dir/prometheus.yml"
      "$prom_bin" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" --web.enable-remote-write-receiver >"$dir/forwarder.log" 2>&1 &
      fpid=$! ready=/-/ready ;;
  esac
  PIDS+=("$fpid")
  if ! wait_http "http://127.0.0.1:$port$ready" 60; then
    log "$system: did not start; log ends:"; tail -n 5 "$dir/forwarder.log" >&2
    results+=("$system: did not start"); return
  fi
  log "$system: loadgen --targets $targets --rounds $rounds, receiver down"
  # Data time starts now, one round a second: Prometheus forwards only
  # samples newer than the start of its remote-write queue (backdated data
  # would never leave it).
  local summary start_ms
  start_ms=$(($(date +%s%3N) + 1000))
  summary=$(env "${auth[@]}" timeout -k 10 900 "$loadgen" --mode remote-write --url "http://127.0.0.1:$port/api/v1/write" \
    --targets "$targets" --rounds "$rounds" --start-ms "$start_ms" --interval-ms 1000 --progress-secs 0) ||
    { results+=("$system: loadgen failed"); return; }
  local accepted ingest_s
  accepted=$(field durable_samples "$summary")
  ingest_s=$(field seconds "$summary")
  log "$system: accepted $accepted samples in ${ingest_s}s; starting the receiver"
  "$vm_bin" -httpListenAddr "127.0.0.1:$vm_port" -storageDataPath "$dir/vm" -retentionPeriod 100y \
    -search.latencyOffset 0s >"$dir/receiver.log" 2>&1 &
  local vpid=$!
  PIDS+=("$vpid")
  local c0 start_ns
  c0=$(cpu_ticks "$fpid")
  start_ns=$(date +%s%N)
  wait_http "http://127.0.0.1:$vm_port/health" 60 || { results+=("$system: receiver did not start"); return; }
  local got=0 deadline=$((SECONDS + 300))
  while :; do
    got=$(metric_sum "http://127.0.0.1:$vm_port/metrics" 'vm_rows_inserted_total{type="promremotewrite"}' || echo 0)
    [ "${got:-0}" -ge "$accepted" ] && break
    if [ $SECONDS -ge $deadline ]; then log "$system: drain timed out at $got of $accepted"; break; fi
    sleep 0.2
  done
  local end_ns c1 hwm
  end_ns=$(date +%s%N)
  c1=$(cpu_ticks "$fpid")
  hwm=$(status_kib "$fpid" VmHWM)
  curl -sf -o /dev/null "http://127.0.0.1:$vm_port/internal/force_flush" || true
  sleep 2
  local held
  held=$(curl -sf "http://127.0.0.1:$vm_port/api/v1/query" --data-urlencode 'query=sum(count_over_time({__name__!=""}[1d]))' \
    --data-urlencode "time=$((start_ms / 1000 + rounds + 5))" \
    | sed -n 's/.*"value":\[[^,]*,"\([0-9.e+]*\)".*/\1/p')
  local drain_s cpu rate
  drain_s=$(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
  cpu=$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN {printf "%.1f", (b - a) / t}')
  rate=$(awk -v n="$accepted" -v s="$drain_s" 'BEGIN {printf "%.0f", n / s}')
  local line="$system: accepted=$accepted ingest_s=$ingest_s drain_s=$drain_s drain_samples_per_s=$rate drain_cpu_s=$cpu peak_rss_mib=$((hwm / 1024)) receiver_inserted=$got receiver_holds=${held:-?}"
  log "$line"
  results+=("$line")
  kill "$fpid" "$vpid" 2>/dev/null || true
  wait "$fpid" "$vpid" 2>/dev/null || true
}

log "workload: $targets targets x 507 series x $rounds rounds = $((targets * 507 * rounds)) samples; work dir $work"
for s in csoc vmagent prom; do
  has "$s" || continue
  if [ "$s" = csoc ] && [ -n "$csoc_problem" ]; then results+=("csoc: skipped: $csoc_problem"); continue; fi
  [ "$s" = vmagent ] && [ -z "$vmagent_bin" ] && { results+=("vmagent: no vmagent binary"); continue; }
  [ "$s" = prom ] && [ -z "$prom_bin" ] && { results+=("prom: no prometheus binary"); continue; }
  bench "$s"
done
echo "# remote-write-bench $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) vCPU; victoria-metrics $(pkg_version victoria-metrics), prometheus $(pkg_version prometheus)"
printf '%s\n' "${results[@]}"
