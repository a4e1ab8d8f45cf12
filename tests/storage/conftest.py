"""Storage fixtures: a backend per test (memory, SQLite, PostgreSQL), Litestar style.

PostgreSQL: every test that needs it gets its own fresh database ``rhetor_test_<random>``, dropped after.
When the server (``RHETOR_TEST_PG_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``) is
unreachable, those tests are skipped — except when ``CI`` is true, where they fail: CI must never pass
by silently not testing PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rhetor.storage import Storage, open_storage

ADMIN_URL = os.environ.get("RHETOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def run_sync(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to completion on its own loop in another thread (usable from sync fixtures)."""

    async def main() -> Any:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _db_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_available() -> bool:
    try:
        run_sync(lambda: _admin("SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        message = f"PostgreSQL is unreachable at {ADMIN_URL}: {type(exc).__name__}: {exc}"
        if _ci():
            pytest.fail(f"{message} (CI is set: PostgreSQL tests must run, not skip)", pytrace=False)
        pytest.skip(message)
    return True


@pytest.fixture
def pg_url(pg_available: bool) -> Iterator[str]:
    """A fresh, empty database for this test; dropped afterwards."""
    name = f"rhetor_test_{uuid.uuid4().hex[:12]}"
    run_sync(lambda: _admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _db_url(name)
    finally:
        run_sync(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DURABLE = ["sqlite", "sqlite-normal", pytest.param("postgres", marks=pytest.mark.postgres)]
"""``sqlite-normal``: SQLite opened with ``?synchronous=normal`` (no fsync per commit), which must keep the same
promises short of a power cut: every durable test (the ``kill -9`` ones included) runs against it too."""


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'ledger.sqlite3'}"
    if kind == "sqlite-normal":
        return f"sqlite://{tmp_path / 'ledger.sqlite3'}?synchronous=normal"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh ledger location: ``memory://``, an SQLite file, or a fresh PostgreSQL database."""
    return _url(request.param, request, tmp_path)


@pytest.fixture(params=DURABLE)
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Like ``backend_url``, for the backends that persist (SQLite, PostgreSQL)."""
    return _url(request.param, request, tmp_path)


@pytest.fixture
def make_storage(backend_url: str, tmp_path: Path) -> Callable[[], Storage]:
    """Makes unstarted storages that all share one location (so a test can 'restart' its storage)."""
    return lambda: open_storage(backend_url, tmp_path)


@pytest.fixture
def make_durable_storage(durable_url: str, tmp_path: Path) -> Callable[[], Storage]:
    return lambda: open_storage(durable_url, tmp_path)


@pytest.fixture
async def storage(make_storage: Callable[[], Storage]) -> Any:
    async with make_storage() as st:
        yield st
