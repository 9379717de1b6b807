#!/usr/bin/env bash
# Makes (or updates) the Python environment of the chart tests and prints its
# python. The venv lives outside the work tree so that worktrees and CI runs
# share it: $CSOC_HELM_VENV, else ${XDG_CACHE_HOME:-~/.cache}/csoc-watch/helm-venv.
# It is reinstalled when tests/helm/requirements.txt changes (a stamp holds
# the file's digest). Needs python3 with the venv module and PyPI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements.txt"
venv="${CSOC_HELM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/csoc-watch/helm-venv}"
python3="${PYTHON3:-python3}"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.csoc-requirements" 2>/dev/null)" != "$want" ]; then
  echo "creating the chart tests' Python environment in $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python3" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" >&2
  "$venv/bin/python" -c "import helm_python, kubernetes_validate, yaml; helm_python.helm_sdk_version()" >&2
  echo "$want" > "$venv/.csoc-requirements"
fi
echo "$venv/bin/python"
