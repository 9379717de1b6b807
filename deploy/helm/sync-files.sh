#!/usr/bin/env bash
# Copies what the csoc-collector chart carries from elsewhere in the
# repository into the chart (Helm cannot read files outside a chart's
# directory): the Gen3 rule pack and the Grafana dashboards. Run it after
# changing deploy/rules/gen3.yml or grafana/dashboards/*.json; the chart
# tests (tests/helm/) fail while a copy differs from its source.
set -euo pipefail
cd "$(dirname "$0")/../.."
chart=deploy/helm/csoc-collector
install -m 0644 deploy/rules/gen3.yml "$chart/files/rules/gen3.yml"
rm -f "$chart"/files/dashboards/*.json
for f in grafana/dashboards/*.json; do
  install -m 0644 "$f" "$chart/files/dashboards/$(basename "$f")"
done
echo "copied deploy/rules/gen3.yml and grafana/dashboards/*.json into $chart/files/"
