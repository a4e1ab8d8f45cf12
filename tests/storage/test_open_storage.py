"""Choosing a backend by URL, and never leaking a database password."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rhetor.budget import BudgetLedger
from rhetor.storage import StorageError, StorageUnavailableError, open_storage, redact_url
from rhetor.storage.memory import MemoryStorage
from rhetor.storage.postgres import PostgresStorage
from rhetor.storage.sqlite import SQLiteStorage

SECRET = "s3cr3t-pa55"


async def test_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet"
    st = open_storage(None, data_dir)
    assert isinstance(st, SQLiteStorage) and st.path == data_dir / "rhetor.sqlite3"
    async with st:
        assert (data_dir / "rhetor.sqlite3").exists()
    with sqlite3.connect(data_dir / "rhetor.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert isinstance(open_storage("", data_dir), SQLiteStorage)


def test_schemes_choose_the_backend(tmp_path: Path) -> None:
    absolute = open_storage(f"sqlite:///{tmp_path}/x.db", "/elsewhere")
    assert isinstance(absolute, SQLiteStorage) and absolute.path == tmp_path / "x.db"
    relative = open_storage("sqlite://sub/y.db", tmp_path)
    assert isinstance(relative, SQLiteStorage) and relative.path == tmp_path / "sub" / "y.db"
    assert isinstance(open_storage("memory://", tmp_path), MemoryStorage)
    for url in (f"postgresql://rhetor:{SECRET}@db:5432/rhetor", f"postgres://rhetor:{SECRET}@db/rhetor"):
        pg = open_storage(url, tmp_path)
        assert isinstance(pg, PostgresStorage)
        assert SECRET not in pg.describe() and SECRET not in repr(pg) and "rhetor:***@db" in pg.describe()


def test_unsupported_schemes_are_refused_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsupported database URL") as info:
        open_storage(f"mysql://root:{SECRET}@localhost/db", tmp_path)
    assert SECRET not in str(info.value) and SECRET not in str(info.value.to_dict())
    with pytest.raises(StorageError, match="names no file"):
        open_storage("sqlite://", tmp_path)


def test_an_sqlite_url_may_ask_for_synchronous_normal(tmp_path: Path) -> None:
    normal = open_storage(f"sqlite:///{tmp_path}/x.db?synchronous=normal", "/elsewhere")
    assert isinstance(normal, SQLiteStorage) and normal.path == tmp_path / "x.db" and normal.synchronous == "normal"
    assert normal.describe() == f"sqlite://{tmp_path}/x.db?synchronous=normal"
    again = open_storage(normal.describe(), "/elsewhere")  # what the log shows opens the same storage
    assert isinstance(again, SQLiteStorage) and (again.path, again.synchronous) == (normal.path, "normal")
    for url in (f"sqlite:///{tmp_path}/x.db", f"sqlite:///{tmp_path}/x.db?synchronous=FULL", f"sqlite:///{tmp_path}/x.db?"):
        full = open_storage(url, tmp_path)
        assert isinstance(full, SQLiteStorage) and full.path == tmp_path / "x.db" and full.synchronous == "full"
    relative = open_storage("sqlite://sub/y.db?synchronous=Normal", tmp_path)
    assert isinstance(relative, SQLiteStorage) and relative.path == tmp_path / "sub" / "y.db"
    assert relative.synchronous == "normal"


@pytest.mark.parametrize(
    ("query", "message", "details"),
    [
        ("synchronous=off", "synchronous must be one of full, normal, not 'off'",
         {"option": "synchronous", "value": "off", "allowed": ["full", "normal"]}),
        ("synchronous", "synchronous must be one of full, normal, not ''",
         {"option": "synchronous", "value": "", "allowed": ["full", "normal"]}),
        ("journal_mode=delete", "unknown SQLite option 'journal_mode' (known: synchronous)",
         {"option": "journal_mode", "known": ["synchronous"]}),
    ],
)
def test_an_unknown_sqlite_option_or_value_is_refused_by_name(tmp_path: Path, query: str, message: str,
                                                             details: dict[str, object]) -> None:
    with pytest.raises(StorageError) as info:
        open_storage(f"sqlite:///{tmp_path}/x.db?{query}", tmp_path)
    assert message in str(info.value) and f"x.db?{query}" in str(info.value)
    assert info.value.details == details
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{SECRET}@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (f"postgresql://u@h/db?sslmode=require&password={SECRET}", "postgresql://u@h/db?sslmode=require&password=***"),
        (f"postgres://u:{SECRET}@[::1]:6543/db", "postgres://u:***@[::1]:6543/db"),
        ("sqlite:///var/lib/rhetor.db", "sqlite:///var/lib/rhetor.db"),
        (f"postgresql://u:{SECRET}@h:port/db", "<unparseable database URL>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_unreachable_postgres_error_and_logs_hide_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    st = open_storage(f"postgresql://rhetor:{SECRET}@127.0.0.1:1/rhetor", tmp_path)
    with pytest.raises(StorageUnavailableError) as info:
        await st.start()
    err = info.value
    assert "postgresql://rhetor:***@127.0.0.1:1/rhetor" in str(err) and err.status == 503
    chain = [err, err.__cause__, err.__context__]
    assert all(SECRET not in str(e) for e in chain) and err.__suppress_context__
    assert SECRET not in caplog.text
    await st.close()


async def test_sqlite_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailableError, match="cannot open SQLite database"):
        await open_storage(f"sqlite:///{blocker}/db.sqlite3", tmp_path).start()


@pytest.mark.parametrize("url", ["sqlite://db.sqlite3", "postgresql://u@127.0.0.1:1/db"])
async def test_a_storage_that_is_not_started_says_so(tmp_path: Path, url: str) -> None:
    ledger = BudgetLedger(open_storage(url, tmp_path).ledger)
    with pytest.raises(StorageError, match="not started"):
        await ledger.reserve({"global": {}}, 1, enforce=True, now=datetime(2025, 1, 1, tzinfo=UTC))
