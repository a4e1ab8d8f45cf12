#!/usr/bin/env bash
# Start Rhetor: create .venv if missing, install, then serve HTTP + SSE on one port
# (RHETOR_PORT, default 8300) with the configuration in this directory (RHETOR_CONFIG_DIR).
# No API key is needed: without keys the offline `simulated` provider answers.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import rhetor" 2>/dev/null || [ pyproject.toml -nt .venv/.rhetor-installed ]; then
  .venv/bin/python -m pip install --quiet -e .
  touch .venv/.rhetor-installed
fi
export RHETOR_CONFIG_DIR=${RHETOR_CONFIG_DIR:-$PWD}
exec .venv/bin/rhetor serve "$@"
