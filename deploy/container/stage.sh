#!/usr/bin/env bash
# Lays out what the final image stages copy, under OUT, from this repository
# and a directory holding the built csoc-agent and csoc-collector. The one
# definition of the images' file layout: the Containerfile's `build` stage
# runs it on its release build (the `binaries` stage is /out), and
# for binaries built elsewhere, as in the image test (tests/tests/image.rs),
# OUT replaces that stage: podman build --build-context binaries=OUT.
#
# Usage: stage.sh OUT BINDIR
#
# OUT/usr/bin/csoc-agent, OUT/usr/bin/csoc-collector  the binaries
# OUT/etc/csoc-watch/{agent,collector}.yml            the images' default configs
# OUT/usr/share/csoc-watch/rules/                     the Gen3 rule pack and its tests
# OUT/usr/share/csoc-watch/dashboards/                the Grafana dashboards
# OUT/state/agent/csoc-agent/                         the agent's state dir (0775)
# OUT/state/collector/csoc-watch/                     the collector's data dir (0775)
# The state dirs are group-writable so that any UID in group 0 (OpenShift's
# arbitrary UIDs) can write them; the final stages chown them to 65532:0.
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 OUT BINDIR" >&2
  exit 2
fi
out=$1
bindir=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)

for b in csoc-agent csoc-collector; do
  [ -x "$bindir/$b" ] || { echo "$0: $bindir/$b is missing or not executable" >&2; exit 1; }
done

mkdir -p "$out/usr/bin" "$out/etc/csoc-watch" "$out/usr/share/csoc-watch/rules" \
  "$out/usr/share/csoc-watch/dashboards" "$out/state/agent/csoc-agent" "$out/state/collector/csoc-watch"
install -m 0755 "$bindir/csoc-agent" "$bindir/csoc-collector" "$out/usr/bin/"
install -m 0644 "$repo/deploy/container/agent.yml" "$repo/deploy/container/collector.yml" "$out/etc/csoc-watch/"
install -m 0644 "$repo"/deploy/rules/*.yml "$repo"/deploy/rules/*.md "$out/usr/share/csoc-watch/rules/"
install -m 0644 "$repo"/grafana/dashboards/*.json "$out/usr/share/csoc-watch/dashboards/"
chmod 0775 "$out/state/agent/csoc-agent" "$out/state/collector/csoc-watch"
