"""SQLite group commit: operations queued together share one transaction (and one COMMIT), each in its own
savepoint, and no caller hears back before that COMMIT."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from rhetor.storage import StoredMessageIn, _sqlite_batch
from rhetor.storage import sqlite as sqlite_mod
from rhetor.storage.base import StorageError
from rhetor.storage.records import BucketTotals
from rhetor.storage.sql_content import ContentTx
from rhetor.storage.sqlite import SQLiteStorage
from tests.storage.test_sqlite_ledger_tx import KEY, _reserve, _settle
from tests.storage.test_sqlite_ledger_tx import storage as storage  # the started SQLiteStorage fixture


def _raw(storage: SQLiteStorage) -> sqlite3.Connection:
    return storage._connection()._conn  # type: ignore[no-any-return]  # noqa: SLF001


async def _trace(storage: SQLiteStorage) -> list[str]:
    """Every statement the connection runs from now on (SQLite's own trace callback, on its thread)."""
    seen: list[str] = []
    conn = storage._connection()  # noqa: SLF001
    await conn._execute(_raw(storage).set_trace_callback, seen.append)  # noqa: SLF001
    return seen


def _hold_first(monkeypatch: pytest.MonkeyPatch, rid: str, seconds: float = 0.3) -> None:
    """Reservation ``rid`` sleeps on the SQLite thread, inside its transaction: what is submitted meanwhile queues."""
    real = sqlite_mod._SQLiteTx.insert_reservation

    async def slow(self: Any, row: Any) -> None:
        if row.id == rid:
            time.sleep(seconds)
        await real(self, row)

    monkeypatch.setattr(sqlite_mod._SQLiteTx, "insert_reservation", slow)


async def test_operations_queued_together_share_one_transaction(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hold_first(monkeypatch, "first")
    seen = await _trace(storage)
    first = asyncio.create_task(storage.ledger.reserve(_reserve("first", 10)))
    await asyncio.sleep(0.05)  # "first" runs alone; the next twelve queue behind it
    rest = [asyncio.create_task(storage.ledger.reserve(_reserve(f"r{i}", 10))) for i in range(12)]
    outcomes = await asyncio.gather(first, *rest)
    assert all(o.admitted for o in outcomes)
    assert [s for s in seen if s.startswith(("BEGIN", "COMMIT"))] == ["BEGIN IMMEDIATE", "COMMIT"] * 2
    assert sum(s.startswith("SAVEPOINT") for s in seen) == 12  # one per operation of the shared batch
    assert (await storage.ledger.totals([KEY]))[KEY] == BucketTotals(0, 130)
    # settling all of them concurrently is exact too
    ids = ["first"] + [f"r{i}" for i in range(12)]
    settled = await asyncio.gather(*(storage.ledger.settle(_settle(r, 7)) for r in ids))
    assert [(s.reservation.state, s.already_settled) for s in settled] == [("settled", False)] * 13
    assert (await storage.ledger.totals([KEY]))[KEY] == BucketTotals(91, 0)


async def test_a_failing_operation_is_rolled_back_alone_and_the_rest_of_its_batch_commits(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hold_first(monkeypatch, "a")
    real = sqlite_mod._SQLiteTx.insert_reservation

    async def failing(self: Any, row: Any) -> None:
        if row.id == "c":  # after its buckets were updated: the savepoint must undo that
            raise RuntimeError("disk on fire")
        await real(self, row)

    first = asyncio.create_task(storage.ledger.reserve(_reserve("a")))
    await asyncio.sleep(0.05)
    monkeypatch.setattr(sqlite_mod._SQLiteTx, "insert_reservation", failing)
    queued = [asyncio.create_task(storage.ledger.reserve(_reserve(r))) for r in "bcd"]
    results = await asyncio.gather(first, *queued, return_exceptions=True)
    monkeypatch.undo()
    seen = [type(r).__name__ if isinstance(r, BaseException) else r.admitted for r in results]
    assert seen == [True, True, "RuntimeError", True]
    assert [await storage.ledger.get(r) is not None for r in "abcd"] == [True, True, False, True]
    assert (await storage.ledger.totals([KEY]))[KEY] == BucketTotals(0, 300)
    assert not _raw(storage).in_transaction


async def test_a_batch_whose_transaction_is_lost_fails_every_operation_in_it(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When SQLite ends the transaction itself (as after an I/O error), nothing of the batch was committed, so
    no caller of the batch may be told its operation succeeded."""
    _hold_first(monkeypatch, "a")

    async def lose_the_transaction(tx: ContentTx) -> None:
        await tx.execute("ROLLBACK")
        raise sqlite3.OperationalError("disk I/O error")

    first = asyncio.create_task(storage.ledger.reserve(_reserve("a")))
    await asyncio.sleep(0.05)
    queued = [
        asyncio.create_task(storage.ledger.reserve(_reserve("b"))),
        asyncio.create_task(storage.run_content(lose_the_transaction)),
        asyncio.create_task(storage.ledger.reserve(_reserve("c"))),
    ]
    results = await asyncio.gather(first, *queued, return_exceptions=True)
    assert results[0].admitted
    assert all(isinstance(r, _sqlite_batch.TransactionLost) for r in results[1:]), results
    assert [await storage.ledger.get(r) is not None for r in "abc"] == [True, False, False]
    assert (await storage.ledger.totals([KEY]))[KEY] == BucketTotals(0, 100)
    assert not _raw(storage).in_transaction
    assert (await storage.ledger.reserve(_reserve("d"))).admitted  # the storage goes on


async def test_a_read_alone_runs_in_a_snapshot_that_commits_nothing(storage: SQLiteStorage) -> None:
    await storage.contexts.append("c:1", [StoredMessageIn("user", "hi", 2)])
    seen = await _trace(storage)
    ctx = await storage.contexts.load("c:1")
    assert ctx is not None and [m.content for m in ctx.messages] == ["hi"]
    assert [s for s in seen if s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))] == ["BEGIN", "ROLLBACK"]


async def test_close_answers_every_queued_operation_and_they_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "close.sqlite3"
    st = SQLiteStorage(path)
    await st.start()
    pending = [asyncio.create_task(st.ledger.reserve(_reserve(f"x{i}", 5))) for i in range(20)]
    await asyncio.sleep(0)  # all queued, none answered yet
    await st.close()
    assert all(t.done() and t.result().admitted for t in pending)
    async with SQLiteStorage(path) as again:
        assert (await again.ledger.totals([KEY]))[KEY] == BucketTotals(0, 100)


def _sync_and_tx(seen: list[str]) -> list[str]:
    return [s for s in seen if s.startswith(("PRAGMA synchronous", "BEGIN", "COMMIT"))]


async def _synchronous(storage: SQLiteStorage) -> int:
    async with storage._read() as conn:  # noqa: SLF001
        return int(next(iter(await conn.execute_fetchall("PRAGMA synchronous")))[0])


async def test_only_reservations_and_releases_skip_the_fsync(storage: SQLiteStorage) -> None:
    """A reservation (or its release) alone commits with synchronous=NORMAL: kept through a kill -9, and after
    a power cut reconciliation would have released it anyway. Spend and conversations commit with FULL."""
    seen = await _trace(storage)
    assert (await storage.ledger.reserve(_reserve("a"))).admitted
    assert _sync_and_tx(seen) == ["PRAGMA synchronous = NORMAL", "BEGIN IMMEDIATE", "COMMIT"]
    assert await _synchronous(storage) == 1  # NORMAL
    seen.clear()
    await storage.ledger.settle(_settle("a"))
    assert _sync_and_tx(seen) == ["PRAGMA synchronous = FULL", "BEGIN IMMEDIATE", "COMMIT"]
    assert await _synchronous(storage) == 2  # FULL
    seen.clear()
    await storage.ledger.reserve(_reserve("b"))
    assert await storage.ledger.release("b", _reserve("b").created_at)
    await storage.contexts.append("c:1", [StoredMessageIn("user", "hi", 2)])
    assert _sync_and_tx(seen) == ["PRAGMA synchronous = NORMAL", "BEGIN IMMEDIATE", "COMMIT",
                                  "BEGIN IMMEDIATE", "COMMIT",
                                  "PRAGMA synchronous = FULL", "BEGIN IMMEDIATE", "COMMIT"]


async def test_a_batch_holding_spend_commits_with_the_fsync(storage: SQLiteStorage,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    await storage.ledger.reserve(_reserve("s"))
    _hold_first(monkeypatch, "a")
    seen = await _trace(storage)
    first = asyncio.create_task(storage.ledger.reserve(_reserve("a")))
    await asyncio.sleep(0.05)  # "a" runs alone (no fsync); a reservation and a settlement queue behind it
    queued = [asyncio.create_task(storage.ledger.reserve(_reserve("b"))),
              asyncio.create_task(storage.ledger.settle(_settle("s")))]
    await asyncio.gather(first, *queued)
    assert _sync_and_tx(seen) == ["BEGIN IMMEDIATE", "COMMIT", "PRAGMA synchronous = FULL", "BEGIN IMMEDIATE", "COMMIT"]
    assert sum(s.startswith("SAVEPOINT") for s in seen) == 2  # both in the second batch
    assert (await storage.ledger.totals([KEY]))[KEY] == BucketTotals(60, 200)


async def test_schema_changes_and_plain_transactions_commit_with_the_fsync(storage: SQLiteStorage) -> None:
    await storage.ledger.reserve(_reserve("a"))  # leaves the connection at NORMAL
    async with storage.transaction() as conn:
        await conn.execute("CREATE TABLE scratch (x INTEGER)")
    assert await _synchronous(storage) == 2


async def test_when_the_drainer_is_cancelled_its_callers_get_a_storage_error_not_a_cancellation(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when the loop shuts down under load: nobody waits forever, nobody who was not cancelled sees a
    cancellation, and each caller learns whether its operation may have run."""
    _hold_first(monkeypatch, "a")
    first = asyncio.create_task(storage.ledger.reserve(_reserve("a")))
    await asyncio.sleep(0.05)  # "a" runs on the thread in the drainer's batch
    queued = asyncio.create_task(storage.ledger.reserve(_reserve("b")))
    await asyncio.sleep(0)
    storage._batcher._drainer.cancel()  # type: ignore[union-attr]  # noqa: SLF001
    with pytest.raises(StorageError, match="may or may not have been committed"):
        await first
    with pytest.raises(StorageError, match="stopped before this operation ran"):
        await queued
    await asyncio.sleep(0.4)  # "a" completes on the thread as a unit
    assert [await storage.ledger.get(r) is not None for r in "ab"] == [True, False]
    assert (await storage.ledger.reserve(_reserve("c"))).admitted  # a new drainer serves what comes next


async def test_a_drainer_cancelled_before_it_ever_ran_still_answers_its_queue(storage: SQLiteStorage) -> None:
    pending = asyncio.create_task(storage.ledger.reserve(_reserve("x")))
    await asyncio.sleep(0)  # queued; its drainer task is created but has not run yet
    storage._batcher._drainer.cancel()  # type: ignore[union-attr]  # noqa: SLF001
    with pytest.raises(StorageError, match="stopped before this operation ran"):
        await asyncio.wait_for(pending, 5)
    assert await storage.ledger.get("x") is None
    assert (await storage.ledger.reserve(_reserve("y"))).admitted


async def test_opened_with_synchronous_normal_no_commit_takes_the_fsync(tmp_path: Path) -> None:
    """``sqlite:///path?synchronous=normal``: spend, conversations and schema changes commit with NORMAL too, and
    the connection is never switched back and forth (survives a kill -9: the durable tests run against it)."""
    async with SQLiteStorage(tmp_path / "normal.sqlite3", synchronous="normal") as st:
        assert await _synchronous(st) == 1
        seen = await _trace(st)
        await st.ledger.reserve(_reserve("a"))
        await st.ledger.settle(_settle("a"))
        await st.contexts.append("c:1", [StoredMessageIn("user", "hi", 2)])
        async with st.transaction() as conn:
            await conn.execute("CREATE TABLE scratch (x INTEGER)")
        assert not [s for s in seen if s.startswith("PRAGMA synchronous")]
        assert [s for s in seen if s.startswith("COMMIT")] == ["COMMIT"] * 4  # each committed, without a switch
        assert await _synchronous(st) == 1
        assert (await st.ledger.get("a")).state == "settled"  # type: ignore[union-attr]
        assert st.describe().endswith("normal.sqlite3?synchronous=normal")


def test_synchronous_takes_full_or_normal_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'full' or 'normal'"):
        SQLiteStorage(tmp_path / "x.sqlite3", synchronous="off")  # type: ignore[arg-type]
    assert SQLiteStorage(tmp_path / "x.sqlite3").describe() == f"sqlite://{tmp_path / 'x.sqlite3'}"


def _wal_frames(db: Path, page_size: int) -> int:
    """Frames the WAL file has room for: it is reused from its start after a checkpoint, never shrunk, so this is
    the most the WAL ever held."""
    wal = db.with_name(db.name + "-wal")
    return max(0, (wal.stat().st_size - 32) // (page_size + 24)) if wal.exists() else 0


async def test_the_wal_is_copied_back_at_rhetors_mark_not_at_sqlites_1000_pages(tmp_path: Path) -> None:
    db = tmp_path / "wal.sqlite3"
    st = SQLiteStorage(db, synchronous="normal")  # the mark does not depend on the fsync; this is faster
    await st.start()
    try:
        page_size = (await st.fetch("PRAGMA page_size", ()))[0][0]
        fresh = db.stat().st_size
        n = 0
        while _wal_frames(db, page_size) < 1_500 and n < 5_000:
            await st.ledger.reserve(_reserve(f"a{n}", 0))
            n += 1
        assert _wal_frames(db, page_size) >= 1_500  # at SQLite's default mark the WAL would have restarted by now
        per_op = _wal_frames(db, page_size) / n
        for i in range(int(2.5 * sqlite_mod.WAL_AUTOCHECKPOINT_PAGES / per_op)):  # 2.5 marks' worth of pages more
            await st.ledger.reserve(_reserve(f"b{i}", 0))
        # copied back and restarted at the mark: without checkpoints the WAL would hold ~3.5 marks by now
        assert _wal_frames(db, page_size) <= sqlite_mod.WAL_AUTOCHECKPOINT_PAGES + 64
        assert db.stat().st_size > fresh + 100 * page_size  # what was copied back: the new reservations' pages
    finally:
        await st.close()
