"""The ``LedgerRepository`` of the SQL backends: writes through the shared ledger logic inside the backend's
transaction, reads with plain queries (written with ``?`` placeholders; PostgreSQL renumbers them).

Also ``SqlStorage``, the base of the SQL backends, which gives them the ledger and the content
repositories (``sql_content.py``, ``sql_contexts.py``).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, TypeVar

from rhetor.storage import _ledger_core as core
from rhetor.storage import _rows
from rhetor.storage.base import LedgerRepository, Storage
from rhetor.storage.records import (
    BucketKey,
    BucketTotals,
    ReservationRow,
    ReserveOutcome,
    ReserveRequest,
    SettleOutcome,
    SettleRequest,
    UsageRow,
)
from rhetor.storage.sql_content import ContentTx, Dialect, SqlPrompts, SqlTemplates, run_in_transactions
from rhetor.storage.sql_contexts import SqlContexts

__all__ = ["SqlLedger", "SqlStorage", "numbered"]

_R = TypeVar("_R")

_USAGE = (
    "SELECT model, provider, component, task_type, SUM(cost_nanos) AS cost, COUNT(*) AS requests, "
    "SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens "
    "FROM budget_reservations WHERE state = 'settled' {where} GROUP BY model, provider, component, task_type"
)
_USAGE_SQL: dict[str | None, str] = {None: _USAGE.format(where="")} | {
    w: _USAGE.format(where=f"AND {column} = ?") for w, column in _rows.WINDOW_COLUMNS.items()
}
_BUCKET = "WHERE scope = ? AND win = ? AND win_key = ?"


class SqlStorage(Storage):
    """A storage backend speaking SQL: gives the repositories a transaction and a way to read."""

    _ledger: SqlLedger
    dialect: Dialect
    retryable: tuple[type[BaseException], ...] = ()
    """Errors after which a transaction is retried from the start (deadlock, serialization failure)."""
    attempts = 5

    def _init_repositories(self) -> None:
        self._ledger = SqlLedger(self)
        self._contexts = SqlContexts(self)
        self._templates = SqlTemplates(self)
        self._prompts = SqlPrompts(self)

    @property
    def ledger(self) -> SqlLedger:
        return self._ledger

    @property
    def contexts(self) -> SqlContexts:
        return self._contexts

    @property
    def templates(self) -> SqlTemplates:
        return self._templates

    @property
    def prompts(self) -> SqlPrompts:
        return self._prompts

    @abstractmethod
    def content_tx(self, *, write: bool = True) -> AbstractAsyncContextManager[ContentTx]:
        """One content transaction: ``write`` for changes (committed on exit, rolled back on any error), else a
        consistent read-only snapshot."""

    async def run_content(self, op: Callable[[ContentTx], Awaitable[_R]], *, write: bool = True) -> _R:
        """Run a content repository's ``op`` in one transaction, retried after a ``retryable`` error."""
        return await run_in_transactions(self, op, write=write)

    def ledger_tx(self) -> AbstractAsyncContextManager[core.LedgerTx]:
        """One atomic ledger transaction (committed on exit, rolled back on any error). A backend provides
        this or overrides ``run_ledger`` (SQLite runs the whole transaction in one call on its thread)."""
        raise NotImplementedError(f"{type(self).__name__} provides neither ledger_tx nor run_ledger")

    async def run_ledger(self, op: Callable[[core.LedgerTx], Awaitable[_R]], *, durable: bool = True) -> _R:
        """Run ``op`` in one ledger transaction, retried from the start after a ``retryable`` error.

        ``durable=False`` marks an operation whose loss in a power cut is harmless (a reservation, a release:
        reconciliation releases them after a crash anyway); a backend may then commit it without waiting
        for the disk (SQLite does). Spend is always ``durable``."""
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.ledger_tx() as tx:
                    return await op(tx)
            except self.retryable:
                if attempt == self.attempts:
                    raise
        raise AssertionError("unreachable")

    @abstractmethod
    async def fetch(self, sql: str, params: Sequence[object]) -> list[Mapping[str, Any]]:
        """Rows of a read-only query written with ``?`` placeholders."""

    @abstractmethod
    def parse_time(self, value: object) -> datetime:
        """A stored timestamp as an aware datetime."""


def numbered(sql: str) -> str:
    """``?`` placeholders → ``$1, $2, ...`` (PostgreSQL)."""
    counter = iter(range(1, 1000))
    return re.sub(r"\?", lambda _m: f"${next(counter)}", sql)


class SqlLedger(LedgerRepository):
    def __init__(self, storage: SqlStorage) -> None:
        self._s = storage

    async def _run(self, op: Callable[[core.LedgerTx], Awaitable[_R]], *, durable: bool = True) -> _R:
        return await self._s.run_ledger(op, durable=durable)

    async def reserve(self, request: ReserveRequest) -> ReserveOutcome:
        return await self._run(lambda tx: core.reserve(tx, request), durable=False)

    async def settle(self, request: SettleRequest) -> SettleOutcome:
        return await self._run(lambda tx: core.settle(tx, request))

    async def release(self, reservation_id: str, at: datetime) -> bool:
        return await self._run(lambda tx: core.release(tx, reservation_id, at), durable=False)

    async def expire(self, now: datetime, limit: int = 1000) -> list[str]:
        return await self._run(lambda tx: core.expire(tx, now, limit))

    async def get(self, reservation_id: str) -> ReservationRow | None:
        rows = await self._s.fetch("SELECT * FROM budget_reservations WHERE id = ?", (reservation_id,))
        return next((_rows.reservation_from(r, self._s.parse_time) for r in rows), None)

    async def totals(self, buckets: Sequence[BucketKey]) -> dict[BucketKey, BucketTotals]:
        out = {}
        for key in buckets:
            rows = await self._s.fetch(f"SELECT spent_nanos, reserved_nanos FROM budget_buckets {_BUCKET}", key)  # noqa: S608
            out[key] = next((BucketTotals(int(r["spent_nanos"]), int(r["reserved_nanos"])) for r in rows),
                            BucketTotals())
        return out

    async def fired_thresholds(self, buckets: Sequence[BucketKey]) -> dict[BucketKey, list[int]]:
        out = {}
        for key in buckets:
            rows = await self._s.fetch(
                f"SELECT threshold_ppm FROM budget_thresholds {_BUCKET} ORDER BY threshold_ppm", key  # noqa: S608
            )
            out[key] = [int(r["threshold_ppm"]) for r in rows]
        return out

    async def usage(self, window: str | None = None, key: str | None = None) -> list[UsageRow]:
        if window is not None and window not in _rows.WINDOW_COLUMNS:
            raise ValueError(f"unknown window {window!r}")
        rows = await self._s.fetch(_USAGE_SQL[window], () if window is None else (key,))
        return [
            UsageRow(
                r["model"], r["provider"], r["component"], r["task_type"],
                int(r["cost"] or 0), int(r["requests"]), int(r["input_tokens"] or 0),
                int(r["output_tokens"] or 0),
            )
            for r in rows
        ]
