# Shared by the benchmark scripts in tests/bench (sourced, not run). The
# sourcing script defines log MESSAGE and has SYSTEM (whether --only names
# it) before calling these.

# find_bin PACKAGE NAME: the program NAME, from PATH or from the package's
# file list (empty if neither has it).
find_bin() {
  command -v "$2" 2>/dev/null || { dpkg -L "$1" 2>/dev/null | grep -m1 "/bin/$2\$"; } || true
}

# find_peers: sets vm_bin and prom_bin for the peers that --only names,
# installing Debian's victoria-metrics and prometheus with apt-get (sudo when
# not root) when they are missing; exits 2 if they still are.
find_peers() {
  vm_bin="" prom_bin=""
  if has vm || has prom; then
    vm_bin=$(find_bin victoria-metrics victoria-metrics)
    prom_bin=$(find_bin prometheus prometheus)
    if { has vm && [ -z "$vm_bin" ]; } || { has prom && [ -z "$prom_bin" ]; }; then
      log "installing victoria-metrics and prometheus with apt-get"
      local sudo=""
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      $sudo apt-get update -q >&2
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q victoria-metrics prometheus >&2
      vm_bin=$(find_bin victoria-metrics victoria-metrics)
      prom_bin=$(find_bin prometheus prometheus)
    fi
    if has vm && [ -z "$vm_bin" ]; then log "no victoria-metrics binary"; exit 2; fi
    if has prom && [ -z "$prom_bin" ]; then log "no prometheus binary"; exit 2; fi
  fi
}

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }

# warn_other_servers: installing the packages may start their system
# services, which would compete for the CPU. Say so (they are not ours to
# stop).
warn_other_servers() {
  local name others
  for name in prometheus victoria-metrics csoc-collector; do
    others=$(pgrep -x "$name" 2>/dev/null | paste -sd, - || true)
    [ -n "$others" ] && log "warning: another $name is running (PID $others); it shares the CPU with the benchmark"
  done
  return 0
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# take_port: sets PORT to a free port at or after next_port (which the
# sourcing script starts at its --port-base).
take_port() {
  while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
  PORT=$next_port
  next_port=$((next_port + 1))
}

metric_sum() { # URL METRIC: sum of the metric's samples in a /metrics page
  curl -sf "$1" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $NF} END {printf "%.0f\n", s}'
}

field() { # KEY LINE: value of KEY=VALUE in a loadgen summary line
  tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print substr($0, length(k) + 2); exit}'
}

# release_bins: with build=1, builds release csoc-collector and csoc-loadgen
# into CARGO_TARGET_DIR (or target/); sets target_dir, loadgen, collector, and
# csoc_problem (non-empty when the collector is unavailable: the peers are
# then benchmarked alone). Exits 2 without csoc-loadgen.
release_bins() {
  target_dir=${CARGO_TARGET_DIR:-$root/target}
  loadgen=$target_dir/release/csoc-loadgen
  collector=$target_dir/release/csoc-collector
  csoc_problem=""
  if [ "$build" = 1 ]; then
    log "building release csoc-collector and csoc-loadgen (into $target_dir)"
    if ! cargo build --release -p csoc-collector -p csoc-tests --bins >&2; then
      csoc_problem="csoc-collector did not build"
      log "$csoc_problem; building csoc-loadgen alone and benchmarking the peers only"
      cargo build --release -p csoc-tests --bin csoc-loadgen >&2
    fi
  fi
  [ -x "$loadgen" ] || { log "no $loadgen (run without --no-build)"; exit 2; }
  if [ -z "$csoc_problem" ] && [ ! -x "$collector" ]; then csoc_problem="no $collector"; fi
}
