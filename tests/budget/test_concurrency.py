"""Concurrent requests cannot overspend: the check and the record are one atomic step on every backend."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

from rhetor.budget import BudgetLedger, Reservation
from rhetor.errors import BudgetExceededError
from rhetor.storage import Storage
from rhetor.storage.memory import MemoryLedger
from rhetor.storage.records import BucketKey
from rhetor.types import Usage

NOW = datetime(2025, 5, 5, 15, 0, tzinfo=UTC)
LIMIT = 5.0
AMOUNT = 0.1  # exactly 50 fit
SCOPES = {"global": {"daily": LIMIT}, "component:c": {"monthly": 100.0}}
DAY = BucketKey("global", "daily", "2025-05-05")


async def attempt(ledger: BudgetLedger) -> Reservation | None:
    try:
        return await ledger.reserve(SCOPES, AMOUNT, enforce=True, now=NOW)
    except BudgetExceededError:
        return None


async def test_200_concurrent_reservations_admit_exactly_50(storage: Storage) -> None:
    ledger = BudgetLedger(storage.ledger)
    results = await asyncio.gather(*(attempt(ledger) for _ in range(200)))
    admitted = [r for r in results if r is not None]
    assert len(admitted) == 50
    totals = (await storage.ledger.totals([DAY]))[DAY]
    assert totals.spent_nanos + totals.reserved_nanos == 5_000_000_000
    assert len({r.id for r in admitted}) == 50
    crossed = [c.threshold for r in admitted for c in r.crossed if c.window == "daily"]
    assert sorted(crossed) == [0.8, 0.95]  # each threshold fired by exactly one of the concurrent requests


async def test_concurrent_reserve_settle_release_never_exceed_the_limit(storage: Storage) -> None:
    """Requests settle below, at or above their reservation, or fail: spend+reserved stays ≤ the limit while
    every admitted request settles at most its reservation."""
    ledger = BudgetLedger(storage.ledger)
    rng = random.Random(7)
    peak = 0

    async def request(i: int) -> float:
        nonlocal peak
        r = await attempt(ledger)
        if r is None:
            return 0.0
        t = (await storage.ledger.totals([DAY]))[DAY]
        peak = max(peak, t.spent_nanos + t.reserved_nanos)
        await asyncio.sleep(rng.random() / 1000)
        if i % 4 == 0:
            await ledger.release(r.id, now=NOW)
            return 0.0
        cost = rng.choice([0.0, 0.05, 0.1])
        await ledger.settle(r.id, cost, Usage(1, 1), now=NOW)
        return cost

    costs = await asyncio.gather(*(request(i) for i in range(120)))
    totals = (await storage.ledger.totals([DAY]))[DAY]
    assert totals.reserved_nanos == 0
    assert totals.spent_nanos == sum(round(c * 1e9) for c in costs)
    assert totals.spent_nanos <= 5_000_000_000 and peak <= 5_000_000_000


async def test_concurrent_settles_of_one_reservation_charge_once(storage: Storage) -> None:
    ledger = BudgetLedger(storage.ledger)
    r = await ledger.reserve(SCOPES, 1.0, enforce=True, now=NOW)
    results = await asyncio.gather(*(ledger.settle(r.id, 0.7, now=NOW) for _ in range(20)))
    assert sum(not s.already_settled for s in results) == 1
    totals = (await storage.ledger.totals([DAY]))[DAY]
    assert (totals.spent_nanos, totals.reserved_nanos) == (700_000_000, 0)


async def test_a_caller_cancelled_while_settling_or_releasing_still_lands_unless_it_says_it_is_shielded() -> None:
    """``settle`` and ``release`` run their storage operation where the caller's cancellation cannot stop it;
    ``in_shield=True`` (a caller that already runs so) leaves that to the caller, so there it can be stopped."""
    repo = MemoryLedger()
    ledger = BudgetLedger(repo)
    kept, released, dropped = [await ledger.reserve(SCOPES, AMOUNT, enforce=True, now=NOW) for _ in range(3)]
    async with repo._lock:  # noqa: SLF001 - the operations wait for the ledger meanwhile
        calls = [asyncio.ensure_future(ledger.settle(kept.id, 0.05, Usage(1, 2), now=NOW)),
                 asyncio.ensure_future(ledger.release(released.id, now=NOW)),
                 asyncio.ensure_future(ledger.settle(dropped.id, 0.05, Usage(1, 2), now=NOW, in_shield=True))]
        await asyncio.sleep(0)
        for call in calls:
            call.cancel()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)  # each caller saw its cancellation
    for _ in range(10):
        await asyncio.sleep(0)
    states = {r.id: (await repo.get(r.id)).state for r in (kept, released, dropped)}  # type: ignore[union-attr]
    assert states == {kept.id: "settled", released.id: "released", dropped.id: "reserved"}
