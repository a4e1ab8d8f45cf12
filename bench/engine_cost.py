"""Rhetor's own cost per request, in process: the default pipeline on the offline provider (no HTTP, no
vendor SDK, one request at a time), with in-memory storage and with SQLite, and the same without its
``budget`` stage, so the pipeline's, the budget logic's and the durable ledger's shares show separately.
Run: .venv/bin/python bench/engine_cost.py [requests]   (pin it, e.g. ``taskset -c 0``, for steady figures)

Earlier figures, from sessions before (machine not recorded): memory 0.46 ms and SQLite 4.2 ms CPU per request
(about 14 aiosqlite thread round trips), then 0.21 and 0.76 ms once each ledger and content transaction ran whole
on SQLite's thread. Later on 2026-11-22, on the machine of the `a335620` run in RESULTS.md, pinned to one
core, plain asyncio, 2,000 requests: 0.44 ms (memory) and 1.27 ms (SQLite) for the default pipeline; 0.16 and
0.30 ms without its budget stage. So the budget logic itself costs about 0.3 ms, and reserving and settling in
SQLite (two transactions, the settle's fsync, two thread round trips) about 0.8 ms per request one at a time:
most of Rhetor's own cost. Under concurrency the group commit shares the transactions and the fsync.
After the ledger changes of `8252667` (buckets prepared once per day, time-ordered ids, fewer statements), measured
on one machine before and after: memory 0.45 → 0.39 ms and SQLite 1.24 → 1.14 ms at c=1.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rhetor.engine.engine import build_engine
from rhetor.engine.resources import Resources
from rhetor.stages.base import Request
from rhetor.types import RequestOptions

REPO = Path(__file__).resolve().parents[1]


def without_budget(dest: Path) -> Path:
    """A copy of the shipped config whose default pipeline has no ``budget`` stage (generate takes the routed chain)."""
    for name in ("providers.yaml", "tasks.yaml", "budgets.yaml"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "pipelines", dest / "pipelines")
    path = dest / "pipelines" / "default.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec["stages"] = [s for s in spec["stages"] if s["type"] != "budget"]
    for stage in spec["stages"]:
        stage["inputs"] = {k: "route.chain" if v == "budget.chain" else v for k, v in stage.get("inputs", {}).items()}
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return dest


async def measure(storage: str, n: int, root: Path = REPO) -> tuple[float, float]:
    env = {"RHETOR_DATA_DIR": tempfile.mkdtemp()} if storage == "sqlite" else {"RHETOR_DATABASE_URL": "memory://"}
    resources = Resources.from_env(env)
    engine = build_engine(root, env={}, resources=resources)
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
    with tempfile.TemporaryDirectory() as tmp:
        bare = without_budget(Path(tmp))
        for label, root in (("default pipeline", REPO), ("without its budget stage", bare)):
            for storage in ("memory", "sqlite"):
                wall, cpu = asyncio.run(measure(storage, n, root))
                print(f"{storage:>7}: {wall:.3f} ms wall, {cpu:.3f} ms CPU per request ({label}, offline provider)")


if __name__ == "__main__":
    main()
