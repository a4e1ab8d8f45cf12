#!/usr/bin/env bash
# Instructions per POST /message, counted by callgrind: the one figure here that a busy or shared machine does not
# move (the same code reads the same to ~0.1%), so two revisions can be compared in one run each.
#
#   bench/instructions.sh [concurrency]        default 16; the OpenAI provider against bench/fake_upstream.py
#   APP_COST_DATABASE_URL=memory:// bench/instructions.sh     in-memory storage instead of SQLite
#   APP_COST_TASK=bench-offline bench/instructions.sh         the offline provider (no SDK, no upstream)
#
# What runs is `bench/app_cost.py --full` (the Litestar app called as an ASGI app: everything but uvicorn and the
# sockets to the client) under `valgrind --tool=callgrind`, counting only while its ~1,000 requests run (every
# thread: the loop and SQLite's). Takes about 80 s. Instructions are not time (cache misses, system calls and the
# fsync are not in them), so a change is confirmed served with bench/ab.py.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get install -y -qq valgrind >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq valgrind; }; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
APP_COST_CALLGRIND=1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/cg.%p" \
  .venv/bin/python bench/app_cost.py --full "${1:-16}" >"$out/log" 2>&1 || { tail -20 "$out/log"; exit 1; }
requests=$(grep -o "callgrind: [0-9]*" "$out/log" | awk '{print $2}')
total=$(callgrind_annotate "$out"/cg.* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
python3 -c "print(f'{$total / $requests / 1e6:.3f} M instructions per request ({$requests} requests, c=${1:-16})')"
