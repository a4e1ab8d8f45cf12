"""The budget ledger: reserve before a provider call, settle with its real cost after, release on failure.

Every check-and-record is one atomic step in storage (see ``rhetor.storage``), so limits hold exactly
under concurrent requests, across processes and replicas, and across restarts. A request's spend is
charged to the windows current when it was *reserved* (admitted): a limit checked at admission is the
limit its spend counts against, even for a stream that ends after midnight.

Times come from the ``now`` argument or, when it is left out, from the injected ``clock``; the ledger
itself never reads the wall clock. (The default reservation ids, from the injectable ``new_id``, begin with the
wall clock's milliseconds so that they sort by creation; nothing is decided by them.)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from rhetor.budget.money import Amount, to_nanos, to_usd
from rhetor.budget.report import build_report
from rhetor.budget.scopes import ScopeLimits, limits_nanos, validate_scope
from rhetor.budget.values import BudgetReport, OverLimit, Reservation, Settlement, ThresholdCrossed
from rhetor.budget.windows import WINDOWS, utc, utc_now, window_keys
from rhetor.config.models import BudgetLimitsSpec, BudgetsFileSpec
from rhetor.errors import BudgetExceededError
from rhetor.storage.base import LedgerRepository
from rhetor.storage.records import (
    ATTR_COLUMNS,
    BucketKey,
    BucketLimit,
    BucketTotals,
    ReserveRequest,
    SettleRequest,
    ThresholdHit,
)
from rhetor.types import Usage

__all__ = ["BudgetLedger", "time_ordered_id"]

PPM = 1_000_000

_MAX_CACHED_SCOPE_SETS = 1024
"""How many scope sets (e.g. one per component) keep their buckets ready; the cache is emptied when full."""


def time_ordered_id() -> str:
    """A reservation id: 32 hex digits, the first 12 the wall clock's milliseconds, the other 20 random (80 bits).

    Ids made later sort later, so a new reservation lands at the end of the ledger's primary-key index instead
    of on a random page: the reservations committed together dirty one index page, not one each. Only the
    order of insertion depends on the clock; uniqueness comes from the random part."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class BudgetLedger:
    """Reservations and spend against per-scope, per-window limits, over a ``LedgerRepository``.

    Args:
        repo: The storage's ledger repository (``storage.ledger``).
        warn_thresholds: Fractions of a limit (0 < t ≤ 1) that fire once per scope and window.
        default_ttl_s: How long a reservation blocks budget when ``ttl_s`` is not given.
        clock: Returns the current aware datetime, used only when a call passes no ``now``.
        new_id: Makes reservation ids.
    """

    def __init__(
        self,
        repo: LedgerRepository,
        *,
        warn_thresholds: Sequence[float] = (0.8, 0.95),
        default_ttl_s: float = 900.0,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = time_ordered_id,
    ) -> None:
        if any(not 0 < t <= 1 for t in warn_thresholds):
            raise ValueError(f"warn thresholds must be in (0, 1], got {list(warn_thresholds)}")
        if default_ttl_s <= 0:
            raise ValueError("default_ttl_s must be positive")
        self.repo = repo
        self.thresholds_ppm = tuple(sorted({round(t * PPM) for t in warn_thresholds}))
        self.default_ttl_s = default_ttl_s
        self._clock = clock
        self._new_id = new_id
        self._day: tuple[date, dict[str, str]] | None = None  # the window keys of the last day asked for
        self._buckets: dict[tuple[Any, ...], tuple[BucketLimit, ...]] = {}  # (day, scopes) → their buckets

    @classmethod
    def from_config(cls, repo: LedgerRepository, budgets: BudgetsFileSpec, **kwargs: Any) -> BudgetLedger:
        """A ledger with budgets.yaml's ``warn_thresholds``."""
        return cls(repo, warn_thresholds=budgets.warn_thresholds, **kwargs)

    def _now(self, now: datetime | None) -> datetime:
        return utc(self._clock() if now is None else now)

    async def reserve(
        self,
        scopes_with_limits: ScopeLimits,
        amount_usd: Amount,
        *,
        enforce: bool,
        now: datetime | None = None,
        ttl_s: float | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Reserve ``amount_usd`` against every scope's daily, weekly and monthly limit, atomically.

        Raises:
            BudgetExceededError: ``enforce`` is set and a limit would be exceeded (nothing is recorded);
                ``details`` name the scope, window, limit, spent, reserved and requested amounts.
        """
        at = self._now(now)
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if ttl <= 0:
            raise ValueError("ttl_s must be positive")
        amount = to_nanos(amount_usd, what="amount_usd")
        keys = self._window_keys(at)
        buckets = self._buckets_for(scopes_with_limits, keys)
        columns, extra = _split_attrs(attrs)
        request = ReserveRequest(
            id=self._new_id(), amount_nanos=amount, buckets=buckets, window_keys=keys, enforce=enforce,
            created_at=at, expires_at=at + timedelta(seconds=ttl), thresholds_ppm=self.thresholds_ppm,
            attrs=columns, extra=extra,
        )
        outcome = await self.repo.reserve(request)
        over = tuple(_over(b, t, amount) for b, t in outcome.over)
        if not outcome.admitted:
            raise _exceeded(over)
        return Reservation(
            id=request.id, amount_usd=to_usd(amount), created_at=at.isoformat(),
            expires_at=request.expires_at.isoformat(), window_keys=keys, over=over,
            crossed=tuple(_crossed(h) for h in outcome.crossed),
        )

    def _window_keys(self, at: datetime) -> dict[str, str]:
        """``window_keys(at)``, computed once per UTC day (a fresh dict each call: callers may keep it)."""
        day = at.date()
        if self._day is None or self._day[0] != day:
            self._day = (day, window_keys(at))
        return dict(self._day[1])

    def _buckets_for(self, scopes_with_limits: ScopeLimits, keys: Mapping[str, str]) -> tuple[BucketLimit, ...]:
        """Every (scope, window) bucket of the reservation with its limit in nano-dollars. Limits given as
        ``BudgetLimitsSpec`` (budgets.yaml's) are converted once per day and scope set, not per request."""
        cache_key: tuple[Any, ...] | None = (keys["daily"],)
        for scope, limits in scopes_with_limits.items():
            if not isinstance(limits, BudgetLimitsSpec):
                cache_key = None
                break
            cache_key += (scope, limits.daily, limits.weekly, limits.monthly)
        if cache_key is not None and (found := self._buckets.get(cache_key)) is not None:
            return found
        buckets = tuple(
            BucketLimit(BucketKey(validate_scope(scope), w, keys[w]), lim)
            for scope, limits in scopes_with_limits.items()
            for w, lim in limits_nanos(limits).items()
        )
        if not buckets:
            raise ValueError("a reservation needs at least one scope (e.g. 'global')")
        if cache_key is not None:
            if len(self._buckets) >= _MAX_CACHED_SCOPE_SETS:
                self._buckets.clear()
            self._buckets[cache_key] = buckets
        return buckets

    async def settle(
        self,
        reservation_id: str,
        actual_cost_usd: Amount,
        usage: Usage | None = None,
        attrs: Mapping[str, Any] | None = None,
        *,
        now: datetime | None = None,
        in_shield: bool = False,
    ) -> Settlement:
        """Replace a reservation by the real cost and usage (0 is fine: the request and tokens still count).

        Idempotent: settling the same reservation again charges nothing and returns the first settlement.
        A reservation that had expired is still charged (the provider was paid). Completes even when the
        caller is cancelled meanwhile, so spend is never lost to a client hanging up: the storage operation runs
        in a task of its own (``asyncio.shield``), unless ``in_shield`` says the caller already runs where nothing
        cancels it (the engine's run finalizers), which spares a task and its loop turns per request.

        Raises:
            UnknownReservationError: No such reservation.
            ReservationStateError: The reservation was released.
        """
        u = usage or Usage()
        columns, extra = _split_attrs(attrs)
        request = SettleRequest(
            id=reservation_id, cost_nanos=to_nanos(actual_cost_usd, what="actual_cost_usd"),
            input_tokens=u.input_tokens, output_tokens=u.output_tokens, cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens, attrs=columns, extra=extra, settled_at=self._now(now),
            thresholds_ppm=self.thresholds_ppm,
        )
        settling = self.repo.settle(request)
        outcome = await (settling if in_shield else asyncio.shield(settling))
        row = outcome.reservation
        return Settlement(
            reservation_id=row.id, cost_usd=to_usd(row.cost_nanos or 0), reserved_usd=to_usd(row.amount_nanos),
            already_settled=outcome.already_settled, was_expired=outcome.was_expired,
            crossed=tuple(_crossed(h) for h in outcome.crossed),
        )

    async def release(self, reservation_id: str, *, now: datetime | None = None, in_shield: bool = False) -> bool:
        """Drop a reservation that produced no provider spend. False when there was nothing live to drop.
        Completes even when the caller is cancelled meanwhile (``in_shield``: as for ``settle``)."""
        releasing = self.repo.release(reservation_id, self._now(now))
        return await (releasing if in_shield else asyncio.shield(releasing))

    async def reconcile(self, now: datetime | None = None, *, batch: int = 1000) -> list[str]:
        """Expire every reservation whose TTL has passed (e.g. a crashed process's); returns their ids."""
        at = self._now(now)
        expired: list[str] = []
        while True:
            ids = await self.repo.expire(at, batch)
            expired += ids
            if len(ids) < batch:
                return expired

    async def report(self, now: datetime | None, scopes_with_limits: ScopeLimits) -> BudgetReport:
        """Limits, spent, reserved and remaining per scope and window; usage grouped by attribute."""
        return await build_report(self.repo, self._now(now), scopes_with_limits, self.thresholds_ppm)


def _split_attrs(attrs: Mapping[str, Any] | None) -> tuple[dict[str, str | None], dict[str, Any]]:
    attrs = dict(attrs or {})
    columns = {k: None if attrs.get(k) is None else str(attrs[k]) for k in ATTR_COLUMNS if k in attrs}
    return columns, {k: v for k, v in attrs.items() if k not in ATTR_COLUMNS}


def _over(b: BucketLimit, t: BucketTotals, amount: int) -> OverLimit:
    return OverLimit(
        scope=b.bucket.scope, window=b.bucket.window, window_key=b.bucket.key, limit_usd=to_usd(b.limit_nanos),
        spent_usd=to_usd(t.spent_nanos), reserved_usd=to_usd(t.reserved_nanos), requested_usd=to_usd(amount),
    )


def _crossed(h: ThresholdHit) -> ThresholdCrossed:
    return ThresholdCrossed(
        scope=h.bucket.scope, window=h.bucket.window, window_key=h.bucket.key, threshold=h.threshold_ppm / PPM,
        limit_usd=to_usd(h.limit_nanos), committed_usd=to_usd(h.committed_nanos),
    )


def _exceeded(over: tuple[OverLimit, ...]) -> BudgetExceededError:
    order = {w: i for i, w in enumerate(WINDOWS)}
    first = min(over, key=lambda o: (o.scope != "global", order[o.window], o.scope))
    return BudgetExceededError(
        f"budget exceeded: {first.scope} {first.window} limit ${first.limit_usd:.6g} "
        f"(spent ${first.spent_usd:.6g}, reserved ${first.reserved_usd:.6g}, requested ${first.requested_usd:.6g})",
        details={**first.to_dict(), "over": [o.to_dict() for o in over]},
    )
