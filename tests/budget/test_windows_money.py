"""Pure parts of the budget: window keys and bounds, exact money, scopes from budgets.yaml."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rhetor.budget import BudgetLedger, policy_for, scopes_for, to_decimal, to_nanos, to_usd, window_bounds, window_key
from rhetor.budget.scopes import limits_nanos, validate_scope
from rhetor.config.models import BudgetLimitsSpec, BudgetScopeSpec, BudgetsFileSpec
from rhetor.storage.memory import MemoryLedger

aware = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 1), timezones=st.sampled_from([UTC, timezone(
        timedelta(hours=-11, minutes=-30)), timezone(timedelta(hours=14))])
)


@given(aware, st.sampled_from(["daily", "weekly", "monthly"]))
def test_a_window_contains_now_and_its_key_changes_exactly_at_its_end(now: datetime, window: str) -> None:
    start, end = window_bounds(window, now)
    assert start <= now < end and start.tzinfo is UTC
    assert window_key(window, start) == window_key(window, now) == window_key(window, end - timedelta(microseconds=1))
    assert window_key(window, end) != window_key(window, now)
    assert window_key(window, start - timedelta(microseconds=1)) != window_key(window, now)


@pytest.mark.parametrize(
    ("now", "window", "key", "start", "end"),
    [
        (datetime(2025, 3, 16, 23, 59, tzinfo=UTC), "weekly", "2025-W11", datetime(2025, 3, 10), datetime(2025, 3, 17)),
        (datetime(2025, 3, 17, 0, 0, tzinfo=UTC), "weekly", "2025-W12", datetime(2025, 3, 17), datetime(2025, 3, 24)),
        (datetime(2024, 12, 31, 12, tzinfo=UTC), "weekly", "2025-W01", datetime(2024, 12, 30), datetime(2025, 1, 6)),
        (datetime(2024, 12, 31, 12, tzinfo=UTC), "monthly", "2024-12", datetime(2024, 12, 1), datetime(2025, 1, 1)),
        (datetime(2024, 2, 29, 23, tzinfo=UTC), "monthly", "2024-02", datetime(2024, 2, 1), datetime(2024, 3, 1)),
        (datetime(2024, 2, 29, 23, tzinfo=UTC), "daily", "2024-02-29", datetime(2024, 2, 29), datetime(2024, 3, 1)),
    ],
)
def test_window_examples(now: datetime, window: str, key: str, start: datetime, end: datetime) -> None:
    assert window_key(window, now) == key
    assert window_bounds(window, now) == (start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))


def test_unknown_windows_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown budget window"):
        window_key("hourly", datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        window_bounds("daily", datetime(2025, 1, 1))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("amount", "nanos"),
    [(0.1, 100_000_000), ("0.000000001", 1), (Decimal("1.5"), 1_500_000_000), (3, 3_000_000_000),
     (0.0000000004, 0), (0.0000000015, 2), (1e-10, 0), (12345.678901234, 12345_678901234)],
)
def test_to_nanos(amount: object, nanos: int) -> None:
    assert to_nanos(amount) == nanos  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), True, "abc", None])
def test_to_nanos_refuses_non_amounts(bad: object) -> None:
    with pytest.raises(ValueError, match="USD"):
        to_nanos(bad)  # type: ignore[arg-type]


@given(st.lists(st.decimals(min_value=0, max_value=1000, places=9), max_size=50))
def test_nanos_sum_exactly(amounts: list[Decimal]) -> None:
    assert to_decimal(sum(to_nanos(a) for a in amounts)) == sum(amounts, Decimal(0))


def test_to_usd() -> None:
    assert to_usd(100_000_000) == 0.1 and to_usd(0) == 0.0 and to_decimal(1) == Decimal("0.000000001")


def test_scopes_and_policy_from_budgets_yaml() -> None:
    budgets = BudgetsFileSpec(
        policy="warn", limits=BudgetLimitsSpec(daily=5),
        components={"search": BudgetScopeSpec(policy="enforce", limits=BudgetLimitsSpec(monthly=20))},
    )
    assert scopes_for(budgets, None) == {"global": budgets.limits}
    assert scopes_for(budgets, "search")["component:search"].monthly == 20
    assert scopes_for(budgets, "other")["component:other"] == BudgetLimitsSpec()
    assert (policy_for(budgets, "search"), policy_for(budgets, "other"), policy_for(budgets, None)) == (
        "enforce", "warn", "warn")
    assert limits_nanos(BudgetLimitsSpec(daily=1.25)) == {"daily": 1_250_000_000, "weekly": 0, "monthly": 0}
    with pytest.raises(ValueError, match="unknown budget window"):
        limits_nanos({"hourly": 1})
    with pytest.raises(ValueError, match="unknown budget scope"):
        validate_scope("team:x")
    assert BudgetLedger.from_config(MemoryLedger(), budgets).thresholds_ppm == (800_000, 950_000)


async def test_ledger_argument_checks() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        BudgetLedger(MemoryLedger(), warn_thresholds=[1.5])
    ledger = BudgetLedger(MemoryLedger(), clock=lambda: datetime(2025, 6, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="at least one scope"):
        await ledger.reserve({}, 1, enforce=True)
    with pytest.raises(ValueError, match="ttl_s"):
        await ledger.reserve({"global": {}}, 1, enforce=True, ttl_s=0)
    r = await ledger.reserve({"global": {}}, 1, enforce=True)  # the injected clock, not the wall clock
    assert r.window_keys["daily"] == "2025-06-01"
