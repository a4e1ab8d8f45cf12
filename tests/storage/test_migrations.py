"""Schema migrations: applied once, re-applying is a no-op, concurrent starts are safe, newer schemas refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from rhetor.storage import Storage, StorageError, StoredMessageIn, migrations
from rhetor.storage.sql_ledger import SqlStorage

TABLES = {"schema_version", "budget_buckets", "budget_reservations", "budget_thresholds"}
CONTENT_TABLES = {"contexts", "context_messages", "context_summaries", "templates", "prompts"}
APPLIED = [(1, "ledger"), (2, "content"), (3, "context_incarnation")]


async def versions(storage: Storage) -> list[tuple[int, str]]:
    assert isinstance(storage, SqlStorage)
    rows = await storage.fetch("SELECT version, name FROM schema_version ORDER BY version", ())
    return [(int(r["version"]), r["name"]) for r in rows]


async def tables(storage: Storage) -> set[str]:
    assert isinstance(storage, SqlStorage)
    if storage.kind == "sqlite":
        rows = await storage.fetch("SELECT name FROM sqlite_master WHERE type = 'table'", ())
    else:
        rows = await storage.fetch("SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'", ())
    return {r["name"] for r in rows}


def expected(kind: str) -> list[tuple[int, str]]:
    return [(m.version, m.name) for m in migrations.load("sqlite" if kind == "sqlite" else "postgres")]


async def test_migrations_apply_once_and_reapplying_is_a_no_op(make_durable_storage: Callable[[], Storage]) -> None:
    async with make_durable_storage() as st:
        assert await st.schema_version() == len(expected(st.kind)) == 3
        assert await versions(st) == expected(st.kind) == APPLIED
        assert TABLES | CONTENT_TABLES <= await tables(st)
        await st.start()  # already started: nothing happens
    for _ in range(2):
        async with make_durable_storage() as again:
            assert await versions(again) == expected(again.kind)
            assert await again.schema_version() == 3


async def test_concurrent_starts_apply_each_migration_once(make_durable_storage: Callable[[], Storage]) -> None:
    stores = [make_durable_storage() for _ in range(4)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        for s in stores:
            assert await versions(s) == APPLIED
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_ledger_only_database_is_upgraded_in_place(
    make_durable_storage: Callable[[], Storage], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_load = migrations.load
    with monkeypatch.context() as m:  # a Rhetor that knew only 001_ledger created the database
        m.setattr(migrations, "load", lambda dialect: real_load(dialect)[:1])
        async with make_durable_storage() as old:
            assert await versions(old) == [(1, "ledger")] and not CONTENT_TABLES & await tables(old)
            await _execute(old, "INSERT INTO budget_buckets (scope, win, win_key, spent_nanos) "
                                "VALUES ('global', 'daily', 'd', 42)")
    async with make_durable_storage() as new:
        assert await versions(new) == APPLIED and CONTENT_TABLES <= await tables(new)
        assert isinstance(new, SqlStorage)
        rows = await new.fetch("SELECT spent_nanos FROM budget_buckets WHERE scope = 'global'", ())
        assert [r["spent_nanos"] for r in rows] == [42]  # the ledger's data is untouched
        assert [m.seq for m in await new.contexts.append("a:b", [StoredMessageIn("user", "hi", 1)])] == [1]


async def test_a_schema_newer_than_this_rhetor_is_refused(make_durable_storage: Callable[[], Storage]) -> None:
    async with make_durable_storage() as st:
        await _execute(st, "INSERT INTO schema_version (version, name, applied_at) "
                           "VALUES (99, 'future', '2030-01-01T00:00:00.000000Z')")
    newer = make_durable_storage()
    with pytest.raises(StorageError, match="schema version 99, newer"):
        await newer.start()
    await newer.close()


async def _execute(st: Storage, sql: str) -> None:
    if st.kind == "sqlite":
        async with st.transaction() as conn:  # type: ignore[attr-defined]
            await conn.execute(sql)
    else:
        async with st._pool_or_fail().acquire() as conn:  # type: ignore[attr-defined]
            await conn.execute(sql)


def test_statements_split_and_drop_comments() -> None:
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (x INT); -- trailing\n\nCREATE INDEX i ON a (x);\n"
    assert migrations.statements(sql) == ["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]


def test_both_dialects_have_the_same_numbered_migrations() -> None:
    assert [(m.version, m.name) for m in migrations.load("sqlite")] == [
        (m.version, m.name) for m in migrations.load("postgres")
    ]
