#!/usr/bin/env bash
# Install Rhetor with its dev dependencies into .venv (created if missing), then run the whole suite.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k graph -x
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/ruff check rhetor tests
.venv/bin/rhetor validate .
.venv/bin/rhetor schema --check --out schemas
exec .venv/bin/python -m pytest "$@"
