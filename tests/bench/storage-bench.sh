#!/usr/bin/env bash
# Storage benchmark: csoc-collector against VictoriaMetrics 1.79 and
# Prometheus 2.42 (Debian's packages) on the same node_exporter workload
# (tests/src/workload.rs: T targets x 507 series, 15 s apart, seed 1), sent by
# csoc-loadgen through remote write (all three) and gRPC (csoc-collector).
#
#   tests/bench/storage-bench.sh [--quick] [--only vm,prom,csoc-rw,csoc-grpc]
#       [--scenarios throughput,disk,memory] [--repeat N] [--concurrency C]
#       [--jitter-ms N] [--throughput-rounds N] [--disk-rounds N] [--no-build]
#       [--port-base PORT]
#       [--out FILE] [--keep]
#
# Scenarios (full sizes; --quick shrinks them, to check the script):
#   throughput  200 targets x 150 rounds = 15.2 M samples (30 s at 500k/s;
#               --throughput-rounds for longer) in 10,000-sample batches:
#               durable samples/s, the server's CPU seconds over the run
#               (utime+stime from /proc/PID/stat), peak RSS (VmHWM).
#   disk        20 targets x 5760 rounds (24 h) = 58.4 M samples: bytes per
#               sample on disk (du -sb) once the engine has flushed and
#               compacted: VictoriaMetrics after /internal/force_flush and a
#               finished /internal/force_merge; Prometheus: the snapshot
#               (/api/v1/admin/tsdb/snapshot, which writes the head out as a
#               block; WAL excluded) once compactions have gone quiet;
#               csoc-collector after POST /api/v1/admin/tsdb/flush.
#               --disk-rounds N: N rounds instead (1440 = 6 h).
#   memory      200 targets x 20 rounds = 101,400 active series: (RSS after -
#               RSS before ingest) / series, and plain RSS / series.
# Timestamps: round r of target i is start + r x 15 s + a fixed 0-4 ms offset
# per target, so a series' timestamps are exactly 15 s apart (as Prometheus's
# scrape timestamp alignment makes them); --jitter-ms N moves each round by a
# further 0..N ms (as an agent stamping its wall clock does), which costs
# Prometheus-style delta-of-delta encodings about 1 byte per sample.
# Every (scenario, repeat, system) starts the server fresh on 127.0.0.1 with an
# empty temp data dir, and stops it by PID (TERM, then KILL after 60 s). All
# systems of one scenario and repeat get byte-identical data (same seed, same
# start time). Each phase has a time limit. csoc-collector runs without its
# per-agent rate and series limits (the peers have none; the benchmark
# measures the storage, not the limiter).
#
# Needs: cargo, curl, awk, coreutils; installs victoria-metrics and prometheus
# with apt-get when missing (sudo when not root). Builds release binaries into
# ${CARGO_TARGET_DIR:-target}. If csoc-collector does not build, or does not
# start with the flags below, its rows say so and the peers still run.
#
# Output: markdown (machine, date, exact command, one table per scenario,
# medians with --repeat > 1) on stdout and in --out FILE; progress on stderr.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

root=$(cd "$(dirname "$0")/../.." && pwd)
cmdline="tests/bench/storage-bench.sh"
for a in "$@"; do
  if [[ "$a" =~ ^[A-Za-z0-9_./,:=@%+-]+$ ]]; then cmdline+=" $a"; else cmdline+=" $(printf '%q' "$a")"; fi
done

quick=0
only="vm,prom,csoc-rw,csoc-grpc"
scenarios="throughput,disk,memory"
repeat=1
concurrency=4
jitter=0
tp_rounds_opt=""
disk_rounds_opt=""
build=1
port_base=19500
out=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --only) only=$2; shift ;;
    --scenarios) scenarios=$2; shift ;;
    --repeat) repeat=$2; shift ;;
    --concurrency) concurrency=$2; shift ;;
    --jitter-ms) jitter=$2; shift ;;
    --throughput-rounds) tp_rounds_opt=$2; shift ;;
    --disk-rounds) disk_rounds_opt=$2; shift ;;
    --no-build) build=0 ;;
    --port-base) port_base=$2; shift ;;
    --out) out=$2; shift ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "storage-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for s in ${only//,/ }; do
  case "$s" in vm | prom | csoc-rw | csoc-grpc) ;; *) echo "storage-bench: --only: unknown system $s" >&2; exit 2 ;; esac
done
for s in ${scenarios//,/ }; do
  case "$s" in throughput | disk | memory) ;; *) echo "storage-bench: --scenarios: unknown scenario $s" >&2; exit 2 ;; esac
done
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || { echo "storage-bench: --repeat needs a positive integer" >&2; exit 2; }
[[ "$concurrency" =~ ^[1-9][0-9]*$ ]] || { echo "storage-bench: --concurrency needs a positive integer" >&2; exit 2; }
[[ "$jitter" =~ ^[0-9]+$ ]] || { echo "storage-bench: --jitter-ms needs a non-negative integer" >&2; exit 2; }

batch=10000
seed=1
if [ "$quick" = 1 ]; then
  tp_targets=20 tp_rounds=20
  disk_targets=4 disk_rounds=240
  mem_targets=20 mem_rounds=5
  settle=2 quiet_secs=5 load_timeout=300
else
  tp_targets=200 tp_rounds=150
  disk_targets=20 disk_rounds=5760
  mem_targets=200 mem_rounds=20
  settle=10 quiet_secs=70 load_timeout=1800
fi
if [ -n "$disk_rounds_opt" ]; then
  [[ "$disk_rounds_opt" =~ ^[1-9][0-9]*$ ]] || { echo "storage-bench: --disk-rounds needs a positive integer" >&2; exit 2; }
  disk_rounds=$disk_rounds_opt
fi
if [ -n "$tp_rounds_opt" ]; then
  [[ "$tp_rounds_opt" =~ ^[1-9][0-9]*$ ]] || { echo "storage-bench: --throughput-rounds needs a positive integer" >&2; exit 2; }
  tp_rounds=$tp_rounds_opt
fi
start_timeout=60 stop_timeout=60 compact_timeout=900

log() { echo "storage-bench: $*" >&2; }
has() { [[ ",$only," == *",$1,"* ]]; }

for tool in curl awk du timeout; do
  command -v "$tool" >/dev/null || { log "$tool is needed"; exit 2; }
done

# --- binaries -----------------------------------------------------------------
# shellcheck source=tests/bench/lib.sh
source "$root/tests/bench/lib.sh"
cd "$root"
release_bins

find_peers

warn_other_servers

# --- process helpers ----------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/storage-bench.XXXXXX")
results=$work/results.dat # one line per run, fields separated by US (0x1f)
US=$'\x1f'
: >"$results"
SPID=""
cleanup() {
  if [ -n "$SPID" ]; then stop_server; fi
  if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

clk_tck=$(getconf CLK_TCK)
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
next_port=$port_base

printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' >"$work/prometheus.yml"
token="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# start_server SYSTEM DIR: starts it, sets SPID, HTTP (base URL), WRITE_URL,
# GRPC_URL and SLOG (its log); fails if it does not become ready.
start_server() {
  local system=$1 dir=$2 port grpc_port ready
  take_port
  port=$PORT
  HTTP="http://127.0.0.1:$port"
  SLOG="$dir.log"
  GRPC_URL=""
  case "$system" in
    vm)
      "$vm_bin" -storageDataPath "$dir" -httpListenAddr "127.0.0.1:$port" -retentionPeriod 100y >"$SLOG" 2>&1 &
      WRITE_URL="$HTTP/api/v1/write" ready=/health ;;
    prom)
      "$prom_bin" --config.file="$work/prometheus.yml" --storage.tsdb.path="$dir" --web.listen-address="127.0.0.1:$port" \
        --web.enable-remote-write-receiver --web.enable-admin-api >"$SLOG" 2>&1 &
      WRITE_URL="$HTTP/api/v1/write" ready=/-/ready ;;
    csoc-rw | csoc-grpc)
      take_port
      grpc_port=$PORT
      "$collector" --data-dir "$dir" --http-listen "127.0.0.1:$port" --grpc-listen "127.0.0.1:$grpc_port" \
        --agent-token "bench=$token" --web.enable-admin-api \
        --limit max_samples_per_second=0 --limit max_series_per_agent=0 >"$SLOG" 2>&1 &
      WRITE_URL="$HTTP/api/v1/write" GRPC_URL="http://127.0.0.1:$grpc_port" ready=/-/ready ;;
  esac
  SPID=$!
  local deadline=$((SECONDS + start_timeout))
  until curl -sf -o /dev/null "$HTTP$ready"; do
    if ! kill -0 "$SPID" 2>/dev/null; then
      wait "$SPID" 2>/dev/null || true
      SPID=""
      START_ERROR="exited at start: $(tail -n 3 "$SLOG" | tr '\n' ' ' | cut -c1-300)"
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      START_ERROR="not ready within ${start_timeout}s"
      stop_server
      return 1
    fi
    sleep 0.2
  done
}

# stop_server: TERM, wait up to stop_timeout, then KILL; always reaps.
stop_server() {
  local pid=$SPID i=0
  SPID=""
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ $i -lt $((stop_timeout * 10)) ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    log "PID $pid did not stop in ${stop_timeout}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# wait_quiet URL METRICS...: until the sum of each metric is unchanged for
# quiet_secs (Prometheus: compactions) or times out.
wait_quiet() {
  local url=$1 deadline=$((SECONDS + compact_timeout)) last="" since=$SECONDS now m
  shift
  while [ $SECONDS -lt $deadline ]; do
    now=""
    for m in "$@"; do now+="$(metric_sum "$url" "$m") "; done
    if [ "$now" != "$last" ]; then last=$now since=$SECONDS; fi
    [ $((SECONDS - since)) -ge "$quiet_secs" ] && return 0
    sleep 2
  done
  log "still busy after ${compact_timeout}s; measuring anyway"
}

# flush_and_measure SYSTEM DIR: makes the engine write and compact what it
# holds, then sets DISK (bytes of the measured data) and DATADIR (du of the
# whole data dir).
flush_and_measure() {
  local system=$1 dir=$2 deadline snap busy
  case "$system" in
    vm)
      curl -sf -o /dev/null "$HTTP/internal/force_flush"
      curl -sf -o /dev/null "$HTTP/internal/force_merge"
      sleep 2
      deadline=$((SECONDS + compact_timeout))
      while :; do
        busy=$(($(metric_sum "$HTTP/metrics" vm_active_force_merges) + $(metric_sum "$HTTP/metrics" vm_active_merges)))
        [ "$busy" = 0 ] && break
        [ $SECONDS -ge $deadline ] && { log "VictoriaMetrics still merging after ${compact_timeout}s"; break; }
        sleep 2
      done
      curl -sf -o /dev/null "$HTTP/internal/force_flush"
      DATADIR=$(du -sb "$dir" | cut -f1)
      DISK=$DATADIR ;;
    prom)
      wait_quiet "$HTTP/metrics" prometheus_tsdb_compactions_total prometheus_tsdb_blocks_loaded prometheus_tsdb_head_truncations_total
      DATADIR=$(du -sb "$dir" | cut -f1)
      snap=$(curl -sf -XPOST "$HTTP/api/v1/admin/tsdb/snapshot" | sed -n 's/.*"name":"\([^"]*\)".*/\1/p')
      [ -n "$snap" ] && [ -d "$dir/snapshots/$snap" ] || { log "Prometheus snapshot failed"; DISK=""; return; }
      DISK=$(du -sb "$dir/snapshots/$snap" | cut -f1) ;;
    csoc-rw | csoc-grpc)
      if ! curl -sf -o /dev/null -XPOST "$HTTP/api/v1/admin/tsdb/flush"; then
        log "csoc-collector: POST /api/v1/admin/tsdb/flush failed; measuring without it"
      fi
      DATADIR=$(du -sb "$dir" | cut -f1)
      DISK=$DATADIR ;;
  esac
}

# targets_seen TS_MS: how many targets have node_boot_time_seconds at TS_MS
# (a cheap check that the last round of every target is queryable).
targets_seen() {
  local t body
  t=$(awk -v ms="$1" 'BEGIN {printf "%.3f", ms / 1000 + 0.01}')
  if body=$(curl -sf --get --data-urlencode 'query=node_boot_time_seconds{job="node"}' --data-urlencode "time=$t" "$HTTP/api/v1/query"); then
    grep -o '"instance":"[^"]*"' <<<"$body" | sort -u | wc -l
  else
    echo "?"
  fi
}

# record SCENARIO SYSTEM RUN STATUS SAMPLES SECONDS RATE CPU LG_CPU HWM_KIB RSS0_KIB RSS1_KIB DISK DATADIR SERIES CHECK
record() { (IFS=$US; echo "$*") >>"$results"; }

# run_case SCENARIO SYSTEM RUN TARGETS ROUNDS START_MS
run_case() {
  local scenario=$1 system=$2 run=$3 targets=$4 rounds=$5 start_ms=$6
  local dir="$work/$scenario-$system-$run" mode url summary rc c0 c1 rss0 rss1 hwm
  local samples seconds rate lg_cpu cpu seen end_ms series=$((targets * 507))
  DISK="" DATADIR=""
  if [[ "$system" == csoc-* ]] && [ -n "$csoc_problem" ]; then
    record "$scenario" "$system" "$run" "skipped: $csoc_problem"
    return
  fi
  log "[$scenario run $run] $system: starting"
  if ! start_server "$system" "$dir"; then
    log "[$scenario run $run] $system: $START_ERROR"
    record "$scenario" "$system" "$run" "failed to start: $START_ERROR"
    return
  fi
  sleep 3
  rss0=$(status_kib "$SPID" VmRSS)
  mode=remote-write url=$WRITE_URL
  [ "$system" = csoc-grpc ] && mode=grpc url=$GRPC_URL
  local -a auth=() # the token goes by environment, not on the command line
  [[ "$system" == csoc-* ]] && auth=("CSOC_LOADGEN_TOKEN=$token")
  c0=$(cpu_ticks "$SPID")
  log "[$scenario run $run] $system: loadgen --mode $mode --targets $targets --rounds $rounds"
  rc=0
  summary=$(env "${auth[@]}" timeout -k 10 "$load_timeout" "$loadgen" --mode "$mode" --url "$url" --targets "$targets" \
    --rounds "$rounds" --start-ms "$start_ms" --batch-samples "$batch" --concurrency "$concurrency" --seed "$seed" \
    --jitter-ms "$jitter" --progress-secs 10) || rc=$?
  if ! kill -0 "$SPID" 2>/dev/null; then
    log "[$scenario run $run] $system: the server died; its log ends:"
    tail -n 20 "$SLOG" >&2
    wait "$SPID" 2>/dev/null || true
    SPID=""
    record "$scenario" "$system" "$run" "server died during ingest"
    return
  fi
  c1=$(cpu_ticks "$SPID")
  hwm=$(status_kib "$SPID" VmHWM)
  sleep "$settle"
  rss1=$(status_kib "$SPID" VmRSS)
  echo "$system run $run: $summary" >>"$work/loadgen-$scenario.txt"
  samples=$(field durable_samples "$summary")
  seconds=$(field seconds "$summary")
  rate=$(field samples_per_s "$summary")
  lg_cpu=$(field loadgen_cpu_s "$summary")
  end_ms=$(field end_ms "$summary")
  cpu=$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN {printf "%.1f", (b - a) / t}')
  local status=ok
  if [ "$rc" != 0 ]; then
    status="loadgen exit $rc$([ "$rc" = 124 ] && echo ' (timed out)')"
    log "[$scenario run $run] $system: $status"
  fi
  seen="?"
  if [ "$status" = ok ]; then
    [ "$system" = vm ] && curl -sf -o /dev/null "$HTTP/internal/force_flush"
    [ -n "$end_ms" ] && seen="$(targets_seen "$end_ms")/$targets"
    if [ "$scenario" = disk ]; then
      log "[$scenario run $run] $system: flushing and compacting"
      flush_and_measure "$system" "$dir"
    fi
  fi
  stop_server
  record "$scenario" "$system" "$run" "$status" "${samples:-}" "${seconds:-}" "${rate:-}" "$cpu" "${lg_cpu:-}" "$hwm" "$rss0" "$rss1" \
    "$DISK" "$DATADIR" "$series" "$seen"
  log "[$scenario run $run] $system: $status samples=${samples:-?} ${rate:-?}/s cpu=${cpu}s peak_rss=$((hwm / 1024))MiB disk=${DISK:-–}"
  [ "$keep" = 1 ] || rm -rf "$dir"
}

# --- run ------------------------------------------------------------------------
date_utc=$(date -u +%Y-%m-%dT%H:%MZ)
for rep in $(seq 1 "$repeat"); do
  for scenario in ${scenarios//,/ }; do
    case "$scenario" in
      throughput) t=$tp_targets r=$tp_rounds ;;
      disk) t=$disk_targets r=$disk_rounds ;;
      memory) t=$mem_targets r=$mem_rounds ;;
    esac
    # One start time for every system: identical data. Round 0 is r x 15 s
    # (plus a minute) before now, so the last round is in the past.
    start_ms=$(($(date +%s) * 1000 - r * 15000 - 60000))
    for system in vm prom csoc-rw csoc-grpc; do
      has "$system" && run_case "$scenario" "$system" "$rep" "$t" "$r" "$start_ms"
    done
  done
done

# --- report ---------------------------------------------------------------------
fmt_mib() { [ -n "$1" ] && awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}' || echo "–"; }
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.10g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
system_name() {
  case "$1" in
    vm) echo "VictoriaMetrics $(pkg_version victoria-metrics) (remote write)" ;;
    prom) echo "Prometheus $(pkg_version prometheus) (remote write)" ;;
    csoc-rw) echo "csoc-collector (remote write)" ;;
    csoc-grpc) echo "csoc-collector (gRPC)" ;;
  esac
}

# One table row from a results line (or a median line: run = "median").
row() {
  local scenario=$1 system=$2 run=$3 status=$4 samples=$5 seconds=$6 rate=$7 cpu=$8 lg=$9 hwm=${10} rss0=${11} rss1=${12}
  local disk=${13} datadir=${14} series=${15} check=${16}
  if [ "$status" != ok ]; then
    echo "| $(system_name "$system") | $run | $status |$(printf ' |%.0s' {1..12})"
    return
  fi
  local bps="–" d="–" dd="–" delta="–" plain="–" rss1s="–"
  if [ "$scenario" = disk ] && [ -n "$disk" ]; then
    d=$disk dd=${datadir:-–}
    bps=$(awk -v a="$disk" -v b="$samples" 'BEGIN {printf "%.3f", a / b}')
  fi
  if [ "$scenario" = memory ]; then
    rss1s=$(fmt_mib "$rss1")
    delta=$(awk -v a="$rss0" -v b="$rss1" -v s="$series" 'BEGIN {printf "%.0f", (b - a) * 1024 / s}')
    plain=$(awk -v b="$rss1" -v s="$series" 'BEGIN {printf "%.0f", b * 1024 / s}')
  fi
  echo "| $(system_name "$system") | $run | $samples | $seconds | $rate | $cpu | $lg | $(fmt_mib "$hwm") | $rss1s | $d | $dd | $bps | $delta | $plain | $check |"
}

report() {
  local scenario system title
  echo "## Storage benchmark, $date_utc"
  echo
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), $(uname -sr) $(uname -m)."
  local ts="timestamps exactly 15 s apart (fixed 0-4 ms offset per target)"
  [ "$jitter" != 0 ] && ts="timestamps 15 s apart plus 0-$jitter ms jitter per round (and a fixed 0-4 ms offset per target)"
  echo "Workload: node_exporter 1.5 exposition (507 series per target), 15 s interval, $ts, seed $seed, $batch-sample batches, $concurrency concurrent requests/streams; csoc-loadgen on the same machine."
  echo
  echo "Command:"
  echo
  echo '```sh'
  echo "$cmdline"
  echo '```'
  for scenario in ${scenarios//,/ }; do
    case "$scenario" in
      throughput) title="Ingest throughput: $tp_targets targets x $tp_rounds rounds" ;;
      disk) title="Bytes per sample on disk: $disk_targets targets x $disk_rounds rounds ($((disk_rounds * 15 / 3600)) h $((disk_rounds * 15 % 3600 / 60)) min of data)" ;;
      memory) title="Memory per active series: $mem_targets targets ($((mem_targets * 507)) series) x $mem_rounds rounds" ;;
    esac
    echo
    echo "### $title"
    echo
    echo "| system | run | samples | seconds | samples/s | server CPU s | loadgen CPU s | peak RSS | RSS after | disk bytes | data dir bytes | bytes/sample | RSS/series Δ (B) | RSS/series (B) | targets seen |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for system in vm prom csoc-rw csoc-grpc; do
      has "$system" || continue
      awk -F"$US" -v s="$scenario" -v y="$system" '$1 == s && $2 == y' "$results" | while IFS=$US read -r -a f; do
        row "${f[@]}" "" "" "" "" "" "" "" "" "" "" "" "" "" "" ""
      done
      if [ "$repeat" -gt 1 ]; then
        local ok
        ok=$(awk -F"$US" -v s="$scenario" -v y="$system" '$1 == s && $2 == y && $4 == "ok"' "$results")
        [ -z "$ok" ] && continue
        local -a m=()
        local col
        for col in 5 6 7 8 9 10 11 12 13 14 15; do
          m+=("$(cut -d"$US" -f"$col" <<<"$ok" | median)")
        done
        row "$scenario" "$system" "median" ok "${m[@]}" ""
      fi
    done
  done
  echo
  echo "Notes: samples/s counts samples the server acknowledged (remote write: 2xx; gRPC: Ack), from the first request to the"
  echo "last answer. VictoriaMetrics acknowledges once rows are in its in-memory buffer (flushed to disk within about a second),"
  echo "Prometheus once they are in its head and WAL (written, not fsynced), csoc-collector after its WAL commit. Server CPU"
  echo "is utime+stime over the load; peak RSS is VmHWM. Prometheus's disk figure is a snapshot (its blocks plus the head"
  echo "written out as one more block, WAL excluded) taken after compactions went quiet; its data dir column includes the WAL."
  echo "VictoriaMetrics's is its data dir after force_flush and a finished force_merge. \"targets seen\": targets whose last"
  echo "round answers an instant query. Single runs vary by 15-20 %: compare systems within one run."
  for scenario in ${scenarios//,/ }; do
    [ -s "$work/loadgen-$scenario.txt" ] || continue
    echo
    echo "csoc-loadgen summaries, $scenario:"
    echo
    echo '```'
    cat "$work/loadgen-$scenario.txt"
    echo '```'
  done
}

report >"$work/report.md"
[ -n "$out" ] && cp "$work/report.md" "$out"
cat "$work/report.md"
