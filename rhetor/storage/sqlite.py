"""SQLite storage, the default: one file (``<RHETOR_DATA_DIR>/rhetor.sqlite3`` or ``sqlite:///path``).

Atomicity: every ledger operation is one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write
lock before reading, so check-then-record cannot interleave with another writer — in this process or in
another process sharing the file (``busy_timeout`` makes it wait for the lock instead of failing).
Within the process, an ``asyncio.Lock`` hands the single connection to one transaction at a time. A ledger
operation runs whole (the shared core's statements over the raw ``sqlite3`` connection) in one call on the
connection's thread, and the operations queued at the same moment share one transaction, each in its own
savepoint, and one COMMIT (group commit, ``_sqlite_batch``): one thread round trip and one fsync per batch.

Durability: WAL journal with ``synchronous=FULL``: once a commit returns, the spend survives a
``kill -9`` and a power cut. Opened with ``sqlite:///path?synchronous=normal``, every commit is ``NORMAL``:
the spend still survives a ``kill -9`` of the process (what the WAL wrote is in the OS's cache), but a power
cut or an OS crash may lose the last commits; no fsync per commit (~115 µs of CPU and ~0.2 ms of a request at
c=1 on the benchmark machine). Reservations and releases alone commit without the fsync (``synchronous=NORMAL``,
see ``_sqlite_batch``): they survive a ``kill -9``, and a power cut loses at most what reconciliation would
have released anyway. The connection lives in aiosqlite's own thread, so no statement (nor
waiting for another process's lock) ever blocks the event loop.

Checkpoints: the connection copies the WAL back into the database file once the WAL holds
``WAL_AUTOCHECKPOINT_PAGES`` pages (SQLite's default is 1,000). The commit that crosses the mark does the copy
and its two fsyncs, and waits for them: at 1,000 pages the requests above the p99 at c=1 came every ~112
requests, one per checkpoint.

The content repositories' operations join the same batches. A batch of reads only runs in a deferred
``BEGIN`` (a consistent WAL snapshot that never blocks writers); a read batched with writes runs inside
their ``BEGIN IMMEDIATE`` transaction, after the operations queued before it. Foreign keys
are enabled on the connection, so deleting a context cascades to its messages and summary.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from itertools import starmap
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from rhetor.storage import _ledger_core as core
from rhetor.storage import _rows, migrations
from rhetor.storage._sqlite_batch import Batcher, SyncLevel
from rhetor.storage.base import StorageError, StorageUnavailableError
from rhetor.storage.records import BucketKey, BucketTotals, ReservationRow
from rhetor.storage.sql_content import ContentTx, Dialect
from rhetor.storage.sql_ledger import SqlStorage

__all__ = ["SQLiteStorage"]

log = logging.getLogger(__name__)

_R = TypeVar("_R")
_V = TypeVar("_V")

WAL_AUTOCHECKPOINT_PAGES = 4000
"""WAL pages written before a commit copies them into the database file (``PRAGMA wal_autocheckpoint``).

Four times SQLite's default: a checkpoint every ~370 requests served one at a time instead of every ~112, so the
request that waits for one falls outside the p99. In process at c=1 (8 interleaved pairs of 6,000 requests):
p99 3.08 -> 2.26 ms (lower in 8 of 8 pairs), p50 1.53 -> 1.40 ms, p99.9 4.67 -> 5.0 ms (rarer, longer copies).
The WAL file grows to ~16 MB instead of ~4 MB, and normally stays within the first 4,062 frames, which one
wal-index hash table covers."""

_T = _rows.to_sqlite_time
_INSERT = (
    f"INSERT INTO budget_reservations ({', '.join(_rows.INSERT_COLUMNS)}) "  # noqa: S608 (constant columns)
    f"VALUES ({', '.join('?' * len(_rows.INSERT_COLUMNS))})"
)
_READ_BUCKET = "SELECT spent_nanos, reserved_nanos FROM budget_buckets WHERE scope = ? AND win = ? AND win_key = ?"
_NEW_BUCKET = "INSERT INTO budget_buckets (scope, win, win_key) VALUES (?, ?, ?)"
_UPDATE = (
    f"UPDATE budget_reservations SET {', '.join(c + ' = ?' for c in _rows.UPDATE_COLUMNS)} "  # noqa: S608
    "WHERE id = ?"
)


class _SQLiteTx(core.LedgerTx):
    """The ledger primitives over the raw ``sqlite3`` connection, on the connection's own thread (see
    ``_transact``). The methods are ``async`` for the shared core but never suspend."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    async def lock_buckets(self, keys: Sequence[BucketKey]) -> dict[BucketKey, BucketTotals]:
        # The whole database is already locked by BEGIN IMMEDIATE: read each row, create the missing ones (a new
        # window's). Reading first saves the INSERT's work on the common path, where every bucket exists.
        execute = self._c.execute
        out = {}
        for k in keys:
            found = execute(_READ_BUCKET, k).fetchone()
            if found is None:
                execute(_NEW_BUCKET, k)
                out[k] = BucketTotals()
            else:
                out[k] = BucketTotals(*found)
        return out

    async def add_to_buckets(self, deltas: Mapping[BucketKey, tuple[int, int]]) -> None:
        self._c.executemany(
            "UPDATE budget_buckets SET spent_nanos = spent_nanos + ?, reserved_nanos = reserved_nanos + ? "
            "WHERE scope = ? AND win = ? AND win_key = ?",
            [(s, r, *k) for k, (s, r) in deltas.items()],
        )

    async def insert_reservation(self, row: ReservationRow) -> None:
        self._c.execute(_INSERT, _rows.insert_values(row, _T))

    async def lock_reservation(self, reservation_id: str) -> ReservationRow | None:
        r = self._c.execute("SELECT * FROM budget_reservations WHERE id = ?", (reservation_id,)).fetchone()
        return None if r is None else _rows.reservation_from(r, _rows.from_sqlite_time)

    async def lock_expired(self, now: datetime, limit: int) -> list[ReservationRow]:
        rows = self._c.execute(
            "SELECT * FROM budget_reservations WHERE state = 'reserved' AND expires_at <= ? ORDER BY id LIMIT ?",
            (_T(now), limit),
        ).fetchall()
        return [_rows.reservation_from(r, _rows.from_sqlite_time) for r in rows]

    async def update_reservation(self, row: ReservationRow) -> None:
        self._c.execute(_UPDATE, (*_rows.update_values(row, _T), row.id))

    async def mark_thresholds(self, hits: Sequence[tuple[BucketKey, int]], at: datetime) -> set[tuple[BucketKey, int]]:
        new = set()
        for key, ppm in hits:
            cur = self._c.execute(
                "INSERT OR IGNORE INTO budget_thresholds (scope, win, win_key, threshold_ppm, fired_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (*key, ppm, _T(at)),
            )
            if cur.rowcount == 1:
                new.add((key, ppm))
        return new


def _drive(coro: Coroutine[Any, Any, _R]) -> _R:
    """Run a coroutine that never suspends (the ledger core over ``_SQLiteTx``, a content operation over
    ``_SQLiteThreadContentTx``) to completion, synchronously: on the connection's thread, inside the batch's
    transaction (``_sqlite_batch.run_batch``)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a storage operation suspended inside a synchronous SQLite transaction")


class _SQLiteThreadContentTx(ContentTx):
    """The content primitives over the raw ``sqlite3`` connection, on the connection's own thread (see
    ``_sqlite_batch.run_batch``). The methods are ``async`` for the repositories but never suspend."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._c = raw

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        return self._c.execute(sql, params).fetchall()

    async def fetch_each(self, sql: str, params: Sequence[object], make: Callable[..., _V]) -> tuple[_V, ...]:
        # Plain tuples, each gone once its value is made: a 100k-message history read no longer holds 100k
        # ``sqlite3.Row`` objects, whose number set off the collector's full passes over them again and again.
        cursor = self._c.cursor()
        cursor.row_factory = None
        return tuple(starmap(make, cursor.execute(sql, params)))

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._c.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._c.executemany(sql, rows)

    async def lock(self, key: str) -> None:
        return None  # BEGIN IMMEDIATE holds the database's write lock already


class _SQLiteContentTx(ContentTx):
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._c = conn

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        return list(await self._c.execute_fetchall(sql, params))

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        cursor = await self._c.execute(sql, params)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._c.executemany(sql, rows)

    async def lock(self, key: str) -> None:
        return None  # BEGIN IMMEDIATE holds the database's write lock already


class SQLiteStorage(SqlStorage):
    kind = "sqlite"
    dialect = Dialect(ts=_T, parse_ts=lambda v: _rows.from_sqlite_time(str(v)), json="?", greatest="MAX",
                      for_update="")

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 60.0,
                 synchronous: Literal["full", "normal"] = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.synchronous = synchronous
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        # what PRAGMA synchronous is now (FULL, or NORMAL for a non-durable batch or throughout with "normal")
        self._sync = SyncLevel(durable_full=synchronous == "full")
        self._batcher = Batcher(self._lock, self._sync)
        self._init_repositories()

    def describe(self) -> str:
        return f"sqlite://{os.path.abspath(self.path)}" + ("" if self.synchronous == "full" else "?synchronous=normal")

    async def start(self) -> None:
        if self._conn is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailableError(f"cannot open SQLite database {self.describe()}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        self._conn = conn
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            await self._enable_wal(conn)
            await conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            await conn.execute(f"PRAGMA synchronous = {'FULL' if self._sync.durable_full else 'NORMAL'}")
            self._sync.full = self._sync.durable_full
            await conn.execute("PRAGMA foreign_keys = ON")
            await self._migrate()
        except sqlite3.Error as exc:
            await self.close()
            raise StorageUnavailableError(f"cannot use SQLite database {self.describe()}: {exc}") from exc
        except BaseException:
            await self.close()
            raise
        log.info("storage: SQLite at %s (schema version %d)", self.describe(), await self.schema_version())

    async def _enable_wal(self, conn: aiosqlite.Connection) -> None:
        """Switch to WAL. On a new file several processes may race to do it, and SQLite then answers
        "database is locked" without waiting (the busy timeout does not apply here): retry until it does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.busy_timeout_s
        delay = 0.005
        while True:
            try:
                rows = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or loop.time() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        mode = str(next(iter(rows))[0]).lower()
        if mode != "wal":
            log.warning("storage: %s could not switch to WAL (journal mode %s)", self.describe(), mode)

    async def close(self) -> None:
        if self._conn is not None:
            await self._batcher.wait_idle()  # answer every queued operation first
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def schema_version(self) -> int:
        async with self._read() as conn:
            rows = await conn.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            )
            if not rows:
                return 0
            rows = await conn.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            return int(next(iter(rows))[0])

    async def _migrate(self) -> None:
        known = migrations.load("sqlite")
        async with self.transaction() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            rows = await conn.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            current = int(next(iter(rows))[0])
            if current > len(known):
                raise StorageError(f"{self.describe()} has schema version {current}, newer than this Rhetor's "
                                   f"{len(known)}: upgrade Rhetor")
            for mig in known[current:]:
                for statement in migrations.statements(mig.sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (mig.version, mig.name, _T(datetime.now(UTC))),
                )
                log.info("storage: applied SQLite migration %03d_%s", mig.version, mig.name)

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StorageError(f"storage {self.describe()} is not started")
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error or cancellation)."""
        async with self._lock:
            conn = self._connection()
            try:
                await conn._execute(self._sync.set, conn._conn, True)  # noqa: SLF001 (what commits here is durable)
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.commit()
            except BaseException:
                # aiosqlite queues statements in order, so this runs after a BEGIN or COMMIT whose await was
                # cancelled; it is a no-op when no transaction is open.
                await conn.rollback()
                raise

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield self._connection()

    @asynccontextmanager
    async def content_tx(self, *, write: bool = True) -> AsyncIterator[ContentTx]:
        if write:
            async with self.transaction() as conn:
                yield _SQLiteContentTx(conn)
            return
        async with self._lock:
            conn = self._connection()
            try:
                await conn.execute("BEGIN")
                yield _SQLiteContentTx(conn)
            finally:
                await conn.rollback()  # read only: nothing to commit

    async def run_content(self, op: Callable[[ContentTx], Coroutine[Any, Any, _R]], *,  # type: ignore[override]
                          write: bool = True) -> _R:
        """A content operation whole in one call on the connection's thread, in a group-committed batch (as
        ``run_ledger``): loading a context or the default prompt costs no thread round trip per statement."""
        return await self._batcher.submit(  # type: ignore[no-any-return]
            self._connection(), lambda raw: _drive(op(_SQLiteThreadContentTx(raw))), write)

    async def run_ledger(self, op: Callable[[core.LedgerTx], Coroutine[Any, Any, _R]], *,  # type: ignore[override]
                         durable: bool = True) -> _R:
        """The whole ledger operation in one call on the connection's thread, group-committed with the operations
        queued at the same moment (``_sqlite_batch``): its caller is answered once the batch's COMMIT returned
        (with an fsync unless no operation of the batch is ``durable``). A caller cancelled while its batch runs
        does not stop it (the operation commits or rolls back as a unit); one cancelled before its batch begins
        skips it."""
        return await self._batcher.submit(  # type: ignore[no-any-return]
            self._connection(), lambda raw: _drive(op(_SQLiteTx(raw))), True, durable)

    async def fetch(self, sql: str, params: Sequence[object]) -> list[Mapping[str, Any]]:
        async with self._read() as conn:
            return list(await conn.execute_fetchall(sql, params))

    def parse_time(self, value: object) -> datetime:
        return _rows.from_sqlite_time(str(value))
