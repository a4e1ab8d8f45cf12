"""Budget windows, all in UTC: ``daily`` (calendar day), ``weekly`` (ISO week from Monday 00:00),
``monthly`` (calendar month). Everything is computed from a ``now`` the caller passes in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["WINDOWS", "utc", "utc_now", "window_bounds", "window_key", "window_keys"]

WINDOWS = ("daily", "weekly", "monthly")


def utc_now() -> datetime:
    """The wall clock: the default clock a ``BudgetLedger`` is given, never read by the ledger logic itself."""
    return datetime.now(UTC)


def utc(now: datetime) -> datetime:
    """``now`` in UTC. Raises ``ValueError`` for a naive datetime (whose zone would be a guess)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"budget times must be timezone-aware, got naive {now.isoformat()}")
    return now.astimezone(UTC)


def window_key(window: str, now: datetime) -> str:
    """``2025-01-31`` (daily), ``2025-W05`` (weekly: ISO year and week), ``2025-01`` (monthly)."""
    t = utc(now)
    if window == "daily":
        return t.date().isoformat()
    if window == "weekly":
        year, week, _ = t.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if window == "monthly":
        return f"{t.year:04d}-{t.month:02d}"
    raise ValueError(f"unknown budget window {window!r} (expected one of {', '.join(WINDOWS)})")


def window_keys(now: datetime) -> dict[str, str]:
    return {w: window_key(w, now) for w in WINDOWS}


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime]:
    """The window containing ``now``: its start (inclusive) and end (exclusive), in UTC."""
    t = utc(now)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "daily":
        return day, day + timedelta(days=1)
    if window == "weekly":
        start = day - timedelta(days=t.weekday())
        return start, start + timedelta(days=7)
    if window == "monthly":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    raise ValueError(f"unknown budget window {window!r} (expected one of {', '.join(WINDOWS)})")
