#!/usr/bin/env bash
# Time from a Gen3 service going down to the notification arriving at a
# webhook receiver, for csoc-watch and for Prometheus + blackbox_exporter +
# Alertmanager (Debian's packages), side by side on the same fake commons.
#
#   tests/bench/alert-latency.sh [--trials N] [--no-build] [--keep] [--out FILE]
#
# Setup (all on 127.0.0.1, every process stopped by PID at the end):
# - csoc-fake-gen3 serves a Gen3 commons; a trial switches one service to
#   "down" (revproxy's 502) at time T0, a different service each trial so
#   every trial starts a new alert group everywhere;
# - csoc: csoc-agent --gen3-url (probe interval 5s) → csoc-collector with a
#   rule group at interval 5s, `gen3_service_up == 0`, for: 0, and a webhook
#   receiver (group_by [alertname, service], group_wait 0s);
# - peer: blackbox_exporter (http_2xx) scraped by Prometheus every 5s,
#   evaluation_interval 5s, `probe_success == 0`, for: 0, sending to two
#   Alertmanagers: one at its defaults (group_wait 30s) and one with
#   group_wait 0s, each with a webhook receiver grouped by
#   [alertname, service];
# - csoc-webhook-sink records when each notification arrives.
# The latency of a trial is arrival − T0; the script prints each trial and
# the median per system. No timed assertions: figures go to BENCHMARKS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
trials=10 build=1 keep=0 out=""
while [ $# -gt 0 ]; do
  case $1 in
    --trials) trials=$2; shift ;;
    --no-build) build=0 ;;
    --keep) keep=1 ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n 2,24p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

target=${CARGO_TARGET_DIR:-$root/target}
if [ "$build" = 1 ]; then
  log "building release binaries"
  cargo build --release --quiet -p csoc-collector -p csoc-agent -p csoc-tests --bins
fi
bin=$target/release
for b in csoc-collector csoc-agent csoc-fake-gen3 csoc-webhook-sink; do
  [ -x "$bin/$b" ] || { log "missing $bin/$b (run without --no-build)"; exit 2; }
done

prom=$(find_bin prometheus prometheus)
am=$(find_bin prometheus-alertmanager prometheus-alertmanager)
bb=$(find_bin prometheus-blackbox-exporter prometheus-blackbox-exporter)
if [ -z "$prom" ] || [ -z "$am" ] || [ -z "$bb" ]; then
  log "installing prometheus, prometheus-alertmanager and prometheus-blackbox-exporter with apt-get"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q prometheus prometheus-alertmanager prometheus-blackbox-exporter >&2
  prom=$(find_bin prometheus prometheus)
  am=$(find_bin prometheus-alertmanager prometheus-alertmanager)
  bb=$(find_bin prometheus-blackbox-exporter prometheus-blackbox-exporter)
fi
for p in "$prom" "$am" "$bb"; do [ -n "$p" ] || { log "peer program missing"; exit 2; }; done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

port=19400
# assign_ports VAR...: each VAR gets the next free port from 19401 on.
assign_ports() {
  local v
  for v in "$@"; do
    port=$((port + 1))
    while ! port_free "$port"; do port=$((port + 1)); done
    printf -v "$v" '%s' "$port"
  done
}
assign_ports sink_port fake_port http_port grpc_port agent_port prom_port bb_port am1_port am2_port am1_cluster am2_cluster

# service → public health path through revproxy (../shared/gen3/SERVICES.md).
services=(fence indexd sheepdog peregrine metadata guppy audit requestor wts manifestservice)
declare -A path=(
  [fence]=/user/_status [indexd]=/index/_status [sheepdog]=/api/_status [peregrine]=/peregrine/_status
  [metadata]=/mds/_status [guppy]=/guppy/_status [audit]=/audit/_status [requestor]=/requestor/_status
  [wts]=/wts/_status [manifestservice]=/manifests/_status
)
[ "$trials" -le "${#services[@]}" ] || { log "at most ${#services[@]} trials (one service each)"; exit 2; }

"$bin/csoc-webhook-sink" --listen "127.0.0.1:$sink_port" --max-seconds 7200 >"$work/sink.jsonl" 2>"$work/sink.log" &
pids+=($!)
"$bin/csoc-fake-gen3" --listen "127.0.0.1:$fake_port" >"$work/fake.log" 2>&1 &
pids+=($!)
fake=http://127.0.0.1:$fake_port
sink=http://127.0.0.1:$sink_port

# --- csoc-watch ---
token="bench-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$work/csoc-rules.yml" <<EOF
groups:
  - name: bench
    interval: 5s
    rules:
      - alert: Gen3ServiceDown
        expr: gen3_service_up == 0
        labels: {severity: critical}
EOF
cat >"$work/csoc.yml" <<EOF
receivers:
  - name: bench
    group_by: [alertname, service]
    group_wait: 0s
    webhook: {url: "$sink/csoc"}
EOF
"$bin/csoc-collector" --config "$work/csoc.yml" --data-dir "$work/csoc-data" --http-listen "127.0.0.1:$http_port" \
  --grpc-listen "127.0.0.1:$grpc_port" --agent-token "bench=$token" --rules "$work/csoc-rules.yml" >"$work/collector.log" 2>&1 &
pids+=($!)
sleep 1
CSOC_AGENT_TOKEN=$token "$bin/csoc-agent" --collector "http://127.0.0.1:$grpc_port" --gen3-url "$fake" --interval 5s \
  --spool-dir "$work/agent-spool" --http-listen "127.0.0.1:$agent_port" >"$work/agent.log" 2>&1 &
pids+=($!)

# --- Prometheus + blackbox_exporter + Alertmanager ---
cat >"$work/blackbox.yml" <<EOF
modules:
  http_2xx:
    prober: http
    timeout: 4s
EOF
"$bb" --config.file="$work/blackbox.yml" --web.listen-address="127.0.0.1:$bb_port" >"$work/blackbox.log" 2>&1 &
pids+=($!)
for n in 1 2; do
  gw=""
  [ "$n" = 2 ] && gw="  group_wait: 0s"
  name=$([ "$n" = 1 ] && echo am-default || echo am-wait0)
  cat >"$work/am$n.yml" <<EOF
route:
  receiver: hook
  group_by: [alertname, service]
$gw
receivers:
  - name: hook
    webhook_configs:
      - url: "$sink/$name"
EOF
  p=$([ "$n" = 1 ] && echo "$am1_port" || echo "$am2_port")
  c=$([ "$n" = 1 ] && echo "$am1_cluster" || echo "$am2_cluster")
  "$am" --config.file="$work/am$n.yml" --storage.path="$work/am$n-data" --web.listen-address="127.0.0.1:$p" \
    --cluster.listen-address="127.0.0.1:$c" >"$work/am$n.log" 2>&1 &
  pids+=($!)
done
{
  echo "global: {scrape_interval: 5s, evaluation_interval: 5s}"
  echo "rule_files: [$work/prom-rules.yml]"
  echo "alerting: {alertmanagers: [{static_configs: [{targets: ['127.0.0.1:$am1_port', '127.0.0.1:$am2_port']}]}]}"
  echo "scrape_configs:"
  echo "  - job_name: blackbox"
  echo "    metrics_path: /probe"
  echo "    params: {module: [http_2xx]}"
  echo "    static_configs:"
  for s in "${services[@]}"; do
    echo "      - {targets: ['$fake${path[$s]}'], labels: {service: $s}}"
  done
  echo "    relabel_configs:"
  echo "      - {source_labels: [__address__], target_label: __param_target}"
  echo "      - {source_labels: [__param_target], target_label: instance}"
  echo "      - {target_label: __address__, replacement: '127.0.0.1:$bb_port'}"
} >"$work/prometheus.yml"
cat >"$work/prom-rules.yml" <<EOF
groups:
  - name: bench
    rules:
      - alert: Gen3ServiceDown
        expr: probe_success == 0
        labels: {severity: critical}
EOF
"$prom" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom-data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)

log "waiting for both systems to see every service up"
ready() {
  local n
  n=$(curl -sf "http://127.0.0.1:$http_port/api/v1/query" --data-urlencode 'query=count(gen3_service_up == 1)' | jq -r '.data.result[0].value[1] // 0' || echo 0)
  [ "${n:-0}" -ge "$trials" ] || return 1
  n=$(curl -sf "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode 'query=count(probe_success == 1)' | jq -r '.data.result[0].value[1] // 0' || echo 0)
  [ "${n:-0}" -ge "$trials" ]
}
for _ in $(seq 1 120); do ready && break; sleep 1; done
ready || { log "not ready after 120 s; logs in $work"; keep=1; exit 1; }
sleep 6

now_ms() { date +%s%3N; }
arrival() { # PATH SERVICE: arrival ms of the first firing notification for SERVICE at PATH
  jq -rR --arg p "/$1" --arg s "$2" 'fromjson? | select(.path == $p and .status == "firing" and any(.alerts[]; .service == $s)) | .at_ms' \
    "$work/sink.jsonl" 2>/dev/null | head -1 || true
}
systems=(csoc am-wait0 am-default)
declare -A lat
printf '%-6s %-16s %12s %12s %12s\n' trial service "${systems[@]}" >&2
for i in $(seq 1 "$trials"); do
  s=${services[$((i - 1))]}
  sleep "$(awk -v r="$RANDOM" 'BEGIN {printf "%.2f", r % 5000 / 1000}')"
  t0=$(now_ms)
  curl -sf -X POST "$fake/_fake/fault?service=$s&mode=down" >/dev/null
  deadline=$(( $(now_ms) + 120000 ))
  while :; do
    done_all=1
    for sys in "${systems[@]}"; do
      [ -n "$(arrival "$sys" "$s")" ] || done_all=0
    done
    [ "$done_all" = 1 ] && break
    [ "$(now_ms)" -lt "$deadline" ] || break
    sleep 0.2
  done
  row=()
  for sys in "${systems[@]}"; do
    a=$(arrival "$sys" "$s")
    if [ -n "$a" ]; then lat[$sys,$i]=$(awk -v a="$a" -v t="$t0" 'BEGIN {printf "%.2f", (a - t) / 1000}'); else lat[$sys,$i]=timeout; fi
    row+=("${lat[$sys,$i]}")
  done
  printf '%-6s %-16s %12s %12s %12s\n' "$i" "$s" "${row[@]}" >&2
  curl -sf -X POST "$fake/_fake/fault?service=$s&mode=ok" >/dev/null
done

median() { sort -n | awk '{a[NR] = $1} END {if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
summary=""
for sys in "${systems[@]}"; do
  vals=$(for i in $(seq 1 "$trials"); do echo "${lat[$sys,$i]}"; done | grep -v timeout || true)
  n=$(printf '%s\n' "$vals" | grep -c . || true)
  med=$(printf '%s\n' "$vals" | grep . | median)
  max=$(printf '%s\n' "$vals" | grep . | sort -n | tail -1)
  summary+=$(printf '%s median=%ss max=%ss arrived=%s/%s; ' "$sys" "$med" "${max:-n/a}" "$n" "$trials")
done
line="alert-latency trials=$trials ${summary}prometheus=$(pkg_version prometheus) alertmanager=$(pkg_version prometheus-alertmanager) blackbox=$(pkg_version prometheus-blackbox-exporter) machine=\"$(uname -sm), $(nproc) cores\" date=$(date -u +%Y-%m-%dT%H:%MZ)"
echo "$line"
[ -z "$out" ] || echo "$line" >>"$out"
