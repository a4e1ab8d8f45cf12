"""Rhetor's own cost per request, in process: the default pipeline on the offline provider (no HTTP,
no vendor SDK), with in-memory storage and with SQLite, so the pipeline's and the storage's shares show
separately.  Run: .venv/bin/python bench/engine_cost.py [requests]

Measured 2026-11-22 (2 cores): first memory 0.46 ms and SQLite 4.2 ms CPU per request (about 14 aiosqlite
thread round trips per request). Now memory 0.21 ms and SQLite 0.76 ms: each ledger and content transaction
runs whole on SQLite's thread (one hop each: reserve, settle, default-prompt lookup), and the COMMIT's
fsync (synchronous=FULL) is about 0.2 ms of what is left.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from rhetor.engine.engine import build_engine
from rhetor.engine.resources import Resources
from rhetor.stages.base import Request
from rhetor.types import RequestOptions

REPO = Path(__file__).resolve().parents[1]


async def measure(storage: str, n: int) -> tuple[float, float]:
    env = {"RHETOR_DATA_DIR": tempfile.mkdtemp()} if storage == "sqlite" else {"RHETOR_DATABASE_URL": "memory://"}
    resources = Resources.from_env(env)
    engine = build_engine(REPO, env={}, resources=resources)
    options = RequestOptions(task_type="chat", component="bench")
    try:
        for _ in range(min(200, n)):
            await engine.run(Request.from_text("hello there", options))
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            await engine.run(Request.from_text("hello there", options))
        return (time.perf_counter() - wall) / n * 1000, (time.process_time() - cpu) / n * 1000
    finally:
        await engine.aclose()
        await resources.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for storage in ("memory", "sqlite"):
        wall, cpu = asyncio.run(measure(storage, n))
        print(f"{storage:>7}: {wall:.3f} ms wall, {cpu:.3f} ms CPU per request (default pipeline, offline provider)")


if __name__ == "__main__":
    main()
