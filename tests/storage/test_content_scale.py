"""Content at scale (a 10,000-message context, listings computed by aggregates) and across restarts."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rhetor.storage import PromptRecord, Storage, StoredMessageIn, TemplateRecord
from rhetor.storage.sql_content import ContentTx
from rhetor.storage.sql_ledger import SqlStorage
from rhetor.storage.sqlite import SQLiteStorage

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


class _SpyTx(ContentTx):
    """Forwards to a real transaction, recording every statement and the columns of the rows it returned."""

    def __init__(self, tx: ContentTx, seen: list[tuple[str, set[str]]]) -> None:
        self._tx, self._seen = tx, seen

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        rows = await self._tx.fetch(sql, params)
        self._seen.append((sql, {k for r in rows for k in r.keys()}))  # sqlite3.Row iterates values
        return rows

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        self._seen.append((sql, set()))
        return await self._tx.execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._seen.append((sql, set()))
        await self._tx.executemany(sql, rows)

    async def lock(self, key: str) -> None:
        await self._tx.lock(key)


def spy_on(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, set[str]]]:
    seen: list[tuple[str, set[str]]] = []
    if isinstance(storage, SqlStorage):
        real = storage.run_content  # every content repository operation goes through it (SQLite: one thread hop)

        async def run_content(op: Callable[[ContentTx], Awaitable[Any]], *, write: bool = True) -> Any:
            async def spied(tx: ContentTx) -> Any:
                return await op(_SpyTx(tx, seen))

            return await real(spied, write=write)

        monkeypatch.setattr(storage, "run_content", run_content)
    return seen


async def test_a_ten_thousand_message_context_loads_whole_and_in_order(storage: Storage) -> None:
    started = time.monotonic()
    for batch in range(4):
        msgs = [StoredMessageIn("user" if i % 2 == 0 else "assistant", f"m{batch * 2500 + i + 1}", i % 13)
                for i in range(2500)]
        stored = await storage.contexts.append("big:1", msgs, now=NOW + timedelta(seconds=batch))
        assert (stored[0].seq, stored[-1].seq) == (batch * 2500 + 1, (batch + 1) * 2500)
    ctx = await storage.contexts.load("big:1")
    assert ctx is not None and len(ctx.messages) == 10_000
    assert [m.seq for m in ctx.messages] == list(range(1, 10_001))
    assert all(m.content == f"m{m.seq}" for m in ctx.messages)
    assert ctx.last_activity == NOW + timedelta(seconds=3)
    (info,) = await storage.contexts.list()
    assert (info.message_count, info.tokens) == (10_000, ctx.tokens)
    assert time.monotonic() - started < 30


async def test_listing_many_contexts_aggregates_without_reading_messages(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {}
    for i in range(120):
        count = i % 7 + 1
        await storage.contexts.append(
            f"c{i % 3}:{i:03d}", [StoredMessageIn("user", "body " * 50, i + k) for k in range(count)],
            now=NOW + timedelta(seconds=i),
        )
        expected[f"c{i % 3}:{i:03d}"] = (count, sum(i + k for k in range(count)))
    seen = spy_on(storage, monkeypatch)
    pages = [await storage.contexts.list(limit=50, offset=o) for o in (0, 50, 100)]
    listed = [c for page in pages for c in page]
    assert [c.id for c in listed] == sorted(expected, key=lambda cid: int(cid.split(":")[1]), reverse=True)
    assert {c.id: (c.message_count, c.tokens) for c in listed} == expected
    by_component = await storage.contexts.list(component="c1", limit=1000)
    assert {c.id for c in by_component} == {cid for cid in expected if cid.startswith("c1:")}
    if isinstance(storage, SqlStorage):
        assert len(seen) == 4  # one aggregate query per listing
        assert all("content" not in columns for _, columns in seen)
        assert all("COUNT(" in sql and "SUM(" in sql for sql, _ in seen)


async def test_content_survives_a_restart(make_durable_storage: Callable[[], Storage]) -> None:
    async with make_durable_storage() as first:
        await first.contexts.append("keep:1", [StoredMessageIn("user", "hi", 1), StoredMessageIn("assistant", "yo", 2)],
                                    now=NOW)
        await first.contexts.append("keep:1", [StoredMessageIn("user", "more", 3)], now=NOW + timedelta(seconds=1))
        await first.contexts.put_summary("keep:1", upto_seq=2, text="greetings", tokens=4, now=NOW)
        before = await first.contexts.load("keep:1")
        template = await first.templates.put(TemplateRecord("t", "{x}", ["x"], {}, "d", {"k": [1, {"a": None}]}),
                                             now=NOW)
        prompt = await first.prompts.put(PromptRecord("", "keep", "p", "c", tags=["x"], is_default=True), now=NOW)

    async with make_durable_storage() as second:
        after = await second.contexts.load("keep:1")
        assert after == before and after is not None and len(after.messages) == 3
        assert await second.templates.get("t") == template
        assert await second.prompts.default_for("keep") == prompt
        more = await second.contexts.append("keep:1", [StoredMessageIn("assistant", "ok", 1)], now=NOW)
        assert [m.seq for m in more] == [4]  # numbering continues where it stopped


async def test_sqlite_content_operations_take_one_thread_round_trip_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a context (three statements in one snapshot) hops to SQLite's thread once, not per statement."""
    async with SQLiteStorage(tmp_path / "hops.sqlite3") as storage:
        await _count_hops(storage, monkeypatch)


async def _count_hops(storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    await storage.contexts.append("hop:1", [StoredMessageIn("user", "hi", 3), StoredMessageIn("assistant", "yo", 3)])
    conn = storage._conn  # noqa: SLF001
    hops: list[object] = []
    real = conn._execute

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(conn, "_execute", counting)
    ctx = await storage.contexts.load("hop:1")
    assert ctx is not None and [m.content for m in ctx.messages] == ["hi", "yo"]
    assert len(hops) == 1
    await storage.contexts.append("hop:1", [StoredMessageIn("user", "again", 4)])
    assert len(hops) == 2
    assert await storage.prompts.default_for("nobody") is None
    assert len(hops) == 3
