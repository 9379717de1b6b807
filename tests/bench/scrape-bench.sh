#!/usr/bin/env bash
# Measures the agent's cost of scraping a 10,000-series target, beside
# vmagent and Prometheus in agent mode scraping the same target at the same
# interval, in one run.
#
#   tests/bench/scrape-bench.sh [--peers vmagent,prom|none] [SCRAPES] [SERIES] [INTERVAL] [PORT_BASE]
#   e.g. tests/bench/scrape-bench.sh 60 10000 1s
#
# Generates an exposition of SERIES series (default 10000: 100 families of
# 100 series, 0.0.4 text with HELP/TYPE, node_exporter-like label sets),
# serves it with `python3 -m http.server`, and runs a release csoc-collector
# and csoc-agent (`--scrape bench=URL`, host source off) on 127.0.0.1 (ports
# PORT_BASE..PORT_BASE+5, default 19400). Beside it, unless --peers none:
# Debian's vmagent (victoria-metrics package) and prometheus
# `--enable-feature=agent`, each scraping the same URL at the same interval
# (their own job name) and remote-writing to the same csoc-collector, so all
# three do the whole job: scrape, parse, relabel, staleness, encode, send.
# After every scraper's first scrape it reads each one's utime+stime from
# /proc/<pid>/stat, waits for SCRAPES more scrapes of the agent (counted from
# csoc_agent_source_samples_total{source="scrape"} on the agent's /metrics),
# reads the CPU times again and divides each by that scraper's own scrapes
# in the window (vmagent: vm_promscrape_scrapes_total; Prometheus:
# prometheus_target_interval_length_seconds_count). Prints CPU time per
# scrape and peak RSS (VmHWM) for each, and the agent's ratio to each peer.
# Uses CARGO_TARGET_DIR if set. Stops every process by PID.
set -euo pipefail
peers=vmagent,prom
if [ "${1:-}" = --peers ]; then
  peers=$2
  shift 2
fi
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
pids=("$apid" "$cpid" "$hpid")
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
has_peer() { [[ ",$peers," == *",$1,"* ]]; }
find_bin() { command -v "$2" 2>/dev/null || { dpkg -L "$1" 2>/dev/null | grep -m1 "/bin/$2\$"; } || true; }
vmagent_bin="" prom_bin=""
has_peer vmagent && vmagent_bin=$(find_bin victoria-metrics vmagent)
has_peer prom && prom_bin=$(find_bin prometheus prometheus)
has_peer vmagent && [ -z "$vmagent_bin" ] && echo "scrape-bench: no vmagent (apt-get install victoria-metrics); measuring without it" >&2
has_peer prom && [ -z "$prom_bin" ] && echo "scrape-bench: no prometheus (apt-get install prometheus); measuring without it" >&2
# The peers remote-write to the same collector, with the token from a file.
(umask 077 && printf '%s' "$token" >"$work/token")
scrape_cfg() { # JOB
  printf 'global:\n  scrape_interval: %s\n  scrape_timeout: %s\nscrape_configs:\n  - job_name: %s\n    static_configs:\n      - targets: ["127.0.0.1:%s"]\n' \
    "$interval" "$interval" "$1" "$((base + 3))"
}
vpid="" ppid_=""
if [ -n "$vmagent_bin" ]; then
  scrape_cfg bench-vmagent >"$work/vmagent.yml"
  "$vmagent_bin" -promscrape.config "$work/vmagent.yml" -httpListenAddr "127.0.0.1:$((base + 4))" \
    -remoteWrite.url "http://127.0.0.1:$base/api/v1/write" -remoteWrite.bearerTokenFile "$work/token" \
    -remoteWrite.tmpDataPath "$work/vmagent-queue" >"$work/vmagent.log" 2>&1 &
  vpid=$!
  pids+=("$vpid")
fi
if [ -n "$prom_bin" ]; then
  { scrape_cfg bench-prom
    printf 'remote_write:\n  - url: http://127.0.0.1:%s/api/v1/write\n    authorization:\n      credentials_file: %s\n' "$base" "$work/token"
  } >"$work/prom.yml"
  "$prom_bin" --enable-feature=agent --config.file "$work/prom.yml" --storage.agent.path "$work/prom-agent" \
    --web.listen-address "127.0.0.1:$((base + 5))" >"$work/prom.log" 2>&1 &
  ppid_=$!
  pids+=("$ppid_")
fi

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
    # Each poll of /metrics costs the agent CPU inside the window (the
    # peers' metrics are read only at its ends): once a second, not more.
    sleep 1
  done
}
# A peer's scrapes so far, from its own metrics.
peer_count() { # PORT METRIC
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 && ($1 == m || substr($1, length(m) + 1, 1) == "{") {s += $NF} END {print s + 0}'
}
wait_peer() { # PID PORT METRIC NAME
  local deadline=$((SECONDS + 120))
  while [ "$(peer_count "$2" "$3")" -lt 2 ]; do
    kill -0 "$1" 2>/dev/null || { echo "$4 died; log:"; cat "$work/$4.log"; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "$4 never scraped; log:"; tail -20 "$work/$4.log"; exit 1; }
    sleep 0.2
  done
}
vm_metric=vm_promscrape_scrapes_total prom_metric=prometheus_target_interval_length_seconds_count
wait_scrapes 1
[ -z "$vpid" ] || wait_peer "$vpid" $((base + 4)) $vm_metric vmagent
[ -z "$ppid_" ] || wait_peer "$ppid_" $((base + 5)) $prom_metric prom
n0=$(count)
c0=$(ticks $apid)
[ -z "$vpid" ] || { vn0=$(peer_count $((base + 4)) $vm_metric); vc0=$(ticks "$vpid"); }
[ -z "$ppid_" ] || { pn0=$(peer_count $((base + 5)) $prom_metric); pc0=$(ticks "$ppid_"); }
wait_scrapes $((n0 + scrapes))
n1=$(count)
c1=$(ticks $apid)
[ -z "$vpid" ] || { vn1=$(peer_count $((base + 4)) $vm_metric); vc1=$(ticks "$vpid"); }
[ -z "$ppid_" ] || { pn1=$(peer_count $((base + 5)) $prom_metric); pc1=$(ticks "$ppid_"); }
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$apid/status")
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$apid/status")
up=$(curl -s "http://127.0.0.1:$base/api/v1/query?query=up%7Bjob%3D%22bench%22%7D" | grep -o '"value":\[[^]]*\]' || true)
printf 'scrape-bench series=%s scrapes=%s interval=%s cpu_per_scrape=%.1fms rss_peak=%.1fMiB rss_final=%.1fMiB up=%s machine="%s, %s cores" date=%s\n' \
  "$series" "$((n1 - n0))" "$interval" "$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="$((n1 - n0))" 'BEGIN {print 1000 * (b - a) / t / n}')" \
  "$(awk -v k="$hwm" 'BEGIN {print k / 1024}')" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "${up:-?}" \
  "$(uname -sm)" "$(nproc)" "$(date -u +%Y-%m-%d)"
ms_per() { awk -v a="$1" -v b="$2" -v t="$tck" -v n="$3" 'BEGIN {if (n > 0) printf "%.1f", 1000 * (b - a) / t / n; else print "nan"}'; }
agent_ms=$(ms_per "$c0" "$c1" "$((n1 - n0))")
for peer in vmagent prom; do
  case $peer in
    vmagent) pid=$vpid n0_=${vn0:-0} n1_=${vn1:-0} c0_=${vc0:-0} c1_=${vc1:-0} ;;
    prom) pid=$ppid_ n0_=${pn0:-0} n1_=${pn1:-0} c0_=${pc0:-0} c1_=${pc1:-0} ;;
  esac
  [ -n "$pid" ] || continue
  peer_ms=$(ms_per "$c0_" "$c1_" "$((n1_ - n0_))")
  peer_hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  printf 'scrape-bench peer=%s series=%s scrapes=%s interval=%s cpu_per_scrape=%sms rss_peak=%.1fMiB agent_ratio=%s\n' \
    "$peer" "$series" "$((n1_ - n0_))" "$interval" "$peer_ms" "$(awk -v k="$peer_hwm" 'BEGIN {print k / 1024}')" \
    "$(awk -v a="$agent_ms" -v p="$peer_ms" 'BEGIN {if (p > 0) printf "%.2f", a / p; else print "nan"}')"
done
