"""Property: any sequence of ledger operations keeps the buckets equal to the sum of the reservations, and an
enforced limit is never exceeded while requests cost at most what they reserved (and settle before expiring:
a late settle is charged whatever the limit, since the provider was paid)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from rhetor.budget import BudgetLedger
from rhetor.errors import BudgetExceededError
from rhetor.storage import ReservationStateError
from rhetor.storage.memory import MemoryLedger
from rhetor.storage.records import BucketKey

START = datetime(2025, 1, 31, 23, 0, tzinfo=UTC)
LIMIT_NANOS = 1_000_000_000
SCOPES = {"global": {"daily": 1.0, "monthly": 3.0}}
nanos = st.integers(min_value=0, max_value=400_000_000)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), nanos, st.integers(1, 600)),
        st.tuples(st.just("settle"), st.integers(0, 30), st.floats(0, 1)),
        st.tuples(st.just("release"), st.integers(0, 30)),
        st.tuples(st.just("advance"), st.integers(1, 1800)),
    ),
    max_size=60,
)


async def play(sequence: list[tuple]) -> None:
    repo = MemoryLedger()
    ledger = BudgetLedger(repo)
    now, ids, late = START, [], False
    for op, *args in sequence:
        if op == "reserve":
            try:
                r = await ledger.reserve(SCOPES, args[0] / 1e9, enforce=True, now=now, ttl_s=args[1])
                ids.append(r.id)
            except BudgetExceededError:
                pass
        elif op == "settle" and ids:
            rid = ids[args[0] % len(ids)]
            row = await repo.get(rid)
            assert row is not None
            try:
                s = await ledger.settle(rid, int(row.amount_nanos * args[1]) / 1e9, now=now)  # ≤ what was reserved
                late = late or s.was_expired
            except ReservationStateError:
                assert row.state == "released"
        elif op == "release" and ids:
            await ledger.release(ids[args[0] % len(ids)], now=now)
        elif op == "advance":
            now += timedelta(seconds=args[0])
            await ledger.reconcile(now)
        check(repo, limits_hold=not late)


def check(repo: MemoryLedger, *, limits_hold: bool) -> None:
    rows = list(repo.reservations.values())
    for key, totals in repo.buckets.items():
        mine = [r for r in rows if BucketKey(key.scope, key.window, r.window_keys[key.window]) == key]
        assert totals.reserved_nanos == sum(r.amount_nanos for r in mine if r.state == "reserved")
        assert totals.spent_nanos == sum(r.cost_nanos or 0 for r in mine if r.state == "settled")
        if key.window == "daily" and limits_hold:
            assert totals.committed_nanos <= LIMIT_NANOS


@settings(max_examples=200, deadline=None)
@given(ops)
def test_buckets_always_equal_the_reservations_and_limits_hold(sequence: list[tuple]) -> None:
    asyncio.run(play(sequence))
