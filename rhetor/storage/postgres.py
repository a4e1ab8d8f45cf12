"""PostgreSQL storage (``RHETOR_DATABASE_URL=postgresql://...``): several Rhetor replicas share one ledger.

Atomicity across replicas: each ledger operation is one READ COMMITTED transaction that locks the rows
it depends on with ``SELECT ... FOR UPDATE`` — the reservation row first (settle, release, expire), then
the per-(scope, window, key) bucket rows, always in (scope, window, key) order. The check and the write
run under those locks, so two replicas can never both admit against the same remaining budget.

Why row locks rather than advisory locks: the rows are the data being protected, so nothing else
(reports, ad-hoc SQL fixes, a future writer) can change a bucket without the same lock; they cover
exactly the buckets touched (a component's window does not wait on unrelated components beyond the
shared global buckets), leave no hash collisions to reason about, and show up in ``pg_locks`` with the
row they guard. Buckets are created on first use by an ``INSERT ... ON CONFLICT DO NOTHING`` in the same
sorted order before they are locked, and expiry uses ``SKIP LOCKED`` so a reconcile never waits on a
reservation being settled. The fixed lock order means no deadlock; should PostgreSQL still report one
(or a serialization failure), the operation is retried from the start.

Migrations run under a transaction-level advisory lock, so replicas starting together apply each
migration once. The URL's password never appears in logs or errors.

The content repositories write in READ COMMITTED transactions that lock what they depend on (the context
row an append advances, a component's default-prompt advisory lock) and read in read-only REPEATABLE READ
snapshots, so a context loads consistently while appends go on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from rhetor.storage import _ledger_core as core
from rhetor.storage import _rows, migrations
from rhetor.storage.base import StorageError, StorageUnavailableError
from rhetor.storage.records import BucketKey, BucketTotals, ReservationRow
from rhetor.storage.sql_content import ContentTx, Dialect
from rhetor.storage.sql_ledger import SqlStorage, numbered

__all__ = ["PostgresStorage"]

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x7268_6574_6F72_6D67  # "rhetormg": pg_advisory_xact_lock key serialising migrations
_JSON = {"buckets", "extra"}
_INSERT = numbered(
    f"INSERT INTO budget_reservations ({', '.join(_rows.INSERT_COLUMNS)}) VALUES "  # noqa: S608 (constant columns)
    f"({', '.join('?::jsonb' if c in _JSON else '?' for c in _rows.INSERT_COLUMNS)})"
)
_UPDATE = numbered(
    "UPDATE budget_reservations SET "  # noqa: S608 (constant columns)
    + ", ".join(f"{c} = ?::jsonb" if c in _JSON else f"{c} = ?" for c in _rows.UPDATE_COLUMNS)
    + " WHERE id = ?"
)
_ENSURE_BUCKETS = """
INSERT INTO budget_buckets (scope, win, win_key)
SELECT s, w, k FROM unnest($1::text[], $2::text[], $3::text[]) AS t(s, w, k) ORDER BY s, w, k
ON CONFLICT DO NOTHING
"""
_LOCK_BUCKETS = """
SELECT scope, win, win_key, spent_nanos, reserved_nanos FROM budget_buckets
WHERE (scope, win, win_key) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))
ORDER BY scope, win, win_key FOR UPDATE
"""
_ADD_BUCKETS = """
UPDATE budget_buckets AS b
SET spent_nanos = b.spent_nanos + d.ds, reserved_nanos = b.reserved_nanos + d.dr
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS d(s, w, k, ds, dr)
WHERE b.scope = d.s AND b.win = d.w AND b.win_key = d.k
"""
_MARK = """
INSERT INTO budget_thresholds (scope, win, win_key, threshold_ppm, fired_at)
SELECT s, w, k, p, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS t(s, w, k, p)
ON CONFLICT DO NOTHING RETURNING scope, win, win_key, threshold_ppm
"""


def _columns(keys: Sequence[BucketKey]) -> tuple[list[str], list[str], list[str]]:
    return [k.scope for k in keys], [k.window for k in keys], [k.key for k in keys]


class _PgTx(core.LedgerTx):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._c = conn

    async def lock_buckets(self, keys: Sequence[BucketKey]) -> dict[BucketKey, BucketTotals]:
        cols = _columns(keys)
        await self._c.execute(_ENSURE_BUCKETS, *cols)
        rows = await self._c.fetch(_LOCK_BUCKETS, *cols)
        return {BucketKey(r["scope"], r["win"], r["win_key"]): BucketTotals(r["spent_nanos"], r["reserved_nanos"])
                for r in rows}

    async def add_to_buckets(self, deltas: Mapping[BucketKey, tuple[int, int]]) -> None:
        keys = list(deltas)
        await self._c.execute(_ADD_BUCKETS, *_columns(keys), [deltas[k][0] for k in keys], [deltas[k][1] for k in keys])

    async def insert_reservation(self, row: ReservationRow) -> None:
        await self._c.execute(_INSERT, *_rows.insert_values(row, _same))

    async def lock_reservation(self, reservation_id: str) -> ReservationRow | None:
        rec = await self._c.fetchrow("SELECT * FROM budget_reservations WHERE id = $1 FOR UPDATE", reservation_id)
        return None if rec is None else _rows.reservation_from(rec, _same)

    async def lock_expired(self, now: datetime, limit: int) -> list[ReservationRow]:
        recs = await self._c.fetch(
            "SELECT * FROM budget_reservations WHERE state = 'reserved' AND expires_at <= $1 "
            "ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            limit,
        )
        return [_rows.reservation_from(r, _same) for r in recs]

    async def update_reservation(self, row: ReservationRow) -> None:
        await self._c.execute(_UPDATE, *_rows.update_values(row, _same), row.id)

    async def mark_thresholds(self, hits: Sequence[tuple[BucketKey, int]], at: datetime) -> set[tuple[BucketKey, int]]:
        rows = await self._c.fetch(_MARK, *_columns([k for k, _ in hits]), [p for _, p in hits], at)
        return {(BucketKey(r["scope"], r["win"], r["win_key"]), int(r["threshold_ppm"])) for r in rows}


def _same(value: Any) -> Any:
    return value


def _parse_ts(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value


_numbered = functools.lru_cache(maxsize=512)(numbered)


class _PgContentTx(ContentTx):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._c = conn

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        return list(await self._c.fetch(_numbered(sql), *params))

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        status = await self._c.execute(_numbered(sql), *params)  # e.g. "DELETE 3"
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._c.executemany(_numbered(sql), rows)

    async def lock(self, key: str) -> None:
        await self._c.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)


class PostgresStorage(SqlStorage):
    kind = "postgres"
    retryable = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
    dialect = Dialect(ts=_same, parse_ts=_parse_ts, json="?::jsonb", greatest="GREATEST", for_update=" FOR UPDATE")

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10, connect_timeout_s: float = 10.0) -> None:
        self._url = url
        self.min_size, self.max_size, self.connect_timeout_s = min_size, max_size, connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._init_repositories()

    def describe(self) -> str:
        return _rows.redact_url(self._url)

    async def start(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=self.min_size, max_size=self.max_size, timeout=self.connect_timeout_s
            )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StorageUnavailableError(
                f"cannot connect to PostgreSQL at {self.describe()}: {type(exc).__name__}: {self._scrub(exc)}"
            ) from None  # the original may quote the URL, password included
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise
        log.info("storage: PostgreSQL at %s (schema version %d)", self.describe(), await self.schema_version())

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc)
        try:
            password = urlsplit(self._url).password
        except ValueError:
            return "(details withheld: the URL cannot be parsed)"
        return text.replace(password, "***") if password else text

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _pool_or_fail(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError(f"storage {self.describe()} is not started")
        return self._pool

    async def schema_version(self) -> int:
        pool = self._pool_or_fail()
        if await pool.fetchval("SELECT to_regclass('schema_version')") is None:
            return 0
        return int(await pool.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))

    async def _migrate(self) -> None:
        known = migrations.load("postgres")
        async with self._pool_or_fail().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
            if current > len(known):
                raise StorageError(f"{self.describe()} has schema version {current}, newer than this Rhetor's "
                                   f"{len(known)}: upgrade Rhetor")
            for mig in known[current:]:
                for statement in migrations.statements(mig.sql):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)", mig.version, mig.name)
                log.info("storage: applied PostgreSQL migration %03d_%s", mig.version, mig.name)

    @asynccontextmanager
    async def content_tx(self, *, write: bool = True) -> AsyncIterator[ContentTx]:
        async with self._pool_or_fail().acquire() as conn:
            tx = conn.transaction() if write else conn.transaction(isolation="repeatable_read", readonly=True)
            async with tx:
                yield _PgContentTx(conn)

    @asynccontextmanager
    async def ledger_tx(self) -> AsyncIterator[core.LedgerTx]:
        async with self._pool_or_fail().acquire() as conn, conn.transaction():
            yield _PgTx(conn)

    async def fetch(self, sql: str, params: Sequence[object]) -> list[Mapping[str, Any]]:
        return list(await self._pool_or_fail().fetch(numbered(sql), *params))

    def parse_time(self, value: object) -> datetime:
        return _parse_ts(value)

