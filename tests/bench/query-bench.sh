#!/usr/bin/env bash
# Query benchmark: dashboard-like PromQL queries against csoc-collector,
# Prometheus 2.42 and VictoriaMetrics 1.79 (Debian's packages) holding the
# same 24 h of the storage benchmark's workload.
#
#   tests/bench/query-bench.sh [--quick] [--only csoc,prom,vm] [--runs N]
#       [--scenarios instant,range1h,range24h] [--queries 1,3,8]
#       [--set main,heldout] [--data 24h|7d]
#       [--no-build] [--port-base PORT] [--out FILE] [--keep]
#
# Data: the node_exporter workload of tests/src/workload.rs (seed 1, 15 s
# apart, as tests/bench/storage-bench.sh's "disk" scenario: 20 targets x 5760
# rounds = 24 h) plus a classic histogram per target
# (gen3_http_request_duration_seconds, csoc-loadgen --request-histogram), so
# 535 series per target. Target i is commons bench-<i % 4>. Every system gets
# byte-identical samples from csoc-loadgen over remote write (same seed, same
# start time): the peers in one run carrying the commons label;
# csoc-collector, which stamps `commons` from the sender's token, in one run
# per commons (--commons bench-K with that commons' token), the four at once.
# After the load each system settles as in storage-bench.sh: csoc-collector
# POST /api/v1/admin/tsdb/flush; Prometheus until its compactions go quiet;
# VictoriaMetrics force_flush and a finished force_merge. VictoriaMetrics
# runs with -search.disableCache (otherwise repeated range queries are served
# from its response cache).
#
# Queries (tests/bench/query-bench.sh --help lists them; --queries picks some
# by number): the main set (1-10, the dashboard panels the benchmark was
# tuned on) and a held-out set (11-19: nine other Node Exporter Full panels,
# never used to tune; --set picks sets, both by default), each reported with
# its own goal count. Each runs in three scenarios: instant (at the end of the data: 7.5 s
# after its last whole minute, so that no sample lies on the edge of a
# window), range1h and range24h (ending there, step 60 s). Each request
# is a POST form to /api/v1/query or /api/v1/query_range, sent by curl on the
# same machine (a new connection per request); latency is curl's time_total.
# Per (scenario, query): one warm-up request per system (its answer is kept
# for the result check), then --runs timed requests per system, interleaved
# (system order rotates per run); the table gives the median.
# Result check: csoc-collector's warm-up answer against Prometheus's: same
# series (by label set), same timestamps, values within 1e-6 relative (else
# the largest relative difference). VictoriaMetrics's rate/increase do not
# extrapolate like Prometheus's: only its series count is shown.
# A request that fails (HTTP error, "status":"error", timeout) makes that
# cell "error: ..."; the run goes on.
#
# --data 7d: a second data set for the 7-day range (scenario range7d: 7 days
# ending at the same point, step 300 s): 4 targets (one per commons) x 10080
# rounds at 60 s, 21.6 M samples per system; by default queries 2 and 8 (the
# fleet CPU rate and the request-latency histogram_quantile) in range7d only.
# The 24 h scenarios need --data 24h (the default) and range7d needs 7d.
#
# --quick: 8 targets x 480 rounds (2 h; with --data 7d: 4 x 480 at 60 s,
# 8 h), 3 runs, short waits (to check the script). Every server runs on 127.0.0.1 with an empty temp data dir and is
# stopped by PID (TERM, then KILL after 60 s). Each phase has a time limit.
#
# Needs: cargo, curl, jq, awk, coreutils; installs victoria-metrics and
# prometheus with apt-get when missing (sudo when not root). Builds release
# binaries into ${CARGO_TARGET_DIR:-target}. If csoc-collector does not
# build, its cells say so and the peers still run.
#
# Output: markdown (machine, date, exact command, one table per scenario) on
# stdout and in --out FILE; progress on stderr.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

root=$(cd "$(dirname "$0")/../.." && pwd)
cmdline="tests/bench/query-bench.sh"
for a in "$@"; do
  if [[ "$a" =~ ^[A-Za-z0-9_./,:=@%+-]+$ ]]; then cmdline+=" $a"; else cmdline+=" $(printf '%q' "$a")"; fi
done

# The queries: dashboard panels over the fleet. Query 1 is a plain selector
# (the baseline every engine evaluates).
QUERIES=(
  'node_load1'
  'sum by (commons) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))'
  'topk(5, rate(node_network_receive_bytes_total[5m]))'
  'node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes'
  'sum by (commons) (rate(node_disk_written_bytes_total[5m])) / sum by (commons) (rate(node_disk_writes_completed_total[5m]))'
  'avg_over_time(node_load1[10m])'
  'max_over_time(node_memory_Active_bytes[1h])'
  'histogram_quantile(0.99, sum by (le, commons) (rate(gen3_http_request_duration_seconds_bucket[5m])))'
  'sum by (commons) (increase(node_network_transmit_bytes_total[1h]))'
  'avg by (commons) (1 - node_filesystem_avail_bytes / node_filesystem_size_bytes)'
  # The held-out set (11-19): other Node Exporter Full panels.
  'sum by (instance) (rate(node_network_receive_bytes_total{device=~"eth.*"}[5m]))'
  '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))'
  'node_memory_MemTotal_bytes - node_memory_MemFree_bytes - node_memory_Buffers_bytes - node_memory_Cached_bytes'
  'rate(node_disk_io_time_seconds_total[5m])'
  '100 - node_filesystem_avail_bytes{mountpoint="/",fstype!="rootfs"} * 100 / node_filesystem_size_bytes{mountpoint="/",fstype!="rootfs"}'
  'irate(node_network_transmit_packets_total[5m])'
  'rate(node_context_switches_total[5m])'
  'node_time_seconds - node_boot_time_seconds'
  'count by (instance) (node_cpu_seconds_total{mode="idle"})'
)
main_n=10 # queries 1..main_n are the main set, the rest the held-out set
set_of() { if [ "$1" -le "$main_n" ]; then echo main; else echo heldout; fi; }

quick=0
only="csoc,prom,vm"
scenarios=""
queries_opt=""
sets="main,heldout"
data=24h
runs=""
build=1
port_base=19700
out=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --only) only=$2; shift ;;
    --scenarios) scenarios=$2; shift ;;
    --queries) queries_opt=$2; shift ;;
    --set) sets=$2; shift ;;
    --data) data=$2; shift ;;
    --runs) runs=$2; shift ;;
    --no-build) build=0 ;;
    --port-base) port_base=$2; shift ;;
    --out) out=$2; shift ;;
    --keep) keep=1 ;;
    -h | --help)
      usage
      echo
      echo "Queries:"
      for i in "${!QUERIES[@]}"; do echo "  $((i + 1)). [$(set_of $((i + 1)))] ${QUERIES[$i]}"; done
      exit 0 ;;
    *) echo "query-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for s in ${only//,/ }; do
  case "$s" in csoc | prom | vm) ;; *) echo "query-bench: --only: unknown system $s" >&2; exit 2 ;; esac
done
case "$data" in
  24h) : "${scenarios:=instant,range1h,range24h}" ;;
  7d)
    : "${scenarios:=range7d}"
    [ -n "$queries_opt" ] || queries_opt=2,8 ;;
  *) echo "query-bench: --data: 24h or 7d, not $data" >&2; exit 2 ;;
esac
for s in ${scenarios//,/ }; do
  case "$s" in
    instant | range1h | range24h) [ "$data" = 24h ] || { echo "query-bench: scenario $s needs --data 24h" >&2; exit 2; } ;;
    range7d) [ "$data" = 7d ] || { echo "query-bench: scenario range7d needs --data 7d" >&2; exit 2; } ;;
    *) echo "query-bench: --scenarios: unknown scenario $s" >&2; exit 2 ;;
  esac
done
for s in ${sets//,/ }; do
  case "$s" in main | heldout) ;; *) echo "query-bench: --set: main or heldout, not $s" >&2; exit 2 ;; esac
done
qids=()
if [ -n "$queries_opt" ]; then
  for q in ${queries_opt//,/ }; do
    [[ "$q" =~ ^[1-9][0-9]*$ ]] && [ "$q" -le "${#QUERIES[@]}" ] || { echo "query-bench: --queries: no query $q (1-${#QUERIES[@]})" >&2; exit 2; }
    qids+=("$q")
  done
else
  for i in "${!QUERIES[@]}"; do
    [[ ",$sets," == *",$(set_of $((i + 1))),"* ]] && qids+=("$((i + 1))")
  done
fi

seed=1
batch=10000
commons_n=4 # the workload's commons: bench-0 .. bench-3 (target i is bench-<i % 4>)
interval_s=15
if [ "$quick" = 1 ]; then
  targets=8 rounds=480
  quiet_secs=5 load_timeout=300 query_timeout=30 phase_timeout=900
  : "${runs:=3}"
else
  targets=20 rounds=5760
  quiet_secs=70 load_timeout=1800 query_timeout=120 phase_timeout=5400
  : "${runs:=5}"
fi
if [ "$data" = 7d ]; then
  targets=4 interval_s=60
  [ "$quick" = 1 ] || rounds=10080
fi
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "query-bench: --runs needs a positive integer" >&2; exit 2; }
[[ "$port_base" =~ ^[1-9][0-9]*$ ]] || { echo "query-bench: --port-base needs a port number" >&2; exit 2; }
start_timeout=60 stop_timeout=60 settle_timeout=900

log() { echo "query-bench: $*" >&2; }
has() { [[ ",$only," == *",$1,"* ]]; }

for tool in curl jq awk timeout; do
  command -v "$tool" >/dev/null || { log "$tool is needed"; exit 2; }
done

# --- binaries -----------------------------------------------------------------
# shellcheck source=tests/bench/lib.sh
source "$root/tests/bench/lib.sh"
cd "$root"
release_bins
if ! "$loadgen" --help | grep -q -- '--request-histogram'; then
  log "$loadgen has no --request-histogram (an old build? run without --no-build)"
  exit 2
fi

find_peers

warn_other_servers

# --- process helpers ----------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/query-bench.XXXXXX")
results=$work/results.dat # one line per (scenario, query, system), fields separated by US (0x1f)
US=$'\x1f'
: >"$results"
declare -A PID HTTP_URL SLOG_OF LOADED
cleanup() {
  local s
  for s in "${!PID[@]}"; do stop_server "$s"; done
  if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

next_port=$port_base

printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' >"$work/prometheus.yml"
# One token per commons, in the collector's config file (not on a command line).
declare -A TOKEN
{
  echo "agent_tokens:"
  for k in $(seq 0 $((commons_n - 1))); do
    TOKEN[bench-$k]="qb-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "  - {commons: bench-$k, token: ${TOKEN[bench-$k]}}"
  done
} >"$work/collector.yml"
chmod 600 "$work/collector.yml"

# start_server SYSTEM: starts it on an empty data dir, records PID, HTTP_URL
# and SLOG_OF; fails (START_ERROR) if it does not become ready.
start_server() {
  local system=$1 dir="$work/data-$1" port grpc_port ready url pid
  take_port
  port=$PORT
  url="http://127.0.0.1:$port"
  local slog="$dir.log"
  case "$system" in
    vm)
      "$vm_bin" -storageDataPath "$dir" -httpListenAddr "127.0.0.1:$port" -retentionPeriod 100y \
        -search.disableCache -search.maxQueryDuration "${query_timeout}s" >"$slog" 2>&1 &
      ready=/health ;;
    prom)
      "$prom_bin" --config.file="$work/prometheus.yml" --storage.tsdb.path="$dir" --web.listen-address="127.0.0.1:$port" \
        --web.enable-remote-write-receiver --web.enable-admin-api --query.timeout="${query_timeout}s" >"$slog" 2>&1 &
      ready=/-/ready ;;
    csoc)
      take_port
      grpc_port=$PORT
      "$collector" --config "$work/collector.yml" --data-dir "$dir" --http-listen "127.0.0.1:$port" \
        --grpc-listen "127.0.0.1:$grpc_port" --web.enable-admin-api \
        --limit max_samples_per_second=0 --limit max_series_per_agent=0 >"$slog" 2>&1 &
      ready=/-/ready ;;
  esac
  pid=$!
  PID[$system]=$pid HTTP_URL[$system]=$url SLOG_OF[$system]=$slog
  local deadline=$((SECONDS + start_timeout))
  until curl -sf -o /dev/null "$url$ready"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      unset "PID[$system]"
      START_ERROR="exited at start: $(tail -n 3 "$slog" | tr '\n' ' ' | cut -c1-300)"
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      START_ERROR="not ready within ${start_timeout}s"
      stop_server "$system"
      return 1
    fi
    sleep 0.2
  done
}

# stop_server SYSTEM: TERM, wait up to stop_timeout, then KILL; always reaps.
stop_server() {
  local system=$1 pid i=0
  pid=${PID[$system]:-}
  [ -n "$pid" ] || return 0
  unset "PID[$system]"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ $i -lt $((stop_timeout * 10)) ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    log "$system (PID $pid) did not stop in ${stop_timeout}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

# wait_quiet URL METRICS...: until the sum of each metric is unchanged for
# quiet_secs (Prometheus: compactions) or settle_timeout passes.
wait_quiet() {
  local url=$1 deadline=$((SECONDS + settle_timeout)) last="" since=$SECONDS now m
  shift
  while [ $SECONDS -lt $deadline ]; do
    now=""
    for m in "$@"; do now+="$(metric_sum "$url" "$m") "; done
    if [ "$now" != "$last" ]; then last=$now since=$SECONDS; fi
    [ $((SECONDS - since)) -ge "$quiet_secs" ] && return 0
    sleep 2
  done
  log "still busy after ${settle_timeout}s; querying anyway"
}

# settle SYSTEM: lets the engine write out and compact what it holds.
settle() {
  local system=$1 url=${HTTP_URL[$1]} deadline busy
  case "$system" in
    vm)
      curl -sf -o /dev/null "$url/internal/force_flush" || log "vm: force_flush failed"
      curl -sf -o /dev/null "$url/internal/force_merge" || log "vm: force_merge failed"
      sleep 2
      deadline=$((SECONDS + settle_timeout))
      while :; do
        busy=$(($(metric_sum "$url/metrics" vm_active_force_merges) + $(metric_sum "$url/metrics" vm_active_merges)))
        [ "$busy" = 0 ] && break
        [ $SECONDS -ge $deadline ] && { log "vm: still merging after ${settle_timeout}s"; break; }
        sleep 2
      done
      curl -sf -o /dev/null "$url/internal/force_flush" || true ;;
    prom)
      wait_quiet "$url/metrics" prometheus_tsdb_compactions_total prometheus_tsdb_blocks_loaded prometheus_tsdb_head_truncations_total ;;
    csoc)
      curl -sf -o /dev/null -XPOST "$url/api/v1/admin/tsdb/flush" || log "csoc: POST /api/v1/admin/tsdb/flush failed; querying without it" ;;
  esac
}

# One start time for every system (identical data), on a whole minute, so
# that the last round is a few minutes in the past when the load starts.
start_ms=$((($(date +%s) - rounds * interval_s - 180) / 60 * 60 * 1000))
end_ms=$((start_ms + (rounds - 1) * interval_s * 1000))
# Queries end 7.5 s after the data's last whole minute: no sample (15 or 60 s apart,
# 0-4 ms after the quarter minute) then lies on the edge of a range whose
# length is a multiple of 15 s, where engines differ (Prometheus 2 counts a
# sample at exactly t - range in the range, Prometheus 3 does not).
t_end_ms=$((end_ms / 60000 * 60000 + 7500))
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); } # MS: seconds with 3 decimals
t_end=$(secs "$t_end_ms")
series_per_target=535           # 507 node_exporter + 28 histogram (checked against loadgen's summary)
expected_samples=$((targets * series_per_target * rounds))

# load SYSTEM: starts the server and loads the data; sets LOADED[SYSTEM] to
# "ok" or the reason it is unusable.
load() {
  local system=$1 url rc summary k pids=() ok=1
  if [ "$system" = csoc ] && [ -n "$csoc_problem" ]; then
    LOADED[$system]="skipped: $csoc_problem"
    return
  fi
  log "$system: starting"
  if ! start_server "$system"; then
    log "$system: $START_ERROR"
    LOADED[$system]="failed to start: $START_ERROR"
    return
  fi
  url="${HTTP_URL[$system]}/api/v1/write"
  local common=(--mode remote-write --url "$url" --targets "$targets" --rounds "$rounds" --start-ms "$start_ms"
    --batch-samples "$batch" --seed "$seed" --request-histogram --progress-secs 30 --interval-ms $((interval_s * 1000))
    --max-skew-rounds $((1800 / interval_s)))
  local t0=$SECONDS
  if [ "$system" = csoc ]; then
    # One sender per commons with that commons' token, all at once (one
    # worker each: four concurrent requests in all, as for the peers).
    log "$system: loadgen x $commons_n (--commons bench-K, one token each) --targets $targets --rounds $rounds"
    for k in $(seq 0 $((commons_n - 1))); do
      CSOC_LOADGEN_TOKEN=${TOKEN[bench-$k]} timeout -k 10 "$load_timeout" "$loadgen" "${common[@]}" \
        --commons "bench-$k" --concurrency 1 >"$work/loadgen-csoc-$k.out" 2>"$work/loadgen-csoc-$k.err" &
      pids+=($!)
    done
    for k in "${!pids[@]}"; do
      rc=0
      wait "${pids[$k]}" || rc=$?
      summary=$(cat "$work/loadgen-csoc-$k.out")
      echo "csoc bench-$k: $summary" >>"$work/loadgen.txt"
      if [ "$rc" != 0 ]; then
        ok=0
        log "$system: loadgen for bench-$k: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'): $(tail -n 3 "$work/loadgen-csoc-$k.err" | tr '\n' ' ')"
      fi
    done
  else
    log "$system: loadgen --targets $targets --rounds $rounds"
    rc=0
    summary=$(timeout -k 10 "$load_timeout" "$loadgen" "${common[@]}" --concurrency 4 2>"$work/loadgen-$system.err") || rc=$?
    echo "$system: $summary" >>"$work/loadgen.txt"
    if [ "$rc" = 0 ] && [ "$(field series "$summary")" != $((targets * series_per_target)) ]; then
      log "$system: warning: loadgen sent $(field series "$summary") series, $((targets * series_per_target)) expected"
    fi
    if [ "$rc" != 0 ]; then
      ok=0
      log "$system: loadgen exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'): $(tail -n 3 "$work/loadgen-$system.err" | tr '\n' ' ')"
    fi
  fi
  if ! alive "$system"; then
    log "$system: the server died during the load; its log ends:"
    tail -n 20 "${SLOG_OF[$system]}" >&2
    stop_server "$system"
    LOADED[$system]="server died during the load"
    return
  fi
  if [ "$ok" != 1 ]; then
    stop_server "$system"
    LOADED[$system]="load failed (see stderr)"
    return
  fi
  log "$system: loaded in $((SECONDS - t0)) s; settling"
  settle "$system"
  # Sanity check: every target's last round answers a plain selector.
  local seen
  seen=$(curl -sf --data-urlencode 'query=node_boot_time_seconds' --data-urlencode "time=$t_end" \
    "${HTTP_URL[$system]}/api/v1/query" | jq '.data.result | length' 2>/dev/null || echo "?")
  echo "$system: node_boot_time_seconds at the end: $seen of $targets series" >>"$work/loadgen.txt"
  [ "$seen" = "$targets" ] || log "$system: warning: node_boot_time_seconds has $seen series at the end, $targets expected"
  log "$system: ready ($seen/$targets targets answer)"
  LOADED[$system]=ok
}

# --- requests -------------------------------------------------------------------
# request SYSTEM SCENARIO QUERY BODYFILE: one POST; sets REQ_MS (latency) and
# REQ_ERR (empty when the answer is a success).
request() {
  local system=$1 scenario=$2 query=$3 body=$4 endpoint args w code secs
  case "$scenario" in
    instant) endpoint=query args=(--data-urlencode "time=$t_end") ;;
    range1h) endpoint=query_range args=(--data-urlencode "start=$(secs $((t_end_ms - 3600000)))" --data-urlencode "end=$t_end" --data-urlencode "step=60") ;;
    range24h) endpoint=query_range args=(--data-urlencode "start=$(secs $((t_end_ms - 86400000)))" --data-urlencode "end=$t_end" --data-urlencode "step=60") ;;
    range7d) endpoint=query_range args=(--data-urlencode "start=$(secs $((t_end_ms - 7 * 86400000)))" --data-urlencode "end=$t_end" --data-urlencode "step=300") ;;
  esac
  REQ_MS="" REQ_ERR=""
  w=$(curl -s -o "$body" -w '%{http_code} %{time_total}' --max-time "$query_timeout" \
    --data-urlencode "query=$query" "${args[@]}" "${HTTP_URL[$system]}/api/v1/$endpoint" 2>/dev/null) || {
    local rc=$?
    REQ_ERR="curl exit $rc$([ "$rc" = 28 ] && echo " (over ${query_timeout}s)")"
    return
  }
  code=${w%% *} secs=${w#* }
  REQ_MS=$(awk -v s="$secs" 'BEGIN {printf "%.3f", s * 1000}')
  if [ "$code" != 200 ] || [ "$(jq -r '.status' "$body" 2>/dev/null)" != success ]; then
    REQ_ERR="HTTP $code: $(jq -r '.error // empty' "$body" 2>/dev/null | tr '\n|' ' /' | cut -c1-120)"
    if [ "$REQ_ERR" = "HTTP $code: " ]; then REQ_ERR+="$(head -c 120 "$body" | tr '\n|' ' /')"; fi
    REQ_ERR=$(sed 's/ *$//' <<<"$REQ_ERR")
  fi
  return 0
}

# compare A.json B.json: "SERIES_A SERIES_B MISSING EXTRA POINT_MISMATCHES MAXREL"
# (MISSING: series of A not in B, EXTRA: of B not in A; POINT_MISMATCHES:
# timestamps in one and not the other; MAXREL over the common points).
# shellcheck disable=SC2016
compare_jq='
def key: .metric | to_entries | sort_by(.key) | map("\(.key)=\(.value)") | join(",");
def pts: if has("values") then .values elif has("value") then [.value] else [] end
  | map({key: (.[0] | tostring), value: .[1]}) | from_entries;
def norm: .data as $d
  | if ($d.resultType == "scalar" or $d.resultType == "string") then {"": ({key: ($d.result[0] | tostring), value: $d.result[1]} | [.] | from_entries)}
    else ($d.result | map({key: key, value: pts}) | from_entries) end;
def num: try tonumber catch null;
def rel($a; $b): if $a == $b then 0
  else ($a | num) as $x | ($b | num) as $y
  | if $x == null or $y == null then 1
    else ([($x | fabs), ($y | fabs)] | max) as $m | if $m == 0 then 0 else (($x - $y) | fabs) / $m end end end;
($a[0] | norm) as $A | ($b[0] | norm) as $B
| [$A | keys[] | select($B[.] == null)] as $missing
| [$B | keys[] | select($A[.] == null)] as $extra
| [$A | keys[] | select($B[.] != null) | . as $k
    | ($A[$k]) as $p | ($B[$k]) as $q
    | ([$p | keys[] | select($q[.] == null)] + [$q | keys[] | select($p[.] == null)] | length) as $pm
    | {pm: $pm, rel: ([$p | keys[] | select($q[.] != null) | rel($p[.]; $q[.])] | max // 0)}] as $common
| "\($A | length) \($B | length) \($missing | length) \($extra | length) \([$common[].pm] | add // 0) \([$common[].rel] | max // 0)"
'
compare() { jq -n -r --slurpfile a "$1" --slurpfile b "$2" "$compare_jq" 2>/dev/null || echo "? ? ? ? ? ?"; }
series_count() { jq '.data.result | if type == "array" then length else 1 end' "$1" 2>/dev/null || echo "?"; }

# record SCENARIO QID SYSTEM STATUS MEDIAN_MS SERIES
record() { (IFS=$US; echo "$*") >>"$results"; }
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# bench_query SCENARIO QID: warm-up, then runs x systems interleaved.
bench_query() {
  local scenario=$1 qid=$2 query=${QUERIES[$(($2 - 1))]} s run i n
  local -a systems=() order
  local -A err times
  for s in csoc prom vm; do
    has "$s" || continue
    if [ "${LOADED[$s]:-}" != ok ]; then
      record "$scenario" "$qid" "$s" "${LOADED[$s]:-not loaded}"
      continue
    fi
    if ! alive "$s"; then
      record "$scenario" "$qid" "$s" "server died"
      continue
    fi
    request "$s" "$scenario" "$query" "$work/answers/$scenario-q$qid-$s.json"
    if [ -n "$REQ_ERR" ]; then
      err[$s]=$REQ_ERR
    else
      systems+=("$s")
      times[$s]=""
    fi
  done
  n=${#systems[@]}
  for run in $(seq 1 "$runs"); do
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${systems[$(((i + run) % n))]}"); done
    for s in "${order[@]}"; do
      [ -z "${err[$s]:-}" ] || continue
      request "$s" "$scenario" "$query" "$work/answers/last.json"
      if [ -n "$REQ_ERR" ]; then err[$s]="run $run: $REQ_ERR"; else times[$s]+="$REQ_MS "; fi
    done
  done
  for s in csoc prom vm; do
    has "$s" || continue
    if [ -n "${err[$s]:-}" ]; then
      record "$scenario" "$qid" "$s" "error: ${err[$s]}"
    elif [ -n "${times[$s]+x}" ]; then
      record "$scenario" "$qid" "$s" ok "$(tr ' ' '\n' <<<"${times[$s]}" | grep . | median)" \
        "$(series_count "$work/answers/$scenario-q$qid-$s.json")"
    fi
  done
}

# --- run ------------------------------------------------------------------------
date_utc=$(date -u +%Y-%m-%dT%H:%MZ)
mkdir -p "$work/answers"
log "data: $targets targets x $rounds rounds from $(date -u -d "@$((start_ms / 1000))" +%FT%TZ), $expected_samples samples per system; queries end at $(date -u -d "@$((t_end_ms / 1000))" +%FT%T.5Z)"
for s in vm prom csoc; do
  has "$s" && load "$s"
done
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
phase_deadline=$((SECONDS + phase_timeout))
for scenario in ${scenarios//,/ }; do
  for qid in "${qids[@]}"; do
    if [ $SECONDS -ge $phase_deadline ]; then
      for s in csoc prom vm; do has "$s" && record "$scenario" "$qid" "$s" "skipped: query phase over ${phase_timeout}s"; done
      continue
    fi
    log "[$scenario] query $qid: ${QUERIES[$((qid - 1))]}"
    bench_query "$scenario" "$qid"
  done
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)
for s in csoc prom vm; do stop_server "$s"; done

# --- report ---------------------------------------------------------------------
get() { # SCENARIO QID SYSTEM FIELD(4=status 5=ms 6=series)
  awk -F"$US" -v a="$1" -v b="$2" -v c="$3" -v f="$4" '$1 == a && $2 == b && $3 == c {print $f; exit}' "$results"
}
fmt_ms() { awk -v m="$1" 'BEGIN {if (m < 10) printf "%.2f", m; else if (m < 1000) printf "%.1f", m; else printf "%.0f", m}'; }
cell() { # SCENARIO QID SYSTEM: the latency cell
  local st
  st=$(get "$1" "$2" "$3" 4)
  if ! has "$3"; then echo "–"
  elif [ "$st" = ok ]; then fmt_ms "$(get "$1" "$2" "$3" 5)"
  else echo "${st:-–}"; fi
}
esc() { sed 's/|/\\|/g'; }

report() {
  local scenario title qid s best c ratio goal agree cmpo na miss extra pm rel set csoc_err=0 disagree=0
  local -A total=() met=() met10=() worst=()
  echo "## Query benchmark, $date_utc"
  echo
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), $(uname -sr) $(uname -m)."
  local rev
  rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")
  git -C "$root" diff --quiet HEAD 2>/dev/null || rev+=" + local changes"
  local names=""
  has csoc && names+=", csoc-collector ($rev)"
  has prom && names+=", Prometheus $(pkg_version prometheus)"
  has vm && names+=", VictoriaMetrics $(pkg_version victoria-metrics) (-search.disableCache)"
  echo "Systems: ${names#, }."
  echo "Data: $targets targets x $rounds rounds at $interval_s s ($((rounds * interval_s / 3600)) h $((rounds * interval_s % 3600 / 60)) min), 535 series per target (507 node_exporter + 28 in gen3_http_request_duration_seconds), 4 commons, seed $seed: $expected_samples samples, byte-identical in each system, sent by csoc-loadgen over remote write."
  echo "Queries end at $(date -u -d "@$((t_end_ms / 1000))" +%FT%T.5Z) (7.5 s after the data's last whole minute, so that no sample lies on a window's edge); range queries at step 60 s (7 days: 300 s). Latency: curl time_total of a POST form on loopback, median of $runs runs after one warm-up, systems interleaved. Load average at the start and end of the query phase: $loadavg_before / $loadavg_after."
  echo
  echo "Command:"
  echo
  echo '```sh'
  echo "$cmdline"
  echo '```'
  for scenario in ${scenarios//,/ }; do
    case "$scenario" in
      instant) title="Instant queries (time = end of data)" ;;
      range1h) title="Range queries, 1 h at 60 s step (61 points)" ;;
      range24h) title="Range queries, 24 h at 60 s step (1441 points)" ;;
      range7d) title="Range queries, 7 days at 300 s step (2017 points)" ;;
    esac
    echo
    echo "### $title"
    echo
    echo "| # | set | query | csoc ms | prometheus ms | vm ms | ratio csoc/faster peer | goal ≤0.8 met? | csoc agrees with Prometheus | series prom / csoc / vm |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for qid in "${qids[@]}"; do
      set=$(set_of "$qid")
      best=""
      for s in prom vm; do
        has "$s" && [ "$(get "$scenario" "$qid" "$s" 4)" = ok ] || continue
        c=$(get "$scenario" "$qid" "$s" 5)
        if [ -z "$best" ] || awk -v a="$c" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$c; fi
      done
      ratio="–" goal="–"
      if has csoc; then
        total[$set]=$((${total[$set]:-0} + 1))
        if [ "$(get "$scenario" "$qid" csoc 4)" = ok ]; then
          if [ -n "$best" ]; then
            c=$(get "$scenario" "$qid" csoc 5)
            ratio=$(awk -v a="$c" -v b="$best" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
            if awk -v r="$ratio" 'BEGIN {exit !(r <= 0.8)}'; then goal=yes met[$set]=$((${met[$set]:-0} + 1)); else goal="**no**"; fi
            awk -v r="$ratio" 'BEGIN {exit !(r <= 1.0)}' && met10[$set]=$((${met10[$set]:-0} + 1))
            if [ -z "${worst[$set]:-}" ] || awk -v r="$ratio" -v w="${worst[$set]%% *}" 'BEGIN {exit !(r > w)}'; then
              worst[$set]="$ratio ($scenario, query $qid)"
            fi
          fi
        else
          csoc_err=$((csoc_err + 1))
          goal="**no**"
        fi
      fi
      agree="–"
      if has csoc && has prom && [ "$(get "$scenario" "$qid" csoc 4)" = ok ] && [ "$(get "$scenario" "$qid" prom 4)" = ok ]; then
        cmpo=$(compare "$work/answers/$scenario-q$qid-prom.json" "$work/answers/$scenario-q$qid-csoc.json")
        read -r na _ miss extra pm rel <<<"$cmpo"
        if [ "$na" = "?" ]; then
          agree="? (could not compare)"
        elif [ "$miss" = 0 ] && [ "$extra" = 0 ] && [ "$pm" = 0 ] && awk -v r="$rel" 'BEGIN {exit !(r <= 1e-6)}'; then
          agree="yes"
          [ "$rel" != 0 ] && agree+=" (max rel. diff $(awk -v r="$rel" 'BEGIN {printf "%.1e", r}'))"
        else
          disagree=$((disagree + 1))
          agree="**no**:"
          [ "$miss" != 0 ] && agree+=" $miss series missing,"
          [ "$extra" != 0 ] && agree+=" $extra extra series,"
          [ "$pm" != 0 ] && agree+=" $pm points differ in time,"
          agree+=" max rel. diff $(awk -v r="$rel" 'BEGIN {printf "%.1e", r}')"
        fi
      fi
      local counts=""
      for s in prom csoc vm; do
        c="–"
        has "$s" && [ "$(get "$scenario" "$qid" "$s" 4)" = ok ] && c=$(get "$scenario" "$qid" "$s" 6)
        counts+="${counts:+ / }$c"
      done
      echo "| $qid | $set | \`${QUERIES[$((qid - 1))]}\` | $(cell "$scenario" "$qid" csoc | esc) | $(cell "$scenario" "$qid" prom | esc) | $(cell "$scenario" "$qid" vm | esc) | $ratio | $goal | $agree | $counts |"
    done
  done
  echo
  if has csoc && ! has prom && ! has vm; then
    echo "Goal: not evaluated (no peer ran)."
  elif has csoc; then
    for set in main heldout; do
      [ -n "${total[$set]:-}" ] || continue
      echo "Goal, $set set: csoc-collector at most 0.8x the faster peer's median latency for ${met[$set]:-0} of ${total[$set]} (scenario, query) pairs, at most 1.0x for ${met10[$set]:-0}; the worst ratio ${worst[$set]:-–}."
      echo
    done
    echo "csoc-collector failed $csoc_err pairs; its answers differ from Prometheus's for $disagree."
  fi
  echo "Notes: latencies include HTTP and JSON encoding on the server, measured from a client on the same machine (new"
  echo "connection per request, response not compressed). Prometheus and VictoriaMetrics settled before the queries"
  echo "(compactions quiet; force_flush + force_merge); csoc-collector after POST /api/v1/admin/tsdb/flush. All servers stay"
  echo "up during the query phase, idle but for the request being timed. VictoriaMetrics's rate/increase do not extrapolate"
  echo "at the window's edges and its range-query topk keeps whole series, so only its series count is shown."
  echo
  echo "Loads:"
  echo
  echo '```'
  cat "$work/loadgen.txt" 2>/dev/null || true
  for s in csoc prom vm; do
    has "$s" && [ "${LOADED[$s]:-}" != ok ] && echo "$s: ${LOADED[$s]:-not loaded}"
  done
  echo '```'
}

report >"$work/report.md"
[ -n "$out" ] && cp "$work/report.md" "$out"
cat "$work/report.md"
