#!/usr/bin/env bash
# What the agent's postgres source costs the database server: a throw-away
# PostgreSQL cluster (Debian's postgresql package) with pg_stat_statements,
# three databases shaped like Gen3 service databases (60 tables with an
# index each, a few thousand rows), the real csoc-agent polling all three
# every second for DURATION seconds (no collector: it spools), then
# pg_stat_statements' figures for the source's one statement.
#
#   tests/bench/postgres-cost.sh [--duration 60] [--agent PATH]
#
# As root the server runs as nobody (PostgreSQL refuses root). Stops
# everything it started by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=60
AGENT="${CARGO_TARGET_DIR:-target}/debug/csoc-agent"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --agent) AGENT="$2"; shift 2 ;;
    *) echo "usage: $0 [--duration SECONDS] [--agent PATH]" >&2; exit 2 ;;
  esac
done
[ -x "$AGENT" ] || { echo "no agent at $AGENT (cargo build -p csoc-agent)" >&2; exit 2; }
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$BIN/initdb" ] || { echo "PostgreSQL not found (apt-get install postgresql)" >&2; exit 2; }

WORK=$(mktemp -d)
chmod 711 "$WORK"
mkdir "$WORK/pg"
RUN=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody:nogroup "$WORK/pg"
  RUN=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp)
fi
PGPID=""; AGENTPID=""
cleanup() {
  [ -n "$AGENTPID" ] && kill -TERM "$AGENTPID" 2>/dev/null && wait "$AGENTPID" 2>/dev/null || true
  [ -n "$PGPID" ] && kill -INT "$PGPID" 2>/dev/null && wait "$PGPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo -n bench-superuser > "$WORK/pg/pw"
[ "$(id -u)" -eq 0 ] && chown nobody:nogroup "$WORK/pg/pw"
"${RUN[@]}" "$BIN/initdb" -D "$WORK/pg/data" -U postgres --auth=scram-sha-256 --pwfile="$WORK/pg/pw" \
  -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${RUN[@]}" "$BIN/postgres" -D "$WORK/pg/data" -p "$PORT" -k "$WORK/pg" -c listen_addresses=127.0.0.1 \
  -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all \
  -c max_connections=100 >"$WORK/postgres.log" 2>&1 &
PGPID=$!
export PGPASSWORD=bench-superuser
psql_() { psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres "$@"; }
for _ in $(seq 1 100); do psql_ -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
psql_ -d postgres -c "CREATE ROLE monitor LOGIN PASSWORD 'bench-monitor' IN ROLE pg_monitor" \
  -c "CREATE EXTENSION pg_stat_statements"
for db in fence indexd metadata; do
  psql_ -d postgres -c "CREATE DATABASE ${db}_db"
  psql_ -d "${db}_db" -c "DO \$\$ BEGIN FOR i IN 1..60 LOOP
      EXECUTE format('CREATE TABLE t%s (id serial PRIMARY KEY, name text, created timestamptz DEFAULT now())', i);
      EXECUTE format('CREATE INDEX ON t%s (name)', i);
      EXECUTE format('INSERT INTO t%s (name) SELECT md5(g::text) FROM generate_series(1, 100) g', i);
    END LOOP; END \$\$"
done
echo -n bench-monitor > "$WORK/monitor-pw"
cat >"$WORK/agent.yml" <<YML
sources:
  host: {enabled: false}
  postgres:
    databases:
      - {name: fence, dsn: 'host=127.0.0.1 port=$PORT user=monitor dbname=fence_db', password_file: $WORK/monitor-pw}
      - {name: indexd, dsn: 'host=127.0.0.1 port=$PORT user=monitor dbname=indexd_db', password_file: $WORK/monitor-pw}
      - {name: metadata, dsn: 'host=127.0.0.1 port=$PORT user=monitor dbname=metadata_db', password_file: $WORK/monitor-pw}
YML
psql_ -d postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
"$AGENT" --config "$WORK/agent.yml" --interval 1s --collector http://127.0.0.1:9 \
  --spool-dir "$WORK/spool" --http-listen 127.0.0.1:0 >"$WORK/agent.log" 2>&1 &
AGENTPID=$!
sleep "$DURATION"
echo "postgres source, $DURATION s at 1 s, 3 databases (PostgreSQL $("$BIN/postgres" --version | awk '{print $3}'), $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)):"
psql_ -d postgres -F ' ' -c "SELECT 'executions', sum(calls), 'mean_ms', round((sum(total_exec_time)/sum(calls))::numeric, 3),
    'min_ms', round(min(min_exec_time)::numeric, 3), 'max_ms', round(max(max_exec_time)::numeric, 3),
    'per_collection_ms', round((3 * sum(total_exec_time)/sum(calls))::numeric, 3),
    'shared_blks_hit_per_exec', round(sum(shared_blks_hit)::numeric/sum(calls), 1),
    'blks_read', sum(shared_blks_read)
  FROM pg_stat_statements WHERE query LIKE 'SELECT d.numbackends::float8%'"
grep -c "PostgreSQL database unavailable" "$WORK/agent.log" | sed 's/^/agent warnings: /'
