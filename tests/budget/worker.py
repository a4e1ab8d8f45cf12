"""A separate OS process using the ledger, for the multi-process and crash tests.

    python -m tests.budget.worker hammer URL DATA_DIR GO_FILE ATTEMPTS
        starts the storage (racing the other worker to migrate the new database), prints "ready", waits for
        GO_FILE, makes ATTEMPTS reservations of $0.10 (5 at a time, 0-20 ms apart) against a $25 daily limit, prints
        {"admitted": [ids]}.
    python -m tests.budget.worker crash URL DATA_DIR
        reserves and settles forever, 8 requests in flight, printing {"settled": id, "cost_nanos": n} after
        each settle returns, until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from rhetor.budget import BudgetLedger
from rhetor.errors import BudgetExceededError
from rhetor.storage import open_storage
from rhetor.types import Usage

NOW = datetime(2031, 3, 3, 10, 0, tzinfo=UTC)
HAMMER_SCOPES = {"global": {"daily": 25.0}, "component:w": {"monthly": 1000.0}}
CRASH_SCOPES = {"global": {}}
CRASH_TTL_S = 60


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def hammer(url: str, data_dir: str, go: str, attempts: int) -> None:
    async with open_storage(url, data_dir) as storage:  # racing the other worker to migrate the new database
        say("ready")
        while not Path(go).exists():
            await asyncio.sleep(0.002)
        ledger = BudgetLedger(storage.ledger)
        gate = asyncio.Semaphore(5)

        async def one() -> str | None:
            async with gate:
                await asyncio.sleep(random.random() / 50)  # requests arrive over time, not back to back
                try:
                    return (await ledger.reserve(HAMMER_SCOPES, 0.1, enforce=True, now=NOW)).id
                except BudgetExceededError:
                    return None

        ids = await asyncio.gather(*(one() for _ in range(attempts)))
    say({"admitted": [i for i in ids if i is not None]})


async def crash(url: str, data_dir: str) -> None:
    async with open_storage(url, data_dir) as storage:
        ledger = BudgetLedger(storage.ledger)
        say("ready")

        async def loop(lane: int) -> None:
            n = 0
            while True:
                n += 1
                r = await ledger.reserve(CRASH_SCOPES, 0.05, enforce=True, now=NOW, ttl_s=CRASH_TTL_S)
                cost_nanos = 1_000_000 * lane + n  # distinct, checkable amounts
                await ledger.settle(r.id, Decimal(cost_nanos).scaleb(-9), Usage(n, 1), {"model": "m"}, now=NOW)
                say({"settled": r.id, "cost_nanos": cost_nanos})

        await asyncio.gather(*(loop(lane) for lane in range(1, 9)))


def main(argv: list[str]) -> None:
    mode, url, data_dir, *rest = argv
    if mode == "hammer":
        asyncio.run(hammer(url, data_dir, rest[0], int(rest[1])))
    elif mode == "crash":
        asyncio.run(crash(url, data_dir))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
