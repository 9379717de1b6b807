#!/usr/bin/env bash
# Checks grafana/dashboards/*.json against Grafana's published dashboard
# schema: the TypeScript types of the npm package @grafana/schema (Grafana
# publishes no JSON Schema of dashboards). Each dashboard becomes an object
# literal typed as `Dashboard`, so tsc reports missing required fields,
# wrong value types and unknown properties (excess-property checks), down to
# panels, targets, field config, thresholds and value mappings.
#
# The package declares some fields as TypeScript string enums (thresholds
# mode, color mode, mapping type), which a JSON string can never satisfy;
# the script rewrites those declarations into unions of the same strings
# first.
#
# Needs node, npm and python3, and the npm registry (packages are installed
# into a temporary directory). Usage: grafana/check-schema.sh [SCHEMA_VERSION]
set -euo pipefail

version="${1:-13.2.3}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "typescript@5" "@grafana/schema@${version}" >/dev/null

python3 - node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
def union(m):
    name, body = m.group(1), m.group(2)
    members = re.findall(r'(\w+)\s*=\s*("[^"]*"|\d+)', body)
    alias = f"export type {name} = " + " | ".join(v for _, v in members) + ";"
    ns = f"export declare namespace {name} {{ " + " ".join(f"type {k} = {v};" for k, v in members) + " }"
    return alias + "\n" + ns
text, n = re.subn(r"export declare enum (\w+) \{([^}]*)\}", union, text)
open(path, "w").write(text)
print(f"{n} enums rewritten as unions", file=sys.stderr)
EOF

mkdir chk
for f in "$here"/dashboards/*.json; do
  b="$(basename "$f" .json | tr '-' '_')"
  {
    echo "import type { Dashboard } from '@grafana/schema';"
    printf 'export const dashboard: Dashboard = '
    cat "$f"
    echo ';'
  } >"chk/$b.ts"
done
npx tsc --noEmit --strict --skipLibCheck --target es2020 --module esnext --moduleResolution bundler chk/*.ts
echo "grafana/dashboards: $(ls chk | wc -l) dashboards match @grafana/schema ${version}"
