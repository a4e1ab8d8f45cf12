#!/usr/bin/env bash
# Benchmark the gateway: installs what it needs (wrk via apt-get, uvloop into bench/.venv), starts the
# fake upstream and `rhetor serve`, runs every scenario and writes bench/RESULTS.md.
#   bench/run.sh            full run (10 s per scenario, 10k/100k requests for RSS, 1M stored rows)
#   bench/run.sh --quick    smoke run (3 s per scenario, 2k/20k requests, 100k rows)
#   bench/run.sh --help     every option (--only json,sse, --skip rows, --duration, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/rhetor ]; then
  echo "bench: .venv/bin/rhetor is missing; creating .venv and installing Rhetor" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet -e .
fi
if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk" >&2
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
fi
exec .venv/bin/python -m bench "$@"
