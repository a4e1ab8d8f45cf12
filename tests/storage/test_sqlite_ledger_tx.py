"""SQLite runs each ledger operation as one synchronous transaction on its connection's thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from rhetor.storage import _rows
from rhetor.storage import sqlite as sqlite_mod
from rhetor.storage._sqlite_batch import run_batch
from rhetor.storage.records import BucketKey, BucketLimit, BucketTotals, ReserveRequest, SettleRequest
from rhetor.storage.sqlite import SQLiteStorage

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = BucketKey("global", "daily", "2026-01-01")


def _reserve(rid: str, amount: int = 100) -> ReserveRequest:
    return ReserveRequest(
        id=rid, amount_nanos=amount, buckets=(BucketLimit(KEY, 1_000),),
        window_keys={"daily": KEY.key, "weekly": "2026-W01", "monthly": "2026-01"}, enforce=True,
        created_at=T0, expires_at=T0 + timedelta(minutes=5), thresholds_ppm=(500_000,),
    )


def _settle(rid: str, cost: int = 60) -> SettleRequest:
    return SettleRequest(
        id=rid, cost_nanos=cost, input_tokens=1, output_tokens=2, cache_read_tokens=0, cache_write_tokens=0,
        attrs={}, extra={}, settled_at=T0 + timedelta(seconds=1), thresholds_ppm=(500_000,),
    )


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    st = SQLiteStorage(tmp_path / "ledger.sqlite3")
    await st.start()
    try:
        yield st
    finally:
        await st.close()


def _in_transaction(storage: SQLiteStorage) -> bool:
    return storage._connection()._conn.in_transaction  # type: ignore[no-any-return]


async def test_each_ledger_operation_is_one_thread_round_trip(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    real = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    for run in (
        lambda: storage.ledger.reserve(_reserve("a")),
        lambda: storage.ledger.settle(_settle("a")),
        lambda: storage.ledger.reserve(_reserve("b")),
        lambda: storage.ledger.release("b", T0),
        lambda: storage.ledger.reserve(_reserve("c")),
        lambda: storage.ledger.expire(T0 + timedelta(hours=1)),
    ):
        calls.clear()
        await run()
        assert calls == [run_batch]
    assert (await storage.ledger.totals([KEY]))[KEY] == BucketTotals(60, 0)


async def test_an_error_inside_the_transaction_rolls_all_of_it_back(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(self: Any, row: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sqlite_mod._SQLiteTx, "insert_reservation", boom)  # after the buckets were updated
    with pytest.raises(RuntimeError, match="disk on fire"):
        await storage.ledger.reserve(_reserve("a"))
    monkeypatch.undo()
    assert not _in_transaction(storage)
    assert await storage.ledger.get("a") is None
    assert (await storage.ledger.totals([KEY]))[KEY] == BucketTotals(0, 0)
    assert (await storage.ledger.reserve(_reserve("b"))).admitted


async def test_a_caller_cancelled_mid_transaction_leaves_nothing_open(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sqlite_mod._SQLiteTx.insert_reservation

    async def slow(self: Any, row: Any) -> None:
        time.sleep(0.2)  # on the SQLite thread, inside BEGIN IMMEDIATE
        await real(self, row)

    monkeypatch.setattr(sqlite_mod._SQLiteTx, "insert_reservation", slow)
    task = asyncio.create_task(storage.ledger.reserve(_reserve("a")))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    # The next operation queues behind the running transaction, which completes as a unit.
    assert (await storage.ledger.reserve(_reserve("b"))).admitted
    assert not _in_transaction(storage)
    assert (await storage.ledger.get("a")) is not None
    assert (await storage.ledger.totals([KEY]))[KEY] == BucketTotals(0, 200)


async def test_a_caller_cancelled_before_its_turn_runs_nothing(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sqlite_mod._SQLiteTx.insert_reservation

    async def slow(self: Any, row: Any) -> None:
        if row.id == "a":
            time.sleep(0.3)
        await real(self, row)

    monkeypatch.setattr(sqlite_mod._SQLiteTx, "insert_reservation", slow)
    first = asyncio.create_task(storage.ledger.reserve(_reserve("a")))
    await asyncio.sleep(0.05)
    first.cancel()  # releases the storage lock while "a" still runs on the thread
    second = asyncio.create_task(storage.ledger.reserve(_reserve("b")))
    await asyncio.sleep(0.05)  # "b" is queued behind "a" on the thread
    second.cancel()
    for task in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (await storage.ledger.reserve(_reserve("c"))).admitted
    assert not _in_transaction(storage)
    assert [await storage.ledger.get(r) is not None for r in "abc"] == [True, False, True]
    assert (await storage.ledger.totals([KEY]))[KEY] == BucketTotals(0, 200)


def test_drive_refuses_a_coroutine_that_suspends() -> None:
    async def suspends() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="suspended"):
        sqlite_mod._drive(suspends())


@pytest.mark.parametrize("at", [
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 6, 1, 1, 30, 0, 5, tzinfo=timezone(timedelta(hours=2))),
    datetime(2027, 1, 1, 0, 59, 0, 120, tzinfo=timezone(timedelta(hours=1, minutes=30))),  # back across a year
    datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=timezone(timedelta(0))),  # UTC, but not the ``UTC`` object
    datetime(1999, 9, 9, 9, 9, 9, 0, tzinfo=UTC),
])
def test_sqlite_time_text_is_fixed_width_utc_and_round_trips(at: datetime) -> None:
    """The fast isoformat/fromisoformat pair writes exactly the ``_SQLITE_TIME`` text (text order = time order)."""
    text = _rows.to_sqlite_time(at)
    assert text == at.astimezone(UTC).strftime(_rows._SQLITE_TIME)  # noqa: SLF001
    assert len(text) == len("2026-01-02T03:04:05.000000Z")
    assert text == at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    back = _rows.from_sqlite_time(text)
    assert back == at and back.tzinfo == UTC
