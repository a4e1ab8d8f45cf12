"""In-process storage for tests and throwaway runs (``memory://``): nothing survives the process.

Atomicity: one ``asyncio.Lock`` per storage serialises every ledger operation; the shared ledger logic
checks before it writes, so an operation either completes or leaves nothing behind. The content
repositories are in ``memory_content.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec.structs

from rhetor.storage import _ledger_core as core
from rhetor.storage.base import LedgerRepository, Storage
from rhetor.storage.memory_content import MemoryContexts, MemoryPrompts, MemoryTemplates
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

__all__ = ["MemoryLedger", "MemoryStorage"]


class _MemoryTx(core.LedgerTx):
    def __init__(self, ledger: MemoryLedger) -> None:
        self._l = ledger

    async def lock_buckets(self, keys: Sequence[BucketKey]) -> dict[BucketKey, BucketTotals]:
        return {k: self._l.buckets.get(k, BucketTotals()) for k in keys}

    async def add_to_buckets(self, deltas: Mapping[BucketKey, tuple[int, int]]) -> None:
        for key, (spent, reserved) in deltas.items():
            t = self._l.buckets.get(key, BucketTotals())
            self._l.buckets[key] = BucketTotals(t.spent_nanos + spent, t.reserved_nanos + reserved)

    async def insert_reservation(self, row: ReservationRow) -> None:
        if row.id in self._l.reservations:
            raise ValueError(f"duplicate reservation id {row.id!r}")
        self._l.reservations[row.id] = row

    async def lock_reservation(self, reservation_id: str) -> ReservationRow | None:
        return self._l.reservations.get(reservation_id)

    async def lock_expired(self, now: datetime, limit: int) -> list[ReservationRow]:
        live = (r for r in self._l.reservations.values() if r.state == "reserved" and r.expires_at <= now)
        return sorted(live, key=lambda r: r.id)[:limit]

    async def update_reservation(self, row: ReservationRow) -> None:
        self._l.reservations[row.id] = row

    async def mark_thresholds(self, hits: Sequence[tuple[BucketKey, int]], at: datetime) -> set[tuple[BucketKey, int]]:
        new = {h for h in hits if h not in self._l.fired}
        self._l.fired.update(new)
        return new


class MemoryLedger(LedgerRepository):
    """The ledger in dictionaries, guarded by one ``asyncio.Lock``."""

    def __init__(self) -> None:
        self.buckets: dict[BucketKey, BucketTotals] = {}
        self.reservations: dict[str, ReservationRow] = {}
        self.fired: set[tuple[BucketKey, int]] = set()
        self._lock = asyncio.Lock()

    async def reserve(self, request: ReserveRequest) -> ReserveOutcome:
        async with self._lock:
            return await core.reserve(_MemoryTx(self), request)

    async def settle(self, request: SettleRequest) -> SettleOutcome:
        async with self._lock:
            return await core.settle(_MemoryTx(self), request)

    async def release(self, reservation_id: str, at: datetime) -> bool:
        async with self._lock:
            return await core.release(_MemoryTx(self), reservation_id, at)

    async def expire(self, now: datetime, limit: int = 1000) -> list[str]:
        async with self._lock:
            return await core.expire(_MemoryTx(self), now, limit)

    async def get(self, reservation_id: str) -> ReservationRow | None:
        row = self.reservations.get(reservation_id)
        return None if row is None else msgspec.structs.replace(row)

    async def totals(self, buckets: Sequence[BucketKey]) -> dict[BucketKey, BucketTotals]:
        return {k: self.buckets.get(k, BucketTotals()) for k in buckets}

    async def fired_thresholds(self, buckets: Sequence[BucketKey]) -> dict[BucketKey, list[int]]:
        return {k: sorted(ppm for b, ppm in self.fired if b == k) for k in buckets}

    async def usage(self, window: str | None = None, key: str | None = None) -> list[UsageRow]:
        groups: dict[tuple[str | None, ...], list[int]] = {}
        for r in self.reservations.values():
            if r.state != "settled" or (window is not None and r.window_keys.get(window) != key):
                continue
            g = groups.setdefault(tuple(r.attrs.get(a) for a in ("model", "provider", "component", "task_type")),
                                  [0, 0, 0, 0])
            g[0] += r.cost_nanos or 0
            g[1] += 1
            g[2] += r.input_tokens
            g[3] += r.output_tokens
        return [UsageRow(*attrs, *sums) for attrs, sums in groups.items()]  # type: ignore[arg-type]


class MemoryStorage(Storage):
    kind = "memory"

    def __init__(self) -> None:
        self._ledger = MemoryLedger()
        self._contexts = MemoryContexts()
        self._templates = MemoryTemplates()
        self._prompts = MemoryPrompts()

    @property
    def ledger(self) -> MemoryLedger:
        return self._ledger

    @property
    def contexts(self) -> MemoryContexts:
        return self._contexts

    @property
    def templates(self) -> MemoryTemplates:
        return self._templates

    @property
    def prompts(self) -> MemoryPrompts:
        return self._prompts

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def schema_version(self) -> int:
        return 0

    def describe(self) -> str:
        return "memory://"
