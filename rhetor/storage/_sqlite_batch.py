"""Group commit for SQLite: the operations queued at the same moment share one transaction and one COMMIT.

Every ledger and content operation of ``SQLiteStorage`` is a synchronous function of the raw ``sqlite3``
connection (``Job.fn``). Callers queue jobs; one drainer task hands everything queued so far to the
connection's thread as one batch (``run_batch``): ``BEGIN IMMEDIATE``, then each job inside its own
``SAVEPOINT`` (a job that fails is rolled back alone and gets its error), then one ``COMMIT``. No caller is
answered before that COMMIT returns, so what a caller was told is durable is durable (``synchronous=FULL``)
exactly as with one transaction per operation; under concurrency the fsync, the BEGIN/COMMIT and the thread
round trip are paid once per batch instead of once per operation.

Not every operation needs its own fsync (and none gets one when the database URL says
``?synchronous=normal``). A job that is not ``durable`` (a budget reservation or its release:
after a crash, reconciliation would release it anyway) is committed with ``synchronous=NORMAL`` when its batch
holds no durable write: visible to every connection at once and kept through a ``kill -9`` (the WAL is in the
OS's cache), only a power cut can lose it. A batch holding a durable write (spend, conversations, templates,
prompts) commits with ``synchronous=FULL``, whose fsync of the WAL also makes every earlier commit durable.

A job whose caller was cancelled before its batch began is skipped; one already running completes with its
batch (its caller is just not told). When the transaction itself is lost (COMMIT fails, an I/O error makes
SQLite roll everything back), every job of the batch gets the error: none of them was committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite

from rhetor.storage.base import StorageError

__all__ = ["MAX_BATCH", "Batcher", "Job", "SyncLevel", "run_batch"]

MAX_BATCH = 64
"""At most this many operations share a transaction (bounds how long one batch holds the write lock)."""

_SAVEPOINT = "SAVEPOINT rhetor_op"
_RELEASE = "RELEASE rhetor_op"
_ROLLBACK_TO = "ROLLBACK TO rhetor_op"


class Job:
    """One storage operation waiting for its batch. ``fn`` runs on the connection's thread."""

    __slots__ = ("cancelled", "durable", "error", "fn", "future", "ok", "value", "write")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], write: bool, future: asyncio.Future[Any],
                 durable: bool = True) -> None:
        self.fn = fn
        self.write = write
        self.durable = durable  # its commit must reach the disk (fsync) before its caller hears back
        self.future = future
        self.cancelled = False  # set on the loop when the caller gives up; read on the thread before running fn
        self.ok = False
        self.value: Any = None
        self.error: BaseException | None = None


class TransactionLost(sqlite3.OperationalError):
    """SQLite ended the batch's transaction by itself (after an I/O error, a full disk...): nothing committed."""


class SyncLevel:
    """The connection's ``PRAGMA synchronous``, as last set (only touched on the connection's thread), and whether
    a durable commit gets FULL at all: not when the database was opened with ``?synchronous=normal``, whose every
    commit survives a ``kill -9`` (the WAL is in the OS's cache) but not a power cut."""

    __slots__ = ("durable_full", "full")

    def __init__(self, durable_full: bool = True) -> None:
        self.durable_full = durable_full
        self.full = durable_full  # what SQLiteStorage.start sets

    def set(self, raw: sqlite3.Connection, full: bool) -> None:
        full = full and self.durable_full
        if full != self.full:
            raw.execute("PRAGMA synchronous = FULL" if full else "PRAGMA synchronous = NORMAL")
            self.full = full


def run_batch(conn: aiosqlite.Connection, batch: list[Job], sync: SyncLevel) -> None:
    """Run ``batch`` in one transaction on the connection's thread; each job's outcome goes into the job.

    Raises (after ``ROLLBACK``) when the transaction as a whole failed: then no job was committed.
    """
    live = [job for job in batch if not job.cancelled]
    if not live:
        return
    raw = conn._conn  # noqa: SLF001 (the sqlite3 connection, used on its own thread)
    write = any(job.write for job in live)
    if write:  # an fsync on COMMIT unless every write of the batch may do without
        sync.set(raw, any(job.durable for job in live if job.write))
    raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        if len(live) == 1:  # alone in its transaction: its error rolls the transaction back
            live[0].value, live[0].ok = live[0].fn(raw), True
        else:
            for job in live:
                _run_in_savepoint(raw, job)
        if write:
            raw.commit()
        else:
            raw.rollback()  # reads only: nothing to commit
    except BaseException:
        raw.rollback()  # a no-op when SQLite already ended the transaction
        raise


def _run_in_savepoint(raw: sqlite3.Connection, job: Job) -> None:
    raw.execute(_SAVEPOINT)
    try:
        job.value = job.fn(raw)
    except Exception as exc:  # noqa: BLE001 - the job's own failure: rolled back alone and handed to its caller
        if not raw.in_transaction:
            raise TransactionLost(f"the transaction was lost: {exc}") from exc
        raw.execute(_ROLLBACK_TO)
        raw.execute(_RELEASE)
        job.error = exc
        return
    raw.execute(_RELEASE)
    job.ok = True


class Batcher:
    """Queues jobs and drains them in batches on ``conn``'s thread, one batch at a time under ``lock`` (which
    the storage's other uses of the connection also take)."""

    def __init__(self, lock: asyncio.Lock, sync: SyncLevel) -> None:
        self._lock = lock
        self._sync = sync
        self._queue: list[Job] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], Any], write: bool,
                     durable: bool = True) -> Any:
        loop = asyncio.get_running_loop()
        job = Job(fn, write, loop.create_future(), durable)
        self._queue.append(job)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain(conn))
            self._drainer.add_done_callback(self._drained)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True  # skipped unless its batch already began
            raise

    async def wait_idle(self) -> None:
        """Wait until every queued job was answered (before the connection closes)."""
        while self._drainer is not None:
            await asyncio.shield(self._drainer)

    def _drained(self, task: asyncio.Task[None]) -> None:
        """A drainer cancelled before it ever ran never reached its ``finally``: answer its queue here."""
        if self._drainer is task:
            self._drainer = None
            self._fail_queued()

    async def _drain(self, conn: aiosqlite.Connection) -> None:
        try:
            while self._queue:
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
                started = False
                try:
                    async with self._lock:
                        started = True
                        await conn._execute(run_batch, conn, batch, self._sync)  # noqa: SLF001
                except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch, none hidden
                    _fail(batch, exc)  # the transaction failed as a whole: every caller gets the error
                    continue
                except BaseException:  # cancelled (the loop is shutting down): the callers were not
                    _fail(batch, StorageError("SQLite storage stopped while this operation ran: it may or may not "
                                              "have been committed") if started else _stopped())
                    raise
                _answer(batch)
        finally:
            self._drainer = None
            self._fail_queued()

    def _fail_queued(self) -> None:
        """Answer what is still queued when no drainer is left to run it (called after every drain: the error is
        made only when someone gets it)."""
        rest, self._queue = self._queue, []
        if rest:
            _fail(rest, _stopped())


def _answer(batch: list[Job]) -> None:
    for job in batch:
        if job.future.done():
            continue  # its caller was cancelled
        if job.ok:
            job.future.set_result(job.value)
        elif job.error is not None:
            job.future.set_exception(job.error)
        else:  # cancelled before the batch began, then its future was not cancelled: cannot happen
            job.future.set_exception(RuntimeError("a storage operation was skipped"))


def _stopped() -> StorageError:
    return StorageError("SQLite storage stopped before this operation ran")


def _fail(jobs: list[Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)
