"""Builds the budget report (``GET /budget``) from the ledger repository's totals and usage rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rhetor.budget.money import to_usd
from rhetor.budget.scopes import ScopeLimits, limits_nanos, validate_scope
from rhetor.budget.values import BudgetReport, ScopeReport, UsageBreakdown, UsageStats, WindowReport
from rhetor.budget.windows import WINDOWS, window_bounds, window_keys
from rhetor.storage.base import LedgerRepository
from rhetor.storage.records import BucketKey, UsageRow

__all__ = ["UNKNOWN", "build_report", "breakdown"]

UNKNOWN = "unknown"
"""The group of spend recorded without that attribute."""

_PPM = 1_000_000


async def build_report(
    repo: LedgerRepository, now: datetime, scopes_with_limits: ScopeLimits, thresholds_ppm: Sequence[int] = ()
) -> BudgetReport:
    keys = window_keys(now)
    limits = {validate_scope(s): limits_nanos(lim) for s, lim in scopes_with_limits.items()}
    buckets = [BucketKey(s, w, keys[w]) for s in limits for w in WINDOWS]
    totals = await repo.totals(buckets)
    fired = await repo.fired_thresholds(buckets)
    scopes = {}
    for scope, by_window in limits.items():
        windows = {}
        for w in WINDOWS:
            b = BucketKey(scope, w, keys[w])
            t, limit = totals[b], by_window[w]
            start, end = window_bounds(w, now)
            windows[w] = WindowReport(
                window=w, key=keys[w], start=start.isoformat(), end=end.isoformat(), limit_usd=to_usd(limit),
                spent_usd=to_usd(t.spent_nanos), reserved_usd=to_usd(t.reserved_nanos),
                remaining_usd=to_usd(max(0, limit - t.committed_nanos)) if limit else None,
                thresholds_fired=[p / _PPM for p in fired[b]],
            )
        scopes[scope] = ScopeReport(scope=scope, windows=windows)
    usage = {w: breakdown(await repo.usage(w, keys[w]), keys[w]) for w in WINDOWS}
    usage["all_time"] = breakdown(await repo.usage(None, None), None)
    return BudgetReport(generated_at=now.isoformat(), scopes=scopes, usage=usage)


def breakdown(rows: Sequence[UsageRow], window_key: str | None) -> UsageBreakdown:
    """Usage rows summed in total and by model, provider, component and task type (each sorted by name)."""
    groups: dict[str, dict[str, list[int]]] = {d: {} for d in ("model", "provider", "component", "task_type")}
    total = [0, 0, 0, 0]
    for r in rows:
        sums = (r.cost_nanos, r.requests, r.input_tokens, r.output_tokens)
        total = [a + b for a, b in zip(total, sums, strict=True)]
        for dim, acc in groups.items():
            name = getattr(r, dim) or UNKNOWN
            acc[name] = [a + b for a, b in zip(acc.get(name, [0, 0, 0, 0]), sums, strict=True)]

    def stats(s: list[int]) -> UsageStats:
        return UsageStats(spend_usd=to_usd(s[0]), requests=s[1], input_tokens=s[2], output_tokens=s[3])

    by = {dim: {name: stats(acc[name]) for name in sorted(acc)} for dim, acc in groups.items()}
    return UsageBreakdown(
        window_key=window_key, total=stats(total), by_model=by["model"], by_provider=by["provider"],
        by_component=by["component"], by_task_type=by["task_type"],
    )
