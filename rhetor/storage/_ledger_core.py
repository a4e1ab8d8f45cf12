"""The ledger's transaction logic, written once and run by every backend inside its own transaction.

A backend implements the small ``LedgerTx`` primitives (lock and read buckets, add to them, read and
write reservations, mark thresholds) and runs ``reserve``/``settle``/``release``/``expire`` below inside
whatever makes them atomic for it: an ``asyncio.Lock`` (memory), ``BEGIN IMMEDIATE`` (SQLite) or a
transaction with row locks (PostgreSQL). So the three backends cannot drift apart in their semantics.

Lock order, which every primitive keeps: reservation rows first, then buckets in ``BucketKey`` order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import msgspec.structs

from rhetor.storage.base import ReservationStateError, UnknownReservationError
from rhetor.storage.records import (
    BucketKey,
    BucketLimit,
    BucketTotals,
    ReservationRow,
    ReserveOutcome,
    ReserveRequest,
    SettleOutcome,
    SettleRequest,
    ThresholdHit,
)

__all__ = ["LedgerTx", "expire", "release", "reserve", "settle"]

PPM = 1_000_000


class LedgerTx(ABC):
    """The primitives of one open ledger transaction."""

    @abstractmethod
    async def lock_buckets(self, keys: Sequence[BucketKey]) -> dict[BucketKey, BucketTotals]:
        """Lock ``keys`` (sorted, distinct; creating missing buckets) for the transaction; return their totals."""

    @abstractmethod
    async def add_to_buckets(self, deltas: Mapping[BucketKey, tuple[int, int]]) -> None:
        """Add ``(spent, reserved)`` nano-dollars to locked buckets."""

    @abstractmethod
    async def insert_reservation(self, row: ReservationRow) -> None:
        """Record a new reservation."""

    @abstractmethod
    async def lock_reservation(self, reservation_id: str) -> ReservationRow | None:
        """Lock and read one reservation."""

    @abstractmethod
    async def lock_expired(self, now: datetime, limit: int) -> list[ReservationRow]:
        """Lock live reservations expired at ``now`` (skipping any another transaction holds)."""

    @abstractmethod
    async def update_reservation(self, row: ReservationRow) -> None:
        """Write a locked reservation's state, cost, usage, attributes and finish time."""

    @abstractmethod
    async def mark_thresholds(self, hits: Sequence[tuple[BucketKey, int]], at: datetime) -> set[tuple[BucketKey, int]]:
        """Record thresholds as fired; return those that had not fired before."""


async def reserve(tx: LedgerTx, req: ReserveRequest) -> ReserveOutcome:
    """A bucket is over when spent + reserved + amount > limit; a zero amount is never over (it costs nothing,
    so a free fallback model stays usable when a budget is exhausted)."""
    buckets = _distinct(req.buckets)
    keys = sorted(b.bucket for b in buckets)
    before = await tx.lock_buckets(keys)
    over = tuple(
        (b, before[b.bucket])
        for b in buckets
        if b.limit_nanos and req.amount_nanos and before[b.bucket].committed_nanos + req.amount_nanos > b.limit_nanos
    )
    if over and req.enforce:
        return ReserveOutcome(admitted=False, over=over)
    await tx.add_to_buckets({k: (0, req.amount_nanos) for k in keys})
    await tx.insert_reservation(
        ReservationRow(
            id=req.id,
            state="reserved",
            amount_nanos=req.amount_nanos,
            buckets=buckets,
            window_keys=dict(req.window_keys),
            created_at=req.created_at,
            expires_at=req.expires_at,
            attrs=dict(req.attrs),
            extra=dict(req.extra),
        )
    )
    after = {k: BucketTotals(t.spent_nanos, t.reserved_nanos + req.amount_nanos) for k, t in before.items()}
    crossed = await _fire(tx, buckets, after, req.thresholds_ppm, req.created_at)
    return ReserveOutcome(admitted=True, over=over, crossed=crossed)


async def settle(tx: LedgerTx, req: SettleRequest) -> SettleOutcome:
    row = await tx.lock_reservation(req.id)
    if row is None:
        raise UnknownReservationError(f"no reservation {req.id!r} to settle", details={"reservation_id": req.id})
    if row.state == "settled":
        return SettleOutcome(reservation=row, already_settled=True)
    if row.state == "released":
        raise ReservationStateError(
            f"reservation {req.id!r} was released and cannot be settled", details={"reservation_id": req.id}
        )
    keys = sorted(b.bucket for b in row.buckets)
    before = await tx.lock_buckets(keys)
    unreserve = row.amount_nanos if row.state == "reserved" else 0
    await tx.add_to_buckets({k: (req.cost_nanos, -unreserve) for k in keys})
    attrs = dict(row.attrs)
    attrs.update({k: v for k, v in req.attrs.items() if v is not None})
    settled = msgspec.structs.replace(
        row,
        state="settled",
        cost_nanos=req.cost_nanos,
        finished_at=req.settled_at,
        input_tokens=req.input_tokens,
        output_tokens=req.output_tokens,
        cache_read_tokens=req.cache_read_tokens,
        cache_write_tokens=req.cache_write_tokens,
        attrs=attrs,
        extra={**row.extra, **req.extra},
    )
    await tx.update_reservation(settled)
    after = {
        k: BucketTotals(t.spent_nanos + req.cost_nanos, t.reserved_nanos - unreserve) for k, t in before.items()
    }
    crossed = await _fire(tx, row.buckets, after, req.thresholds_ppm, req.settled_at)
    return SettleOutcome(reservation=settled, was_expired=row.state == "expired", crossed=crossed)


async def release(tx: LedgerTx, reservation_id: str, at: datetime) -> bool:
    row = await tx.lock_reservation(reservation_id)
    if row is None or row.state != "reserved":
        return False
    await _drop([row], tx, "released", at)
    return True


async def expire(tx: LedgerTx, now: datetime, limit: int) -> list[str]:
    rows = await tx.lock_expired(now, limit)
    if rows:
        await _drop(rows, tx, "expired", now)
    return [r.id for r in rows]


async def _drop(rows: list[ReservationRow], tx: LedgerTx, state: str, at: datetime) -> None:
    deltas: dict[BucketKey, tuple[int, int]] = {}
    for row in rows:
        for b in row.buckets:
            deltas[b.bucket] = (0, deltas.get(b.bucket, (0, 0))[1] - row.amount_nanos)
    await tx.lock_buckets(sorted(deltas))
    await tx.add_to_buckets(deltas)
    for row in rows:
        await tx.update_reservation(msgspec.structs.replace(row, state=state, finished_at=at))


def _distinct(buckets: Iterable[BucketLimit]) -> tuple[BucketLimit, ...]:
    seen: dict[BucketKey, BucketLimit] = {}
    for b in buckets:
        seen.setdefault(b.bucket, b)
    return tuple(seen.values())


async def _fire(
    tx: LedgerTx,
    buckets: Iterable[BucketLimit],
    after: Mapping[BucketKey, BucketTotals],
    thresholds_ppm: Sequence[int],
    at: datetime,
) -> tuple[ThresholdHit, ...]:
    """Thresholds reached (committed ≥ fraction × limit) that fire now for the first time in their window."""
    limited = [(b, after[b.bucket].committed_nanos) for b in buckets if b.limit_nanos]
    if not limited:
        return ()
    ppms = sorted(set(thresholds_ppm))
    reached = [
        ThresholdHit(b.bucket, ppm, b.limit_nanos, committed)
        for b, committed in limited
        for ppm in ppms
        if committed * PPM >= ppm * b.limit_nanos
    ]
    if not reached:
        return ()
    new = await tx.mark_thresholds([(h.bucket, h.threshold_ppm) for h in reached], at)
    return tuple(h for h in reached if (h.bucket, h.threshold_ppm) in new)
