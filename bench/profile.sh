#!/usr/bin/env bash
# Profile the gateway with py-spy under load: bench/out/profile-<time>/{profile-*.svg, *.speedscope.json,
# hotspots.md} (copies in bench/out/profile-latest-*). Installs py-spy into .venv when missing.
#   bench/profile.sh                         POST /v1/chat/completions, JSON, c=16, 15 s per recording
#   bench/profile.sh --scenario stream       also: message, v1-stream, ws, offline, conversation; -c N; -d SECONDS; --native
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/py-spy ] || command -v py-spy >/dev/null || .venv/bin/python -m pip install --quiet py-spy
exec .venv/bin/python -m bench profile "$@"
