"""Several OS processes share one ledger (an SQLite file, a PostgreSQL database); a process killed with
``kill -9`` loses no settled spend and leaks no reservation."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from rhetor.budget import BudgetLedger
from rhetor.storage import migrations, open_storage
from rhetor.storage.records import BucketKey
from rhetor.storage.sql_ledger import SqlStorage
from tests.budget import worker

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.budget.worker", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def read_json(proc: asyncio.subprocess.Process) -> Any:
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S)
    if not line:
        await proc.wait()
        raise AssertionError(f"worker exited {proc.returncode}: {(await proc.stderr.read()).decode()}")
    return json.loads(line)


async def until_alone(storage: SqlStorage) -> None:
    """PostgreSQL: wait until no other session is mid-transaction. A session whose client was killed while it
    ran a statement or a COMMIT finishes it first (committing spend that was never acknowledged, which is
    allowed), so reading before then could see the ledger change between two reads."""
    if storage.kind != "postgres":
        return  # SQLite has no server side: the killed process's open transaction is gone with it
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while True:
        others = await storage.fetch(
            "SELECT COUNT(*) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'", ())
        if others[0]["n"] == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, "the killed worker's sessions never ended"
        await asyncio.sleep(0.02)


async def test_two_processes_admit_exactly_what_the_budget_affords(durable_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [await spawn("hammer", durable_url, str(tmp_path), str(go), "300") for _ in range(2)]
    for p in procs:
        assert await read_json(p) == "ready"
    go.touch()  # both started together (racing to migrate the new database); now they race to reserve
    results = [await read_json(p) for p in procs]
    for p in procs:
        assert await asyncio.wait_for(p.wait(), TIMEOUT_S) == 0
    admitted = [i for r in results for i in r["admitted"]]
    assert len(admitted) == len(set(admitted)) == 250  # $25 / $0.10, out of 600 attempts
    assert all(r["admitted"] for r in results)  # both processes really competed for the budget
    async with open_storage(durable_url, tmp_path) as storage:
        day = BucketKey("global", "daily", "2031-03-03")
        totals = (await storage.ledger.totals([day]))[day]
        assert (totals.spent_nanos, totals.reserved_nanos) == (0, 25_000_000_000)
        assert await storage.schema_version() == len(migrations.load(storage.kind))  # every migration, once


async def test_kill_9_keeps_settled_spend_and_reconcile_frees_the_rest(durable_url: str, tmp_path: Path) -> None:
    proc = await spawn("crash", durable_url, str(tmp_path))
    assert await read_json(proc) == "ready"
    printed: dict[str, int] = {}
    while len(printed) < 60:
        line = await read_json(proc)
        printed[line["settled"]] = line["cost_nanos"]
    proc.kill()  # SIGKILL in the middle of the loop, requests in flight
    assert await asyncio.wait_for(proc.wait(), TIMEOUT_S) == -9

    async with open_storage(durable_url, tmp_path) as storage:
        assert isinstance(storage, SqlStorage)
        await until_alone(storage)
        rows = await storage.fetch("SELECT id, state, amount_nanos, cost_nanos FROM budget_reservations", ())
        by_id = {r["id"]: r for r in rows}
        for rid, cost in printed.items():  # every settle that returned is there, exactly
            assert (by_id[rid]["state"], by_id[rid]["cost_nanos"]) == ("settled", cost)
        settled = sum(r["cost_nanos"] for r in rows if r["state"] == "settled")
        live = [r for r in rows if r["state"] == "reserved"]
        day = BucketKey("global", "daily", "2031-03-03")
        totals = (await storage.ledger.totals([day]))[day]
        assert totals.spent_nanos == settled  # buckets agree with the rows, nothing half-written
        assert totals.reserved_nanos == sum(r["amount_nanos"] for r in live)

        ledger = BudgetLedger(storage.ledger)
        assert await ledger.reconcile(worker.NOW + timedelta(seconds=worker.CRASH_TTL_S - 1)) == []
        expired = await ledger.reconcile(worker.NOW + timedelta(seconds=worker.CRASH_TTL_S))
        assert sorted(expired) == sorted(r["id"] for r in live)
        totals = (await storage.ledger.totals([day]))[day]
        assert (totals.spent_nanos, totals.reserved_nanos) == (settled, 0)
        states = await storage.fetch("SELECT COUNT(*) AS n FROM budget_reservations WHERE state = 'reserved'", ())
        assert states[0]["n"] == 0
